"""Checkpoints: keep-N + keep-every-K retention, restore onto a different mesh, SIGTERM (preemption)
-> checkpoint and exit 0, kill -9 in the middle of a save -> the next start resumes from the last
complete checkpoint."""

import glob
import os
import signal
import subprocess
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import ROOT
from genvla_jax.models import build
from genvla_jax.training import checkpoint, optimizer, sharding, state as state_lib


def _tiny_state(mesh):
  """A small train state laid out on `mesh` (params + adam state, like train.py's)."""
  from configs import pi0_plus

  config = pi0_plus.get_config("demo")
  model = build.from_config(config.model)
  tx = optimizer.make(config.optimizer, 100)
  state, _, _ = state_lib.create(model, tx, config.model.image_size, mesh, jax.random.PRNGKey(1))
  return config, model, tx, state


def test_keep_newest_and_every_kth(tmp_path):
  ckpt = checkpoint.Checkpointer(str(tmp_path), keep=2, keep_every=4, async_save=True)
  state = {"step": jnp.int32(0), "params": {"w": jnp.arange(4.0)}, "opt_state": {"m": jnp.zeros(4)}}
  for step in range(1, 11):
    ckpt.save(step, dict(state, step=jnp.int32(step)), None, {"step": step})
  ckpt.wait()
  assert sorted(ckpt.manager.all_steps()) == [4, 8, 9, 10]
  assert ckpt.restore_meta(8) == {"step": 8}
  ckpt.close()


def test_restore_onto_a_different_mesh(tmp_path):
  mesh_a = sharding.make_mesh(sharding_config(data=4, fsdp=2, model=1))
  config, model, tx, state = _tiny_state(mesh_a)
  ckpt = checkpoint.Checkpointer(str(tmp_path))
  ckpt.save(7, state, None, {})
  ckpt.wait()
  mesh_b = sharding.make_mesh(sharding_config(data=1, fsdp=4, model=2))
  abstract, _ = state_lib.abstract(model, tx, config.model.image_size, mesh_b)
  restored = ckpt.restore(7, abstract)
  ckpt.close()
  assert int(restored["step"]) == int(state["step"])
  jax.tree.map(np.testing.assert_array_equal, jax.device_get(restored["params"]), jax.device_get(state["params"]))
  jax.tree.map(np.testing.assert_array_equal, jax.device_get(restored["opt_state"]), jax.device_get(state["opt_state"]))
  q = restored["params"]["llm"]["layers"]["attn"]["q_einsum"]
  assert q.sharding.mesh.shape == mesh_b.shape and "model" in str(q.sharding.spec)


def sharding_config(**mesh):
  import ml_collections

  return ml_collections.ConfigDict(dict(mesh, rules=[]))


def _train_cmd(workdir, demo_dir, cache_dir, steps, checkpoint_every):
  return [
    sys.executable,
    "-m",
    "genvla_jax.train",
    "--config=configs/pi0_plus.py:demo",
    f"--workdir={workdir}",
    f"--config.train.steps={steps}",
    "--config.train.log_every=1",
    f"--config.train.checkpoint_every={checkpoint_every}",
    "--config.data.batch_size=8",
    f"--config.data.demo_dir={demo_dir}",
    f"--config.data.cache_dir={cache_dir}",
  ]


def _env():
  return dict(os.environ, PYTHONPATH=ROOT, JAX_PLATFORMS="cpu", XLA_FLAGS="--xla_force_host_platform_device_count=1")


def _logged_steps(workdir) -> int:
  path = os.path.join(workdir, "metrics.jsonl")
  return sum(1 for _ in open(path)) if os.path.exists(path) else 0


def _wait_for(condition, timeout=300, interval=0.005):
  deadline = time.time() + timeout
  while time.time() < deadline:
    if condition():
      return True
    time.sleep(interval)
  return False


def test_sigterm_saves_and_exits_cleanly(tmp_path, demo_dir, cache_dir):
  workdir = tmp_path / "run"
  proc = subprocess.Popen(
    _train_cmd(workdir, demo_dir, cache_dir, steps=100_000, checkpoint_every=100_000),
    cwd=ROOT,
    env=_env(),
    stdout=subprocess.PIPE,
    stderr=subprocess.PIPE,
    text=True,
  )
  assert _wait_for(lambda: _logged_steps(workdir) >= 2 or proc.poll() is not None)
  proc.send_signal(signal.SIGTERM)
  out, err = proc.communicate(timeout=300)
  assert proc.returncode == 0, err[-3000:]
  assert "(SIGTERM); checkpoint saved" in out
  stopped = int(out.split("stopping at step ")[1].split()[0])
  assert checkpoint.Checkpointer(str(workdir / "checkpoints")).latest_step() == stopped


def test_kill_9_during_a_save_resumes_from_the_last_complete_checkpoint(tmp_path, demo_dir, cache_dir):
  workdir = tmp_path / "run"
  ckpt_dir = workdir / "checkpoints"
  proc = subprocess.Popen(
    _train_cmd(workdir, demo_dir, cache_dir, steps=100_000, checkpoint_every=1),
    cwd=ROOT,
    env=_env(),
    stdout=subprocess.DEVNULL,
    stderr=subprocess.DEVNULL,
  )
  in_flight = lambda: glob.glob(str(ckpt_dir / "*tmp*"))  # orbax writes <step>.orbax-checkpoint-tmp-*
  try:
    assert _wait_for(lambda: _logged_steps(workdir) >= 3 or proc.poll() is not None)
    assert _wait_for(lambda: bool(in_flight()) or proc.poll() is not None, timeout=60, interval=0.001)
  finally:
    proc.send_signal(signal.SIGKILL)
    proc.wait()
  partial = in_flight()
  assert partial, "did not catch a save in flight"
  complete = checkpoint.Checkpointer(str(ckpt_dir)).latest_step()
  assert complete is not None and complete >= 1
  assert all(int(os.path.basename(p).split(".")[0]) > complete for p in partial)
  # restart: resumes from the newest complete checkpoint and trains on
  out = subprocess.run(
    _train_cmd(workdir, demo_dir, cache_dir, steps=complete + 2, checkpoint_every=1),
    cwd=ROOT,
    env=_env(),
    capture_output=True,
    text=True,
    timeout=600,
  )
  assert out.returncode == 0, out.stderr[-3000:]
  assert f"resumed from {ckpt_dir}/{complete} (step {complete})" in out.stdout
  assert checkpoint.Checkpointer(str(ckpt_dir)).latest_step() == complete + 2
  assert not in_flight()  # the partial save was cleaned up


@pytest.fixture(autouse=True)
def _eight_devices():
  assert len(jax.devices()) == 8
