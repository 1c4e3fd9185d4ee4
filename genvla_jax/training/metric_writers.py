"""Where logged metrics go besides metrics.jsonl: TensorBoard event files (always, `<workdir>/tensorboard/`)
and Weights & Biases (when config.train.wandb.mode is "offline" or "online").

A writer is anything with `write(step, scalars)` and `close()`; `for_run` builds the run's list (the
trainer calls it on process 0 only, so other processes write nothing). Scalars are the numeric fields of a
metrics.jsonl record under the same names (`scalars(record)`); the trainer's occasional measurements
(loop.Monitor) are written as "<label>/<name>".

Resume: the run restarts at its checkpoint step S and logs S+1, S+2, ... again (metrics.jsonl is cut back
to S by run_dir.truncate_metrics). TensorBoard: the new event file starts with a session-start event at
step S+1 (tensorboardX `purge_step`), which makes TensorBoard's readers drop every event of that run dir
at step >= S+1 read before it, so each step shows the value of the latest attempt. wandb: every start
uses the run's id (`<workdir>/wandb/run_id`, made on the first start) with `resume="allow"`, so the
attempts are one wandb run (offline: one offline-run folder per start; `wandb sync` them in order). wandb
has no purge and keeps a resumed run's steps increasing: a step logged between S and the crash may keep
the first attempt's value there. metrics.jsonl and TensorBoard are the exact record.
"""

import numbers
import os
import uuid
from typing import Protocol

from genvla_jax import cli

WANDB_MODES = ("disabled", "offline", "online")


class MetricWriter(Protocol):
  def write(self, step: int, scalars: dict[str, float]) -> None: ...

  def close(self) -> None: ...


class WandbMissingError(cli.UserError):
  """config.train.wandb is enabled but wandb cannot be imported."""


def scalars(record: dict) -> dict[str, float]:
  """The numeric fields of a metrics record except "step" (booleans and strings are not scalars)."""
  return {
    k: float(v) for k, v in record.items() if k != "step" and isinstance(v, numbers.Real) and not isinstance(v, bool)
  }


class TensorBoardWriter:
  """Scalars into a new TensorBoard event file in `logdir` through tensorboardX; flushed at every write.
  purge_step: events at steps >= purge_step in files read before this one are hidden from readers.
  The file is named events.out.tfevents.<unix second>.<host><filename_suffix> (tensorboardX; readers
  read a directory's files in name order) and a second writer of the same name replaces it."""

  def __init__(self, logdir: str, purge_step: int | None = None, filename_suffix: str = ""):
    from tensorboardX import SummaryWriter

    self.logdir = logdir
    self._writer = SummaryWriter(logdir=logdir, purge_step=purge_step, filename_suffix=filename_suffix)

  def write(self, step: int, scalars: dict[str, float]) -> None:
    for tag, value in scalars.items():
      self._writer.add_scalar(tag, value, global_step=step)
    self._writer.flush()

  def close(self) -> None:
    self._writer.close()


def import_wandb():
  """The wandb module, or a WandbMissingError naming the fix."""
  try:
    import wandb
  except ImportError:
    raise WandbMissingError(
      "config.train.wandb.mode is not 'disabled' but wandb is not installed: pip install wandb "
      "(or set --config.train.wandb.mode=disabled)"
    ) from None
  return wandb


def check_wandb(wandb_config) -> None:
  """Before training starts: a known mode, and wandb importable when enabled."""
  if wandb_config.mode not in WANDB_MODES:
    raise cli.UserError(f"config.train.wandb.mode={wandb_config.mode!r}; choose one of {', '.join(WANDB_MODES)}")
  if wandb_config.mode != "disabled":
    import_wandb()


def wandb_run_id(directory: str) -> str:
  """The run's wandb id (12 random hex digits), made on the first start and read back on every resume."""
  path = os.path.join(directory, "run_id")
  if os.path.exists(path):
    with open(path) as f:
      return f.read().strip()
  run_id = uuid.uuid4().hex[:12]
  os.makedirs(directory, exist_ok=True)
  with open(path, "w") as f:
    f.write(run_id + "\n")
  return run_id


class WandbWriter:
  """Scalars into a wandb run (files under `<workdir>/wandb/`; mode "offline": nothing leaves the
  machine, `wandb sync` uploads later)."""

  def __init__(self, wandb_config, workdir: str, run_config: dict):
    wandb = import_wandb()
    self._run = wandb.init(
      project=wandb_config.project or None,
      entity=wandb_config.entity or None,
      name=wandb_config.name or None,
      mode=wandb_config.mode,
      dir=workdir,
      id=wandb_run_id(os.path.join(workdir, "wandb")),
      resume="allow",
      config=run_config,
    )

  def write(self, step: int, scalars: dict[str, float]) -> None:
    self._run.log(scalars, step=step)

  def close(self) -> None:
    self._run.finish()


def for_run(train_config, workdir: str, start_step: int, run_config: dict) -> list[MetricWriter]:
  """The writers of a training run in `workdir` that starts (or resumes) at `start_step`: TensorBoard in
  `<workdir>/tensorboard/` (purging steps > start_step of earlier attempts), plus wandb when enabled.
  Call on process 0 only."""
  check_wandb(train_config.wandb)
  # the suffix keeps a start's file apart from earlier ones (a file replaced within the same second holds
  # only steps > start_step, which this start hides anyway), in start order when the second is the same
  tensorboard = TensorBoardWriter(
    os.path.join(workdir, "tensorboard"), purge_step=start_step + 1, filename_suffix=f".start{start_step:010d}"
  )
  writers = [tensorboard]
  if train_config.wandb.mode != "disabled":
    writers.append(WandbWriter(train_config.wandb, workdir, run_config))
  return writers


def close_all(writers) -> None:
  """Closes every writer, then raises the first error (one failing writer does not leave the others open)."""
  errors = []
  for writer in writers:
    try:
      writer.close()
    except Exception as e:  # re-raised below, after the others are closed
      errors.append(e)
  if errors:
    raise errors[0]
