"""Metric writers (TensorBoard read back with TensorBoard's own reader, wandb through a stand-in module),
the trainer writing them, the eval report's scalars and its H.264 / GIF videos."""

import json
import os
import sys
import types

import numpy as np
import pytest
from tensorboard.backend.event_processing import event_accumulator

from genvla_jax import cli, config_schema, train
from genvla_jax.eval import harness, report
from genvla_jax.training import loop, metric_writers


def read_scalars(logdir) -> dict[str, list[tuple[int, float]]]:
  """{tag: [(step, value), ...]} as TensorBoard reads the directory (purges applied)."""
  acc = event_accumulator.EventAccumulator(str(logdir))
  acc.Reload()
  return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


def f32(x) -> float:
  return float(np.float32(x))  # event files store scalars as float32


def train_config(mode="disabled"):
  config = config_schema.defaults()
  config.train.wandb.mode = mode
  return config.train


def test_scalars_keep_the_numeric_fields_of_a_record():
  record = dict(step=4, loss=1.5, examples_per_s=np.float32(2.0), count=3, done=True, name="x")
  assert metric_writers.scalars(record) == {"loss": 1.5, "examples_per_s": 2.0, "count": 3.0}


def test_tensorboard_writer_values_and_steps(tmp_path):
  writer = metric_writers.TensorBoardWriter(str(tmp_path))
  for step in (1, 2, 5):
    writer.write(step, {"loss": 1.0 / step, "lr": 0.1 * step})
  writer.close()
  got = read_scalars(tmp_path)
  assert got == {"loss": [(1, 1.0), (2, 0.5), (5, f32(0.2))], "lr": [(1, f32(0.1)), (2, f32(0.2)), (5, 0.5)]}


def test_resume_hides_the_steps_after_the_checkpoint(tmp_path):
  first = metric_writers.for_run(train_config(), str(tmp_path), 0, {})
  for step in (1, 2, 3, 4):  # checkpoint at 2, then 3 and 4 logged before a crash
    first[0].write(step, {"loss": float(step)})
  metric_writers.close_all(first)
  second = metric_writers.for_run(train_config(), str(tmp_path), 2, {})
  for step in (3, 4, 5):
    second[0].write(step, {"loss": 10.0 + step})
  metric_writers.close_all(second)
  assert len(os.listdir(tmp_path / "tensorboard")) == 2
  assert read_scalars(tmp_path / "tensorboard") == {"loss": [(1, 1.0), (2, 2.0), (3, 13.0), (4, 14.0), (5, 15.0)]}


def test_progress_sends_every_logged_metric_to_the_writers(tmp_path):
  class Recorder:
    def __init__(self):
      self.calls = []

    def write(self, step, scalars):
      self.calls.append((step, scalars))

  recorder = Recorder()
  progress = loop.Progress(
    total_steps=10,
    start_step=0,
    global_batch=8,
    metrics_path=str(tmp_path / "metrics.jsonl"),
    log_every=1,
    printer=lambda *a, **k: None,
    writers=[recorder],
  )
  record = progress.log(2, {"loss": np.float32(0.5), "token_accuracy": np.float32(0.25)})
  progress.log_extra(2, {"probe_accuracy": 0.75, "tower": "img"}, "representation")
  assert recorder.calls[0] == (2, {k: v for k, v in record.items() if k != "step"})
  assert set(recorder.calls[0][1]) == {
    "loss",
    "token_accuracy",
    "examples_per_s",
    "tokens_per_s",
    "step_time_s",
    "data_wait_s",
  }
  assert recorder.calls[1] == (2, {"representation/probe_accuracy": 0.75})
  assert [json.loads(l)["step"] for l in open(tmp_path / "metrics.jsonl")] == [2, 2]


def test_wandb_disabled_by_default_imports_and_creates_nothing(tmp_path, monkeypatch):
  assert config_schema.defaults().train.wandb.mode == "disabled"
  monkeypatch.setattr(metric_writers, "import_wandb", lambda: pytest.fail("wandb imported while disabled"))
  writers = metric_writers.for_run(train_config(), str(tmp_path), 0, {})
  metric_writers.close_all(writers)
  assert [type(w) for w in writers] == [metric_writers.TensorBoardWriter]
  assert os.listdir(tmp_path) == ["tensorboard"]


def test_wandb_enabled_but_not_installed_is_a_one_line_user_error(tmp_path, monkeypatch, config):
  monkeypatch.setitem(sys.modules, "wandb", None)  # `import wandb` raises ImportError
  with pytest.raises(cli.UserError, match="pip install wandb") as e:
    metric_writers.check_wandb(train_config("offline").wandb)
  assert "\n" not in str(e.value)
  config.train.wandb.mode = "offline"
  workdir = tmp_path / "run"
  with pytest.raises(metric_writers.WandbMissingError):  # before any data is prepared or anything written
    train.train(config, str(workdir), printer=lambda *a, **k: None)
  assert not workdir.exists()
  with pytest.raises(cli.UserError, match="choose one of disabled, offline, online"):
    metric_writers.check_wandb(train_config("offlien").wandb)


def test_wandb_offline_run_keeps_its_id_on_resume(tmp_path, monkeypatch):
  inits, logged, finished = [], [], []
  fake = types.ModuleType("wandb")
  fake.init = lambda **kw: (
    inits.append(kw)
    or types.SimpleNamespace(
      log=lambda scalars, step: logged.append((step, scalars)), finish=lambda: finished.append(True)
    )
  )
  monkeypatch.setitem(sys.modules, "wandb", fake)
  config = train_config("offline")
  config.wandb.project = "genvla"
  for start in (0, 3):
    writers = metric_writers.for_run(config, str(tmp_path), start, {"seed": 1})
    for writer in writers:
      writer.write(start + 1, {"loss": 0.5})
    metric_writers.close_all(writers)
  run_id = open(tmp_path / "wandb" / "run_id").read().strip()
  assert len(run_id) == 12
  assert [(kw["id"], kw["mode"], kw["project"], kw["entity"], kw["resume"], kw["dir"]) for kw in inits] == [
    (run_id, "offline", "genvla", None, "allow", str(tmp_path))
  ] * 2
  assert inits[0]["config"] == {"seed": 1}
  assert logged == [(1, {"loss": 0.5}), (4, {"loss": 0.5})] and finished == [True, True]


def test_trainer_writes_the_logged_metrics_to_tensorboard(tmp_path, config):
  config.train.steps = 2
  config.train.log_every = 1
  workdir = tmp_path / "run"
  quiet = lambda *a, **k: None
  train.train(config, str(workdir), stop_after=1, printer=quiet)
  train.train(config, str(workdir), printer=quiet)  # resumes at step 1
  lines = [json.loads(l) for l in open(workdir / "metrics.jsonl")]
  assert [r["step"] for r in lines] == [1, 2]
  got = read_scalars(workdir / "tensorboard")
  assert set(got) == set(metric_writers.scalars(lines[0]))
  assert got["loss"] == [(r["step"], f32(r["loss"])) for r in lines]
  assert got["robot_loss"] == [(r["step"], f32(r["robot_loss"])) for r in lines]


def episode(protocol, task, success, frames=None):
  return harness.EpisodeResult(protocol, task, 0, "pick up the red cube", success, 4, frames=frames)


def test_eval_report_success_rates_as_scalars(tmp_path):
  results = [
    episode("visual_matching", "pick_object", True),
    episode("visual_matching", "pick_object", False),
    episode("visual_matching", "open_drawer", True),
    episode("paraphrase", "pick_object", False),
  ]
  report.write(results, str(tmp_path), "t", step=1000)
  expected = {
    "success_rate/visual_matching/pick_object": [(1000, 0.5)],
    "success_rate/visual_matching/open_drawer": [(1000, 1.0)],
    "success_rate/visual_matching/all_tasks": [(1000, f32(2 / 3))],
    "success_rate/paraphrase/pick_object": [(1000, 0.0)],
    "success_rate/paraphrase/all_tasks": [(1000, 0.0)],
  }
  assert read_scalars(tmp_path / "tensorboard") == expected
  results[-1] = episode("paraphrase", "pick_object", True)
  report.write(results, str(tmp_path), "t", step=1000)  # the same step again: replaced, not repeated
  report.write(results, str(tmp_path), "t", step=2000)
  got = read_scalars(tmp_path / "tensorboard")
  assert got["success_rate/paraphrase/all_tasks"] == [(1000, 1.0), (2000, 1.0)]
  assert got["success_rate/visual_matching/pick_object"] == [(1000, 0.5), (2000, 0.5)]
  report.write(results, str(tmp_path / "expert"), "t")  # no checkpoint: step 0
  assert read_scalars(tmp_path / "expert" / "tensorboard")["success_rate/paraphrase/all_tasks"] == [(0, 1.0)]


def test_mp4_is_h264_yuv420p_with_even_size(tmp_path):
  import av

  frames = [np.full((7, 9, 3), 40 * i, np.uint8) for i in range(5)]  # 3x: 21 x 27 -> padded to 22 x 28
  path = str(tmp_path / "v.mp4")
  report.write_mp4(frames, path)
  with av.open(path) as container:
    stream = container.streams.video[0]
    assert (stream.codec_context.name, stream.codec_context.pix_fmt) == ("h264", "yuv420p")
    decoded = [f.to_ndarray(format="rgb24") for f in container.decode(stream)]
  assert len(decoded) == 5 and decoded[0].shape == (22, 28, 3)
  assert [abs(float(f.mean()) - 40 * i) < 4 for i, f in enumerate(decoded)] == [True] * 5


def test_even_frame_repeats_the_last_row_and_column():
  frame = np.arange(3 * 5 * 3, dtype=np.uint8).reshape(3, 5, 3)
  padded = report.even_frame(frame)
  assert padded.shape == (4, 6, 3)
  np.testing.assert_array_equal(padded[:3, :5], frame)
  np.testing.assert_array_equal(padded[3, :5], frame[2])
  np.testing.assert_array_equal(padded[:3, 5], frame[:, 4])
  np.testing.assert_array_equal(report.even_frame(padded), padded)  # even sizes unchanged


@pytest.mark.parametrize("missing", ["pyav", "encoder"])
def test_videos_fall_back_to_gif_without_h264(tmp_path, monkeypatch, missing):
  from PIL import Image

  if missing == "pyav":
    monkeypatch.setitem(sys.modules, "av", None)
    reason = "PyAV is not installed (pip install av)"
  else:
    monkeypatch.setattr(report, "H264_ENCODERS", ("no_such_h264_encoder",))
    reason = "has no H.264 encoder (no_such_h264_encoder)"
  assert report.h264_encoder()[0] is None and report.h264_encoder()[1].endswith(reason)
  frames = [np.full((8, 8, 3), 40 * i, np.uint8) for i in range(3)]
  results = [
    episode("visual_matching", "pick_object", True, frames),
    episode("paraphrase", "pick_object", False, frames),
  ]
  report.write(results, str(tmp_path), "t", video_format="mp4")
  assert sorted(os.listdir(tmp_path / "videos")) == [
    "paraphrase-pick_object-seed0-failure.gif",
    "visual_matching-pick_object-seed0-success.gif",
  ]
  assert Image.open(tmp_path / "videos" / "paraphrase-pick_object-seed0-failure.gif").n_frames == 3
  videos = json.load(open(tmp_path / "results.json"))["videos"]
  assert videos == {
    "requested": "mp4",
    "format": "gif",
    "count": 2,
    "gif_fallbacks": 2,
    "fallback_reason": report.h264_encoder()[1],
  }
  assert f"Videos: 2 GIF instead of mp4: {report.h264_encoder()[1]}." in open(tmp_path / "report.md").read()
