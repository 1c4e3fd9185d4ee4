"""Gemma-style decoder: RMSNorm, RoPE, GeGLU, multi-query / grouped-query attention, tied embeddings.

One implementation serves every model variant and both training and cached decoding. The caller builds
the attention mask (prefix-LM, see `masks.py`) and positions; the decoder only applies them.

Parameter names follow the big_vision PaliGemma release (L = depth stacked on axis 0):
  embedder/input_embedding [V,D]
  layers/pre_attention_norm/scale [L,D]
  layers/attn/q_einsum/w [L,N,D,Hd]          N query heads
  layers/attn/kv_einsum/w [L,2,K,D,Hd]       K key/value heads (K=1: multi-query)
  layers/attn/attn_vec_einsum/w [L,N,Hd,D]
  layers/pre_ffw_norm/scale [L,D]
  layers/mlp/gating_einsum [L,2,D,F]
  layers/mlp/linear [L,F,D]
  final_norm/scale [D]

KV cache (decoding): {"k": [L,B,S,K,Hd], "v": [L,B,S,K,Hd]}; a call with T new tokens writes slots
[cache_index, cache_index + T) for every row and attends over all S slots through `attn_mask`.
"""

from typing import Optional

import flax.linen as nn
import jax
import jax.numpy as jnp

from genvla_jax.models import remat


def _init(in_axis, out_axis, batch_axis=()):
  return nn.initializers.variance_scaling(1.0, "fan_in", "truncated_normal", in_axis=in_axis,
                                          out_axis=out_axis, batch_axis=batch_axis)


class RMSNorm(nn.Module):
  @nn.compact
  def __call__(self, x):  # [..., D]
    scale = self.param("scale", nn.initializers.zeros_init(), (x.shape[-1],))
    var = jnp.mean(jnp.square(x.astype(jnp.float32)), axis=-1, keepdims=True)
    y = x.astype(jnp.float32) * jax.lax.rsqrt(var + 1e-6)
    return (y * (1 + scale.astype(jnp.float32))).astype(x.dtype)


def apply_rope(x, positions, max_wavelength=10_000):
  """Rotary embedding, half-split convention. x [B,T,N,Hd], positions [B,T] -> [B,T,N,Hd]."""
  half = x.shape[-1] // 2
  timescale = max_wavelength ** (2 * jnp.arange(half, dtype=jnp.float32) / x.shape[-1])
  radians = positions[..., None].astype(jnp.float32) / timescale  # [B,T,half]
  sin, cos = jnp.sin(radians)[..., None, :], jnp.cos(radians)[..., None, :]
  x1, x2 = jnp.split(x.astype(jnp.float32), 2, axis=-1)
  return jnp.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin], axis=-1).astype(x.dtype)


class Attention(nn.Module):
  num_heads: int
  num_kv_heads: int
  head_dim: int
  query_pre_attn_scalar: float
  dtype: str = "float32"

  @nn.compact
  def __call__(self, x, positions, attn_mask, cache=None, cache_index=0):
    """x [B,T,D], positions [B,T], attn_mask [B,T,S] bool -> ([B,T,D], new layer cache or None)."""
    d = x.shape[-1]
    wq = self.param("q_einsum", _init(1, (0, 2)), (self.num_heads, d, self.head_dim), jnp.float32)
    wkv = self.param("kv_einsum", _init(2, (1, 3), (0,)), (2, self.num_kv_heads, d, self.head_dim),
                     jnp.float32)
    wo = self.param("attn_vec_einsum", _init((0, 1), 2), (self.num_heads, self.head_dim, d),
                    jnp.float32)
    q = jnp.einsum("BTD,NDH->BTNH", x, wq.astype(self.dtype))
    k, v = jnp.einsum("BSD,CKDH->CBSKH", x, wkv.astype(self.dtype))
    q, k = apply_rope(q, positions), apply_rope(k, positions)
    new_cache = None
    if cache is not None:
      start = (0, cache_index, 0, 0)
      k = jax.lax.dynamic_update_slice(cache["k"], k.astype(cache["k"].dtype), start)
      v = jax.lax.dynamic_update_slice(cache["v"], v.astype(cache["v"].dtype), start)
      new_cache = {"k": k, "v": v}
    out = jax.nn.dot_product_attention(q, k.astype(q.dtype), v.astype(q.dtype),
                                       mask=attn_mask[:, None, :, :],
                                       scale=self.query_pre_attn_scalar**-0.5)
    return jnp.einsum("BTNH,NHD->BTD", out, wo.astype(self.dtype)), new_cache


class FeedForward(nn.Module):
  mlp_dim: int
  dtype: str = "float32"

  @nn.compact
  def __call__(self, x):  # [B,T,D] -> [B,T,D]
    d = x.shape[-1]
    w_gating = self.param("gating_einsum", _init(1, 2, (0,)), (2, d, self.mlp_dim), jnp.float32)
    w_linear = self.param("linear", _init(0, 1), (self.mlp_dim, d), jnp.float32)
    gate, up = jnp.einsum("BTD,CDF->CBTF", x, w_gating.astype(self.dtype))
    return jnp.einsum("BTF,FD->BTD", nn.gelu(gate, approximate=True) * up, w_linear.astype(self.dtype))


class Block(nn.Module):
  """One decoder layer. Scan-compatible: (x, layer_cache, ...) -> (x, new_layer_cache)."""
  num_heads: int
  num_kv_heads: int
  head_dim: int
  mlp_dim: int
  query_pre_attn_scalar: float
  dtype: str = "float32"

  @nn.compact
  def __call__(self, x, cache, positions, attn_mask, cache_index):
    y = RMSNorm(name="pre_attention_norm")(x)
    y, new_cache = Attention(self.num_heads, self.num_kv_heads, self.head_dim,
                             self.query_pre_attn_scalar, self.dtype, name="attn")(
                                 y, positions, attn_mask, cache, cache_index)
    x = x + y
    y = RMSNorm(name="pre_ffw_norm")(x)
    x = x + FeedForward(self.mlp_dim, self.dtype, name="mlp")(y)
    return x, new_cache


class Gemma(nn.Module):
  vocab_size: int
  width: int
  depth: int
  mlp_dim: int
  num_heads: int
  num_kv_heads: int
  head_dim: int
  query_pre_attn_scalar: Optional[float] = None  # None: head_dim (Gemma 2B)
  dtype: str = "float32"
  remat_policy: str = "none"

  def setup(self):
    self.embedder = Embedder(self.vocab_size, self.width, name="embedder")
    block = remat.wrap(Block, self.remat_policy)
    self.layers = nn.scan(
        block, variable_axes={"params": 0}, split_rngs={"params": True}, length=self.depth,
        in_axes=(0, nn.broadcast, nn.broadcast, nn.broadcast), out_axes=0)(
            self.num_heads, self.num_kv_heads, self.head_dim, self.mlp_dim,
            self.query_pre_attn_scalar or self.head_dim, self.dtype)
    self.final_norm = RMSNorm()

  def embed(self, tokens):  # [B,T] int -> [B,T,D]
    return self.embedder.encode(tokens).astype(self.dtype)

  def logits(self, hidden):  # [B,T,D] -> [B,T,V] float32
    return self.embedder.decode(hidden)

  def init_cache(self, batch_size, cache_size, dtype=None):
    shape = (self.depth, batch_size, cache_size, self.num_kv_heads, self.head_dim)
    return {"k": jnp.zeros(shape, dtype or self.dtype), "v": jnp.zeros(shape, dtype or self.dtype)}

  def __call__(self, x, positions, attn_mask, cache=None, cache_index=0):
    """x [B,T,D] embedded inputs, positions [B,T], attn_mask [B,T,S] -> (hidden [B,T,D], cache)."""
    x, new_cache = self.layers(x, cache, positions, attn_mask, cache_index)
    return self.final_norm(x), new_cache


class Embedder(nn.Module):
  vocab_size: int
  width: int

  def setup(self):
    self.input_embedding = self.param("input_embedding", nn.initializers.normal(stddev=self.width**-0.5),
                                      (self.vocab_size, self.width), jnp.float32)

  def encode(self, tokens):
    return self.input_embedding[tokens] * jnp.sqrt(jnp.float32(self.width))

  def decode(self, hidden):
    return jnp.einsum("BTD,VD->BTV", hidden.astype(jnp.float32), self.input_embedding)
