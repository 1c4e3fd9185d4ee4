"""OpenVLA on Prismatic's layout: the fused model's logits against a composition of transformers
references (Dinov2WithRegistersModel + SiglipVisionModel -> fused-gelu-mlp -> LlamaForCausalLM with
[BOS][image][text]); the dual encoder's two modes; the demo configs trained end to end."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import transformers
from safetensors.torch import save_file

from conftest import tiny_config
from genvla_jax import train
from genvla_jax.inference import policy as policy_lib
from genvla_jax.models import build, prefix_lm, surgery
from genvla_jax.pretrained import hf, mapping
from genvla_jax.training import optimizer
import tolerances

SIZE, PATCH = 28, 7
DINO = dict(
  patch_size=PATCH,
  width=32,
  depth=2,
  mlp_dim=128,
  num_heads=4,
  cls_token=True,
  num_registers=2,
  layer_scale=True,
  mlp_activation="gelu",
  pixel_norm="imagenet",
  final_norm=False,
)
SIGLIP = dict(patch_size=PATCH, width=24, depth=2, mlp_dim=40, num_heads=2, final_norm=False)
LLAMA = dict(
  vocab_size=80,
  width=48,
  depth=2,
  mlp_dim=96,
  num_heads=4,
  num_kv_heads=4,
  head_dim=12,
  norm_offset=0.0,
  norm_eps=1e-5,
  activation="silu",
  scale_embeddings=False,
  tie_embeddings=False,
)
# ours vs transformers, single vs dual: the same float32 math summed in other orders, eps * sqrt(n) relative to
# max|logit|, n the terms along the chain of reductions: patch, both towers (16 patches + CLS + 2 registers),
# the 3-layer projector, Llama over [BOS][16 image][5 text] positions, the logits
FORWARD_TERMS = (
  PATCH**2 * 3
  + tolerances.transformer_terms(DINO, 19)
  + tolerances.transformer_terms(SIGLIP, 16)
  + 3 * (DINO["width"] + SIGLIP["width"])
  + tolerances.transformer_terms(LLAMA, 22)
  + LLAMA["width"]
)
LOGITS_RTOL = tolerances.float_tol(np.float32, FORWARD_TERMS)[0]


def _model(**kw):
  return build.vla(
    DINO,
    LLAMA,
    fused_img=SIGLIP,
    projector="mlp3",
    layout=prefix_lm.LAYOUTS["prismatic"],
    **kw,
  )


def _references(tmp_path):
  torch.manual_seed(0)
  dino = transformers.Dinov2WithRegistersModel(
    transformers.Dinov2WithRegistersConfig(
      hidden_size=32,
      num_hidden_layers=3,
      num_attention_heads=4,
      mlp_ratio=4,
      image_size=SIZE,
      patch_size=PATCH,
      num_register_tokens=2,
      layer_norm_eps=1e-6,
    )
  ).eval()
  siglip = transformers.SiglipVisionModel(
    transformers.SiglipVisionConfig(
      hidden_size=24,
      intermediate_size=40,
      num_hidden_layers=3,
      num_attention_heads=2,
      image_size=SIZE,
      patch_size=PATCH,
    )
  ).eval()
  llama = transformers.LlamaForCausalLM(
    transformers.LlamaConfig(
      vocab_size=80,
      hidden_size=48,
      intermediate_size=96,
      num_hidden_layers=2,
      num_attention_heads=4,
      num_key_value_heads=4,
      rms_norm_eps=1e-5,
      tie_word_embeddings=False,
    )
  ).eval()
  fused = 32 + 24
  projector = torch.nn.ModuleDict(
    {"fc1": torch.nn.Linear(fused, 4 * fused), "fc2": torch.nn.Linear(4 * fused, 48), "fc3": torch.nn.Linear(48, 48)}
  )
  with torch.no_grad():
    for module in (dino, siglip, llama):
      for name, p in module.named_parameters():
        if "lambda1" in name or ("norm" in name and name.endswith("weight")):
          p.uniform_(0.5, 1.5)
  tensors = {f"dino.{k}": v for k, v in dino.state_dict().items() if "mask_token" not in k}
  tensors.update({f"vision_model.{k}": v for k, v in siglip.state_dict().items()})
  tensors.update(llama.state_dict())
  tensors.update({f"projector.{k}": v for k, v in projector.state_dict().items()})
  (tmp_path / "prismatic").mkdir()
  save_file({k: v.contiguous() for k, v in tensors.items()}, str(tmp_path / "prismatic" / "model.safetensors"))
  return dino, siglip, llama, projector


def _reference_logits(refs, images01, tokens):
  """Prismatic's forward, composed from the references: penultimate-block patch features of both towers
  (DINOv2 on ImageNet-normalized pixels, SigLIP on [-1,1]), fused-gelu-mlp, [BOS][image][text]."""
  dino, siglip, llama, projector = refs
  x = torch.from_numpy(images01.transpose(0, 3, 1, 2))
  mean, std = torch.tensor([0.485, 0.456, 0.406])[:, None, None], torch.tensor([0.229, 0.224, 0.225])[:, None, None]
  with torch.no_grad():
    f_dino = dino((x - mean) / std, output_hidden_states=True).hidden_states[-2][:, 1 + 2 :]
    f_siglip = siglip(x * 2 - 1, output_hidden_states=True).hidden_states[-2]
    z = torch.cat([f_dino, f_siglip], dim=-1)
    gelu = torch.nn.functional.gelu
    img = projector["fc3"](gelu(projector["fc2"](gelu(projector["fc1"](z)))))
    text = llama.model.embed_tokens(torch.from_numpy(tokens).long())
    embeds = torch.cat([text[:, :1], img, text[:, 1:]], dim=1)
    logits = llama(inputs_embeds=embeds).logits.numpy()
  n = img.shape[1]
  return np.concatenate([logits[:, :1], logits[:, n + 1 :]], axis=1)


def test_fused_model_matches_a_composition_of_transformers_references(tmp_path):
  refs = _references(tmp_path)
  model = _model()
  abstract = jax.eval_shape(lambda: surgery.init_params(model, jax.random.PRNGKey(0), SIZE))
  assert set(abstract) == {"img", "img_fused", "projector", "llm"}
  rules = (
    mapping.dinov2_rules("img", hf_prefix="dino.", registers=True, final_norm=False)
    + [r for r in mapping.vision_rules("img_fused") if "encoder_norm" not in r.ours]
    + mapping.MLP3_PROJECTOR_RULES
    + mapping.llama_rules()
  )
  params = hf.load_with_rules(str(tmp_path / "prismatic"), abstract, rules)
  rng = np.random.default_rng(0)
  images01 = rng.uniform(0, 1, (2, SIZE, SIZE, 3)).astype(np.float32)
  tokens = rng.integers(1, 80, (2, 6)).astype(np.int32)
  mask = np.ones_like(tokens, bool)
  ours = np.asarray(jax.jit(model.apply)({"params": params}, images01 * 2 - 1, tokens, mask, np.zeros_like(mask)))
  theirs = _reference_logits(refs, images01, tokens)
  assert ours.shape == theirs.shape == (2, 6, 80)
  assert np.abs(ours - theirs).max() / np.abs(theirs).max() < LOGITS_RTOL
  # PaliGemma's layout on the same weights (image first, bidirectional prefix) gives other logits
  other = dataclasses.replace(model, layout=prefix_lm.LAYOUTS["paligemma"])
  differs = np.asarray(jax.jit(other.apply)({"params": params}, images01 * 2 - 1, tokens, mask, np.zeros_like(mask)))
  assert np.abs(differs - theirs).max() / np.abs(theirs).max() > 1e-3


@pytest.mark.parametrize("mode", ["split", "copy"])
def test_dual_encoder_modes(mode):
  single, dual = _model(), _model(dual=mode)
  rng = jax.random.PRNGKey(1)
  p_single, p_dual = surgery.init_params(single, rng, SIZE), surgery.init_params(dual, rng, SIZE)
  expected = {
    "split": {"img", "img_frozen", "projector", "llm"},
    "copy": {"img", "img_fused", "img_frozen", "img_fused_frozen", "projector", "llm"},
  }[mode]
  assert set(p_dual) == expected
  if mode == "split":  # SigLIP itself is the frozen tower; DINOv2 trains
    jax.tree.map(np.testing.assert_array_equal, p_dual["img_frozen"], p_single["img_fused"])
  labels = optimizer.labels(p_dual)
  frozen = {k for k in labels if set(jax.tree.leaves(labels[k])) == {"frozen"}}
  assert frozen == expected & {"img_frozen", "img_fused_frozen"}
  images = np.random.default_rng(2).uniform(-1, 1, (1, SIZE, SIZE, 3)).astype(np.float32)
  tokens, mask = np.array([[1, 5, 9, 3]], np.int32), np.ones((1, 4), bool)
  a = jax.jit(single.apply)({"params": p_single}, images, tokens, mask, np.zeros_like(mask))
  b = jax.jit(dual.apply)({"params": p_dual}, images, tokens, mask, np.zeros_like(mask))
  # the dual model starts as the single one
  np.testing.assert_allclose(a, b, rtol=0, atol=LOGITS_RTOL * float(jnp.abs(a).max()))


@pytest.mark.parametrize("config_file", [pytest.param("openvla", marks=pytest.mark.slow), "openvla_plus"])
def test_demo_configs_train_and_act(tmp_path, demo_dir, cache_dir, config_file):
  config = tiny_config(demo_dir, cache_dir, "demo", config_file=config_file)
  config.train.steps = 3
  records = train.train(config, str(tmp_path / "run"), printer=lambda *a, **k: None)
  assert np.isfinite(records[-1]["loss"]) and records[-1]["robot_fraction"] == (
    0.5 if config_file == "openvla_plus" else 1.0
  )
  policy = policy_lib.Policy.from_workdir(str(tmp_path / "run"))
  assert ("img_frozen" in policy.params) == (config_file == "openvla_plus")
  from genvla_jax.data import demo

  image = demo.render(demo.random_scene(np.random.default_rng(5)))
  actions, valid = policy.act(image, "move to the red square")
  assert actions.shape == valid.shape == (1, 2) and valid.all() and np.isfinite(actions).all()


def _as_openvla_checkpoint(refs, out_dir):
  """The references written as OpenVLA's released files name them (timm featurizers with fused qkv and
  LayerScale `scale_factor`, projector fc1-3, language_model.*), plus a config.json."""
  import json

  dino, siglip, llama, projector = refs
  d, s = dino.state_dict(), siglip.state_dict()
  t = {}
  f = "vision_backbone.featurizer."
  pos = d["embeddings.position_embeddings"]
  t[f + "cls_token"] = d["embeddings.cls_token"] + pos[:, :1]  # timm reg models: no CLS position embedding
  t[f + "reg_token"] = d["embeddings.register_tokens"]
  t[f + "pos_embed"] = pos[:, 1:]
  t[f + "patch_embed.proj.weight"] = d["embeddings.patch_embeddings.projection.weight"]
  t[f + "patch_embed.proj.bias"] = d["embeddings.patch_embeddings.projection.bias"]
  for i in range(3):
    a, b = f"encoder.layer.{i}.", f"{f}blocks.{i}."
    for w in ("weight", "bias"):
      t[b + f"norm1.{w}"], t[b + f"norm2.{w}"] = d[a + f"norm1.{w}"], d[a + f"norm2.{w}"]
      t[b + f"attn.qkv.{w}"] = torch.cat([d[a + f"attention.{p}_proj.{w}"] for p in "qkv"])
      t[b + f"attn.proj.{w}"] = d[a + f"attention.o_proj.{w}"]
      t[b + f"mlp.fc1.{w}"], t[b + f"mlp.fc2.{w}"] = d[a + f"mlp.fc1.{w}"], d[a + f"mlp.fc2.{w}"]
    t[b + "ls1.gamma"], t[b + "ls2.scale_factor"] = d[a + "layer_scale1.lambda1"], d[a + "layer_scale2.lambda1"]
  f = "vision_backbone.fused_featurizer."
  t[f + "pos_embed"] = s["embeddings.position_embedding.weight"][None]
  t[f + "patch_embed.proj.weight"] = s["embeddings.patch_embedding.weight"]
  t[f + "patch_embed.proj.bias"] = s["embeddings.patch_embedding.bias"]
  for i in range(3):
    a, b = f"encoder.layers.{i}.", f"{f}blocks.{i}."
    for w in ("weight", "bias"):
      t[b + f"norm1.{w}"], t[b + f"norm2.{w}"] = s[a + f"layer_norm1.{w}"], s[a + f"layer_norm2.{w}"]
      t[b + f"attn.qkv.{w}"] = torch.cat([s[a + f"self_attn.{p}_proj.{w}"] for p in "qkv"])
      t[b + f"attn.proj.{w}"] = s[a + f"self_attn.out_proj.{w}"]
      t[b + f"mlp.fc1.{w}"], t[b + f"mlp.fc2.{w}"] = s[a + f"mlp.fc1.{w}"], s[a + f"mlp.fc2.{w}"]
  t.update({f"projector.{k}": v for k, v in projector.state_dict().items()})
  t.update({"language_model." + k: v for k, v in llama.state_dict().items()})
  out_dir.mkdir()
  save_file({k: v.contiguous() for k, v in t.items()}, str(out_dir / "model.safetensors"))
  text_config = dict(
    model_type="llama",
    vocab_size=80,
    hidden_size=48,
    intermediate_size=96,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=4,
    rms_norm_eps=1e-5,
  )
  with open(out_dir / "config.json", "w") as fh:
    json.dump(
      {
        "text_config": text_config,
        "image_sizes": [SIZE, SIZE],
        "timm_model_ids": ["vit_large_patch14_reg4_dinov2.lvd142m", "vit_so400m_patch14_siglip_224"],
      },
      fh,
    )


def test_openvla_checkpoint_import(tmp_path):
  from genvla_jax.pretrained import api, loading

  refs = _references(tmp_path)
  _as_openvla_checkpoint(refs, tmp_path / "openvla-tiny")
  path = str(tmp_path / "openvla-tiny")
  config = ml_collections_model_config()
  assert api.mismatches("openvla", path, config) == []
  config.llm.norm_eps = 1e-6
  assert api.mismatches("openvla", path, config) == ["model.llm.norm_eps: config 1e-06, checkpoint 1e-05"]
  rng = np.random.default_rng(3)
  images01 = rng.uniform(0, 1, (2, SIZE, SIZE, 3)).astype(np.float32)
  tokens = rng.integers(1, 80, (2, 6)).astype(np.int32)
  mask = np.ones_like(tokens, bool)
  theirs = _reference_logits(refs, images01, tokens)
  for model in (_model(), _model(dual="split")):  # OpenVLA, and OpenVLA+'s D
    params = api.load("openvla", path, model, SIZE)
    ours = np.asarray(jax.jit(model.apply)({"params": params}, images01 * 2 - 1, tokens, mask, np.zeros_like(mask)))
    assert np.abs(ours - theirs).max() / np.abs(theirs).max() < LOGITS_RTOL
  assert "img_frozen" in params and "img_fused" not in params
  import os
  from safetensors.numpy import load_file, save_file as save_np

  file = os.path.join(path, "model.safetensors")
  tensors = load_file(file)
  tensors["vision_backbone.fused_featurizer.blocks.1.attn.qkv.weight"] = np.zeros((70, 24), np.float32)
  save_np(tensors, file)
  with pytest.raises(loading.CheckpointError, match=r"fused_featurizer.blocks.1.attn.qkv.weight"):
    api.load("openvla", path, _model(), SIZE)


def ml_collections_model_config():
  import ml_collections

  return ml_collections.ConfigDict(dict(image_size=SIZE, img=dict(DINO), fused_img=dict(SIGLIP), llm=dict(LLAMA)))
