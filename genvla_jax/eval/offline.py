"""Offline action error: decode actions for recorded frames and compare with the recorded actions.

Reports mean absolute error in raw units and in normalized units ([-1,1] range of the training
statistics), next to the mean-action baseline (always predicting the training set's mean action), which
is what a policy that ignores the image and the instruction can at best achieve in this metric.
"""

import numpy as np

from genvla_jax.data import pipeline, preprocess, stats as stats_lib


def action_error(
  policy, converted_dir: str, num_examples: int = 200, batch_size: int = 50, seed: int = 0, camera=""
) -> dict:
  """`policy`: a trained inference.policy.Policy (its metadata, act, and the action statistics it
  de-normalizes with: `action_stats`). -> {num_examples, mae, baseline_mae, mae_normalized,
  baseline_mae_normalized, invalid_fraction} over `num_examples` random steps of `converted_dir`, seen
  through `camera`: the cameras training fed (transforms.cameras_of(config.data): one name, "" for the
  primary, or a list of C names, each step's frames then acted on as [C] frames, a missing one masked)."""
  metadata = policy.metadata
  source = pipeline.StepChunkSource(converted_dir, metadata.horizon, camera)
  rng = np.random.default_rng(seed)
  indices = np.sort(rng.choice(len(source), min(num_examples, len(source)), replace=False))
  stats = policy.action_stats
  mean_action = np.asarray(stats["mean"], np.float32)
  err, base, err_n, base_n, weights, valid_all = [], [], [], [], [], []
  for start in range(0, len(indices), batch_size):
    records = [source[int(i)] for i in indices[start : start + batch_size]]
    images = [_frames(r) for r in records]
    states = np.stack([r["state"] for r in records]) if metadata.uses_state else None
    predicted, valid = policy.act(images, [r["instruction"] for r in records], states=states)  # [b,H,D]
    true = np.stack([r["actions"] for r in records])  # [b,H,D]
    keep = ~np.stack([r["action_pad"] for r in records])[..., None]  # [b,H,1]
    baseline = np.broadcast_to(mean_action, true.shape)
    err.append(np.abs(predicted - true))
    base.append(np.abs(baseline - true))
    err_n.append(np.abs(stats_lib.normalize(predicted, stats) - stats_lib.normalize(true, stats)))
    base_n.append(np.abs(stats_lib.normalize(baseline, stats) - stats_lib.normalize(true, stats)))
    weights.append(np.broadcast_to(keep, true.shape))
    valid_all.append(valid)
  w = np.concatenate(weights).astype(np.float64)

  def mean(parts):
    return float(np.sum(np.concatenate(parts) * w) / np.sum(w))

  return {
    "num_examples": int(len(indices)),
    "mae": mean(err),
    "baseline_mae": mean(base),
    "mae_normalized": mean(err_n),
    "baseline_mae_normalized": mean(base_n),
    "invalid_fraction": float(1 - np.concatenate(valid_all).mean()),
  }


def _frames(record):
  """A StepChunkSource record's frame(s): uint8 [H,W,3], or its C cameras' frames (None where missing)."""
  if "frames" in record:
    return [None if f is None else preprocess.decode_image(f) for f in record["frames"]]
  return preprocess.decode_image(record["image"])
