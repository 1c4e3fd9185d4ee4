"""Loss and train step, for any action head (genvla_jax/heads: the head computes the loss sums and
their denominators; token heads: next-token cross-entropy on answer tokens only (loss_mask), averaged
over all answer tokens of the batch; the flow head (π0) adds the flow-matching MSE on the robot rows'
action chunks, padding past the episode end excluded); metrics split robot / VL rows;
optional gradient accumulation over micro-batches (config.train.grad_accum_steps); counts of the batch
itself (batch_metrics: VL rows cut to fit max_text_len; with several cameras, robot rows lacking each camera)
are logged with them. Only the trainable parameters are differentiated (training/freezing.py: `frozen`
patterns, the frozen towers, LoRA's base kernels); with LoRA adapters in the params (models/lora.py) the
decoder's projections compute x W + (x A)(alpha / r B) inside its layers (lora.for_training: the adapters as the
model's variable collection; neither W' nor its full-size gradient exists) and the image towers' adapters are
merged, W + (alpha / r) A B (factored=False merges all: the old path, kept for comparisons)."""

from typing import Sequence

import jax
import jax.numpy as jnp
from jax.sharding import NamedSharding, PartitionSpec as P
import optax

from genvla_jax import heads
from genvla_jax.models import lora as lora_lib
from genvla_jax.models.partitioning import BATCH, constrain
from genvla_jax.training import freezing, sharding


def token_sums(params, batch, model, rng=None, flow=None, head=None) -> dict:
  """The batch's loss sums, as the action head computes them (heads/: text sums over the answer tokens
  for all, robot and VL rows; the flow head adds `flow_se`, `flow_elems`); losses and accuracies are
  ratios of these, so micro-batches add up exactly. `head`: the run's head (default: the model's, with
  `flow` = config.flow)."""
  head = head or heads.for_model(model, flow)
  return head.loss_sums(params, batch, model, rng)


def objective(sums, totals: dict):
  """The minimised loss: sum over the head's loss terms of sums[k] / totals[k] (the whole batch's
  denominators: answer tokens, flow action entries, ...)."""
  terms = [sums[k] / total for k, total in totals.items()]
  loss = terms[0]
  for term in terms[1:]:
    loss = loss + term
  return loss


def metrics_from_sums(sums, head=None) -> dict:
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
  for name, value in ({} if head is None else head.metrics(sums, ratio)).items():
    metrics[name] = value
    metrics["loss"] = metrics["loss"] + value
  return metrics


def batch_metrics(batch, cameras: Sequence[str] = ()) -> dict:
  """What the data pipeline did to the batch, read from the whole batch: `vl_truncated_fraction`, the
  share of its VL rows cut to fit tokenizer.max_text_len (`vl_truncated`, data/transforms.py; 0 when the
  batch has no such field or no VL rows); with several cameras (an `image_mask`), camera_missing_fractions."""
  vl_rows = jnp.sum(1.0 - batch["is_robot"].astype(jnp.float32))
  truncated = batch.get("vl_truncated", jnp.zeros(batch["is_robot"].shape, bool))
  metrics = {"vl_truncated_fraction": jnp.sum(truncated.astype(jnp.float32)) / jnp.maximum(vl_rows, 1.0)}
  if "image_mask" in batch:
    metrics.update(camera_missing_fractions(batch["image_mask"], batch["is_robot"], cameras))
  return metrics


def camera_missing_fractions(image_mask, is_robot, cameras: Sequence[str] = ()) -> dict:
  """image_mask [B,C] (False: the row lacks that camera; data/pipeline.py) -> {"camera_missing_fraction/<name>":
  the share of the batch's robot rows lacking camera <name>} (0 without robot rows). VL rows are not counted:
  their one image is camera 0, the others always masked. `cameras`: the C names in order (config.data.cameras;
  none given: the cameras' indices)."""
  num_cameras = image_mask.shape[-1]
  names = [str(c) for c in cameras] or [str(c) for c in range(num_cameras)]
  if len(names) != num_cameras:
    raise ValueError(f"image_mask has {num_cameras} camera(s), but {len(names)} names were given: {names}")
  robot = is_robot.astype(jnp.float32)
  missing = jnp.logical_not(image_mask.astype(bool)).astype(jnp.float32) * robot[:, None]
  fractions = jnp.sum(missing, axis=0) / jnp.maximum(jnp.sum(robot), 1.0)
  return {f"camera_missing_fraction/{name}": fractions[c] for c, name in enumerate(names)}


def microbatches(batch: dict, k: int) -> dict:
  """[B,...] -> [k, B/k, ...], micro-batch i = rows i, i+k, i+2k, ...: every device keeps its own rows
  (B/k rows of each device's contiguous block), so no data moves between devices."""

  def split(x):
    if x.shape[0] % k:
      raise ValueError(f"batch of {x.shape[0]} rows does not split into {k} micro-batches")
    x = x.reshape(x.shape[0] // k, k, *x.shape[1:]).swapaxes(0, 1)
    return constrain(x, None, BATCH, *([None] * (x.ndim - 2)))

  return jax.tree.map(split, batch)


def grads_and_sums(
  params,
  batch,
  model,
  accum_steps: int = 1,
  rng=None,
  flow=None,
  head=None,
  frozen: Sequence[str] = (),
  lora=None,
  factored: bool = True,
):
  """-> (grads of the batch's loss, loss sums). With accum_steps > 1 the batch runs as that many
  micro-batches in a scan, each contributing its sums / the whole batch's denominators (the head's
  loss_totals), so the gradient equals the one-pass gradient (up to float summation order) at 1/k the
  activation memory. `rng`: the head's randomness (π0: flow times and noise); micro-batch i folds in i.
  Frozen parameters (freezing.trainable_mask with the `frozen` patterns) are not differentiated: their
  gradient is zeros. `lora`: the lora.Spec of adapters in `params` (its alpha scales them); `factored`: the
  decoder's adapters inside its layers (False: every adapter merged into its kernel, lora.for_training)."""
  grads, sums = trainable_grads_and_sums(params, batch, model, accum_steps, rng, flow, head, frozen, lora, factored)
  return zeros_where_frozen(grads, params), sums


def zeros_where_frozen(grads, params, dtype=None):
  """`grads` with each None (a frozen parameter's gradient) replaced by zeros of its parameter's shape, in
  `dtype` (default: the parameter's)."""
  return jax.tree.map(
    lambda g, p: jnp.zeros(p.shape, dtype or p.dtype) if g is None else g, grads, params, is_leaf=lambda x: x is None
  )


def trainable_grads_and_sums(
  params,
  batch,
  model,
  accum_steps: int = 1,
  rng=None,
  flow=None,
  head=None,
  frozen: Sequence[str] = (),
  lora=None,
  factored: bool = True,
):
  """grads_and_sums with None in place of the frozen parameters' gradients (freezing.partition)."""
  head = head or heads.for_model(model, flow)
  totals = head.loss_totals(batch)
  rng = jax.random.PRNGKey(0) if rng is None else rng
  if lora is None and lora_lib.KEY in params:
    raise ValueError("these params hold LoRA adapters: pass lora= (the run's lora.Spec) to scale them")
  alpha = lora.alpha if lora is not None else 0.0
  trainable, fixed = freezing.partition(params, freezing.trainable_mask(params, frozen))

  def loss_sums(t, micro, micro_rng):
    model_params, adapters = lora_lib.for_training(freezing.combine(t, fixed), alpha, factored)
    return head.loss_sums(model_params, micro, lora_lib.with_collection(model, adapters), micro_rng)

  def grad_one(micro, micro_rng):
    def loss(t):
      sums = loss_sums(t, micro, micro_rng)
      return objective(sums, totals), sums

    return jax.grad(loss, has_aux=True)(trainable)

  if accum_steps == 1:
    return grad_one(batch, rng)

  def body(carry, micro_and_index):
    micro, i = micro_and_index
    grads, sums = grad_one(micro, jax.random.fold_in(rng, i))
    return jax.tree.map(jnp.add, carry, (as_float32(grads), sums)), None

  zero = jax.tree.map(
    jnp.zeros_like,
    jax.eval_shape(lambda: (as_float32(trainable), loss_sums(trainable, batch, rng))),
  )
  (grads, sums), _ = jax.lax.scan(body, zero, (microbatches(batch, accum_steps), jnp.arange(accum_steps)))
  return grads, sums


def as_float32(tree):
  return jax.tree.map(lambda x: x.astype(jnp.float32), tree)


def make_train_step(
  model,
  tx,
  lr_schedule,
  accum_steps: int = 1,
  seed: int = 0,
  flow=None,
  head=None,
  cameras: Sequence[str] = (),
  frozen: Sequence[str] = (),
  lora=None,
  factored: bool = True,
):
  """-> train_step(state, batch) -> (state, metrics); state = {"step", "params", "opt_state"}.
  The optimizer always works in float32 (its state was initialised on float32 params, see
  state.py); updates are cast to each parameter's storage dtype when applied. accum_steps:
  config.train.grad_accum_steps (micro-batches per step, same update). `head`: the run's action head
  (heads.from_config; default: the model's, with `flow` = config.flow). The head's randomness (π0's flow
  noise) at step s comes from fold_in(PRNGKey(seed), s), so a resumed run draws the same noise. `cameras`:
  the names of a batch's cameras (config.data.cameras) for the camera_missing_fraction metrics. `frozen`:
  config.optimizer.frozen (the optimizer `tx` freezes the same parameters); `lora`: the lora.Spec of adapters
  in the params (config.lora); `factored`: the decoder's adapters computed inside its layers (False: merged,
  the old path; for comparisons such as the memory test)."""
  head = head or heads.for_model(model, flow)

  def train_step(state, batch):
    rng = jax.random.fold_in(jax.random.PRNGKey(seed), state["step"])
    grads, sums = trainable_grads_and_sums(
      state["params"], batch, model, accum_steps, rng, head=head, frozen=frozen, lora=lora, factored=factored
    )
    grad_norm = optax.global_norm(grads)  # (the frozen leaves are None: no zeros summed)
    grads = zeros_where_frozen(grads, state["params"], jnp.float32)
    updates, opt_state = tx.update(as_float32(grads), state["opt_state"], as_float32(state["params"]))
    params = optax.apply_updates(state["params"], updates)
    metrics = dict(
      metrics_from_sums(sums, head),
      **batch_metrics(batch, cameras),
      grad_norm=grad_norm,
      lr=lr_schedule(state["step"]),
    )
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
