"""End to end on the tiny demo: training (loss falls, metrics.jsonl), exact resume, predict, and the CLIs."""

import json
import os
import subprocess
import sys

import jax
import numpy as np
import pytest

from conftest import ROOT
from genvla_jax import train
from genvla_jax.inference import policy as policy_lib
from genvla_jax.training import checkpoint

STEPS = 12


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory, demo_dir, cache_dir):
  from conftest import tiny_config

  config = tiny_config(demo_dir, cache_dir)
  config.train.steps = STEPS
  workdir = tmp_path_factory.mktemp("run_a")
  records = train.train(config, str(workdir), printer=lambda *a, **k: None)
  return config, workdir, records


def test_loss_falls_and_metrics_are_written(uninterrupted):
  _, workdir, records = uninterrupted
  lines = [json.loads(l) for l in open(workdir / "metrics.jsonl")]
  # logged every 2 steps and at every checkpoint (every 3 steps)
  assert [r["step"] for r in lines] == [s for s in range(1, STEPS + 1) if s % 2 == 0 or s % 3 == 0]
  assert all({"step", "loss", "examples_per_s", "robot_loss", "vl_loss"} <= set(r) for r in lines)
  assert lines[-1]["loss"] < 0.8 * lines[0]["loss"]
  assert records[-1]["loss"] == lines[-1]["loss"]
  assert all(r["robot_fraction"] == 0.5 for r in lines)


def test_resume_continues_identically(uninterrupted, tmp_path):
  config, workdir_a, _ = uninterrupted
  workdir_b = tmp_path / "run_b"
  first = train.train(config, str(workdir_b), stop_after=5, printer=lambda *a, **k: None)
  assert [r["step"] for r in first] == [2, 3, 4, 5]  # 5: the stop checkpoint is logged too
  assert checkpoint.Checkpointer(str(workdir_b / "checkpoints")).latest_step() == 5
  messages = []
  second = train.train(config, str(workdir_b), printer=lambda *a, **k: messages.append(a[0]))
  assert any("resumed" in m and "step 5" in m for m in messages)
  assert [r["step"] for r in second] == [6, 8, 9, 10, 12]
  a = {r["step"]: r["loss"] for r in map(json.loads, open(workdir_a / "metrics.jsonl"))}
  b = {r["step"]: r["loss"] for r in map(json.loads, open(workdir_b / "metrics.jsonl"))}
  assert set(a) <= set(b)
  np.testing.assert_array_equal([b[s] for s in sorted(a)], [a[s] for s in sorted(a)])  # bit-identical
  params_a = policy_lib.Policy.from_workdir(str(workdir_a)).params
  params_b = policy_lib.Policy.from_workdir(str(workdir_b)).params
  jax.tree.map(np.testing.assert_array_equal, params_a, params_b)
  meta = checkpoint.Checkpointer(str(workdir_a / "checkpoints")).restore_meta(STEPS)
  assert meta["stats"] and meta["config"]["model"]["dual_encoder"]


def test_policy_predicts_actions(uninterrupted, demo_dir):
  _, workdir, _ = uninterrupted
  policy = policy_lib.Policy.from_workdir(str(workdir))
  from genvla_jax.data import demo

  scene = demo.random_scene(np.random.default_rng(5))
  image = demo.render(scene)
  actions, valid = policy.act(image, "move to the red square")
  assert actions.shape == valid.shape == (1, 2) and actions.dtype == np.float32
  assert np.all(np.isfinite(actions))
  batch_actions, batch_valid = policy.act(
    np.stack([image, image[::-1]]), ["move to the red square", "go to the blue square"]
  )
  assert batch_actions.shape == (2, 1, 2)
  # batching does not change a row: the same decoded tokens, de-normalized elementwise (numpy): bit-identical
  np.testing.assert_array_equal(batch_actions[0], actions)
  # invalid fields fall back to the de-normalized centre and are counted, never hidden
  assert policy.num_invalid_fields == int((~valid).sum()) + int((~batch_valid).sum())
  # constrained decoding: every field parses; the previous call's action is the speculative draft
  assert valid.all() and batch_valid.all()
  again, _ = policy.act(np.stack([image, image[::-1]]), ["move to the red square", "go to the blue square"])
  np.testing.assert_array_equal(again, batch_actions)  # the same tokens (verified drafts): the same numbers
  assert policy.draft_stats["drafted"] > 0 and policy.draft_stats["accepted"] == policy.draft_stats["drafted"]
  policy.reset()
  assert policy.head._draft(2) is None  # (the token head drafts)


def _env(devices=1):
  env = dict(os.environ, PYTHONPATH=ROOT, JAX_PLATFORMS="cpu")
  env["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={devices}"
  return env


def test_cli_train_on_8_devices_tensor_parallel_then_predict_on_1(tmp_path, demo_dir, cache_dir):
  workdir = tmp_path / "cli_run"
  common = [f"--config.data.demo_dir={demo_dir}", f"--config.data.cache_dir={cache_dir}"]
  out = subprocess.run(
    [
      sys.executable,
      "-m",
      "genvla_jax.train",
      "--config=configs/pi0_plus.py:demo",
      f"--workdir={workdir}",
      "--config.train.steps=2",
      "--config.train.log_every=1",
      "--config.data.batch_size=8",
      "--config.mesh.fsdp=2",
      "--config.mesh.model=2",
      *common,
    ],
    cwd=ROOT,
    env=_env(devices=8),
    capture_output=True,
    text=True,
    timeout=600,
  )
  assert out.returncode == 0, out.stderr[-3000:]
  assert "mesh {'data': 2, 'fsdp': 2, 'model': 2}" in out.stdout  # tensor parallel over "model"
  assert "step      2/2 | loss" in out.stdout and "ex/s" in out.stdout and "ETA" in out.stdout
  assert "tok/s" in out.stdout and "data wait" in out.stdout and "train step compiled" in out.stdout
  out = subprocess.run(
    [sys.executable, "-m", "genvla_jax.predict", f"--workdir={workdir}", "--eval_split=val", "--num_examples=4"],
    cwd=ROOT,
    env=_env(devices=1),
    capture_output=True,
    text=True,
    timeout=600,
  )
  assert out.returncode == 0, out.stderr[-3000:]
  report = json.loads(out.stdout)
  assert report["demo_targets"]["num_examples"] == 4
  assert {"mae", "baseline_mae", "invalid_fraction"} <= set(report["demo_targets"])


def test_cli_rejects_unknown_config_key(tmp_path):
  out = subprocess.run(
    [
      sys.executable,
      "-m",
      "genvla_jax.train",
      "--config=configs/pi0_plus.py:demo",
      f"--workdir={tmp_path}",
      "--config.model.no_such_key=1",
    ],
    cwd=ROOT,
    env=_env(),
    capture_output=True,
    text=True,
    timeout=300,
  )
  assert out.returncode != 0
  assert "no_such_key" in out.stderr
