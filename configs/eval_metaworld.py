r"""Closed-loop evaluation on MetaWorld MT10 (CPU, offscreen rendering; genvla_jax/eval/envs/metaworld_env.py).

  python -m genvla_jax.eval --config=configs/eval_metaworld.py --workdir=RUN
  python -m genvla_jax.eval --config=configs/eval_metaworld.py:quick --expert     # MetaWorld's scripted policies

Variants: `full` (default: 50 episodes per task and protocol), `quick` (5). Options: `protocols=a+b`
(visual_matching, paraphrase), `tasks=a+b` (MT10 names, e.g. reach-v3+push-v3).
"""

from genvla_jax import config_lib
from genvla_jax.eval.envs.metaworld_env import PROTOCOLS, TASKS


def get_config(arg=None):
  opts = config_lib.parse_arg(arg, variants=("full", "quick"), protocols="+".join(PROTOCOLS), tasks="+".join(TASKS))
  return config_lib.eval_config(
    "metaworld",
    dict(image_size=64, max_steps=150),
    opts.tasks.split("+"),
    opts.protocols.split("+"),
    episodes_per_task=50 if opts.variant == "full" else 5,
    num_envs=4,
    video_episodes=1,
  )
