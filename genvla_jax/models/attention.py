"""Scaled dot-product attention: the one attention function of the decoder (gemma.py) and the ViT towers
(vit.py), with its implementations chosen in the config.

config.model.attention_impl (training, prefill, and every call with more than one query token):
  "xla"          today's path, bit for bit (the default): the decoder through jax.nn.dot_product_attention
                 (implementation=None, i.e. XLA), or, when Gemma 2 soft-caps the logits, the explicit
                 einsum -> tanh cap -> mask -> softmax -> einsum; the ViT through flax's dot_product_attention
                 (query pre-scaled, softmax in the compute dtype)
  "dot_product"  jax.nn.dot_product_attention(implementation=None) for the decoder and the towers alike (XLA on
                 every backend today); soft-capped logits cannot be expressed by it: refused (`problems`)
  "cudnn"        jax.nn.dot_product_attention(implementation="cudnn"): cuDNN flash attention. Needs an NVIDIA GPU,
                 bf16 / fp16 compute, a head dim that is a multiple of 8 and <= 128 (<= 256 on Hopper and later),
                 no soft-capping; each is refused at model build (build.check_attention) and by the trainer's
                 config checks (training/preflight.py settings_problems), not in a trace. The prefix-LM mask
                 reaches cuDNN as a bias [B,1,T,S] (its own mask types are causal / padding / window only)
  "auto"         "cudnn" where the call qualifies (GPU backend, dtype, head dim, no soft-cap, even lengths when
                 masked: cuDNN's backward pass needs them), else "xla". Every call traced onto "xla" is counted
                 in FALLBACKS under its reason and logged once per reason; nothing silently computes something
                 else.
config.model.decode_attention (calls with one query token over a KV cache: the decode step):
  "xla"          today's path: the "xla" implementation above, whatever attention_impl says
  "fused"        `one_query`: the single query's logits, softmax and weighted sum as elementwise products and
                 reductions over the cache in its stored layout [B,S,K,Hd] (no GEMMs of one row, no transposed
                 copies of the cache, the softmax normalisation applied to the [K,G,Hd] output instead of the
                 [K,G,S] weights), which XLA fuses into fewer kernels; soft-capping supported.

Shapes: q [B,T,N,Hd], k/v [B,S,K,Hd] (K divides N: multi-query K=1, grouped-query K<N), mask [B,T,S] bool
(True: query t may attend slot s) -> [B,T,N,Hd].
"""

import collections

import flax.linen as nn
import jax
import jax.numpy as jnp
from absl import logging

IMPLS = ("xla", "dot_product", "cudnn", "auto")
DECODE_IMPLS = ("xla", "fused")
CUDNN_DTYPES = ("bfloat16", "float16")

# "auto" calls traced onto "xla", by reason (a trace counts once per call site and compilation).
FALLBACKS: collections.Counter = collections.Counter()


def problems(
  attention_impl: str, decode_attention: str, dtype: str, head_dims=(), softcap: bool = False, backend=None
) -> list[str]:
  """What is wrong with these switches for a model computing in `dtype` with attention head dims `head_dims`
  (decoder and towers) and soft-capped decoder logits or not, on `backend` (default: jax.default_backend()).
  One line per problem; empty: fine."""
  out = []
  if attention_impl not in IMPLS:
    out.append(f"config.model.attention_impl={attention_impl!r} is unknown; one of: {', '.join(IMPLS)}")
  if decode_attention not in DECODE_IMPLS:
    out.append(f"config.model.decode_attention={decode_attention!r} is unknown; one of: {', '.join(DECODE_IMPLS)}")
  if attention_impl in ("dot_product", "cudnn") and softcap:
    out.append(
      f"config.model.attention_impl={attention_impl!r}: jax.nn.dot_product_attention has no logit soft-capping, "
      "which this decoder uses (llm attn_logits_softcap, Gemma 2); use 'xla' or 'auto' (soft-capped calls stay on "
      "'xla', counted)"
    )
  if attention_impl == "cudnn":
    backend = backend or jax.default_backend()
    if backend != "gpu":
      out.append(
        f"config.model.attention_impl='cudnn' needs an NVIDIA GPU (cuDNN flash attention); this backend is "
        f"{backend!r}: use 'xla', 'dot_product' or 'auto'"
      )
    if dtype not in CUDNN_DTYPES:
      out.append(f"config.model.attention_impl='cudnn' needs model.dtype bfloat16 or float16 (cuDNN), got {dtype!r}")
    limit = _cudnn_head_dim_limit() if backend == "gpu" else 256
    for head_dim in sorted(set(head_dims)):
      if head_dim % 8 or head_dim > limit:
        out.append(
          f"config.model.attention_impl='cudnn': head dim {head_dim} is unsupported by cuDNN flash attention "
          f"(a multiple of 8, <= {limit} on this device)"
        )
  return out


def _cudnn_head_dim_limit() -> int:
  """cuDNN flash attention's largest head dim on the default device: 256 from Hopper (sm 9.0) on, else 128."""
  capability = getattr(jax.devices()[0], "compute_capability", "0.0")
  return 256 if float(capability) >= 9.0 else 128


def cudnn_unsupported(q, k, softcap=None, masked: bool = False) -> str | None:
  """Why cuDNN flash attention cannot take this call (None: it can): backend, dtype, head dim, soft-cap, and
  with a mask (a bias to cuDNN) an odd query or key length (its backward pass needs both even)."""
  if jax.default_backend() != "gpu":
    return f"backend {jax.default_backend()}"
  if softcap is not None:
    return "soft-capped logits"
  if jnp.dtype(q.dtype).name not in CUDNN_DTYPES:
    return f"dtype {jnp.dtype(q.dtype).name}"
  head_dim = q.shape[-1]
  if head_dim % 8 or head_dim > _cudnn_head_dim_limit():
    return f"head dim {head_dim}"
  if masked and (q.shape[1] % 2 or k.shape[1] % 2):
    return f"odd length with a mask (queries {q.shape[1]}, keys {k.shape[1]})"
  return None


def resolve(impl: str, q, k, softcap=None, masked: bool = False) -> str:
  """The implementation a call uses: `impl` itself, or for "auto" "cudnn" / "xla" (the fallback counted).
  An explicit "cudnn" the call cannot use is an error naming why (shapes are known only here, at trace time);
  odd lengths are left to cuDNN itself there (only its backward pass refuses them: a prefill may have them),
  while "auto" avoids them (it cannot tell whether the call will be differentiated)."""
  if impl not in IMPLS:
    raise ValueError(f"attention implementation {impl!r} is unknown; one of: {', '.join(IMPLS)}")
  if impl not in ("auto", "cudnn"):
    return impl
  if impl == "cudnn":
    reason = cudnn_unsupported(q, k, softcap)
    if reason is not None:
      raise ValueError(f"attention_impl 'cudnn' cannot take this call ({reason}); use 'auto' to fall back to 'xla'")
    return impl
  reason = cudnn_unsupported(q, k, softcap, masked)
  if reason is None:
    return "cudnn"
  if not FALLBACKS[reason]:
    logging.info("attention_impl 'auto': cuDNN flash attention does not apply (%s); using 'xla'", reason)
  FALLBACKS[reason] += 1
  return "xla"


def attend(q, k, v, mask, scale: float, softcap: float | None = None, impl: str = "xla"):
  """The decoder's attention (training, prefill, extend): q [B,T,N,Hd], k/v [B,S,K,Hd], mask [B,T,S] bool
  -> [B,T,N,Hd]. Soft-capping (Gemma 2: tanh(l / cap) * cap before masking) exists only on the "xla" path."""
  impl = resolve(impl, q, k, softcap, masked=True)
  if softcap is not None:
    if impl != "xla":
      raise ValueError(f"attention implementation {impl!r} cannot soft-cap logits; use 'xla' or 'auto'")
    return softcapped(q, k, v, mask, scale, softcap)
  implementation = "cudnn" if impl == "cudnn" else None
  return jax.nn.dot_product_attention(q, k, v, mask=mask[:, None], scale=scale, implementation=implementation)


def softcapped(q, k, v, mask, scale: float, softcap: float):
  """Gemma 2's attention with soft-capped logits, explicitly (shapes as `attend`)."""
  b, t, n, hd = q.shape
  kv_heads = k.shape[2]
  q = q.reshape(b, t, kv_heads, n // kv_heads, hd)
  logits = jnp.einsum("BTKGH,BSKH->BKGTS", q, k, preferred_element_type=jnp.float32) * scale
  logits = jnp.tanh(logits / softcap) * softcap
  logits = jnp.where(mask[:, None, None], logits, jnp.finfo(jnp.float32).min)
  probs = jax.nn.softmax(logits, axis=-1).astype(v.dtype)
  return jnp.einsum("BKGTS,BSKH->BTKGH", probs, v).reshape(b, t, n, hd)


def one_query(q_Bx1xNxHd, k_BxSxKxHd, v_BxSxKxHd, mask_Bx1xS, scale: float, softcap: float | None = None):
  """decode_attention "fused": one query token over a KV cache, as elementwise products and reductions in the
  cache's own layout (float32 accumulation; products of bf16 values are exact in float32) -> [B,1,N,Hd].
  Equal to `attend` up to summation order: the softmax is normalised after the weighted sum over the slots."""
  b, t, n, hd = q_Bx1xNxHd.shape
  if t != 1:
    raise ValueError(f"one_query attends one query token, got q of shape {q_Bx1xNxHd.shape}")
  kv_heads = k_BxSxKxHd.shape[2]
  q_Bx1xKxGxHd = q_Bx1xNxHd.reshape(b, 1, kv_heads, n // kv_heads, hd).astype(jnp.float32)
  k_BxSxKx1xHd = k_BxSxKxHd[:, :, :, None, :].astype(jnp.float32)
  logits_BxSxKxG = jnp.sum(q_Bx1xKxGxHd * k_BxSxKx1xHd, axis=-1) * scale
  if softcap is not None:
    logits_BxSxKxG = jnp.tanh(logits_BxSxKxG / softcap) * softcap
  logits_BxSxKxG = jnp.where(mask_Bx1xS[:, 0, :, None, None], logits_BxSxKxG, jnp.finfo(jnp.float32).min)
  weights_BxSxKxG = jnp.exp(logits_BxSxKxG - jnp.max(logits_BxSxKxG, axis=1, keepdims=True))
  total_BxKxG = jnp.sum(weights_BxSxKxG, axis=1)
  out_BxKxGxHd = jnp.sum(weights_BxSxKxG[..., None] * v_BxSxKxHd[:, :, :, None, :].astype(jnp.float32), axis=1)
  out_BxKxGxHd = out_BxKxGxHd / total_BxKxG[..., None]
  return out_BxKxGxHd.reshape(b, 1, n, hd).astype(v_BxSxKxHd.dtype)


def flax_attention_fn(impl: str):
  """The ViT's `attention_fn` for flax's MultiHeadDotProductAttention under `impl`: None for "xla" (flax's own
  dot_product_attention, today's path), else a function calling jax.nn.dot_product_attention with the resolved
  implementation (query/key/value [B,N,H,Dh]; "auto" falling back to "xla" calls flax's function, counted)."""
  if impl not in IMPLS:
    raise ValueError(f"attention implementation {impl!r} is unknown; one of: {', '.join(IMPLS)}")
  if impl == "xla":
    return None

  def attention_fn(query, key, value, mask=None, dtype=None):
    chosen = resolve(impl, query, key, masked=mask is not None)
    if chosen == "xla":
      return nn.dot_product_attention(query, key, value, mask=mask, dtype=dtype)
    implementation = "cudnn" if chosen == "cudnn" else None
    return jax.nn.dot_product_attention(query, key, value, mask=mask, implementation=implementation)

  return attention_fn
