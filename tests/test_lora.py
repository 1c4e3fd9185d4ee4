"""LoRA (models/lora.py) and freezing by configuration (training/freezing.py): zero-initialised B computes the
base model exactly; training moves only the adapters and the parts left trainable; merge = the training
forward; the start-up report counts what the optimizer holds; patterns that match nothing fail at once;
the default config freezes what it always froze; a LoRA run resumes exactly and its policy acts on merged
params."""

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from genvla_jax.data import pipeline
from genvla_jax.models import build, lora as lora_lib, surgery
from genvla_jax.training import freezing, optimizer, sharding, state as state_lib, step as step_lib

SPEC = lora_lib.Spec(rank=4, alpha=8.0, targets=("llm/layers/attn/.*", "llm/layers/mlp/.*"))
FROZEN = ["llm/.*"]  # classic LoRA: the decoder frozen, its adapters train; tower and projector train too


def _paths(tree) -> dict:
  return {sharding.path_str(p): x for p, x in jax.tree_util.tree_flatten_with_path(tree)[0]}


def _nest(path: str, value):
  for key in reversed(path.split("/")):
    value = {key: value}
  return value


def _leaf(tree, path: str):
  for key in path.split("/"):
    tree = tree[key]
  return tree


@pytest.fixture(scope="module")
def setup(demo_dir, cache_dir, prepared):
  from conftest import tiny_config

  config = tiny_config(demo_dir, cache_dir)
  it = iter(pipeline.make_dataset(config, prepared, seed=0))
  batches = [next(it) for _ in range(2)]
  model = build.from_config(config.model)
  return config, model, batches


def _opt_config(config, frozen):
  return ml_collections.ConfigDict(dict(config.optimizer.to_dict(), frozen=list(frozen), warmup_steps=0, lr=1e-2))


@pytest.fixture(scope="module")
def trained(setup):
  """Two LoRA train steps on one device: (initial state's params, final state)."""
  config, model, batches = setup
  mesh = sharding.make_mesh(config.mesh, jax.devices()[:1])
  opt = _opt_config(config, FROZEN)
  tx = optimizer.make(opt, 10)
  state, shardings, _ = state_lib.create(model, tx, config.model.image_size, mesh, jax.random.PRNGKey(0), lora=SPEC)
  initial = jax.device_get(state["params"])
  fn = step_lib.make_train_step(model, tx, optimizer.schedule(opt, 10), frozen=FROZEN, lora=SPEC)
  train_step = step_lib.jit_train_step(fn, shardings, mesh, donate=False)
  for b in batches:
    state, metrics = train_step(state, sharding.to_global(b, mesh))
    assert np.isfinite(float(metrics["loss"]))
  return initial, jax.device_get(state)


def test_zero_b_is_the_base_model_exactly(setup):
  config, model, batches = setup
  base = surgery.init_params(model, jax.random.PRNGKey(0), config.model.image_size)
  params = lora_lib.with_adapters(base, SPEC, jax.random.PRNGKey(0))
  adapters = _paths(params[lora_lib.KEY])
  # every decoder projection has its adapter; A random, B zero
  assert sorted({p.rsplit("/", 1)[0] for p in adapters}) == [
    f"llm/layers/{k}"
    for k in ("attn/attn_vec_einsum", "attn/kv_einsum", "attn/q_einsum", "mlp/gating_einsum", "mlp/linear")
  ]
  assert adapters["llm/layers/attn/q_einsum/a"].shape == (3, 128, 4)  # [L, D, r]
  assert adapters["llm/layers/attn/q_einsum/b"].shape == (3, 4, 4, 32)  # [L, r, N, Hd]
  assert adapters["llm/layers/attn/kv_einsum/a"].shape == (3, 2, 128, 4)  # k and v: one adapter each
  assert all(float(jnp.abs(x).max()) > 0 for p, x in adapters.items() if p.endswith("/a"))
  assert all(float(jnp.abs(x).max()) == 0 for p, x in adapters.items() if p.endswith("/b"))
  merged = lora_lib.merged(params, SPEC.alpha)
  jax.tree.map(np.testing.assert_array_equal, merged, base)  # W + s A 0 = W, bit for bit
  b = batches[0]
  inputs = (b["image"], b["tokens"], b["input_mask"], b["ar_mask"])
  apply = jax.jit(lambda p: model.apply({"params": p}, *inputs))
  np.testing.assert_array_equal(apply(merged), apply(base))
  # the training loss at step 0 is the base model's
  _, sums = step_lib.grads_and_sums(params, b, model, lora=SPEC, frozen=FROZEN)
  _, base_sums = step_lib.grads_and_sums(base, b, model)
  np.testing.assert_array_equal(sums["ce"], base_sums["ce"])


# each adapted projection as the models compute it (gemma.py, vit.py: x, one layer's kernel), and LoRA written
# out by hand for it: x A (A over the kernel's input axes; kv's k|v and gating's gate|up pairs C each their own),
# then (x A) B
PROJECTIONS = {
  "llm/layers/attn/q_einsum": ("BTD,NDH->BTNH", (2, 3, 8), (4, 8, 5), "BTD,Dr->BTr", "BTr,rNH->BTNH"),
  "llm/layers/attn/kv_einsum": ("BSD,CKDH->CBSKH", (2, 3, 8), (2, 2, 8, 5), "BSD,CDr->CBSr", "CBSr,CrKH->CBSKH"),
  "llm/layers/attn/attn_vec_einsum": ("BTNH,NHD->BTD", (2, 3, 4, 5), (4, 5, 8), "BTNH,NHr->BTr", "BTr,rD->BTD"),
  "llm/layers/mlp/gating_einsum": ("BTD,CDF->CBTF", (2, 3, 8), (2, 8, 16), "BTD,CDr->CBTr", "CBTr,CrF->CBTF"),
  "llm/layers/mlp/linear": ("BTF,FD->BTD", (2, 3, 16), (16, 8), "BTF,Fr->BTr", "BTr,rD->BTD"),
  "img/blocks/MultiHeadDotProductAttention_0/query/kernel": (
    "BTD,DNH->BTNH",
    (2, 3, 8),
    (8, 4, 5),
    "BTD,Dr->BTr",
    "BTr,rNH->BTNH",
  ),
  "img/blocks/MultiHeadDotProductAttention_0/out/kernel": (
    "BTNH,NHD->BTD",
    (2, 3, 4, 5),
    (4, 5, 8),
    "BTNH,NHr->BTr",
    "BTr,rD->BTD",
  ),
  "img/blocks/MlpBlock_0/Dense_0/kernel": ("BTD,DF->BTF", (2, 3, 8), (8, 16), "BTD,Dr->BTr", "BTr,rF->BTF"),
}


@pytest.mark.parametrize("path", sorted(PROJECTIONS))
def test_merged_kernel_is_lora_on_the_projection(path):
  """x W' = x W + s (x A) B for each kernel kind and each layer of the stacked kernel: the axis roles
  (lora.KERNELS) put A on the axes the projection reads and B on those it writes."""
  equation, x_shape, w_shape, xa_equation, low_equation = PROJECTIONS[path]
  layers, rank, alpha = 2, 3, 1.5
  keys = jax.random.split(jax.random.PRNGKey(1), 4)
  w = jax.random.normal(keys[0], (layers, *w_shape))
  x = jax.random.normal(keys[1], x_shape)
  a_shape, b_shape, _ = lora_lib.adapter_shapes(w.shape, lora_lib.roles(path), rank)
  a, b = jax.random.normal(keys[2], a_shape), jax.random.normal(keys[3], b_shape)
  merged = _leaf(lora_lib.merge(_nest(path, w), _nest(path, {"a": a, "b": b}), alpha), path)
  for layer in range(layers):
    low = jnp.einsum(low_equation, jnp.einsum(xa_equation, x, a[layer]), b[layer])
    want = jnp.einsum(equation, x, w[layer]) + alpha / rank * low
    np.testing.assert_allclose(jnp.einsum(equation, x, merged[layer]), want, rtol=1e-5, atol=1e-5)


def test_training_moves_only_adapters_and_trainable_parts(trained):
  initial, state = trained
  params = state["params"]
  before, after = _paths(initial), _paths(params)
  changed = {p for p in after if not np.array_equal(after[p], before[p])}
  frozen = {p for p in after if p.split("/")[0] in ("llm", "img_frozen")}
  assert not changed & frozen  # the decoder (base kernels and all) and the frozen tower: bit-identical
  assert {p for p in after if p.startswith("lora/") and p.endswith("/b")} <= changed  # B left zero
  assert {p for p in after if p.startswith(("img/", "projector/"))} <= changed  # chosen trainable: they moved
  # the optimizer holds state for exactly the trainable leaves, and the report counts the same
  mask = freezing.trainable_mask(params, FROZEN)
  mu = [x for p, x in _paths(state["opt_state"]).items() if "/mu/" in p]
  table = freezing.counts(params, mask)
  assert sum(x.size for x in mu) == table["total"]["trainable"]
  assert not any("/mu/llm/" in p or "/mu/img_frozen/" in p for p in _paths(state["opt_state"]))
  assert table["llm"]["trainable"] == 0 and table["lora"]["frozen"] == 0
  assert table["total"]["trainable"] + table["total"]["frozen"] == surgery.count_params(params)
  assert table["lora"]["trainable_bytes"] == 4 * table["lora"]["trainable"]
  lines = freezing.report(params, mask)
  assert lines[0].split()[0] == "part" and lines[-1].split()[0] == "total" and any("lora" in line for line in lines)


def test_merge_then_forward_equals_the_training_forward(setup, trained):
  """The trained adapters (B no longer zero) merged once give the loss the train step computes."""
  config, model, batches = setup
  _, state = trained
  params = state["params"]
  base, adapters = lora_lib.split(params)
  merged = lora_lib.merge(base, adapters, SPEC.alpha)
  linear = ("llm", "layers", "mlp", "linear")
  assert not np.array_equal(_leaf(merged, "/".join(linear)), _leaf(base, "/".join(linear)))  # B moved
  b = batches[0]
  _, sums = jax.jit(lambda p: step_lib.grads_and_sums(p, b, model, lora=SPEC, frozen=FROZEN))(params)
  _, plain = jax.jit(lambda p: step_lib.grads_and_sums(p, b, model))(merged)
  for key in ("ce", "correct"):
    np.testing.assert_allclose(sums[key], plain[key], rtol=1e-6)


def test_accumulated_gradients_equal_one_pass(setup, trained):
  """Gradient accumulation over the trainable leaves only (adapters, tower, projector): 2 micro-batches sum to
  the one-pass gradient; the frozen leaves' gradients are zeros."""
  import tolerances

  config, model, batches = setup
  params = trained[1]["params"]
  b = batches[1]
  g1, _ = jax.jit(lambda p: step_lib.grads_and_sums(p, b, model, 1, frozen=FROZEN, lora=SPEC))(params)
  g2, _ = jax.jit(lambda p: step_lib.grads_and_sums(p, b, model, 2, frozen=FROZEN, lora=SPEC))(params)
  assert all(float(jnp.abs(g).max()) == 0 for g in jax.tree.leaves(g1["llm"]))
  assert float(jnp.abs(g1["lora"]["llm"]["layers"]["attn"]["q_einsum"]["a"]).max()) > 0
  n = len(b["tokens"]) * (b["tokens"].shape[1] + build.num_image_tokens(config.model))
  _, atol = tolerances.float_tol(np.float32, n, scale=tolerances.tree_max_abs(g1))
  jax.tree.map(lambda x, y: np.testing.assert_allclose(x, y, rtol=0, atol=atol), g2, g1)


def test_unmatched_patterns_fail_naming_them(setup):
  config, model, _ = setup
  params = jax.eval_shape(lambda: surgery.init_params(model, jax.random.PRNGKey(0), config.model.image_size))
  with pytest.raises(ValueError, match="'llm/nothing/.*'"):
    freezing.trainable_mask(params, ["llm/.*", "llm/nothing/.*"])
  with pytest.raises(ValueError, match="'expert/.*' matches no parameter"):
    lora_lib.targets(params, ["expert/.*"])
  with pytest.raises(ValueError, match="final_norm/scale, which is no projection kernel"):
    lora_lib.targets(params, ["llm/final_norm/.*"])
  with pytest.raises(ValueError, match="frozen tower gets no gradient"):
    lora_lib.targets(params, ["img_frozen/blocks/MlpBlock_0/Dense_0/kernel"])
  # full match: "llm/.*" is the decoder only, not π0's expert/llm
  assert lora_lib.targets(params, ["img/blocks/.*/kernel"]).keys() == {
    f"img/blocks/{k}/kernel"
    for k in ("MlpBlock_0/Dense_0", "MlpBlock_0/Dense_1")
    + tuple(f"MultiHeadDotProductAttention_0/{n}" for n in ("query", "key", "value", "out"))
  }
  # the start-up check (preflight) reports them all, from the config alone
  config = config.copy_and_resolve_references()
  config.optimizer.frozen = ["projector/.*", "vision/.*"]
  config.lora.rank = 4
  config.lora.targets = ["llm/layers/attn/.*", "llm/embedder/.*"]
  problems = freezing.config_problems(config)
  assert len(problems) == 1 and "input_embedding, which is no projection kernel" in problems[0]
  config.lora.rank = 0
  problems = freezing.config_problems(config)
  assert len(problems) == 1 and "'vision/.*'" in problems[0]


def test_pi0_expert_targets():
  from configs import pi0_baseline

  config = pi0_baseline.get_config("demo")
  config.lora.rank = 2
  config.lora.targets = ["expert/llm/layers/(attn|mlp)/.*", "img/blocks/MlpBlock_0/.*/kernel"]
  config.optimizer.frozen = ["llm/.*", "expert/llm/.*"]
  assert freezing.config_problems(config) == []
  params = freezing.abstract_params(config)
  adapted = lora_lib.adapted(params)
  assert len(adapted) == 7 and all(p.startswith(("expert/llm/layers/", "img/blocks/MlpBlock_0/")) for p in adapted)
  mask = _paths(freezing.trainable_mask(params, config.optimizer.frozen))
  assert not mask["img/blocks/MlpBlock_0/Dense_0/kernel"] and mask["img/blocks/MlpBlock_0/Dense_0/bias"]
  assert mask["expert/action_in/kernel"] and not mask["expert/llm/final_norm/scale"]


def _decay(params):
  return jax.tree.map(lambda p: p.ndim >= 2, params)


def test_default_config_freezes_what_it_always_froze(setup):
  """Schema defaults (optimizer.frozen=[], lora.rank=0): no adapters, only the frozen tower frozen, the same
  optimizer state tree as the optimizer before configurable freezing built."""
  import optax

  config, model, _ = setup
  assert config.optimizer.frozen == [] and config.lora.rank == 0
  params = jax.eval_shape(lambda: surgery.init_params(model, jax.random.PRNGKey(0), config.model.image_size))
  assert lora_lib.with_adapters(params, lora_lib.Spec.from_config(config.lora), None) is params
  labels = optimizer.labels(params, config.optimizer.frozen)
  assert {k: set(jax.tree.leaves(v)) for k, v in labels.items()} == {
    "img": {"train"},
    "img_frozen": {"frozen"},
    "llm": {"train"},
    "projector": {"train"},
  }
  o = config.optimizer
  train = optax.chain(  # training/optimizer.make as it was, with its labels by top-level part
    optax.clip_by_global_norm(o.clip_norm),
    optax.adamw(optimizer.schedule(o, 10), o.b1, o.b2, weight_decay=o.weight_decay, mask=_decay),
  )
  before = optax.multi_transform(
    {"train": train, "frozen": optax.set_to_zero()},
    {k: jax.tree.map(lambda _, k=k: "frozen" if k in surgery.FROZEN_PARTS else "train", v) for k, v in params.items()},
  )
  now = optimizer.make(config.optimizer, 10)
  assert jax.tree.structure(jax.eval_shape(now.init, params)) == jax.tree.structure(jax.eval_shape(before.init, params))


def _dir_bytes(path) -> int:
  return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


@pytest.fixture(scope="module")
def lora_runs(tmp_path_factory, setup):
  """train.train with LoRA, 2 steps: "a" straight (adapters-only checkpoints, the default), "b" stopped after 1
  step and resumed, "c" straight with train.checkpoint_frozen=True (whole checkpoints: the trainer's own
  state, the reference for the rebuilt base). -> (config, root, {run: records}, start-up messages of a)."""
  from genvla_jax import train

  config = setup[0].copy_and_resolve_references()
  config.train.steps = 2
  config.train.checkpoint_every = 1
  config.optimizer.frozen = FROZEN
  config.lora.rank, config.lora.alpha = SPEC.rank, SPEC.alpha
  root = tmp_path_factory.mktemp("lora_runs")
  messages, records = [], {}
  records["a"] = train.train(config, str(root / "a"), printer=lambda *a, **k: messages.append(str(a[0])))
  train.train(config, str(root / "b"), stop_after=1, printer=lambda *a, **k: None)
  resumed = []
  records["b"] = train.train(config, str(root / "b"), printer=lambda *a, **k: resumed.append(str(a[0])))
  assert any("resumed" in m and "step 1" in m for m in resumed)
  whole = config.copy_and_resolve_references()
  whole.train.checkpoint_frozen = True
  records["c"] = train.train(whole, str(root / "c"), printer=lambda *a, **k: None)
  return config, root, records, messages


def _restored(root, run, config, step=2, what="params"):
  """A run's checkpoint as readers restore it (adapters-only: the base rebuilt from its reference)."""
  from genvla_jax.training import checkpoint

  ckpt = checkpoint.Checkpointer(str(root / run / "checkpoints"), read_only=True)
  model = build.from_config(config.model)
  spec = lora_lib.Spec.from_config(config.lora)
  try:
    if what == "params":
      return jax.device_get(
        ckpt.restore_params(step, state_lib.abstract_params(model, config.model.image_size, jax.devices()[0], spec))
      )
    tx = optimizer.make(config.optimizer, config.train.steps)
    mesh = sharding.make_mesh(config.mesh, jax.devices()[:1])
    return jax.device_get(ckpt.restore(step, state_lib.abstract(model, tx, config.model.image_size, mesh, (), spec)[0]))
  finally:
    ckpt.close()


def test_lora_run_resumes_exactly(lora_runs):
  """The start-up table; a run stopped after 1 step and resumed from its adapters-only checkpoint (base rebuilt
  by the trainer's start-up path) = the uninterrupted one bit for bit: loss, params, optimizer state."""
  config, root, records, messages = lora_runs
  table = next(m for m in messages if m.startswith("parameters, trainable / frozen"))
  assert "optimizer.frozen=['llm/.*']" in table and "rank 4, alpha 8" in table
  assert "\n  lora " in table and "\n  total " in table
  assert any(m.startswith("checkpoints: the trainable parameters only") for m in messages)
  loss = lambda run: [r["loss"] for r in records[run] if r.get("step") == 2 and "loss" in r]  # noqa: E731
  assert loss("a") == loss("b") == loss("c") and len(loss("a")) == 1
  a, b = _restored(root, "a", config, what="state"), _restored(root, "b", config, what="state")
  jax.tree.map(np.testing.assert_array_equal, a, b)
  assert int(a["step"]) == 2 and float(jnp.abs(a["params"]["lora"]["llm"]["layers"]["mlp"]["linear"]["b"]).max()) > 0


def test_adapters_only_checkpoint_holds_the_trainable_leaves(lora_runs):
  """meta["base"] names the frozen leaves (the decoder's, the frozen tower's) and their fingerprint; the saved
  items are smaller than a whole checkpoint's; restored with the base rebuilt from the reference they equal the
  trainer's whole checkpoint bit for bit."""
  from genvla_jax.training import checkpoint

  config, root, _, _ = lora_runs
  ckpt = checkpoint.Checkpointer(str(root / "a" / "checkpoints"), read_only=True)
  ref = ckpt.restore_meta(2)["base"]
  ckpt.close()
  whole = _restored(root, "c", config)
  frozen = {p for p in _paths(whole) if p.split("/")[0] in ("llm", "img_frozen")}
  assert set(ref["leaves"]) == frozen and ref["kind"] == "init" and ref["seed"] == config.seed
  sizes = {
    run: sum(_dir_bytes(root / run / "checkpoints" / "2" / item) for item in ("params", "train")) for run in "ac"
  }
  frozen_bytes = sum(x.nbytes for p, x in _paths(whole).items() if p in frozen)
  assert sizes["a"] < sizes["c"] - frozen_bytes // 2  # (orbax's files: compressed chunks + metadata)
  jax.tree.map(np.testing.assert_array_equal, _restored(root, "a", config), whole)


def test_policy_restores_an_adapters_only_run_and_acts_as_the_merged_params(lora_runs, setup):
  """Policy.from_workdir on the adapters-only run: base rebuilt on one device, adapters merged = the trainer's
  whole checkpoint merged, bit for bit; its actions = a policy given those merged params."""
  from genvla_jax.inference import policy as policy_lib

  config, root, _, _ = lora_runs
  policy = policy_lib.Policy.from_workdir(str(root / "a"))
  assert lora_lib.KEY not in policy.params and policy.step == 2
  merged = lora_lib.merged(_restored(root, "c", config), SPEC.alpha)
  jax.tree.map(np.testing.assert_array_equal, jax.device_get(policy.params), merged)
  reference = policy_lib.Policy.from_workdir(str(root / "c"))
  reference.params = jax.device_put(merged)
  images = np.asarray(setup[2][0]["image"][:2])  # uint8 frames of the demo data
  instructions = ["go to the red square", "go to the blue square"]
  actions, valid = policy.act(images, instructions)
  want, want_valid = reference.act(images, instructions)
  np.testing.assert_array_equal(actions, want)
  np.testing.assert_array_equal(valid, want_valid)


def test_resuming_against_another_base_fails_naming_both(lora_runs, tmp_path, monkeypatch):
  """The base rebuilt at resume (or by a reader) differs from the one trained on (here: the initialiser changed
  the decoder's weights): an error naming both fingerprints, and the run's checkpoints are left as they were."""
  import shutil

  from genvla_jax import train
  from genvla_jax.inference import policy as policy_lib
  from genvla_jax.training import checkpoint, frozen_base

  config, root, _, _ = lora_runs
  run = tmp_path / "a"
  shutil.copytree(root / "a", run)
  ckpt = checkpoint.Checkpointer(str(run / "checkpoints"), read_only=True)
  ref, steps = ckpt.restore_meta(2)["base"], ckpt.steps()
  ckpt.close()
  init = surgery.init_params

  def changed_init(model, rng, image_size, *args, **kwargs):
    params = init(model, rng, image_size, *args, **kwargs)
    llm = params["llm"]
    return dict(params, llm=dict(llm, final_norm=jax.tree.map(lambda x: x + 1, llm["final_norm"])))

  monkeypatch.setattr(surgery, "init_params", changed_init)
  longer = config.copy_and_resolve_references()
  longer.train.steps = 3
  with pytest.raises(frozen_base.BaseError, match=f"fingerprint {ref['fingerprint']}.*1 of {len(ref['leaves'])}"):
    train.train(longer, str(run), printer=lambda *a, **k: None)
  with pytest.raises(frozen_base.BaseError, match="llm/final_norm/scale"):
    policy_lib.Policy.from_workdir(str(run))
  ckpt = checkpoint.Checkpointer(str(run / "checkpoints"), read_only=True)
  assert ckpt.steps() == steps
  ckpt.close()


@pytest.mark.slow
def test_merged_export_gives_the_unmerged_models_logits(tmp_path, setup):
  """tools/export_hf on a LoRA run (adapters on the decoder and the image tower, B trained away from zero,
  adapters-only checkpoint): transformers' PaliGemma loading the export computes the logits our model computes
  with the adapters applied by the tree transform (lora.merged of the restored train-state params), within the
  float32 tolerance of the reductions involved; the base model without the adapters is farther off than that."""
  import dataclasses

  import paligemma_reference
  import tolerances
  import transformers

  from genvla_jax import train
  from genvla_jax.tools import export_hf, logits as logits_tool

  config = setup[0].copy_and_resolve_references()
  config.model.dual_encoder = False  # PaliGemma has one tower
  config.train.steps = config.train.checkpoint_every = 2
  config.optimizer.frozen = FROZEN
  config.optimizer.lr, config.optimizer.warmup_steps = 1e-2, 0
  config.lora.rank, config.lora.alpha = SPEC.rank, SPEC.alpha
  config.lora.targets = [*SPEC.targets, "img/blocks/.*/kernel"]
  run, out = tmp_path / "run", tmp_path / "export"
  train.train(config, str(run), printer=lambda *a, **k: None)
  export_hf.export_run(str(run), str(out))
  params = _restored(tmp_path, "run", config)
  assert all(float(np.abs(x).max()) > 0 for p, x in _paths(params[lora_lib.KEY]).items() if p.endswith("/b"))
  assert any(p.startswith("img/") for p in lora_lib.adapted(params))

  model = dataclasses.replace(build.from_config(config.model), parent=None)
  size, n, m = config.model.image_size, build.num_image_tokens(config.model), config.model
  rng = np.random.default_rng(0)
  images = rng.uniform(-1, 1, (2, size, size, 3)).astype(np.float32)
  tokens = rng.integers(4, m.llm.vocab_size - 1, (2, 12)).astype(np.int32)
  prefix_len = np.full((2,), tokens.shape[1], np.int32)
  ours = logits_tool.compute_logits(model, lora_lib.merged(params, SPEC.alpha), images, tokens, prefix_len)
  base = logits_tool.compute_logits(model, lora_lib.split(params)[0], images, tokens, prefix_len)

  hf_model = transformers.PaliGemmaForConditionalGeneration.from_pretrained(str(out)).eval()
  theirs = paligemma_reference.logits(hf_model, images, tokens, prefix_len)
  atol = tolerances.paligemma_logits_atol(m, n, tokens.shape[1], scale=np.abs(ours).max())
  np.testing.assert_allclose(theirs, ours, rtol=0, atol=atol)
  assert np.abs(theirs - base).max() > 10 * atol  # the export carries the adapters


# -- the factored path (lora.for_training): the decoder's adapters inside its layers, the towers' merged --------

PI0_TARGETS = ("llm/layers/(attn|mlp)/.*", "expert/llm/layers/(attn|mlp)/.*", "img/blocks/MlpBlock_0/Dense_0/kernel")


def test_factored_equations_follow_the_axis_roles():
  """The einsums of x A and (x A) B derived from each decoder projection's einsum are the hand-written ones of
  PROJECTIONS; an einsum whose axes contradict the roles is an error naming it."""
  for path, (equation, *_, xa_equation, low_equation) in PROJECTIONS.items():
    if lora_lib.is_factored(path):
      kernel = path.split("layers/", 1)[1]
      assert lora_lib.factored_equations(equation, lora_lib.layer_roles(kernel)) == (xa_equation, low_equation)
  assert {p for p in PROJECTIONS if lora_lib.is_factored(p)} == {p for p in PROJECTIONS if p.startswith("llm/")}
  assert lora_lib.is_factored("expert/llm/layers/mlp/linear")
  with pytest.raises(ValueError, match="'BTD,DNH->BTNH'"):
    lora_lib.factored_equations("BTD,DNH->BTNH", "oio")
  with pytest.raises(ValueError, match="'attn/nothing' is no decoder kernel"):
    lora_lib.layer_roles("attn/nothing")


@pytest.fixture(scope="module")
def pi0_lora():
  """A tiny π0 (test_pi0's sizes), adapters on the LLM, the expert's decoder and one image-tower kernel with B
  random (as after training), its inputs, and fixed random weights for a scalar loss of logits and velocity."""
  from test_pi0 import _inputs, _model

  model = _model()
  base = surgery.init_params(model, jax.random.PRNGKey(0), 16)
  spec = lora_lib.Spec(rank=3, alpha=6.0, targets=PI0_TARGETS)
  params = lora_lib.with_adapters(base, spec, jax.random.PRNGKey(1))
  keys = iter(jax.random.split(jax.random.PRNGKey(2), 64))
  params[lora_lib.KEY] = jax.tree_util.tree_map_with_path(
    lambda p, x: jax.random.normal(next(keys), x.shape) * 0.3 if sharding.path_str(p).endswith("/b") else x,
    params[lora_lib.KEY],
  )
  images, tokens, mask = _inputs()
  x_t = jax.random.normal(next(keys), (2, 3, 2))
  inputs = (images, tokens, mask, np.zeros_like(mask), x_t, jnp.array([0.3, 0.8]), jnp.ones((2, 2)))
  return model, spec, params, inputs


def _pi0_forward(model, spec, params, inputs, factored):
  model_params, adapters = lora_lib.for_training(params, spec.alpha, factored)
  assert (adapters is None) == (not factored)
  if factored:  # the tower's adapter merged, the decoders' passed to the layers
    assert set(_paths(adapters)) == {p for p in _paths(params[lora_lib.KEY]) if not p.startswith("img/")}
  return lora_lib.with_collection(model, adapters).apply({"params": model_params}, *inputs, method=model.flow_forward)


def test_factored_forward_and_gradients_equal_the_merged(pi0_lora):
  """With B nonzero: the factored forward (x W + (x A)(s B) in the LLM's and the expert's layers) gives the
  merged forward's (W + s A B) text logits and velocity within float32 rounding, and the same gradients with
  respect to every A and B; the adapters matter (the base model is far off)."""
  import tolerances

  model, spec, params, inputs = pi0_lora
  forward = jax.jit(lambda p, factored: _pi0_forward(model, spec, p, inputs, factored), static_argnums=1)
  (logits, velocity), (want_logits, want_velocity) = forward(params, True), forward(params, False)
  base_logits, base_velocity = jax.jit(lambda p: model.apply({"params": p}, *inputs, method=model.flow_forward))(
    lora_lib.split(params)[0]
  )
  from test_pi0 import LLM

  n = tolerances.transformer_terms(LLM, 5 + 64 + 4)  # text + image tokens + suffix (state + 3 actions)
  for got, want, base in ((logits, want_logits, base_logits), (velocity, want_velocity, base_velocity)):
    rtol, atol = tolerances.float_tol(np.float32, n, scale=float(jnp.abs(want).max()))
    np.testing.assert_allclose(got, want, rtol=rtol, atol=atol)
    assert float(jnp.abs(base - want).max()) > 100 * atol

  w_logits = jax.random.normal(jax.random.PRNGKey(3), logits.shape)
  w_velocity = jax.random.normal(jax.random.PRNGKey(4), velocity.shape)

  def loss(adapters, factored):
    out_logits, out_velocity = _pi0_forward(model, spec, dict(params, lora=adapters), inputs, factored)
    return jnp.sum(out_logits * w_logits) + jnp.sum(out_velocity * w_velocity)

  grad = jax.jit(jax.grad(loss), static_argnums=1)
  got, want = _paths(grad(params[lora_lib.KEY], True)), _paths(grad(params[lora_lib.KEY], False))
  assert got.keys() == want.keys() and len(got) == 2 * 11  # 5 LLM + 5 expert + 1 tower kernel, A and B each
  for path in want:
    assert float(jnp.abs(want[path]).max()) > 0, path
    _, atol = tolerances.float_tol(np.float32, n, scale=float(jnp.abs(want[path]).max()))
    np.testing.assert_allclose(got[path], want[path], rtol=0, atol=atol, err_msg=path)


def test_factored_zero_b_is_the_base_model_exactly(pi0_lora):
  """B zero on the factored path: π0's logits and velocity are the base model's bit for bit."""
  model, spec, params, inputs = pi0_lora
  zero_b = dict(
    params,
    lora=jax.tree_util.tree_map_with_path(
      lambda p, x: jnp.zeros_like(x) if sharding.path_str(p).endswith("/b") else x, params[lora_lib.KEY]
    ),
  )
  got = jax.jit(lambda p: _pi0_forward(model, spec, p, inputs, True))(zero_b)
  want = jax.jit(lambda p: model.apply({"params": p}, *inputs, method=model.flow_forward))(lora_lib.split(params)[0])
  jax.tree.map(np.testing.assert_array_equal, got, want)


def test_factored_step_needs_less_memory_than_merging(monkeypatch):
  """XLA's memory analysis of the compiled train step (plan.memory_plan with compile) on the demo LoRA config
  (test_memory_plan's: pi0_plus:demo, rank 4 on the decoder's attention + MLP, the decoder frozen, bf16 base):
  the factored step peaks lower than the one merging every adapter (no W', no full-size dW')."""
  import functools

  from configs import pi0_plus
  from genvla_jax.training import plan

  config = pi0_plus.get_config("demo")
  config.data.batch_size = 8
  config.lora.rank = 4
  config.optimizer.frozen = ["llm/.*"]
  config.model.param_dtype = config.model.frozen_dtype = "bfloat16"
  options = plan.Options(compile=True, device_gb=(24,))
  factored = plan.memory_plan(config, options, printer=lambda *a, **k: None)[0]["compiled"]
  monkeypatch.setattr(step_lib, "make_train_step", functools.partial(step_lib.make_train_step, factored=False))
  merged = plan.memory_plan(config, options, printer=lambda *a, **k: None)[0]["compiled"]
  assert factored["argument_bytes"] == merged["argument_bytes"]  # the same state and batch
  assert factored["peak"] < merged["peak"], (factored, merged)
  assert factored["temp_bytes"] < merged["temp_bytes"]
