"""Train step: frozen tower, optimizer masking, sharded (8 simulated devices) = single device."""

import jax
import jax.numpy as jnp
from jax.sharding import PartitionSpec as P
import numpy as np
import pytest

from genvla_jax.data import pipeline
from genvla_jax.models import vlm
from genvla_jax.training import optimizer, sharding, state as state_lib, step as step_lib


@pytest.fixture(scope="module")
def setup(demo_dir, cache_dir, prepared):
  from conftest import tiny_config  # pylint: disable=g-import-not-at-top
  config = tiny_config(demo_dir, cache_dir)
  it = iter(pipeline.make_dataset(config, prepared, seed=0))
  batches = [next(it) for _ in range(3)]
  model = vlm.from_config(config.model)
  tx = optimizer.make(config.optimizer, config.train.steps)
  step_fn = step_lib.make_train_step(model, tx, optimizer.schedule(config.optimizer, config.train.steps))
  return config, model, tx, step_fn, batches


def _run(setup, mesh, num_steps):
  config, model, tx, step_fn, batches = setup
  state, shardings, _ = state_lib.create(model, tx, config.model.image_size, mesh, jax.random.PRNGKey(0))
  initial = jax.device_get(state["params"])
  train_step = step_lib.jit_train_step(step_fn, shardings, mesh, donate=False)
  losses = []
  for b in batches[:num_steps]:
    state, metrics = train_step(state, sharding.to_global(b, mesh))
    losses.append(float(metrics["loss"]))
  return initial, state, losses


@pytest.fixture(scope="module")
def single_device_run(setup):
  mesh = sharding.make_mesh(setup[0].mesh, jax.devices()[:1])
  return _run(setup, mesh, 3)


def test_frozen_tower_unchanged_and_stateless(setup, single_device_run):
  initial, state, losses = single_device_run
  params = jax.device_get(state["params"])
  jax.tree.map(np.testing.assert_array_equal, params["img_frozen"], initial["img_frozen"])
  changed = [not np.array_equal(a, b) for a, b in zip(jax.tree.leaves(params["img"]),
                                                      jax.tree.leaves(initial["img"]))]
  assert all(changed)
  # no optimizer state mirrors the frozen tower: adam's mu/nu exist for every other parameter only
  opt_paths = [sharding.path_str(p) for p, _ in jax.tree_util.tree_flatten_with_path(state["opt_state"])[0]]
  assert not any("img_frozen" in p for p in opt_paths)
  assert sum("/mu/" in p for p in opt_paths) == len(jax.tree.leaves({k: v for k, v in params.items()
                                                                    if k != "img_frozen"}))
  assert all(np.isfinite(losses))


def test_optimizer_labels():
  params = {"img": {"w": jnp.ones(2)}, "img_frozen": {"w": jnp.ones(2)}, "llm": {"e": jnp.ones(2)}}
  assert optimizer.labels(params) == {"img": {"w": "train"}, "img_frozen": {"w": "frozen"},
                                      "llm": {"e": "train"}}


def test_sharded_step_equals_single_device(setup, single_device_run):
  assert len(jax.devices()) == 8
  config = setup[0]
  config.mesh.data, config.mesh.fsdp = 2, 4
  mesh = sharding.make_mesh(config.mesh)
  _, state8, losses8 = _run(setup, mesh, 3)
  _, state1, losses1 = single_device_run
  np.testing.assert_allclose(losses8, losses1, rtol=2e-5)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=2e-5, rtol=1e-4),
               jax.device_get(state8["params"]), jax.device_get(state1["params"]))
  # the large matrices really are split over the fsdp axis
  emb = state8["params"]["llm"]["embedder"]["input_embedding"]
  assert "fsdp" in str(emb.sharding.spec)
  assert emb.addressable_shards[0].data.shape[0] * 4 == emb.shape[0] or \
      emb.addressable_shards[0].data.shape[1] * 4 == emb.shape[1]


def test_tensor_parallel_step_equals_single_device(setup, single_device_run):
  config = setup[0]
  config.mesh.data, config.mesh.fsdp, config.mesh.model = 2, 2, 2
  mesh = sharding.make_mesh(config.mesh)
  _, state, losses = _run(setup, mesh, 3)
  np.testing.assert_allclose(losses, single_device_run[2], rtol=2e-5)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=2e-5, rtol=1e-4),
               jax.device_get(state["params"]), jax.device_get(single_device_run[1]["params"]))
  specs = {sharding.path_str(p): x.sharding.spec for p, x in
           jax.tree_util.tree_flatten_with_path(state["params"])[0]}
  assert specs["llm/layers/mlp/gating_einsum"] == P(None, None, "fsdp", "model")
  assert specs["llm/layers/attn/q_einsum"] == P(None, "model", "fsdp", None)
  assert specs["llm/layers/attn/kv_einsum"] == P(None, None, None, "fsdp", None)  # 1 kv head: not split
  assert specs["img_frozen/blocks/MlpBlock_0/Dense_0/kernel"] == P(None, "fsdp", "model")
  # the optimizer state of a tensor-parallel matrix is split the same way
  mu = [x for p, x in jax.tree_util.tree_flatten_with_path(state["opt_state"])[0]
        if sharding.path_str(p).endswith("mu/llm/layers/mlp/linear")]
  assert mu and mu[0].sharding.spec == P(None, "model", "fsdp")


def test_gradient_accumulation_equals_one_pass(setup):
  config, model, tx, _, batches = setup
  mesh = sharding.make_mesh(config.mesh)  # 8 devices; 8 rows = 2 micro-batches of 4
  state, _, _ = state_lib.create(model, tx, config.model.image_size, mesh, jax.random.PRNGKey(0))
  batch = sharding.to_global(batches[0], mesh)
  def grads_with(k):
    fn = jax.jit(lambda p, b: step_lib.grads_and_sums(p, b, model, k))
    with jax.sharding.use_abstract_mesh(mesh.abstract_mesh):
      return jax.device_get(fn(state["params"], batch))
  (g1, s1), (g2, s2) = grads_with(1), grads_with(2)
  for key in s1:
    np.testing.assert_allclose(s2[key], s1[key], rtol=1e-5, err_msg=key)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-7), g2, g1)
  with pytest.raises(ValueError, match="does not split into 3 micro-batches"):
    step_lib.microbatches({"x": np.zeros((8, 2))}, 3)


def test_mesh_mismatch_is_an_error(setup):
  config = setup[0]
  config.mesh.data, config.mesh.fsdp = 3, 2
  with pytest.raises(ValueError, match="does not match 8 devices"):
    sharding.make_mesh(config.mesh)
