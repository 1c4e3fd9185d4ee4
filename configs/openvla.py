r"""OpenVLA on Prismatic's architecture (DINOv2 + SigLIP fused per patch -> fused-gelu-mlp -> Llama 2 7B),
256-bin action tokens: the baseline of the paper's Table II, with every D/S/C ablation row.

  python -m genvla_jax.train --config=configs/openvla.py:demo --workdir=DIR           # tiny, CPU
  python -m genvla_jax.train --config=configs/openvla.py:ablation=DS --workdir=DIR ...  # a Table II row

Variants: `full` (default: 7B, bf16 storage, remat, FSDP over every device), `demo` (tiny, the embedded
demo data). Options: `ablation=<subset of DSC>` (default none = OpenVLA), `dual=split|copy` (D: freeze
SigLIP and train DINOv2, as the paper's code does, or duplicate both towers), `mixture=...` (+ `robot_dir=OUT`
for a LeRobot mixture; as configs/pi0_plus.py: `mixture=droid` feeds DROID's three cameras). configs/openvla_plus.py is
this file with all three on.
"""

from genvla_jax import config_lib
from genvla_jax.models import gemma


def get_config(arg=None, default_ablation: str = ""):
  opts = config_lib.parse_arg(
    arg, variants=("full", "demo"), ablation=default_ablation, dual="split", mixture="paper", robot_dir=""
  )
  c = config_lib.base_config(backbone=None)  # every field's default (genvla_jax/config_schema.py)
  # Prismatic: DINOv2 + SigLIP read at their penultimate blocks, fused per patch
  if opts.variant == "demo":  # the tiny model on the embedded demo data: trains on a 2-core CPU in minutes
    c.data.demo_dir = config_lib.DEMO_DIR  # generated there on first use
    c.update_from_flattened_dict(config_lib.demo_data(c.data.get_ref("demo_dir")))
    c.tokenizer.max_text_len = 40
    c.model.img = config_lib.prismatic_tower("tiny-dinov2")
    c.model.fused_img = config_lib.prismatic_tower("tiny-64")
    c.model.llm = dict(gemma.VARIANTS["llama2_tiny"])
    c.model.scan_unroll = config_lib.TINY_SCAN_UNROLL
    c.data.batch_size = 32
    c.data.augment.enabled = False  # the demo's targets are pixel-exact grid cells: crops would move them
    c.optimizer.update(lr=1e-3, warmup_steps=100)
    c.train.update(steps=2000, log_every=50, checkpoint_every=250, keep_checkpoints=2)
  else:
    c.model.image_size = 224
    c.model.img = config_lib.prismatic_tower("L/14-dinov2-reg4")
    c.model.fused_img = config_lib.prismatic_tower("So400m/14")
    c.model.llm = dict(gemma.VARIANTS["llama2_7b"])
    # a 7B model: bf16 storage (optimizer state stays float32), remat, FSDP over every device
    c.model.update(dtype="bfloat16", param_dtype="bfloat16", frozen_dtype="bfloat16", remat_policy="dots")
    c.mesh.update(data=1, fsdp=-1)
    c.tokenizer.bins_position = "text_vocab_end"  # OpenVLA: the 256 least-used ids of Llama's 32000
  # With D, dual_mode "split" freezes SigLIP and trains DINOv2 (the paper's released code), "copy"
  # duplicates both towers; the fused-gelu-mlp projector; Llama 2 with [BOS][image][text] causal attention
  c.model.update(dual_mode=opts.dual, projector="mlp3", image_after_bos=True, causal_prefix=True)
  c.tokenizer.bins_layout = "openvla"  # OpenVLA's bin edges and id order (ablation rows with bins)
  c.data.prompt = "In: What action should the robot take to {instruction}?\nOut:"
  c.tokenizer.prompt_separator = " "
  # after the variant's own data: paper = fractal (RT-1) + bridge (full); a mixture of several cameras also sets
  # data.cameras and model.num_cameras; `demo,mixture=libero,robot_dir=OUT`: the tiny model on a LeRobot conversion
  c.update_from_flattened_dict(config_lib.robot_mixture(opts.mixture, opts.robot_dir, opts.variant))
  c.update_from_flattened_dict(config_lib.ablation(opts.ablation))  # none by default: OpenVLA
  c.lock()
  return c
