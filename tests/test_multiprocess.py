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
from genvla_jax.models import build
from genvla_jax.training import checkpoint, optimizer, sharding, state as state_lib
import tolerances

STEPS = 3


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("localhost", 0))
    return s.getsockname()[1]


def _flags(demo_dir, cache_dir, checkpoint_every=STEPS):
  return [
    f"--config.train.steps={STEPS}",
    "--config.train.log_every=1",
    f"--config.train.checkpoint_every={checkpoint_every}",
    f"--config.train.keep_checkpoints={STEPS}",
    "--config.data.batch_size=8",
    "--config.mesh.fsdp=2",
    f"--config.data.demo_dir={demo_dir}",
    f"--config.data.cache_dir={cache_dir}",
  ]


def _env(devices):
  return dict(
    os.environ, PYTHONPATH=ROOT, JAX_PLATFORMS="cpu", XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}"
  )


def _metric(workdir, key):
  return [json.loads(line)[key] for line in open(os.path.join(workdir, "metrics.jsonl"))]


def _trained_params_atol(workdir, config, reduction_size):
  """tolerances.trained_params_atol from a run that checkpointed every step (its Adam moments) and its lrs."""
  model, tx = build.from_config(config.model), optimizer.make(config.optimizer, STEPS)
  abstract, _ = state_lib.abstract(
    model, tx, config.model.image_size, sharding.make_mesh(config.mesh, jax.devices()[:1])
  )
  ckpt = checkpoint.Checkpointer(os.path.join(workdir, "checkpoints"), read_only=True)
  steps = [
    (lr, *tolerances.adam_moments(ckpt.restore(step, abstract)["opt_state"]))
    for step, lr in enumerate(_metric(workdir, "lr"), start=1)
    if lr > 0
  ]  # warmup: lr 0 moves nothing
  ckpt.close()
  return tolerances.trained_params_atol(steps, config.optimizer.b1, config.optimizer.b2, reduction_size)


def test_two_processes_match_one(tmp_path, demo_dir, cache_dir):
  single, multi = tmp_path / "one_process", tmp_path / "two_processes"
  port = _free_port()
  two = subprocess.Popen(
    ["bash", "launch/local_multiprocess.sh", "configs/pi0_plus.py:demo", str(multi), *_flags(demo_dir, cache_dir)],
    cwd=ROOT,
    env=dict(_env(4), NUM_PROCESSES="2", DEVICES_PER_PROCESS="4", PORT=str(port), PYTHON=sys.executable),
    stdout=subprocess.PIPE,
    stderr=subprocess.PIPE,
    text=True,
  )
  one = subprocess.run(
    [
      sys.executable,
      "-m",
      "genvla_jax.train",
      "--config=configs/pi0_plus.py:demo",
      f"--workdir={single}",
      *_flags(demo_dir, cache_dir, checkpoint_every=1),
    ],
    cwd=ROOT,
    env=_env(8),
    capture_output=True,
    text=True,
    timeout=600,
  )
  out, err = two.communicate(timeout=600)
  assert two.returncode == 0, err[-3000:]
  assert one.returncode == 0, one.stderr[-3000:]
  assert "process 0 of 2 (coordinator localhost" in out
  assert "8 global devices" in out and "mesh {'data': 4, 'fsdp': 2, 'model': 1}" in out
  assert out.count(f"step      {STEPS}/{STEPS} | loss") == 1  # only process 0 logs (gloo may chat)
  losses_one, losses_two = _metric(single, "loss"), _metric(multi, "loss")
  assert len(losses_one) == len(losses_two) == STEPS
  # Equal up to float32 summation order, not bit-identical: the same mesh adds the same per-device partial
  # sums across devices with XLA's in-process CPU collectives (one process) or with gloo (two processes;
  # gloo in both still differs). Tolerances from the reduction: every loss and gradient entry sums the
  # batch's 8 rows x (40 text + 16 image) positions.
  from configs import pi0_plus

  config = pi0_plus.get_config("demo")
  n = 8 * (config.tokenizer.max_text_len + build.num_image_tokens(config.model))
  np.testing.assert_allclose(losses_two, losses_one, rtol=tolerances.float_tol(np.float32, n)[0])  # eps*sqrt(n)
  # the checkpoint both processes wrote restores in one process (1 device) and equals the 1-process run, up
  # to what Adam makes of those gradient differences (per element, from the 1-process run's moments)
  params_two = policy_lib.Policy.from_workdir(str(multi)).params
  params_one = policy_lib.Policy.from_workdir(str(single)).params
  tolerances.assert_params_close(params_two, params_one, _trained_params_atol(single, config, n), STEPS)


def test_sigterm_to_one_process_stops_both_at_the_same_step(tmp_path, demo_dir, cache_dir):
  """Preemption notices reach processes at different times: the stop is agreed on every step, so both
  save the same checkpoint together and exit 0."""
  import signal
  from genvla_jax.training import checkpoint

  workdir, port = tmp_path / "run", _free_port()
  flags = _flags(demo_dir, cache_dir)
  flags[0] = "--config.train.steps=100000"
  flags[2] = "--config.train.checkpoint_every=100000"
  procs = [
    subprocess.Popen(
      [
        sys.executable,
        "-m",
        "genvla_jax.train",
        "--config=configs/pi0_plus.py:demo",
        f"--workdir={workdir}",
        *flags,
        f"--config.distributed.coordinator_address=localhost:{port}",
        "--config.distributed.num_processes=2",
        f"--config.distributed.process_id={i}",
      ],
      cwd=ROOT,
      env=_env(4),
      stdout=subprocess.PIPE,
      stderr=subprocess.PIPE,
      text=True,
    )
    for i in range(2)
  ]
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
