"""OpenVLA-style bin action tokenizer: each normalized dimension -> one of `num_bins` uniform bins on
[-1,1], written as one token id from a reserved block [first_id, first_id + num_bins) at the end of the
vocabulary (the least-used ids). Decoding maps a bin back to its centre; ids outside the block are
invalid (value 0.0, valid=False)."""

import numpy as np


class BinActionTokenizer:

  def __init__(self, horizon: int, dim: int, first_id: int, num_bins: int = 256, eos_id: int = 1):
    self.horizon, self.dim = horizon, dim
    self.first_id, self.num_bins, self.eos_id = first_id, num_bins, eos_id
    self.edges = np.linspace(-1.0, 1.0, num_bins + 1)
    self.centres = (self.edges[:-1] + self.edges[1:]) / 2

  def encode(self, actions) -> tuple[list[int], int]:
    actions = np.asarray(actions, np.float64).reshape(-1)
    if not np.all(np.isfinite(actions)):
      raise ValueError(f"non-finite action values cannot be tokenized: {actions.tolist()}")
    clipped = np.clip(actions, -1.0, 1.0)
    bins = np.clip(np.digitize(clipped, self.edges[1:-1]), 0, self.num_bins - 1)
    return [int(self.first_id + b) for b in bins], int(np.sum(clipped != actions))

  def decode(self, ids) -> tuple[np.ndarray, np.ndarray]:
    n = self.horizon * self.dim
    actions, valid = np.zeros(n, np.float32), np.zeros(n, bool)
    for k, i in enumerate([int(i) for i in ids][:n]):
      b = i - self.first_id
      if 0 <= b < self.num_bins:
        actions[k], valid[k] = self.centres[b], True
    return actions.reshape(self.horizon, self.dim), valid.reshape(self.horizon, self.dim)

  def max_decode_len(self) -> int:
    return self.horizon * self.dim + 1
