r"""Closed-loop evaluation on the MuJoCo tabletop benchmark (genvla_jax/eval/envs/tabletop.py).

  python -m genvla_jax.eval --config=configs/eval_tabletop.py --workdir=RUN [--out=DIR]
  python -m genvla_jax.eval --config=configs/eval_tabletop.py:quick --expert     # the scripted expert

Variants: `full` (default: 50 episodes per task and protocol, SimplerEnv-sized), `quick` (5).
Options: `protocols=a+b` (subset of visual_matching, variant_aggregation, background_masking,
paraphrase, held_out_conditions; default the first four, SimplerEnv's), `tasks=a+b`.
"""

from genvla_jax import config_lib
from genvla_jax.eval.envs.tabletop import TASKS

DEFAULT_PROTOCOLS = ("visual_matching", "variant_aggregation", "background_masking", "paraphrase")


def get_config(arg=None):
  opts = config_lib.parse_arg(
    arg, variants=("full", "quick"), protocols="+".join(DEFAULT_PROTOCOLS), tasks="+".join(TASKS)
  )
  return config_lib.eval_config(
    "tabletop",
    dict(image_size=64, max_steps=60),
    opts.tasks.split("+"),
    opts.protocols.split("+"),
    episodes_per_task=50 if opts.variant == "full" else 5,
    num_envs=10,
    video_episodes=2,
  )
