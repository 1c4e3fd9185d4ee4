"""What every action head shares: the text (next-token) sums over the batch's answer tokens.

Both heads train the prefix-LM on answer tokens (robot rows' action tokens for token heads, VL rows'
answers for all), so the cross-entropy sums are computed here once from the logits a head's forward
returns. Sums (not means) so that micro-batches add up exactly (training/step.py)."""

import jax.numpy as jnp
import optax


def text_sums(logits, batch) -> dict:
  """logits [B,T,V] -> sums over the batch's answer tokens (loss_mask) of cross-entropy and correct
  predictions, for all, robot and VL rows, plus row counts, clipped actions and paraphrased rows."""
  logits, targets = logits[:, :-1], batch["tokens"][:, 1:]  # position t predicts token t+1
  mask = batch["loss_mask"][:, 1:].astype(jnp.float32)  # [B,T-1]
  ce = optax.softmax_cross_entropy_with_integer_labels(logits, targets)
  correct = (jnp.argmax(logits, -1) == targets).astype(jnp.float32)
  robot = batch["is_robot"][:, None].astype(jnp.float32)
  sums = {}
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


def total_tokens(batch):
  """The whole batch's answer-token count (>= 1): the cross-entropy's denominator."""
  return jnp.maximum(jnp.sum(batch["loss_mask"][:, 1:].astype(jnp.float32)), 1.0)


def model_inputs(batch):
  """The model's positional inputs: images ([B,H,W,3] or [B,C,H,W,3]), tokens, input_mask, ar_mask."""
  return batch["image"], batch["tokens"], batch["input_mask"], batch["ar_mask"]


def image_mask(batch):
  """The batch's cameras present [B,C] (None: every camera; prefix_lm.cameras)."""
  return batch.get("image_mask")
