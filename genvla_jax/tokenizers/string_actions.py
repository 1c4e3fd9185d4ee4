"""String action tokenizer (S): normalized actions written as decimal text, read back by a parser.

Format of an action chunk [H,D] normalized to [-1,1]:
  each value: sign always written, one integer digit, '.', `decimals` digits   e.g. "+0.0312", "-1.0000"
  dimensions joined by " ", steps joined by " | "     e.g. H=2, D=2: "+0.0312 -0.5000 | +0.0300 -0.4900"
Values outside [-1,1] are clipped before writing (the count is returned so callers can log it); "-0.0000"
is written as "+0.0000". The text is tokenized by the ordinary text tokenizer (one token per digit).

Parsing never raises on model output: `parse` returns (actions [H,D] float32, valid [H,D] bool); a field is
valid iff it is exactly in the format above. Invalid or missing fields come back as 0.0 (the centre of the
normalized range, i.e. the dataset's median-ish action) with valid=False; extra fields are ignored.
`parse_strict` raises ActionParseError instead. `StringActionTokenizer.grammar()` is the same format as a
token automaton over the text tokenizer's vocabulary (tokenizers/grammar.py, which also holds the separators).
"""

import dataclasses
import re

import numpy as np

from genvla_jax.tokenizers import grammar as grammar_lib
from genvla_jax.tokenizers.grammar import DIM_SEP, STEP_SEP


class ActionParseError(ValueError):
  pass


@dataclasses.dataclass(frozen=True)
class StringActionCodec:
  horizon: int
  dim: int
  decimals: int = 4

  @property
  def _field(self):
    return re.compile(rf"[+-]\d\.\d{{{self.decimals}}}")

  def format(self, actions) -> tuple[str, int]:
    """actions [H,D] (or [D] when H=1), normalized -> (text, number of clipped values)."""
    actions = np.asarray(actions, np.float64).reshape(self.horizon, self.dim)
    if not np.all(np.isfinite(actions)):
      raise ValueError(f"non-finite action values cannot be written: {actions.tolist()}")
    clipped = np.clip(actions, -1.0, 1.0)
    num_clipped = int(np.sum(clipped != actions))
    rounded = np.round(clipped, self.decimals) + 0.0  # + 0.0 turns -0.0 into +0.0
    steps = [DIM_SEP.join(f"{v:+.{self.decimals}f}" for v in row) for row in rounded]
    return STEP_SEP.join(steps), num_clipped

  def max_chars(self) -> int:
    return len(self.format(-np.ones((self.horizon, self.dim)))[0])

  def parse(self, text: str) -> tuple[np.ndarray, np.ndarray]:
    """Any text -> (actions [H,D] float32, valid [H,D] bool)."""
    actions = np.zeros((self.horizon, self.dim), np.float32)
    valid = np.zeros((self.horizon, self.dim), bool)
    field = self._field
    for h, step in enumerate(text.strip().split(STEP_SEP.strip())[: self.horizon]):
      for d, tok in enumerate(step.split()[: self.dim]):
        if field.fullmatch(tok):
          value = float(tok)
          if -1.0 <= value <= 1.0:
            actions[h, d], valid[h, d] = value, True
    return actions, valid

  def parse_strict(self, text: str) -> np.ndarray:
    actions, valid = self.parse(text)
    if not valid.all():
      bad = [tuple(int(i) for i in x) for x in np.argwhere(~valid)]
      raise ActionParseError(f"malformed action text {text!r}: invalid/missing (step, dim) fields {bad}")
    return actions


class StringActionTokenizer:
  """Action chunk [H,D] <-> token ids through the text tokenizer (an actions.ActionTokenizer)."""

  def __init__(self, text_tokenizer, horizon: int, dim: int, decimals: int = 4):
    self.text = text_tokenizer
    self.codec = StringActionCodec(horizon, dim, decimals)

  def encode(self, actions) -> tuple[list[int], int]:
    text, num_clipped = self.codec.format(actions)
    return self.text.encode(text), num_clipped

  def decode(self, ids) -> tuple[np.ndarray, np.ndarray]:
    return self.codec.parse(self.text.decode(_until_eos(ids, self.text.eos_id)))

  def max_decode_len(self) -> int:
    """Upper bound on answer tokens incl. EOS (every token covers at least one character)."""
    return self.codec.max_chars() + 1

  def grammar(self) -> grammar_lib.TokenGrammar:
    """The format over the text tokenizer's pieces: every accepted id sequence parses in full."""
    c = self.codec
    return grammar_lib.string_action_grammar(self.text, c.horizon, c.dim, c.decimals)


def _until_eos(ids, eos_id):
  ids = [int(i) for i in ids]
  return ids[: ids.index(eos_id)] if eos_id in ids else ids
