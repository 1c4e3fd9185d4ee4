r"""Stage 1 of the project's small VLM: its image tower alone learns the corpus' scenes (which object shows in
each patch, drawer and gripper state, table kind: training/tower_stage.py), as a real VLM starts from a
pretrained SigLIP tower. Writes an HF PaliGemma start (this tower, the rest freshly initialised, the corpus
tokenizer) that stage 2 (configs/pretrain_vlm.py, the prefix-LM stage) loads as config.pretrained.

  python -m genvla_jax.tools.pretrain_tower --config=configs/pretrain_tower.py     # -> config.out
"""

import ml_collections

from genvla_jax import config_lib


def get_config(arg=None):
  config_lib.parse_arg(arg, variants=("tabletop",))
  c = ml_collections.ConfigDict()
  c.seed = 0  # of the projector and decoder's fresh initialisation
  # the VLM the tower goes into (configs/pretrain_vlm.py has the same): config_lib.TABLETOP_VLM, one tower
  c.model = config_lib.base_config("paligemma_224").model.to_dict()
  c.model.update(img=dict(config_lib.TABLETOP_VLM["img"]), llm=dict(config_lib.TABLETOP_VLM["llm"]))
  c.model.update(image_size=config_lib.TABLETOP_VLM["image_size"], dual_encoder=False)
  c.model.scan_unroll = config_lib.TINY_SCAN_UNROLL
  c.corpus_dir = config_lib.CORPUS_DIR  # made there on first use, with its tokenizer (data/vl_corpus.py)
  c.corpus = dict(config_lib.TABLETOP_CORPUS)
  c.out = config_lib.TOWER_START  # reused when it holds this config's result (DONE.json)
  c.stage = dict(steps=3000, batch_size=64, lr=1e-3, warmup_steps=100, seed=0, eval_images=500, log_every=250)
  c.lock()
  return c
