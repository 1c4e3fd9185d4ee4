"""Baselines in the same framework: the π0 config trained end to end (flow head, state token,
instruction augmentation) and the paraphrase tables."""

import json

import numpy as np
import pytest

from conftest import tiny_config
from genvla_jax import train
from genvla_jax.data import demo, instruction_aug, pipeline, prepare
from genvla_jax.eval.envs import tabletop
from genvla_jax.inference import policy as policy_lib
from genvla_jax.tokenizers import factory
from genvla_jax.training import preflight


def test_pi0_baseline_trains_and_acts(tmp_path, demo_dir, cache_dir):
  config = tiny_config(demo_dir, cache_dir, "demo", config_file="pi0_baseline")
  config.train.steps = 4
  records = train.train(config, str(tmp_path / "run"), printer=lambda *a, **k: None)
  assert all("flow_mse" in r and np.isfinite(r["flow_mse"]) for r in records)
  assert all(r["answer_tokens"] == 0 and r["robot_fraction"] == 1.0 for r in records)  # no action text
  assert 0.0 < np.mean([r["paraphrased_fraction"] for r in records]) < 1.0  # prob 0.5, table covers all
  saved = json.load(open(tmp_path / "run" / "config.json"))["model"]["action_expert"]
  assert (saved["action_dim"], saved["state_dim"]) == (2, 2)  # resolved from the data
  policy = policy_lib.Policy.from_workdir(str(tmp_path / "run"))
  assert policy.uses_state
  image = demo.render(demo.random_scene(np.random.default_rng(5)))
  actions, valid = policy.act(image, "move to the red square", states=np.array([0.1, -0.2], np.float32))
  assert actions.shape == valid.shape == (4, 2) and valid.all() and np.isfinite(actions).all()
  with pytest.raises(ValueError, match="robot state"):
    policy.act(image, "move to the red square")
  batch, _ = policy.act(np.stack([image, image]), ["go to the blue square"] * 2, states=np.zeros((2, 2)))
  assert batch.shape == (2, 4, 2) and not np.allclose(batch[0], batch[1])  # fresh noise per row


def test_flow_head_needs_matching_config(tmp_path, demo_dir, cache_dir):
  config = tiny_config(demo_dir, cache_dir, "demo", config_file="pi0_baseline")
  config.model.action_expert.width = 0
  with pytest.raises(ValueError, match="flow head"):
    train.train(config, str(tmp_path / "run"), printer=lambda *a, **k: None)


def test_paraphrase_table_loading_and_augmenter(tmp_path):
  path = tmp_path / "t.json"
  path.write_text(json.dumps({"pick up the can ": ["grab the can", "lift the can"], "noop": []}))
  table = instruction_aug.load_table(str(path))
  assert table == {"pick up the can": ["grab the can", "lift the can"]}
  rng = np.random.default_rng(0)
  always = instruction_aug.InstructionAugmenter(table, 1.0)
  outs = {always("pick up the can", rng) for _ in range(50)}
  assert outs == {("grab the can", True), ("lift the can", True)}
  assert always("open the drawer", rng) == ("open the drawer", False)  # not in the table: unchanged
  never = instruction_aug.InstructionAugmenter(table, 0.0)
  assert never("pick up the can", rng) == ("pick up the can", False)
  half = instruction_aug.InstructionAugmenter(table, 0.5)
  changed = [half("pick up the can", np.random.default_rng(i))[1] for i in range(400)]
  assert 0.4 < np.mean(changed) < 0.6
  assert [half("pick up the can", np.random.default_rng(i)) for i in range(20)] == [
    half("pick up the can", np.random.default_rng(i)) for i in range(20)
  ]  # replayable
  for bad, message in (("[1, 2]", "JSON object"), ('{"a": "b"}', "list of non-empty strings"), ("{", "JSON")):
    path.write_text(bad)
    with pytest.raises(ValueError, match=message):
      instruction_aug.load_table(str(path))
  with pytest.raises(ValueError, match="prob"):
    instruction_aug.InstructionAugmenter(table, 1.5)


def test_tabletop_training_paraphrases_never_leak_held_out_wordings():
  names = list(tabletop.COLORS)
  held_out = {
    w.format(a=a, b=b) for _, (_, ho) in tabletop.INSTRUCTIONS.items() for w in ho for a in names for b in names
  }
  templates = {w: tabletop.TRAIN_PARAPHRASES[t] for t, (ws, _) in tabletop.INSTRUCTIONS.items() for w in ws}
  table = instruction_aug.expand(templates, a=names, b=names)
  assert table["pick up the red cube"] == ["grab the red cube", "pick the red cube up", "raise the red cube"]
  assert "move the blue cube near the green cube" in table and "open the drawer" in table
  assert not held_out & {p for ps in table.values() for p in ps}
  assert not held_out & set(table)


def test_pipeline_applies_the_table(demo_dir, cache_dir):
  config = tiny_config(demo_dir, cache_dir, "demo", config_file="pi0_baseline")
  config.data.instruction_aug.prob = 1.0
  prepared = prepare.prepare(config.data)
  preflight.resolve_data_dims(config, prepared)  # the state size comes from the data
  batch = next(iter(pipeline.make_dataset(config, prepared, seed=0)))
  assert batch["paraphrased"].all() and batch["state"].shape == (8, 2)
  text, _ = factory.make_tokenizers(config, prepared.action_dim)
  paraphrases = {p for ps in instruction_aug.load_table(str(demo_dir / "paraphrases.json")).values() for p in ps}
  prompts = [text.decode(t[m]) for t, m in zip(batch["tokens"], batch["input_mask"])]
  assert all(any(p in prompt for p in paraphrases) for prompt in prompts), prompts[:2]
  assert not batch["loss_mask"].any()  # flow head: no answer tokens
