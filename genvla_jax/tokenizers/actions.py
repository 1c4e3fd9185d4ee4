"""Action tokenizers: the interface every one implements, and the registry `config.tokenizer.action` picks
from ("string", "bins", "fast"; "flow" has none: π0's action expert outputs continuous actions, see
models/action_expert.py).

A new action tokenizer is a class implementing `ActionTokenizer` and one `TOKENIZERS` entry: a function
that builds it complete from `Inputs` (reserved ids, BPE file, ... resolved before construction).
"""

import dataclasses
from typing import Callable, Protocol, runtime_checkable

import ml_collections
import numpy as np

from genvla_jax.tokenizers import bin_actions, fast_actions, grammar, string_actions, text


@runtime_checkable
class ActionTokenizer(Protocol):
  """Normalized action chunk [H,D] <-> answer token ids, for training targets and decoding."""

  def encode(self, actions) -> tuple[list[int], int]:
    """actions [H,D] normalized -> (ids without EOS, number of values clipped to [-1,1]); non-finite
    values raise ValueError."""
    ...

  def decode(self, ids) -> tuple[np.ndarray, np.ndarray]:
    """Any ids (EOS and what follows ignored) -> (actions [H,D] float32, valid [H,D] bool). Never raises:
    what does not decode is 0.0 with valid=False."""
    ...

  def grammar(self) -> grammar.TokenGrammar:
    """The token automaton admitting exactly the id sequences (then EOS) that decode in full."""
    ...

  def max_decode_len(self) -> int:
    """Upper bound on the answer's tokens, EOS included (the decoder's cache length)."""
    ...


@dataclasses.dataclass(frozen=True)
class Inputs:
  """What a registry entry builds its tokenizer from."""

  config: ml_collections.ConfigDict  # config.tokenizer
  text_tokenizer: text.TextTokenizer  # the run's text tokenizer (string actions write through it; EOS id)
  vocab_size: int  # the model's vocabulary (model.llm.vocab_size): reserved id blocks end here
  action_dim: int  # D
  fast_bpe_path: str | None = None  # the FAST BPE (data/prepare.fast_bpe; a run keeps it in assets/)


def _reserved_block(inputs: Inputs, size: int, what: str) -> int:
  """First id of a block of `size` ids at the end of the model's vocabulary, or of the text
  tokenizer's (tokenizer.bins_position "text_vocab_end": OpenVLA's least-used Llama ids), checked
  against the text ids."""
  tok_config, text_tokenizer, vocab_size = inputs.config, inputs.text_tokenizer, inputs.vocab_size
  if tok_config.bins_position == "text_vocab_end":
    vocab_size = text_tokenizer.vocab_size
  first_id = vocab_size - size
  if first_id < text_tokenizer.vocab_size and not tok_config.bins_overwrite_text_ids:
    raise ValueError(
      f"{what} ids [{first_id}, {vocab_size}) overlap the text vocabulary "
      f"({text_tokenizer.vocab_size} ids); enlarge model.llm.vocab_size or set "
      "tokenizer.bins_overwrite_text_ids=True (OpenVLA reuses least-used ids)"
    )
  return first_id


def _string(inputs: Inputs) -> string_actions.StringActionTokenizer:
  c = inputs.config
  return string_actions.StringActionTokenizer(inputs.text_tokenizer, c.action_horizon, inputs.action_dim, c.decimals)


def _bins(inputs: Inputs) -> bin_actions.BinActionTokenizer:
  c = inputs.config
  return bin_actions.BinActionTokenizer(
    c.action_horizon,
    inputs.action_dim,
    _reserved_block(inputs, c.num_bins, "bin"),
    c.num_bins,
    inputs.text_tokenizer.eos_id,
    c.bins_layout,
  )


def _fast(inputs: Inputs) -> fast_actions.FastActionTokenizer:
  c, path = inputs.config, inputs.fast_bpe_path
  if not path:
    raise ValueError("tokenizer.action='fast' needs the BPE trained on the dataset's actions (data/prepare.fast_bpe)")
  first_id = _reserved_block(inputs, fast_actions.bpe_size(path), "FAST")
  return fast_actions.FastActionTokenizer(
    path, c.action_horizon, inputs.action_dim, first_id, inputs.text_tokenizer.eos_id, c.fast_scale
  )


# config.tokenizer.action -> a function building that tokenizer complete: the one registry.
TOKENIZERS: dict[str, Callable[[Inputs], ActionTokenizer]] = {"string": _string, "bins": _bins, "fast": _fast}
ACTIONS = (*TOKENIZERS, "flow")  # every valid config.tokenizer.action


def make_action_tokenizer(
  tok_config, text_tokenizer, vocab_size: int, action_dim: int, fast_bpe_path: str | None = None
) -> ActionTokenizer | None:
  """The action tokenizer `tok_config.action` names (None for "flow"), built complete."""
  if tok_config.action == "flow":
    return None
  if tok_config.action not in TOKENIZERS:
    raise ValueError(f"unknown tokenizer.action {tok_config.action!r}; choose one of {ACTIONS}")
  return TOKENIZERS[tok_config.action](Inputs(tok_config, text_tokenizer, vocab_size, action_dim, fast_bpe_path))


def make_grammar(action_tokenizer: ActionTokenizer) -> grammar.TokenGrammar:
  """`action_tokenizer.grammar()` (kept for the tests that call it by this name)."""
  return action_tokenizer.grammar()
