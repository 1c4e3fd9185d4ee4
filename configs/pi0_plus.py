r"""pi0+ (the paper's recipe): PaliGemma-3B with the dual image encoder (D), string actions (S) and 50/50
co-training with vision-language data (C).

  python -m genvla_jax.train --config=configs/pi0_plus.py:demo --workdir=DIR     # tiny, CPU, embedded data
  python -m genvla_jax.train --config=configs/pi0_plus.py \
      --config.data.rlds_root=/data/oxe --config.tokenizer.path=/ckpt/paligemma_tokenizer.model ...

Arguments: variant `full` (default), `demo`, `tabletop` or `metaworld` (tiny model on the MuJoCo
tabletop benchmark's / MetaWorld MT10's expert demonstrations, evaluated closed-loop by
`python -m genvla_jax.eval`; metaworld has no VL data, so its C is off); option `ablation=<subset of DSC>`
switches D, S, C
(e.g. `demo,ablation=DS` = no co-training; `ablation=` = none of the three); option
`backbone=paligemma_224|paligemma_448|paligemma2_224|paligemma2_448` picks the full-size PaliGemma;
option `mixture=paper|bridge|fractal` picks the robot datasets (data/registry.py MIXTURES; full only).
"""

from genvla_jax import config_lib
from genvla_jax.data import registry


def get_config(arg=None):
  opts = config_lib.parse_arg(
    arg, variants=("full", "demo", "tabletop", "metaworld"), ablation="DSC", backbone="paligemma_224", mixture="paper"
  )
  config = config_lib.base_config(opts.backbone)
  config.data.robot = registry.mixture(opts.mixture)
  if opts.variant == "demo":
    config_lib.apply_demo(config)
  if opts.variant in ("tabletop", "metaworld"):
    config_lib.apply_sim(config, opts.variant)
  config_lib.apply_ablation(config, opts.ablation)
  config.lock()
  return config
