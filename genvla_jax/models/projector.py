"""Projectors: image features [B,N,F] -> decoder width [B,N,E]. Chosen by name (config.model.projector).

linear  PaliGemma: {kernel [F,E], bias [E]}
mlp3    Prismatic's "fused-gelu-mlp": F -> hidden -> E -> E with exact GELU; fc1, fc2, fc3 each {kernel, bias}
"""

import flax.linen as nn


class Mlp3(nn.Module):
  hidden: int
  width: int
  dtype: str = "float32"

  @nn.compact
  def __call__(self, z):  # [B,N,F] -> [B,N,E]
    h = nn.gelu(nn.Dense(self.hidden, dtype=self.dtype, name="fc1")(z), approximate=False)
    h = nn.gelu(nn.Dense(self.width, dtype=self.dtype, name="fc2")(h), approximate=False)
    return nn.Dense(self.width, dtype=self.dtype, name="fc3")(h)


def _linear(width: int, hidden: int, dtype: str) -> nn.Module:
  del hidden
  return nn.Dense(width, dtype=dtype)


def _mlp3(width: int, hidden: int, dtype: str) -> nn.Module:
  return Mlp3(hidden, width, dtype=dtype)


PROJECTORS = {"linear": _linear, "mlp3": _mlp3}


def make(kind: str, width: int, hidden: int, dtype: str) -> nn.Module:
  """The projector `kind` to width E; `hidden` is mlp3's hidden width."""
  if kind not in PROJECTORS:
    raise ValueError(f"unknown projector {kind!r}; one of: {', '.join(PROJECTORS)}")
  return PROJECTORS[kind](width, hidden, dtype)
