"""π0's action expert: a smaller Gemma whose state/action tokens attend to the VLM prefix.

The expert has its own weights (width, MLP size) but the VLM's depth, heads and head size, so that its
layer l attends over [prefix keys/values of the VLM's layer l | its own keys/values] — π0's shared
attention. The prefix never attends to the expert's tokens, so the VLM's prefix pass is a KV cache
(the one `gemma.Gemma` writes when prefilling) and the expert is the same `gemma.Gemma` called on that
cache: in training the cache is built in the same forward (gradients flow through it); at inference it
is built once and reused by every integration step (inference/flow_sampler.py).

Suffix tokens (L = H + 1 with a state token, else H): [state] [a_1 ... a_H]
  state token   = state_in(state)                                  attends: prefix, itself
  action token  = time_mlp_out(swish(time_mlp_in([action_in(x_t) | time_emb(t)])))
                                                                   attends: prefix, state, all actions
  velocity      = action_out(final hidden of the H action tokens)  [B,H,D]

Parameters (under `expert/`): llm/{layers/..., final_norm} (Gemma without embedding table),
action_in, time_mlp_in, time_mlp_out, action_out [, state_in] — each {kernel, bias}.
"""

from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from genvla_jax.models import flow_matching, gemma


# Expert sizes by name (width, mlp_dim; depth / heads / head size are the VLM's).
VARIANTS = {
  "gemma_300m": dict(width=1024, mlp_dim=4096),  # π0's action expert
  "tiny": dict(width=64, mlp_dim=256),
}


class ActionExpert(nn.Module):
  llm_config: dict[str, Any]  # the expert's Gemma config (depth/heads/head_dim equal to the VLM's)
  action_dim: int
  state_dim: int = 0  # 0: no state token
  dtype: str = "float32"
  remat_policy: str = "none"
  scan_unroll: int = 1  # layers per scan iteration (config.model.scan_unroll)
  attention_impl: str = "xla"  # models/attention.py IMPLS (its suffix attends the prefix cache: no one-token steps)

  def setup(self):
    width = self.llm_config["width"]
    options = dict(dtype=self.dtype, remat_policy=self.remat_policy, attention_impl=self.attention_impl)
    self.llm = gemma.Gemma(**{"scan_unroll": self.scan_unroll, **self.llm_config}, **options)
    self.action_in = nn.Dense(width, dtype=self.dtype)
    self.time_mlp_in = nn.Dense(width, dtype=self.dtype)
    self.time_mlp_out = nn.Dense(width, dtype=self.dtype)
    self.action_out = nn.Dense(self.action_dim, dtype=jnp.float32)
    if self.state_dim:
      self.state_in = nn.Dense(width, dtype=self.dtype)

  def suffix_len(self, horizon: int) -> int:
    return horizon + (1 if self.state_dim else 0)

  def embed_suffix(self, x_t, t, state):
    """x_t [B,H,D], t [B], state [B,S] or None -> (suffix tokens [B,L,W], ar_mask [L] bool)."""
    width = self.llm_config["width"]
    actions = self.action_in(x_t.astype(self.dtype))
    time = jnp.broadcast_to(flow_matching.time_embedding(t, width)[:, None, :], actions.shape)
    tokens = self.time_mlp_out(nn.swish(self.time_mlp_in(jnp.concatenate([actions, time.astype(self.dtype)], axis=-1))))
    ar = [True] + [False] * (x_t.shape[1] - 1)  # the action block starts a new attention block
    if self.state_dim:
      if state is None:
        raise ValueError(f"this action expert takes a state token (state_dim={self.state_dim}); got no state")
      tokens = jnp.concatenate([self.state_in(state.astype(self.dtype))[:, None], tokens], axis=1)
      ar = [True] + ar
    return tokens, jnp.array(ar)

  def __call__(self, cache, prefix_valid, next_position, x_t, t, state=None):
    """cache: the VLM's KV cache with the prefix in slots [0, P) and >= L free slots after it;
    prefix_valid [B,P] bool (real prefix tokens); next_position [B] (RoPE position after each row's
    prefix); x_t [B,H,D] noisy actions at flow times t [B] -> velocity [B,H,D] float32."""
    tokens, ar = self.embed_suffix(x_t, t, state)
    batch, length = tokens.shape[:2]
    p = prefix_valid.shape[1]
    blocks = jnp.cumsum(ar.astype(jnp.int32))
    suffix_mask = blocks[None, :] <= blocks[:, None]  # [L,L]
    attn_mask = jnp.concatenate(
      [
        jnp.broadcast_to(prefix_valid[:, None, :], (batch, length, p)),
        jnp.broadcast_to(suffix_mask, (batch, length, length)),
        jnp.zeros((batch, length, cache["k"].shape[2] - p - length), bool),
      ],
      axis=2,
    )
    positions = next_position[:, None] + jnp.arange(length)[None, :]
    hidden, _ = self.llm(tokens, positions, attn_mask, cache, p)
    return self.action_out(hidden[:, -x_t.shape[1] :]).astype(jnp.float32)


def expert_llm_config(llm_config: dict, expert_config) -> dict:
  """The expert's Gemma: the VLM's config with the expert's width and MLP size (π0: Gemma 300M,
  width 1024, MLP 4096, with Gemma 2B's 18 layers, 8 heads of 256, one KV head)."""
  return dict(llm_config, width=expert_config["width"], mlp_dim=expert_config["mlp_dim"])
