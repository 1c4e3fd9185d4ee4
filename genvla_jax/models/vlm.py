"""The VLA: image tower(s) -> projector -> decoder. PaliGemma (π0+) by default; the Prismatic / OpenVLA
layout with options.

Parameter tree (a plain nested dict):
  img/...          trained image tower (see vit.py): SigLIP (PaliGemma) or DINOv2 (Prismatic)
  img_fused/...    Prismatic's second tower (SigLIP), fused per patch on the channel axis: [img | img_fused]
  img_frozen/...   dual encoder, frozen (stop_gradient, no optimizer state):
                     dual_mode "copy"  a copy of img (and img_fused_frozen of img_fused): z = [frozen | trained]
                     dual_mode "split" Prismatic's second tower itself, frozen (OpenVLA+: SigLIP frozen,
                                       DINOv2 trained): z = [img | img_frozen], Prismatic's channel order
  projector/...    "linear": {kernel [F,E], bias [E]}; "mlp3" (Prismatic's fused-gelu-mlp, F -> 4F -> E -> E
                   with exact GELU): fc1, fc2, fc3 each {kernel, bias}. F = the fused feature width.
  llm/...          the decoder (see gemma.py: Gemma, or Llama 2 with its options)
  expert/...       π0's flow-matching action expert (only with `expert_config`; see action_expert.py)

Sequence layout: [N image tokens][T text tokens] (PaliGemma; image and prompt attend bidirectionally),
or with `image_after_bos` [BOS][N image tokens][rest of the text] and `causal_prefix` (Prismatic: every
token causal); logits are returned for the T text positions.
"""

import dataclasses
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from genvla_jax.models import action_expert, gemma, masks, pixels, vit


class VLA(nn.Module):
  img_config: dict[str, Any]
  llm_config: dict[str, Any]
  dual_encoder: bool = False
  dtype: str = "float32"  # compute dtype
  param_dtype: str = "float32"  # storage dtype of trained parameters
  frozen_dtype: str = "float32"  # storage dtype of the frozen tower
  remat_policy: str = "none"
  # π0 baseline: dict(width, mlp_dim, action_dim, state_dim) of the flow-matching action
  # expert (config.model.action_expert); None: actions are text tokens of the LLM
  expert_config: dict[str, Any] | None = None
  fused_img_config: dict[str, Any] | None = None  # Prismatic: a second tower fused per patch
  dual_mode: str = "copy"  # "copy" | "split" (see module docstring)
  projector_type: str = "linear"  # "linear" | "mlp3"
  projector_hidden: int = 0  # mlp3 hidden width (0: 4 x the single model's fused feature width)
  image_after_bos: bool = False  # Prismatic: [BOS][image][text]
  causal_prefix: bool = False  # Prismatic: image and prompt tokens attend causally too

  def setup(self):
    common = dict(dtype=self.dtype, remat_policy=self.remat_policy)
    if self.dual_mode not in ("copy", "split"):
      raise ValueError(f"unknown dual_mode {self.dual_mode!r}; use 'copy' or 'split'")
    if self.dual_mode == "split" and self.dual_encoder and not self.fused_img_config:
      raise ValueError("dual_mode 'split' freezes the second (fused) tower: it needs fused_img_config")
    self.img = vit.ViT(**self.img_config, **common)
    split = self.dual_encoder and self.dual_mode == "split"
    if self.fused_img_config and not split:
      self.img_fused = vit.ViT(**self.fused_img_config, **common)
    if self.dual_encoder:
      self.img_frozen = vit.ViT(**(self.fused_img_config if split else self.img_config), **common)
      if self.fused_img_config and not split:
        self.img_fused_frozen = vit.ViT(**self.fused_img_config, **common)
    width = self.llm_config["width"]
    if self.projector_type == "linear":
      self.projector = nn.Dense(width, dtype=self.dtype)
    elif self.projector_type == "mlp3":
      fused_width = self.fused_img_config["width"] if self.fused_img_config else 0
      hidden = self.projector_hidden or 4 * (self.img_config["width"] + fused_width)
      self.projector = MlpProjector(hidden, width, dtype=self.dtype)
    else:
      raise ValueError(f"unknown projector {self.projector_type!r}; use 'linear' or 'mlp3'")
    self.llm = gemma.Gemma(**self.llm_config, **common)
    if self.expert_config:
      e = self.expert_config
      self.expert = action_expert.ActionExpert(
        action_expert.expert_llm_config(self.llm_config, e), e["action_dim"], e["state_dim"], **common
      )

  def encode_images(self, images):
    """images [B,H,W,3] float in [-1,1], or uint8 pixels (the training pipeline ships uint8: a quarter
    of the bytes, and the conversion runs on the accelerator) -> image tokens [B,N,E]."""
    images = pixels.to_unit_range(images)
    fused = self.fused_img_config is not None
    if self.dual_encoder and self.dual_mode == "split":  # [phi_1(o) | sg(phi_2(o))], Prismatic's order
      return self.projector(
        jnp.concatenate([self.img(images), jax.lax.stop_gradient(self.img_frozen(images))], axis=-1)
      )
    z = jnp.concatenate([self.img(images)] + ([self.img_fused(images)] if fused else []), axis=-1)
    if self.dual_encoder:
      z_frozen = jnp.concatenate(
        [self.img_frozen(images)] + ([self.img_fused_frozen(images)] if fused else []), axis=-1
      )
      z = jnp.concatenate([jax.lax.stop_gradient(z_frozen), z], axis=-1)  # z = [phi_frozen(o) | phi_train(o)]
    return self.projector(z)

  def embed_inputs(self, images, tokens):
    """images [B,H,W,3], tokens [B,T] -> (x [B,N+T,E], N): [image][text], or [BOS][image][text after
    BOS] with image_after_bos (the attention masks are the same either way: BOS is always real and in
    the prefix)."""
    img = self.encode_images(images)
    text = self.llm.embed(tokens)
    if self.image_after_bos:
      return jnp.concatenate([text[:, :1], img, text[:, 1:]], axis=1), img.shape[1]
    return jnp.concatenate([img, text], axis=1), img.shape[1]

  def _text_hidden(self, hidden, n):
    """[B,N+T,E] -> the T text positions [B,T,E] (in the order of `tokens`)."""
    if self.image_after_bos:
      return jnp.concatenate([hidden[:, :1], hidden[:, n + 1 :]], axis=1)
    return hidden[:, n:]

  def _full_ar(self, ar_mask, n):
    """ar_mask [B,T] -> [B,N+T]: image tokens in the bidirectional prefix, or all causal."""
    full_ar = _prepend(ar_mask, n, False)
    return jnp.ones_like(full_ar) if self.causal_prefix else full_ar

  def __call__(self, images, tokens, input_mask, ar_mask):
    """Full forward (training). tokens/input_mask/ar_mask [B,T] -> text logits [B,T,V] float32."""
    x, n = self.embed_inputs(images, tokens)
    full_input = _prepend(input_mask, n, True)
    full_ar = self._full_ar(ar_mask, n)
    attn_mask = masks.prefix_lm_mask(full_input, full_ar)
    hidden, _ = self.llm(
      x, masks.positions_from_mask(full_input), attn_mask, prefix=full_input & (jnp.cumsum(full_ar, axis=1) == 0)
    )
    return self.llm.logits(self._text_hidden(hidden, n))

  def flow_forward(self, images, tokens, input_mask, ar_mask, x_t, t, state=None):
    """π0 training forward: the prefix (image + prompt, and answer text on VL rows) runs into a KV cache
    that the action expert attends to. x_t [B,H,D], t [B] -> (text logits [B,T,V], velocity [B,H,D])."""
    x, n = self.embed_inputs(images, tokens)
    full_input, full_ar = _prepend(input_mask, n, True), self._full_ar(ar_mask, n)
    hidden, cache = self._prefix_into_cache(x, full_input, full_ar, self.expert.suffix_len(x_t.shape[1]))
    velocity = self.expert(cache, full_input, jnp.sum(full_input, axis=1), x_t, t, state)
    return self.llm.logits(self._text_hidden(hidden, n)), velocity

  def prefix_cache(self, images, tokens, input_mask, horizon: int):
    """π0 inference, once per observation: image + prompt into a KV cache with room for the expert's
    tokens. -> (cache, prefix_valid [B,P], next_position [B]) for `velocity`."""
    x, n = self.embed_inputs(images, tokens)
    full_input = _prepend(input_mask, n, True)
    _, cache = self._prefix_into_cache(
      x, full_input, self._full_ar(jnp.zeros_like(input_mask), n), self.expert.suffix_len(horizon)
    )
    return cache, full_input, jnp.sum(full_input, axis=1)

  def velocity(self, cache, prefix_valid, next_position, x_t, t, state=None):
    """One flow-matching evaluation against `prefix_cache`'s cache: x_t [B,H,D], t [B] -> [B,H,D]."""
    return self.expert(cache, prefix_valid, next_position, x_t, t, state)

  def _prefix_into_cache(self, x, full_input, full_ar, extra_slots: int):
    """x [B,P,E] -> (hidden [B,P,E], KV cache of P + extra_slots slots holding the prefix)."""
    seq_len = x.shape[1]
    attn_mask = jnp.pad(masks.prefix_lm_mask(full_input, full_ar), ((0, 0), (0, 0), (0, extra_slots)))
    cache = self.llm.init_cache(x.shape[0], seq_len + extra_slots)
    return self.llm(
      x,
      masks.positions_from_mask(full_input),
      attn_mask,
      cache,
      0,
      prefix=full_input & (jnp.cumsum(full_ar, axis=1) == 0),
    )

  def prefill(self, images, tokens, input_mask, cache_size):
    """Runs the prefix (image + right-padded prompt) into a fresh KV cache of `cache_size` slots.

    Returns (logits [B,V] at each row's last real prompt token, cache, next_position [B]).
    """
    x, n = self.embed_inputs(images, tokens)
    full_input = _prepend(input_mask, n, True)
    hidden, cache = self._prefix_into_cache(
      x, full_input, self._full_ar(jnp.zeros_like(input_mask), n), cache_size - full_input.shape[1]
    )
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


class MlpProjector(nn.Module):
  """Prismatic's "fused-gelu-mlp": z [B,N,F] -> fc1 (hidden) -> GELU -> fc2 (E) -> GELU -> fc3 (E)."""

  hidden: int
  width: int
  dtype: str = "float32"

  @nn.compact
  def __call__(self, z):
    h = nn.gelu(nn.Dense(self.hidden, dtype=self.dtype, name="fc1")(z), approximate=False)
    h = nn.gelu(nn.Dense(self.width, dtype=self.dtype, name="fc2")(h), approximate=False)
    return nn.Dense(self.width, dtype=self.dtype, name="fc3")(h)


def _prepend(mask, n, value):
  """mask [B,T] -> [B,n+T] with `value` in the first n columns."""
  return jnp.concatenate([jnp.full((mask.shape[0], n), value, bool), mask.astype(bool)], axis=1)


def from_config(model_config) -> VLA:
  """config.model -> the VLA. Every field is read as an attribute (a saved config from an older run is
  read through config_schema.upgrade first, which fills the fields it lacks)."""
  return VLA(
    img_config=dict(model_config.img),
    llm_config=dict(model_config.llm),
    dual_encoder=model_config.dual_encoder,
    dtype=model_config.dtype,
    param_dtype=model_config.param_dtype,
    frozen_dtype=model_config.frozen_dtype,
    remat_policy=model_config.remat_policy,
    expert_config=expert_config(model_config),
    fused_img_config=dict(model_config.fused_img) if model_config.fused_img else None,
    dual_mode=model_config.dual_mode,
    projector_type=model_config.projector,
    image_after_bos=model_config.image_after_bos,
    causal_prefix=model_config.causal_prefix,
  )


def expert_config(model_config) -> dict | None:
  """config.model.action_expert -> the VLA's expert_config (None unless its width is set)."""
  e = model_config.action_expert
  if not e.width:
    return None
  if not e.action_dim:
    raise ValueError(
      "config.model.action_expert.action_dim is 0: it is resolved from the data at "
      "training time (train.py) and stored in the run's config"
    )
  return dict(width=e.width, mlp_dim=e.mlp_dim, action_dim=e.action_dim, state_dim=e.state_dim if e.use_state else 0)


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
    state = jnp.zeros((1, e["state_dim"]), jnp.float32) if e["state_dim"] else None
    params = jax.jit(
      lambda r: single.init(r, images, tokens, mask, mask, x_t, jnp.ones((1,)), state, method=VLA.flow_forward)
    )(rng)["params"]
  else:
    params = jax.jit(single.init)(rng, images, tokens, mask, mask)["params"]
  return finish_params(model, params)


def finish_params(model: VLA, single_params):
  """Single-tower float32 params (fresh or imported) -> the model's params: dual-encoder split if
  configured, then each part cast to its storage dtype."""
  params = make_dual(single_params, model.dual_mode) if model.dual_encoder else dict(single_params)
  return {
    k: jax.tree.map(lambda x, k=k: x.astype(model.frozen_dtype if k in FROZEN_PARTS else model.param_dtype), v)
    for k, v in params.items()
  }


FROZEN_PARTS = ("img_frozen", "img_fused_frozen")  # no gradient, no optimizer state (training/optimizer.py)


def make_dual(params, mode: str = "copy"):
  """Single-model params -> dual-encoder params. "copy": img_frozen = img (img_fused_frozen =
  img_fused), the projector's first kernel [F,E] -> [2F,E] as [W/2; W/2], so that
  [phi_f | phi_t] W' = phi W while the copies are equal. "split": the fused tower becomes the frozen
  one (img_fused -> img_frozen), nothing else changes (same function)."""
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


def num_image_tokens(model_config) -> int:
  """Image positions in the sequence: (image_size / patch_size)^2 patch tokens."""
  return (model_config.image_size // model_config.img.patch_size) ** 2


def count_params(params) -> int:
  return int(sum(np.prod(x.shape) for x in jax.tree.leaves(params)))
