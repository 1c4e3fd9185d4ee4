r"""π0 baseline (the paper's "π0 w/ Inst. Aug."): PaliGemma-3B prefix + a flow-matching action expert
(Gemma 300M: width 1024, MLP 4096) over 50-step action chunks with a state token; 10 Euler steps at
inference with the prefix KV cache computed once; robot data only, instructions augmented with
paraphrases from a per-task table (data/instruction_aug.py).

  python -m genvla_jax.train --config=configs/pi0_baseline.py:demo --workdir=DIR      # tiny, CPU
  python -m genvla_jax.train --config=configs/pi0_baseline.py \
      --config.data.rlds_root=/data/oxe --config.tokenizer.path=/ckpt/paligemma_tokenizer.model \
      --config.data.instruction_aug.path=/data/oxe/paraphrases.json \
      --config.pretrained.format=big_vision --config.pretrained.path=/ckpt/pt_224.npz ...

Variants: `full` (default), `demo`, `tabletop`, `metaworld` (tiny sizes on the embedded / simulator
data, where the paraphrase table comes with the data; MetaWorld has none, so there augmentation is
off); options `backbone=...`, `mixture=...` (as configs/pi0_plus.py), `horizon=H` (action chunk; 50
full, 4 tiny).
"""

from genvla_jax import config_lib
from genvla_jax.data import registry


def get_config(arg=None):
  opts = config_lib.parse_arg(
    arg, variants=("full", "demo", "tabletop", "metaworld"), backbone="paligemma_224", mixture="paper", horizon=0
  )
  config = config_lib.base_config(opts.backbone)
  config.data.robot = registry.mixture(opts.mixture)
  expert, horizon = config_lib.EXPERT_300M, 50
  if opts.variant == "demo":
    config_lib.apply_demo(config)
  if opts.variant in ("tabletop", "metaworld"):
    config_lib.apply_sim(config, opts.variant)
  if opts.variant != "full":
    expert, horizon = config_lib.EXPERT_TINY, 4
  config_lib.apply_pi0(config, expert, opts.horizon or horizon)
  if opts.variant == "demo":
    config.data.instruction_aug.path = config.data.get_ref("demo_dir") + "/paraphrases.json"
  elif opts.variant == "tabletop":
    config.data.instruction_aug.path = config.data.get_ref("sim_dir") + "/paraphrases.json"
  elif opts.variant == "metaworld":
    config.data.instruction_aug.prob = 0.0
  config.lock()
  return config
