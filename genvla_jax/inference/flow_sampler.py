"""π0 inference: the prefix KV cache computed once, then Euler integration of the action expert's
velocity from noise (t = 1) to an action chunk (t = 0) (models/flow_matching.py)."""

import jax

from genvla_jax.models import flow_matching


def make_flow_sampler(model, horizon: int, num_steps: int = 10):
  """-> jitted sample(params, images [B,S,S,3] | [B,C,S,S,3], tokens [B,T], input_mask [B,T], noise [B,H,D],
  state [B,S_state] or None, image_mask [B,C] or None) -> normalized actions [B,H,D] float32."""

  def sample(params, images, tokens, input_mask, noise, state=None, image_mask=None):
    variables = {"params": params}
    cache, prefix_valid, next_position = model.apply(
      variables, images, tokens, input_mask, horizon, image_mask, method=model.prefix_cache
    )

    def velocity(x_t, t):
      return model.apply(variables, cache, prefix_valid, next_position, x_t, t, state, method=model.velocity)

    return flow_matching.euler_sample(velocity, noise, num_steps)

  return jax.jit(sample)
