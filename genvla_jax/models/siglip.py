"""SigLIP-style ViT image tower (as used by PaliGemma: no pooling head, all patch tokens out).

Parameter names (stable; checkpoint import maps onto them), with L = depth stacked on axis 0:
  embedding/{kernel [p,p,3,D], bias [D]}     patch embedding (conv, stride = patch)
  pos_embedding [1,N,D]                       learned position embedding, N = (image_size / p)^2
  blocks/LayerNorm_0/{scale,bias} [L,D]
  blocks/MultiHeadDotProductAttention_0/{query,key,value}/{kernel [L,D,H,Dh], bias [L,H,Dh]}
  blocks/MultiHeadDotProductAttention_0/out/{kernel [L,H,Dh,D], bias [L,D]}
  blocks/LayerNorm_1/{scale,bias} [L,D]
  blocks/MlpBlock_0/Dense_{0,1}/{kernel,bias}
  encoder_norm/{scale,bias} [D]
"""

import flax.linen as nn
import jax.numpy as jnp

from genvla_jax.models import remat
from genvla_jax.models.partitioning import BATCH, MODEL, constrain


class MlpBlock(nn.Module):
  mlp_dim: int
  dtype: str = "float32"

  @nn.compact
  def __call__(self, x):  # [B,N,D] -> [B,N,D]
    width = x.shape[-1]
    x = nn.Dense(self.mlp_dim, dtype=self.dtype)(x)
    x = constrain(nn.gelu(x, approximate=True), BATCH, None, MODEL)  # [B,N,F]
    return nn.Dense(width, dtype=self.dtype)(x)


class EncoderBlock(nn.Module):
  """Pre-norm transformer block. Scan-compatible: (x, _) -> (x, None)."""
  num_heads: int
  mlp_dim: int
  dtype: str = "float32"

  @nn.compact
  def __call__(self, x, _=None):  # x: [B,N,D]
    y = nn.LayerNorm(dtype=self.dtype)(x)
    y = nn.MultiHeadDotProductAttention(num_heads=self.num_heads, dtype=self.dtype,
                                        kernel_init=nn.initializers.xavier_uniform())(y, y)
    x = x + y
    y = nn.LayerNorm(dtype=self.dtype)(x)
    x = x + MlpBlock(self.mlp_dim, dtype=self.dtype)(y)
    return constrain(x, BATCH, None, None), None


class SigLIP(nn.Module):
  """images [B,H,W,3] in [-1,1] -> patch features [B,N,D]."""
  patch_size: int
  width: int
  depth: int
  mlp_dim: int
  num_heads: int
  posemb_std: float | None = None  # init std of pos_embedding; None: 1/sqrt(width) (big_vision)
  dtype: str = "float32"
  remat_policy: str = "none"

  @nn.compact
  def __call__(self, images):
    p = self.patch_size
    if images.ndim != 4 or images.shape[-1] != 3:
      raise ValueError(f"SigLIP expects images [B,H,W,3], got shape {images.shape}")
    if images.shape[1] % p or images.shape[2] % p:
      raise ValueError(f"image size {images.shape[1:3]} is not a multiple of patch size {p}")
    x = nn.Conv(self.width, (p, p), strides=(p, p), padding="VALID", name="embedding",
                dtype=self.dtype)(images.astype(self.dtype))
    b, h, w, d = x.shape
    x = x.reshape(b, h * w, d)
    pos = self.param("pos_embedding", nn.initializers.normal(stddev=self.posemb_std or d**-0.5),
                     (1, h * w, d))
    x = x + pos.astype(x.dtype)
    block = remat.wrap(EncoderBlock, self.remat_policy)
    blocks = nn.scan(block, variable_axes={"params": 0}, split_rngs={"params": True}, length=self.depth)
    x, _ = blocks(self.num_heads, self.mlp_dim, self.dtype, name="blocks")(x, None)
    return nn.LayerNorm(name="encoder_norm", dtype=self.dtype)(x)
