"""orbax checkpoints of a run. Each step directory holds four items:

  params   the parameter tree (restorable alone, for predict / eval / serve); adapters-only: its trainable leaves
  train    {"step", "opt_state"}
  data     the grain iterator state (resume continues the exact data order)
  meta     JSON: {"config": ..., "stats": ...} so a checkpoint is self-describing (+ "base": see below)
Saves are asynchronous and atomic (orbax writes to `<step>.orbax-checkpoint-tmp-*` and renames when
complete), so a crash or `kill -9` during a save leaves the previous checkpoint as the latest one; the
next start deletes the partial directory. All processes call save/restore (each writes / reads its
own shards); orbax writes the JSON items from process 0. Retention: the newest `keep` checkpoints, plus
every step divisible by `keep_every`.

Adapters-only checkpoints (training/frozen_base.py): a run with LoRA or optimizer.frozen saves with `base=` its
base's reference; then `params` holds only the trainable leaves (the adapters, any part left trainable), `train`
their optimizer state (frozen leaves have none), and meta["base"] the reference. `restore` / `restore_params`
complete the params from the base (the trainer passes the one its start-up built; readers get it rebuilt from the
reference, `frozen_base.rebuild`) after checking its fingerprint; a base that is gone or differs is a
`frozen_base.BaseError`, which no fallback to an older step hides (every step shares the base).

Readers (policy, predict, serve, eval, export) open the directory with `read_only=True`: they never
create, clean up or delete anything, so reading a run while it trains cannot remove the trainer's
in-progress save. Only the trainer (the writer) cleans partial saves and sets corrupt steps aside.

Corrupt checkpoints: `restore_newest_good` tries the newest step first and, when a step cannot be read
(truncated or missing files, garbage JSON), warns and falls back to the next older one; with an
explicit step there is no fallback (the error names the step).
"""

import logging as std_logging
import os
import time
from typing import Callable, Mapping

from absl import logging
import jax
import orbax.checkpoint as ocp

from genvla_jax import cli, config_schema
from genvla_jax.models import lora as lora_lib
from genvla_jax.training import frozen_base


class CheckpointError(cli.UserError):
  """No readable checkpoint (or not the one asked for); the message names the run and the step(s)."""


class Checkpointer:
  def __init__(
    self, directory: str, keep: int = 3, async_save: bool = True, keep_every: int = 0, read_only: bool = False
  ):
    """keep: the newest N checkpoints are kept; keep_every: so is every step divisible by it (0: none).
    read_only: a reader; the directory must exist and nothing in it is created, cleaned or deleted."""
    self.directory, self.read_only = directory, read_only
    if read_only:
      if not os.path.isdir(directory):
        raise CheckpointError(
          f"no checkpoints directory {directory}: not a genvla_jax run directory, or "
          "training has not saved a checkpoint yet"
        )
      options = ocp.CheckpointManagerOptions(
        read_only=True,
        create=False,
        cleanup_tmp_directories=False,
        enable_async_checkpointing=False,
        save_interval_steps=0,  # (orbax warns when it has to set this itself)
      )
      _quiet_read_only_notice()
    else:
      options = ocp.CheckpointManagerOptions(
        max_to_keep=keep,
        keep_period=keep_every or None,
        enable_async_checkpointing=async_save,
        create=True,
        cleanup_tmp_directories=True,
      )  # a save killed half-way is removed at start
    self.manager = ocp.CheckpointManager(directory, options=options)

  def latest_step(self) -> int | None:
    return self.manager.latest_step()

  def steps(self) -> list[int]:
    """Complete steps, newest first."""
    return sorted(self.manager.all_steps(), reverse=True)

  def restore_newest_good(
    self, restore_fn: Callable[[int], dict], step: int | None = None, warn=logging.warning
  ) -> tuple[int, dict]:
    """-> (step, restore_fn(step)) for `step`, or else for the newest step that restores. A step that
    fails is reported through `warn` (and, for the writer, moved aside to `<step>.corrupt-<time>` so that
    a later save of the same step number cannot collide with it). Raises CheckpointError when nothing
    restores."""
    if step is not None:
      if step not in self.manager.all_steps():
        raise CheckpointError(f"no checkpoint for step {step} in {self.directory}; steps: {self.steps()}")
      try:
        return step, restore_fn(step)
      except frozen_base.BaseError:
        raise
      except Exception as e:
        raise CheckpointError(
          f"checkpoint {self.directory}/{step} cannot be read ({_first_line(e)}); "
          f"other steps: {[s for s in self.steps() if s != step]}"
        ) from e
    failures = []
    for candidate in self.steps():
      try:
        restored = restore_fn(candidate)
      except frozen_base.BaseError:
        raise  # the base is missing or another one: older steps share it, and this step is not corrupt
      except Exception as e:
        failures.append(f"{candidate}: {_first_line(e)}")
        warn(
          f"checkpoint {self.directory}/{candidate} cannot be read ({_first_line(e)}); falling back to the previous one"
        )
        self._set_aside(candidate)
        continue
      if failures:
        warn(f"restored step {candidate} of {self.directory} (newer unreadable: {len(failures)})")
      return candidate, restored
    if not failures:
      raise CheckpointError(f"no checkpoint in {self.directory}: training has not saved one yet")
    raise CheckpointError(f"no readable checkpoint in {self.directory}: " + "; ".join(failures))

  def _set_aside(self, step: int):
    """Writer only, process 0 only (a shared file system sees one rename)."""
    if self.read_only:
      return
    path = os.path.join(self.directory, str(step))
    if jax.process_index() == 0 and os.path.isdir(path):
      try:
        os.rename(path, f"{path}.corrupt-{int(time.time())}")
      except FileNotFoundError:
        pass
    self.manager.reload()

  def save(self, step: int, state: dict, data_iterator, meta: dict, base: dict | None = None):
    """`base`: the run's frozen_base.reference (LoRA / optimizer.frozen): the params item then holds only the
    leaves it does not cover (the trainable ones) and meta records it."""
    params = state["params"]
    if base is not None:
      params = select(params, lambda path: path not in base["leaves"])
      meta = dict(meta, base=base)
    args = dict(
      params=ocp.args.StandardSave(params),
      train=ocp.args.StandardSave({"step": state["step"], "opt_state": state["opt_state"]}),
      meta=ocp.args.JsonSave(meta),
    )
    if data_iterator is not None:
      args["data"] = _grain().checkpoint.CheckpointSave(data_iterator)
    self.manager.save(step, args=ocp.args.Composite(**args), force=True)

  def restore(self, step: int, abstract_state: dict, data_iterator=None, base_params=None) -> dict:
    """Full training state (shardings from `abstract_state`); restores `data_iterator` in place. An
    adapters-only checkpoint is completed from `base_params` (the params the run's start built, placed as
    `abstract_state`'s; the trainer's) or else from its base rebuilt (frozen_base.rebuild)."""
    meta = self.restore_meta(step)
    abstract_params = abstract_state["params"]
    args = dict(
      params=ocp.args.StandardRestore(_saved_part(abstract_params, meta)),
      train=ocp.args.StandardRestore({"step": abstract_state["step"], "opt_state": abstract_state["opt_state"]}),
    )
    if data_iterator is not None:
      args["data"] = _grain().checkpoint.CheckpointRestore(data_iterator)
    out = self.manager.restore(step, args=ocp.args.Composite(**args))
    params = self._complete(step, meta, out["params"], abstract_params, base_params)
    return {"step": out["train"]["step"], "params": params, "opt_state": out["train"]["opt_state"]}

  def restore_params(self, step: int, abstract_params, base_params=None):
    """The params (an adapters-only checkpoint completed from its base: `base_params`, or else rebuilt)."""
    meta = self.restore_meta(step)
    args = ocp.args.Composite(params=ocp.args.StandardRestore(_saved_part(abstract_params, meta)))
    return self._complete(step, meta, self.manager.restore(step, args=args)["params"], abstract_params, base_params)

  def _complete(self, step, meta, saved, abstract_params, base_params):
    """Restored params + the frozen leaves of the base, checked against the checkpoint's reference -> the
    full params (as `abstract_params`). Without `base_params` the base is rebuilt from the reference on the
    mesh (or the one device) `abstract_params` are placed on."""
    ref = meta.get("base")
    if ref is None:
      return saved
    if base_params is None:
      config = config_schema.upgrade(meta["config"])
      placement = jax.tree.leaves(abstract_params)[0].sharding
      mesh = placement.mesh if isinstance(placement, jax.sharding.NamedSharding) else None
      base_params = frozen_base.rebuild(config, ref, mesh, [tuple(r) for r in config.mesh.rules])
    frozen_base.check(ref, base_params, f"checkpoint {self.directory}/{step}")
    base = {path: x for path, x in _flat(base_params).items() if path in ref["leaves"]}
    restored = _flat(saved)
    return _map_paths(abstract_params, lambda path, _: base[path] if path in ref["leaves"] else restored[path])

  def restore_meta(self, step: int) -> dict:
    return self.manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))["meta"]

  def wait(self):
    self.manager.wait_until_finished()

  def close(self):
    self.manager.close()


def select(tree, keep: Callable[[str], bool], prefix: str = "") -> dict:
  """The nested dict `tree` with only the leaves whose '/'-joined path `keep` accepts (emptied dicts dropped)."""
  out = {}
  for key, value in tree.items():
    path = f"{prefix}/{key}" if prefix else str(key)
    if isinstance(value, Mapping):
      sub = select(value, keep, path)
      if sub:
        out[key] = sub
    elif keep(path):
      out[key] = value
  return out


def _saved_part(abstract_params, meta: dict):
  """What the params item holds: everything, or (adapters-only) the leaves the base reference does not cover."""
  ref = meta.get("base")
  return abstract_params if ref is None else select(abstract_params, lambda path: path not in ref["leaves"])


def _flat(tree) -> dict:
  return {lora_lib.path_str(p): x for p, x in jax.tree_util.tree_flatten_with_path(tree)[0]}


def _map_paths(tree, fn):
  return jax.tree_util.tree_map_with_path(lambda p, x: fn(lora_lib.path_str(p), x), tree)


def _grain():
  """grain, imported only where the data iterator is saved or restored (the trainer): it loads
  array_record, which readers (the policy, the server) must not pull in (tests/test_layering.py)."""
  import grain

  return grain


class _DropReadOnlyNotice(std_logging.Filter):
  """orbax logs a WARNING each time a directory is opened read-only: expected for every reader here."""

  def filter(self, record):
    return not str(record.msg).startswith("Given directory is read only")


def _quiet_read_only_notice():
  absl_logger = std_logging.getLogger("absl")
  if not any(isinstance(f, _DropReadOnlyNotice) for f in absl_logger.filters):
    absl_logger.addFilter(_DropReadOnlyNotice())


def _first_line(error: BaseException) -> str:
  text = str(error).strip().splitlines()
  return f"{type(error).__name__}: {text[0][:300] if text else ''}"
