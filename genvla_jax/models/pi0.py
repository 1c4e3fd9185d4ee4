"""π0: the prefix-LM plus a flow-matching action expert (action_expert.py) that attends to its prefix.

Parameter tree: the prefix-LM's (prefix_lm.py) plus expert/ (action_expert.py).
The prefix (image + prompt, and answer text on VL rows) runs into a KV cache; the expert's state and action
tokens attend to that cache. In training both run in one forward (gradients flow through the cache); at
inference the cache is built once per observation and every integration step reuses it
(inference/flow_sampler.py).
"""

from typing import Any

import jax.numpy as jnp

from genvla_jax.models import action_expert, prefix_lm


class Pi0(prefix_lm.PrefixLM):
  # dict(width, mlp_dim, action_dim, state_dim) of the expert (build.expert_config reads it from the config)
  expert_config: dict[str, Any] | None = None

  def setup(self):
    super().setup()
    if not self.expert_config:
      raise ValueError("Pi0 needs expert_config (width, mlp_dim, action_dim, state_dim)")
    e = self.expert_config
    self.expert = action_expert.ActionExpert(
      action_expert.expert_llm_config(self.llm_config, e),
      e["action_dim"],
      e["state_dim"],
      dtype=self.dtype,
      remat_policy=self.remat_policy,
      scan_unroll=self.scan_unroll,
      attention_impl=self.attention_impl,
    )

  def flow_forward(self, images, tokens, input_mask, ar_mask, x_t, t, state=None, image_mask=None):
    """Training forward. x_t [B,H,D] noisy actions at flow times t [B] -> (text logits [B,T,V], velocity [B,H,D]).
    images [B,H,W,3] or [B,C,H,W,3] (+ image_mask [B,C]): prefix_lm.cameras."""
    x, full_input, n = self.embed_inputs(images, tokens, input_mask, image_mask)
    full_ar = self.layout.full_ar(ar_mask, n)
    hidden, cache = self.prefix_into_cache(x, full_input, full_ar, self.expert.suffix_len(x_t.shape[1]))
    velocity = self.expert(cache, full_input, jnp.sum(full_input, axis=1), x_t, t, state)
    return self.llm.logits(self.layout.text_hidden(hidden, n)), velocity

  def prefix_cache(self, images, tokens, input_mask, horizon: int, image_mask=None):
    """Inference, once per observation: image + prompt into a KV cache with room for the expert's tokens.
    -> (cache, prefix_valid [B,P], next_position [B]) for `velocity`."""
    x, full_input, n = self.embed_inputs(images, tokens, input_mask, image_mask)
    _, cache = self.prefix_into_cache(
      x, full_input, self.layout.full_ar(jnp.zeros_like(input_mask), n), self.expert.suffix_len(horizon)
    )
    return cache, full_input, jnp.sum(full_input, axis=1)

  def velocity(self, cache, prefix_valid, next_position, x_t, t, state=None):
    """One flow-matching evaluation against `prefix_cache`'s cache: x_t [B,H,D], t [B] -> [B,H,D]."""
    return self.expert(cache, prefix_valid, next_position, x_t, t, state)
