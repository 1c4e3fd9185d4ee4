"""Adapters-only checkpoints on two processes (launch/local_multiprocess.sh: 2 x 4 CPU devices, FSDP 2): the
base's checksums are the same on every process and equal to a single process's, the run stopped and resumed on
two processes (base rebuilt by both) logs the uninterrupted losses, and one process restores the checkpoint
both wrote, rebuilding the base on its one device."""

import json
import os
import socket
import subprocess
import sys

import jax
import numpy as np
import pytest

from conftest import ROOT
from genvla_jax.inference import policy as policy_lib
from genvla_jax.models import lora as lora_lib
from genvla_jax.training import checkpoint

STEPS = 3


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("localhost", 0))
    return s.getsockname()[1]


def _two_processes(workdir, demo_dir, cache_dir, *extra):
  env = dict(
    os.environ,
    PYTHONPATH=ROOT,
    JAX_PLATFORMS="cpu",
    NUM_PROCESSES="2",
    DEVICES_PER_PROCESS="4",
    PORT=str(_free_port()),
    PYTHON=sys.executable,
  )
  flags = [
    f"--config.train.steps={STEPS}",
    "--config.train.log_every=1",
    "--config.train.checkpoint_every=1",
    "--config.data.batch_size=8",
    "--config.mesh.fsdp=2",
    "--config.lora.rank=4",
    "--set=optimizer.frozen=['llm/.*']",
    f"--config.data.demo_dir={demo_dir}",
    f"--config.data.cache_dir={cache_dir}",
  ]
  out = subprocess.run(
    ["bash", "launch/local_multiprocess.sh", "configs/pi0_plus.py:demo", str(workdir), *flags, *extra],
    cwd=ROOT,
    env=env,
    capture_output=True,
    text=True,
    timeout=600,
  )
  assert out.returncode == 0, out.stderr[-3000:]
  return out.stdout


@pytest.mark.slow
def test_two_processes_save_resume_and_one_restores(tmp_path, demo_dir, cache_dir):
  straight, stopped = tmp_path / "straight", tmp_path / "stopped"
  _two_processes(straight, demo_dir, cache_dir)
  _two_processes(stopped, demo_dir, cache_dir, "--config.train.steps=1")
  resumed = _two_processes(stopped, demo_dir, cache_dir)
  assert "resumed from" in resumed and "(step 1)" in resumed

  def losses(run):
    records = [json.loads(line) for line in open(run / "metrics.jsonl")]
    return [r["loss"] for r in records if "loss" in r]

  assert len(losses(straight)) == STEPS and losses(stopped) == losses(straight)  # bit for bit
  ckpt = checkpoint.Checkpointer(str(straight / "checkpoints"), read_only=True)
  meta = ckpt.restore_meta(STEPS)
  ckpt.close()
  ref = meta["base"]
  assert ref["kind"] == "init" and all(p.startswith(("llm/", "img_frozen/")) for p in ref["leaves"])
  # one process, one device: the base rebuilt and checked against the checksums the two processes wrote
  policy = policy_lib.Policy.from_workdir(str(straight))
  other = policy_lib.Policy.from_workdir(str(stopped))
  jax.tree.map(np.testing.assert_array_equal, jax.device_get(policy.params), jax.device_get(other.params))
  assert lora_lib.KEY not in policy.params
