"""Train step: frozen tower, optimizer masking, sharded (8 simulated devices) = single device."""

import jax
import jax.numpy as jnp
from jax.sharding import PartitionSpec as P
import numpy as np
import pytest

from genvla_jax.data import pipeline
from genvla_jax.models import build
from genvla_jax.training import optimizer, sharding, state as state_lib, step as step_lib
import tolerances


@pytest.fixture(scope="module")
def setup(demo_dir, cache_dir, prepared):
  from conftest import tiny_config

  config = tiny_config(demo_dir, cache_dir)
  it = iter(pipeline.make_dataset(config, prepared, seed=0))
  batches = [next(it) for _ in range(3)]
  model = build.from_config(config.model)
  tx = optimizer.make(config.optimizer, config.train.steps)
  step_fn = step_lib.make_train_step(model, tx, optimizer.schedule(config.optimizer, config.train.steps))
  return config, model, tx, step_fn, batches


def _positions(config, batch) -> int:
  """Rows x sequence positions (image + text tokens) of a batch: the number of terms every gradient entry
  and the loss sum over."""
  return len(batch["tokens"]) * (batch["tokens"].shape[1] + build.num_image_tokens(config.model))


def _run(setup, mesh, num_steps):
  """-> (initial params, final state, losses, [(lr, adam count, adam nu) after each step])."""
  config, model, tx, step_fn, batches = setup
  state, shardings, _ = state_lib.create(model, tx, config.model.image_size, mesh, jax.random.PRNGKey(0))
  initial = jax.device_get(state["params"])
  train_step = step_lib.jit_train_step(step_fn, shardings, mesh, donate=False)
  losses, adam_steps = [], []
  for b in batches[:num_steps]:
    state, metrics = train_step(state, sharding.to_global(b, mesh))
    losses.append(float(metrics["loss"]))
    adam_steps.append((float(metrics["lr"]), *tolerances.adam_moments(state["opt_state"])))
  return initial, state, losses, adam_steps


def _assert_same_training(setup, run, reference):
  """`run` (another mesh) trained like `reference` (one device), up to float32 summation order: the loss and
  every gradient entry sum the batch's positions in another grouping; Adam bounds what that does to each
  parameter (tolerances.trained_params_atol, from the reference's per-step second moments)."""
  config, batches = setup[0], setup[4]
  _, state, losses, _ = run
  _, ref_state, ref_losses, adam_steps = reference
  n = _positions(config, batches[0])
  # float32 loss: a mean over the batch's 8 x (40 + 16) positions: eps * sqrt(n) relative
  np.testing.assert_allclose(losses, ref_losses, rtol=tolerances.float_tol(np.float32, n)[0])
  atol = tolerances.trained_params_atol(adam_steps, config.optimizer.b1, config.optimizer.b2, n)
  tolerances.assert_params_close(state["params"], ref_state["params"], atol, len(losses))


@pytest.fixture(scope="module")
def single_device_run(setup):
  mesh = sharding.make_mesh(setup[0].mesh, jax.devices()[:1])
  return _run(setup, mesh, 3)


def test_frozen_tower_unchanged_and_stateless(setup, single_device_run):
  initial, state, losses, _ = single_device_run
  params = jax.device_get(state["params"])
  jax.tree.map(np.testing.assert_array_equal, params["img_frozen"], initial["img_frozen"])
  changed = [not np.array_equal(a, b) for a, b in zip(jax.tree.leaves(params["img"]), jax.tree.leaves(initial["img"]))]
  assert all(changed)
  # no optimizer state mirrors the frozen tower: adam's mu/nu exist for every other parameter only
  opt_paths = [sharding.path_str(p) for p, _ in jax.tree_util.tree_flatten_with_path(state["opt_state"])[0]]
  assert not any("img_frozen" in p for p in opt_paths)
  assert sum("/mu/" in p for p in opt_paths) == len(
    jax.tree.leaves({k: v for k, v in params.items() if k != "img_frozen"})
  )
  assert all(np.isfinite(losses))


def test_optimizer_labels():
  params = {"img": {"w": jnp.ones(2)}, "img_frozen": {"w": jnp.ones(2)}, "llm": {"e": jnp.ones(2)}}
  assert optimizer.labels(params) == {"img": {"w": "train"}, "img_frozen": {"w": "frozen"}, "llm": {"e": "train"}}


def test_lr_mults_scale_a_part_and_leave_the_rest():
  """lr_mults {part: m}: that part's update is m times the base update, the others unchanged; an unknown part
  is an error; no mults = the plain optimizer (same state tree)."""
  import ml_collections

  params = {"img": {"w": jnp.ones((2, 2))}, "llm": {"e": jnp.full((2, 2), 2.0)}}
  grads = {"img": {"w": jnp.full((2, 2), 0.5)}, "llm": {"e": jnp.full((2, 2), -0.3)}}
  base = dict(lr=1e-2, warmup_steps=0, weight_decay=1e-4, clip_norm=1.0, b1=0.9, b2=0.95)

  def update(mults):
    tx = optimizer.make(ml_collections.ConfigDict(dict(base, lr_mults=mults)), 10)
    state = tx.init(params)
    return tx.update(grads, state, params), state

  (plain, _), plain_state = update({})
  (scaled, _), _ = update({"img": 10.0})
  np.testing.assert_allclose(scaled["img"]["w"], 10 * plain["img"]["w"], rtol=1e-6)
  np.testing.assert_array_equal(scaled["llm"]["e"], plain["llm"]["e"])
  assert float(jnp.abs(plain["img"]["w"]).max()) > 0
  default = optimizer.make(ml_collections.ConfigDict(dict(base, lr_mults={})), 10).init(params)
  assert jax.tree.structure(default) == jax.tree.structure(plain_state)
  with pytest.raises(ValueError, match="not parts of this model"):
    update({"imgg": 2.0})


def test_sharded_step_equals_single_device(setup, single_device_run):
  assert len(jax.devices()) == 8
  config = setup[0]
  config.mesh.data, config.mesh.fsdp = 2, 4
  mesh = sharding.make_mesh(config.mesh)
  sharded = _run(setup, mesh, 3)
  _assert_same_training(setup, sharded, single_device_run)
  state8 = sharded[1]
  # the large matrices really are split over the fsdp axis
  emb = state8["params"]["llm"]["embedder"]["input_embedding"]
  assert "fsdp" in str(emb.sharding.spec)
  assert (
    emb.addressable_shards[0].data.shape[0] * 4 == emb.shape[0]
    or emb.addressable_shards[0].data.shape[1] * 4 == emb.shape[1]
  )


def test_tensor_parallel_step_equals_single_device(setup, single_device_run):
  config = setup[0]
  config.mesh.data, config.mesh.fsdp, config.mesh.model = 2, 2, 2
  mesh = sharding.make_mesh(config.mesh)
  run = _run(setup, mesh, 3)
  _assert_same_training(setup, run, single_device_run)
  state = run[1]
  specs = {sharding.path_str(p): x.sharding.spec for p, x in jax.tree_util.tree_flatten_with_path(state["params"])[0]}
  assert specs["llm/layers/mlp/gating_einsum"] == P(None, None, "fsdp", "model")
  assert specs["llm/layers/attn/q_einsum"] == P(None, "model", "fsdp", None)
  assert specs["llm/layers/attn/kv_einsum"] == P(None, None, None, "fsdp", None)  # 1 kv head: not split
  assert specs["img_frozen/blocks/MlpBlock_0/Dense_0/kernel"] == P(None, "fsdp", "model")
  # the optimizer state of a tensor-parallel matrix is split the same way
  mu = [
    x
    for p, x in jax.tree_util.tree_flatten_with_path(state["opt_state"])[0]
    if sharding.path_str(p).endswith("mu/llm/layers/mlp/linear")
  ]
  assert mu and mu[0].sharding.spec == P(None, "model", "fsdp")


def test_gradient_accumulation_equals_one_pass(setup):
  config, model, tx, _, batches = setup
  mesh = sharding.make_mesh(config.mesh)  # 8 devices; 8 rows = 2 micro-batches of 4
  state, _, _ = state_lib.create(model, tx, config.model.image_size, mesh, jax.random.PRNGKey(0))

  # micro-batch i = rows i, i+2, ... (step.microbatches); a batch whose two micro-batches hold different
  # numbers of answer tokens, so that a wrong normalisation (the mean of the micro-batch means) shows
  def micro_tokens(b):
    return b["loss_mask"][:, 1:].reshape(-1, 2, b["loss_mask"].shape[1] - 1).sum(axis=(0, 2))

  raw = next((b for b in batches if len(set(micro_tokens(b))) > 1), None)
  assert raw is not None, [micro_tokens(b) for b in batches]
  batch = sharding.to_global(raw, mesh)

  def grads_with(k):
    fn = jax.jit(lambda p, b: step_lib.grads_and_sums(p, b, model, k))
    with jax.sharding.use_abstract_mesh(mesh.abstract_mesh):
      return jax.device_get(fn(state["params"], batch))

  (g1, s1), (g2, s2) = grads_with(1), grads_with(2)
  n = _positions(config, raw)  # 8 rows x (40 text + 16 image) positions
  # float32 sums over the batch's n positions, as one or as two partial sums: eps * sqrt(n) relative
  for key in s1:
    np.testing.assert_allclose(s2[key], s1[key], rtol=tolerances.float_tol(np.float32, n)[0], err_msg=key)
  # every gradient entry sums n per-position terms, grouped differently: eps * sqrt(n) * (the terms' scale,
  # max|g| over the tree: an entry that cancels to ~0, e.g. the attention key biases, keeps noise of that size)
  _, atol = tolerances.float_tol(np.float32, n, scale=tolerances.tree_max_abs(g1))
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=0, atol=atol), g2, g1)
  # the check can fail: the classic accumulation bugs are off by orders of magnitude more than the tolerance
  micro = jax.tree.map(np.asarray, step_lib.microbatches(raw, 2))
  one_pass = jax.jit(lambda p, b: step_lib.grads_and_sums(p, b, model)[0])  # normalised by b's own tokens
  own = [jax.device_get(one_pass(state["params"], jax.tree.map(lambda x, i=i: x[i], micro))) for i in range(2)]
  tokens = micro_tokens(raw)
  bugs = {
    "mean of the micro-batch means": jax.tree.map(lambda a, b: (a + b) / 2, *own),
    "a dropped micro-batch": jax.tree.map(lambda a: a * tokens[0] / tokens.sum(), own[0]),
  }
  for name, wrong in bugs.items():
    off = max(
      float(np.abs(np.asarray(a, np.float64) - b).max()) for a, b in zip(jax.tree.leaves(wrong), jax.tree.leaves(g1))
    )
    assert off > 1000 * atol, (name, off, atol)
  with pytest.raises(ValueError, match="does not split into 3 micro-batches"):
    step_lib.microbatches({"x": np.zeros((8, 2))}, 3)


def test_mesh_mismatch_is_an_error(setup):
  config = setup[0]
  config.mesh.data, config.mesh.fsdp = 3, 2
  with pytest.raises(ValueError, match="does not match 8 devices"):
    sharding.make_mesh(config.mesh)
