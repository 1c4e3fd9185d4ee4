"""Flow matching for action chunks (the π0 baseline), as pure functions.

Convention (π0): time t = 1 is pure noise, t = 0 the data. A training example draws
t ~ Beta(a, b) stretched to [t_min, 1], noise ε ~ N(0, I) and forms
  x_t = t ε + (1 - t) a          (a: the normalized action chunk [B,H,D])
whose velocity is u = dx_t/dt = ε - a; the model regresses v(x_t, t) onto u (mean squared error).
Sampling integrates dx/dt = v from t = 1 to t = 0 with `num_steps` Euler steps (π0: 10).
"""

import jax
import jax.numpy as jnp


def sample_time(rng, batch: int, beta_a: float = 1.5, beta_b: float = 1.0, t_min: float = 0.001):
  """-> flow times [B] in [t_min, 1]; Beta(1.5, 1) puts more weight on the noisier end (π0)."""
  return jax.random.beta(rng, beta_a, beta_b, (batch,)) * (1.0 - t_min) + t_min


def noisy_actions(actions, noise, t):
  """actions, noise [B,H,D], t [B] -> (x_t [B,H,D], target velocity u [B,H,D])."""
  t = t[:, None, None]
  return t * noise + (1.0 - t) * actions, noise - actions


def time_embedding(t, width: int, min_period: float = 4e-3, max_period: float = 4.0):
  """Sine-cosine embedding of flow times t [B] -> [B, width] (periods geometric in [min, max])."""
  if width % 2:
    raise ValueError(f"time embedding width must be even, got {width}")
  fraction = jnp.linspace(0.0, 1.0, width // 2)
  period = min_period * (max_period / min_period) ** fraction
  angle = t[:, None].astype(jnp.float32) * (2 * jnp.pi / period)[None, :]
  return jnp.concatenate([jnp.sin(angle), jnp.cos(angle)], axis=-1)


def euler_sample(velocity_fn, noise, num_steps: int = 10):
  """velocity_fn(x [B,H,D], t [B]) -> v [B,H,D]; noise [B,H,D] (the sample at t = 1) -> x at t = 0."""
  dt = -1.0 / num_steps

  def step(i, x):
    t = jnp.full((x.shape[0],), 1.0 + i * dt, jnp.float32)
    return x + dt * velocity_fn(x, t).astype(x.dtype)

  return jax.lax.fori_loop(0, num_steps, step, noise)
