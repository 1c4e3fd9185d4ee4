"""Prefix-LM attention masks and positions shared by training and decoding.

Conventions (big_vision / PaliGemma): `input_mask[b,t]` is True for real tokens (False for padding);
`ar_mask[b,t]` is True where attention is causal (answer tokens), False for the prefix (image tokens and
prompt), which attends bidirectionally within itself. Token i attends token j iff both are real and
cumsum(ar_mask)[j] <= cumsum(ar_mask)[i].
"""

import jax.numpy as jnp


def prefix_lm_mask(input_mask, ar_mask):
  """input_mask [B,T] bool, ar_mask [B,T] bool -> attention mask [B,T,T] bool (query, key)."""
  blocks = jnp.cumsum(ar_mask.astype(jnp.int32), axis=1)
  causal = blocks[:, None, :] <= blocks[:, :, None]
  valid = input_mask[:, None, :] & input_mask[:, :, None]
  return causal & valid


def positions_from_mask(input_mask):
  """input_mask [B,T] -> RoPE positions [B,T]: index among the real tokens (padding repeats)."""
  return jnp.cumsum(input_mask.astype(jnp.int32), axis=1) - 1
