"""The RLDS converter writes every camera of a registry entry (issue 22 item 2, the RLDS path): the real Bridge
sample converts with image_0..image_3 (the primary as "image", the others in "images"; image_3 is all-zero padding
in every step of the sample: omitted, so masked), each stored frame is the source's bytes; data.cameras feeds them as
[B,C,...] batches; one camera reads exactly what the primary-only converter wrote; older conversions are named."""

import dataclasses
import io
import json
import os
import shutil

import numpy as np
from PIL import Image
import pytest

from conftest import BRIDGE_SAMPLE, tiny_config
from genvla_jax.data import convert, pipeline, prepare, preprocess, registry, rlds

SIZE = 16  # model.image_size (the sample's frames are 64 x 64)
BRIDGE = ["image_0", "image_1", "image_2", "image_3"]

pytestmark = pytest.mark.skipif(not os.path.isdir(BRIDGE_SAMPLE), reason="shared Bridge sample not present")


@pytest.fixture(scope="module")
def episodes():
  return list(rlds.RLDSDataset(BRIDGE_SAMPLE, "val"))


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
  out = str(tmp_path_factory.mktemp("bridge") / "converted")
  return out, convert.convert(BRIDGE_SAMPLE, "bridge", "val", out)


@pytest.fixture(scope="module")
def primary_only(tmp_path_factory):
  """The same split converted as the converter did before cameras: the bridge entry with its primary camera only."""
  out = str(tmp_path_factory.mktemp("bridge1") / "converted")
  spec = registry.REGISTRY["bridge"]
  registry.REGISTRY["bridge"] = dataclasses.replace(spec, cameras=spec.cameras[:1])
  try:
    convert.convert(BRIDGE_SAMPLE, "bridge", "val", out)
  finally:
    registry.REGISTRY["bridge"] = spec
  return out


def _records(out):
  source = pipeline.StepChunkSource(out, horizon=1)
  return [convert.decode_step(source._source[i]) for i in range(len(source))]


def test_bridge_converts_every_camera_with_the_sources_frames(converted, episodes):
  out, meta = converted
  assert meta["cameras"] == BRIDGE and convert.camera_names(meta) == BRIDGE
  assert meta["camera_keys"] == {name: f"observation/{name}" for name in BRIDGE}
  # image_3 is all zeros in every step of the sample (Bridge's padding for an absent view): missing everywhere
  assert meta["camera_frames"] == {"image_0": 250, "image_1": 250, "image_2": 250, "image_3": 0}
  assert meta["provenance"]["converter_version"] == convert.CONVERTER_VERSION == 4
  records = _records(out)
  assert len(records) == meta["num_steps"] == 250 and not meta["skipped_steps"]
  for record in records:
    raw = episodes[record["episode"]]["steps"][record["step"]]
    assert record["image"] == raw["observation/image_0"]  # stored as published (JPEG bytes)
    assert set(record["images"]) == {"image_1", "image_2"}
    for name, frame in record["images"].items():
      assert frame == raw[f"observation/{name}"]
      np.testing.assert_array_equal(preprocess.decode_image(frame), preprocess.decode_image(raw[f"observation/{name}"]))
    assert not preprocess.decode_image(raw["observation/image_3"]).any()
  lines = convert.summary_lines(meta, out)
  assert lines[1].endswith("image_0 250/250, image_1 250/250, image_2 250/250, image_3 0/250")
  convert.verify(out)


def _jpeg(pixels) -> bytes:
  buffer = io.BytesIO()
  Image.fromarray(np.asarray(pixels, np.uint8)).save(buffer, format="JPEG")
  return buffer.getvalue()


def test_all_zero_frames_are_missing_only_where_the_dataset_pads_with_them():
  """A black frame of a zeros_missing camera (Bridge's image_1..3) is dropped from the record; a black primary
  frame is a picture (kept); a step without a camera's key or bytes has no entry for it; an undecodable frame
  of any camera names its camera."""
  black, grey = _jpeg(np.zeros((8, 8, 3))), _jpeg(np.full((8, 8, 3), 90))
  spec = registry.REGISTRY["bridge"]
  raw = {
    "observation/image_0": black,
    "observation/image_1": grey,
    "observation/image_2": black,
    "observation/image_3": b"",
    "observation/state": np.zeros(7, np.float32),
    "action": np.zeros(7, np.float32),
    "language_instruction": b"wipe",
  }
  step = registry.standardize_step(spec, raw)
  assert step["image"] == black and set(step["images"]) == {"image_1", "image_2"}  # empty bytes: missing
  shapes = {}
  assert convert._frames_problem(step, spec.cameras, shapes) is None
  assert step["image"] == black and step["images"] == {"image_1": grey}
  assert shapes == {"image_0": (8, 8, 3), "image_1": (8, 8, 3)}
  step["images"]["image_2"] = b"\xff\xd8 not a jpeg"
  assert convert._frames_problem(step, spec.cameras, shapes).startswith("camera image_2: ")
  step["images"]["image_2"] = _jpeg(np.full((4, 8, 3), 90))
  assert convert._frames_problem(step, spec.cameras, {}) is None  # its first frame in the episode: any shape
  assert "camera image_1: image is [4, 8, 3]" in convert._frames_problem(
    dict(step, images={"image_1": _jpeg(np.full((4, 8, 3), 90))}), spec.cameras, shapes
  )
  del raw["observation/image_1"]
  assert set(registry.standardize_step(spec, raw)["images"]) == {"image_2"}
  with pytest.raises(KeyError):  # the primary camera is required: the converter skips such a step
    registry.standardize_step(spec, {k: v for k, v in raw.items() if k != "observation/image_0"})
  # the episode transforms keep every camera
  relabelled = registry._relabel_from_states([registry.standardize_step(spec, raw)] * 2)
  assert relabelled[0]["images"] == {"image_2": black}
  with pytest.raises(ValueError, match="primary camera is required"):
    registry.DatasetSpec("x", spec.standardize, (True,), cameras=(registry.Camera("a", "k", zeros_missing=True),))
  with pytest.raises(ValueError, match="each once"):
    registry.DatasetSpec("x", spec.standardize, (True,), cameras=spec.cameras[:1] * 2)
  # single-camera entries: no "images" at all (their records are what they were)
  demo = registry.standardize_step(registry.REGISTRY["demo_targets"], {**raw, "observation/image": grey})
  assert demo["image"] == grey and "images" not in demo
  assert registry.REGISTRY["fractal"].camera_names == ["image"]


def _config(demo_dir, tmp_path, out, cameras):
  config = tiny_config(demo_dir, tmp_path / "cache")
  config.data.robot = [{"name": "bridge", "path": out, "split": "val", "weight": 1.0}]
  config.data.cameras = list(cameras)
  config.data.augment.enabled = False  # pixels compare exactly
  config.model.update(image_size=SIZE, num_cameras=max(1, len(cameras)))
  config.tokenizer.max_text_len = 96
  return config


def _first_batch(config):
  return next(iter(pipeline.make_dataset(config, prepare.prepare(config.data), seed=0)))


def _resized(data):
  return preprocess.resize_image(preprocess.decode_image(data), SIZE)


def test_two_bridge_cameras_make_two_camera_batches(demo_dir, tmp_path, converted, episodes):
  out, _ = converted
  batch = _first_batch(_config(demo_dir, tmp_path, out, ["image_0", "image_1"]))
  rows = len(batch["image"])
  assert batch["image"].shape == (rows, 2, SIZE, SIZE, 3) and batch["image_mask"].shape == (rows, 2)
  robot = batch["is_robot"]
  assert robot.any() and batch["image_mask"][robot].all()
  steps = {_resized(s["observation/image_0"]).tobytes(): s for e in episodes for s in e["steps"]}
  assert len(steps) == 250  # every step's primary frame tells it apart
  for image in batch["image"][robot]:
    np.testing.assert_array_equal(image[1], _resized(steps[image[0].tobytes()]["observation/image_1"]))
  # image_3 is padding in every step of the sample: fed as zeros, masked
  batch = _first_batch(_config(demo_dir, tmp_path, out, ["image_0", "image_3"]))
  assert (batch["image_mask"][batch["is_robot"]] == [True, False]).all()
  assert not batch["image"][batch["is_robot"]][:, 1].any()


def test_one_camera_batches_are_the_primary_only_conversions(demo_dir, tmp_path, converted, primary_only):
  """data.cameras=[] (and the primary by name) on the every-camera conversion: byte for byte the batches of the
  conversion that kept the primary camera only (what the converter wrote before cameras)."""
  out, _ = converted
  before = _first_batch(_config(demo_dir, tmp_path, primary_only, []))
  assert before["image"].shape == (len(before["image"]), SIZE, SIZE, 3) and "image_mask" not in before
  assert json.load(open(os.path.join(primary_only, "meta.json")))["cameras"] == ["image_0"]
  for cameras in ([], ["image_0"]):
    batch = _first_batch(_config(demo_dir, tmp_path, out, cameras))
    assert batch.keys() == before.keys(), cameras
    assert all(batch[k].tobytes() == before[k].tobytes() for k in before), cameras
  for a, b in zip(_records(out), _records(primary_only)):
    assert {k: v for k, v in a.items() if k != "images"}.keys() == b.keys()
    assert all(np.array_equal(a[k], b[k]) if isinstance(b[k], np.ndarray) else a[k] == b[k] for k in b)


def test_a_conversion_by_the_primary_only_converter_is_named_and_redone(tmp_path, converted):
  """An --out converted before cameras (converter_version 3: no "cameras" in meta.json) is read as it is for one
  camera; asking it for another camera says to convert again; converting into it again needs --overwrite (a
  training cache is overwritten by prepare), which writes every camera."""
  out, meta = converted
  old = str(tmp_path / "old")
  shutil.copytree(out, old)
  for name in os.listdir(old):
    if name == "meta.json" or (name.startswith("part-") and name.endswith(".json")):
      path = os.path.join(old, name)
      data = json.load(open(path))
      data["provenance"]["converter_version"] = 3
      for key in ("cameras", "camera_keys", "camera_frames"):
        data.pop(key, None)
      json.dump(data, open(path, "w"))
  old_meta = convert.finished(old)
  assert convert.camera_names(old_meta) == ["image"]
  problem = convert.camera_problem(old_meta, "image_1", old)
  assert "older genvla_jax (converter_version 3)" in problem and "--overwrite" in problem
  assert convert.camera_problem(old_meta, "", old) is None  # data.cameras=[]: its primary camera, as before
  with pytest.raises(convert.OutputDirError, match=r"converter_version 3 \(asked 4\).*--overwrite"):
    convert.convert(BRIDGE_SAMPLE, "bridge", "val", old)
  again = convert.convert(BRIDGE_SAMPLE, "bridge", "val", old, overwrite=True)
  assert again["cameras"] == BRIDGE and [s["sha256"] for s in again["shards"]] == [s["sha256"] for s in meta["shards"]]
