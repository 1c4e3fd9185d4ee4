"""PaliGemma parity: weights imported from HF safetensors and big_vision npz compute what the reference
`transformers` PaliGemmaForConditionalGeneration computes (logits, greedy continuations), cached decoding
equals the full forward pass, export round-trips, and bad checkpoints fail naming the tensor."""

import json
import os
import shutil
import subprocess
import sys

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from safetensors.numpy import load_file, save_file
import torch
from transformers import PaliGemmaForConditionalGeneration

import paligemma_reference as ref
from genvla_jax.inference import decode
from genvla_jax.models import build, prefix_lm
from genvla_jax.pretrained import api, hf
from genvla_jax.pretrained.loading import CheckpointError
from genvla_jax.tools import logits as logits_tool
import tolerances

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# ours vs transformers, cached vs full, dual vs single: the same float32 math summed in other orders, eps * sqrt(n)
# relative to max|logit|, n the terms along the chain of reductions: patch, vision tower, projector, the deepest
# language model over the image + <= 14 text positions, the logits (ref.build's sizes)
_VISION, _TEXT = dict(width=32, depth=2, mlp_dim=64, num_heads=2), dict(width=64, mlp_dim=128, head_dim=16)
LOGITS_RTOL = tolerances.float_tol(
  np.float32,
  (
    ref.PATCH**2 * 3
    + tolerances.transformer_terms(_VISION, ref.NUM_IMAGE_TOKENS)
    + _VISION["width"]
    + tolerances.transformer_terms(
      dict(_TEXT, depth=max(v.layers for v in ref.VARIANTS.values())), ref.NUM_IMAGE_TOKENS + 14
    )
    + _TEXT["width"]
  ),
)[0]


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
  """variant name -> (reference torch model, HF dir with several shards, big_vision npz path)."""
  cache = {}

  def get(name):
    if name not in cache:
      variant = ref.VARIANTS[name]
      model = ref.build(variant)
      root = tmp_path_factory.mktemp(name)
      model.save_pretrained(str(root / "hf"), max_shard_size="60KB")
      ref.big_vision_npz(model, variant, str(root / "bv.npz"))
      cache[name] = (model, str(root / "hf"), str(root / "bv.npz"))
    return cache[name]

  return get


def load_ours(fmt, path, arch="", **model_kwargs):
  config = logits_tool.resolve_architecture(fmt, path, arch)
  model = build.vla(config["img"], config["llm"], **model_kwargs)
  return model, api.load(fmt, path, model, config["image_size"]), config


def window_override(name):
  window = ref.VARIANTS[name].sliding_window
  return json.dumps({"llm": {"sliding_window": window}}) if window else ""


def assert_logits_close(ours, theirs):
  scale = np.abs(theirs).max()
  assert ours.shape == theirs.shape
  assert np.abs(ours - theirs).max() <= LOGITS_RTOL * scale, np.abs(ours - theirs).max() / scale


@pytest.mark.parametrize("name", list(ref.VARIANTS))
def test_hf_import_logits_match_transformers(checkpoints, name):
  torch_model, hf_dir, _ = checkpoints(name)
  assert len([f for f in os.listdir(hf_dir) if f.endswith(".safetensors")]) >= 3
  images, tokens, prefix_len = ref.inputs(batch=3, text_len=12)
  model, params, _ = load_ours("hf", hf_dir)
  ours = logits_tool.compute_logits(model, params, images, tokens, prefix_len)
  assert_logits_close(ours, ref.logits(torch_model, images, tokens, prefix_len))


@pytest.mark.parametrize("name", list(ref.VARIANTS))
def test_big_vision_import_logits_match_transformers(checkpoints, name):
  torch_model, _, npz = checkpoints(name)
  images, tokens, prefix_len = ref.inputs(batch=2, text_len=12, seed=1)
  model, params, config = load_ours("big_vision", npz, window_override(name))
  assert config == api.architecture("hf", checkpoints(name)[1]) | {"img": config["img"]}
  ours = logits_tool.compute_logits(model, params, images, tokens, prefix_len)
  assert_logits_close(ours, ref.logits(torch_model, images, tokens, prefix_len))


def test_big_vision_bfloat16_npz_loads_the_rounded_weights(checkpoints, tmp_path):
  torch_model, _, npz = checkpoints("gemma1_mqa")
  ref.big_vision_npz(
    torch_model,
    ref.VARIANTS["gemma1_mqa"],
    str(tmp_path / "bf16.npz"),
    dtype=__import__("ml_dtypes").bfloat16,
    prefix="",
  )
  with np.load(tmp_path / "bf16.npz") as f:  # np.savez stores bfloat16 as 2-byte void
    assert f["llm/final_norm/scale"].dtype.kind == "V"
  _, full, _ = load_ours("big_vision", npz)
  _, half, _ = load_ours("big_vision", str(tmp_path / "bf16.npz"))
  for a, b in zip(jax.tree.leaves(full), jax.tree.leaves(half)):
    np.testing.assert_array_equal(ref.bf16_round(a), np.asarray(b))


@pytest.mark.parametrize("name", ["gemma1_mqa", "gemma2_gqa"])
def test_greedy_continuation_matches_transformers_generate(checkpoints, name):
  torch_model, hf_dir, _ = checkpoints(name)
  images, tokens, _ = ref.inputs(batch=2, text_len=9, seed=2)
  prompt_len = np.array([6, 9])
  steps = 8
  model, params, _ = load_ours("hf", hf_dir)
  input_mask = np.arange(9)[None] < prompt_len[:, None]
  decoder = decode.make_greedy_decoder(model, steps, eos_id=ref.EOS)
  ours = np.asarray(decoder(params, images, np.where(input_mask, tokens, 0), input_mask))
  for row in range(2):
    theirs = ref.greedy(torch_model, images[row], tokens[row, : prompt_len[row]], steps)
    assert ours[row, : len(theirs)].tolist() == theirs


@pytest.mark.parametrize("name", ["gemma1_mqa", "gemma2_gqa"])
def test_cached_decoding_equals_full_forward(checkpoints, name):
  """Teacher-forced prefill + decode_step logits == full forward logits, rows with different prompt
  lengths, through Gemma 2's sliding window (6 < image + prompt length)."""
  _, hf_dir, _ = checkpoints(name)
  model, params, _ = load_ours("hf", hf_dir)
  images, tokens, prefix_len = ref.inputs(batch=2, text_len=14, seed=3)
  batch, text_len = tokens.shape
  full = logits_tool.compute_logits(model, params, images, tokens, prefix_len)
  n, p = ref.NUM_IMAGE_TOKENS, int(prefix_len.max())
  steps = text_len - int(prefix_len.min())
  prompt_mask = np.arange(p)[None] < prefix_len[:, None]
  variables = {"params": params}
  prefill = jax.jit(lambda v, *a: model.apply(v, *a, n + p + steps, method=prefix_lm.PrefixLM.prefill))
  step = jax.jit(lambda v, *a: model.apply(v, *a, method=prefix_lm.PrefixLM.decode_step))
  logits, cache, next_pos = prefill(variables, images, np.where(prompt_mask, tokens[:, :p], 0), prompt_mask)
  valid = np.concatenate([np.ones((batch, n), bool), prompt_mask, np.zeros((batch, steps), bool)], 1)
  compared = 0
  for i in range(steps + 1):
    for b in range(batch):
      t = prefix_len[b] - 1 + i
      if t < text_len:
        np.testing.assert_allclose(logits[b], full[b, t], rtol=0, atol=LOGITS_RTOL * np.abs(full).max())
        compared += 1
    if i == steps:
      break
    idx = np.minimum(prefix_len + i, text_len - 1)
    valid[:, n + p + i] = True
    logits, cache = step(
      variables, jnp.asarray(tokens[np.arange(batch), idx])[:, None], (next_pos + i)[:, None], cache, n + p + i, valid
    )
  assert compared == sum(text_len - prefix_len + 1)


def test_dual_encoder_import_initialises_both_towers(checkpoints):
  _, hf_dir, _ = checkpoints("gemma2_gqa")
  single, single_params, _ = load_ours("hf", hf_dir)
  dual, dual_params, _ = load_ours("hf", hf_dir, dual="copy")
  for a, b in zip(jax.tree.leaves(dual_params["img"]), jax.tree.leaves(dual_params["img_frozen"])):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
  images, tokens, prefix_len = ref.inputs(batch=2, text_len=8, seed=4)
  want = logits_tool.compute_logits(single, single_params, images, tokens, prefix_len)
  np.testing.assert_allclose(
    logits_tool.compute_logits(dual, dual_params, images, tokens, prefix_len),
    want,
    rtol=0,
    atol=LOGITS_RTOL * np.abs(want).max(),
  )


def test_import_casts_to_param_dtype_and_frozen_dtype(checkpoints):
  _, hf_dir, _ = checkpoints("gemma1_mqa")
  _, params, _ = load_ours("hf", hf_dir, dual="copy", param_dtype="bfloat16", frozen_dtype="bfloat16")
  assert {x.dtype for x in jax.tree.leaves(params)} == {jnp.dtype("bfloat16")}


def test_export_round_trips_through_transformers(checkpoints, tmp_path):
  torch_model, hf_dir, _ = checkpoints("gemma2_gqa")
  model, params, config = load_ours("hf", hf_dir, window_override("gemma2_gqa"))
  out = tmp_path / "export"
  hf.export(params, ml_collections.ConfigDict(config), str(out), max_shard_bytes=50_000)
  assert len([f for f in os.listdir(out) if f.endswith(".safetensors")]) > 2
  reloaded = PaliGemmaForConditionalGeneration.from_pretrained(str(out)).eval()
  expected = torch_model.state_dict()
  got = reloaded.state_dict()
  assert set(got) == set(expected)
  for key, value in expected.items():
    torch.testing.assert_close(got[key], value, rtol=0, atol=0, msg=key)
  images, tokens, prefix_len = ref.inputs(batch=2, text_len=10, seed=5)
  # bit-identical weights (above) through the same torch code: bit-identical logits
  np.testing.assert_array_equal(
    ref.logits(reloaded, images, tokens, prefix_len), ref.logits(torch_model, images, tokens, prefix_len)
  )

  hf.export(params, ml_collections.ConfigDict(config), str(tmp_path / "bf16"), dtype="bfloat16")
  half = PaliGemmaForConditionalGeneration.from_pretrained(str(tmp_path / "bf16"), dtype=torch.bfloat16)
  for key, value in half.state_dict().items():
    np.testing.assert_array_equal(value.float().numpy(), ref.bf16_round(expected[key].numpy()), err_msg=key)


def test_export_tool_single_tower_of_a_dual_model(checkpoints):
  from genvla_jax.tools import export_hf

  _, hf_dir, _ = checkpoints("gemma1_mqa")
  _, single, _ = load_ours("hf", hf_dir)
  _, dual, _ = load_ours("hf", hf_dir, dual="copy")
  for tower in ("trained", "frozen"):
    back = export_hf.single_tower(dual, tower)
    assert set(back) == set(single)
    for a, b in zip(jax.tree.leaves(back), jax.tree.leaves(single)):
      np.testing.assert_array_equal(np.asarray(a), np.asarray(b))  # copies; the projector half x 2: exact
  with pytest.raises(ValueError, match="dual-encoder"):
    hf.export(dual, None, "/tmp/never")


# ---- bad checkpoints: a clear error naming the culprit, never a random parameter ----


def _copy(hf_dir, tmp_path):
  return shutil.copytree(hf_dir, tmp_path / "ckpt")


def _shard_with(directory, tensor):
  with open(os.path.join(directory, "model.safetensors.index.json")) as f:
    return os.path.join(directory, json.load(f)["weight_map"][tensor])


def test_truncated_shard_names_the_tensors(checkpoints, tmp_path):
  d = _copy(checkpoints("gemma1_mqa")[1], tmp_path)
  shard = _shard_with(d, "language_model.model.embed_tokens.weight")
  with open(shard, "rb") as f:
    header = json.loads(f.read(int.from_bytes(f.read(8), "little")))
  last = max((k for k in header if k != "__metadata__"), key=lambda k: header[k]["data_offsets"][1])
  with open(shard, "r+b") as f:
    f.truncate(os.path.getsize(shard) - 4)
  with pytest.raises(CheckpointError, match=rf"truncated tensors: \['{last}'\]"):
    load_ours("hf", str(d))


def test_corrupt_header_names_the_file(checkpoints, tmp_path):
  d = _copy(checkpoints("gemma1_mqa")[1], tmp_path)
  shard = _shard_with(d, "language_model.model.norm.weight")
  with open(shard, "r+b") as f:
    f.seek(9)
    f.write(b"\x00garbage\x00" * 4)
  with pytest.raises(CheckpointError, match=os.path.basename(shard)):
    load_ours("hf", str(d))


@pytest.mark.parametrize(
  "change, message",
  [
    ("missing", r"'llm.layers.1.mlp.down_proj.weight' missing"),
    (
      "misshaped",
      r"language_model.model.layers.1.mlp.down_proj.weight \(model-.*safetensors\).*gives shape \(96, 64\)",
    ),
    ("nan", r"layers.1.mlp.down_proj.weight.*non-finite"),
  ],
)
def test_bad_tensor_names_the_tensor(checkpoints, tmp_path, change, message):
  d = _copy(checkpoints("gemma1_mqa")[1], tmp_path)
  name = "language_model.model.layers.1.mlp.down_proj.weight"
  shard = _shard_with(d, name)
  tensors = load_file(shard)
  if change == "missing":
    del tensors[name]
  elif change == "misshaped":
    tensors[name] = tensors[name][:, :96]
  else:
    tensors[name][3, 5] = np.nan
  save_file(tensors, shard, metadata={"format": "pt"})
  with pytest.raises(CheckpointError, match=message):
    load_ours("hf", str(d))


def test_bad_big_vision_npz(checkpoints, tmp_path):
  _, _, npz = checkpoints("gemma1_mqa")
  truncated = tmp_path / "truncated.npz"
  data = open(npz, "rb").read()
  truncated.write_bytes(data[: len(data) // 2])
  with pytest.raises(CheckpointError, match="truncated.npz"):
    load_ours("big_vision", str(truncated))
  with np.load(npz) as f:
    arrays = {k: f[k] for k in f.files if k != "params/llm/layers/mlp/linear"}
  np.savez(tmp_path / "missing.npz", **arrays)
  with pytest.raises(CheckpointError, match="llm/layers/mlp/linear"):
    load_ours("big_vision", str(tmp_path / "missing.npz"))


def test_config_checkpoint_mismatch_is_listed(checkpoints):
  _, hf_dir, _ = checkpoints("gemma2_gqa")
  config = ml_collections.ConfigDict(dict(api.architecture("hf", hf_dir)))
  assert api.mismatches("hf", hf_dir, config) == []
  config.llm.num_kv_heads = 1
  config.image_size = 64
  assert api.mismatches("hf", hf_dir, config) == [
    "model.image_size: config 64, checkpoint 32",
    "model.llm.num_kv_heads: config 1, checkpoint 2",
  ]


# ---- CLIs ----


def test_logits_cli_on_big_vision_checkpoint(checkpoints, tmp_path):
  torch_model, _, npz = checkpoints("gemma2_gqa")
  images, tokens, prefix_len = ref.inputs(batch=3, text_len=11, seed=6)
  np.savez(tmp_path / "in.npz", images=images, tokens=tokens, prefix_len=prefix_len)
  env = dict(os.environ, PYTHONPATH=ROOT, JAX_PLATFORMS="cpu", XLA_FLAGS="")
  subprocess.run(
    [
      sys.executable,
      "-m",
      "genvla_jax.tools.logits",
      f"--checkpoint={npz}",
      "--format=big_vision",
      f"--inputs={tmp_path / 'in.npz'}",
      f"--out={tmp_path / 'out.npy'}",
      f"--arch={window_override('gemma2_gqa')}",
      "--batch_size=2",
    ],
    check=True,
    env=env,
    cwd=ROOT,
    capture_output=True,
  )
  assert_logits_close(np.load(tmp_path / "out.npy"), ref.logits(torch_model, images, tokens, prefix_len))


def test_logits_tool_rejects_wrong_image_size(checkpoints, tmp_path):
  _, hf_dir, _ = checkpoints("gemma1_mqa")
  np.savez(
    tmp_path / "in.npz",
    images=np.zeros((1, 64, 64, 3), np.float32),
    tokens=np.ones((1, 4), np.int32),
    prefix_len=np.array([2]),
  )
  with pytest.raises(ValueError, match=r"images have shape \(1, 64, 64, 3\)"):
    logits_tool.run(hf_dir, "hf", str(tmp_path / "in.npz"), str(tmp_path / "out.npy"))
