r"""Closed-loop evaluation of a trained policy (or of the environment's scripted expert).

  python -m genvla_jax.eval --config=configs/eval_tabletop.py --workdir=RUN [--out=DIR] [--step=N]
  python -m genvla_jax.eval --config=configs/eval_tabletop.py:quick --expert --out=/tmp/expert_eval

Writes to --out (default WORKDIR/eval/<env>): results.json (summary with 95% intervals + every
episode), report.md, success.png, videos/*.mp4 (or .gif: video_format); prints the report.
--checkpoint is the older spelling of --workdir (an alias).
"""

import os
import time

from absl import flags
from ml_collections import config_flags

from genvla_jax import cli
from genvla_jax.eval import envs as envs_lib, harness, report
from genvla_jax.inference import protocol

FLAGS = flags.FLAGS


def evaluate(eval_config, policy: protocol.Policy, out_dir: str, title: str, printer=print) -> dict:
  """Runs the harness with `eval_config` (configs/eval_*.py) on `policy` and writes the report. -> summary."""
  env_module = _env_module(eval_config)
  if policy.metadata.action_dim != env_module.ACTION_DIM:
    raise ValueError(
      f"the policy predicts {policy.metadata.action_dim}-D actions; {eval_config.env} takes {env_module.ACTION_DIM}-D"
    )
  cameras = tuple(policy.metadata.cameras)
  if cameras:  # a policy that names its cameras sees the environment's views of those names, in its order
    eval_config = eval_config.copy_and_resolve_references()
    with eval_config.unlocked():
      eval_config.env_kwargs = dict(eval_config.env_kwargs, cameras=list(cameras))
  return _run_and_report(eval_config, lambda envs: policy, out_dir, title, printer)


def evaluate_expert(eval_config, out_dir: str, title: str, printer=print) -> dict:
  """`evaluate` with the environment's scripted expert (harness.ExpertPolicy) as the policy."""
  env_module = _env_module(eval_config)
  if env_module.Expert is None:
    raise cli.UserError(f"{eval_config.env} has no scripted expert")
  try:  # an env whose expert covers some of its tasks names the others (e.g. libero.check_expert_tasks)
    getattr(env_module, "check_expert_tasks", lambda tasks: None)(list(eval_config.tasks))
  except ValueError as e:
    raise cli.UserError(str(e)) from None
  make_policy = lambda envs: harness.ExpertPolicy(envs, env_module.Expert, env_module.ACTION_DIM)
  return _run_and_report(eval_config, make_policy, out_dir, title, printer)


def _env_module(eval_config):
  """The environment's module, after checking the config's tasks and protocols exist there."""
  env_module = envs_lib.module(eval_config.env)
  unknown = (set(eval_config.tasks) - set(env_module.TASKS)) | (set(eval_config.protocols) - set(env_module.PROTOCOLS))
  if unknown:
    raise ValueError(
      f"unknown tasks/protocols {sorted(unknown)} for {eval_config.env}: tasks "
      f"{env_module.TASKS}, protocols {env_module.PROTOCOLS}"
    )
  return env_module


def _run_and_report(eval_config, make_policy, out_dir: str, title: str, printer) -> dict:
  """make_policy(envs) -> the protocol.Policy, given the list the harness's environments are created
  into (in batch order). -> the report's summary."""
  created = []

  def make_env():
    created.append(envs_lib.make(eval_config.env, **eval_config.env_kwargs))
    return created[-1]

  policy = make_policy(created)
  started = time.perf_counter()
  results = harness.run(
    policy,
    make_env,
    tasks=list(eval_config.tasks),
    protocols=list(eval_config.protocols),
    episodes_per_task=eval_config.episodes_per_task,
    num_envs=eval_config.num_envs,
    execute_steps=eval_config.execute_steps,
    seed=eval_config.seed,
    video_episodes=eval_config.video_episodes,
    printer=printer,
  )
  summary = report.write(
    results,
    out_dir,
    title,
    extra={"eval_config": eval_config.to_dict(), "seconds": time.perf_counter() - started},
    video_format=eval_config.video_format,
    step=getattr(policy, "step", None),  # the trained policy's checkpoint step (TensorBoard scalars)
  )
  printer(open(os.path.join(out_dir, "report.md")).read())
  return summary


def main(argv):
  if len(argv) > 1:
    raise cli.UserError(f"unexpected arguments: {argv[1:]}")
  config = FLAGS.config
  if FLAGS.expert == bool(FLAGS.workdir):
    raise cli.UserError("give exactly one of --workdir=RUN and --expert")
  if FLAGS.expert:
    out = FLAGS.out or os.path.join("/tmp", f"genvla_eval_{config.env}_expert")
    evaluate_expert(config, out, f"{config.env}: scripted expert")
    return
  workdir = cli.run_dir()
  from genvla_jax.inference import policy as policy_lib

  policy = policy_lib.Policy.from_workdir(workdir, step=FLAGS.step)
  out = FLAGS.out or os.path.join(workdir, "eval", config.env)
  evaluate(config, policy, out, f"{config.env}: {os.path.abspath(workdir)}")


if __name__ == "__main__":
  config_flags.DEFINE_config_file("config", None, "eval config, e.g. configs/eval_tabletop.py:quick", lock_config=True)
  cli.define_run_dir_flag("run directory of a trained policy", required=False)
  flags.DEFINE_integer("step", None, "checkpoint step (default: the latest)")
  flags.DEFINE_bool("expert", False, "evaluate the environment's scripted expert instead")
  flags.DEFINE_string("out", "", "output directory (default: RUN/eval/<env>)")
  flags.mark_flags_as_required(["config"])
  cli.run(main)
