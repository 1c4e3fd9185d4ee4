"""VLM pretraining (VL data only) -> export in the Hugging Face PaliGemma format with its tokenizer -> the
export is what transformers loads (same logits, same token ids) and what a fine-tuning config starts from."""

import dataclasses

import numpy as np
import pytest
import transformers

from genvla_jax import train
from genvla_jax.data import prepare
from genvla_jax.inference import policy as policy_lib
from genvla_jax.models import build
from genvla_jax.pretrained import api
from genvla_jax.tokenizers import text
from genvla_jax.tools import export_hf, logits as logits_tool
import paligemma_reference
import tolerances


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory, demo_dir, cache_dir):
  from conftest import tiny_config

  config = tiny_config(demo_dir, cache_dir)
  config.data.robot_fraction = 0.0  # VL only
  config.data.robot = []
  config.model.dual_encoder = False
  config.train.steps = 2
  config.train.checkpoint_every = 2
  run = tmp_path_factory.mktemp("pretrain")
  records = train.train(config, str(run), printer=lambda *a, **k: None)
  out = tmp_path_factory.mktemp("export")
  export_hf.export_run(str(run), str(out))
  return config, run, out, records


def test_vl_only_training_reads_no_robot_data(pretrained):
  config, _, _, records = pretrained
  assert [r["step"] for r in records if "loss" in r][-1] == 2
  assert all(r["robot_fraction"] == 0.0 for r in records if "robot_fraction" in r)
  with pytest.raises(prepare.DataConfigError, match="VL data only"):
    bad = config.copy_and_resolve_references()
    bad.data.robot = [dict(name="demo_targets", path="demo_targets/1.0.0", split="train", weight=1.0)]
    prepare.prepare(bad.data)


def test_export_loads_in_transformers_with_the_same_logits_and_tokens(pretrained):
  config, run, out, _ = pretrained
  policy = policy_lib.Policy.from_workdir(str(run))
  model = dataclasses.replace(build.from_config(config.model), parent=None)
  size, n = config.model.image_size, build.num_image_tokens(config.model)
  rng = np.random.default_rng(0)
  images = rng.uniform(-1, 1, (2, size, size, 3)).astype(np.float32)
  tok = text.TextTokenizer(str(out / "tokenizer.model"))
  prompts = ["how many cubes are on the table?\n", "is the drawer open?\n"]
  hf_tok = transformers.AutoTokenizer.from_pretrained(str(out))
  ids = [hf_tok(p).input_ids for p in prompts]
  assert ids == [[tok.bos_id] + tok.sp.encode(p) for p in prompts]  # the same ids, BOS first
  length = max(map(len, ids))
  tokens = np.array([i + [tok.pad_id] * (length - len(i)) for i in ids], np.int32)
  prefix_len = np.full((2,), length, np.int32)  # all prefix (bidirectional), as a prompt is
  ours = logits_tool.compute_logits(model, policy.params, images, tokens, prefix_len)

  hf_model = transformers.PaliGemmaForConditionalGeneration.from_pretrained(str(out)).eval()
  theirs = paligemma_reference.logits(hf_model, images, tokens, prefix_len)
  atol = tolerances.paligemma_logits_atol(config.model, n, length, scale=np.abs(ours).max())
  real = tokens != tok.pad_id  # padded positions attend differently (HF masks nothing here)
  np.testing.assert_allclose(theirs[real], ours[real], rtol=0, atol=atol)


def test_a_fine_tuning_config_starts_from_the_export(pretrained):
  config, _, out, _ = pretrained
  finetune = config.copy_and_resolve_references()
  finetune.pretrained.format, finetune.pretrained.path = "hf", str(out)
  finetune.tokenizer.path = str(out / "tokenizer.model")
  assert api.mismatches("hf", str(out), finetune.model) == []


def test_pi0_starts_from_the_export_with_a_fresh_action_expert(pretrained, demo_dir, cache_dir):
  """π0 from a VLM checkpoint (as openpi starts π0 from PaliGemma): every VLM part is the export's, the
  action expert (FRESH_PARTS) is what init_params draws from the same key."""
  import jax

  from conftest import tiny_config
  from genvla_jax.models import surgery

  _, run, out, _ = pretrained
  config = tiny_config(demo_dir, cache_dir, config_file="pi0_baseline")
  config.model.action_expert.action_dim = 2
  model = build.from_config(config.model)
  loaded = api.load("hf", str(out), model, config.model.image_size, rng=jax.random.PRNGKey(5))
  fresh = surgery.init_params(model, jax.random.PRNGKey(5), config.model.image_size)["expert"]
  vlm = policy_lib.Policy.from_workdir(str(run)).params
  assert sorted(loaded) == ["expert", "img", "llm", "projector"]
  for a, b in zip(jax.tree.leaves(loaded["expert"]), jax.tree.leaves(fresh)):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
  for part in ("img", "llm", "projector"):  # the export round trip is exact in float32
    for a, b in zip(jax.tree.leaves(loaded[part]), jax.tree.leaves(vlm[part])):
      np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_representation_scores_probe_every_tower_on_every_pool(pretrained, tmp_path):
  from genvla_jax.tools import ablate

  config, run, out, _ = pretrained
  vlm = policy_lib.Policy.from_workdir(str(run)).params
  pre = config.copy_and_resolve_references()
  pre.pretrained.format, pre.pretrained.path = "hf", str(out)
  towers = {"img": vlm["img"], "img_frozen": vlm["img"], "pretrained": ablate.pretrained_tower(pre)}
  scores = ablate.representation_scores(towers, config.model, str(tmp_path), per_class=5)
  assert sorted(scores) == ["default", "held_out", "wide"]
  for s in scores.values():
    assert sorted(s["probe"]) == ["img", "img_frozen", "pretrained"] and s["n_train"] == 16 and s["n_test"] == 4
    assert s["probe"]["img"] == s["probe"]["img_frozen"] == s["probe"]["pretrained"]  # the same weights
    assert s["cka_trained_vs_frozen"] == pytest.approx(1.0)
