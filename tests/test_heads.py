"""Action heads (genvla_jax/heads): both implement the interface; the train step's loss through a head is
the computation the step did before heads existed (kept below verbatim as the reference), for a token
batch and a π0 batch; and a third head written here plugs into the train step, FLOP counting and the
policy through the registry alone."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from conftest import tiny_config
from genvla_jax import config_lib, heads
from genvla_jax.heads import common
from genvla_jax.inference import policy as policy_lib
from genvla_jax.models import build, flow_matching, pi0, surgery
from genvla_jax.training import flops as flops_lib, preflight, step as step_lib

H, D, S, B, T = 3, 2, 2, 4, 6
IMG = dict(config_lib.SIGLIP_TINY, width=32, depth=1, mlp_dim=64, num_heads=2)
LLM = dict(config_lib.GEMMA_TINY, width=32, depth=2, mlp_dim=64, num_heads=2, head_dim=16, vocab_size=64)
FLOW = config_lib.base_config().flow


def _old_token_sums(params, batch, model, rng=None, flow=None) -> dict:
  """training/step.token_sums as it was before the heads (commit 33cb5f4), verbatim."""
  inputs = (batch["image"], batch["tokens"], batch["input_mask"], batch["ar_mask"])
  sums = {}
  if isinstance(model, pi0.Pi0):
    actions = batch["actions"]  # [B,H,D]
    t_rng, noise_rng = jax.random.split(rng)
    t = flow_matching.sample_time(t_rng, actions.shape[0], *flow["time_beta"], flow["time_min"])
    x_t, target = flow_matching.noisy_actions(actions, jax.random.normal(noise_rng, actions.shape), t)
    logits, velocity = model.apply({"params": params}, *inputs, x_t, t, batch.get("state"), method=model.flow_forward)
    real = (batch["is_robot"][:, None] & ~batch["action_pad"]).astype(jnp.float32)  # [B,H]
    sums["flow_se"] = jnp.sum(jnp.square(velocity - target) * real[..., None])
    sums["flow_elems"] = jnp.sum(real) * actions.shape[-1]
  else:
    logits = model.apply({"params": params}, *inputs)  # [B,T,V]
  logits, targets = logits[:, :-1], batch["tokens"][:, 1:]
  mask = batch["loss_mask"][:, 1:].astype(jnp.float32)
  ce = optax.softmax_cross_entropy_with_integer_labels(logits, targets)
  correct = (jnp.argmax(logits, -1) == targets).astype(jnp.float32)
  robot = batch["is_robot"][:, None].astype(jnp.float32)
  for side, m in (("", mask), ("robot_", mask * robot), ("vl_", mask * (1 - robot))):
    sums.update({side + "ce": jnp.sum(ce * m), side + "correct": jnp.sum(correct * m), side + "tokens": jnp.sum(m)})
  paraphrased = batch.get("paraphrased", jnp.zeros(robot.shape[0], bool))
  sums.update(
    robot_rows=jnp.sum(robot[:, 0]),
    rows=jnp.float32(robot.shape[0]),
    clipped_actions=jnp.sum(batch["num_clipped"]).astype(jnp.float32),
    paraphrased=jnp.sum(paraphrased.astype(jnp.float32)),
  )
  return sums


def _old_loss(params, batch, model, rng=None, flow=None):
  """The old objective: ce / answer tokens (+ flow_se / real action entries with an expert)."""
  sums = _old_token_sums(params, batch, model, rng, flow)
  loss = sums["ce"] / jnp.maximum(jnp.sum(batch["loss_mask"][:, 1:].astype(jnp.float32)), 1.0)
  if "flow_se" in sums:
    real = batch["is_robot"][:, None] & ~batch["action_pad"]
    loss = loss + sums["flow_se"] / jnp.maximum(jnp.sum(real.astype(jnp.float32)) * batch["actions"].shape[-1], 1.0)
  return loss


def _model(flow: bool):
  expert = dict(width=16, mlp_dim=32, action_dim=D, state_dim=S) if flow else None
  return build.vla(IMG, LLM, expert=expert)


def _batch(seed=0):
  """A mixed batch: 2 robot rows (row 1's chunk padded at the end) + 2 VL rows, answers on the last tokens."""
  rng = np.random.default_rng(seed)
  loss_mask = np.zeros((B, T), bool)
  loss_mask[:, 3:] = True
  loss_mask[3, 5:] = False
  action_pad = np.zeros((B, H), bool)
  action_pad[1, 2:] = True
  return dict(
    image=rng.integers(0, 256, (B, 16, 16, 3), dtype=np.uint8),
    tokens=rng.integers(1, 64, (B, T)).astype(np.int32),
    input_mask=np.ones((B, T), bool),
    ar_mask=loss_mask.copy(),
    loss_mask=loss_mask,
    is_robot=np.array([True, True, False, False]),
    actions=rng.uniform(-1, 1, (B, H, D)).astype(np.float32),
    action_pad=action_pad,
    num_clipped=np.array([1, 0, 0, 0], np.int32),
    paraphrased=np.array([True, False, False, False]),
    state=rng.uniform(-1, 1, (B, S)).astype(np.float32),
  )


def test_both_heads_implement_the_interface():
  assert set(heads.HEADS) == {"tokens", "flow"}
  for head in (heads.TokenHead(), heads.FlowHead(FLOW, state_token_dim=S)):
    assert isinstance(head, heads.Head), head
    assert heads.HEADS[head.name] is type(head)


def test_config_chooses_the_head(demo_dir, cache_dir):
  string = heads.from_config(tiny_config(demo_dir, cache_dir))
  pi0_config = tiny_config(demo_dir, cache_dir, config_file="pi0_baseline")
  pi0_config.model.action_expert.state_dim = 5
  pi0 = heads.from_config(pi0_config)
  assert (string.name, string.state_token_dim) == ("tokens", 0)
  assert (pi0.name, pi0.state_token_dim) == ("flow", 5)


def test_head_name_reads_model_head():
  config = config_lib.base_config()
  assert config.model.head == "tokens" and heads.head_name(config) == "tokens"
  config.model.head = "flow"
  assert heads.head_name(config) == "flow"  # model.head alone chooses (tokenizer.action is not read)
  config.model.head = "diffusion"
  with pytest.raises(ValueError) as err:
    heads.head_name(config)
  assert str(err.value) == "config.model.head='diffusion' is no action head; one of: tokens, flow"


def test_upgrade_gives_an_old_run_its_head():
  """A config saved before model.head existed chose the head by tokenizer.action == "flow"."""
  for action, head in (("flow", "flow"), ("string", "tokens"), ("fast", "tokens")):
    saved = config_lib.base_config().to_dict()
    del saved["model"]["head"]
    saved["tokenizer"]["action"] = action
    assert config_lib.upgrade(saved).model.head == head
  saved = config_lib.base_config().to_dict()
  saved["model"]["head"] = "tokens"  # a saved model.head is kept as it is
  saved["tokenizer"]["action"] = "flow"
  assert config_lib.upgrade(saved).model.head == "tokens"


@pytest.mark.parametrize(
  "head, width, action, message",
  [
    ("flow", 0, "flow", r"^model.head='flow' with model.action_expert.width=0: the flow head \(π0\) needs width > 0"),
    ("tokens", 64, "string", r"^model.head='tokens' with model.action_expert.width=64: .*token heads need width 0$"),
    ("flow", 64, "string", r"^model.head='flow' with tokenizer.action='string': the flow head has no action tokens"),
    ("tokens", 0, "flow", r"^model.head='tokens' with tokenizer.action='flow'"),
    ("diffusion", 0, "string", r"^config.model.head='diffusion' is no action head; one of: tokens, flow$"),
  ],
)
def test_head_settings_that_disagree_are_config_errors(head, width, action, message):
  config = config_lib.base_config()
  config.model.head, config.model.action_expert.width, config.tokenizer.action = head, width, action
  with pytest.raises(preflight.ConfigError, match=message) as err:
    preflight.check_settings(config)
  assert "\n" not in str(err.value)


def test_head_settings_that_agree_pass():
  config = config_lib.base_config()
  preflight.check_settings(config)  # tokens, width 0
  config.model.head, config.model.action_expert.width, config.tokenizer.action = "flow", 64, "flow"
  preflight.check_settings(config)


def test_loss_through_the_head_equals_the_old_train_step():
  """Sums, loss and gradients: bit for bit the computation of the pre-heads step, token and π0."""
  batch = _batch()
  rng = jax.random.PRNGKey(7)
  for flow, head in ((False, heads.TokenHead()), (True, heads.FlowHead(FLOW, state_token_dim=S))):
    model = _model(flow)
    params = surgery.init_params(model, jax.random.PRNGKey(1), 16)
    new = jax.jit(lambda p, b, r, head=head, model=model: head.loss_sums(p, b, model, r))(params, batch, rng)
    old = jax.jit(lambda p, b, r, model=model: _old_token_sums(p, b, model, r, FLOW))(params, batch, rng)
    assert set(new) == set(old) and ("flow_se" in new) == flow
    for k in old:
      np.testing.assert_array_equal(new[k], old[k], err_msg=k)
    grads, sums = jax.jit(
      lambda p, b, r, head=head, model=model: step_lib.grads_and_sums(p, b, model, 1, r, head=head)
    )(params, batch, rng)
    old_grads = jax.jit(jax.grad(lambda p, b, r, model=model: _old_loss(p, b, model, r, FLOW)))(params, batch, rng)
    jax.tree.map(np.testing.assert_array_equal, grads, old_grads)
    # the default head of a bare model (make_train_step(model, ..., flow=)) is the same head
    assert heads.for_model(model, FLOW).name == head.name
    metrics = step_lib.metrics_from_sums(sums, head)
    expected = float(old["ce"] / old["tokens"]) + (float(old["flow_se"] / old["flow_elems"]) if flow else 0.0)
    np.testing.assert_allclose(float(metrics["loss"]), expected, rtol=1e-6)


class ZeroHead:
  """A toy third head: predicts the normalized centre (0.0) for every action; trains the text loss plus a
  (gradient-free) report of its own squared error. Written here, registered in heads.HEADS only."""

  name = "zero"
  state_token_dim = 0
  draft_stats = {"drafted": 0, "accepted": 0}

  @classmethod
  def from_config(cls, config):
    del config
    return cls()

  def fit_to_data(self, config, prepared):
    del config, prepared

  def loss_sums(self, params, batch, model, rng=None):
    del rng
    sums = common.text_sums(model.apply({"params": params}, *common.model_inputs(batch)), batch)
    real = (batch["is_robot"][:, None] & ~batch["action_pad"]).astype(jnp.float32)
    sums["zero_se"] = jnp.sum(jnp.square(batch["actions"]) * real[..., None])
    sums["zero_elems"] = jnp.sum(real) * batch["actions"].shape[-1]
    return sums

  def loss_totals(self, batch):
    return {"ce": common.total_tokens(batch)}

  def metrics(self, sums, ratio):
    del sums
    return {"zero_mse": ratio("zero_se", "zero_elems")}

  def extra_flops(self, model_config, batch, seq, action_horizon):
    del model_config, batch, seq, action_horizon
    return 0.0

  def setup_predict(self, model, action_tokenizer, text_tokenizer, action_dim, horizon, seed=0, draft_previous=None):
    del model, action_tokenizer, text_tokenizer, seed, draft_previous
    self.shape = (horizon, action_dim)

  def predict(self, params, pixels, tokens, mask, state_token=None):
    del params, tokens, mask, state_token
    shape = (len(pixels), *self.shape)
    return np.zeros(shape, np.float32), np.ones(shape, bool)

  def reset(self):
    pass


def test_a_new_head_plugs_in_through_the_registry(monkeypatch, demo_dir, cache_dir, prepared):
  monkeypatch.setitem(heads.HEADS, "zero", ZeroHead)
  config = tiny_config(demo_dir, cache_dir)
  config.model.head = "zero"  # the config's choice: one field
  head = heads.from_config(config)
  assert isinstance(head, ZeroHead) and isinstance(head, heads.Head)

  # the train step: the head's loss and metrics, nothing else changed
  model = _model(flow=False)
  params = surgery.init_params(model, jax.random.PRNGKey(1), 16)
  tx = optax.sgd(0.0)
  train_step = jax.jit(step_lib.make_train_step(model, tx, lambda s: 0.0, head=head))
  state = {"step": jnp.zeros((), jnp.int32), "params": params, "opt_state": tx.init(params)}
  batch = _batch()
  _, metrics = train_step(state, batch)
  real = batch["is_robot"][:, None, None] & ~batch["action_pad"][..., None]
  np.testing.assert_allclose(
    float(metrics["zero_mse"]), (batch["actions"] ** 2 * real).sum() / (real.sum() * D), rtol=1e-6
  )
  assert float(metrics["loss"]) > float(metrics["zero_mse"]) > 0  # loss = text loss + the head's metric
  # FLOP counting asks the head
  token = flops_lib.model_flops(config.model, 8, 32, 4, head=heads.TokenHead())
  assert flops_lib.model_flops(config.model, 8, 32, 4, head=head) == token

  # the policy acts through it (params unused by this head)
  robot = prepared.robot[0]
  policy = policy_lib.Policy(config, None, {robot.name: robot.stats}, prepared.action_dim, config.tokenizer.path)
  assert policy.head is not None and isinstance(policy.head, ZeroHead)
  frame = np.zeros((32, 32, 3), np.uint8)
  actions, valid = policy.act([frame, frame], ["pick", "place"])
  assert actions.shape == (2, config.tokenizer.action_horizon, prepared.action_dim) and valid.all()
  np.testing.assert_allclose(actions[0], policy.transform.denormalize_actions(np.zeros_like(actions[0])))
