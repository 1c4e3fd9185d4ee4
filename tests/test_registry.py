"""OXE registry: fractal (RT-1) in its published TFDS layout, gripper conventions, Bridge relabelling,
named mixtures, short and published dataset names."""

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
