"""Faults around a run directory: readers that must not touch it, restarts with another config or other
assets, corrupt checkpoints, failed starts that must leave nothing behind, and the CLIs' one-line errors.
Each test reproduces a failure found by the bad-input probe of issue 18 (it failed before the fix)."""

import glob
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

from conftest import ROOT, tiny_config
from genvla_jax import cli, train
from genvla_jax.inference import policy as policy_lib
from genvla_jax.training import checkpoint, run_dir

QUIET = lambda *a, **k: None


@pytest.fixture(scope="module")
def trained(tmp_path_factory, demo_dir, cache_dir):
  """A 6-step run with checkpoints at steps 3 and 6 (tests copy it before changing anything)."""
  config = tiny_config(demo_dir, cache_dir)
  workdir = tmp_path_factory.mktemp("faults") / "run"
  train.train(config, str(workdir), printer=QUIET)
  return config, workdir


def _copy(run, tmp_path):
  target = tmp_path / "run"
  shutil.copytree(run, target)
  return target


def _corrupt_params(workdir, step):
  """Truncates every array data file of the step's params item (as a disk-full or killed copy would)."""
  files = [
    f
    for f in glob.glob(str(workdir / "checkpoints" / str(step) / "params" / "**" / "*"), recursive=True)
    if os.path.isfile(f) and os.path.getsize(f) > 64
  ]
  assert files
  for f in files:
    with open(f, "r+b") as fh:
      fh.truncate(os.path.getsize(f) // 2)


def _tree(path) -> list[str]:
  return sorted(os.path.relpath(os.path.join(d, n), path) for d, ds, fs in os.walk(path) for n in ds + fs)


# 1. A reader must not delete the trainer's in-progress save.
def test_reader_leaves_a_save_in_progress_alone(trained, tmp_path):
  _, run = trained
  workdir = _copy(run, tmp_path)
  in_progress = workdir / "checkpoints" / "9.orbax-checkpoint-tmp-1234567"
  (in_progress / "params").mkdir(parents=True)
  (in_progress / "params" / "partial").write_bytes(b"x" * 100)
  before = _tree(workdir)
  policy = policy_lib.Policy.from_workdir(str(workdir))
  assert policy.step == 6
  assert _tree(workdir) == before  # nothing created, cleaned or deleted


def test_reader_of_a_missing_run_creates_nothing(tmp_path):
  missing = tmp_path / "no_such_run"
  with pytest.raises(checkpoint.CheckpointError, match="does not exist"):
    policy_lib.Policy.from_workdir(str(missing))
  assert not missing.exists()
  empty = tmp_path / "empty_run"
  empty.mkdir()
  with pytest.raises(checkpoint.CheckpointError, match="no checkpoints directory"):
    policy_lib.Policy.from_workdir(str(empty))
  assert _tree(empty) == []


# 2. A run directory is bound to its config and assets.
def test_restart_with_another_config_is_refused_and_changes_nothing(trained, tmp_path):
  config, run = trained
  workdir = _copy(run, tmp_path)
  before = {p: open(workdir / p, "rb").read() for p in ("config.json", "assets/tokenizer.model", "assets/stats.json")}
  other = tiny_config(config.data.demo_dir, config.data.cache_dir)
  other.tokenizer.decimals = 3
  other.model.llm.width = other.model.llm.width * 2
  with pytest.raises(run_dir.RunDirError, match=r"tokenizer.decimals: 4 -> 3") as error:
    train.train(other, str(workdir), printer=QUIET)
  assert "model.llm.width" in str(error.value)
  assert {p: open(workdir / p, "rb").read() for p in before} == before


def test_restart_with_another_tokenizer_file_is_refused(trained, tmp_path):
  config, run = trained
  workdir = _copy(run, tmp_path)
  other_tokenizer = tmp_path / "tokenizer.model"
  data = bytearray(open(config.tokenizer.path, "rb").read())
  data[-1] ^= 0xFF
  other_tokenizer.write_bytes(bytes(data))
  other = tiny_config(config.data.demo_dir, config.data.cache_dir)
  other.tokenizer.path = str(other_tokenizer)
  saved = json.load(open(workdir / "config.json"))
  saved["tokenizer"]["path"] = str(other_tokenizer)  # same config text, another file behind it
  (workdir / "config.json").write_text(json.dumps(saved))
  before = open(workdir / "assets" / "tokenizer.model", "rb").read()
  with pytest.raises(run_dir.RunDirError, match="assets/tokenizer.model differs"):
    train.train(other, str(workdir), printer=QUIET)
  assert open(workdir / "assets" / "tokenizer.model", "rb").read() == before


def test_config_differences_allow_only_resumable_fields():
  saved = {"train": {"steps": 10, "log_every": 2}, "model": {"action_expert": {"action_dim": 7}}, "seed": 0}
  requested = {"train": {"steps": 20, "log_every": 2}, "model": {"action_expert": {"action_dim": 0}}, "seed": 1}
  blocking, resumable = run_dir.config_differences(saved, requested)
  assert blocking == ["seed: 0 -> 1"]
  assert resumable == ["train.steps: 10 -> 20"]


# 3. Corrupt newest checkpoint: readers and the trainer fall back to the newest good one.
def test_reader_falls_back_from_a_corrupt_checkpoint(trained, tmp_path):
  _, run = trained
  workdir = _copy(run, tmp_path)
  _corrupt_params(workdir, 6)
  before = _tree(workdir)
  warnings = []
  ckpt = checkpoint.Checkpointer(str(workdir / "checkpoints"), read_only=True)
  step, _ = ckpt.restore_newest_good(lambda s: ckpt.restore_meta(s) and _restore_params(ckpt, s), warn=warnings.append)
  ckpt.close()
  assert step == 3 and len(warnings) == 2 and "checkpoints/6 cannot be read" in warnings[0]
  assert policy_lib.Policy.from_workdir(str(workdir)).step == 3
  with pytest.raises(checkpoint.CheckpointError, match="checkpoints/6 cannot be read"):
    policy_lib.Policy.from_workdir(str(workdir), step=6)
  with pytest.raises(checkpoint.CheckpointError, match=r"no checkpoint for step 7 .*steps: \[6, 3\]"):
    policy_lib.Policy.from_workdir(str(workdir), step=7)
  assert _tree(workdir) == before  # the reader set nothing aside


def _restore_params(ckpt, step):
  import ml_collections
  import jax
  from genvla_jax.models import build
  from genvla_jax.training import state as state_lib

  config = ml_collections.ConfigDict(ckpt.restore_meta(step)["config"])
  model = build.from_config(config.model)
  return ckpt.restore_params(step, state_lib.abstract_params(model, config.model.image_size, jax.devices()[0]))


def test_trainer_resumes_from_the_newest_good_checkpoint_without_duplicate_metrics(trained, tmp_path):
  config, run = trained
  workdir = _copy(run, tmp_path)
  _corrupt_params(workdir, 6)
  messages = []
  records = train.train(config, str(workdir), printer=lambda *a, **k: messages.append(str(a[0])))
  assert any("warning: checkpoint" in m and "checkpoints/6 cannot be read" in m for m in messages)
  assert any("resumed from" in m and "(step 3)" in m for m in messages)
  assert [r["step"] for r in records] == [4, 6]
  assert glob.glob(str(workdir / "checkpoints" / "6.corrupt-*"))  # set aside, not deleted
  steps = [json.loads(line)["step"] for line in open(workdir / "metrics.jsonl")]
  assert steps == sorted(set(steps)) == [2, 3, 4, 6]  # no step logged twice
  original = {r["step"]: r["loss"] for r in map(json.loads, open(run / "metrics.jsonl"))}
  resumed = {r["step"]: r["loss"] for r in map(json.loads, open(workdir / "metrics.jsonl"))}
  np.testing.assert_array_equal([resumed[s] for s in (4, 6)], [original[s] for s in (4, 6)])  # exact resume
  assert policy_lib.Policy.from_workdir(str(workdir)).step == 6


def test_truncate_metrics_drops_later_and_torn_records(tmp_path):
  path = tmp_path / "metrics.jsonl"
  path.write_text("".join(json.dumps({"step": s, "loss": 1.0}) + "\n" for s in (2, 4, 6, 8)) + '{"step": 1')
  assert run_dir.truncate_metrics(str(path), 4) == 3
  assert [json.loads(line)["step"] for line in open(path)] == [2, 4]


# 4. Failed starts leave nothing behind, and fail before any heavy work.
def test_missing_tokenizer_fails_before_data_and_leaves_nothing(demo_dir, tmp_path):
  config = tiny_config(demo_dir, tmp_path / "cache")
  config.data.demo_dir = ""  # nothing generates the tokenizer
  config.tokenizer.path = str(tmp_path / "missing.model")
  workdir = tmp_path / "run"
  with pytest.raises(cli.UserError, match="tokenizer not found: .*missing.model"):
    train.train(config, str(workdir), printer=QUIET)
  assert not workdir.exists() and not (tmp_path / "cache").exists()


def test_failed_setup_removes_the_run_directory_it_created(demo_dir, cache_dir, tmp_path):
  config = tiny_config(demo_dir, cache_dir)
  config.data.robot = [dict(name="demo_targets", path="no/such/dataset", split="train", weight=1.0)]
  workdir = tmp_path / "run"
  with pytest.raises(cli.UserError, match="no/such/dataset"):
    train.train(config, str(workdir), printer=QUIET)
  assert not workdir.exists()


def test_workdir_that_is_a_file_is_named(config, tmp_path):
  path = tmp_path / "file"
  path.write_text("x")
  with pytest.raises(run_dir.RunDirError, match="is a file"):
    train.train(config, str(path), printer=QUIET)


# 5. One line per user mistake on the command line (exit 2), traceback only with --verbose.
def _cli(*args):
  env = dict(os.environ, PYTHONPATH=ROOT, JAX_PLATFORMS="cpu")
  return subprocess.run(
    [sys.executable, "-m", *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120, check=False
  )


def test_cli_errors_are_one_line(trained, tmp_path):
  _, run = trained
  missing = tmp_path / "mistyped_run"
  result = _cli("genvla_jax.predict", f"--workdir={missing}", "--image=x.png", "--instruction=go")
  assert result.returncode == 2 and result.stderr.strip().splitlines()[-1].startswith("error: --image x.png")
  result = _cli("genvla_jax.predict", f"--workdir={missing}", "--eval_split=val")
  assert result.returncode == 2, result.stderr
  assert result.stderr.strip().splitlines() == [
    f"error: run directory {missing} does not exist (give a run directory that genvla_jax.train wrote)"
  ]
  assert not missing.exists()
  result = _cli(
    "genvla_jax.train", "--config=configs/pi0_plus.py:demo", f"--workdir={missing}", "--config.train.stepz=3"
  )
  assert result.returncode == 2
  assert result.stderr.strip().splitlines() == [
    "error: bad config override in --config.train.stepz=3: 'stepz' Did you mean \"steps\" instead of \"stepz\"?"
  ]
  assert not missing.exists()
  result = _cli("genvla_jax.predict", f"--workdir={run}", "--step=5", "--eval_split=val", "--verbose")
  assert result.returncode == 2 and "Traceback" in result.stderr
  assert result.stderr.strip().splitlines()[-1].startswith("error: no checkpoint for step 5")
