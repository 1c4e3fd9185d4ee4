"""optax optimizer: AdamW, linear warmup + cosine decay, global-norm clipping; frozen parameters
(training/freezing.py: the dual encoder's frozen towers `img_frozen`, `img_fused_frozen`, whatever
`optimizer.frozen` names, the kernels LoRA adapts) get `optax.set_to_zero()` and therefore no optimizer state.
`optimizer.lr_mults` ({part: m}) scales the updates of whole top-level parts (= their
learning rate, weight decay included, times m); without it the optimizer is exactly the one without it
(same state tree)."""

import jax
import optax

from genvla_jax.models import surgery
from genvla_jax.training import freezing

FROZEN_PREFIXES = surgery.FROZEN_PARTS


def labels(params, frozen=()):
  """'frozen' for the frozen leaves (freezing.trainable_mask: the frozen towers, the `frozen` patterns, LoRA's
  base kernels), 'train' for everything else (same tree structure)."""
  return jax.tree.map(lambda trains: "train" if trains else "frozen", freezing.trainable_mask(params, frozen))


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
  frozen = tuple(opt_config.frozen) if "frozen" in opt_config else ()  # (a hand-made config may lack it)
  optimizer = optax.multi_transform(
    {"train": train, "frozen": optax.set_to_zero()}, lambda params: labels(params, frozen)
  )
  mults = dict(opt_config.lr_mults)
  if not mults:
    return optimizer
  return optax.chain(optimizer, scale_parts(mults))


def scale_parts(mults: dict) -> optax.GradientTransformation:
  """Updates of top-level part k times mults[k] (others unchanged); stateless. A part no model has is an error
  at the first update (a typo must not silently train at the base rate)."""

  def scale(updates, state, params=None):
    del params
    unknown = set(mults) - set(updates)
    if unknown:
      raise ValueError(f"optimizer.lr_mults names {sorted(unknown)}, not parts of this model: {sorted(updates)}")
    return {k: jax.tree.map(lambda u, k=k: u * mults.get(k, 1.0), v) for k, v in updates.items()}, state

  return optax.GradientTransformation(lambda params: optax.EmptyState(), scale)
