"""Greedy autoregressive decoding with a KV cache: one jitted prefill, then a `lax.while_loop` of
single-token steps (no host round trip per token). One decoding path serves every model variant.

Cache layout: [N image | P prompt (right-padded) | L decoded] slots. Every row writes decode step i
to slot N+P+i; a row's attention covers its real prompt slots and its decoded slots so far, and its
RoPE positions continue from its own prompt length, so rows with different prompt lengths decode
exactly as the training-time forward pass computes them.
"""

import jax
import jax.numpy as jnp

from genvla_jax.models import vlm


def make_greedy_decoder(model: vlm.VLA, max_decode_len: int, eos_id: int, pad_id: int = 0):
  """-> jitted fn(params, images [B,H,W,3], tokens [B,P], input_mask [B,P]) -> tokens [B,L] int32
  (everything after a row's EOS is `pad_id`; the EOS itself is kept)."""

  @jax.jit
  def decode(params, images, tokens, input_mask):
    variables = {"params": params}
    batch, prompt_len = tokens.shape
    patch = model.img_config["patch_size"]
    num_image = (images.shape[1] // patch) * (images.shape[2] // patch)
    prefix_len = num_image + prompt_len
    cache_size = prefix_len + max_decode_len
    logits, cache, next_pos = model.apply(variables, images, tokens, input_mask, cache_size,
                                          method=vlm.VLA.prefill)
    valid = jnp.concatenate([jnp.ones((batch, num_image), bool), input_mask.astype(bool),
                             jnp.zeros((batch, max_decode_len), bool)], axis=1)
    out = jnp.full((batch, max_decode_len), pad_id, jnp.int32)
    done = jnp.zeros((batch,), bool)

    def cond(carry):
      i, _, _, _, done, _ = carry
      return (i < max_decode_len) & ~jnp.all(done)

    def body(carry):
      i, logits, cache, valid, done, out = carry
      token = jnp.where(done, pad_id, jnp.argmax(logits, axis=-1).astype(jnp.int32))
      out = out.at[:, i].set(token)
      done = done | (token == eos_id)
      slot = prefix_len + i
      valid = valid.at[:, slot].set(True)
      logits, cache = model.apply(variables, token[:, None], (next_pos + i)[:, None], cache, slot, valid,
                                  method=vlm.VLA.decode_step)
      return i + 1, logits, cache, valid, done, out

    *_, out = jax.lax.while_loop(cond, body, (0, logits, cache, valid, done, out))
    return out

  return decode
