"""A run directory is bound to its config and assets.

Once a run has a checkpoint, restarting it with a different config is an error that names the differing
fields, and nothing in the directory is overwritten. Only fields that do not change what the saved state
means may differ on a restart (RESUMABLE_CHANGES: how long to train, how often to log / save, the device
layout, where the caches live, the attention implementation); the restart says which changed. Fields the
trainer derives from the data (DERIVED_FROM_DATA) match when the new config leaves them unset (0).

Assets (tokenizer.model, stats.json, fast_bpe.model) are compared byte for byte with what the new start
would write: a changed tokenizer file or changed dataset statistics are errors too (a policy would
otherwise decode with other ids or de-normalize with other statistics, silently).

Checks that need no data (`check_config`) run before any data preparation; asset checks after it.
"""

import filecmp
import json
import os

from genvla_jax import cli, config_schema

RESUMABLE_CHANGES = (
  "train.steps",
  "train.log_every",
  "train.checkpoint_every",
  "train.keep_checkpoints",
  "train.keep_every",
  "train.peak_flops_per_device",
  "train.drift",
  "train.wandb",
  "mesh",
  "distributed",
  "inference",
  "data.cache_dir",
  "model.attention_impl",  # how attention is computed, not what: the parameters are the same
  "model.decode_attention",
)
DERIVED_FROM_DATA = ("model.action_expert.action_dim", "model.action_expert.state_dim")


class RunDirError(cli.UserError):
  """The run directory cannot be used for this config; the message names the fields and the fix."""


def flatten(tree, prefix: str = "") -> dict:
  """Nested dicts -> {"a.b.c": leaf}; lists stay leaves (compared whole)."""
  if isinstance(tree, dict):
    out = {}
    for key, value in tree.items():
      out.update(flatten(value, f"{prefix}{key}."))
    return out
  return {prefix[:-1]: tree}


def _under(key: str, prefixes) -> bool:
  return any(key == p or key.startswith(p + ".") for p in prefixes)


def config_differences(saved: dict, requested: dict) -> tuple[list[str], list[str]]:
  """-> (blocking, resumable) differences as "key: saved -> requested" lines."""
  saved_flat, requested_flat = flatten(saved), flatten(requested)
  blocking, resumable = [], []
  for key in sorted(set(saved_flat) | set(requested_flat)):
    old, new = saved_flat.get(key, "<absent>"), requested_flat.get(key, "<absent>")
    if old == new or (_under(key, DERIVED_FROM_DATA) and new == 0):
      continue
    line = f"{key}: {_short(old)} -> {_short(new)}"
    (resumable if _under(key, RESUMABLE_CHANGES) else blocking).append(line)
  return blocking, resumable


def _short(value) -> str:
  text = json.dumps(value)
  return text if len(text) <= 80 else text[:77] + "..."


def has_checkpoint(workdir: str) -> bool:
  """True when the run has saved at least one step (orbax step directories are integers)."""
  ckpt_dir = os.path.join(workdir, "checkpoints")
  return os.path.isdir(ckpt_dir) and any(name.isdigit() for name in os.listdir(ckpt_dir))


def check_workdir(workdir: str) -> None:
  """The workdir is a directory or does not exist yet (then its parent must be creatable)."""
  if os.path.exists(workdir) and not os.path.isdir(workdir):
    raise RunDirError(f"--workdir {workdir} is a file, not a run directory; give a directory path")


def check_config(workdir: str, requested: dict, printer=print) -> bool:
  """Compares the config to the run's saved config.json, read through config_schema.upgrade (a field
  the run's config lacks compares as its default, so a run made before a field existed resumes when the
  config keeps that default). -> True when the run has a checkpoint (a resume). Raises RunDirError
  (naming every differing field) when a resume would change what the saved state means."""
  path = os.path.join(workdir, "config.json")
  if not has_checkpoint(workdir):
    return False
  if not os.path.exists(path):
    raise RunDirError(
      f"{workdir} has checkpoints but no config.json: it was not written by "
      "genvla_jax.train, or config.json was removed; use another --workdir"
    )
  with open(path) as f:
    saved = json.load(f)
  # a field added since the run was made counts at its default (what the run's code did without it)
  saved = json.loads(config_schema.upgrade(saved).to_json())
  blocking, resumable = config_differences(saved, requested)
  if blocking:
    raise RunDirError(
      f"{workdir} belongs to a run with another config ({len(blocking)} field(s) differ: "
      + "; ".join(blocking[:8])
      + ("; ..." if len(blocking) > 8 else "")
      + "). Restart with the run's own config (its config.json), or use another --workdir"
    )
  if resumable:
    printer("resuming with changed settings: " + "; ".join(resumable), flush=True)
  return True


def check_assets(workdir: str, wanted: dict[str, str]) -> None:
  """wanted: {asset name: source file this start would copy}. Every asset already in the run must be
  byte-identical to its source."""
  changed = []
  for name, source in wanted.items():
    existing = os.path.join(workdir, "assets", name)
    if os.path.exists(existing) and not filecmp.cmp(existing, source, shallow=False):
      changed.append(f"assets/{name} differs from {source}")
  if changed:
    raise RunDirError(
      f"{workdir} was trained with other assets: "
      + "; ".join(changed)
      + ". Resuming would decode or de-normalize with the wrong ones; use another --workdir"
    )


def check_stats(workdir: str, stats: dict) -> None:
  """The dataset statistics of this start equal the run's saved assets/stats.json."""
  path = os.path.join(workdir, "assets", "stats.json")
  if not os.path.exists(path):
    return
  with open(path) as f:
    saved = json.load(f)
  if saved != json.loads(json.dumps(stats)):
    names = sorted(set(saved) ^ set(stats)) or sorted(k for k in stats if saved.get(k) != stats[k])
    raise RunDirError(
      f"the robot data's statistics changed since {workdir} was trained (datasets: {names}): "
      "the data was converted again from other episodes. Use another --workdir, or the "
      "run's original data"
    )


def truncate_metrics(path: str, last_step: int) -> int:
  """Drops metric records after `last_step` (they are re-logged by the resumed run, so steps never
  repeat). -> number of records dropped. The file is replaced atomically."""
  if not os.path.exists(path):
    return 0
  with open(path) as f:
    lines = f.readlines()
  kept = []
  for line in lines:
    try:
      step = json.loads(line)["step"]
    except (ValueError, KeyError, TypeError):
      continue  # a torn last line from a killed process
    if step <= last_step:
      kept.append(line if line.endswith("\n") else line + "\n")
  if len(kept) != len(lines):
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
      f.writelines(kept)
    os.replace(tmp, path)
  return len(lines) - len(kept)
