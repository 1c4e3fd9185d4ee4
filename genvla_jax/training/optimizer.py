"""optax optimizer: AdamW, linear warmup + cosine decay, global-norm clipping; the frozen image tower
(param paths starting with `img_frozen`, `img_fused_frozen`) gets `optax.set_to_zero()` and therefore no
optimizer state."""

import jax
import optax

from genvla_jax.models import surgery

FROZEN_PREFIXES = surgery.FROZEN_PARTS


def labels(params):
  """'frozen' for the frozen tower's leaves, 'train' for everything else (same tree structure)."""

  def label(key):
    return "frozen" if key in FROZEN_PREFIXES else "train"

  return {k: jax.tree.map(lambda _, k=k: label(k), v) for k, v in params.items()}


def schedule(opt_config, total_steps: int):
  return optax.warmup_cosine_decay_schedule(
    init_value=0.0,
    peak_value=opt_config.lr,
    warmup_steps=opt_config.warmup_steps,
    decay_steps=max(total_steps, opt_config.warmup_steps + 1),
    end_value=opt_config.lr * 0.01,
  )


def make(opt_config, total_steps: int) -> optax.GradientTransformation:
  decay_mask = lambda params: jax.tree.map(lambda p: p.ndim >= 2, params)  # no decay on norms/biases
  train = optax.chain(
    optax.clip_by_global_norm(opt_config.clip_norm),
    optax.adamw(
      schedule(opt_config, total_steps),
      b1=opt_config.b1,
      b2=opt_config.b2,
      weight_decay=opt_config.weight_decay,
      mask=decay_mask,
    ),
  )
  return optax.multi_transform({"train": train, "frozen": optax.set_to_zero()}, labels)
