"""The PaliGemma-style VLA: image tower(s) -> linear projector -> Gemma decoder, prefix-LM attention.

Parameter tree (a plain nested dict; `params["img_frozen"]` exists only with the dual encoder):
  img/...          trained image tower (see vit.py)
  img_frozen/...   frozen copy (dual encoder): stop_gradient, no optimizer state
  projector/{kernel [F,E], bias [E]}   F = D_img (single) or 2*D_img (dual: [frozen | trained])
  llm/...          Gemma decoder (see gemma.py)
  expert/...       π0's flow-matching action expert (only with `expert_config`; see action_expert.py)

Sequence layout: [N image tokens][T text tokens]; logits are returned for the T text positions.
"""

import dataclasses
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from genvla_jax.data import preprocess as preprocess_lib
from genvla_jax.models import action_expert, gemma, masks, vit


class VLA(nn.Module):
  img_config: dict[str, Any]
  llm_config: dict[str, Any]
  dual_encoder: bool = False
  dtype: str = "float32"         # compute dtype
  param_dtype: str = "float32"   # storage dtype of trained parameters
  frozen_dtype: str = "float32"  # storage dtype of the frozen tower
  remat_policy: str = "none"
  # π0 baseline: dict(width, mlp_dim, action_dim, state_dim) of the flow-matching action
  # expert (config.model.action_expert); None: actions are text tokens of the LLM
  expert_config: dict[str, Any] | None = None

  def setup(self):
    common = dict(dtype=self.dtype, remat_policy=self.remat_policy)
    self.img = vit.ViT(**self.img_config, **common)
    if self.dual_encoder:
      self.img_frozen = vit.ViT(**self.img_config, **common)
    self.projector = nn.Dense(self.llm_config["width"], dtype=self.dtype)
    self.llm = gemma.Gemma(**self.llm_config, **common)
    if self.expert_config:
      e = self.expert_config
      self.expert = action_expert.ActionExpert(action_expert.expert_llm_config(self.llm_config, e),
                                               e["action_dim"], e.get("state_dim", 0), **common)

  def encode_images(self, images):
    """images [B,H,W,3] float in [-1,1], or uint8 pixels (the training pipeline ships uint8: a quarter
    of the bytes, and the conversion runs on the accelerator) -> image tokens [B,N,E]."""
    images = preprocess_lib.to_unit_range(images)
    z = self.img(images)
    if self.dual_encoder:
      z_frozen = jax.lax.stop_gradient(self.img_frozen(images))
      z = jnp.concatenate([z_frozen, z], axis=-1)  # z = [phi_frozen(o) | phi_train(o)]
    return self.projector(z)

  def embed_inputs(self, images, tokens):
    """images [B,H,W,3], tokens [B,T] -> (x [B,N+T,E], N)."""
    img = self.encode_images(images)
    return jnp.concatenate([img, self.llm.embed(tokens)], axis=1), img.shape[1]

  def __call__(self, images, tokens, input_mask, ar_mask):
    """Full forward (training). tokens/input_mask/ar_mask [B,T] -> text logits [B,T,V] float32."""
    x, n = self.embed_inputs(images, tokens)
    full_input = _prepend(input_mask, n, True)
    full_ar = _prepend(ar_mask, n, False)
    attn_mask = masks.prefix_lm_mask(full_input, full_ar)
    hidden, _ = self.llm(x, masks.positions_from_mask(full_input), attn_mask,
                         prefix=full_input & (jnp.cumsum(full_ar, axis=1) == 0))
    return self.llm.logits(hidden[:, n:])

  def flow_forward(self, images, tokens, input_mask, ar_mask, x_t, t, state=None):
    """π0 training forward: the prefix (image + prompt, and answer text on VL rows) runs into a KV cache
    that the action expert attends to. x_t [B,H,D], t [B] -> (text logits [B,T,V], velocity [B,H,D])."""
    x, n = self.embed_inputs(images, tokens)
    full_input, full_ar = _prepend(input_mask, n, True), _prepend(ar_mask, n, False)
    hidden, cache = self._prefix_into_cache(x, full_input, full_ar, self.expert.suffix_len(x_t.shape[1]))
    velocity = self.expert(cache, full_input, jnp.sum(full_input, axis=1), x_t, t, state)
    return self.llm.logits(hidden[:, n:]), velocity

  def prefix_cache(self, images, tokens, input_mask, horizon: int):
    """π0 inference, once per observation: image + prompt into a KV cache with room for the expert's
    tokens. -> (cache, prefix_valid [B,P], next_position [B]) for `velocity`."""
    x, n = self.embed_inputs(images, tokens)
    full_input = _prepend(input_mask, n, True)
    _, cache = self._prefix_into_cache(x, full_input, jnp.zeros_like(full_input),
                                       self.expert.suffix_len(horizon))
    return cache, full_input, jnp.sum(full_input, axis=1)

  def velocity(self, cache, prefix_valid, next_position, x_t, t, state=None):
    """One flow-matching evaluation against `prefix_cache`'s cache: x_t [B,H,D], t [B] -> [B,H,D]."""
    return self.expert(cache, prefix_valid, next_position, x_t, t, state)

  def _prefix_into_cache(self, x, full_input, full_ar, extra_slots: int):
    """x [B,P,E] -> (hidden [B,P,E], KV cache of P + extra_slots slots holding the prefix)."""
    seq_len = x.shape[1]
    attn_mask = jnp.pad(masks.prefix_lm_mask(full_input, full_ar), ((0, 0), (0, 0), (0, extra_slots)))
    cache = self.llm.init_cache(x.shape[0], seq_len + extra_slots)
    return self.llm(x, masks.positions_from_mask(full_input), attn_mask, cache, 0,
                    prefix=full_input & (jnp.cumsum(full_ar, axis=1) == 0))

  def prefill(self, images, tokens, input_mask, cache_size):
    """Runs the prefix (image + right-padded prompt) into a fresh KV cache of `cache_size` slots.

    Returns (logits [B,V] at each row's last real prompt token, cache, next_position [B]).
    """
    x, n = self.embed_inputs(images, tokens)
    full_input = _prepend(input_mask, n, True)
    seq_len = full_input.shape[1]
    attn_mask = masks.prefix_lm_mask(full_input, jnp.zeros_like(full_input))
    attn_mask = jnp.pad(attn_mask, ((0, 0), (0, 0), (0, cache_size - seq_len)))
    cache = self.llm.init_cache(x.shape[0], cache_size)
    positions = masks.positions_from_mask(full_input)
    hidden, cache = self.llm(x, positions, attn_mask, cache, 0, prefix=full_input)
    last = jnp.sum(full_input, axis=1) - 1  # [B] index of the last real prefix token
    last_hidden = jnp.take_along_axis(hidden, last[:, None, None], axis=1)
    return self.llm.logits(last_hidden)[:, 0], cache, last + 1

  def decode_step(self, tokens, positions, cache, cache_index, cache_valid):
    """One cached step. tokens [B,1], positions [B,1], cache_valid [B,S] (slots a query may attend,
    this step's slot included) -> (logits [B,V], new cache)."""
    logits, cache = self.extend(tokens, positions, cache, cache_index, cache_valid[:, None, :])
    return logits[:, 0], cache

  def extend(self, tokens, positions, cache, cache_index, attn_mask):
    """K tokens at once into cache slots [cache_index, cache_index + K). tokens/positions [B,K],
    attn_mask [B,K,S] (per query: the slots it may attend) -> (logits [B,K,V], new cache)."""
    hidden, cache = self.llm(self.llm.embed(tokens), positions, attn_mask, cache, cache_index)
    return self.llm.logits(hidden), cache


def _prepend(mask, n, value):
  """mask [B,T] -> [B,n+T] with `value` in the first n columns."""
  return jnp.concatenate([jnp.full((mask.shape[0], n), value, bool), mask.astype(bool)], axis=1)


def from_config(model_config) -> VLA:
  return VLA(img_config=dict(model_config.img), llm_config=dict(model_config.llm),
             dual_encoder=model_config.dual_encoder, dtype=model_config.dtype,
             param_dtype=model_config.get("param_dtype", "float32"),
             frozen_dtype=model_config.get("frozen_dtype", "float32"),
             remat_policy=model_config.remat_policy, expert_config=expert_config(model_config))


def expert_config(model_config) -> dict | None:
  """config.model.action_expert -> the VLA's expert_config (None unless its width is set)."""
  e = model_config.get("action_expert")
  if not e or not e.width:
    return None
  if not e.action_dim:
    raise ValueError("config.model.action_expert.action_dim is 0: it is resolved from the data at "
                     "training time (train.py) and stored in the run's config")
  return dict(width=e.width, mlp_dim=e.mlp_dim, action_dim=e.action_dim,
              state_dim=e.state_dim if e.use_state else 0)


def for_decoding(model: VLA, unroll: int | None = None) -> VLA:
  """The same model (same parameter tree) with the decoder's layer scan unrolled (`unroll` layers per
  iteration; default all). A scanned stack slices each layer's weights out of the stacked arrays at
  run time; in a memory-bound decode step unrolling lets every weight be read once, in place."""
  unroll = model.llm_config["depth"] if unroll is None else unroll
  return dataclasses.replace(model, llm_config=dict(model.llm_config, scan_unroll=unroll), parent=None)


def init_params(model: VLA, rng, image_size: int, text_len: int = 8):
  """Random parameters. With the dual encoder, both towers are identical and the projector is split,
  so the dual model computes exactly what the single-tower model with the same `rng` computes."""
  single = dataclasses.replace(model, dual_encoder=False, parent=None)
  images = jnp.zeros((1, image_size, image_size, 3), jnp.float32)
  tokens = jnp.zeros((1, text_len), jnp.int32)
  mask = jnp.ones((1, text_len), bool)
  if model.expert_config:
    e = model.expert_config
    x_t = jnp.zeros((1, 1, e["action_dim"]), jnp.float32)  # the expert works for any horizon
    state = jnp.zeros((1, e["state_dim"]), jnp.float32) if e.get("state_dim") else None
    params = jax.jit(lambda r: single.init(r, images, tokens, mask, mask, x_t, jnp.ones((1,)), state,
                                           method=VLA.flow_forward))(rng)["params"]
  else:
    params = jax.jit(single.init)(rng, images, tokens, mask, mask)["params"]
  return finish_params(model, params)


def finish_params(model: VLA, single_params):
  """Single-tower float32 params (fresh or imported) -> the model's params: dual-encoder split if
  configured, then each part cast to its storage dtype."""
  params = make_dual(single_params) if model.dual_encoder else dict(single_params)
  return {k: jax.tree.map(lambda x, k=k: x.astype(model.frozen_dtype if k == "img_frozen"
                                                  else model.param_dtype), v)
          for k, v in params.items()}


def make_dual(params):
  """Single-tower params -> dual-encoder params: img_frozen = img, projector kernel [D,E] -> [2D,E]
  as [W/2; W/2], so that [phi_f | phi_t] @ W' = phi @ W while the towers are equal."""
  params = dict(params)
  params["img_frozen"] = jax.tree.map(jnp.copy, params["img"])
  kernel = params["projector"]["kernel"]
  params["projector"] = dict(params["projector"], kernel=jnp.concatenate([kernel / 2, kernel / 2], 0))
  return params


def num_image_tokens(model_config) -> int:
  """Image positions in the sequence: (image_size / patch_size)^2 patch tokens."""
  return (model_config.image_size // model_config.img.patch_size) ** 2


def count_params(params) -> int:
  return int(sum(np.prod(x.shape) for x in jax.tree.leaves(params)))
