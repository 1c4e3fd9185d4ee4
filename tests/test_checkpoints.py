"""Checkpoints: keep-N + keep-every-K retention, restore onto a different mesh, SIGTERM (preemption)
-> checkpoint and exit 0, kill -9 in the middle of a save -> the next start resumes from the last
complete checkpoint; adapters-only checkpoints (training/frozen_base.py): only the trainable leaves saved,
completed from the base at restore, another or a missing base an error naming it."""

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


def _base_config(frozen=("llm/.*",), path=""):
  """The fields frozen_base reads (a run's config has them all)."""
  import ml_collections

  return ml_collections.ConfigDict(
    dict(
      seed=0,
      train=dict(checkpoint_frozen=False),
      lora=dict(rank=0),
      optimizer=dict(frozen=list(frozen)),
      pretrained=dict(format="hf", path=path),
    )
  )


def _small_state(llm_value=1.0):
  params = {
    "llm": {"w": jnp.full((4, 3), llm_value), "scale": jnp.arange(3.0, dtype=jnp.bfloat16)},  # (bf16 storage)
    "img": {"w": jnp.ones((2, 2)), "bias": jnp.zeros(2, jnp.bfloat16)},
  }
  return {
    "step": jnp.int32(5),
    "params": params,
    "opt_state": {"mu": {"img": jax.tree.map(jnp.zeros_like, params["img"])}},
  }


def _abstract(state):
  return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding), state)


def test_adapters_only_checkpoint_holds_the_trainable_leaves_and_completes_from_its_base(tmp_path):
  """With a base reference the params item holds only the trainable leaves; restore = those + the base's frozen
  leaves (checked), restore_params too; without its base it is an error, never a silently partial tree."""
  from genvla_jax.training import frozen_base

  config, state = _base_config(), _small_state()
  ref = frozen_base.reference(config, state["params"])
  assert sorted(ref["leaves"]) == ["llm/scale", "llm/w"] and ref["kind"] == "init" and len(ref["fingerprint"]) == 16
  assert ref["leaves"]["llm/w"].startswith("4x3 float32 ")
  ckpt = checkpoint.Checkpointer(str(tmp_path), async_save=False)
  ckpt.save(5, state, None, {"config": {}}, base=ref)
  assert ckpt.restore_meta(5)["base"] == ref
  saved = ckpt.manager.restore(
    5, args=ocp_composite(params=checkpoint.select(_abstract(state)["params"], lambda p: p.startswith("img/")))
  )["params"]
  assert set(saved) == {"img"}
  with pytest.raises(ValueError, match="llm"):  # the frozen leaves are not in the checkpoint
    ckpt.manager.restore(5, args=ocp_composite(params=_abstract(state)["params"]))
  restored = ckpt.restore(5, _abstract(state), base_params=state["params"])
  jax.tree.map(np.testing.assert_array_equal, jax.device_get(restored), jax.device_get(state))
  params = ckpt.restore_params(5, _abstract(state)["params"], base_params=state["params"])
  jax.tree.map(np.testing.assert_array_equal, jax.device_get(params), jax.device_get(state["params"]))
  assert params["img"]["bias"].dtype == jnp.bfloat16
  ckpt.close()


def ocp_composite(**items):
  import orbax.checkpoint as ocp

  return ocp.args.Composite(**{k: ocp.args.StandardRestore(v) for k, v in items.items()})


def test_another_base_is_an_error_naming_both_and_sets_no_step_aside(tmp_path):
  """Restoring against a base whose frozen leaves differ (one element of one leaf) fails naming both
  fingerprints and the leaf; the newest-good fallback neither hides it nor moves the steps aside."""
  from genvla_jax.training import frozen_base

  config, state = _base_config(), _small_state()
  ref = frozen_base.reference(config, state["params"])
  ckpt = checkpoint.Checkpointer(str(tmp_path), async_save=False)
  for step in (4, 5):
    ckpt.save(step, state, None, {"config": {}}, base=ref)
  other = dict(state["params"], llm=dict(state["params"]["llm"], w=state["params"]["llm"]["w"].at[2, 1].set(1.5)))
  theirs = frozen_base.fingerprint(frozen_base.checksums(frozen_base.frozen_leaves(other, ["llm/.*"])))
  assert theirs != ref["fingerprint"]
  with pytest.raises(frozen_base.BaseError) as e:
    ckpt.restore_newest_good(lambda s: ckpt.restore(s, _abstract(state), base_params=other))
  message = str(e.value)
  assert ref["fingerprint"] in message and theirs in message and "1 of 2 frozen leaves differ: llm/w" in message
  assert "the initialisation from seed 0" in message
  assert ckpt.steps() == [5, 4]  # not set aside as corrupt
  # a base that changed a shape: named too
  wider = dict(state["params"], llm=dict(state["params"]["llm"], scale=jnp.arange(4.0, dtype=jnp.bfloat16)))
  with pytest.raises(frozen_base.BaseError, match=r"llm/scale 3 bfloat16 \w+ -> 4 bfloat16"):
    ckpt.restore(5, _abstract(state), base_params=wider)
  ckpt.close()


def test_a_missing_pretrained_base_is_named(tmp_path):
  """A reader (no base given) rebuilds the base from the reference; a pretrained base that is gone is an error
  naming its path, raised through the fallback without setting steps aside."""
  from genvla_jax.training import frozen_base

  gone = str(tmp_path / "paligemma-gone")
  config, state = _base_config(path=gone), _small_state()
  ref = frozen_base.reference(config, state["params"])
  assert ref["kind"] == "pretrained" and ref["path"] == gone
  writer = checkpoint.Checkpointer(str(tmp_path / "ckpt"), async_save=False)
  writer.save(5, state, None, {"config": {}}, base=ref)
  writer.close()
  reader = checkpoint.Checkpointer(str(tmp_path / "ckpt"), read_only=True)
  with pytest.raises(frozen_base.BaseError, match=f"its base, the hf checkpoint {gone} .* is missing"):
    reader.restore_newest_good(lambda s: reader.restore_params(s, _abstract(state)["params"]))
  assert reader.steps() == [5]
  reader.close()


def test_checksums_do_not_depend_on_the_mesh():
  """The fingerprint of a leaf sharded over 8 devices equals the one of the same values on one device, and any
  one-bit change (or a permutation of the same values) changes it."""
  from genvla_jax.training import frozen_base

  x = jax.random.normal(jax.random.PRNGKey(0), (16, 24, 8))
  mesh = sharding.make_mesh(sharding_config(data=2, fsdp=4, model=1))
  sharded = jax.device_put(x, jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("fsdp", "data")))
  one = frozen_base.checksums({"x": x})
  assert frozen_base.checksums({"x": sharded}) == one
  flipped = jax.lax.bitcast_convert_type(
    jax.lax.bitcast_convert_type(x, jnp.uint32).at[3, 5, 7].add(jnp.uint32(1)), jnp.float32
  )
  assert frozen_base.checksums({"x": flipped}) != one
  assert frozen_base.checksums({"x": x[::-1]}) != one
