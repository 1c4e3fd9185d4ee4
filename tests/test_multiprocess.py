"""Multi-host for real on one machine: two processes on localhost (4 simulated CPU devices each, gloo
collectives, jax.distributed with an explicit coordinator) train the demo config and must log the
same losses as one process with 8 devices and the same global batch; the checkpoint they write
together restores in a single process."""

import json
import os
import socket
import subprocess
import sys

import jax
import numpy as np

from conftest import ROOT
from genvla_jax.inference import policy as policy_lib

STEPS = 3


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("localhost", 0))
    return s.getsockname()[1]


def _train_cmd(workdir, demo_dir, cache_dir, *extra):
  return [sys.executable, "-m", "genvla_jax.train", "--config=configs/pi0_plus.py:demo", f"--workdir={workdir}",
          f"--config.train.steps={STEPS}", "--config.train.log_every=1", f"--config.train.checkpoint_every={STEPS}",
          "--config.data.batch_size=8", "--config.mesh.fsdp=2", f"--config.data.demo_dir={demo_dir}",
          f"--config.data.cache_dir={cache_dir}", *extra]


def _env(devices):
  return dict(os.environ, PYTHONPATH=ROOT, JAX_PLATFORMS="cpu",
              XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}")


def _losses(workdir):
  return [json.loads(line)["loss"] for line in open(os.path.join(workdir, "metrics.jsonl"))]


def test_two_processes_match_one(tmp_path, demo_dir, cache_dir):
  single, multi = tmp_path / "one_process", tmp_path / "two_processes"
  port = _free_port()
  procs = [subprocess.Popen(
      _train_cmd(multi, demo_dir, cache_dir, f"--config.distributed.coordinator_address=localhost:{port}",
                 "--config.distributed.num_processes=2", f"--config.distributed.process_id={i}"),
      cwd=ROOT, env=_env(4), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for i in range(2)]
  one = subprocess.run(_train_cmd(single, demo_dir, cache_dir), cwd=ROOT, env=_env(8), capture_output=True,
                       text=True, timeout=600)
  outs = [p.communicate(timeout=600) for p in procs]
  for p, (_, err) in zip(procs, outs):
    assert p.returncode == 0, err[-3000:]
  assert one.returncode == 0, one.stderr[-3000:]
  assert "process 0 of 2 (coordinator localhost" in outs[0][0]
  assert "8 global devices" in outs[0][0] and "mesh {'data': 4, 'fsdp': 2, 'model': 1}" in outs[0][0]
  assert "loss" in outs[0][0] and "loss" not in outs[1][0]  # only process 0 logs (gloo may chat)
  losses_one, losses_two = _losses(single), _losses(multi)
  assert len(losses_one) == len(losses_two) == STEPS
  np.testing.assert_allclose(losses_two, losses_one, rtol=1e-5)
  # the checkpoint both processes wrote restores in one process (1 device) and equals the 1-process run
  params_two = policy_lib.Policy.from_workdir(str(multi)).params
  params_one = policy_lib.Policy.from_workdir(str(single)).params
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6), params_two, params_one)
