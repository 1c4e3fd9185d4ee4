"""Data: RLDS written by TFDS and read through grain, the real Bridge sample, conversion, statistics,
the VL reader, per-batch mixture and resumable iteration."""

import json
import os
import shutil

import numpy as np
import pytest

from conftest import BRIDGE_SAMPLE, tiny_config
from genvla_jax.data import convert, demo, pipeline, prepare, preprocess, rlds, stats, vl


def test_demo_rlds_reads_back_through_grain(demo_dir):
  paths = demo.demo_paths(str(demo_dir))
  ds = rlds.RLDSDataset(paths.rlds_dir, "train")
  assert ds.file_format == "array_record" and len(ds) == 24
  episodes = list(ds)
  assert len(episodes) == 24
  step = episodes[0]["steps"][0]
  assert set(step) >= {"observation/image", "observation/state", "action", "language_instruction",
                       "is_first", "is_last"}
  image = preprocess.decode_image(step["observation/image"])
  assert image.shape == (32, 32, 3) and image.dtype == np.uint8
  assert step["action"].shape == (2,) and step["is_first"] and not step["is_last"]
  assert episodes[0]["steps"][-1]["is_last"]


def test_demo_action_depends_on_image_and_instruction():
  scene = demo.random_scene(np.random.default_rng(0))
  targets = sorted(scene.squares)
  actions = [demo.expert_action(scene, t) for t in targets]  # same image, different instructions
  assert min(np.abs(a - b).max() for i, a in enumerate(actions) for b in actions[i + 1:]) > 0.2
  swapped = demo.Scene(dict(zip(targets, reversed([scene.squares[t] for t in targets]))), scene.gripper)
  assert np.abs(demo.expert_action(swapped, targets[0]) - actions[0]).max() > 0.2  # same text, new image
  image = demo.render(scene)
  assert image.shape == (32, 32, 3) and image.dtype == np.uint8
  for colour, centre in scene.squares.items():  # each square lies inside one 8x8 patch
    ys, xs = np.where(np.all(image == demo.COLORS[colour], axis=-1))
    assert len(set(ys // 8)) == 1 and len(set(xs // 8)) == 1, colour


def test_bridge_sample_loads_through_the_same_reader(tmp_path):
  if not os.path.isdir(BRIDGE_SAMPLE):
    pytest.skip("shared Bridge sample not present")
  local = tmp_path / "bridge_dataset" / "1.0.0"
  shutil.copytree(BRIDGE_SAMPLE, local)
  ds = rlds.RLDSDataset(str(local), "train")
  assert ds.file_format == "tfrecord" and len(ds) == 25
  episode = next(iter(ds))
  step = episode["steps"][0]
  assert step["action"].shape == (7,) and step["observation/state"].shape == (7,)
  assert preprocess.decode_image(step["observation/image_0"]).shape == (64, 64, 3)
  assert isinstance(step["language_instruction"], bytes)
  meta = convert.convert(str(local), "bridge", "train", str(tmp_path / "bridge_converted"))
  assert meta["num_episodes"] == 25 and meta["action_dim"] == 7
  assert meta["num_steps"] == sum(len(e["steps"]) for e in ds)
  convert.verify(str(tmp_path / "bridge_converted"))
  with open(tmp_path / "bridge_converted" / "stats.json") as f:
    s = json.load(f)
  assert s["action"]["normalize_mask"] == [True] * 6 + [False]  # gripper kept as is
  source = pipeline.StepChunkSource(str(tmp_path / "bridge_converted"), horizon=4)
  record = source[0]
  assert record["actions"].shape == (4, 7) and record["image"][:2] == b"\xff\xd8"  # JPEG bytes kept


def test_conversion_statistics_match_numpy(demo_dir, prepared):
  robot = prepared.robot[0]
  ds = rlds.RLDSDataset(demo.demo_paths(str(demo_dir)).rlds_dir, "train")
  actions = np.concatenate([np.stack([s["action"] for s in e["steps"]]) for e in ds])
  assert robot.meta["num_steps"] == len(actions)
  np.testing.assert_allclose(robot.stats["action"]["q01"], np.quantile(actions, 0.01, axis=0), rtol=1e-6)
  np.testing.assert_allclose(robot.stats["action"]["q99"], np.quantile(actions, 0.99, axis=0), rtol=1e-6)
  np.testing.assert_allclose(robot.stats["action"]["mean"], actions.mean(0), rtol=1e-5)
  normalized = stats.normalize(actions, robot.stats["action"])
  assert np.mean(np.abs(normalized) <= 1.0) >= 0.97
  np.testing.assert_allclose(stats.denormalize(normalized, robot.stats["action"]), actions, atol=1e-6)


def test_conversion_skips_and_reports_bad_steps(tmp_path, demo_dir):
  from genvla_jax.data import registry  # pylint: disable=g-import-not-at-top
  spec = registry.REGISTRY["demo_targets"]
  calls = {"n": 0}
  def poisoned(step):
    out = spec.standardize(step)
    calls["n"] += 1
    if calls["n"] == 3:
      out["action"] = np.array([np.nan, 0.0], np.float32)
    return out
  registry.REGISTRY["poisoned"] = registry.DatasetSpec("poisoned", poisoned, (True, True))
  try:
    meta = convert.convert(demo.demo_paths(str(demo_dir)).rlds_dir, "poisoned", "val", str(tmp_path / "c"))
  finally:
    del registry.REGISTRY["poisoned"]
  assert meta["skipped_steps"] == [{"episode": 0, "step": 2, "reason": "non-finite action"}]
  assert meta["num_steps"] == 6 * 4 - 1
  calls["n"] = 0
  registry.REGISTRY["poisoned"] = registry.DatasetSpec("poisoned", poisoned, (True, True))
  try:
    with pytest.raises(convert.BadRecordError, match="episode 0 step 2: non-finite action"):
      convert.convert(demo.demo_paths(str(demo_dir)).rlds_dir, "poisoned", "val", str(tmp_path / "f"),
                      on_bad="fail")
  finally:
    del registry.REGISTRY["poisoned"]


def test_corrupt_shard_is_detected(tmp_path, prepared):
  copy = tmp_path / "conv"
  shutil.copytree(prepared.robot[0].converted_dir, copy)
  shard = next(p for p in os.listdir(copy) if p.endswith(".array_record"))
  with open(copy / shard, "r+b") as f:
    f.seek(100)
    f.write(b"garbage!")
  with pytest.raises(ValueError, match="sha256 mismatch"):
    convert.verify(str(copy))


def test_vl_reader_handles_multi_turn(tmp_path):
  entries = [{"id": "a", "image": "x.png", "conversations": [
      {"from": "human", "value": "<image>\nQ1?"}, {"from": "gpt", "value": "A1"},
      {"from": "human", "value": "Q2?"}, {"from": "gpt", "value": "A2"}]}]
  (tmp_path / "d.json").write_text(json.dumps(entries))
  examples = vl.load_llava_json(str(tmp_path / "d.json"))
  assert [(e["question"], e["answer"]) for e in examples] == [("Q1?", "A1"), ("Q2?", "A2")]
  assert examples[0]["image_path"] == str(tmp_path / "x.png")


@pytest.mark.parametrize("fraction, expected_robot", [(0.5, 4), (0.25, 2), (1.0, 8)])
def test_every_batch_has_the_configured_mixture(demo_dir, cache_dir, fraction, expected_robot):
  config = tiny_config(demo_dir, cache_dir)
  config.data.robot_fraction = fraction
  data = prepare.prepare(config.data)
  it = iter(pipeline.make_dataset(config, data, seed=0))
  for _ in range(6):
    batch = next(it)
    assert batch["image"].shape == (8, 32, 32, 3) and batch["tokens"].shape == (8, 40)
    assert batch["is_robot"].tolist() == [True] * expected_robot + [False] * (8 - expected_robot)
    assert np.all(batch["loss_mask"].sum(1) > 0)
    assert batch["image"].dtype == np.uint8  # pixels; the model maps them to [-1,1]


@pytest.mark.parametrize("augmented", [False, True])
def test_resume_reproduces_the_next_batches(config, prepared, augmented):
  config.data.augment.enabled = augmented  # augmentation randomness replays too
  it = iter(pipeline.make_dataset(config, prepared, seed=3))
  for _ in range(4):
    next(it)
  state = it.get_state()
  expected = [next(it) for _ in range(3)]
  fresh = iter(pipeline.make_dataset(config, prepared, seed=3))
  fresh.set_state(state)
  for want in expected:
    got = next(fresh)
    for key in want:
      np.testing.assert_array_equal(got[key], want[key])


def test_two_hosts_partition_the_robot_steps(config, prepared):
  source = pipeline.StepChunkSource(prepared.robot[0].converted_dir, 1)
  import grain  # pylint: disable=g-import-not-at-top
  ds = grain.MapDataset.source(source)
  seen = [{(r["episode"], r["step"]) for r in pipeline._host_slice(ds, i, 2)} for i in range(2)]
  assert not seen[0] & seen[1]
  assert len(seen[0] | seen[1]) == len(source)


def test_bad_image_is_named():
  with pytest.raises(preprocess.BadImageError, match="undecodable image"):
    preprocess.decode_image(b"not an image")
  with pytest.raises(preprocess.BadImageError, match=r"\[H,W,3\]"):
    preprocess.prepare_image(np.zeros((32, 32), np.uint8), 32)


def test_augmentation_changes_training_images_only_within_bounds():
  from genvla_jax.data import augment  # pylint: disable=g-import-not-at-top
  rng = np.random.default_rng(0)
  image = rng.integers(0, 255, (48, 64, 3), dtype=np.uint8)
  for seed in range(20):
    crop = augment.random_resized_crop(image, np.random.default_rng(seed), (0.8, 1.0), (0.9, 1.1))
    assert 0.75 * 48 * 64 <= crop.shape[0] * crop.shape[1] <= 48 * 64 and crop.shape[2] == 3
  cfg = dict(enabled=True, crop_scale=(0.9, 1.0), crop_ratio=(0.95, 1.05), brightness=0.2, contrast=0.2,
             saturation=0.2)
  a = augment.augment(image, np.random.default_rng(1), cfg)
  np.testing.assert_array_equal(a, augment.augment(image, np.random.default_rng(1), cfg))
  assert a.dtype == np.uint8 and not np.array_equal(a, augment.augment(image, np.random.default_rng(2), cfg))
  assert augment.augment(image, np.random.default_rng(1), dict(cfg, enabled=False)) is image
  resized = augment.augment_and_resize(image, 32, np.random.default_rng(1), cfg)
  assert resized.shape == (32, 32, 3) and resized.dtype == np.uint8
  np.testing.assert_array_equal(augment.augment_and_resize(image, 32, np.random.default_rng(1), dict(cfg, enabled=False)),
                                preprocess.resize_image(image, 32))
  grey = np.full((8, 8, 3), 100, np.uint8)  # saturation/contrast leave a flat grey image grey
  out = augment.color_jitter(grey, np.random.default_rng(3), brightness=0.0)
  np.testing.assert_array_equal(out, grey)
