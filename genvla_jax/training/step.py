"""Loss and train step. Next-token cross-entropy on answer tokens only (loss_mask), averaged over all
answer tokens of the batch; metrics split robot / VL rows; optional gradient accumulation over
micro-batches (config.train.grad_accum_steps)."""

import jax
import jax.numpy as jnp
from jax.sharding import NamedSharding, PartitionSpec as P
import optax

from genvla_jax.models.partitioning import BATCH, constrain
from genvla_jax.training import sharding


def token_sums(params, batch, model) -> dict:
  """Sums over the batch's answer tokens (loss_mask) of cross-entropy and correct predictions, for all,
  robot and VL rows; losses and accuracies are ratios of these, so micro-batches add up exactly."""
  logits = model.apply({"params": params}, batch["image"], batch["tokens"], batch["input_mask"],
                       batch["ar_mask"])                            # [B,T,V]
  logits, targets = logits[:, :-1], batch["tokens"][:, 1:]          # position t predicts token t+1
  mask = batch["loss_mask"][:, 1:].astype(jnp.float32)              # [B,T-1]
  ce = optax.softmax_cross_entropy_with_integer_labels(logits, targets)
  correct = (jnp.argmax(logits, -1) == targets).astype(jnp.float32)
  robot = batch["is_robot"][:, None].astype(jnp.float32)
  sums = {}
  for side, m in (("", mask), ("robot_", mask * robot), ("vl_", mask * (1 - robot))):
    sums.update({side + "ce": jnp.sum(ce * m), side + "correct": jnp.sum(correct * m), side + "tokens": jnp.sum(m)})
  sums.update(robot_rows=jnp.sum(robot[:, 0]), rows=jnp.float32(robot.shape[0]),
              clipped_actions=jnp.sum(batch["num_clipped"]).astype(jnp.float32))
  return sums


def metrics_from_sums(sums) -> dict:
  def ratio(a, b):
    return sums[a] / jnp.maximum(sums[b], 1.0)
  return {"loss": ratio("ce", "tokens"), "token_accuracy": ratio("correct", "tokens"),
          "robot_loss": ratio("robot_ce", "robot_tokens"), "vl_loss": ratio("vl_ce", "vl_tokens"),
          "robot_token_accuracy": ratio("robot_correct", "robot_tokens"),
          "robot_fraction": ratio("robot_rows", "rows"), "clipped_actions": sums["clipped_actions"],
          "answer_tokens": sums["tokens"]}


def loss_and_metrics(params, batch, model):
  """batch: see data/pipeline.py. -> (loss scalar, metrics dict of scalars): mean next-token
  cross-entropy over all answer tokens of the batch."""
  metrics = metrics_from_sums(token_sums(params, batch, model))
  return metrics["loss"], metrics


def microbatches(batch: dict, k: int) -> dict:
  """[B,...] -> [k, B/k, ...], micro-batch i = rows i, i+k, i+2k, ...: every device keeps its own rows
  (B/k rows of each device's contiguous block), so no data moves between devices."""
  def split(x):
    if x.shape[0] % k:
      raise ValueError(f"batch of {x.shape[0]} rows does not split into {k} micro-batches")
    x = x.reshape(x.shape[0] // k, k, *x.shape[1:]).swapaxes(0, 1)
    return constrain(x, None, BATCH, *([None] * (x.ndim - 2)))
  return jax.tree.map(split, batch)


def grads_and_sums(params, batch, model, accum_steps: int = 1):
  """-> (grads of the batch's mean answer-token loss, token sums). With accum_steps > 1 the batch runs
  as that many micro-batches in a scan, each contributing its cross-entropy sum / the batch's token
  count, so the gradient equals the one-pass gradient (up to float summation order) at 1/k the
  activation memory."""
  total_tokens = jnp.maximum(jnp.sum(batch["loss_mask"][:, 1:].astype(jnp.float32)), 1.0)

  def grad_one(micro):
    def objective(p):
      sums = token_sums(p, micro, model)
      return sums["ce"] / total_tokens, sums
    return jax.grad(objective, has_aux=True)(params)

  if accum_steps == 1:
    return grad_one(batch)

  def body(carry, micro):
    grads, sums = grad_one(micro)
    return jax.tree.map(jnp.add, carry, (as_float32(grads), sums)), None

  zero = jax.tree.map(jnp.zeros_like, jax.eval_shape(lambda: (as_float32(params),
                                                               token_sums(params, batch, model))))
  (grads, sums), _ = jax.lax.scan(body, zero, microbatches(batch, accum_steps))
  return grads, sums


def as_float32(tree):
  return jax.tree.map(lambda x: x.astype(jnp.float32), tree)


def make_train_step(model, tx, lr_schedule, accum_steps: int = 1):
  """-> train_step(state, batch) -> (state, metrics); state = {"step", "params", "opt_state"}.
  The optimizer always works in float32 (its state was initialised on float32 params, see
  state.py); updates are cast to each parameter's storage dtype when applied. accum_steps:
  config.train.grad_accum_steps (micro-batches per step, same update)."""
  def train_step(state, batch):
    grads, sums = grads_and_sums(state["params"], batch, model, accum_steps)
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
  return jax.jit(on_mesh, in_shardings=(state_shardings, sharding.batch_sharding(mesh)),
                 out_shardings=(state_shardings, NamedSharding(mesh, P())),
                 donate_argnums=(0,) if donate else ())
