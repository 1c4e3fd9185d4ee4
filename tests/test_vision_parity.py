"""The ViT tower's DINOv2 options against transformers' Dinov2Model / Dinov2WithRegistersModel (random
tiny models, float32), imported through mapping.dinov2_rules; the Prismatic cut (penultimate block,
no final norm) against transformers' hidden states."""

import flax.linen as nn  # noqa: F401
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import transformers
from safetensors.torch import save_file

from genvla_jax.models import vit
from genvla_jax.pretrained import hf, mapping
import tolerances

SIZE, PATCH, WIDTH, DEPTH = 28, 7, 32, 3
# ours vs transformers: the same float32 math summed in other orders: eps * sqrt(n) relative to max|output|, n the
# terms along the chain of reductions: the patch, DEPTH blocks (MLP <= 4 x WIDTH) over <= 16 + CLS + 2 registers
VIT_RTOL = tolerances.float_tol(
  np.float32,
  PATCH**2 * 3
  + tolerances.transformer_terms(
    dict(width=WIDTH, depth=DEPTH, mlp_dim=4 * WIDTH, num_heads=4), (SIZE // PATCH) ** 2 + 3
  ),
)[0]


PUBLISHED_NAMES = {
  "attention.q_proj.": "attention.attention.query.",
  "attention.k_proj.": "attention.attention.key.",
  "attention.v_proj.": "attention.attention.value.",
  "attention.o_proj.": "attention.output.dense.",
}


def _published(name: str) -> str:
  """transformers 5's in-memory name -> the name in the released facebook/dinov2-* files."""
  for new, old in PUBLISHED_NAMES.items():
    name = name.replace(new, old)
  return name


def _hf_dinov2(tmp_path, registers: int):
  torch.manual_seed(registers)
  common = dict(
    hidden_size=WIDTH,
    num_hidden_layers=DEPTH,
    num_attention_heads=4,
    mlp_ratio=4,
    image_size=SIZE,
    patch_size=PATCH,
    layer_norm_eps=1e-6,
    hidden_act="gelu",
  )
  if registers:
    model = transformers.Dinov2WithRegistersModel(
      transformers.Dinov2WithRegistersConfig(num_register_tokens=registers, **common)
    )
  else:
    model = transformers.Dinov2Model(transformers.Dinov2Config(**common))
  model.eval()
  with torch.no_grad():  # non-trivial layer scales, CLS / register tokens and norms
    for name, p in model.named_parameters():
      if "lambda1" in name or "norm" in name and name.endswith("weight"):
        p.uniform_(0.5, 1.5)
      elif "cls_token" in name or "register_tokens" in name or "position_embeddings" in name:
        p.normal_(0.0, 0.5)
  path = tmp_path / f"dinov2_{registers}"
  path.mkdir()
  # the registers model in transformers 5's names, the plain one as the published files name them
  rename = (lambda k: k) if registers else _published
  save_file(
    {rename(k): v.contiguous() for k, v in model.state_dict().items() if "mask_token" not in k},
    str(path / "model.safetensors"),
  )
  return model, path


def _ours(registers: int, depth: int = DEPTH, final_norm: bool = True) -> vit.ViT:
  return vit.ViT(
    patch_size=PATCH,
    width=WIDTH,
    depth=depth,
    mlp_dim=4 * WIDTH,
    num_heads=4,
    cls_token=True,
    num_registers=registers,
    layer_scale=True,
    mlp_activation="gelu",
    final_norm=final_norm,
  )


def _load(model, path, registers, final_norm=True):
  abstract = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), jnp.zeros((1, SIZE, SIZE, 3))))["params"]
  rules = mapping.dinov2_rules("img", registers=bool(registers), final_norm=final_norm)
  return hf.load_with_rules(str(path), {"img": abstract}, rules)["img"]


@pytest.mark.parametrize("registers", [0, 2])
def test_dinov2_matches_transformers(tmp_path, registers):
  reference, path = _hf_dinov2(tmp_path, registers)
  images = np.random.default_rng(0).standard_normal((2, SIZE, SIZE, 3)).astype(np.float32)
  with torch.no_grad():
    out = reference(torch.from_numpy(images.transpose(0, 3, 1, 2)), output_hidden_states=True)
  prefix = 1 + registers
  theirs = out.last_hidden_state.numpy()[:, prefix:]  # patch tokens after the final norm
  model = _ours(registers)
  ours = np.asarray(jax.jit(model.apply)({"params": _load(model, path, registers)}, images))
  assert ours.shape == theirs.shape == (2, (SIZE // PATCH) ** 2, WIDTH)
  assert np.abs(ours - theirs).max() / np.abs(theirs).max() < VIT_RTOL
  # Prismatic's cut: the output of the penultimate block, no final norm (hidden_states[-2])
  cut = _ours(registers, depth=DEPTH - 1, final_norm=False)
  ours_cut = np.asarray(jax.jit(cut.apply)({"params": _load(cut, path, registers, final_norm=False)}, images))
  theirs_cut = out.hidden_states[-2].numpy()[:, prefix:]
  assert np.abs(ours_cut - theirs_cut).max() / np.abs(theirs_cut).max() < VIT_RTOL
  # the CLS token (with its folded position embedding) matters: without it the outputs differ
  params = _load(model, path, registers)
  params["cls_token"] = jnp.zeros_like(params["cls_token"])
  changed = np.asarray(jax.jit(model.apply)({"params": params}, images))
  assert np.abs(changed - theirs).max() / np.abs(theirs).max() > 1e-3


def test_siglip_vision_model_matches_transformers(tmp_path):
  torch.manual_seed(1)
  cfg = transformers.SiglipVisionConfig(
    hidden_size=WIDTH,
    intermediate_size=72,
    num_hidden_layers=DEPTH,
    num_attention_heads=4,
    image_size=SIZE,
    patch_size=PATCH,
  )
  reference = transformers.SiglipVisionModel(cfg).eval()
  with torch.no_grad():
    for name, p in reference.named_parameters():
      if "norm" in name and name.endswith("weight"):
        p.uniform_(0.5, 1.5)
  (tmp_path / "siglip").mkdir()
  # the layout of the released google/siglip-* files: "vision_model." in front
  save_file(
    {"vision_model." + k: v.contiguous() for k, v in reference.state_dict().items()},
    str(tmp_path / "siglip" / "model.safetensors"),
  )
  images = np.random.default_rng(1).uniform(-1, 1, (2, SIZE, SIZE, 3)).astype(np.float32)
  with torch.no_grad():
    out = reference(torch.from_numpy(images.transpose(0, 3, 1, 2)), output_hidden_states=True)
  for depth, final_norm, theirs in ((DEPTH, True, out.last_hidden_state), (DEPTH - 1, False, out.hidden_states[-2])):
    model = vit.ViT(patch_size=PATCH, width=WIDTH, depth=depth, mlp_dim=72, num_heads=4, final_norm=final_norm)
    abstract = jax.eval_shape(lambda m=model: m.init(jax.random.PRNGKey(0), jnp.zeros((1, SIZE, SIZE, 3))))["params"]
    rules = [r for r in mapping.vision_rules("img") if final_norm or "encoder_norm" not in r.ours]
    params = hf.load_with_rules(str(tmp_path / "siglip"), {"img": abstract}, rules)["img"]
    ours = np.asarray(jax.jit(model.apply)({"params": params}, images))
    theirs = theirs.numpy()
    assert ours.shape == theirs.shape
    assert np.abs(ours - theirs).max() / np.abs(theirs).max() < VIT_RTOL
