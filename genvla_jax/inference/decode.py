"""Autoregressive decoding with a KV cache: one jitted prefill, then a `lax.while_loop` of single-token
steps (no host round trip per token). One decoding path serves every model variant; an optional
token grammar (tokenizers/grammar.py) restricts every step to tokens that keep the output a valid
action string, and an optional temperature samples instead of taking the argmax.

Cache layout: [N image | P prompt (right-padded) | L decoded] slots (N: every camera's image tokens, in the
model's layout). Every row writes decode step i to slot N+P+i; a row's attention covers its real prefix
slots (prefix_lm.prefix_mask: a missing camera's are not) and its decoded slots so far, and its RoPE
positions continue from its own prefix length, so rows with different prompt lengths (or cameras) decode
exactly as the training-time forward pass computes them.

Images: [B,H,W,3] (one camera) or [B,C,H,W,3] with an optional image_mask [B,C] (prefix_lm.cameras).
"""

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from genvla_jax.models import prefix_lm
from genvla_jax.tokenizers import grammar as grammar_lib


class _GreedyCarry(NamedTuple):
  i: Any  # decoding step
  logits: Any  # [B,V] of the last fed token
  cache: Any  # the KV cache
  valid: Any  # [B,S] cache slots a query may attend
  done: Any  # [B] the row has emitted EOS
  out: Any  # [B,L] tokens so far (pad after EOS)
  state: Any  # [B] grammar state


class _SpeculativeCarry(NamedTuple):
  i: Any  # model passes so far
  cache: Any
  valid: Any  # [B,S]
  done: Any  # [B]
  out: Any  # [B,L+K+1] tokens so far
  last: Any  # [B] the last chosen token (fed first in the next pass)
  state: Any  # [B] grammar state after it
  count: Any  # [B] tokens written to out
  pos: Any  # [B] RoPE position of `last`
  drafted: Any  # [B] draft tokens proposed (forced ones excluded)
  accepted: Any  # [B] of those, kept


def make_greedy_decoder(
  model: prefix_lm.PrefixLM,
  max_decode_len: int,
  eos_id: int,
  pad_id: int = 0,
  grammar: grammar_lib.TokenGrammar | None = None,
):
  """-> jitted fn(params, images [B,H,W,3] | [B,C,H,W,3], tokens [B,P], input_mask [B,P], image_mask=None)
  -> tokens [B,L] int32 (everything after a row's EOS is `pad_id`; the EOS itself is kept)."""
  decode = make_decoder(model, max_decode_len, eos_id, pad_id, grammar)
  return lambda params, images, tokens, input_mask, image_mask=None: decode(
    params, images, tokens, input_mask, None, image_mask
  )


def make_decoder(
  model: prefix_lm.PrefixLM,
  max_decode_len: int,
  eos_id: int,
  pad_id: int = 0,
  grammar: grammar_lib.TokenGrammar | None = None,
  temperature: float = 1.0,
):
  """-> jitted fn(params, images [B,H,W,3] | [B,C,H,W,3], tokens [B,P], input_mask [B,P], rng, image_mask=None)
  -> tokens [B,L] int32.
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
  def decode(params, images, tokens, input_mask, rng, image_mask=None):
    variables = {"params": params}
    batch = tokens.shape[0]
    prefix_valid = prefix_lm.prefix_mask(model, images, input_mask, image_mask)  # [B,N+P]
    prefix_len = prefix_valid.shape[1]
    cache_size = prefix_len + max_decode_len
    logits, cache, next_pos = model.apply(
      variables, images, tokens, input_mask, cache_size, image_mask, method=prefix_lm.PrefixLM.prefill
    )
    valid = jnp.concatenate([prefix_valid, jnp.zeros((batch, max_decode_len), bool)], axis=1)
    out = jnp.full((batch, max_decode_len), pad_id, jnp.int32)
    done = jnp.zeros((batch,), bool)

    state = jnp.zeros((batch,), jnp.int32)  # grammar state (unused without a grammar)

    def cond(carry: _GreedyCarry):
      return (carry.i < max_decode_len) & ~jnp.all(carry.done)

    def body(carry: _GreedyCarry) -> _GreedyCarry:
      i, logits, cache, valid, done, out, state = carry
      step_rng = None if rng is None else jax.random.fold_in(rng, i)
      token, state = choose(logits, state, step_rng)
      token = jnp.where(done, pad_id, token)
      out = out.at[:, i].set(token)
      done = done | (token == eos_id)
      slot = prefix_len + i
      valid = valid.at[:, slot].set(True)
      logits, cache = model.apply(
        variables, token[:, None], (next_pos + i)[:, None], cache, slot, valid, method=prefix_lm.PrefixLM.decode_step
      )
      return _GreedyCarry(i + 1, logits, cache, valid, done, out, state)

    return jax.lax.while_loop(cond, body, _GreedyCarry(0, logits, cache, valid, done, out, state)).out

  return decode


def make_speculative_decoder(
  model: prefix_lm.PrefixLM,
  max_decode_len: int,
  eos_id: int,
  pad_id: int,
  grammar: grammar_lib.TokenGrammar,
  proposal_len: int = 8,
):
  """Grammar-constrained greedy decoding that verifies up to `proposal_len` (K) proposed tokens per
  model pass. Each pass feeds [last chosen token, p_1..p_K] into K+1 cache slots (PrefixLM.extend), where
    p_k = the token the grammar forces after p_1..p_{k-1} (jump-forward: the ".", separators, the
          zeros after a leading 1, EOS), else the draft's token at the same output index (speculative:
          e.g. the previous action's tokens; the fixed-width format keeps fields aligned), else none.
  The logits at every position give the constrained greedy choice; the longest prefix of proposals
  equal to those choices is kept and the choice after it is the next pass's first token, so the output
  equals make_greedy_decoder(..., grammar) token for token, in fewer passes.

  -> jitted fn(params, images [B,H,W,3] | [B,C,H,W,3], tokens [B,P], input_mask [B,P], draft [B,Ld] int32 or
     None, image_mask=None) -> {"tokens" [B,L] int32, "passes" (model passes after the prefill), "drafted"
     [B] (draft tokens proposed, forced ones excluded), "accepted" [B] (of those, kept)}."""
  k_max = proposal_len
  rules = grammar.arrays()
  forced = jnp.asarray(grammar.forced(), jnp.int32)  # [S] forced token or -1
  forced_next = jnp.asarray(grammar.forced_next(), jnp.int32)  # [S] state after it
  column_np = np.full(model.llm_config["vocab_size"], -1, np.int32)
  column_np[grammar.token_ids] = np.arange(len(grammar.token_ids))
  column = jnp.asarray(column_np)  # [V] candidate column or -1

  def propose(state, done, count, draft):
    """-> proposals [B,K] (-1: none), states after each [B,K], forced flags [B,K]."""

    def one(carry, k):
      s, alive = carry
      f = forced[s]
      index = jnp.minimum(count + k, draft.shape[1] - 1)
      d = jnp.where(count + k < draft.shape[1], draft[jnp.arange(draft.shape[0]), index], -1)
      col = jnp.where(d >= 0, column[jnp.maximum(d, 0)], -1)
      via_draft = jnp.where(col >= 0, rules["next_state"][s, jnp.maximum(col, 0)], -1)
      is_forced = f >= 0
      token = jnp.where(is_forced, f, jnp.where(via_draft >= 0, d, -1))
      token = jnp.where(alive, token, -1)
      s_next = jnp.where(is_forced, forced_next[s], via_draft)
      alive = alive & (token >= 0) & (token != eos_id)
      return (jnp.where(token >= 0, s_next, s), alive), (
        token,
        jnp.where(token >= 0, s_next, s),
        is_forced & (token >= 0),
      )

    _, (tokens, states, was_forced) = jax.lax.scan(one, (state, ~done), jnp.arange(k_max))
    return tokens.T, states.T, was_forced.T

  @jax.jit
  def decode(params, images, tokens, input_mask, draft, image_mask=None):
    variables = {"params": params}
    batch = tokens.shape[0]
    draft = jnp.full((batch, 1), -1, jnp.int32) if draft is None else jnp.asarray(draft, jnp.int32)
    prefix_valid = prefix_lm.prefix_mask(model, images, input_mask, image_mask)  # [B,N+P]
    prefix_len = prefix_valid.shape[1]
    width = k_max + 1
    cache_size = prefix_len + width * max_decode_len
    logits, cache, next_pos = model.apply(
      variables, images, tokens, input_mask, cache_size, image_mask, method=prefix_lm.PrefixLM.prefill
    )
    valid = jnp.concatenate([prefix_valid, jnp.zeros((batch, width * max_decode_len), bool)], axis=1)
    first, state = grammar_lib.select(rules, eos_id, logits, jnp.zeros((batch,), jnp.int32))
    out = jnp.full((batch, max_decode_len + width), pad_id, jnp.int32).at[:, 0].set(first)
    done = first == eos_id
    rows, ks = jnp.arange(batch), jnp.arange(width)
    zeros = jnp.zeros((batch,), jnp.int32)

    def cond(carry: _SpeculativeCarry):
      return (carry.i < max_decode_len) & ~jnp.all(carry.done)

    def body(carry: _SpeculativeCarry) -> _SpeculativeCarry:
      i, cache, valid, done, out, last, state, count, pos, drafted, accepted = carry
      proposals, states, was_forced = propose(state, done, count, draft)  # [B,K]
      has = proposals >= 0
      base = prefix_len + width * i
      slot_ok = jnp.concatenate([jnp.ones((batch, 1), bool), has], axis=1)  # [B,K+1]
      window = jax.lax.dynamic_update_slice(jnp.zeros_like(valid), slot_ok, (0, base))
      causal = jnp.arange(valid.shape[1])[None, :] <= base + ks[:, None]  # [K+1,S]
      mask = (valid[:, None, :] | window[:, None, :]) & causal[None]  # [B,K+1,S]
      fed = jnp.concatenate([last[:, None], jnp.where(has, proposals, pad_id)], axis=1)
      step_logits, cache = model.apply(
        variables, fed, pos[:, None] + ks[None], cache, base, mask, method=prefix_lm.PrefixLM.extend
      )
      before = jnp.concatenate([state[:, None], states], axis=1)  # state before choice q
      choices, after = jax.vmap(lambda lg, st: grammar_lib.select(rules, eos_id, lg, st), in_axes=(1, 1), out_axes=1)(
        step_logits, before
      )  # [B,K+1]
      match = has & (proposals == choices[:, :-1])
      run = jnp.cumprod(match.astype(jnp.int32), axis=1)
      a = jnp.sum(run, axis=1)  # accepted proposals
      kept = run.astype(bool)
      eos_kept = jnp.any(kept & (proposals == eos_id), axis=1)
      choice = choices[rows, a]
      new = jnp.where(ks[None, :-1] < a[:, None], proposals, pad_id)
      new = jnp.concatenate([new, jnp.full((batch, 1), pad_id, jnp.int32)], axis=1)
      new = jnp.where((ks[None] == a[:, None]) & ~eos_kept[:, None], choice[:, None], new)
      n_new = a + (~eos_kept).astype(jnp.int32)
      write = (ks[None] < n_new[:, None]) & ~done[:, None]
      idx = count[:, None] + ks[None]
      out = out.at[rows[:, None], idx].set(jnp.where(write, new, out[rows[:, None], idx]))
      kept_slots = jnp.concatenate([jnp.ones((batch, 1), bool), kept], axis=1)  # last + kept proposals
      valid = jax.lax.dynamic_update_slice(valid, kept_slots, (0, base))
      drafted = drafted + jnp.sum(has & ~was_forced, axis=1) * (~done)
      accepted = accepted + jnp.sum(kept & ~was_forced, axis=1) * (~done)
      count = jnp.where(done, count, count + n_new)
      state = jnp.where(done, state, after[rows, a])
      pos = jnp.where(done, pos, pos + a + 1)
      done = done | eos_kept | (choice == eos_id) | (count >= max_decode_len)
      return _SpeculativeCarry(i + 1, cache, valid, done, out, choice, state, count, pos, drafted, accepted)

    carry = _SpeculativeCarry(
      0, cache, valid, done, out, first, state, jnp.ones((batch,), jnp.int32), next_pos, zeros, zeros
    )
    end = jax.lax.while_loop(cond, body, carry)
    out = jnp.where(jnp.arange(end.out.shape[1])[None] < max_decode_len, end.out, pad_id)[:, :max_decode_len]
    return {"tokens": out, "passes": end.i, "drafted": end.drafted, "accepted": end.accepted}

  return decode
