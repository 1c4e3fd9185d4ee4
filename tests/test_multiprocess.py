"""Multi-host for real on one machine: launch/local_multiprocess.sh starts two processes on localhost
(4 simulated CPU devices each, gloo collectives, jax.distributed with an explicit coordinator); they
train the demo config and must log the same losses as one process with 8 devices and the same global
batch; the checkpoint they write together restores in a single process."""

import json
import os
import socket
import subprocess
import sys
import time

import jax
import numpy as np

from conftest import ROOT
from genvla_jax.inference import policy as policy_lib

STEPS = 3


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("localhost", 0))
    return s.getsockname()[1]


def _flags(demo_dir, cache_dir):
  return [f"--config.train.steps={STEPS}", "--config.train.log_every=1", f"--config.train.checkpoint_every={STEPS}",
          "--config.data.batch_size=8", "--config.mesh.fsdp=2", f"--config.data.demo_dir={demo_dir}",
          f"--config.data.cache_dir={cache_dir}"]


def _env(devices):
  return dict(os.environ, PYTHONPATH=ROOT, JAX_PLATFORMS="cpu",
              XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}")


def _losses(workdir):
  return [json.loads(line)["loss"] for line in open(os.path.join(workdir, "metrics.jsonl"))]


def test_two_processes_match_one(tmp_path, demo_dir, cache_dir):
  single, multi = tmp_path / "one_process", tmp_path / "two_processes"
  port = _free_port()
  two = subprocess.Popen(
      ["bash", "launch/local_multiprocess.sh", "configs/pi0_plus.py:demo", str(multi), *_flags(demo_dir, cache_dir)],
      cwd=ROOT, env=dict(_env(4), NUM_PROCESSES="2", DEVICES_PER_PROCESS="4", PORT=str(port), PYTHON=sys.executable),
      stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
  one = subprocess.run([sys.executable, "-m", "genvla_jax.train", "--config=configs/pi0_plus.py:demo",
                        f"--workdir={single}", *_flags(demo_dir, cache_dir)],
                       cwd=ROOT, env=_env(8), capture_output=True, text=True, timeout=600)
  out, err = two.communicate(timeout=600)
  assert two.returncode == 0, err[-3000:]
  assert one.returncode == 0, one.stderr[-3000:]
  assert "process 0 of 2 (coordinator localhost" in out
  assert "8 global devices" in out and "mesh {'data': 4, 'fsdp': 2, 'model': 1}" in out
  assert out.count(f"step      {STEPS}/{STEPS} | loss") == 1  # only process 0 logs (gloo may chat)
  losses_one, losses_two = _losses(single), _losses(multi)
  assert len(losses_one) == len(losses_two) == STEPS
  np.testing.assert_allclose(losses_two, losses_one, rtol=1e-5)
  # the checkpoint both processes wrote restores in one process (1 device) and equals the 1-process run
  params_two = policy_lib.Policy.from_workdir(str(multi)).params
  params_one = policy_lib.Policy.from_workdir(str(single)).params
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6), params_two, params_one)


def test_sigterm_to_one_process_stops_both_at_the_same_step(tmp_path, demo_dir, cache_dir):
  """Preemption notices reach processes at different times: the stop is agreed on every step, so both
  save the same checkpoint together and exit 0."""
  import signal  # pylint: disable=g-import-not-at-top
  from genvla_jax.training import checkpoint  # pylint: disable=g-import-not-at-top
  workdir, port = tmp_path / "run", _free_port()
  flags = _flags(demo_dir, cache_dir)
  flags[0] = "--config.train.steps=100000"
  flags[2] = "--config.train.checkpoint_every=100000"
  procs = [subprocess.Popen(
      [sys.executable, "-m", "genvla_jax.train", "--config=configs/pi0_plus.py:demo", f"--workdir={workdir}", *flags,
       f"--config.distributed.coordinator_address=localhost:{port}", "--config.distributed.num_processes=2",
       f"--config.distributed.process_id={i}"],
      cwd=ROOT, env=_env(4), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for i in range(2)]
  metrics = workdir / "metrics.jsonl"
  deadline = time.time() + 300
  while time.time() < deadline and not (metrics.exists() and len(metrics.read_text().splitlines()) >= 2):
    assert all(p.poll() is None for p in procs), procs[0].communicate()[1][-3000:]
    time.sleep(0.05)
  procs[1].send_signal(signal.SIGTERM)  # process 1 only
  outs = [p.communicate(timeout=300) for p in procs]
  assert [p.returncode for p in procs] == [0, 0], outs[0][1][-2000:] + outs[1][1][-2000:]
  stopped = int(outs[0][0].split("stopping at step ")[1].split()[0])
  assert "(SIGTERM); checkpoint saved" in outs[0][0]
  assert checkpoint.Checkpointer(str(workdir / "checkpoints")).latest_step() == stopped
