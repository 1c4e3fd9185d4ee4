r"""The project's own small VLM, stage 2: a PaliGemma-style model (one SigLIP-like tower + Gemma-like decoder,
prefix-LM, loss on the answer) pretrained on the generated tabletop corpus (data/vl_corpus.py: presence, colour, count,
spatial relations, pointing, drawer and gripper state, captions, under a wide pool of visual conditions). It
stands in for the web-pretrained PaliGemma the paper starts from; the robot policies of
`configs/pi0_plus.py:tabletop,vlm=pretrained` start from its export exactly as a user starts from released
PaliGemma weights.

  python -m genvla_jax.tools.pretrain_tower --config=configs/pretrain_tower.py   # stage 1 (the tower) first
  python -m genvla_jax.train --config=configs/pretrain_vlm.py --workdir=RUN      # stage 2 from its output
  python -m genvla_jax.tools.export_hf --workdir=RUN --out=VLM_DIR               # HF PaliGemma + tokenizer
  python -m genvla_jax.eval.vqa --workdir=RUN --benchmark=llava \
      --annotations=~/.cache/genvla_jax/vl_corpus_v2/heldout.json                # held-out conditions + wordings
"""

from genvla_jax import config_lib


def get_config(arg=None):
  config_lib.parse_arg(arg, variants=("tabletop",))
  c = config_lib.base_config("paligemma_224")  # every field's default; sizes below
  # the architecture every tabletop policy with vlm=pretrained|scratch shares (config_lib.TABLETOP_VLM):
  # tiny SigLIP-like tower (patch 8) + tiny Gemma-like decoder, vocabulary 768 = 512 pieces + 256 bin ids
  vlm = config_lib.TABLETOP_VLM
  c.model.img, c.model.llm, c.model.image_size = dict(vlm["img"]), dict(vlm["llm"]), vlm["image_size"]
  c.model.scan_unroll = config_lib.TINY_SCAN_UNROLL
  c.model.dual_encoder = False
  c.data.robot, c.data.robot_fraction = [], 0.0  # VL data only
  c.data.corpus_dir = config_lib.CORPUS_DIR
  c.data.corpus = dict(config_lib.TABLETOP_CORPUS)  # 40k train / 2k held-out questions, 512-piece tokenizer
  c.data.vl_root = c.data.get_ref("corpus_dir")
  c.data.vl = [dict(name="tabletop_corpus", path="train.json", format="llava_json", weight=1.0)]
  c.tokenizer.path = c.data.get_ref("corpus_dir") + "/tokenizer.model"
  # stage 1's output (configs/pretrain_tower.py): its trained tower, the rest freshly initialised. Without a
  # tower stage the decoder learns the answer priors and never looks (benchmarks/RESULTS.md)
  c.pretrained.update(format="hf", path=config_lib.TOWER_START)
  c.tokenizer.bins_overwrite_text_ids = False
  c.tokenizer.max_text_len = 64  # captions: up to 63 tokens with BOS and EOS
  c.data.batch_size = 64
  c.data.augment.enabled = False  # crops would move the pointing answers' coordinates
  c.optimizer.update(lr=1e-3, warmup_steps=200)
  c.train.update(steps=2000, log_every=50, checkpoint_every=250, keep_checkpoints=2)
  c.lock()
  return c
