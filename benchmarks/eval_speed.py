r"""Closed-loop evaluation speed on this machine: environment steps (physics + offscreen render) and a
full 50-episode evaluation of a tiny policy through the harness.

  python benchmarks/eval_speed.py [--checkpoint=RUN] [--episodes=50] [--num_envs=10]

Rows: each environment driven by its scripted expert (env cost alone: the reference), then the tiny
π0+ policy (a trained tabletop checkpoint, or, without --checkpoint, a freshly initialised
`configs/pi0_plus.py:tabletop` model with its data recorded on first use) evaluating `--episodes`
episodes of pick_object / visual_matching with `--num_envs` environments stepped together. A policy
that fails every episode runs the full max_steps = 60, so an untrained one is the slowest case.
Prints episodes/s, env steps/s, and the ratio of time per step to the expert-driven env step.
"""

import os
import sys
import tempfile
import time
import warnings

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from absl import app, flags

FLAGS = flags.FLAGS
flags.DEFINE_string("checkpoint", "", "trained tabletop run directory (default: an untrained tiny model)")
flags.DEFINE_integer("episodes", 50, "episodes of the policy evaluation")
flags.DEFINE_integer("num_envs", 10, "environments stepped together")
flags.DEFINE_integer("expert_episodes", 20, "episodes per environment for the expert rows")


def expert_rate(env_name: str, tasks, episodes: int, image_size: int = 64) -> dict:
  from genvla_jax.eval import envs

  module, env = envs.module(env_name), envs.make(env_name, image_size=image_size)
  steps, start = 0, time.perf_counter()
  try:
    for i in range(episodes):
      env.reset(tasks[i % len(tasks)], i)
      expert, done = module.Expert(env), False
      while not done:
        _, _, done = env.step(expert.act())
        steps += 1
  finally:
    env.close()
  seconds = time.perf_counter() - start
  return dict(episodes=episodes, steps=steps, seconds=seconds)


def untrained_run(root: str) -> str:
  from configs import pi0_plus
  from genvla_jax import train

  config = pi0_plus.get_config("tabletop")
  config.unlock()
  config.data.sim_dir = os.path.join(root, "tabletop")
  config.data.sim_record.update(train_episodes=40, val_episodes=4, vl_train=40, vl_val=4)
  config.data.cache_dir = os.path.join(root, "cache")
  config.train.update(steps=1, checkpoint_every=1)
  workdir = os.path.join(root, "run")
  train.train(config, workdir, printer=lambda *a, **k: None)
  return workdir


def main(argv):
  del argv
  warnings.filterwarnings("ignore")
  from genvla_jax.eval import harness
  from genvla_jax.eval.envs import metaworld_env, tabletop
  from genvla_jax.inference import policy as policy_lib

  rows = [
    ("tabletop, scripted expert", expert_rate("tabletop", tabletop.TASKS, FLAGS.expert_episodes)),
    ("metaworld MT10, scripted policies", expert_rate("metaworld", metaworld_env.TASKS, FLAGS.expert_episodes)),
  ]
  workdir = FLAGS.checkpoint or untrained_run(tempfile.mkdtemp(prefix="genvla_eval_speed_"))
  policy = policy_lib.Policy.from_workdir(workdir)
  policy.act(tabletop.TabletopEnv(64).reset("pick_object", 0)["image"][None], ["pick up the red cube"])  # compile
  start = time.perf_counter()
  results = harness.run(
    policy,
    lambda: tabletop.TabletopEnv(64),
    tasks=["pick_object"],
    protocols=["visual_matching"],
    episodes_per_task=FLAGS.episodes,
    num_envs=FLAGS.num_envs,
    video_episodes=0,
    printer=lambda *a, **k: None,
  )
  rows.append(
    (
      f"tabletop, tiny pi0+ policy, {FLAGS.num_envs} envs",
      dict(episodes=len(results), steps=sum(r.steps for r in results), seconds=time.perf_counter() - start),
    )
  )
  reference = rows[0][1]["seconds"] / rows[0][1]["steps"]
  print(
    f"{'rollouts':<40} {'episodes':>8} {'steps':>7} {'seconds':>8} {'episodes/s':>10} {'steps/s':>8} "
    f"{'time/step vs expert-driven tabletop':>36}"
  )
  for name, r in rows:
    print(
      f"{name:<40} {r['episodes']:8d} {r['steps']:7d} {r['seconds']:8.1f} {r['episodes'] / r['seconds']:10.2f} "
      f"{r['steps'] / r['seconds']:8.1f} {r['seconds'] / r['steps'] / reference:36.2f}"
    )
  print(
    f"policy success (pick_object, visual matching): {sum(r.success for r in results)}/{len(results)}"
    f" ({'trained checkpoint' if FLAGS.checkpoint else 'untrained: the slowest case, every episode runs 60 steps'})"
  )


if __name__ == "__main__":
  app.run(main)
