"""Per-dimension statistics of actions and proprio, and the normalization they define.

stats = {"action": {"mean","std","min","max","q01","q99": [D] lists, "normalize_mask": [D] bools, "count"},
         "state": {... same without normalize_mask}}
Normalization of a masked dimension: y = 2 (x - q01) / (q99 - q01) - 1 (so most data lands in [-1,1]; the
action tokenizers clip the rest and count it). Unmasked dimensions (gripper) pass through unchanged.
Degenerate dimensions (q99 == q01) normalize to 0 and de-normalize to q01. The same two functions are
used by the data pipeline and by the policy, and the statistics are saved with every checkpoint.
"""

import numpy as np

_EPS = 1e-8


def describe(x, normalize_mask=None) -> dict:
  """x [N,D] -> statistics dict (JSON-serializable)."""
  x = np.asarray(x, np.float64)
  if x.ndim != 2 or len(x) == 0:
    raise ValueError(f"statistics need a non-empty [N,D] array, got shape {x.shape}")
  out = {
    "count": int(len(x)),
    "mean": x.mean(0),
    "std": x.std(0),
    "min": x.min(0),
    "max": x.max(0),
    "q01": np.quantile(x, 0.01, axis=0),
    "q99": np.quantile(x, 0.99, axis=0),
  }
  out = {k: (v.tolist() if isinstance(v, np.ndarray) else v) for k, v in out.items()}
  if normalize_mask is not None:
    if len(normalize_mask) != x.shape[1]:
      raise ValueError(f"normalize_mask has {len(normalize_mask)} entries for {x.shape[1]} dims")
    out["normalize_mask"] = [bool(m) for m in normalize_mask]
  return out


def _bounds(stats):
  lo, hi = np.asarray(stats["q01"], np.float32), np.asarray(stats["q99"], np.float32)
  mask = np.asarray(stats.get("normalize_mask", [True] * len(lo)), bool)
  return lo, hi, mask


def normalize(x, stats) -> np.ndarray:
  """x [..., D] raw -> normalized [..., D] (not clipped)."""
  lo, hi, mask = _bounds(stats)
  x = np.asarray(x, np.float32)
  span = hi - lo
  y = np.where(span > _EPS, 2 * (x - lo) / np.maximum(span, _EPS) - 1, 0.0)
  return np.where(mask, y, x).astype(np.float32)


def denormalize(y, stats) -> np.ndarray:
  """normalized [..., D] -> raw [..., D]."""
  lo, hi, mask = _bounds(stats)
  y = np.asarray(y, np.float32)
  x = (y + 1) / 2 * (hi - lo) + lo
  return np.where(mask, x, y).astype(np.float32)
