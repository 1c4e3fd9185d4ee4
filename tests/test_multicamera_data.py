"""Several cameras per observation, the data side (issue 22 item 2): config.data.cameras = ["front", "wrist"] feeds
every listed camera in order (image [B,C,S,S,3] uint8 + image_mask [B,C]); VL rows put their image in camera 0 with
the others masked; a record lacking a camera is zeros, masked and counted; one camera is today's batch; preflight
refuses model.num_cameras != the cameras data.cameras feeds; a two-camera model trains (with micro-batches) and
acts; the training example and what the policy feeds the model are the same pixels, camera by camera.

Data: the two-camera LeRobot fixture written by lerobot itself (tests/fixtures/lerobot/v30_image: PNG image
columns, stored as they are, so frames compare exactly)."""

import json
import os
import shutil

from array_record.python import array_record_module
import grain
import jax
import numpy as np
import pytest

from conftest import ROOT, tiny_config
from genvla_jax import train
from genvla_jax.data import convert, convert_lerobot, pipeline, prepare, preprocess, transforms
from genvla_jax.eval import offline
from genvla_jax.inference import policy as policy_lib
from genvla_jax.training import plan, preflight, step as step_lib

FIXTURES = os.path.join(ROOT, "tests", "fixtures", "lerobot")
LENGTHS = (12, 7, 16)  # the fixture's episodes
SIZE = 16  # model.image_size (the fixture's frames are 24 x 32)
CAMERAS = ["front", "wrist"]
QUIET = lambda *a, **k: None  # noqa: E731


@pytest.fixture(scope="module")
def expected():
  with np.load(os.path.join(FIXTURES, "expected.npz")) as data:
    return {k: data[k] for k in data.files}


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
  out = str(tmp_path_factory.mktemp("lerobot") / "converted")
  convert_lerobot.convert_lerobot(os.path.join(FIXTURES, "v30_image"), out, image_format="png", episodes_per_part=2)
  return out


def _config(demo_dir, tmp_path, converted, cameras=CAMERAS, num_cameras=2):
  """The tiny demo config on the converted fixture (+ the demo's VL rows), feeding `cameras`."""
  config = tiny_config(demo_dir, tmp_path / "cache")
  config.data.robot = [{"name": "lerobot", "path": converted, "split": "train", "weight": 1.0}]
  config.data.cameras = list(cameras)
  config.data.augment.enabled = False  # pixels compare exactly
  config.model.update(image_size=SIZE, num_cameras=num_cameras)
  config.tokenizer.max_text_len = 64  # 4 action values as text after the instruction
  return config


def _resized(frame):
  return preprocess.resize_image(frame, SIZE)


def _first_batch(config, prepared):
  it = iter(pipeline.make_dataset(config, prepared, seed=0))
  return next(it)


def test_the_source_gives_every_camera_in_the_listed_order(converted, expected):
  source = pipeline.StepChunkSource(converted, 2, CAMERAS)
  swapped = pipeline.StepChunkSource(converted, 2, CAMERAS[::-1])
  for i in (0, 5, 20, len(source) - 1):
    record = source[i]
    e, s = int(record["episode"]), int(record["step"])
    assert "image" not in record and "images" not in record and len(record["frames"]) == 2
    for name, frame in zip(CAMERAS, record["frames"]):
      np.testing.assert_array_equal(preprocess.decode_image(frame), expected[f"{name}_{e}"][s])
    assert swapped[i]["frames"] == record["frames"][::-1]
    assert record["actions"].shape == (2, 4)
  assert not source.missing


def test_batches_carry_every_camera_in_order_and_vl_rows_are_masked(demo_dir, tmp_path, converted, expected):
  config = _config(demo_dir, tmp_path, converted)
  prepared = prepare.prepare(config.data)
  batch = _first_batch(config, prepared)
  rows = config.data.batch_size
  assert batch["image"].shape == (rows, 2, SIZE, SIZE, 3) and batch["image"].dtype == np.uint8
  assert batch["image_mask"].shape == (rows, 2) and batch["image_mask"].dtype == bool
  robot = batch["is_robot"]
  assert 0 < robot.sum() < rows  # co-training: both kinds of rows in one batch
  # VL rows: their one image in camera 0, the other camera zeros and masked
  assert (batch["image_mask"][~robot] == [True, False]).all()
  assert (batch["image"][~robot][:, 1] == 0).all() and (batch["image"][~robot][:, 0] > 0).any()
  # robot rows: both cameras of one recorded step, front in slot 0, wrist in slot 1
  assert batch["image_mask"][robot].all()
  steps = {_resized(expected[f"front_{e}"][s]).tobytes(): (e, s) for e, n in enumerate(LENGTHS) for s in range(n)}
  assert len(steps) == sum(LENGTHS)  # every step's front frame tells it apart
  for image in batch["image"][robot]:
    e, s = steps[image[0].tobytes()]
    np.testing.assert_array_equal(image[1], _resized(expected[f"wrist_{e}"][s]))
  # the dry run's batch print: the same shapes (data.num_workers=0, one real batch)
  shapes = plan._one_batch(config, prepared)
  assert shapes["image"] == ((rows, 2, SIZE, SIZE, 3), "uint8") and shapes["image_mask"] == ((rows, 2), "bool")


def _rewrite(converted, tmp_path, edit):
  """A copy of the conversion whose first shard's records go through `edit(index, record)`."""
  copy = str(tmp_path / "edited")
  shutil.copytree(converted, copy)
  meta = json.load(open(os.path.join(copy, "meta.json")))
  path = os.path.join(copy, meta["shards"][0]["file"])
  source = grain.sources.ArrayRecordDataSource([path])
  records = [convert.decode_step(source[i]) for i in range(len(source))]
  del source
  writer = array_record_module.ArrayRecordWriter(path, "group_size:1")
  for i, record in enumerate(records):
    writer.write(convert.encode_step(edit(i, record)))
  writer.close()
  return copy


def test_a_record_lacking_a_camera_is_zeros_masked_and_counted(demo_dir, tmp_path, converted, expected):
  def drop(i, record):
    if i == 3:
      del record["images"]["wrist"]
    if i == 4:
      record["image"] = b""  # the primary camera's frame is missing too
    return record

  edited = _rewrite(converted, tmp_path, drop)
  config = _config(demo_dir, tmp_path, edited)
  (transform, *_), vl_transform = pipeline.example_transforms(config, prepare.prepare(config.data))
  assert transform.num_cameras == vl_transform.num_cameras == 2
  source = pipeline.StepChunkSource(edited, config.tokenizer.action_horizon, CAMERAS)
  examples = [pipeline.RobotExample(transform).random_map(source[i], np.random.default_rng(i)) for i in (2, 3, 4)]
  assert dict(source.missing) == {"wrist": 1, "front": 1}
  assert [e["image_mask"].tolist() for e in examples] == [[True, True], [True, False], [False, True]]
  assert (examples[1]["image"][1] == 0).all() and (examples[2]["image"][0] == 0).all()
  np.testing.assert_array_equal(examples[1]["image"][0], _resized(expected["front_0"][3]))
  np.testing.assert_array_equal(examples[2]["image"][1], _resized(expected["wrist_0"][4]))
  # the batch stacks them with the others
  assert {k: v.shape for k, v in examples[0].items()} == {k: v.shape for k, v in examples[1].items()}


def test_the_missing_camera_metric_counts_robot_rows_lacking_each_camera():
  """A batch of 4 robot rows (1 lacks the front camera, 2 the wrist one) and 2 VL rows (camera 1 always masked)."""
  batch = {
    "is_robot": np.array([True, True, True, True, False, False]),
    "image_mask": np.array([[1, 1], [1, 0], [0, 1], [1, 0], [1, 0], [1, 0]], bool),
    "vl_truncated": np.zeros(6, bool),
  }
  metrics = jax.jit(lambda b: step_lib.batch_metrics(b, CAMERAS))(batch)
  assert {k: float(v) for k, v in metrics.items()} == {
    "vl_truncated_fraction": 0.0,
    "camera_missing_fraction/front": 0.25,
    "camera_missing_fraction/wrist": 0.5,
  }
  unnamed = step_lib.batch_metrics(batch)  # no names given: the cameras' indices
  assert float(unnamed["camera_missing_fraction/1"]) == 0.5 and "camera_missing_fraction/2" not in unnamed
  vl_only = dict(batch, is_robot=np.zeros(6, bool))
  assert float(step_lib.batch_metrics(vl_only, CAMERAS)["camera_missing_fraction/wrist"]) == 0.0
  one_camera = {k: v for k, v in batch.items() if k != "image_mask"}  # one camera: no mask, no such metric
  assert set(step_lib.batch_metrics(one_camera)) == {"vl_truncated_fraction"}
  with pytest.raises(ValueError, match="image_mask has 2 camera"):
    step_lib.batch_metrics(batch, ["front"])


def test_the_missing_camera_metric_of_a_pipeline_batch(demo_dir, tmp_path, converted, expected):
  """Records of the first part without their wrist frame: the metric is the share of the batch's robot rows
  whose step is one of them (each row told by its front frame)."""
  dropped = set()

  def drop(i, record):
    if i % 3 == 0:
      del record["images"]["wrist"]
      dropped.add((int(record["episode"]), int(record["step"])))
    return record

  config = _config(demo_dir, tmp_path, _rewrite(converted, tmp_path, drop))
  config.data.batch_size = 32
  batch = _first_batch(config, prepare.prepare(config.data))
  steps = {_resized(expected[f"front_{e}"][s]).tobytes(): (e, s) for e, n in enumerate(LENGTHS) for s in range(n)}
  rows = [steps[image[0].tobytes()] for image in batch["image"][batch["is_robot"]]]
  lacking = sum(row in dropped for row in rows)
  assert 0 < lacking < len(rows) == 16
  metrics = step_lib.batch_metrics(batch, transforms.cameras_of(config.data))
  assert float(metrics["camera_missing_fraction/wrist"]) == lacking / len(rows)
  assert float(metrics["camera_missing_fraction/front"]) == 0.0


def test_one_camera_batches_are_todays(demo_dir, tmp_path, converted, expected, config, prepared):
  """[] and the primary camera by name give the same bytes; no image_mask; another camera swaps the frames only."""
  primary = _config(demo_dir, tmp_path, converted, [], 1)
  prepared_lerobot = prepare.prepare(primary.data)
  base = _first_batch(primary, prepared_lerobot)
  keys = {"image", "tokens", "input_mask", "ar_mask", "loss_mask", "is_robot", "actions", "action_pad"}
  keys |= {"num_clipped", "paraphrased", "vl_truncated"}
  assert set(base) == keys and base["image"].shape == (primary.data.batch_size, SIZE, SIZE, 3)
  named = _first_batch(_config(demo_dir, tmp_path, converted, ["front"], 1), prepared_lerobot)
  assert named.keys() == base.keys() and all(named[k].tobytes() == base[k].tobytes() for k in base)
  wrist = _first_batch(_config(demo_dir, tmp_path, converted, ["wrist"], 1), prepared_lerobot)
  assert all(wrist[k].tobytes() == base[k].tobytes() for k in base if k != "image")
  robot = base["is_robot"]
  steps = {_resized(expected[f"front_{e}"][s]).tobytes(): (e, s) for e, n in enumerate(LENGTHS) for s in range(n)}
  for front, other in zip(base["image"][robot], wrist["image"][robot]):
    e, s = steps[front.tobytes()]
    np.testing.assert_array_equal(other, _resized(expected[f"wrist_{e}"][s]))
  # the RLDS demo (one unnamed camera): no camera axis, no mask
  demo = _first_batch(config, prepared)
  assert set(demo) == keys and demo["image"].ndim == 4


def test_num_cameras_must_match_the_cameras_the_data_feeds(demo_dir, tmp_path, converted):
  config = _config(demo_dir, tmp_path, converted, CAMERAS, 1)
  (problem,) = preflight.camera_problems(config)
  assert problem.startswith("model.num_cameras=1 but data.cameras=['front', 'wrist'] feeds 2 camera(s)")
  assert "--config.model.num_cameras=2" in problem
  with pytest.raises(preflight.ConfigError, match=r"model.num_cameras=1 but data.cameras=\['front', 'wrist'\]"):
    preflight.check_setup(config, str(tmp_path / "run"), printer=QUIET)
  assert not (tmp_path / "run").exists()
  config = _config(demo_dir, tmp_path, converted, [], 2)
  (problem,) = preflight.camera_problems(config)
  assert problem.startswith("model.num_cameras=2 but data.cameras=[] feeds 1 camera(s)")
  assert preflight.camera_problems(_config(demo_dir, tmp_path, converted, ["wrist"], 1)) == []
  # every listed camera is checked against every robot dataset (before any training), and each is listed once
  config = _config(demo_dir, tmp_path, converted, ["front", "top"], 2)
  with pytest.raises(prepare.DataConfigError, match=r"no camera 'top' .*\['front', 'wrist'\]"):
    prepare.prepare(config.data)
  with pytest.raises(prepare.DataConfigError, match="no camera 'top'"):
    prepare.cached(config.data)
  config.data.cameras = ["front", "front"]
  assert any("names a camera twice" in p for p in prepare.config_problems(config.data))


def _capture(policy):
  """What act() hands the model, captured where the action head would predict."""
  seen = {}

  def capture(params, pixels, tokens, mask, state_token=None, **cameras):
    seen.update(pixels=pixels, tokens=tokens, mask=mask, **cameras)
    shape = (len(pixels), policy.horizon, policy.action_dim)
    return np.zeros(shape, np.float32), np.ones(shape, bool)

  policy.head.predict = capture
  return seen


def test_training_example_and_policy_input_are_the_same_pixels_per_camera(demo_dir, tmp_path, converted):
  config = _config(demo_dir, tmp_path, converted)
  prepared = prepare.prepare(config.data)
  (transform, *_), _ = pipeline.example_transforms(config, prepared)  # what make_dataset uses
  robot = prepared.robot[0]
  policy = policy_lib.Policy(config, None, {robot.name: robot.stats}, prepared.action_dim, config.tokenizer.path)
  seen = _capture(policy)
  source = pipeline.StepChunkSource(converted, config.tokenizer.action_horizon, transforms.cameras_of(config.data))
  for index in (0, 13, len(source) - 1):
    record = source[index]
    example = pipeline.RobotExample(transform).random_map(record, np.random.default_rng(index))
    frames = [preprocess.decode_image(f) for f in record["frames"]]
    assert frames[0].shape == (24, 32, 3) and example["image"].shape == (2, SIZE, SIZE, 3)
    policy.act(frames, record["instruction"], full_width=True)  # one observation: its two frames
    np.testing.assert_array_equal(seen["pixels"][0], preprocess.to_unit_range(example["image"]))
    assert "image_mask" not in seen  # every camera present: the heads see no mask, as before
    prefix = int((example["input_mask"] & ~example["ar_mask"]).sum())
    np.testing.assert_array_equal(seen["tokens"][0, :prefix], example["tokens"][:prefix])
    assert int(seen["mask"][0].sum()) == prefix
    # a missing wrist frame: training's zeros (masked) are what the policy feeds for None
    record["frames"][1] = None
    example = pipeline.RobotExample(transform).random_map(record, np.random.default_rng(index))
    policy.act(np.stack(frames)[None], [record["instruction"]], full_width=True)  # [B,C,H,W,3]
    assert "image_mask" not in seen
    policy.act([[frames[0], None]], [record["instruction"]], full_width=True)
    np.testing.assert_array_equal(seen["pixels"][0], preprocess.to_unit_range(example["image"]))
    np.testing.assert_array_equal(seen["image_mask"], [example["image_mask"]])
    seen.clear()
  with pytest.raises(ValueError, match="sees 2 camera"):
    policy.act(frames[0], "pick")


def test_a_two_camera_model_trains_with_micro_batches_and_acts(demo_dir, tmp_path, converted, expected):
  config = _config(demo_dir, tmp_path, converted)
  config.data.batch_size = 16  # 8 devices x 2 micro-batches of one row
  config.train.update(steps=2, checkpoint_every=2, log_every=1, grad_accum_steps=2)
  workdir = str(tmp_path / "run")
  records = train.train(config, workdir, printer=QUIET)
  assert records[-1]["step"] == 2 and np.isfinite(records[-1]["loss"])
  # every camera in every record: logged (metrics.jsonl too) as none missing
  logged = [json.loads(line) for line in open(os.path.join(workdir, "metrics.jsonl"))]
  for record in (records[-1], logged[-1]):
    assert record["camera_missing_fraction/front"] == record["camera_missing_fraction/wrist"] == 0.0
  policy = policy_lib.Policy.from_workdir(workdir)
  assert policy.config.data.cameras == CAMERAS and policy.config.model.num_cameras == 2
  frames = np.stack([expected["front_0"][:2], expected["wrist_0"][:2]], axis=1)  # [B=2, C=2, 24, 32, 3]
  instructions = [str(expected["tasks"][0])] * 2
  actions, valid = policy.act(frames, instructions, image_mask=np.array([[True, True], [True, False]]))
  assert actions.shape == valid.shape == (2, config.tokenizer.action_horizon, 4) and np.isfinite(actions).all()
  one, _ = policy.act([expected["front_0"][0], None], instructions[0])  # one observation, its wrist frame missing
  assert one.shape == actions.shape[1:]
  report = offline.action_error(policy, converted, num_examples=4, batch_size=4, camera=CAMERAS)
  assert report["num_examples"] == 4 and np.isfinite(report["mae"])


def test_the_full_droid_config_plans_three_cameras_tokens(demo_dir, tmp_path):
  """configs/pi0_plus.py:full,mixture=droid at full size, dry run on a small dataset with DROID's published features
  (tests/test_registry.py write_droid): the checks pass (model.num_cameras = the three cameras data.cameras lists,
  each one in the dataset), the one real batch carries the three cameras in order, and the plan's activation
  estimate and FLOP count see 3 x 256 image tokens (224 px, patch 14) per example."""
  from configs import pi0_plus
  from genvla_jax import heads
  from genvla_jax.models import build
  from genvla_jax.training import flops as flops_lib
  from test_registry import write_droid

  write_droid(tmp_path / "oxe")
  config = pi0_plus.get_config("full,mixture=droid")
  assert list(config.data.cameras) == ["exterior_image_1_left", "exterior_image_2_left", "wrist_image_left"]
  assert config.model.num_cameras == 3 and build.num_image_tokens(config.model) == 3 * 256
  config.data.rlds_root, config.data.cache_dir = str(tmp_path / "oxe"), str(tmp_path / "cache")
  config.tokenizer.path = str(demo_dir / "tokenizer.model")
  config.data.robot_fraction = 1.0  # no VL corpora here
  config.data.batch_size = 8  # one row per test device
  prepare.prepare(config.data)  # converted first: the dry run then reads one real batch
  lines = []
  [planned] = train.train(config, str(tmp_path / "run"), printer=lambda *a, **k: lines.append(str(a[0])), dry_run=True)
  assert planned["batch"]["image"] == ((8, 3, 224, 224, 3), "uint8") and planned["batch"]["image_mask"] == (
    (8, 3),
    "bool",
  )
  assert any("image [8, 3, 224, 224, 3] uint8" in line for line in lines) and not (tmp_path / "run").exists()
  one = config.model.copy_and_resolve_references()
  one.num_cameras = 1
  text, horizon = config.tokenizer.max_text_len, config.tokenizer.action_horizon
  parts = planned["memory_per_device"]["activation_parts"]
  # the decoder: a sequence of 2 x 256 more image tokens than one camera's; the towers: three frames per row
  assert parts["llm"] == plan.activation_estimate(one, text + 2 * 256, horizon, rows=1)["llm"]
  assert parts["img"] == plan.activation_estimate(one, text, horizon, rows=3)["img"] > 0

  class Spy:  # the action head FLOP counting asks for its extra FLOPs, with the decoder's sequence length
    seen = []

    def extra_flops(self, model_config, batch, seq, action_horizon):
      self.seen.append(seq)
      return 0.0

  flops_lib.model_flops(config.model, 8, text, horizon, head=Spy())
  assert Spy.seen == [3 * 256 + text]
  assert flops_lib.model_flops(config.model, 8, text, horizon, head=heads.from_config(config)) > flops_lib.model_flops(
    one, 8, text, horizon, head=heads.from_config(config)
  )
