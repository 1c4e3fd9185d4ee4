"""Parameter surgery: fresh parameters, the dual encoder made from a single-encoder model, storage dtypes.

Every model's parameters start as the single-encoder model's (random, or imported from a checkpoint) and
become the model's own through `finish_params`: the dual encoder's frozen towers are made (make_dual), then
each top-level part is cast to its storage dtype (frozen towers: frozen_dtype; the rest: param_dtype).
"""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from genvla_jax.models import pi0, prefix_lm

FROZEN_PARTS = ("img_frozen", "img_fused_frozen")  # no gradient, no optimizer state (training/optimizer.py)


def init_params(model: prefix_lm.PrefixLM, rng, image_size: int, text_len: int = 8):
  """Random parameters. With the dual encoder, the frozen towers equal the trained ones ("copy": and the
  projector is split), so the dual model computes exactly what the single model with the same `rng` does."""
  single = dataclasses.replace(model, encoder=model.encoder.single(), parent=None)
  images = jnp.zeros((1, image_size, image_size, 3), jnp.float32)
  tokens = jnp.zeros((1, text_len), jnp.int32)
  mask = jnp.ones((1, text_len), bool)
  if isinstance(model, pi0.Pi0):
    e = model.expert_config
    x_t = jnp.zeros((1, 1, e["action_dim"]), jnp.float32)  # the expert works for any horizon
    state = jnp.zeros((1, e["state_dim"]), jnp.float32) if e["state_dim"] else None
    init = lambda r: single.init(r, images, tokens, mask, mask, x_t, jnp.ones((1,)), state, method=pi0.Pi0.flow_forward)  # noqa: E731
    params = jax.jit(init)(rng)["params"]
  else:
    params = jax.jit(single.init)(rng, images, tokens, mask, mask)["params"]
  return finish_params(model, params)


def finish_params(model: prefix_lm.PrefixLM, single_params):
  """Single-encoder float32 params (fresh or imported) -> the model's params: the dual encoder made if
  configured, then each part cast to its storage dtype."""
  dual = model.encoder.dual
  params = make_dual(single_params, dual) if dual else dict(single_params)
  return {
    k: jax.tree.map(lambda x, k=k: x.astype(model.frozen_dtype if k in FROZEN_PARTS else model.param_dtype), v)
    for k, v in params.items()
  }


def make_dual(params, mode: str = "copy"):
  """Single-model params -> dual-encoder params (encoders.DUAL names the modes).

  "copy": img_frozen = img (img_fused_frozen = img_fused), the projector's first kernel [F,E] -> [2F,E] as
  [W/2; W/2], so that [phi_f | phi_t] W' = phi W while the copies are equal.
  "split": the fused tower becomes the frozen one (img_fused -> img_frozen); nothing else changes (same
  function)."""
  params = dict(params)
  if mode == "split":
    params["img_frozen"] = params.pop("img_fused")
    return params
  params["img_frozen"] = jax.tree.map(jnp.copy, params["img"])
  if "img_fused" in params:
    params["img_fused_frozen"] = jax.tree.map(jnp.copy, params["img_fused"])
  first = "fc1" if "fc1" in params["projector"] else None
  layer = params["projector"][first] if first else params["projector"]
  kernel = layer["kernel"]
  layer = dict(layer, kernel=jnp.concatenate([kernel / 2, kernel / 2], 0))
  params["projector"] = dict(params["projector"], **{first: layer}) if first else layer
  return params


def count_params(params) -> int:
  return int(sum(np.prod(x.shape) for x in jax.tree.leaves(params)))
