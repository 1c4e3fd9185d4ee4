"""config.model -> the model: the one place where config fields become model parts.

img, fused_img                  -> encoders.Encoder towers (single, or Prismatic's fused pair)
dual_encoder, dual_mode         -> Encoder.dual (None | "copy" | "split")
projector                       -> projector kind
image_after_bos, causal_prefix  -> prefix_lm.Layout
action_expert (width > 0)       -> pi0.Pi0 instead of prefix_lm.PrefixLM
attention_impl, decode_attention -> the towers' and decoders' attention (models/attention.py), checked here
num_cameras                     -> no model part (the model reads the cameras from the images' shape):
                                   the image token count of FLOP / memory accounting (num_image_tokens)
"""

import dataclasses
from typing import Any

from genvla_jax.models import attention, encoders, gemma, pi0, prefix_lm, vit


def vla(
  img: dict[str, Any],
  llm: dict[str, Any],
  *,
  fused_img: dict[str, Any] | None = None,
  dual: str | None = None,
  projector: str = "linear",
  layout: prefix_lm.Layout = prefix_lm.LAYOUTS["paligemma"],
  expert: dict[str, Any] | None = None,
  **options,
) -> prefix_lm.PrefixLM:
  """A model from its parts: towers (one, or two fused), dual encoder mode, projector, layout, and an action
  expert (π0) or none. `options`: dtype, param_dtype, frozen_dtype, remat_policy, scan_unroll, projector_hidden,
  attention_impl, decode_attention (a choice this backend, dtype or architecture cannot run is refused here:
  `check_attention`)."""
  encoder = make_encoder(img, fused_img, dual)
  check_attention(encoder, llm, **options)
  parts = dict(
    encoder=encoder,
    llm_config=dict(llm),
    projector_kind=projector,
    layout=layout,
    **options,
  )
  return pi0.Pi0(**parts, expert_config=expert) if expert else prefix_lm.PrefixLM(**parts)


def make_encoder(img: dict[str, Any], fused_img: dict[str, Any] | None = None, dual: str | None = None):
  """The image encoder: the tower `img`, fused with `fused_img` when given (Prismatic), and its dual mode."""
  towers = encoders.fused(dict(img), dict(fused_img)) if fused_img else encoders.single(dict(img))
  return encoders.Encoder(towers, dual)


def encoder(model_config) -> encoders.Encoder:
  """config.model's image encoder: its towers (img, and fused_img if set) and dual encoder mode."""
  return make_encoder(model_config.img, model_config.fused_img, dual_mode(model_config))


def dual_mode(model_config) -> str | None:
  """config.model's dual encoder mode (encoders.DUAL), None without the dual encoder."""
  return model_config.dual_mode if model_config.dual_encoder else None


def from_config(model_config) -> prefix_lm.PrefixLM:
  """config.model -> the model. Every field is read as an attribute (a saved config from an older run is read
  through config_schema.upgrade first, which fills the fields it lacks)."""
  return vla(
    model_config.img,
    model_config.llm,
    fused_img=model_config.fused_img,
    dual=dual_mode(model_config),
    projector=model_config.projector,
    layout=prefix_lm.Layout(model_config.image_after_bos, model_config.causal_prefix),
    expert=expert_config(model_config),
    dtype=model_config.dtype,
    param_dtype=model_config.param_dtype,
    frozen_dtype=model_config.frozen_dtype,
    remat_policy=model_config.remat_policy,
    scan_unroll=model_config.scan_unroll,
    attention_impl=model_config.attention_impl,
    decode_attention=model_config.decode_attention,
  )


def check_attention(encoder, llm, attention_impl="xla", decode_attention="xla", dtype="float32", **_):
  """Refuses (ValueError naming the field, a line per problem) attention switches this model cannot run here:
  `attention_problems_of`."""
  found = attention_problems_of(encoder, llm, attention_impl, decode_attention, dtype)
  if found:
    raise ValueError("\n".join(found))


def attention_problems_of(encoder, llm, attention_impl: str, decode_attention: str, dtype: str) -> list[str]:
  """The attention switches against this model's towers and decoder, dtype and backend, one line each: an unknown
  name, cuDNN off an NVIDIA GPU / in float32 / with an unsupported head dim, jax.nn.dot_product_attention with
  soft-capped logits (models/attention.py problems)."""
  llm = gemma.options(llm)
  head_dims = [llm["head_dim"]] + [t["width"] // t["num_heads"] for t in (vit.options(t.vit) for t in encoder.built())]
  softcap = llm["attn_logits_softcap"] is not None
  return attention.problems(attention_impl, decode_attention, dtype, head_dims, softcap)


def attention_problems(model_config) -> list[str]:
  """config.model's attention switches (attention_problems_of), one line each: for the trainer's checks before
  any data is prepared."""
  m = model_config
  return attention_problems_of(encoder(m), m.llm, m.attention_impl, m.decode_attention, m.dtype)


def expert_config(model_config) -> dict | None:
  """config.model.action_expert -> Pi0's expert_config (None unless its width is set)."""
  e = model_config.action_expert
  if not e.width:
    return None
  if not e.action_dim:
    raise ValueError(
      "config.model.action_expert.action_dim is 0: it is resolved from the data at "
      "training time (train.py) and stored in the run's config"
    )
  return dict(width=e.width, mlp_dim=e.mlp_dim, action_dim=e.action_dim, state_dim=e.state_dim if e.use_state else 0)


def for_decoding(model: prefix_lm.PrefixLM, unroll: int | None = None) -> prefix_lm.PrefixLM:
  """The same model (same parameter tree) with the decoder's layer scan unrolled (`unroll` layers per
  iteration; default all). A scanned stack slices each layer's weights out of the stacked arrays at run
  time; in a memory-bound decode step unrolling lets every weight be read once, in place."""
  unroll = model.llm_config["depth"] if unroll is None else unroll
  return dataclasses.replace(model, llm_config=dict(model.llm_config, scan_unroll=unroll), parent=None)


def num_cameras(model_config) -> int:
  """Cameras per observation the model sees (config.model.num_cameras): each adds its image tokens."""
  return int(model_config.num_cameras)


def tokens_per_camera(model_config) -> int:
  """Image tokens of one config.model.image_size square camera frame (Encoder.num_tokens)."""
  return encoder(model_config).num_tokens(model_config.image_size, model_config.image_size)


def num_image_tokens(model_config) -> int:
  """Image positions in the sequence: every camera's tokens (num_cameras x tokens_per_camera)."""
  return num_cameras(model_config) * tokens_per_camera(model_config)
