r"""Logits of a pretrained PaliGemma checkpoint on given inputs (for checking imports and numerics).

  python -m genvla_jax.tools.logits --checkpoint=DIR_OR_NPZ --format=hf|big_vision \
      --inputs=IN.npz --out=OUT.npy [--arch='{"llm": {"sliding_window": 512}}'] [--batch_size=8]

IN.npz: images [B,H,W,3] float32 in [-1,1]; tokens [B,T] int32 (text only: BOS, prefix, suffix; no
image placeholder ids); prefix_len [B] int32 (text tokens, from the start, that attend bidirectionally
with the image). Every token is real (no padding). OUT.npy: float32 logits [B,T,V] at the text
positions (image tokens are prepended by the model). The architecture comes from the checkpoint
(HF config.json, or big_vision tensor shapes); --arch (JSON text or file) overrides fields of it.
"""

import json
import os

from absl import flags
import jax
import jax.numpy as jnp
import numpy as np

from genvla_jax import cli
from genvla_jax.models import build, prefix_lm
from genvla_jax.pretrained import api

FLAGS = flags.FLAGS


def resolve_architecture(fmt: str, checkpoint: str, arch: str = "") -> dict:
  """-> {image_size, img, llm}: the checkpoint's own description, with `arch` overrides merged in."""
  config = api.architecture(fmt, checkpoint)
  if arch:
    overrides = json.load(open(arch)) if os.path.exists(arch) else json.loads(arch)
    unknown = set(overrides) - set(config)
    if unknown:
      raise ValueError(f"--arch: unknown keys {sorted(unknown)}; use image_size, img, llm")
    for key, value in overrides.items():
      config[key] = {**config[key], **value} if isinstance(value, dict) else value
  return config


def read_inputs(path: str, image_size: int, vocab_size: int):
  """-> (images [B,S,S,3] float32, tokens [B,T] int32, prefix_len [B] int32), validated."""
  with np.load(path) as f:
    missing = {"images", "tokens", "prefix_len"} - set(f.files)
    if missing:
      raise ValueError(f"{path} lacks {sorted(missing)} (needs images, tokens, prefix_len)")
    images = f["images"].astype(np.float32)
    tokens = f["tokens"].astype(np.int32)
    prefix_len = f["prefix_len"].astype(np.int32)
  batch = tokens.shape[0]
  if images.shape != (batch, image_size, image_size, 3):
    raise ValueError(f"images have shape {images.shape}; the checkpoint expects {(batch, image_size, image_size, 3)}")
  if prefix_len.shape != (batch,):
    raise ValueError(f"prefix_len has shape {prefix_len.shape}; expected {(batch,)}")
  if tokens.min() < 0 or tokens.max() >= vocab_size:
    raise ValueError(f"token ids span [{tokens.min()}, {tokens.max()}], outside the vocabulary [0, {vocab_size})")
  return images, tokens, prefix_len


def compute_logits(model: prefix_lm.PrefixLM, params, images, tokens, prefix_len, batch_size: int = 8) -> np.ndarray:
  """-> float32 logits [B,T,V] at the text positions; the first prefix_len tokens attend as prefix."""

  @jax.jit
  def forward(params, images, tokens, prefix_len):
    ar_mask = jnp.arange(tokens.shape[1])[None] >= prefix_len[:, None]
    return model.apply({"params": params}, images, tokens, jnp.ones(tokens.shape, bool), ar_mask)

  return np.concatenate(
    [
      np.asarray(
        forward(params, images[i : i + batch_size], tokens[i : i + batch_size], prefix_len[i : i + batch_size]),
        np.float32,
      )
      for i in range(0, tokens.shape[0], batch_size)
    ]
  )


def run(checkpoint: str, fmt: str, inputs: str, out: str, arch: str = "", batch_size: int = 8):
  config = resolve_architecture(fmt, checkpoint, arch)
  model = build.vla(config["img"], config["llm"])
  params = api.load(fmt, checkpoint, model, config["image_size"])
  images, tokens, prefix_len = read_inputs(inputs, config["image_size"], config["llm"]["vocab_size"])
  logits = compute_logits(model, params, images, tokens, prefix_len, batch_size)
  np.save(out, logits)
  return logits


def main(argv):
  if len(argv) > 1:
    raise cli.UserError(f"unexpected arguments: {argv[1:]}")
  logits = run(FLAGS.checkpoint, FLAGS.format, FLAGS.inputs, FLAGS.out, FLAGS.arch, FLAGS.batch_size)
  print(f"wrote logits {logits.shape} to {FLAGS.out}")


if __name__ == "__main__":
  flags.DEFINE_string("checkpoint", None, "HF PaliGemma directory / .safetensors, or big_vision .npz")
  flags.DEFINE_enum("format", None, list(api.FORMATS), "checkpoint format")
  flags.DEFINE_string("inputs", None, "npz with images, tokens, prefix_len")
  flags.DEFINE_string("out", None, "where to write the logits (.npy)")
  flags.DEFINE_string("arch", "", "JSON text or file overriding architecture fields")
  flags.DEFINE_integer("batch_size", 8, "examples per forward pass")
  flags.mark_flags_as_required(["checkpoint", "format", "inputs", "out"])
  cli.run(main)
