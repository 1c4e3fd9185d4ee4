r"""Closed-loop evaluation in SimplerEnv (GPU machines with SimplerEnv installed; see
genvla_jax/eval/envs/SIMPLER.md). The policy must be trained on fractal (Google robot) or bridge (WidowX)
with 7-D actions; its own statistics de-normalize them.

  python -m genvla_jax.eval --config=configs/eval_simpler.py:google_robot --workdir=RUN
  python -m genvla_jax.eval --config=configs/eval_simpler.py:widowx,protocols=visual_matching --workdir=RUN
"""

from genvla_jax import config_lib
from genvla_jax.eval.envs import simpler


def get_config(arg=None):
  opts = config_lib.parse_arg(
    arg, variants=("google_robot", "widowx"), protocols="visual_matching+variant_aggregation", episodes=50
  )
  google = opts.variant == "google_robot"
  return config_lib.eval_config(
    "simpler",
    dict(robot=opts.variant, max_steps=80 if google else 120),
    simpler.GOOGLE_ROBOT_TASKS if google else simpler.WIDOWX_TASKS,
    opts.protocols.split("+") if google else ["visual_matching"],  # WidowX: visual matching only
    episodes_per_task=opts.episodes,
    num_envs=1,
    video_episodes=2,
  )  # SimplerEnv envs are heavy: one at a time
