"""Loss and train step. Next-token cross-entropy on answer tokens only (loss_mask), averaged over all
answer tokens of the batch; for π0 (a model with an action expert) plus the flow-matching MSE on the
robot rows' action chunks (padding past the episode end excluded); metrics split robot / VL rows;
optional gradient accumulation over micro-batches (config.train.grad_accum_steps)."""

import jax
import jax.numpy as jnp
from jax.sharding import NamedSharding, PartitionSpec as P
import optax

from genvla_jax.models import flow_matching
from genvla_jax.models.partitioning import BATCH, constrain
from genvla_jax.training import sharding


def token_sums(params, batch, model, rng=None, flow=None) -> dict:
  """Sums over the batch's answer tokens (loss_mask) of cross-entropy and correct predictions, for all,
  robot and VL rows; losses and accuracies are ratios of these, so micro-batches add up exactly. With an
  action expert also the flow-matching squared error summed over the robot rows' real action entries
  (`flow_se`, `flow_elems`); `rng` draws its flow times and noise, `flow`: config.flow (time_beta,
  time_min; required with an action expert)."""
  inputs = (batch["image"], batch["tokens"], batch["input_mask"], batch["ar_mask"])
  sums = {}
  if model.expert_config:
    if flow is None:
      raise ValueError("a model with an action expert trains with config.flow: pass flow=config.flow")
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
  logits, targets = logits[:, :-1], batch["tokens"][:, 1:]  # position t predicts token t+1
  mask = batch["loss_mask"][:, 1:].astype(jnp.float32)  # [B,T-1]
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


def objective(sums, total_tokens, total_flow_elems=None):
  """The minimised loss: cross-entropy per answer token (+ flow MSE per action entry with an expert)."""
  loss = sums["ce"] / total_tokens
  if "flow_se" in sums:
    loss = loss + sums["flow_se"] / total_flow_elems
  return loss


def metrics_from_sums(sums) -> dict:
  def ratio(a, b):
    return sums[a] / jnp.maximum(sums[b], 1.0)

  metrics = {
    "loss": ratio("ce", "tokens"),
    "token_accuracy": ratio("correct", "tokens"),
    "robot_loss": ratio("robot_ce", "robot_tokens"),
    "vl_loss": ratio("vl_ce", "vl_tokens"),
    "robot_token_accuracy": ratio("robot_correct", "robot_tokens"),
    "robot_fraction": ratio("robot_rows", "rows"),
    "clipped_actions": sums["clipped_actions"],
    "answer_tokens": sums["tokens"],
    "paraphrased_fraction": ratio("paraphrased", "robot_rows"),
  }
  if "flow_se" in sums:
    metrics["flow_mse"] = ratio("flow_se", "flow_elems")
    metrics["loss"] = metrics["loss"] + metrics["flow_mse"]
  return metrics


def microbatches(batch: dict, k: int) -> dict:
  """[B,...] -> [k, B/k, ...], micro-batch i = rows i, i+k, i+2k, ...: every device keeps its own rows
  (B/k rows of each device's contiguous block), so no data moves between devices."""

  def split(x):
    if x.shape[0] % k:
      raise ValueError(f"batch of {x.shape[0]} rows does not split into {k} micro-batches")
    x = x.reshape(x.shape[0] // k, k, *x.shape[1:]).swapaxes(0, 1)
    return constrain(x, None, BATCH, *([None] * (x.ndim - 2)))

  return jax.tree.map(split, batch)


def grads_and_sums(params, batch, model, accum_steps: int = 1, rng=None, flow=None):
  """-> (grads of the batch's loss, token sums). With accum_steps > 1 the batch runs as that many
  micro-batches in a scan, each contributing its sums / the whole batch's token (and action entry)
  counts, so the gradient equals the one-pass gradient (up to float summation order) at 1/k the
  activation memory. `rng` (π0): flow times and noise; micro-batch i folds in i."""
  total_tokens = jnp.maximum(jnp.sum(batch["loss_mask"][:, 1:].astype(jnp.float32)), 1.0)
  total_flow = None
  if model.expert_config:
    real = batch["is_robot"][:, None] & ~batch["action_pad"]
    total_flow = jnp.maximum(jnp.sum(real.astype(jnp.float32)) * batch["actions"].shape[-1], 1.0)
    rng = jax.random.PRNGKey(0) if rng is None else rng

  def grad_one(micro, micro_rng):
    def loss(p):
      sums = token_sums(p, micro, model, micro_rng, flow)
      return objective(sums, total_tokens, total_flow), sums

    return jax.grad(loss, has_aux=True)(params)

  if accum_steps == 1:
    return grad_one(batch, rng)

  def body(carry, micro_and_index):
    micro, i = micro_and_index
    grads, sums = grad_one(micro, None if rng is None else jax.random.fold_in(rng, i))
    return jax.tree.map(jnp.add, carry, (as_float32(grads), sums)), None

  zero = jax.tree.map(
    jnp.zeros_like, jax.eval_shape(lambda: (as_float32(params), token_sums(params, batch, model, rng, flow)))
  )
  (grads, sums), _ = jax.lax.scan(body, zero, (microbatches(batch, accum_steps), jnp.arange(accum_steps)))
  return grads, sums


def as_float32(tree):
  return jax.tree.map(lambda x: x.astype(jnp.float32), tree)


def make_train_step(model, tx, lr_schedule, accum_steps: int = 1, seed: int = 0, flow=None):
  """-> train_step(state, batch) -> (state, metrics); state = {"step", "params", "opt_state"}.
  The optimizer always works in float32 (its state was initialised on float32 params, see
  state.py); updates are cast to each parameter's storage dtype when applied. accum_steps:
  config.train.grad_accum_steps (micro-batches per step, same update). π0: the flow noise of step s
  comes from fold_in(PRNGKey(seed), s), so a resumed run draws the same noise; `flow`: config.flow."""

  def train_step(state, batch):
    rng = jax.random.fold_in(jax.random.PRNGKey(seed), state["step"]) if model.expert_config else None
    grads, sums = grads_and_sums(state["params"], batch, model, accum_steps, rng, flow)
    updates, opt_state = tx.update(as_float32(grads), state["opt_state"], as_float32(state["params"]))
    params = optax.apply_updates(state["params"], updates)
    metrics = dict(metrics_from_sums(sums), grad_norm=optax.global_norm(grads), lr=lr_schedule(state["step"]))
    return {"step": state["step"] + 1, "params": params, "opt_state": opt_state}, metrics

  return train_step


def jit_train_step(train_step, state_shardings, mesh, donate: bool = True):
  """The step jitted over the mesh: state keeps its shardings across steps, metrics are replicated.
  Traced under the mesh, so the model's activation constraints (models/partitioning.py) apply."""

  def on_mesh(state, batch):
    with jax.sharding.use_abstract_mesh(mesh.abstract_mesh):
      return train_step(state, batch)

  return jax.jit(
    on_mesh,
    in_shardings=(state_shardings, sharding.batch_sharding(mesh)),
    out_shardings=(state_shardings, NamedSharding(mesh, P())),
    donate_argnums=(0,) if donate else (),
  )
