"""LeRobot datasets written by the lerobot library itself (tests/fixtures/make_lerobot_fixtures.sh: v3.0 by
lerobot 0.4.4 with AV1 video and with image columns, v2.1 by 0.3.3 with H.264 video and image columns; two
cameras, three episodes of 12 / 7 / 16 steps, two tasks), converted and read back: every frame once per
epoch, actions / states / instructions as written, frames within codec tolerance, statistics equal to a
numpy reference (and computed without decoding a frame), a corrupt MP4 and a truncated parquet file
reported with their episodes, resume, and a two-step training run on the converted dataset's wrist camera.

The default run reads the copy in tests/fixtures/lerobot/; `-m slow` writes the datasets afresh with the
script (its virtualenvs take minutes to build once) and checks them the same way."""

import json
import os
import shutil
import subprocess

import av
import grain
import numpy as np
import pytest

from conftest import ROOT
from genvla_jax import cli
from genvla_jax.data import convert, convert_lerobot, inspect, lerobot, pipeline, preprocess, stats as stats_lib
import tolerances

FIXTURES = os.path.join(ROOT, "tests", "fixtures", "lerobot")
SCRIPT = os.path.join(ROOT, "tests", "fixtures", "make_lerobot_fixtures.sh")
DATASETS = ("v30_video", "v30_image", "v21_video", "v21_image")
LENGTHS = (12, 7, 16)
CAMERAS = ("front", "wrist")
# Video frames: lerobot encodes yuv420p (AV1 CRF 30 / H.264), so tiny 24x32 frames lose chroma detail; the
# mean absolute error per frame stays a few levels (measured 2.8-4.1) while the next frame differs by far more.
VIDEO_MEAN_ABS = 8.0
JPEG_MEAN_ABS = 4.0  # a stored JPEG (quality 95) on top of the source frame


def _expected(root):
  with np.load(os.path.join(root, "expected.npz")) as data:
    return {k: data[k] for k in data.files}


@pytest.fixture(scope="module")
def fixtures():
  if os.path.isfile(os.path.join(FIXTURES, "expected.npz")):
    return FIXTURES
  result = subprocess.run(["bash", SCRIPT], capture_output=True, text=True, timeout=1800)
  if result.returncode:
    pytest.skip(f"lerobot fixtures absent and the script failed: {result.stderr[-500:]}")
  return result.stdout.strip().splitlines()[-1]


def _convert(root, out, **kwargs):
  kwargs.setdefault("image_format", "png")
  kwargs.setdefault("episodes_per_part", 2)
  return convert_lerobot.convert_lerobot(root, str(out), **kwargs)


def _records(out, camera=""):
  source = pipeline.StepChunkSource(str(out), horizon=1, camera=camera)
  return source, [source[i] for i in range(len(source))]


def _numpy_stats(x):
  x = np.asarray(x, np.float64)
  return {
    "mean": x.mean(0),
    "std": x.std(0),
    "min": x.min(0),
    "max": x.max(0),
    "q01": np.quantile(x, 0.01, axis=0),
    "q99": np.quantile(x, 0.99, axis=0),
  }


def _assert_stats(got, x):
  x = np.asarray(x, np.float64)
  _, atol = tolerances.float_tol(np.float64, len(x), scale=float(np.abs(x).max()))
  for key, value in _numpy_stats(x).items():
    np.testing.assert_allclose(got[key], value, rtol=0, atol=atol, err_msg=key)
  assert got["count"] == len(x)


def check_conversion(root, out, expected, image_size=0, image_format="png"):
  """Every (episode, step) once per epoch; actions, states, instructions as written; each camera's frames
  as written (exact for PNG image columns stored as they are; within codec tolerance for video)."""
  meta = json.load(open(os.path.join(out, "meta.json")))
  assert (meta["num_episodes"], meta["num_steps"], meta["skipped_steps"]) == (3, sum(LENGTHS), [])
  assert meta["cameras"] == list(CAMERAS) and meta["action_dim"] == meta["state_dim"] == 4
  video = "video" in os.path.basename(root)
  for camera in CAMERAS:
    source, records = _records(out, camera)
    epoch = grain.MapDataset.source(source).shuffle(seed=3)  # one epoch as the pipeline draws it
    seen = [(int(epoch[i]["episode"]), int(epoch[i]["step"])) for i in range(len(epoch))]
    assert sorted(seen) == [(e, s) for e, n in enumerate(LENGTHS) for s in range(n)]
    for r in records:
      e, s = int(r["episode"]), int(r["step"])
      np.testing.assert_array_equal(r["action"], expected[f"action_{e}"][s])
      np.testing.assert_array_equal(r["state"], expected[f"state_{e}"][s])
      assert r["instruction"] == expected["tasks"][e] and r["episode_length"] == LENGTHS[e]
      frames = expected[f"{camera}_{e}"]
      if image_size:
        frames = np.stack([preprocess.resize_image(f, image_size) for f in frames])
      image = preprocess.decode_image(r["image"])
      assert image.shape == frames[s].shape
      errors = np.abs(image[None].astype(np.int64) - frames).mean(axis=(1, 2, 3))  # to each frame of the episode
      error = errors[s]
      if not video and not image_size:
        np.testing.assert_array_equal(image, frames[s])  # PNG image columns: stored as they are
        continue
      bound = (VIDEO_MEAN_ABS if video else 0.0) + (JPEG_MEAN_ABS if image_format == "jpeg" else 0.5)
      assert error <= bound, (root, camera, e, s, error)
      assert int(np.argmin(errors)) == s, (root, camera, e, s, errors)  # the frame at this step, not a neighbour
  statistics = json.load(open(os.path.join(out, "stats.json")))
  actions = np.concatenate([expected[f"action_{e}"] for e in range(3)])
  _assert_stats(statistics["action"], actions)
  _assert_stats(statistics["state"], np.concatenate([expected[f"state_{e}"] for e in range(3)]))
  assert statistics["action"]["normalize_mask"] == [True, True, True, False]  # "gripper" named in info.json


@pytest.mark.parametrize("name", DATASETS)
def test_conversion_reads_back_every_frame_action_and_instruction(fixtures, tmp_path, name):
  root = os.path.join(fixtures, name)
  info = json.load(open(os.path.join(root, "meta", "info.json")))
  assert info["codebase_version"] == ("v3.0" if name.startswith("v30") else "v2.1")
  lines = []
  _convert(root, tmp_path / "out", printer=lambda *a, **k: lines.append(a[0]))
  check_conversion(root, str(tmp_path / "out"), _expected(fixtures))
  parts = 2 if name.startswith("v30") else 3  # v3.0: one data file, parts of 2 episodes; v2.1: a file each
  assert lines[-1].startswith(f"converted {parts}/{parts} parts | 35 steps") and "ETA" in lines[-1]
  assert inspect.verify_converted(str(tmp_path / "out"))["ok"]


def test_jpeg_at_a_chosen_size_and_parallel_equals_serial(fixtures, tmp_path):
  root = os.path.join(fixtures, "v30_video")
  serial = _convert(root, tmp_path / "s", image_format="jpeg", image_size=16, episodes_per_part=1)
  check_conversion(root, str(tmp_path / "s"), _expected(fixtures), image_size=16, image_format="jpeg")
  parallel = _convert(root, tmp_path / "p", image_format="jpeg", image_size=16, episodes_per_part=1, num_workers=2)
  assert [s["sha256"] for s in parallel["shards"]] == [s["sha256"] for s in serial["shards"]]
  again = _convert(root, tmp_path / "s", image_format="jpeg", image_size=16, episodes_per_part=1)
  assert again == serial  # a finished conversion of the same provenance is returned as it is
  with pytest.raises(convert.OutputDirError, match="image_size 16"):
    _convert(root, tmp_path / "s", image_format="jpeg", image_size=24, episodes_per_part=1)


def test_an_interrupted_conversion_resumes_keeping_finished_parts(fixtures, tmp_path):
  root = os.path.join(fixtures, "v21_video")
  out = tmp_path / "r"
  ds = lerobot.LeRobotDir(root)
  mapping = lerobot.resolve_mapping(ds, convert_lerobot.registry.lerobot("lerobot"))
  options = convert_lerobot.Options("lerobot", "train", mapping.as_dict(), 0, "png", 1)
  parts = convert_lerobot.plan(ds.split_episodes("train"), 1)
  assert [p.episodes for p in parts] == [(0,), (1,), (2,)]  # v2.1: one data file per episode
  os.makedirs(out)
  convert_lerobot.convert_part(root, options, parts[0], len(parts), str(out))  # what an interrupted run left
  first = out / "part-00000-of-00003.array_record"
  before = first.stat().st_mtime_ns
  lines = []
  meta = _convert(root, out, episodes_per_part=1, printer=lambda *a, **k: lines.append(a[0]))
  assert first.stat().st_mtime_ns == before and len(lines) == 2 and lines[-1].startswith("converted 3/3 parts")
  check_conversion(root, str(out), _expected(fixtures))
  assert meta["source_format"] == "lerobot v2.1" and meta["camera_keys"]["wrist"] == "observation.images.wrist"


def test_inspect_shows_the_features_and_parquet_statistics_without_decoding_a_frame(fixtures, monkeypatch):
  root = os.path.join(fixtures, "v30_video")

  def no_video(*args, **kwargs):
    raise AssertionError("a video was opened")

  monkeypatch.setattr(lerobot.VideoCursor, "_open", no_video)
  summary = inspect.inspect(root)
  assert summary["format"] == "LeRobot v3.0" and (summary["episodes"], summary["steps"], summary["fps"]) == (3, 35, 10)
  features = summary["features"]
  assert features["observation.images.front"] == {
    "dtype": "video",
    "shape": [24, 32, 3],
    "kind": "video",
    "names": ["height", "width", "channels"],
    "codec": "av1",
  }
  assert features["action"]["names"] == ["dx", "dy", "dz", "gripper"] and features["task_index"]["kind"] == "value"
  assert summary["cameras"] == {"front": "observation.images.front", "wrist": "observation.images.wrist"}
  assert summary["tasks"] == {"count": 2, "first": ["pick up the red cube", "open the top drawer"]}
  assert summary["mapping"]["gripper_dims"] == [3] and summary["mapping"]["state_key"] == "observation.state"
  expected = _expected(fixtures)
  _assert_stats(summary["statistics"]["action"], np.concatenate([expected[f"action_{e}"] for e in range(3)]))
  _assert_stats(summary["statistics"]["state"], np.concatenate([expected[f"state_{e}"] for e in range(3)]))
  text = inspect.format_text(summary)
  assert "  observation.images.wrist: dtype=video" in text and "normalized [True, True, True, False]" in text
  image_summary = inspect.inspect(os.path.join(fixtures, "v21_image"))
  assert image_summary["features"]["observation.images.front"]["kind"] == "image"


def _corrupt_copy(fixtures, name, tmp_path):
  root = str(tmp_path / name)
  shutil.copytree(os.path.join(fixtures, name), root)
  return root


def test_a_corrupt_mp4_is_reported_with_its_episode(fixtures, tmp_path):
  expected = _expected(fixtures)
  # v2.1: one file per episode; episode 1's front video overwritten with garbage past its header
  root = _corrupt_copy(fixtures, "v21_video", tmp_path)
  video = os.path.join(root, "videos/chunk-000/observation.images.front/episode_000001.mp4")
  data = bytearray(open(video, "rb").read())
  data[64:] = np.random.default_rng(0).integers(0, 256, len(data) - 64, dtype=np.uint8).tobytes()
  open(video, "wb").write(bytes(data))
  meta = _convert(root, tmp_path / "a")
  (entry,) = meta["skipped_steps"]
  assert entry["file"] == "videos/chunk-000/observation.images.front/episode_000001.mp4" and entry["episode"] == 1
  assert entry["reason"].startswith("undecodable video") and meta["skipped_episodes"] == 1
  source, records = _records(tmp_path / "a", "wrist")
  assert sorted({int(r["episode"]) for r in records}) == [0, 2] and len(records) == LENGTHS[0] + LENGTHS[2]
  lines = convert.summary_lines(meta, str(tmp_path / "a"))
  assert lines[-1] == f"  videos/chunk-000/observation.images.front/episode_000001.mp4, episode 1: {entry['reason']}"
  # v3.0: one file holds all episodes (episode 2 from 1.9 s on); cut inside episode 2's frames
  root = _corrupt_copy(fixtures, "v30_video", tmp_path)
  video = os.path.join(root, "videos/observation.images.wrist/chunk-000/file-000.mp4")
  with av.open(video) as container:
    stream = container.streams.video[0]
    cut = next(p.pos for p in container.demux(stream) if p.pts is not None and p.pts * stream.time_base >= 2.5)
  os.truncate(video, cut)
  meta = _convert(root, tmp_path / "b")
  (entry,) = meta["skipped_steps"]
  assert (entry["file"], entry["episode"]) == ("videos/observation.images.wrist/chunk-000/file-000.mp4", 2)
  _, records = _records(tmp_path / "b", "wrist")
  assert sorted({int(r["episode"]) for r in records}) == [0, 1]
  for r in records:  # what was kept is still right
    frame = expected[f"wrist_{int(r['episode'])}"][int(r["step"])]
    assert np.abs(preprocess.decode_image(r["image"]).astype(np.int64) - frame).mean() <= VIDEO_MEAN_ABS
  verify = inspect.inspect(root, verify=True)["verify"]
  assert not verify["ok"] and any("episode 2" in line and "file-000.mp4" in line for line in verify["listed"])
  with pytest.raises(convert.BadRecordError, match="episode 2"):
    _convert(root, tmp_path / "c", on_bad="fail")


def test_a_truncated_parquet_file_is_reported_with_the_episodes_it_holds(fixtures, tmp_path):
  root = _corrupt_copy(fixtures, "v21_image", tmp_path)
  data = os.path.join(root, "data/chunk-000/episode_000002.parquet")
  os.truncate(data, os.path.getsize(data) // 2)
  meta = _convert(root, tmp_path / "a")
  (entry,) = meta["skipped_steps"]
  assert (entry["file"], entry["episode"]) == ("data/chunk-000/episode_000002.parquet", 2)
  assert entry["reason"].startswith("unreadable parquet file") and meta["num_steps"] == LENGTHS[0] + LENGTHS[1]
  # v3.0: the one data file holds every episode: all are reported, and nothing is left
  root = _corrupt_copy(fixtures, "v30_image", tmp_path)
  data = os.path.join(root, "data/chunk-000/file-000.parquet")
  os.truncate(data, os.path.getsize(data) - 100)
  with pytest.raises(convert.NoUsableDataError, match="data/chunk-000/file-000.parquet: episode 0"):
    _convert(root, tmp_path / "b")
  assert not (tmp_path / "b").exists()
  checked = convert_lerobot.check(root)
  assert [(e["file"], e["episode"]) for e in checked["bad"]] == [
    ("data/chunk-000/file-000.parquet", e) for e in range(3)
  ]


def test_feature_mapping_flags_and_gripper_conventions(fixtures, tmp_path):
  root = os.path.join(fixtures, "v30_image")
  ds = lerobot.LeRobotDir(root)
  spec = convert_lerobot.registry.lerobot("lerobot")
  with pytest.raises(lerobot.MappingError, match="its features: .*observation.state"):
    lerobot.resolve_mapping(ds, spec, state_key="observation.joints")
  with pytest.raises(lerobot.MappingError, match="its cameras: .*observation.images.wrist"):
    lerobot.resolve_mapping(ds, spec, cameras=["top"])
  with pytest.raises(convert.UnknownDatasetError, match="LeRobot entry"):
    convert.convert(root, "lerobot", "train", str(tmp_path / "x"))
  meta = _convert(
    root, tmp_path / "m", cameras=["wrist"], gripper_dims=(-1,), gripper="signed_close_positive", state_key="action"
  )
  assert meta["cameras"] == ["wrist"]
  expected = _expected(fixtures)
  _, records = _records(tmp_path / "m")
  for r in records:
    e, s = int(r["episode"]), int(r["step"])
    np.testing.assert_array_equal(r["action"][:3], expected[f"action_{e}"][s][:3])
    assert r["action"][3] == (1.0 - expected[f"action_{e}"][s][3]) / 2.0 and "images" not in r
    np.testing.assert_array_equal(preprocess.decode_image(r["image"]), expected[f"wrist_{e}"][s])
  mapping = lerobot.resolve_mapping(ds, spec, gripper_dims=(3,), gripper="signed_close_positive")
  stats = lerobot.statistics(ds, mapping)
  assert stats["action"] == stats_lib.describe(
    mapping.map_actions(np.concatenate([expected[f"action_{e}"] for e in range(3)])), (True, True, True, False)
  )


def test_training_reads_the_conversion_by_its_path_and_feeds_the_chosen_camera(fixtures, tmp_path, demo_dir):
  from conftest import tiny_config
  from genvla_jax import train
  from genvla_jax.data import prepare

  out = tmp_path / "converted"
  _convert(os.path.join(fixtures, "v30_video"), out, image_format="jpeg")
  config = tiny_config(demo_dir, tmp_path / "cache")
  config.data.robot = [{"name": "lerobot", "path": str(out), "split": "train", "weight": 1.0}]
  config.data.cameras = ["wrist"]
  config.train.steps, config.train.checkpoint_every = 2, 2
  config.tokenizer.max_text_len = 64  # 4 action values as text after the instruction
  prepared = prepare.prepare(config.data)
  assert prepared.robot[0].converted_dir == str(out) and prepared.action_dim == 4
  source = pipeline.StepChunkSource(str(out), 1, pipeline.camera_of(config.data))
  record = source[5]
  _, raw = _records(out)  # the primary camera
  assert record["image"] != raw[5]["image"] and "images" not in record
  expected = _expected(fixtures)
  wrist = expected[f"wrist_{int(record['episode'])}"][int(record["step"])]
  error = np.abs(preprocess.decode_image(record["image"]).astype(np.int64) - wrist).mean()
  assert error <= VIDEO_MEAN_ABS + JPEG_MEAN_ABS
  records = train.train(config, str(tmp_path / "run"), printer=lambda *a, **k: None)
  assert records and records[-1]["step"] == 2 and np.isfinite(records[-1]["loss"])
  config.data.cameras = ["top"]
  with pytest.raises(prepare.DataConfigError, match=r"no camera 'top' .*\['front', 'wrist'\]"):
    prepare.prepare(config.data)


def test_a_lerobot_root_given_as_a_training_path_names_the_converter(fixtures, demo_dir, tmp_path):
  from conftest import tiny_config
  from genvla_jax.data import prepare

  config = tiny_config(demo_dir, tmp_path / "cache")
  config.data.robot = [
    {"name": "lerobot", "path": os.path.join(fixtures, "v21_video"), "split": "train", "weight": 1.0}
  ]
  assert prepare.config_problems(config.data) == []
  (problem,) = prepare.source_problems(config.data)
  assert "is a LeRobot dataset: convert it first (python -m genvla_jax.data.convert_lerobot" in problem
  assert isinstance(prepare.DataConfigError(problem), cli.UserError)


def test_single_camera_records_are_read_as_before(prepared):
  """RLDS conversions name no cameras: the primary camera is "image", and asking for it changes nothing."""
  robot = prepared.robot[0]
  meta = json.load(open(os.path.join(robot.converted_dir, "meta.json")))
  assert convert.camera_names(meta) == ["image"]
  plain = pipeline.StepChunkSource(robot.converted_dir, 2)
  named = pipeline.StepChunkSource(robot.converted_dir, 2, "image")
  for i in (0, 7):
    a, b = plain[i], named[i]
    assert a.keys() == b.keys() and a["image"] == b["image"]
    np.testing.assert_array_equal(a["actions"], b["actions"])
  with pytest.raises(pipeline.CameraError, match=r"its cameras: \['image'\]"):
    pipeline.StepChunkSource(robot.converted_dir, 2, "wrist")


@pytest.mark.slow
def test_the_script_writes_datasets_with_lerobot_that_convert(tmp_path):
  """Builds the fixture virtualenvs (cached) and writes the datasets afresh with lerobot 0.4.4 and 0.3.3."""
  result = subprocess.run(["bash", SCRIPT, str(tmp_path / "fresh")], capture_output=True, text=True, timeout=3000)
  assert result.returncode == 0, result.stderr[-3000:]
  fresh = str(tmp_path / "fresh")
  for name in DATASETS:
    _convert(os.path.join(fresh, name), tmp_path / name)
    check_conversion(os.path.join(fresh, name), str(tmp_path / name), _expected(fresh))


def test_the_clis_inspect_then_convert(fixtures, tmp_path):
  import sys

  env = dict(os.environ, PYTHONPATH=ROOT, JAX_PLATFORMS="cpu")
  root = os.path.join(fixtures, "v30_video")
  run = lambda *args: subprocess.run(
    [sys.executable, "-m", *args], env=env, capture_output=True, text=True, timeout=300
  )  # noqa: E731
  shown = run("genvla_jax.data.inspect", f"--data={root}")
  assert shown.returncode == 0, shown.stderr[-2000:]
  assert "  observation.images.front: dtype=video, shape=[24, 32, 3], kind=video" in shown.stdout
  out = tmp_path / "out"
  done = run(
    "genvla_jax.data.convert_lerobot",
    f"--root={root}",
    f"--out={out}",
    "--num_workers=0",
    "--cameras=wrist,front",
    "--gripper_dims=",
    "--image_size=16",
  )
  assert done.returncode == 0, done.stderr[-2000:]
  assert "converted lerobot/train: 3 episodes, 35 steps" in done.stdout
  meta = json.load(open(out / "meta.json"))
  assert meta["cameras"] == ["wrist", "front"] and meta["provenance"]["mapping"]["gripper_dims"] == []
  assert json.load(open(out / "stats.json"))["action"]["normalize_mask"] == [True] * 4
  bad = run("genvla_jax.data.convert_lerobot", f"--root={root}", f"--out={tmp_path / 'x'}", "--cameras=top")
  assert bad.returncode == 2 and bad.stderr.strip().startswith("error: ") and "its cameras" in bad.stderr
