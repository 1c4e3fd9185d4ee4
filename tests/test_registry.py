"""OXE registry: fractal (RT-1) in its published TFDS layout, gripper conventions, Bridge relabelling,
named mixtures, short and published dataset names."""

import io
import json
import os
import shutil

import numpy as np
from PIL import Image
import pytest

from conftest import BRIDGE_SAMPLE
from genvla_jax import cli
from genvla_jax.data import convert, pipeline, registry, rlds, rlds_writer


@pytest.mark.parametrize(
  "relative, absolute",
  [
    ([0, 0, 1, 0, 0, -1, 0], [1, 1, 0, 0, 0, 1, 1]),  # closes, then opens (starts open)
    ([0, -0.5, 0, 0.05, 0.9], [0, 1, 1, 1, 0]),  # first command opens: it started closed
    ([0, 0.05, -0.05], [1, 1, 1]),  # no command above threshold: open throughout
  ],
)
def test_rel2abs_gripper(relative, absolute):
  np.testing.assert_array_equal(registry.rel2abs_gripper(relative), absolute)


def write_fractal(root, episodes=3, steps=5, seed=0):
  """A small dataset with fractal20220817_data's step features (images 64x80 instead of 256x320),
  written by TFDS. The published files are TFRecord; TFDS needs TensorFlow to write TFRecord, which this
  project does not install, so this one is ArrayRecord (the TFRecord read path is tested on the real
  Bridge sample). Returns (dataset dir, relative gripper per episode)."""
  import tensorflow_datasets as tfds

  rng = np.random.default_rng(seed)
  grippers = [np.where(rng.random(steps) < 0.3, rng.choice([-1.0, 1.0], steps), 0.0) for _ in range(episodes)]

  def episode(e):
    out = []
    for t in range(steps):
      out.append(
        {
          "action": {
            "world_vector": rng.normal(0, 0.02, 3).astype(np.float32),
            "rotation_delta": rng.normal(0, 0.05, 3).astype(np.float32),
            "gripper_closedness_action": np.array([grippers[e][t]], np.float32),
            "terminate_episode": np.array([0, 1, 0], np.int32),
            "base_displacement_vector": np.zeros(2, np.float32),
            "base_displacement_vertical_rotation": np.zeros(1, np.float32),
          },
          "observation": {
            "image": Image.fromarray(rng.integers(0, 255, (64, 80, 3), dtype=np.uint8)),
            "base_pose_tool_reached": rng.normal(0, 1, 7).astype(np.float32),
            "gripper_closed": np.array([0.0], np.float32),
            "natural_language_instruction": "pick coke can",
            "natural_language_embedding": np.zeros(512, np.float32),
          },
          "reward": 0.0,
          "discount": 1.0,
          "is_first": t == 0,
          "is_last": t == steps - 1,
          "is_terminal": t == steps - 1,
        }
      )
    return out

  f = tfds.features
  step = {
    "action": {
      "world_vector": f.Tensor(shape=(3,), dtype=np.float32),
      "rotation_delta": f.Tensor(shape=(3,), dtype=np.float32),
      "gripper_closedness_action": f.Tensor(shape=(1,), dtype=np.float32),
      "terminate_episode": f.Tensor(shape=(3,), dtype=np.int32),
      "base_displacement_vector": f.Tensor(shape=(2,), dtype=np.float32),
      "base_displacement_vertical_rotation": f.Tensor(shape=(1,), dtype=np.float32),
    },
    "observation": {
      "image": f.Image(shape=(64, 80, 3), encoding_format="jpeg"),
      "base_pose_tool_reached": f.Tensor(shape=(7,), dtype=np.float32),
      "gripper_closed": f.Tensor(shape=(1,), dtype=np.float32),
      "natural_language_instruction": f.Text(),
      "natural_language_embedding": f.Tensor(shape=(512,), dtype=np.float32),
    },
    "reward": f.Scalar(dtype=np.float32),
    "discount": f.Scalar(dtype=np.float32),
    "is_first": np.bool_,
    "is_last": np.bool_,
    "is_terminal": np.bool_,
  }
  data_dir = rlds_writer.write_rlds(
    str(root),
    "fractal20220817_data",
    step,
    {"train": ((e, {"steps": episode(e)}) for e in range(episodes))},
    version="0.1.0",
  )
  return data_dir, grippers


def test_fractal_converts_with_absolute_gripper(tmp_path):
  rlds_dir, grippers = write_fractal(tmp_path / "oxe")
  assert rlds.RLDSDataset(rlds_dir, "train").file_format == "array_record"
  meta = convert.convert(rlds_dir, "fractal", "train", str(tmp_path / "conv"))
  assert (meta["num_episodes"], meta["num_steps"], meta["action_dim"], meta["state_dim"]) == (3, 15, 7, 8)
  source = pipeline.StepChunkSource(str(tmp_path / "conv"), horizon=1)
  records = [convert.decode_step(source._source[i]) for i in range(len(source))]
  for record in records:
    expected = registry.rel2abs_gripper(grippers[record["episode"]])[record["step"]]
    assert record["action"][6] == expected and record["instruction"] == "pick coke can"
    assert record["image"][:2] == b"\xff\xd8"


def test_bridge_relabelled_from_states(tmp_path):
  if not os.path.isdir(BRIDGE_SAMPLE):
    pytest.skip("shared Bridge sample not present")
  local = tmp_path / "bridge_dataset" / "1.0.0"
  shutil.copytree(BRIDGE_SAMPLE, local)
  episodes = list(rlds.RLDSDataset(str(local), "val"))
  meta = convert.convert(str(local), "bridge_relabeled", "val", str(tmp_path / "conv"))
  assert meta["num_steps"] == sum(len(e["steps"]) - 1 for e in episodes)
  source = pipeline.StepChunkSource(str(tmp_path / "conv"), horizon=1)
  first = convert.decode_step(source._source[0])
  steps = episodes[first["episode"]]["steps"]
  states = np.stack([steps[1]["observation/state"][:6], steps[0]["observation/state"][:6]])
  # a difference of float32 states, rounded once to float32 (in whatever precision it was taken): eps * max|state|
  np.testing.assert_allclose(
    first["action"][:6], states[0] - states[1], rtol=0, atol=np.finfo(np.float32).eps * np.abs(states).max()
  )
  assert first["action"][6] == steps[0]["action"][6]


def test_named_mixtures_in_config():
  from configs import pi0_plus

  assert [e["name"] for e in pi0_plus.get_config().data.robot] == ["fractal", "bridge"]
  assert [e["name"] for e in pi0_plus.get_config("full,mixture=bridge").data.robot] == ["bridge"]
  with pytest.raises(KeyError, match="unknown mixture"):
    pi0_plus.get_config("full,mixture=nope")


def test_published_names_resolve_to_their_entries():
  assert registry.resolve("bridge_dataset") == registry.resolve("bridge") == "bridge"
  assert registry.resolve("fractal20220817_data") == registry.resolve("fractal") == "fractal"
  assert registry.get("bridge_dataset") is registry.REGISTRY["bridge"]
  assert registry.get("fractal20220817_data") is registry.REGISTRY["fractal"]
  for published, entry in registry.PUBLISHED_NAMES.items():
    assert entry in registry.REGISTRY and published not in registry.REGISTRY, published
  assert registry.MIXTURES["paper"][0]["path"].split("/")[0] in registry.PUBLISHED_NAMES  # the release's dirs


def test_unknown_dataset_name_is_one_line_listing_the_known_names_and_the_fix():
  with pytest.raises(registry.UnknownDatasetError) as error:
    registry.get("bridge_dataset_v3")
  message = cli.one_line(error.value)
  assert "\n" not in message and message.startswith("error: unknown robot dataset 'bridge_dataset_v3';")
  for name in [*registry.REGISTRY, *registry.PUBLISHED_NAMES]:
    assert name in message, name
  assert "genvla_jax/data/registry.py" in message and "PUBLISHED_NAMES" in message
  assert isinstance(error.value, cli.UserError) and convert.UnknownDatasetError is registry.UnknownDatasetError


def test_both_names_give_the_same_conversion(tmp_path):
  """The published name converts exactly as the short one (same records, statistics, provenance), so a
  conversion under one name is reused under the other."""
  if not os.path.isdir(BRIDGE_SAMPLE):
    pytest.skip("shared Bridge sample not present")
  short = convert.convert(BRIDGE_SAMPLE, "bridge", "val", str(tmp_path / "short"))
  published = convert.convert(BRIDGE_SAMPLE, "bridge_dataset", "val", str(tmp_path / "published"))
  assert published["dataset"] == short["dataset"] == "bridge"
  assert published["provenance"] == short["provenance"] and published["num_steps"] == short["num_steps"] == 250
  assert [s["sha256"] for s in published["shards"]] == [s["sha256"] for s in short["shards"]]
  for name in ("stats.json", "episodes.npz"):
    assert (tmp_path / "short" / name).read_bytes() == (tmp_path / "published" / name).read_bytes(), name
  assert convert.convert(BRIDGE_SAMPLE, "bridge_dataset", "val", str(tmp_path / "short")) == short  # reused


def test_the_entry_is_inferred_from_dataset_info(tmp_path):
  if not os.path.isdir(BRIDGE_SAMPLE):
    pytest.skip("shared Bridge sample not present")
  assert convert.dataset_from_info(BRIDGE_SAMPLE) == ("bridge", "bridge_dataset")
  fractal_dir, _ = write_fractal(tmp_path / "oxe", episodes=1, steps=2)
  assert convert.dataset_from_info(fractal_dir) == ("fractal", "fractal20220817_data")
  other = tmp_path / "kuka" / "0.1.0"
  other.mkdir(parents=True)
  (other / "features.json").write_text("{}")
  (other / "dataset_info.json").write_text(json.dumps({"name": "kuka"}))
  with pytest.raises(registry.UnknownDatasetError, match=r"unknown robot dataset 'kuka' \(the name in .*kuka/0.1.0/"):
    convert.dataset_from_info(str(other))


# DROID 1.0.1 as published (droid-dataset/droid docs/the-droid-dataset.md, "Dataset Schema"): per step
# observation/{exterior_image_1_left, exterior_image_2_left, wrist_image_left} 180 x 320 x 3 JPEG,
# observation/{cartesian_position [6], gripper_position [1], joint_position [7]} float64,
# action_dict/{cartesian_position [6], cartesian_velocity [6], gripper_position [1], gripper_velocity [1],
# joint_position [7], joint_velocity [7]} float64, action [7] float64, language_instruction(_2, _3), discount, reward,
# is_first / is_last / is_terminal.
DROID_IMAGES = ("exterior_image_1_left", "exterior_image_2_left", "wrist_image_left")
DROID_OBSERVATION = {"cartesian_position": 6, "gripper_position": 1, "joint_position": 7}
DROID_ACTION_DICT = {
  "cartesian_position": 6,
  "cartesian_velocity": 6,
  "gripper_position": 1,
  "gripper_velocity": 1,
  "joint_position": 7,
  "joint_velocity": 7,
}


def _jpeg(rng, shape) -> bytes:
  out = io.BytesIO()
  Image.fromarray(rng.integers(0, 255, shape, dtype=np.uint8)).save(out, format="JPEG")
  return out.getvalue()


def droid_step(rng, image_shape=(180, 320, 3)) -> dict:
  """One DROID step as rlds.RLDSDataset gives it: flattened keys, encoded frames, float64 vectors, text bytes."""
  step = {f"observation/{k}": _jpeg(rng, image_shape) for k in DROID_IMAGES}
  step.update({f"observation/{k}": rng.uniform(-1, 1, n) for k, n in DROID_OBSERVATION.items()})
  step.update({f"action_dict/{k}": rng.uniform(-1, 1, n) for k, n in DROID_ACTION_DICT.items()})
  step["observation/gripper_position"] = rng.uniform(0, 1, 1)
  step["action_dict/gripper_position"] = rng.uniform(0, 1, 1)  # 0 = open, 1 = closed
  step["action"] = rng.uniform(-1, 1, 7)
  for key in ("language_instruction", "language_instruction_2", "language_instruction_3"):
    step[key] = b"put the marker in the cup"
  step.update(discount=1.0, reward=0.0, is_first=False, is_last=False, is_terminal=False)
  return step


def test_droid_entry_standardizes_velocity_gripper_state_and_three_cameras():
  spec = registry.get("droid")
  step = droid_step(np.random.default_rng(0))
  out = registry.standardize_step(spec, step)
  expected_action = np.concatenate([step["action_dict/cartesian_velocity"], 1.0 - step["action_dict/gripper_position"]])
  np.testing.assert_array_equal(out["action"], expected_action.astype(np.float32))
  expected_state = np.concatenate([step["observation/cartesian_position"], step["observation/gripper_position"]])
  np.testing.assert_array_equal(out["state"], expected_state.astype(np.float32))
  assert out["action"].dtype == out["state"].dtype == np.float32 and out["action"].shape == (7,)
  assert out["instruction"] == "put the marker in the cup"
  assert spec.normalize_mask == (True,) * 6 + (False,)
  assert spec.camera_names == list(DROID_IMAGES) == registry.mixture_cameras("droid")
  assert out["image"] == step["observation/exterior_image_1_left"]  # the primary camera
  assert out["images"] == {k: step[f"observation/{k}"] for k in DROID_IMAGES[1:]}
  assert Image.open(io.BytesIO(out["images"]["wrist_image_left"])).size == (320, 180)
  step["observation/wrist_image_left"] = b""  # a step without a frame of a camera: left out, the pipeline masks it
  assert list(registry.standardize_step(spec, step)["images"]) == ["exterior_image_2_left"]
  assert registry.resolve("droid") == "droid" and registry.mixture("droid") == [
    dict(name="droid", path="droid/1.0.1", split="train", weight=1.0)
  ]


def write_droid(root, episodes=2, steps=4, seed=0, image_shape=(36, 64, 3)):
  """A small dataset with DROID 1.0.1's step and episode features (frames 36 x 64 instead of 180 x 320), written by
  TFDS as ArrayRecord (see write_fractal). Returns (dataset dir, the steps written per episode)."""
  import tensorflow_datasets as tfds

  rng = np.random.default_rng(seed)
  f = tfds.features
  step_features = {
    "observation": {
      **{k: f.Image(shape=image_shape, encoding_format="jpeg") for k in DROID_IMAGES},
      **{k: f.Tensor(shape=(n,), dtype=np.float64) for k, n in DROID_OBSERVATION.items()},
    },
    "action_dict": {k: f.Tensor(shape=(n,), dtype=np.float64) for k, n in DROID_ACTION_DICT.items()},
    "action": f.Tensor(shape=(7,), dtype=np.float64),
    "language_instruction": f.Text(),
    "language_instruction_2": f.Text(),
    "language_instruction_3": f.Text(),
    "discount": f.Scalar(dtype=np.float32),
    "reward": f.Scalar(dtype=np.float32),
    "is_first": np.bool_,
    "is_last": np.bool_,
    "is_terminal": np.bool_,
  }
  written = []
  for e in range(episodes):
    episode = []
    for t in range(steps):
      step = {
        "observation": {
          **{k: Image.fromarray(rng.integers(0, 255, image_shape, dtype=np.uint8)) for k in DROID_IMAGES},
          **{k: rng.uniform(-1, 1, n) for k, n in DROID_OBSERVATION.items()},
        },
        "action_dict": {k: rng.uniform(-1, 1, n) for k, n in DROID_ACTION_DICT.items()},
        "action": rng.uniform(-1, 1, 7),
        "language_instruction": f"task {e}",
        "language_instruction_2": "",
        "language_instruction_3": "",
        "discount": 1.0,
        "reward": float(t == steps - 1),
        "is_first": t == 0,
        "is_last": t == steps - 1,
        "is_terminal": t == steps - 1,
      }
      step["action_dict"]["gripper_position"] = rng.uniform(0, 1, 1)
      episode.append(step)
    written.append(episode)
  metadata = {"file_path": f.Text(), "recording_folderpath": f.Text()}
  data_dir = rlds_writer.write_rlds(
    str(root),
    "droid",
    step_features,
    {
      "train": (
        (e, {"steps": s, "episode_metadata": {"file_path": f"success/{e}/trajectory.h5", "recording_folderpath": ""}})
        for e, s in enumerate(written)
      )
    },
    version="1.0.1",
    metadata_features=metadata,
  )
  return data_dir, written


def test_droid_converts_with_its_three_cameras(tmp_path):
  rlds_dir, written = write_droid(tmp_path / "oxe")
  assert rlds_dir.endswith(os.path.join("droid", "1.0.1"))
  assert convert.dataset_from_info(rlds_dir) == ("droid", "droid")
  meta = convert.convert(rlds_dir, "droid", "train", str(tmp_path / "conv"))
  assert (meta["num_episodes"], meta["num_steps"], meta["action_dim"], meta["state_dim"]) == (2, 8, 7, 7)
  assert meta["cameras"] == list(DROID_IMAGES)
  source = pipeline.StepChunkSource(str(tmp_path / "conv"), horizon=1, camera=list(DROID_IMAGES))
  for i in range(len(source)):
    record = source[i]
    step = written[int(record["episode"])][int(record["step"])]
    velocity, gripper = step["action_dict"]["cartesian_velocity"], step["action_dict"]["gripper_position"]
    np.testing.assert_allclose(record["actions"][0], np.concatenate([velocity, 1.0 - gripper]), rtol=1e-6)
    assert record["instruction"] == f"task {int(record['episode'])}" and len(record["frames"]) == 3
    assert all(frame[:2] == b"\xff\xd8" for frame in record["frames"])  # every camera, JPEG
  assert not source.missing


# DROID 1.0.1 as LeRobot publishes it (lerobot/droid_1.0.1, cadene/droid_1.0.1): the features lerobot's
# examples/port_datasets/droid_rlds/port_droid.py (DROID_FEATURES) writes, in its order, + LeRobot's own columns.
DROID_LEROBOT_CAMERAS = ("wrist_left", "exterior_1_left", "exterior_2_left")  # info.json order
DROID_LEROBOT_NUMERIC = {
  "observation.state.gripper_position": 1,
  "observation.state.cartesian_position": 6,
  "observation.state.joint_position": 7,
  "observation.state": 8,  # joint positions (7) + gripper
  "action.gripper_position": 1,
  "action.gripper_velocity": 1,
  "action.cartesian_position": 6,
  "action.cartesian_velocity": 6,
  "action.joint_position": 7,
  "action.joint_velocity": 7,
  "action.original": 7,  # the RLDS steps/action
  "action": 8,  # commanded joint positions (7) + gripper position (0 = open, 1 = closed)
}


def write_droid_lerobot(root, lengths=(5, 3), seed=0, image_shape=(180, 320, 3)):
  """A LeRobot v2.1 root with DROID's feature names and shapes; its cameras as image columns (JPEG bytes in the
  parquet rows; the published dataset stores them as video: the converter reads both). -> {episode: columns}."""
  import pyarrow as pa
  import pyarrow.parquet as pq

  rng = np.random.default_rng(seed)
  tasks = ["put the marker in the cup", "close the drawer"]
  features = {
    f"observation.images.{c}": {"dtype": "image", "shape": list(image_shape), "names": ["height", "width", "channels"]}
    for c in DROID_LEROBOT_CAMERAS
  }
  features.update({k: {"dtype": "float32", "shape": [n], "names": None} for k, n in DROID_LEROBOT_NUMERIC.items()})
  for k, dtype in (("timestamp", "float32"), ("frame_index", "int64"), ("episode_index", "int64")):
    features[k] = {"dtype": dtype, "shape": [1], "names": None}
  features.update({k: {"dtype": "int64", "shape": [1], "names": None} for k in ("index", "task_index")})
  os.makedirs(root / "meta")
  os.makedirs(root / "data" / "chunk-000")
  info = {
    "codebase_version": "v2.1",
    "robot_type": "Franka",
    "fps": 15,
    "chunks_size": 1000,
    "splits": {"train": f"0:{len(lengths)}"},
    "data_path": "data/chunk-{episode_chunk:03d}/episode_{episode_index:06d}.parquet",
    "video_path": None,
    "features": features,
  }
  (root / "meta" / "info.json").write_text(json.dumps(info))
  (root / "meta" / "tasks.jsonl").write_text(
    "".join(json.dumps({"task_index": i, "task": t}) + "\n" for i, t in enumerate(tasks))
  )
  episodes, written, index = [], {}, 0
  for e, n in enumerate(lengths):
    columns = {k: rng.uniform(-1, 1, (n, d)).astype(np.float32) for k, d in DROID_LEROBOT_NUMERIC.items()}
    columns["action"][:, 7] = rng.uniform(0, 1, n)
    images = {c: [_jpeg(rng, image_shape) for _ in range(n)] for c in DROID_LEROBOT_CAMERAS}
    table = {
      f"observation.images.{c}": [{"bytes": b, "path": f"{c}_{e}_{t}.jpg"} for t, b in enumerate(images[c])]
      for c in images
    }
    table.update({k: pa.FixedSizeListArray.from_arrays(v.reshape(-1), v.shape[1]) for k, v in columns.items()})
    table.update(
      timestamp=np.arange(n, dtype=np.float32) / 15,
      frame_index=np.arange(n),
      episode_index=np.full(n, e),
      index=np.arange(index, index + n),
      task_index=np.full(n, e % len(tasks)),
    )
    pq.write_table(pa.table(table), root / "data" / "chunk-000" / f"episode_{e:06d}.parquet")
    episodes.append({"episode_index": e, "tasks": [tasks[e % len(tasks)]], "length": n})
    written[e] = dict(columns, task=tasks[e % len(tasks)], **images)
    index += n
  (root / "meta" / "episodes.jsonl").write_text("".join(json.dumps(r) + "\n" for r in episodes))
  return written


def test_droid_lerobot_entry_maps_joint_positions_gripper_and_three_cameras(tmp_path):
  from genvla_jax.data import convert_lerobot, lerobot, preprocess

  written = write_droid_lerobot(tmp_path / "droid_lerobot")
  spec = registry.lerobot("droid_lerobot")
  mapping = lerobot.resolve_mapping(lerobot.LeRobotDir(str(tmp_path / "droid_lerobot")), spec)
  cameras = ["exterior_1_left", "exterior_2_left", "wrist_left"]  # the RLDS entry's order, not info.json's
  assert [name for name, _ in mapping.cameras] == cameras == registry.mixture_cameras("droid_lerobot")
  assert (mapping.state_key, mapping.action_key, mapping.action_dim, mapping.state_dim) == (
    "observation.state",
    "action",
    8,
    8,
  )
  assert mapping.normalize_mask == (True,) * 7 + (False,)
  meta = convert_lerobot.convert_lerobot(
    str(tmp_path / "droid_lerobot"), str(tmp_path / "out"), dataset="droid_lerobot", image_format="png"
  )
  assert meta["cameras"] == cameras and meta["dataset"] == "droid_lerobot"
  assert (meta["num_episodes"], meta["num_steps"], meta["action_dim"], meta["state_dim"]) == (2, 8, 8, 8)
  source = pipeline.StepChunkSource(str(tmp_path / "out"), horizon=1, camera=cameras)
  for i in range(len(source)):
    record = source[i]
    e, t = int(record["episode"]), int(record["step"])
    action = written[e]["action"][t]
    np.testing.assert_array_equal(record["actions"][0], np.concatenate([action[:7], 1.0 - action[7:]]))  # 1 = open
    np.testing.assert_array_equal(record["state"], written[e]["observation.state"][t])
    assert record["instruction"] == written[e]["task"]
    for name, frame in zip(cameras, record["frames"]):  # PNG: the source JPEG's pixels exactly, camera by camera
      np.testing.assert_array_equal(preprocess.decode_image(frame), preprocess.decode_image(written[e][name][t]))
  # the names: "droid" is the RLDS entry, "droid_lerobot" the LeRobot one; no name is both
  assert not set(registry.REGISTRY) & set(registry.LEROBOT)
  assert registry.resolve("droid_lerobot") == "droid_lerobot" and registry.get("droid") is registry.REGISTRY["droid"]


def test_every_mixtures_cameras_are_its_datasets_cameras():
  """MIXTURE_CAMERAS names, for every mixture, cameras each of its datasets records under those names: an RLDS
  entry's Camera names, a LeRobot entry's camera features without "observation.images."."""
  assert set(registry.MIXTURE_CAMERAS) == set(registry.MIXTURES)
  for name, entries in registry.MIXTURES.items():
    cameras = registry.mixture_cameras(name)
    assert len(set(cameras)) == len(cameras) != 1, name  # none (the primary camera alone) or several
    for entry in entries:
      if registry.is_lerobot(entry["name"]):
        keys = registry.lerobot(entry["name"]).cameras
        recorded = [k.removeprefix("observation.images.") for k in keys]
      else:
        recorded = registry.get(entry["name"]).camera_names
      assert set(cameras) <= set(recorded), (name, entry["name"])
  assert registry.mixture("libero", robot_dir="/data/out")[0]["path"] == "/data/out"
  assert registry.mixture("droid_lerobot", robot_dir="rel")[0]["path"] == os.path.abspath("rel")
  assert all(e["path"] == registry.ROBOT_DIR for e in registry.MIXTURES["libero"])  # the table is not changed
