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


def make_jump_forward_decoder(model: vlm.VLA, max_decode_len: int, eos_id: int, pad_id: int,
                              grammar: grammar_lib.TokenGrammar):
  """Grammar-constrained greedy decoding that appends the token the grammar forces after each chosen
  one (the "." after the integer digit, EOS after the last digit, ...) in the same model pass: every
  pass feeds 2 tokens [chosen, forced-or-nothing] into 2 cache slots, the second slot masked out where
  nothing is forced. Output equals make_greedy_decoder(..., grammar) token for token (a forced token
  is the only one constrained greedy could pick); passes per action drop by the forced count.
  -> jitted fn(params, images, tokens, input_mask) -> (tokens [B,L] int32, passes int32)."""
  rules = grammar.arrays()
  forced = jnp.asarray(grammar.forced(), jnp.int32)          # [S] forced token or -1
  forced_next = jnp.asarray(grammar.forced_next(), jnp.int32)  # [S] state after it

  @jax.jit
  def decode(params, images, tokens, input_mask):
    variables = {"params": params}
    batch, prompt_len = tokens.shape
    patch = model.img_config["patch_size"]
    prefix_len = (images.shape[1] // patch) * (images.shape[2] // patch) + prompt_len
    cache_size = prefix_len + 2 * max_decode_len
    logits, cache, next_pos = model.apply(variables, images, tokens, input_mask, cache_size,
                                          method=vlm.VLA.prefill)
    valid = jnp.concatenate([jnp.ones((batch, prefix_len - prompt_len), bool), input_mask.astype(bool),
                             jnp.zeros((batch, 2 * max_decode_len), bool)], axis=1)
    out = jnp.full((batch, max_decode_len + 1), pad_id, jnp.int32)  # +1: a spare column for writes past L
    rows = jnp.arange(batch)
    zeros = jnp.zeros((batch,), jnp.int32)

    def cond(carry):
      i, _, _, _, done, *_ = carry
      return (i < max_decode_len) & ~jnp.all(done)

    def body(carry):
      i, logits, cache, valid, done, out, state, count, pos = carry
      token, state = grammar_lib.select(rules, eos_id, logits, state)
      token = jnp.where(done, pad_id, token)
      out = out.at[rows, count].set(jnp.where(done, out[rows, count], token))
      finished = done | (token == eos_id)
      follow = jnp.where(finished, -1, forced[state])
      has_follow = follow >= 0
      follow = jnp.where(has_follow, follow, pad_id)
      count = count + (~done).astype(jnp.int32)
      out = out.at[rows, count].set(jnp.where(has_follow, follow, out[rows, count]))
      count = jnp.minimum(count + has_follow.astype(jnp.int32), max_decode_len)
      state = jnp.where(has_follow, forced_next[state], state)
      done = finished | (has_follow & (follow == eos_id)) | (count >= max_decode_len)
      slot = prefix_len + 2 * i
      valid = valid.at[:, slot].set(True)
      first = valid                                 # query 0 sees up to its own slot
      valid = valid.at[:, slot + 1].set(has_follow)
      mask = jnp.stack([first, valid], axis=1)      # [B,2,S]
      positions = jnp.stack([pos, pos + 1], axis=1)
      step_logits, cache = model.apply(variables, jnp.stack([token, follow], axis=1), positions, cache,
                                       slot, mask, method=vlm.VLA.extend)
      logits = jnp.where(has_follow[:, None], step_logits[:, 1], step_logits[:, 0])
      pos = pos + 1 + has_follow.astype(jnp.int32)
      return i + 1, logits, cache, valid, done, out, state, count, pos

    carry = (0, logits, cache, valid, jnp.zeros((batch,), bool), out, zeros, zeros, next_pos)
    carry = jax.lax.while_loop(cond, body, carry)
    return carry[5][:, :max_decode_len], carry[0]

  return decode
