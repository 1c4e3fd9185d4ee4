r"""OpenVLA on Prismatic's architecture (DINOv2 + SigLIP fused per patch -> fused-gelu-mlp -> Llama 2 7B),
256-bin action tokens: the baseline of the paper's Table II, with every D/S/C ablation row.

  python -m genvla_jax.train --config=configs/openvla.py:demo --workdir=DIR           # tiny, CPU
  python -m genvla_jax.train --config=configs/openvla.py:ablation=DS --workdir=DIR ...  # a Table II row

Variants: `full` (default: 7B, bf16 storage, remat, FSDP over every device), `demo` (tiny, the embedded
demo data). Options: `ablation=<subset of DSC>` (default none = OpenVLA), `dual=split|copy` (D: freeze
SigLIP and train DINOv2, as the paper's code does, or duplicate both towers). configs/openvla_plus.py is
this file with all three on.
"""

from genvla_jax import config_lib
from genvla_jax.data import registry


def get_config(arg=None, default_ablation: str = ""):
  opts = config_lib.parse_arg(arg, variants=("full", "demo"), ablation=default_ablation, dual="split", mixture="paper")
  config = config_lib.base_config("paligemma_224")  # shared defaults; the architecture is replaced below
  config.data.robot = registry.mixture(opts.mixture)
  if opts.variant == "demo":
    config_lib.apply_demo(config)
  config_lib.apply_openvla(config, tiny=opts.variant == "demo", dual_mode=opts.dual)
  config_lib.apply_ablation(config, opts.ablation)
  config.lock()
  return config
