"""Data: RLDS written by TFDS and read through grain, the real Bridge sample, conversion, statistics,
the VL reader, per-batch mixture and resumable iteration."""

import dataclasses
import json
import os
import shutil

import numpy as np
import pytest

from conftest import BRIDGE_SAMPLE, tiny_config
from genvla_jax.data import convert, demo, pipeline, prepare, preprocess, rlds, stats, vl
import tolerances
from tolerances import EPS32


def test_demo_rlds_reads_back_through_grain(demo_dir):
  paths = demo.demo_paths(str(demo_dir))
  ds = rlds.RLDSDataset(paths.rlds_dir, "train")
  assert ds.file_format == "array_record" and len(ds) == 24
  episodes = list(ds)
  assert len(episodes) == 24
  step = episodes[0]["steps"][0]
  assert set(step) >= {
    "observation/image",
    "observation/state",
    "action",
    "language_instruction",
    "is_first",
    "is_last",
  }
  image = preprocess.decode_image(step["observation/image"])
  assert image.shape == (32, 32, 3) and image.dtype == np.uint8
  assert step["action"].shape == (2,) and step["is_first"] and not step["is_last"]
  assert episodes[0]["steps"][-1]["is_last"]


def test_demo_action_depends_on_image_and_instruction():
  scene = demo.random_scene(np.random.default_rng(0))
  targets = sorted(scene.squares)
  actions = [demo.expert_action(scene, t) for t in targets]  # same image, different instructions
  assert min(np.abs(a - b).max() for i, a in enumerate(actions) for b in actions[i + 1 :]) > 0.2
  swapped = demo.Scene(dict(zip(targets, reversed([scene.squares[t] for t in targets]))), scene.gripper)
  assert np.abs(demo.expert_action(swapped, targets[0]) - actions[0]).max() > 0.2  # same text, new image
  image = demo.render(scene)
  assert image.shape == (32, 32, 3) and image.dtype == np.uint8
  for colour in scene.squares:  # each square lies inside one 8x8 patch
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
  scale = float(np.abs(actions).max())
  # quantiles interpolate between two stored float32 values: a few eps32 relative
  np.testing.assert_allclose(robot.stats["action"]["q01"], np.quantile(actions, 0.01, axis=0), rtol=4 * EPS32)
  np.testing.assert_allclose(robot.stats["action"]["q99"], np.quantile(actions, 0.99, axis=0), rtol=4 * EPS32)
  # the mean sums len(actions) terms in another order: absolute, on the actions' scale (a mean near 0 too)
  _, atol = tolerances.float_tol(np.float32, len(actions), scale=scale)
  np.testing.assert_allclose(robot.stats["action"]["mean"], actions.mean(0), rtol=0, atol=atol)
  normalized = stats.normalize(actions, robot.stats["action"])
  assert np.mean(np.abs(normalized) <= 1.0) >= 0.97
  # normalize + denormalize: a handful of float32 operations on values of the data's scale
  np.testing.assert_allclose(
    stats.denormalize(normalized, robot.stats["action"]), actions, rtol=0, atol=8 * EPS32 * scale
  )


def test_conversion_skips_and_reports_bad_steps(tmp_path, demo_dir):
  from genvla_jax.data import registry

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
      convert.convert(demo.demo_paths(str(demo_dir)).rlds_dir, "poisoned", "val", str(tmp_path / "f"), on_bad="fail")
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
  entries = [
    {
      "id": "a",
      "image": "x.png",
      "conversations": [
        {"from": "human", "value": "<image>\nQ1?"},
        {"from": "gpt", "value": "A1"},
        {"from": "human", "value": "Q2?"},
        {"from": "gpt", "value": "A2"},
      ],
    }
  ]
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
    assert not batch["vl_truncated"].any()  # every row has the flag; the demo's VL rows fit
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


def test_two_hosts_build_the_rows_of_the_one_host_batches(config, prepared):
  """Process p of 2 builds its half of each side of the global batch: together they are exactly the
  single-process batches (augmentation included), and they never share a row."""
  config.data.augment.enabled = True
  single = iter(pipeline.make_dataset(config, prepared, seed=0))
  hosts = [iter(pipeline.make_dataset(config, prepared, seed=0, process_index=p, process_count=2)) for p in range(2)]
  for _ in range(3):
    want, (h0, h1) = next(single), [next(h) for h in hosts]
    r = len(h0["tokens"]) // 2  # 2 robot + 2 VL rows per host
    for key in want:
      got = np.concatenate([h0[key][:r], h1[key][:r], h0[key][r:], h1[key][r:]])
      np.testing.assert_array_equal(got, want[key], err_msg=key)
    assert h0["is_robot"][:r].all() and not h0["is_robot"][r:].any()
    assert not np.array_equal(h0["image"], h1["image"])
  with pytest.raises(ValueError, match="divide by the 3 processes"):
    pipeline.local_batch_split(config.data, 3)


def test_long_vl_rows_are_cut_counted_and_failing_names_them(config, prepared):
  """A VL row over max_text_len is cut and flagged (tokenizer.vl_overflow "truncate", the default) and the
  flag reaches the logged metric; "fail" raises naming the row's source and length; rows that fit are the
  same either way, and every row (robot too) has the same fields."""
  from genvla_jax.data import convert_vl
  from genvla_jax.tokenizers import prompt
  from genvla_jax.training import step as step_lib

  robot_transforms, transform = pipeline.example_transforms(config, prepared)
  assert config.tokenizer.vl_overflow == "truncate" and transform.vl_overflow == "truncate"
  record = convert_vl.VLSource(prepared.vl[0].converted_dir)[0]
  long = dict(record, answer=" ".join(["the red square"] * 30), source="robopoint.json:7#0")
  rng = np.random.default_rng(0)
  fits, cut = transform.vl_example(record, rng, train=False), transform.vl_example(long, rng, train=False)
  assert not fits["vl_truncated"] and cut["vl_truncated"]
  assert cut["tokens"].shape == (config.tokenizer.max_text_len,) and cut["input_mask"].all()
  assert cut["loss_mask"].any() and transform.text.eos_id not in cut["tokens"].tolist()
  step_record = pipeline.StepChunkSource(prepared.robot[0].converted_dir, config.tokenizer.action_horizon)[0]
  robot = robot_transforms[0].robot_example(step_record, rng, train=False)
  assert set(robot) == set(fits) == set(cut) and not robot["vl_truncated"]
  batch = {k: np.stack([robot[k], fits[k], cut[k]]) for k in robot}
  assert float(step_lib.batch_metrics(batch)["vl_truncated_fraction"]) == 0.5  # 1 of 2 VL rows

  strict = dataclasses.replace(transform, vl_overflow="fail")
  with pytest.raises(prompt.PromptTooLongError, match=r"VL example robopoint.json:7#0: prompt needs \d+ tokens"):
    strict.vl_example(long, rng, train=False)
  same = strict.vl_example(record, rng, train=False)
  for k in fits:
    np.testing.assert_array_equal(same[k], fits[k], err_msg=k)
  with pytest.raises(ValueError, match="tokenizer.vl_overflow='drop'"):
    dataclasses.replace(transform, vl_overflow="drop")


def test_bad_image_is_named():
  with pytest.raises(preprocess.BadImageError, match="undecodable image"):
    preprocess.decode_image(b"not an image")
  with pytest.raises(preprocess.BadImageError, match="undecodable image"):
    preprocess.decode_image(b"")
  with pytest.raises(preprocess.BadImageError, match=r"\[H,W,3\]"):
    preprocess.prepare_image(np.zeros((32, 32), np.uint8), 32)


def test_decode_and_resize_agree_with_references():
  import io
  from PIL import Image

  rng = np.random.default_rng(0)
  image = np.asarray(Image.fromarray(rng.integers(0, 255, (6, 8, 3), dtype=np.uint8)).resize((80, 60)))
  for fmt, mode in [("JPEG", "RGB"), ("PNG", "RGB"), ("PNG", "L"), ("PNG", "RGBA")]:
    buf = io.BytesIO()
    Image.fromarray(image).convert(mode).save(buf, fmt)
    want = np.asarray(Image.open(io.BytesIO(buf.getvalue())).convert("RGB"))
    np.testing.assert_array_equal(preprocess.decode_image(buf.getvalue()), want)  # same pixels as PIL
  with pytest.raises(preprocess.BadImageError, match="undecodable"):
    preprocess.decode_image(buf.getvalue()[: len(buf.getvalue()) // 3])  # truncated
  # bilinear with half-pixel centres: 2x2 -> 4x4 interpolates; a 4x shrink averages (no aliasing)
  up = preprocess.resize_image(np.array([[0, 80], [160, 240]], np.uint8)[..., None].repeat(3, -1), 4)
  np.testing.assert_array_equal(
    up[..., 0], [[0, 20, 60, 80], [40, 60, 100, 120], [120, 140, 180, 200], [160, 180, 220, 240]]
  )
  checker = (np.indices((64, 64)).sum(0) % 2 * 200).astype(np.uint8)[..., None].repeat(3, -1)
  assert np.abs(preprocess.resize_image(checker, 16).astype(int) - 100).max() <= 1
  box = (8, 4, 40, 36)
  np.testing.assert_array_equal(
    preprocess.resize_image(image, 16, box), preprocess.resize_image(np.ascontiguousarray(image[4:36, 8:40]), 16)
  )


def test_augmentation_changes_training_images_only_within_bounds():
  from genvla_jax.data import augment

  rng = np.random.default_rng(0)
  image = rng.integers(0, 255, (48, 64, 3), dtype=np.uint8)
  for seed in range(20):
    left, top, right, bottom = augment.crop_box(48, 64, np.random.default_rng(seed), (0.8, 1.0), (0.9, 1.1))
    assert 0 <= left < right <= 64 and 0 <= top < bottom <= 48
    assert 0.75 * 48 * 64 <= (right - left) * (bottom - top) <= 48 * 64
  cfg = dict(enabled=True, crop_scale=(0.9, 1.0), crop_ratio=(0.95, 1.05), brightness=0.2, contrast=0.2, saturation=0.2)
  a = augment.augment_and_resize(image, 32, np.random.default_rng(1), cfg)
  np.testing.assert_array_equal(a, augment.augment_and_resize(image, 32, np.random.default_rng(1), cfg))
  assert a.shape == (32, 32, 3) and a.dtype == np.uint8
  assert not np.array_equal(a, augment.augment_and_resize(image, 32, np.random.default_rng(2), cfg))
  np.testing.assert_array_equal(
    augment.augment_and_resize(image, 32, np.random.default_rng(1), dict(cfg, enabled=False)),
    preprocess.resize_image(image, 32),
  )
  grey = np.full((8, 8, 3), 100, np.uint8)  # saturation/contrast leave a flat grey image grey
  out = augment.color_jitter(grey, np.random.default_rng(3), brightness=0.0)
  np.testing.assert_array_equal(out, grey)
  rgb = rng.integers(0, 255, (8, 8, 3), dtype=np.uint8)  # against the formula in float
  b, c, s = np.random.default_rng(4).uniform(0.8, 1.2, 3)
  luma = np.round(rgb @ np.array([0.299, 0.587, 0.114]))[..., None]
  want = c * b * (s * rgb + (1 - s) * luma) + (1 - c) * b * luma.mean()
  got = augment.color_jitter(rgb, np.random.default_rng(4), 0.2, 0.2, 0.2).astype(float)
  assert np.abs(got - np.clip(want, 0, 255)).max() <= 2.0
