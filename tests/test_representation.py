"""Representation quality: CIFAR-10's published pickle layout, linear probe, CKA, t-SNE plots, and the
drift monitor during training (the frozen tower's probe accuracy must not move)."""

import json
import os
import pickle

import numpy as np
import pytest

from genvla_jax.eval import representation
import tolerances


def _write_cifar(directory, n_train=48, n_test=24, seed=0):
  """Two classes in CIFAR-10's layout: reddish and bluish 32x32 images with noise."""
  rng = np.random.default_rng(seed)
  os.makedirs(directory, exist_ok=True)

  def batch(n):
    labels = rng.integers(0, 2, n)
    base = np.where(labels[:, None, None, None] == 0, [200, 60, 60], [60, 60, 200])
    images = np.clip(base + rng.normal(0, 40, (n, 32, 32, 3)), 0, 255).astype(np.uint8)
    return {b"data": images.transpose(0, 3, 1, 2).reshape(n, -1), b"labels": labels.tolist()}

  for i in range(1, 6):
    pickle.dump(batch(n_train // 5 + 1), open(os.path.join(directory, f"data_batch_{i}"), "wb"))
  pickle.dump(batch(n_test), open(os.path.join(directory, "test_batch"), "wb"))
  pickle.dump({b"label_names": [b"red", b"blue"]}, open(os.path.join(directory, "batches.meta"), "wb"))


def test_cifar_layout_and_metrics(tmp_path):
  _write_cifar(tmp_path / "cifar")
  images, labels, names = representation.load_cifar10(str(tmp_path / "cifar"), "train")
  assert images.shape == (5 * 10, 32, 32, 3) and images.dtype == np.uint8 and names == ["red", "blue"]
  red = images[labels == 0].astype(float).mean((0, 1, 2))
  assert red[0] > red[2] + 80  # channel planes unpacked to HWC correctly
  x = np.random.default_rng(1).normal(size=(64, 8))
  rotation, _ = np.linalg.qr(np.random.default_rng(2).normal(size=(8, 8)))
  rel, _ = tolerances.float_tol(np.float64, 64 * 8)  # float64 sums over 64 x 8 features: eps64 * sqrt(n)
  assert representation.linear_cka(x, 3 * x @ rotation) == pytest.approx(1.0, rel=rel)
  assert representation.linear_cka(x, np.random.default_rng(3).normal(size=(64, 8))) < 0.5
  separable = np.concatenate([x[:32] + 5, x[32:] - 5])
  y = np.array([0] * 32 + [1] * 32)
  assert representation.linear_probe(separable[::2], y[::2], separable[1::2], y[1::2]) == 1.0


def test_drift_monitor_and_report(tmp_path, demo_dir, cache_dir):
  from conftest import tiny_config
  from genvla_jax import train
  from genvla_jax.inference import policy as policy_lib

  _write_cifar(tmp_path / "cifar")
  config = tiny_config(demo_dir, cache_dir)
  config.train.update(steps=4, checkpoint_every=4)
  config.train.drift.update(every=2, data=str(tmp_path / "cifar"), limit=40)
  config.optimizer.lr = 1e-2  # move the trained tower visibly in 4 steps
  train.train(config, str(tmp_path / "run"), printer=lambda *a, **k: None)
  drift = [r for r in map(json.loads, open(tmp_path / "run" / "metrics.jsonl")) if "drift/probe_img" in r]
  assert [r["step"] for r in drift] == [2, 4]
  assert drift[0]["drift/probe_img_frozen"] == drift[1]["drift/probe_img_frozen"]  # frozen: unchanged
  assert all(0.0 <= r["drift/cka_trained_vs_frozen"] <= 1.0 + 1e-6 for r in drift)
  assert drift[1]["drift/cka_trained_vs_frozen"] < 1.0 - 1e-6  # the trained tower moved away
  policy = policy_lib.Policy.from_workdir(str(tmp_path / "run"))
  out = tmp_path / "report"
  result = representation.evaluate(policy.params, policy.config.model, str(tmp_path / "cifar"), 40, str(out))
  assert (
    set(result["probe"]) == {"img", "img_frozen"}
    and result["probe"]["img_frozen"] == drift[1]["drift/probe_img_frozen"]
  )
  assert (out / "tsne_img.png").stat().st_size > 1000 and (out / "tsne_img_frozen.png").exists()
  # the CLI, with the "pretrained" tower read from a released-format (HF) checkpoint: here the run's own
  # trained tower exported, so its probe accuracy must equal the trained tower's
  import subprocess
  import sys
  from conftest import ROOT

  env = dict(os.environ, PYTHONPATH=ROOT, JAX_PLATFORMS="cpu", XLA_FLAGS="--xla_force_host_platform_device_count=1")
  exported = subprocess.run(
    [
      sys.executable,
      "-m",
      "genvla_jax.tools.export_hf",
      f"--workdir={tmp_path / 'run'}",
      f"--out={tmp_path / 'hf'}",
      "--tower=trained",
    ],
    env=env,
    capture_output=True,
    text=True,
  )
  assert exported.returncode == 0, exported.stderr[-2000:]
  cli = subprocess.run(
    [
      sys.executable,
      "-m",
      "genvla_jax.eval.representation",
      f"--checkpoint={tmp_path / 'run'}",
      f"--data={tmp_path / 'cifar'}",
      "--limit=40",
      f"--pretrained_path={tmp_path / 'hf'}",
      f"--out={tmp_path / 'cli'}",
    ],
    env=env,
    capture_output=True,
    text=True,
  )
  assert cli.returncode == 0, cli.stderr[-2000:]
  saved = json.load(open(tmp_path / "cli" / "representation.json"))
  assert saved["probe"]["pretrained"] == saved["probe"]["img"] == result["probe"]["img"]
  assert (tmp_path / "cli" / "tsne_pretrained.png").exists()
