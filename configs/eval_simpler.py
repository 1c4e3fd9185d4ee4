r"""Closed-loop evaluation in SimplerEnv (GPU machines with SimplerEnv installed; see
genvla_jax/eval/envs/SIMPLER.md). The policy must be trained on fractal (Google robot) or bridge (WidowX)
with 7-D actions; its own statistics de-normalize them.

  python -m genvla_jax.eval --config=configs/eval_simpler.py:google_robot --checkpoint=WORKDIR
  python -m genvla_jax.eval --config=configs/eval_simpler.py:widowx,protocols=visual_matching --checkpoint=WORKDIR
"""

import ml_collections

from genvla_jax import config_lib
from genvla_jax.eval.envs import simpler


def get_config(arg=None):
  opts = config_lib.parse_arg(arg, variants=("google_robot", "widowx"), protocols="visual_matching+variant_aggregation",
                              episodes=50)
  c = ml_collections.ConfigDict()
  c.env = "simpler"
  google = opts.variant == "google_robot"
  c.env_kwargs = dict(robot=opts.variant, max_steps=80 if google else 120)
  c.tasks = list(simpler.GOOGLE_ROBOT_TASKS if google else simpler.WIDOWX_TASKS)
  c.protocols = opts.protocols.split("+") if google else ["visual_matching"]  # WidowX: visual matching only
  c.episodes_per_task = opts.episodes
  c.num_envs = 1             # SimplerEnv environments are heavy: one at a time
  c.execute_steps = 1
  c.seed = 0
  c.video_episodes = 2
  c.lock()
  return c
