"""orbax checkpoints of a run. Each step directory holds four items:

  params   the parameter tree (restorable alone, for predict / eval / serve)
  train    {"step", "opt_state"}
  data     the grain iterator state (resume continues the exact data order)
  meta     JSON: {"config": ..., "stats": ...} so a checkpoint is self-describing
Saves are asynchronous and atomic (orbax writes to `<step>.orbax-checkpoint-tmp-*` and renames when
complete), so a crash or `kill -9` during a save leaves the previous checkpoint as the latest one; the
next start deletes the partial directory. All processes call save/restore (each writes / reads its
own shards); orbax writes the JSON items from process 0. Retention: the newest `keep` checkpoints, plus
every step divisible by `keep_every`.
"""

import grain
import orbax.checkpoint as ocp


class Checkpointer:

  def __init__(self, directory: str, keep: int = 3, async_save: bool = True, keep_every: int = 0):
    """keep: the newest N checkpoints are kept; keep_every: so is every step divisible by it (0: none)."""
    self.manager = ocp.CheckpointManager(
        directory, options=ocp.CheckpointManagerOptions(
            max_to_keep=keep, keep_period=keep_every or None, enable_async_checkpointing=async_save,
            create=True, cleanup_tmp_directories=True))  # a save killed half-way is removed at start

  def latest_step(self) -> int | None:
    return self.manager.latest_step()

  def save(self, step: int, state: dict, data_iterator, meta: dict):
    args = dict(params=ocp.args.StandardSave(state["params"]),
                train=ocp.args.StandardSave({"step": state["step"], "opt_state": state["opt_state"]}),
                meta=ocp.args.JsonSave(meta))
    if data_iterator is not None:
      args["data"] = grain.checkpoint.CheckpointSave(data_iterator)
    self.manager.save(step, args=ocp.args.Composite(**args), force=True)

  def restore(self, step: int, abstract_state: dict, data_iterator=None) -> dict:
    """Full training state (shardings from `abstract_state`); restores `data_iterator` in place."""
    args = dict(params=ocp.args.StandardRestore(abstract_state["params"]),
                train=ocp.args.StandardRestore({"step": abstract_state["step"],
                                                "opt_state": abstract_state["opt_state"]}))
    if data_iterator is not None:
      args["data"] = grain.checkpoint.CheckpointRestore(data_iterator)
    out = self.manager.restore(step, args=ocp.args.Composite(**args))
    return {"step": out["train"]["step"], "params": out["params"], "opt_state": out["train"]["opt_state"]}

  def restore_params(self, step: int, abstract_params):
    return self.manager.restore(step, args=ocp.args.Composite(
        params=ocp.args.StandardRestore(abstract_params)))["params"]

  def restore_meta(self, step: int) -> dict:
    return self.manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))["meta"]

  def wait(self):
    self.manager.wait_until_finished()

  def close(self):
    self.manager.close()
