"""Full-size parameter counts, and training that starts from imported weights (sharded placement,
both towers initialised, mismatches refused)."""

import dataclasses

import jax
import numpy as np
import pytest

from genvla_jax.models import build, surgery
from genvla_jax.pretrained import hf
from genvla_jax.tools import param_count
from genvla_jax.training import optimizer, preflight, sharding, state as state_lib, trainer


def reference_count(backbone: str) -> int:
  """PaliGemma parameter count from the published hyper-parameters, written out by hand."""
  img, llm, image_size = param_count.config_lib.BACKBONES[backbone]
  d, f, p = img["width"], img["mlp_dim"], img["patch_size"]
  vision = p * p * 3 * d + d + (image_size // p) ** 2 * d + 2 * d
  vision += img["depth"] * (4 * (d * d + d) + 4 * d + 2 * d * f + f + d)
  w, h = llm["width"], llm["head_dim"]
  projector = d * w + w
  layer = (
    llm["num_heads"] * h * w * 2
    + 2 * llm["num_kv_heads"] * h * w
    + 3 * w * llm["mlp_dim"]
    + w * (4 if llm["post_norms"] else 2)
  )
  return vision + projector + llm["vocab_size"] * w + w + llm["depth"] * layer


@pytest.mark.parametrize("backbone", ["paligemma_224", "paligemma_448", "paligemma2_224"])
def test_full_size_param_counts(backbone):
  counts = param_count.count(*param_count.backbone_model(backbone))
  assert counts["total"] == reference_count(backbone)
  dual = param_count.count(*param_count.backbone_model(backbone, dual_encoder=True))
  assert dual["img_frozen"] == dual["img"] == counts["img"]
  img, llm, _ = param_count.config_lib.BACKBONES[backbone]
  extra_projector = img["width"] * llm["width"]  # the projector's input doubles: [2W, E]
  assert dual["projector"] == counts["projector"] + extra_projector
  assert dual["total"] == counts["total"] + counts["img"] + extra_projector
  if backbone == "paligemma_224":  # published: PaliGemma-3B has 2.92 B parameters
    assert abs(counts["total"] / 1e9 - 2.92) <= 0.005  # published to 2 decimals: within half the last digit


# The published checkpoints' config.json files list only non-default fields (transformers 4.41 style).
HUB_PALIGEMMA_224 = {
  "model_type": "paligemma",
  "hidden_size": 2048,
  "projection_dim": 2048,
  "image_token_index": 257152,
  "text_config": {
    "hidden_size": 2048,
    "intermediate_size": 16384,
    "model_type": "gemma",
    "num_attention_heads": 8,
    "num_hidden_layers": 18,
    "num_image_tokens": 256,
    "num_key_value_heads": 1,
    "vocab_size": 257216,
  },
  "vision_config": {
    "hidden_size": 1152,
    "intermediate_size": 4304,
    "model_type": "siglip_vision_model",
    "num_attention_heads": 16,
    "num_hidden_layers": 27,
    "num_image_tokens": 256,
    "patch_size": 14,
    "projection_dim": 2048,
    "vision_use_head": False,
  },
}


def test_hub_style_config_json_gives_the_published_architectures():
  arch = hf.model_config(HUB_PALIGEMMA_224)
  img, llm, size = param_count.config_lib.BACKBONES["paligemma_224"]
  assert arch["image_size"] == size and arch["img"] == img
  assert arch["llm"] == dict(llm, vocab_size=257216)  # the hub pads the vocabulary by 64
  gemma2 = dict(
    HUB_PALIGEMMA_224,
    text_config=dict(
      HUB_PALIGEMMA_224["text_config"],
      model_type="gemma2",
      hidden_size=2304,
      intermediate_size=9216,
      num_hidden_layers=26,
      num_key_value_heads=4,
      num_image_tokens=1024,
    ),
  )
  arch = hf.model_config(gemma2)
  img, llm, size = param_count.config_lib.BACKBONES["paligemma2_448"]
  assert arch["image_size"] == size and arch["llm"] == dict(llm, vocab_size=257216)


def test_train_starts_from_imported_weights(config, tmp_path):
  """An HF checkpoint of the demo architecture -> trainer.initial_params -> sharded state whose params are
  the checkpoint's (both towers), on a 2x4 mesh."""
  config.model.dual_encoder = True
  single = build.from_config(config.model)
  single = dataclasses.replace(single, encoder=single.encoder.single())
  source = surgery.init_params(single, jax.random.PRNGKey(7), config.model.image_size)
  hf.export(source, config.model, str(tmp_path / "hf"), max_shard_bytes=1 << 20)
  config.pretrained.format, config.pretrained.path = "hf", str(tmp_path / "hf")
  config.mesh.data, config.mesh.fsdp = 2, 4
  mesh = sharding.make_mesh(config.mesh)
  model = build.from_config(config.model)
  params = trainer.initial_params(config, model, mesh, [], printer=lambda *a, **k: None)
  tx = optimizer.make(config.optimizer, config.train.steps)
  state, shardings, _ = state_lib.create(model, tx, config.model.image_size, mesh, jax.random.PRNGKey(0), params=params)
  expected = surgery.make_dual(source)
  for got, want, spec in zip(
    jax.tree.leaves(state["params"]), jax.tree.leaves(expected), jax.tree.leaves(shardings["params"])
  ):
    np.testing.assert_array_equal(np.asarray(got), np.asarray(want))
    assert got.sharding == spec
  embedding = state["params"]["llm"]["embedder"]["input_embedding"]
  assert len(embedding.sharding.device_set) == 8

  config.model.llm.num_heads = 2
  with pytest.raises(ValueError, match="model.llm.num_heads: config 2, checkpoint 4"):
    trainer.initial_params(config, build.from_config(config.model), mesh, [], printer=print)


# -- config.pretrained.architecture = "checkpoint" (issue 21, item 3) ----------------------------------


def test_hub_checkpoint_gives_every_architecture_field(tmp_path):
  """A published checkpoint's config.json (HF pads the vocabulary to 257216) -> config.model fields, over a
  config of other sizes; posemb_std (initialisation only) stays the config's."""
  import json

  from safetensors.numpy import save_file

  from genvla_jax import config_lib
  from genvla_jax.pretrained import api

  (tmp_path / "config.json").write_text(json.dumps(HUB_PALIGEMMA_224))
  save_file({"multi_modal_projector.linear.bias": np.zeros(4, np.float32)}, str(tmp_path / "model.safetensors"))
  tiny = config_lib.base_config(None)
  tiny.model.image_size, tiny.model.img, tiny.model.llm = 32, dict(config_lib.SIGLIP_TINY), dict(config_lib.GEMMA_TINY)
  fields = api.from_checkpoint("hf", str(tmp_path), tiny.model)
  img, llm, size = param_count.config_lib.BACKBONES["paligemma_224"]
  assert fields == {"image_size": size, "img": dict(img, posemb_std=1.0), "llm": dict(llm, vocab_size=257216)}
  for key, value in fields.items():
    tiny.model[key] = value
  assert api.mismatches("hf", str(tmp_path), tiny.model) == []


def _tiny_hf_checkpoint(config, out):
  """An HF PaliGemma checkpoint (our exporter) of sizes other than the demo config's: a 704-id vocabulary
  (the demo's 640 padded by 64, as HF pads PaliGemma's), narrower and shallower tower and decoder, 48 px."""
  arch = config.model.copy_and_resolve_references()
  arch.image_size, arch.dual_encoder = 48, False
  arch.img = dict(config.model.img, width=64, depth=1, mlp_dim=256, num_heads=2)
  arch.llm = dict(config.model.llm, vocab_size=704, width=64, depth=2, mlp_dim=256, num_heads=2)
  params = surgery.init_params(build.from_config(arch), jax.random.PRNGKey(3), arch.image_size)
  hf.export(params, arch, str(out))
  return arch


def test_architecture_from_the_checkpoint_trains_and_is_recorded(demo_dir, cache_dir, tmp_path):
  import json

  from conftest import tiny_config
  from genvla_jax import train

  config = tiny_config(demo_dir, cache_dir)
  arch = _tiny_hf_checkpoint(config, tmp_path / "hf")
  config.pretrained.format, config.pretrained.path = "hf", str(tmp_path / "hf")
  config.train.steps, config.train.checkpoint_every = 2, 2
  wrong = json.loads(config.model.to_json())

  # "config" (the default): the same setup fails before any work, naming every mismatch and the option
  with pytest.raises(preflight.ConfigError) as error:
    train.train(config, str(tmp_path / "refused"), printer=lambda *a, **k: None)
  message = str(error.value)
  for expected in (
    "model.image_size: config 32, checkpoint 48",
    "model.img.width: config 128, checkpoint 64",
    "model.img.depth: config 2, checkpoint 1",
    "model.llm.vocab_size: config 640, checkpoint 704",
    "model.llm.depth: config 3, checkpoint 2",
    "--config.pretrained.architecture=checkpoint",
  ):
    assert expected in message, message
  assert not (tmp_path / "refused").exists()
  assert json.loads(config.model.to_json()) == wrong  # "config" changes nothing

  config.pretrained.architecture = "checkpoint"
  run = tmp_path / "run"
  records = train.train(config, str(run), printer=lambda *a, **k: None)
  assert [r["step"] for r in records if "loss" in r][-1] == 2
  saved = json.load(open(run / "config.json"))["model"]
  assert saved["image_size"] == 48
  assert saved["img"] == dict(arch.img, posemb_std=wrong["img"]["posemb_std"])
  assert saved["llm"] == dict(arch.llm)
  assert saved["dual_encoder"] and saved["projector"] == wrong["projector"]  # not architecture: the config's

  # a restart resolves the same architecture, so the run resumes (the saved config matches)
  again = tiny_config(demo_dir, cache_dir)
  again.pretrained.format, again.pretrained.path, again.pretrained.architecture = (
    "hf",
    str(tmp_path / "hf"),
    "checkpoint",
  )
  again.train.steps, again.train.checkpoint_every = 3, 2
  messages = []
  resumed = train.train(again, str(run), printer=lambda *a, **k: messages.append(str(a[0])))
  assert any("resumed from" in m and "(step 2)" in m for m in messages)
  assert [r["step"] for r in resumed if "loss" in r] == [3]
