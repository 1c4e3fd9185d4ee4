"""The ViT image tower: SigLIP (PaliGemma's) by default, DINOv2 with options; all patch tokens out.

Sizes by name: VARIANTS (below). Options:
  cls_token / num_registers  prefix tokens before the patches (DINOv2: a CLS token; "-reg" models also
                             registers); they take part in attention and are dropped from the output.
                             The CLS token has no position embedding of its own: a checkpoint's CLS
                             position embedding is added into it at import (the same sum).
  layer_scale                per-channel scales on both residual branches (DINOv2's LayerScale)
  mlp_activation             "gelu_tanh" (SigLIP) or "gelu" (exact: DINOv2)
  pixel_norm                 "unit": images in [-1,1] as they come (SigLIP); "imagenet": mapped to ImageNet
                             mean/std normalization first (DINOv2)
  final_norm                 the encoder's last LayerNorm (off where features come from an inner block:
                             Prismatic / OpenVLA take the penultimate block's output, i.e. `depth` = the
                             checkpoint's depth - 1 and no final norm)

Parameter names (stable; checkpoint import maps onto them), with L = depth stacked on axis 0:
  embedding/{kernel [p,p,3,D], bias [D]}     patch embedding (conv, stride = patch)
  pos_embedding [1,N,D]                       learned position embedding of the N = (image_size / p)^2 patches
  cls_token [1,1,D], reg_tokens [1,R,D]       (cls_token / num_registers only)
  blocks/LayerNorm_0/{scale,bias} [L,D]
  blocks/MultiHeadDotProductAttention_0/{query,key,value}/{kernel [L,D,H,Dh], bias [L,H,Dh]}
  blocks/MultiHeadDotProductAttention_0/out/{kernel [L,H,Dh,D], bias [L,D]}
  blocks/ls1, blocks/ls2 [L,D]                 (layer_scale only)
  blocks/LayerNorm_1/{scale,bias} [L,D]
  blocks/MlpBlock_0/Dense_{0,1}/{kernel,bias}
  encoder_norm/{scale,bias} [D]                (final_norm only)
"""

import dataclasses

import flax.linen as nn
import jax.numpy as jnp
import numpy as np

from genvla_jax.models import attention, remat
from genvla_jax.models.partitioning import BATCH, MODEL, constrain

IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], np.float32)  # numpy: importing must not start a JAX backend
IMAGENET_STD = np.array([0.229, 0.224, 0.225], np.float32)
ACTIVATIONS = {"gelu_tanh": lambda x: nn.gelu(x, approximate=True), "gelu": lambda x: nn.gelu(x, approximate=False)}

# Tower sizes by name (ViT keyword arguments; options left out take the defaults below). The released
# sizes as their checkpoints have them; Prismatic / OpenVLA read a tower one block short without its final
# norm (config_lib.prismatic_tower).
VARIANTS = {
  # SigLIP So400m/14: PaliGemma's and PaliGemma 2's tower
  "So400m/14": dict(patch_size=14, width=1152, depth=27, mlp_dim=4304, num_heads=16, posemb_std=None),
  # DINOv2 ViT-L/14 with 4 registers, as Prismatic / OpenVLA use it
  "L/14-dinov2-reg4": dict(
    patch_size=14,
    width=1024,
    depth=24,
    mlp_dim=4096,
    num_heads=16,
    posemb_std=None,
    cls_token=True,
    num_registers=4,
    layer_scale=True,
    mlp_activation="gelu",
    pixel_norm="imagenet",
  ),
  # Tiny sizes for the CPU demo and tests. posemb_std=1: from scratch, a strong position signal lets the
  # tiny model localize within ~200 steps (with the default 1/sqrt(width) it needed several times longer)
  "tiny": dict(patch_size=8, width=128, depth=2, mlp_dim=512, num_heads=4, posemb_std=1.0),
  # DINOv2-like (CLS, a register, LayerScale, exact GELU, ImageNet pixels) and a SigLIP-like tower of
  # another width: Prismatic's two towers at test size
  "tiny-dinov2": dict(
    patch_size=8,
    width=96,
    depth=3,
    mlp_dim=384,
    num_heads=4,
    posemb_std=1.0,
    cls_token=True,
    num_registers=1,
    layer_scale=True,
    mlp_activation="gelu",
    pixel_norm="imagenet",
  ),
  "tiny-64": dict(patch_size=8, width=64, depth=3, mlp_dim=256, num_heads=4, posemb_std=1.0),
}


class MlpBlock(nn.Module):
  mlp_dim: int
  dtype: str = "float32"
  activation: str = "gelu_tanh"

  @nn.compact
  def __call__(self, x):  # [B,N,D] -> [B,N,D]
    width = x.shape[-1]
    x = nn.Dense(self.mlp_dim, dtype=self.dtype)(x)
    x = constrain(ACTIVATIONS[self.activation](x), BATCH, None, MODEL)  # [B,N,F]
    return nn.Dense(width, dtype=self.dtype)(x)


class EncoderBlock(nn.Module):
  """Pre-norm transformer block. Scan-compatible: (x, _) -> (x, None)."""

  num_heads: int
  mlp_dim: int
  dtype: str = "float32"
  activation: str = "gelu_tanh"
  layer_scale: bool = False
  attention_impl: str = "xla"  # models/attention.py IMPLS

  @nn.compact
  def __call__(self, x, _=None):  # x: [B,N,D]
    def scaled(name, y):
      if not self.layer_scale:
        return y
      return y * self.param(name, nn.initializers.ones_init(), (y.shape[-1],)).astype(y.dtype)

    y = nn.LayerNorm(dtype=self.dtype)(x)
    implementation = attention.flax_attention_fn(self.attention_impl)  # None: flax's own ("xla")
    y = nn.MultiHeadDotProductAttention(
      num_heads=self.num_heads,
      dtype=self.dtype,
      kernel_init=nn.initializers.xavier_uniform(),
      **({} if implementation is None else dict(attention_fn=implementation)),
    )(y, y)
    x = x + scaled("ls1", y)
    y = nn.LayerNorm(dtype=self.dtype)(x)
    x = x + scaled("ls2", MlpBlock(self.mlp_dim, dtype=self.dtype, activation=self.activation)(y))
    return constrain(x, BATCH, None, None), None


class ViT(nn.Module):
  """images [B,H,W,3] in [-1,1] -> patch features [B,N,D]."""

  patch_size: int
  width: int
  depth: int
  mlp_dim: int
  num_heads: int
  posemb_std: float | None = None  # init std of pos_embedding; None: 1/sqrt(width) (big_vision)
  cls_token: bool = False
  num_registers: int = 0
  layer_scale: bool = False
  mlp_activation: str = "gelu_tanh"
  final_norm: bool = True
  pixel_norm: str = "unit"
  dtype: str = "float32"
  remat_policy: str = "none"
  scan_unroll: int = 1  # blocks per scan iteration (config.model.scan_unroll; >= depth: unrolled)
  attention_impl: str = "xla"  # models/attention.py IMPLS (config.model.attention_impl)

  @nn.compact
  def __call__(self, images):
    p = self.patch_size
    if images.ndim != 4 or images.shape[-1] != 3:
      raise ValueError(f"the image tower expects images [B,H,W,3], got shape {images.shape}")
    if images.shape[1] % p or images.shape[2] % p:
      raise ValueError(f"image size {images.shape[1:3]} is not a multiple of patch size {p}")
    if self.pixel_norm == "imagenet":
      images = ((images.astype(jnp.float32) + 1.0) / 2.0 - IMAGENET_MEAN) / IMAGENET_STD
    elif self.pixel_norm != "unit":
      raise ValueError(f"unknown pixel_norm {self.pixel_norm!r}; use 'unit' or 'imagenet'")
    x = nn.Conv(self.width, (p, p), strides=(p, p), padding="VALID", name="embedding", dtype=self.dtype)(
      images.astype(self.dtype)
    )
    b, h, w, d = x.shape
    x = x.reshape(b, h * w, d)
    pos = self.param("pos_embedding", nn.initializers.normal(stddev=self.posemb_std or d**-0.5), (1, h * w, d))
    x = x + pos.astype(x.dtype)
    prefix = []
    if self.cls_token:
      prefix.append(self.param("cls_token", nn.initializers.zeros_init(), (1, 1, d)))
    if self.num_registers:
      prefix.append(self.param("reg_tokens", nn.initializers.normal(1e-6), (1, self.num_registers, d)))
    if prefix:
      x = jnp.concatenate([jnp.broadcast_to(t.astype(x.dtype), (b,) + t.shape[1:]) for t in prefix] + [x], 1)
    block = remat.wrap(EncoderBlock, self.remat_policy)
    blocks = nn.scan(
      block, variable_axes={"params": 0}, split_rngs={"params": True}, length=self.depth, unroll=self.scan_unroll
    )
    x, _ = blocks(
      self.num_heads,
      self.mlp_dim,
      self.dtype,
      self.mlp_activation,
      self.layer_scale,
      self.attention_impl,
      name="blocks",
    )(x, None)
    if self.final_norm:
      x = nn.LayerNorm(name="encoder_norm", dtype=self.dtype)(x)
    return x[:, x.shape[1] - h * w :]  # patch tokens


# Module fields that are not architecture (set by the model that holds the tower, or by flax).
_NOT_ARCHITECTURE = ("dtype", "remat_policy", "scan_unroll", "attention_impl", "parent", "name")


def options(tower_config) -> dict:
  """A tower config (ViT keyword arguments: a size from VARIANTS, maybe with options) with every option
  it leaves out at the class default: what a tower built from it uses, for code that reads the
  architecture without building the module (checkpoint import / export, comparisons)."""
  defaults = {
    f.name: f.default
    for f in dataclasses.fields(ViT)
    if f.default is not dataclasses.MISSING and f.name not in _NOT_ARCHITECTURE
  }
  return {**defaults, **tower_config}
