"""Autoregressive decoding with a KV cache: one jitted prefill, then a `lax.while_loop` of single-token
steps (no host round trip per token). One decoding path serves every model variant; an optional
token grammar (tokenizers/grammar.py) restricts every step to tokens that keep the output a valid
action string, and an optional temperature samples instead of taking the argmax.

Cache layout: [N image | P prompt (right-padded) | L decoded] slots. Every row writes decode step i
to slot N+P+i; a row's attention covers its real prompt slots and its decoded slots so far, and its
RoPE positions continue from its own prompt length, so rows with different prompt lengths decode
exactly as the training-time forward pass computes them.
"""

import jax
import jax.numpy as jnp

from genvla_jax.models import vlm
from genvla_jax.tokenizers import grammar as grammar_lib


def make_greedy_decoder(model: vlm.VLA, max_decode_len: int, eos_id: int, pad_id: int = 0,
                        grammar: grammar_lib.TokenGrammar | None = None):
  """-> jitted fn(params, images [B,H,W,3], tokens [B,P], input_mask [B,P]) -> tokens [B,L] int32
  (everything after a row's EOS is `pad_id`; the EOS itself is kept)."""
  decode = make_decoder(model, max_decode_len, eos_id, pad_id, grammar)
  return lambda params, images, tokens, input_mask: decode(params, images, tokens, input_mask, None)


def make_decoder(model: vlm.VLA, max_decode_len: int, eos_id: int, pad_id: int = 0,
                 grammar: grammar_lib.TokenGrammar | None = None, temperature: float = 1.0):
  """-> jitted fn(params, images [B,H,W,3], tokens [B,P], input_mask [B,P], rng) -> tokens [B,L] int32.
  rng None: greedy; else sampling at `temperature`. With `grammar`, only grammatical tokens (and EOS
  where the grammar accepts) can be chosen, so every finished row is a complete, parseable string."""
  rules = None if grammar is None else grammar.arrays()

  def choose(logits, state, rng):
    if rules is not None:
      return grammar_lib.select(rules, eos_id, logits, state, rng, temperature)
    if rng is None:
      return jnp.argmax(logits, axis=-1).astype(jnp.int32), state
    return jax.random.categorical(rng, logits / temperature, axis=-1).astype(jnp.int32), state

  @jax.jit
  def decode(params, images, tokens, input_mask, rng):
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

    state = jnp.zeros((batch,), jnp.int32)  # grammar state (unused without a grammar)

    def cond(carry):
      i, _, _, _, done, _, _ = carry
      return (i < max_decode_len) & ~jnp.all(done)

    def body(carry):
      i, logits, cache, valid, done, out, state = carry
      step_rng = None if rng is None else jax.random.fold_in(rng, i)
      token, state = choose(logits, state, step_rng)
      token = jnp.where(done, pad_id, token)
      out = out.at[:, i].set(token)
      done = done | (token == eos_id)
      slot = prefix_len + i
      valid = valid.at[:, slot].set(True)
      logits, cache = model.apply(variables, token[:, None], (next_pos + i)[:, None], cache, slot, valid,
                                  method=vlm.VLA.decode_step)
      return i + 1, logits, cache, valid, done, out, state

    carry = jax.lax.while_loop(cond, body, (0, logits, cache, valid, done, out, state))
    return carry[5]

  return decode
