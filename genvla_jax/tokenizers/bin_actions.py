"""OpenVLA-style bin action tokenizer: each normalized dimension -> one bin on [-1,1], written as one
token id from a reserved block [first_id, first_id + num_bins) at the end of the vocabulary (the
least-used ids). Decoding maps a bin back to its centre; ids outside the block are invalid (value 0.0,
valid=False).

Layouts (config.tokenizer.bins_layout):
  "uniform"  num_bins equal bins, bin b -> id first_id + b (ascending).
  "openvla"  OpenVLA's ActionTokenizer exactly, so a released OpenVLA checkpoint's action tokens mean
             what they meant there: edges = linspace(-1, 1, num_bins) (num_bins - 1 intervals),
             d = digitize(x, edges) in 1..num_bins, id = vocab_end - d (descending: x = -1 -> the last
             id); decoding d = vocab_end - id -> centre of interval clip(d - 1, 0, num_bins - 2).
`grammar()`: exactly H*D ids from the block, then EOS.
"""

import numpy as np

from genvla_jax.tokenizers import grammar as grammar_lib


class BinActionTokenizer:
  """Action chunk [H,D] <-> H*D ids of the bin block (an actions.ActionTokenizer)."""

  def __init__(
    self, horizon: int, dim: int, first_id: int, num_bins: int = 256, eos_id: int = 1, layout: str = "uniform"
  ):
    if layout not in ("uniform", "openvla"):
      raise ValueError(f"unknown bins layout {layout!r}; choose 'uniform' or 'openvla'")
    self.horizon, self.dim, self.layout = horizon, dim, layout
    self.first_id, self.num_bins, self.eos_id = first_id, num_bins, eos_id
    self.edges = np.linspace(-1.0, 1.0, num_bins + (1 if layout == "uniform" else 0))
    self.centres = (self.edges[:-1] + self.edges[1:]) / 2

  def encode(self, actions) -> tuple[list[int], int]:
    actions = np.asarray(actions, np.float64).reshape(-1)
    if not np.all(np.isfinite(actions)):
      raise ValueError(f"non-finite action values cannot be tokenized: {actions.tolist()}")
    clipped = np.clip(actions, -1.0, 1.0)
    if self.layout == "openvla":
      offsets = self.num_bins - np.digitize(clipped, self.edges)  # id = vocab_end - d
    else:
      offsets = np.clip(np.digitize(clipped, self.edges[1:-1]), 0, self.num_bins - 1)
    return [int(self.first_id + b) for b in offsets], int(np.sum(clipped != actions))

  def decode(self, ids) -> tuple[np.ndarray, np.ndarray]:
    n = self.horizon * self.dim
    actions, valid = np.zeros(n, np.float32), np.zeros(n, bool)
    for k, i in enumerate([int(i) for i in ids][:n]):
      b = i - self.first_id
      if 0 <= b < self.num_bins:
        if self.layout == "openvla":
          b = min(max(self.num_bins - b - 1, 0), len(self.centres) - 1)  # d - 1, d = vocab_end - id
        actions[k], valid[k] = self.centres[b], True
    return actions.reshape(self.horizon, self.dim), valid.reshape(self.horizon, self.dim)

  def max_decode_len(self) -> int:
    return self.horizon * self.dim + 1

  def grammar(self) -> grammar_lib.TokenGrammar:
    return grammar_lib.bin_action_grammar(self.first_id, self.num_bins, self.horizon * self.dim, self.eos_id)
