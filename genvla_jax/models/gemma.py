"""Gemma-style decoder: RMSNorm, RoPE, GeGLU, multi-query / grouped-query attention, tied embeddings.
Gemma 2 options: post-attention / post-FFW norms, attention and final logit soft-capping, sliding-window
attention on the even layers (0, 2, ...) alternating with global attention.
Llama 2 is the same decoder with other options (VARIANTS["llama2_7b"]): RMSNorm weight used as is
(norm_offset 0, not Gemma's 1 + w) with eps 1e-5, SwiGLU (activation "silu"), no sqrt(width) scaling of
the embeddings, an untied output head (embedder/output_embedding [V,D]), multi-head attention.

One implementation serves every model variant and both training and cached decoding. The caller builds
the attention mask (prefix-LM, see `masks.py`) and positions; the decoder only applies them. The attention
itself is `attention.py`'s: `attention_impl` for calls with several query tokens (training, prefill, extend),
`decode_attention` for one-token steps over the cache (config.model.attention_impl / decode_attention; the
defaults, "xla", are the path this decoder always took).

Parameter names follow the big_vision PaliGemma release (L = depth stacked on axis 0):
  embedder/input_embedding [V,D]   (+ embedder/output_embedding [V,D] when untied: Llama)
  layers/pre_attention_norm/scale [L,D]
  layers/attn/q_einsum/w [L,N,D,Hd]          N query heads
  layers/attn/kv_einsum/w [L,2,K,D,Hd]       K key/value heads (K=1: multi-query)
  layers/attn/attn_vec_einsum/w [L,N,Hd,D]
  layers/pre_ffw_norm/scale [L,D]
  layers/post_attention_norm/scale, layers/post_ffw_norm/scale [L,D]   (Gemma 2 only)
  layers/mlp/gating_einsum [L,2,D,F]
  layers/mlp/linear [L,F,D]
  final_norm/scale [D]

KV cache (decoding): {"k","v": [L,B,S,K,Hd], "positions": [B,S], "prefix": [B,S]}; a call with T new tokens
writes slots [cache_index, cache_index + T) for every row and attends over all S slots through
`attn_mask` (and, on local layers, the sliding window over the slots' positions).

LoRA (training only): adapters passed in the variable collection "lora" (models/lora.py COLLECTION), mirroring
the kernel paths and scanned along the layer axis like the params, add x A (s B) to their projection
(lora.project); without them every projection is exactly its einsum.
"""

import dataclasses
from typing import Optional

import flax.linen as nn
import jax
import jax.numpy as jnp

from genvla_jax.models import attention, lora, remat
from genvla_jax.models.partitioning import BATCH, MODEL, constrain


# Gemma 1 options (the class defaults, spelled out: a variant names every option of its family)
_GEMMA1 = dict(
  query_pre_attn_scalar=None, post_norms=False, attn_logits_softcap=None, final_logits_softcap=None, sliding_window=None
)
# Llama 2 options of the one decoder
_LLAMA2 = dict(
  query_pre_attn_scalar=None,
  post_norms=False,
  attn_logits_softcap=None,
  final_logits_softcap=None,
  sliding_window=None,
  norm_offset=0.0,
  norm_eps=1e-5,
  activation="silu",
  scale_embeddings=False,
  tie_embeddings=False,
)
# Decoder sizes by name (Gemma keyword arguments).
VARIANTS = {
  # Gemma 2B: PaliGemma-3B's decoder
  "gemma_2b": dict(
    vocab_size=257_152, width=2048, depth=18, mlp_dim=16_384, num_heads=8, num_kv_heads=1, head_dim=256, **_GEMMA1
  ),
  # Gemma 2 2B: PaliGemma 2 3B's decoder
  "gemma2_2b": dict(
    vocab_size=257_152,
    width=2304,
    depth=26,
    mlp_dim=9216,
    num_heads=8,
    num_kv_heads=4,
    head_dim=256,
    query_pre_attn_scalar=256,
    post_norms=True,
    attn_logits_softcap=50.0,
    final_logits_softcap=30.0,
    sliding_window=4096,
  ),
  # Llama 2 7B as OpenVLA uses it (vocabulary padded from 32000 to 32064 for tensor-core-friendly shapes)
  "llama2_7b": dict(
    vocab_size=32_064, width=4096, depth=32, mlp_dim=11_008, num_heads=32, num_kv_heads=32, head_dim=128, **_LLAMA2
  ),
  # tiny sizes for the CPU demo and tests (a few million parameters)
  "tiny": dict(vocab_size=640, width=128, depth=3, mlp_dim=512, num_heads=4, num_kv_heads=1, head_dim=32, **_GEMMA1),
  "llama2_tiny": dict(
    vocab_size=640, width=128, depth=3, mlp_dim=352, num_heads=4, num_kv_heads=4, head_dim=32, **_LLAMA2
  ),
}


def _init(in_axis, out_axis, batch_axis=()):
  return nn.initializers.variance_scaling(
    1.0, "fan_in", "truncated_normal", in_axis=in_axis, out_axis=out_axis, batch_axis=batch_axis
  )


class RMSNorm(nn.Module):
  """y = x / rms(x) * (offset + scale): Gemma stores scale - 1 (offset 1, init 0), Llama the weight
  itself (offset 0, init 1)."""

  offset: float = 1.0
  eps: float = 1e-6

  @nn.compact
  def __call__(self, x):  # [..., D]
    init = nn.initializers.zeros_init() if self.offset else nn.initializers.ones_init()
    scale = self.param("scale", init, (x.shape[-1],))
    var = jnp.mean(jnp.square(x.astype(jnp.float32)), axis=-1, keepdims=True)
    y = x.astype(jnp.float32) * jax.lax.rsqrt(var + self.eps)
    return (y * (self.offset + scale.astype(jnp.float32))).astype(x.dtype)


ACTIVATIONS = {"gelu_tanh": lambda x: nn.gelu(x, approximate=True), "silu": nn.silu}


def apply_rope(x, positions, max_wavelength=10_000):
  """Rotary embedding, half-split convention. x [B,T,N,Hd], positions [B,T] -> [B,T,N,Hd]."""
  half = x.shape[-1] // 2
  timescale = max_wavelength ** (2 * jnp.arange(half, dtype=jnp.float32) / x.shape[-1])
  radians = positions[..., None].astype(jnp.float32) / timescale  # [B,T,half]
  sin, cos = jnp.sin(radians)[..., None, :], jnp.cos(radians)[..., None, :]
  x1, x2 = jnp.split(x.astype(jnp.float32), 2, axis=-1)
  return jnp.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin], axis=-1).astype(x.dtype)


@dataclasses.dataclass(frozen=True)
class BlockConfig:
  """What one decoder layer is made of (built by Gemma from its fields; see Gemma for each option)."""

  num_heads: int
  num_kv_heads: int
  head_dim: int
  mlp_dim: int
  query_pre_attn_scalar: float
  post_norms: bool
  attn_logits_softcap: float | None
  sliding_window: int | None
  norm_offset: float
  norm_eps: float
  activation: str
  rope_max_wavelength: float
  dtype: str
  attention_impl: str = "xla"  # attention.IMPLS: calls with more than one query token (training, prefill)
  decode_attention: str = "xla"  # attention.DECODE_IMPLS: one query token over the KV cache (decode step)


def _project(module, kernel: str, equation: str, x, w):
  """einsum(equation, x, w) of `module`'s kernel named `kernel`, plus its LoRA adapters' x A (s B) when the
  caller passed them in the variable collection lora.COLLECTION (training; models/lora.py), else exactly that."""
  return lora.project(equation, x, w, lora.adapter(module, kernel), f"{module.name}/{kernel}")


class Attention(nn.Module):
  config: BlockConfig

  @nn.compact
  def __call__(self, x, is_local, positions, attn_mask, window_ok, cache=None, cache_index=0):
    """x [B,T,D], positions [B,T], attn_mask [B,T,S] bool, window_ok [B,T,S] bool (pairs the sliding
    window keeps), is_local: scalar bool (this layer uses the window) -> ([B,T,D], layer cache)."""
    c, d = self.config, x.shape[-1]
    wq = self.param("q_einsum", _init(1, (0, 2)), (c.num_heads, d, c.head_dim), jnp.float32)
    wkv = self.param("kv_einsum", _init(2, (1, 3), (0,)), (2, c.num_kv_heads, d, c.head_dim), jnp.float32)
    wo = self.param("attn_vec_einsum", _init((0, 1), 2), (c.num_heads, c.head_dim, d), jnp.float32)
    q = _project(self, "q_einsum", "BTD,NDH->BTNH", x, wq.astype(c.dtype))
    q = constrain(q, BATCH, None, MODEL, None)
    k, v = _project(self, "kv_einsum", "BSD,CKDH->CBSKH", x, wkv.astype(c.dtype))
    q = apply_rope(q, positions, c.rope_max_wavelength)
    k = apply_rope(k, positions, c.rope_max_wavelength)
    new_cache = None
    if cache is not None:
      start = (0, cache_index, 0, 0)
      k = jax.lax.dynamic_update_slice(cache["k"], k.astype(cache["k"].dtype), start)
      v = jax.lax.dynamic_update_slice(cache["v"], v.astype(cache["v"].dtype), start)
      new_cache = {"k": k, "v": v}
    if c.sliding_window is not None:
      attn_mask = attn_mask & (window_ok | ~is_local)
    scale, k, v = c.query_pre_attn_scalar**-0.5, k.astype(q.dtype), v.astype(q.dtype)
    decode_step = cache is not None and q.shape[1] == 1  # one token over the cache: decode_attention's
    if decode_step and c.decode_attention == "fused":
      out = attention.one_query(q, k, v, attn_mask, scale, c.attn_logits_softcap)
    else:
      impl = "xla" if decode_step else c.attention_impl
      out = attention.attend(q, k, v, attn_mask, scale, c.attn_logits_softcap, impl)
    return _project(self, "attn_vec_einsum", "BTNH,NHD->BTD", out, wo.astype(c.dtype)), new_cache


class FeedForward(nn.Module):
  """Gated MLP: act(x W_gate) * (x W_up) W_down; act = gelu_tanh (Gemma: GeGLU) or silu (Llama: SwiGLU)."""

  mlp_dim: int
  dtype: str = "float32"
  activation: str = "gelu_tanh"

  @nn.compact
  def __call__(self, x):  # [B,T,D] -> [B,T,D]
    d = x.shape[-1]
    w_gating = self.param("gating_einsum", _init(1, 2, (0,)), (2, d, self.mlp_dim), jnp.float32)
    w_linear = self.param("linear", _init(0, 1), (self.mlp_dim, d), jnp.float32)
    gate, up = _project(self, "gating_einsum", "BTD,CDF->CBTF", x, w_gating.astype(self.dtype))
    hidden = constrain(ACTIVATIONS[self.activation](gate) * up, BATCH, None, MODEL)  # [B,T,F]
    return _project(self, "linear", "BTF,FD->BTD", hidden, w_linear.astype(self.dtype))


class Block(nn.Module):
  """One decoder layer. Scan-compatible: (x, layer_cache, is_local, ...) -> (x, new_layer_cache)."""

  config: BlockConfig

  @nn.compact
  def __call__(self, x, cache, is_local, positions, attn_mask, window_ok, cache_index):
    c = self.config

    def norm(name):
      return RMSNorm(c.norm_offset, c.norm_eps, name=name)

    y = norm("pre_attention_norm")(x)
    y, new_cache = Attention(c, name="attn")(y, is_local, positions, attn_mask, window_ok, cache, cache_index)
    if c.post_norms:
      y = norm("post_attention_norm")(y)
    x = x + y
    y = FeedForward(c.mlp_dim, c.dtype, c.activation, name="mlp")(norm("pre_ffw_norm")(x))
    if c.post_norms:
      y = norm("post_ffw_norm")(y)
    return constrain(x + y, BATCH, None, None), new_cache


class Gemma(nn.Module):
  vocab_size: int
  width: int
  depth: int
  mlp_dim: int
  num_heads: int
  num_kv_heads: int
  head_dim: int
  query_pre_attn_scalar: Optional[float] = None  # None: head_dim (Gemma 2B, Gemma 2 2B/9B)
  post_norms: bool = False  # Gemma 2
  attn_logits_softcap: Optional[float] = None  # Gemma 2: 50
  final_logits_softcap: Optional[float] = None  # Gemma 2: 30
  sliding_window: Optional[int] = None  # Gemma 2: 4096, on even layers
  norm_offset: float = 1.0  # RMSNorm scale offset: Gemma 1.0, Llama 0.0
  norm_eps: float = 1e-6  # Llama 2: 1e-5
  activation: str = "gelu_tanh"  # Llama: "silu" (SwiGLU)
  scale_embeddings: bool = True  # embeddings * sqrt(width) (Gemma); Llama: False
  tie_embeddings: bool = True  # logits from the input table (Gemma); Llama: lm_head
  rope_max_wavelength: float = 10_000
  dtype: str = "float32"
  remat_policy: str = "none"
  scan_unroll: int = 1  # layers per scan iteration; decoding unrolls all (build.for_decoding)
  attention_impl: str = "xla"  # models/attention.py IMPLS (config.model.attention_impl)
  decode_attention: str = "xla"  # models/attention.py DECODE_IMPLS (config.model.decode_attention)

  def setup(self):
    self.embedder = Embedder(self.vocab_size, self.width, self.scale_embeddings, self.tie_embeddings, name="embedder")
    block = remat.wrap(Block, self.remat_policy)
    self.layers = nn.scan(
      block,
      variable_axes={"params": 0, lora.COLLECTION: 0},  # (LoRA adapters, when given: one per layer)
      split_rngs={"params": True},
      length=self.depth,
      in_axes=(0, 0, nn.broadcast, nn.broadcast, nn.broadcast, nn.broadcast),
      out_axes=0,
      unroll=self.scan_unroll,
    )(self.block_config())
    self.final_norm = RMSNorm(self.norm_offset, self.norm_eps)

  def block_config(self) -> BlockConfig:
    return BlockConfig(
      num_heads=self.num_heads,
      num_kv_heads=self.num_kv_heads,
      head_dim=self.head_dim,
      mlp_dim=self.mlp_dim,
      query_pre_attn_scalar=self.query_pre_attn_scalar or self.head_dim,
      post_norms=self.post_norms,
      attn_logits_softcap=self.attn_logits_softcap,
      sliding_window=self.sliding_window,
      norm_offset=self.norm_offset,
      norm_eps=self.norm_eps,
      activation=self.activation,
      rope_max_wavelength=self.rope_max_wavelength,
      dtype=self.dtype,
      attention_impl=self.attention_impl,
      decode_attention=self.decode_attention,
    )

  def embed(self, tokens):  # [B,T] int -> [B,T,D]
    return self.embedder.encode(tokens).astype(self.dtype)

  def logits(self, hidden):  # [B,T,D] -> [B,T,V] float32
    logits = self.embedder.decode(hidden)
    if self.final_logits_softcap is not None:
      logits = jnp.tanh(logits / self.final_logits_softcap) * self.final_logits_softcap
    return logits

  def init_cache(self, batch_size, cache_size, dtype=None):
    shape = (self.depth, batch_size, cache_size, self.num_kv_heads, self.head_dim)
    return {
      "k": jnp.zeros(shape, dtype or self.dtype),
      "v": jnp.zeros(shape, dtype or self.dtype),
      "positions": jnp.zeros((batch_size, cache_size), jnp.int32),
      "prefix": jnp.zeros((batch_size, cache_size), bool),
    }

  def __call__(self, x, positions, attn_mask, cache=None, cache_index=0, prefix=None):
    """x [B,T,D] embedded inputs, positions [B,T], attn_mask [B,T,S], prefix [B,T] (tokens of the
    bidirectional prefix; default none) -> (hidden [B,T,D], cache).

    Sliding-window layers keep, as transformers' Gemma 2 does, the pairs within the window
    (q_pos - k_pos < window) plus every pair inside the bidirectional prefix."""
    is_local = jnp.arange(self.depth) % 2 == 0  # Gemma 2: even layers use the sliding window
    prefix = jnp.zeros(positions.shape, bool) if prefix is None else prefix
    if cache is None:
      kv_positions, kv_prefix, layer_cache = positions, prefix, None
    else:
      start = (0, cache_index)
      kv_positions = jax.lax.dynamic_update_slice(cache["positions"], positions.astype(jnp.int32), start)
      kv_prefix = jax.lax.dynamic_update_slice(cache["prefix"], prefix, start)
      layer_cache = {"k": cache["k"], "v": cache["v"]}
    window_ok = (positions[:, :, None] - kv_positions[:, None, :] < (self.sliding_window or 1)) | (
      prefix[:, :, None] & kv_prefix[:, None, :]
    )
    x, kv = self.layers(x, layer_cache, is_local, positions, attn_mask, window_ok, cache_index)
    if cache is None:
      return self.final_norm(x), None
    return self.final_norm(x), dict(kv, positions=kv_positions, prefix=kv_prefix)


class Embedder(nn.Module):
  """input_embedding [V,D] (tokens -> vectors, times sqrt(D) when `scale`); logits from the same table
  (`tied`, Gemma) or from output_embedding [V,D] (Llama's lm_head)."""

  vocab_size: int
  width: int
  scale: bool = True
  tied: bool = True

  def setup(self):
    init = nn.initializers.normal(stddev=self.width**-0.5)
    self.input_embedding = self.param("input_embedding", init, (self.vocab_size, self.width), jnp.float32)
    if not self.tied:
      self.output_embedding = self.param("output_embedding", init, (self.vocab_size, self.width), jnp.float32)

  def encode(self, tokens):
    x = self.input_embedding[tokens]
    return x * jnp.sqrt(jnp.float32(self.width)) if self.scale else x

  def decode(self, hidden):
    """[B,T,D] -> float32 logits [B,T,V]: the table is read in the compute dtype (a bf16 model never
    materialises a float32 copy of its 257k x D embedding), accumulation is float32."""
    table = self.input_embedding if self.tied else self.output_embedding
    return jnp.einsum("BTD,VD->BTV", hidden, table.astype(hidden.dtype), preferred_element_type=jnp.float32)


# Module fields that are not architecture (set by the model that holds the decoder, or by flax).
_NOT_ARCHITECTURE = ("dtype", "remat_policy", "scan_unroll", "attention_impl", "decode_attention", "parent", "name")


def options(llm_config) -> dict:
  """A decoder config (Gemma keyword arguments: a size from VARIANTS, maybe with options) with every
  option it leaves out at the class default: what a decoder built from it uses, for code that reads the
  architecture without building the module (checkpoint import / export, comparisons)."""
  defaults = {
    f.name: f.default
    for f in dataclasses.fields(Gemma)
    if f.default is not dataclasses.MISSING and f.name not in _NOT_ARCHITECTURE
  }
  return {**defaults, **llm_config}
