"""Loss and train step. Next-token cross-entropy on answer tokens only (loss_mask), averaged over all
answer tokens of the batch; metrics split robot / VL rows."""

import jax
import jax.numpy as jnp
from jax.sharding import NamedSharding, PartitionSpec as P
import optax

from genvla_jax.training import sharding


def loss_and_metrics(params, batch, model):
  """batch: see data/pipeline.py. -> (loss scalar, metrics dict of scalars)."""
  logits = model.apply({"params": params}, batch["image"], batch["tokens"], batch["input_mask"],
                       batch["ar_mask"])                            # [B,T,V]
  logits, targets = logits[:, :-1], batch["tokens"][:, 1:]          # position t predicts token t+1
  mask = batch["loss_mask"][:, 1:].astype(jnp.float32)              # [B,T-1]
  ce = optax.softmax_cross_entropy_with_integer_labels(logits, targets)
  correct = (jnp.argmax(logits, -1) == targets).astype(jnp.float32)
  robot = batch["is_robot"][:, None].astype(jnp.float32)

  def masked_mean(x, m):
    return jnp.sum(x * m) / jnp.maximum(jnp.sum(m), 1.0)

  loss = masked_mean(ce, mask)
  metrics = {"loss": loss, "token_accuracy": masked_mean(correct, mask),
             "robot_loss": masked_mean(ce, mask * robot), "vl_loss": masked_mean(ce, mask * (1 - robot)),
             "robot_token_accuracy": masked_mean(correct, mask * robot),
             "robot_fraction": jnp.mean(robot), "clipped_actions": jnp.sum(batch["num_clipped"])}
  return loss, metrics


def as_float32(tree):
  return jax.tree.map(lambda x: x.astype(jnp.float32), tree)


def make_train_step(model, tx, lr_schedule):
  """-> train_step(state, batch) -> (state, metrics); state = {"step", "params", "opt_state"}.
  The optimizer always works in float32 (its state was initialised on float32 params, see
  state.py); updates are cast to each parameter's storage dtype when applied."""
  def train_step(state, batch):
    grads, metrics = jax.grad(loss_and_metrics, has_aux=True)(state["params"], batch, model)
    updates, opt_state = tx.update(as_float32(grads), state["opt_state"], as_float32(state["params"]))
    params = optax.apply_updates(state["params"], updates)
    metrics = dict(metrics, grad_norm=optax.global_norm(grads), lr=lr_schedule(state["step"]))
    return {"step": state["step"] + 1, "params": params, "opt_state": opt_state}, metrics
  return train_step


def jit_train_step(train_step, state_shardings, mesh, donate: bool = True):
  """The step jitted over the mesh: state keeps its shardings across steps, metrics are replicated."""
  return jax.jit(train_step, in_shardings=(state_shardings, sharding.batch_sharding(mesh)),
                 out_shardings=(state_shardings, NamedSharding(mesh, P())),
                 donate_argnums=(0,) if donate else ())
