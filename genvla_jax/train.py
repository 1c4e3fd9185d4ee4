r"""Trains a VLA policy: the command line, and train() with the monitors the config asks for.

  python -m genvla_jax.train --config=configs/pi0_plus.py:demo --workdir=/tmp/genvla_demo
  python -m genvla_jax.train --config=configs/pi0_plus.py:demo --workdir=/tmp/genvla_demo --dry_run
  python -m genvla_jax.train --config=configs/pi0_plus.py --workdir=DIR --config.data.vl_root=/data/vl \
      --set='data.vl=[{"name": "llava", "path": "llava/chat.json", "format": "llava_json", "weight": 1.0}]'

Config fields: `--config.KEY=VALUE` for single values (ml_collections), `--set=KEY=JSON` (repeatable,
applied after them) for what those cannot set: the list-valued fields data.robot, data.vl and mesh.rules,
or a whole architecture dict (config_lib.set_fields). A key the config lacks is a one-line error.

`--dry_run`: every check (all problems at once, exit 2), then the run's plan (parameters, per-device memory,
data mixture, one real batch when the data is already converted, steps, checkpoints), exit 0; nothing is
written (no run directory, no conversion). Memory: params, gradients and optimizer state from the abstract
state, activations from an analytic estimate; `--plan_compile` compiles the real train step on abstract
inputs and takes activations + temporaries and the total from XLA's memory analysis (up to about a minute at
full size on a CPU, which plans one device unless XLA_FLAGS=--xla_force_host_platform_device_count=N). The
total is checked against `--device_gb=24,40,48,80` (training/plan.py: fits within JAX's default .75 of the
device):

  python -m genvla_jax.train --config=configs/pi0_plus.py:full ... --dry_run --plan_compile --device_gb=24,48

The run itself (checks, data, state, step loop, checkpoints, run directory layout, resume, SIGTERM) is
training/trainer.py. This module sits above the training layer: it builds what config.train asks to
measure besides the loss from eval/ (the representation drift monitor, config.train.drift) and passes
it in, so the trainer imports nothing of eval/.
"""

from absl import flags, logging
from ml_collections import config_flags

from genvla_jax import cli, config_lib
from genvla_jax.eval import representation
from genvla_jax.training import loop, plan, trainer


def monitors(config) -> list[loop.Monitor]:
  """The measurements config.train asks for besides the loss: the drift monitor (config.train.drift)."""
  drift = representation.drift_monitor(config)
  return [drift] if drift else []


def train(
  config,
  workdir: str,
  *,
  stop_after: int | None = None,
  printer=print,
  dry_run: bool = False,
  plan_options: plan.Options | None = None,
) -> list[dict]:
  """trainer.train with monitors(config): trains (or resumes) in `workdir`. `stop_after`: stop (with a
  checkpoint) after this many steps in this call, as a preemption would. `dry_run`: checks and the plan
  only (training/plan.py; returns [the plan]); `plan_options`: how it plans memory (plan.Options: compile
  the step for XLA's memory analysis, device sizes). Returns the logged metric records of this call."""
  watch = [] if dry_run else monitors(config)
  return trainer.train(
    config, workdir, monitors=watch, stop_after=stop_after, printer=printer, dry_run=dry_run, plan_options=plan_options
  )


def options_from_flags(plan_compile: bool, device_gb) -> plan.Options:
  """--plan_compile, --device_gb (GiB, e.g. ["24", "40"]) -> plan.Options; a size that is no positive number
  is an error naming it."""
  sizes = []
  for text in device_gb:
    try:
      size = float(text)
    except ValueError:
      size = 0.0
    if not size > 0:
      raise cli.UserError(f"--device_gb={','.join(device_gb)}: {text!r} is not a positive number of GiB")
    sizes.append(size)
  return plan.Options(compile=plan_compile, device_gb=tuple(sizes))


FLAGS = flags.FLAGS


def main(argv):
  if len(argv) > 1:
    raise cli.UserError(f"unexpected arguments: {argv[1:]}")
  logging.set_verbosity(logging.WARNING)
  config_lib.set_fields(FLAGS.config, FLAGS.set)
  options = options_from_flags(FLAGS.plan_compile, FLAGS.device_gb)
  if (FLAGS.plan_compile or FLAGS["device_gb"].present) and not FLAGS.dry_run:
    raise cli.UserError("--plan_compile and --device_gb are options of the dry run: add --dry_run")
  train(FLAGS.config, FLAGS.workdir, dry_run=FLAGS.dry_run, plan_options=options)


if __name__ == "__main__":
  config_flags.DEFINE_config_file("config", None, "config file, e.g. configs/pi0_plus.py:demo", lock_config=True)
  flags.DEFINE_string("workdir", None, "run directory (checkpoints, metrics, assets)", required=True)
  flags.DEFINE_bool(
    "dry_run",
    False,
    "check everything, print the plan (parameters, memory per device, data, steps, checkpoints) and exit; "
    "writes nothing",
  )
  flags.DEFINE_bool(
    "plan_compile",
    False,
    "with --dry_run: per-device memory from XLA's memory analysis of the compiled train step (lowered and "
    "compiled on abstract inputs, nothing allocated; up to about a minute at full size on a CPU) instead of "
    "the analytic activation estimate",
  )
  flags.DEFINE_list(
    "device_gb",
    [str(gb) for gb in plan.DEVICE_GB],
    "with --dry_run: device sizes in GiB the plan's per-device total is checked against",
  )
  flags.DEFINE_multi_string(
    "set",
    [],
    "KEY=JSON: sets a config field to a JSON value, after --config.KEY=VALUE (repeatable); for the list "
    """fields data.robot, data.vl, mesh.rules, e.g. --set='data.vl=[{"name": "llava", "path": "chat.json", """
    """"format": "llava_json", "weight": 1.0}]'""",
  )
  flags.mark_flags_as_required(["config"])
  cli.run(main)
