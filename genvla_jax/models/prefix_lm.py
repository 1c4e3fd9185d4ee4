"""The prefix-LM VLA: image encoder -> projector -> decoder, with its sequence layout.

  images [B,C,H,W,3] --ImageTowers on [B*C,H,W,3]--> [B,C*P,F] --projector--> [B,N,E] --layout with text--> decoder

Cameras: images are [B,H,W,3] (one camera) or [B,C,H,W,3] (C cameras, in the order the config lists them)
with an optional image_mask [B,C] (False: that camera is missing in that row). `cameras` is the one place
that reads the camera axis. Every camera goes through the same towers (the same parameters; the dual
encoder's frozen + trained features per patch); their P tokens each are concatenated camera-major, N = C*P
(π0's prefix). A missing camera's tokens keep their positions (static shapes) but are not real tokens: its
pixels are zeroed and nothing attends to them, so the model computes what it computes without that camera.

Parameter tree (a plain nested dict; names fixed by the released checkpoints we import):
  img, img_fused, img_frozen, img_fused_frozen   the encoder's towers (encoders.py)
  projector                                      projector.py
  llm                                            the decoder (gemma.py: Gemma, or Llama 2 with its options)

Sequence layouts (Layout):
  PaliGemma   [N image tokens][T text tokens]; image and prompt attend bidirectionally (prefix-LM)
  Prismatic   [BOS][N image tokens][rest of the text]; every token causal
Logits are returned for the T text positions, in the order of `tokens`.
"""

import dataclasses
from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from genvla_jax.models import encoders, gemma, masks, pixels, projector


@dataclasses.dataclass(frozen=True)
class Layout:
  image_after_bos: bool = False  # [BOS][image][text] instead of [image][text]
  causal_prefix: bool = False  # image and prompt tokens attend causally too

  def join(self, img_BxNxE, text_BxTxE):
    """-> the decoder's input sequence [B,N+T,E] (also masks: [B,N], [B,T] -> [B,N+T])."""
    if self.image_after_bos:
      return jnp.concatenate([text_BxTxE[:, :1], img_BxNxE, text_BxTxE[:, 1:]], axis=1)
    return jnp.concatenate([img_BxNxE, text_BxTxE], axis=1)

  def text_hidden(self, hidden_BxSxE, n: int):
    """[B,N+T,E] -> the T text positions [B,T,E]."""
    if self.image_after_bos:
      return jnp.concatenate([hidden_BxSxE[:, :1], hidden_BxSxE[:, n + 1 :]], axis=1)
    return hidden_BxSxE[:, n:]

  def full_ar(self, ar_BxT, n: int):
    """Text ar mask [B,T] -> [B,N+T]: image tokens join the bidirectional prefix, or every token is causal.
    (The masks do not depend on where the image sits: BOS is always real and in the prefix.)"""
    full = prepend(ar_BxT, n, False)
    return jnp.ones_like(full) if self.causal_prefix else full


LAYOUTS = {"paligemma": Layout(), "prismatic": Layout(image_after_bos=True, causal_prefix=True)}


class PrefixLM(nn.Module):
  encoder: encoders.Encoder
  llm_config: dict[str, Any]  # gemma.Gemma keyword arguments
  projector_kind: str = "linear"  # a key of projector.PROJECTORS
  projector_hidden: int = 0  # mlp3's hidden width (0: 4 x the single model's feature width)
  layout: Layout = Layout()
  dtype: str = "float32"  # compute dtype
  param_dtype: str = "float32"  # storage dtype of trained parameters (surgery.finish_params)
  frozen_dtype: str = "float32"  # storage dtype of frozen towers
  remat_policy: str = "none"
  scan_unroll: int = 1  # layers per scan iteration, towers and decoder (config.model.scan_unroll)
  attention_impl: str = "xla"  # models/attention.py IMPLS: towers and decoder (config.model.attention_impl)
  decode_attention: str = "xla"  # models/attention.py DECODE_IMPLS: the decoder's one-token steps

  def setup(self):
    common = dict(dtype=self.dtype, remat_policy=self.remat_policy, attention_impl=self.attention_impl)
    self.towers = encoders.ImageTowers(self.encoder, **common, scan_unroll=self.scan_unroll)
    nn.share_scope(self, self.towers)  # tower parameters at the top of the tree (img/, img_frozen/, ...)
    hidden = self.projector_hidden or 4 * self.encoder.single().width
    self.projector = projector.make(self.projector_kind, self.llm_config["width"], hidden, self.dtype)
    llm_config = {"scan_unroll": self.scan_unroll, **self.llm_config}  # (build.for_decoding's own unroll wins)
    self.llm = gemma.Gemma(**llm_config, **common, decode_attention=self.decode_attention)

  def encode_images(self, images, image_mask=None):
    """images [B,H,W,3] or [B,C,H,W,3] (+ image_mask [B,C]; see `cameras`), float in [-1,1] or uint8 pixels
    (the training pipeline ships uint8: a quarter of the bytes, and the conversion runs on the accelerator)
    -> image tokens [B,N,E], N = C*P camera-major. A missing camera's pixels are zeroed (whatever they held)."""
    images, mask = cameras(images, image_mask)
    b, c = mask.shape
    unit = jnp.where(mask[:, :, None, None, None], pixels.to_unit_range(images), 0.0)
    features = self.towers(unit.reshape(b * c, *unit.shape[2:]))  # [B*C,P,F]: every camera, the same towers
    return self.projector(features.reshape(b, c * features.shape[1], features.shape[2]))

  def embed_inputs(self, images, tokens, input_mask, image_mask=None):
    """images, tokens [B,T], input_mask [B,T] -> (x [B,N+T,E], full_input [B,N+T] its real tokens, N)."""
    img = self.encode_images(images, image_mask)
    x = self.layout.join(img, self.llm.embed(tokens))
    return x, prefix_mask(self, images, input_mask, image_mask), img.shape[1]

  def __call__(self, images, tokens, input_mask, ar_mask, image_mask=None):
    """Full forward (training). tokens/input_mask/ar_mask [B,T] -> text logits [B,T,V] float32."""
    x, full_input, n = self.embed_inputs(images, tokens, input_mask, image_mask)
    full_ar = self.layout.full_ar(ar_mask, n)
    attn_mask = masks.prefix_lm_mask(full_input, full_ar)
    hidden, _ = self.llm(
      x, masks.positions_from_mask(full_input), attn_mask, prefix=full_input & (jnp.cumsum(full_ar, axis=1) == 0)
    )
    return self.llm.logits(self.layout.text_hidden(hidden, n))

  def prefix_into_cache(self, x, full_input, full_ar, extra_slots: int):
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

  def prefill(self, images, tokens, input_mask, cache_size, image_mask=None):
    """Runs the prefix (image + right-padded prompt) into a fresh KV cache of `cache_size` slots.

    Returns (logits [B,V] at each row's last real prompt token, cache, next_position [B]).
    """
    x, full_input, n = self.embed_inputs(images, tokens, input_mask, image_mask)
    hidden, cache = self.prefix_into_cache(
      x, full_input, self.layout.full_ar(jnp.zeros_like(input_mask), n), cache_size - full_input.shape[1]
    )
    last = full_input.shape[1] - 1 - jnp.argmax(full_input[:, ::-1], axis=1)  # [B] the last real prefix slot
    last_hidden = jnp.take_along_axis(hidden, last[:, None, None], axis=1)
    return self.llm.logits(last_hidden)[:, 0], cache, jnp.sum(full_input, axis=1)

  def decode_step(self, tokens, positions, cache, cache_index, cache_valid):
    """One cached step. tokens [B,1], positions [B,1], cache_valid [B,S] (slots a query may attend, this
    step's slot included) -> (logits [B,V], new cache)."""
    logits, cache = self.extend(tokens, positions, cache, cache_index, cache_valid[:, None, :])
    return logits[:, 0], cache

  def extend(self, tokens, positions, cache, cache_index, attn_mask):
    """K tokens at once into cache slots [cache_index, cache_index + K). tokens/positions [B,K], attn_mask
    [B,K,S] (per query: the slots it may attend) -> (logits [B,K,V], new cache)."""
    hidden, cache = self.llm(self.llm.embed(tokens), positions, attn_mask, cache, cache_index)
    return self.llm.logits(hidden), cache


def prepend(mask_BxT, n: int, value: bool):
  """mask [B,T] -> [B,n+T] with `value` in the first n columns."""
  return jnp.concatenate([jnp.full((mask_BxT.shape[0], n), value, bool), mask_BxT.astype(bool)], axis=1)


def cameras(images, image_mask=None):
  """The one reader of the camera axis: images [B,H,W,3] (one camera) or [B,C,H,W,3], image_mask [B,C] bool
  (False: that camera is missing in that row) or None (every camera present) -> (images [B,C,H,W,3],
  image_mask [B,C] bool)."""
  if images.ndim == 4:
    images = images[:, None]
  if images.ndim != 5 or images.shape[-1] != 3:
    raise ValueError(
      f"the image tower expects images [B,H,W,3] (one camera) or [B,C,H,W,3] (C cameras), got shape {images.shape}"
    )
  shape = images.shape[:2]
  if image_mask is None:
    return images, jnp.ones(shape, bool)
  image_mask = jnp.asarray(image_mask, bool)
  if image_mask.shape != shape:
    raise ValueError(
      f"image_mask must be [B,C] = {list(shape)} for images of shape {images.shape}, got {image_mask.shape}"
    )
  return images, image_mask


def prefix_mask(model: PrefixLM, images, input_mask, image_mask=None):
  """The prefix's real tokens [B,N+T] in the model's layout, from shapes and masks alone (no parameters): each
  camera's P image tokens take its image_mask entry, the text its input_mask. The decoders' cache masks
  start from it."""
  images, mask = cameras(images, image_mask)
  per_camera = model.encoder.num_tokens(images.shape[2], images.shape[3])
  return model.layout.join(jnp.repeat(mask, per_camera, axis=1), jnp.asarray(input_mask, bool))
