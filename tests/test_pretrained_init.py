"""Full-size parameter counts, and training that starts from imported weights (sharded placement,
both towers initialised, mismatches refused)."""

import dataclasses

import jax
import numpy as np
import pytest

from genvla_jax.models import build, surgery
from genvla_jax.pretrained import hf
from genvla_jax.tools import param_count
from genvla_jax.training import optimizer, sharding, state as state_lib, trainer


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
