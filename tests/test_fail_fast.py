"""Fail fast (issue 21, item 2): `train` checks its whole setup before any long work and reports every
problem at once; `train --dry_run` prints the plan (parameters, per-device memory, data mixture with
sizes, one real batch, steps, checkpoints) and writes nothing."""

import os
import subprocess
import sys
import time

import pytest

from conftest import ROOT, tiny_config
from configs import pi0_plus
from genvla_jax import cli, train
from genvla_jax.data import prepare
from genvla_jax.models import surgery
from genvla_jax.training import plan, preflight, run_dir

QUIET = lambda *a, **k: None


def _full_size(tmp_path):
  """configs/pi0_plus.py as the README's first command gives it: no tokenizer, no VL corpora, OXE data
  under a root that holds nothing."""
  config = pi0_plus.get_config()
  config.data.rlds_root = str(tmp_path / "no_oxe_here")
  config.data.cache_dir = str(tmp_path / "cache")
  return config


def test_full_size_config_fails_in_seconds_listing_every_problem(tmp_path):
  config, workdir = _full_size(tmp_path), tmp_path / "run"
  t = time.perf_counter()
  with pytest.raises(preflight.SetupError) as error:
    train.train(config, str(workdir), printer=QUIET, dry_run=True)
  assert time.perf_counter() - t < 30
  problems = error.value.problems
  assert len(problems) == 4, problems
  assert problems[0].startswith("config.tokenizer.path is empty: give --config.tokenizer.path=")
  assert problems[1].startswith("data.robot_fraction=0.5 < 1 (co-training) but config.data.vl is empty")
  assert "--set='data.vl=[" in problems[1] and "--config.data.robot_fraction=1" in problems[1]
  assert "'fractal'" in problems[2] and "no_oxe_here/fractal20220817_data/0.1.0" in problems[2]
  assert "'bridge'" in problems[3] and "RLDS dataset directory not found" in problems[3]
  message = str(error.value)
  assert message.startswith("4 problems with this run's setup") and message.count("\n  - ") == 4
  assert not workdir.exists() and not (tmp_path / "cache").exists()


def test_cli_lists_every_problem_and_exits_2(tmp_path):
  workdir = tmp_path / "run"
  t = time.perf_counter()
  result = subprocess.run(
    [
      sys.executable,
      "-m",
      "genvla_jax.train",
      "--config=configs/pi0_plus.py",
      f"--workdir={workdir}",
      f"--config.data.rlds_root={tmp_path / 'no_oxe_here'}",
      f"--config.data.cache_dir={tmp_path / 'cache'}",
      "--dry_run",
    ],
    cwd=ROOT,
    env=dict(os.environ, PYTHONPATH=ROOT, JAX_PLATFORMS="cpu"),
    capture_output=True,
    text=True,
    timeout=120,
    check=False,
  )
  assert time.perf_counter() - t < 60
  assert result.returncode == 2, result.stderr
  lines = result.stderr.strip().splitlines()
  assert lines[0].startswith("error: 4 problems with this run's setup") and "Traceback" not in result.stderr
  assert [line[:4] for line in lines[1:]] == ["  - "] * 4
  assert not workdir.exists()


def test_every_kind_of_problem_at_once_before_any_data_work(demo_dir, tmp_path):
  config = tiny_config(demo_dir, tmp_path / "cache")
  config.data.robot = [dict(name="no_such_robot", path="x/1.0.0", split="train", weight=1.0)]
  config.data.vl = []  # co-training without VL data
  config.model.action_expert.width = 64  # a token head with an action expert
  config.tokenizer.path = str(tmp_path / "missing.model")
  config.data.demo_dir = ""  # nothing generates the tokenizer
  config.pretrained.path = str(tmp_path / "no_checkpoint")
  config.pretrained.format = "hf"
  config.data.batch_size = 12  # does not split over the 8 test devices
  (tmp_path / "file").write_text("x")
  workdir = tmp_path / "file" / "run"
  with pytest.raises(preflight.SetupError) as error:
    train.train(config, str(workdir), printer=QUIET)
  text = "\n".join(error.value.problems)
  for expected in (
    f"--workdir {workdir}: {tmp_path / 'file'} is a file",
    "pretrained checkpoint not found",
    "model.head='tokens' with model.action_expert.width=64",
    "data.batch_size=12 does not split over the mesh's 8 data x fsdp devices",
    "tokenizer not found",
    "co-training) but config.data.vl is empty",
    "unknown robot dataset 'no_such_robot'",
  ):
    assert expected in text, (expected, text)
  assert len(error.value.problems) == 7
  assert not (tmp_path / "cache").exists()


def test_one_problem_keeps_its_own_error_and_line(config, tmp_path):
  path = tmp_path / "file"
  path.write_text("x")
  with pytest.raises(run_dir.RunDirError, match="is a file") as error:
    train.train(config, str(path), printer=QUIET, dry_run=True)
  assert "\n" not in str(error.value)
  config.data.vl = [dict(config.data.vl[0], format="csv")]
  with pytest.raises(prepare.DataConfigError, match=r"^config.data.vl entry 'demo_vqa': unknown format 'csv'"):
    train.train(config, str(tmp_path / "run"), printer=QUIET, dry_run=True)


def test_prepare_reports_co_training_without_vl_with_the_other_problems(demo_dir, tmp_path):
  """Old: prepare() raised "vl is empty" alone, after the robot checks had passed."""
  config = tiny_config(demo_dir, tmp_path / "cache")
  config.data.vl = []
  config.data.robot = [dict(config.data.robot[0], weight=0.0)]
  with pytest.raises(prepare.DataConfigError) as error:
    prepare.prepare(config.data)
  lines = str(error.value).splitlines()
  assert len(lines) == 2 and "co-training" in lines[0] and "weight 0.0 must be a number > 0" in lines[1]
  assert not (tmp_path / "cache").exists()


def test_text_too_short_for_the_action_chunk_is_named(config, prepared, tmp_path):
  config.tokenizer.max_text_len = 8
  with pytest.raises(
    preflight.ConfigError, match=r"tokenizer.max_text_len=8 is too short for the robot examples: .*raise"
  ):
    train.train(config, str(tmp_path / "run"), printer=QUIET, dry_run=True)
  assert not (tmp_path / "run").exists()


def test_dry_run_prints_the_plan_with_one_real_batch_and_writes_nothing(config, prepared, tmp_path):
  workdir = tmp_path / "run"
  lines = []
  t = time.perf_counter()
  [plan] = train.train(config, str(workdir), printer=lambda *a, **k: lines.append(str(a[0])), dry_run=True)
  assert time.perf_counter() - t < 60
  assert not workdir.exists()
  text = "\n".join(lines)
  for expected in ("parameters:", "memory per device", "analytic estimate", "one real batch", "checkpoints every 3"):
    assert expected in text, text
  # parameters: the dual encoder's frozen copy equals the trained tower
  params = plan["params"]
  assert params["frozen"] == params["parts"]["img_frozen"] == params["parts"]["img"] > 0
  assert params["total"] == sum(params["parts"].values()) == params["trainable"] + params["frozen"]
  # memory: float32 params replicated over the 8 devices (batch 8 = 1 row each); AdamW's mu and nu for the
  # trainable ones (plus a few scalar counters)
  memory = plan["memory_per_device"]
  assert memory["params"] == 4 * params["total"]
  assert 0 <= memory["optimizer"] - 2 * 4 * params["trainable"] < 1024
  assert memory["gradients"] == 4 * params["trainable"]
  assert set(memory["activation_parts"]) == {"img", "llm", "logits"} and memory["activations"] > 0
  # one real batch: 4 robot + 4 VL rows of the configured text length and image size
  assert plan["batch"]["tokens"] == ((8, 40), "int32")
  assert plan["batch"]["image"] == ((8, 32, 32, 3), "uint8")
  robot, vl = plan["data"]["datasets"]
  assert plan["data"]["rows"] == {"robot": 4, "vl": 4}
  assert (robot["episodes"], robot["steps"]) == (
    prepared.robot[0].meta["num_episodes"],
    prepared.robot[0].meta["num_steps"],
  )
  assert robot["epochs"] == pytest.approx(6 * 4 / robot["steps"])
  assert vl["examples"] == prepared.vl[0].meta["num_examples"]
  assert plan["schedule"] == {"start": 0, "steps": 6, "checkpoint_every": 3, "checkpoints": 2}


def test_dry_run_without_converted_data_skips_the_batch_and_converts_nothing(demo_dir, tmp_path):
  config = tiny_config(demo_dir, tmp_path / "cache")
  lines = []
  [plan] = train.train(config, str(tmp_path / "run"), printer=lambda *a, **k: lines.append(str(a[0])), dry_run=True)
  assert plan["batch"] is None
  assert any(line.startswith("one real batch: skipped, the data is not converted yet") for line in lines)
  robot = plan["data"]["datasets"][0]
  assert robot["converted"] is False and robot["episodes"] == 24 and robot["steps"] is None  # dataset_info.json
  assert not (tmp_path / "cache").exists() and not (tmp_path / "run").exists()


def test_memory_estimate_follows_remat_and_micro_batches(config):
  none = plan.activation_estimate(config.model, 40, 1, rows=8)
  config.model.remat_policy = "full"
  full = plan.activation_estimate(config.model, 40, 1, rows=8)
  assert full["llm"] < none["llm"] / 2 and full["logits"] == none["logits"]
  assert plan.activation_estimate(config.model, 40, 1, rows=4)["llm"] * 2 == full["llm"]
  assert isinstance(preflight.SetupError(["a", "b"]), cli.UserError)
  assert surgery.FROZEN_PARTS  # what the plan counts as frozen
