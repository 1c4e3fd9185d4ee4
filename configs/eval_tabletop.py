r"""Closed-loop evaluation on the MuJoCo tabletop benchmark (genvla_jax/eval/envs/tabletop.py).

  python -m genvla_jax.eval --config=configs/eval_tabletop.py --checkpoint=WORKDIR [--out=DIR]
  python -m genvla_jax.eval --config=configs/eval_tabletop.py:quick --expert     # the scripted expert

Variants: `full` (default: 50 episodes per task and protocol, SimplerEnv-sized), `quick` (5).
Options: `protocols=a+b` (subset of visual_matching, variant_aggregation, background_masking,
paraphrase), `tasks=a+b`.
"""

import ml_collections

from genvla_jax import config_lib
from genvla_jax.eval.envs.tabletop import PROTOCOLS, TASKS


def get_config(arg=None):
  opts = config_lib.parse_arg(arg, variants=("full", "quick"), protocols="+".join(PROTOCOLS), tasks="+".join(TASKS))
  c = ml_collections.ConfigDict()
  c.env = "tabletop"
  c.env_kwargs = dict(image_size=64, max_steps=60)
  c.tasks = opts.tasks.split("+")
  c.protocols = opts.protocols.split("+")
  c.episodes_per_task = 50 if opts.variant == "full" else 5
  c.num_envs = 10            # environments stepped together (one batched policy call per re-plan)
  c.execute_steps = 1        # actions of each predicted chunk executed before re-planning
  c.seed = 0                 # episode seeds: seed, seed+1, ... (training demos use seeds >= 100000)
  c.video_episodes = 2       # per (protocol, task): the first episodes are saved as GIFs
  c.lock()
  return c
