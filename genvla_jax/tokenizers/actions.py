"""Builds the action tokenizer chosen by `config.tokenizer.action` ("string", "bins", "fast"; "flow" has
none: π0's action expert outputs continuous actions, see models/action_expert.py)."""

from genvla_jax.tokenizers import bin_actions, fast_actions, grammar, string_actions


ACTIONS = ("string", "bins", "fast", "flow")


def _reserved_block(tok_config, text_tokenizer, vocab_size: int, size: int, what: str) -> int:
  """First id of a block of `size` ids at the end of the model's vocabulary, or of the text
  tokenizer's (tokenizer.bins_position "text_vocab_end": OpenVLA's least-used Llama ids), checked
  against the text ids."""
  if tok_config.get("bins_position", "model_vocab_end") == "text_vocab_end":
    vocab_size = text_tokenizer.vocab_size
  first_id = vocab_size - size
  if first_id < text_tokenizer.vocab_size and not tok_config.bins_overwrite_text_ids:
    raise ValueError(
      f"{what} ids [{first_id}, {vocab_size}) overlap the text vocabulary "
      f"({text_tokenizer.vocab_size} ids); enlarge model.llm.vocab_size or set "
      "tokenizer.bins_overwrite_text_ids=True (OpenVLA reuses least-used ids)"
    )
  return first_id


def make_action_tokenizer(
  tok_config, text_tokenizer, vocab_size: int, action_dim: int, fast_bpe_path: str | None = None
):
  """fast_bpe_path: the FAST BPE model (trained by data/prepare.fast_bpe; a run keeps it in assets/)."""
  horizon = tok_config.action_horizon
  if tok_config.action == "flow":
    return None
  if tok_config.action == "string":
    return string_actions.StringActionTokenizer(text_tokenizer, horizon, action_dim, tok_config.decimals)
  if tok_config.action == "bins":
    first_id = _reserved_block(tok_config, text_tokenizer, vocab_size, tok_config.num_bins, "bin")
    return bin_actions.BinActionTokenizer(
      horizon,
      action_dim,
      first_id,
      tok_config.num_bins,
      text_tokenizer.eos_id,
      tok_config.get("bins_layout", "uniform"),
    )
  if tok_config.action == "fast":
    if not fast_bpe_path:
      raise ValueError("tokenizer.action='fast' needs the BPE trained on the dataset's actions (data/prepare.fast_bpe)")
    tok = fast_actions.FastActionTokenizer(
      fast_bpe_path, horizon, action_dim, 0, text_tokenizer.eos_id, tok_config.fast_scale
    )
    tok.first_id = _reserved_block(tok_config, text_tokenizer, vocab_size, tok.num_pieces, "FAST")
    return tok
  raise ValueError(f"unknown tokenizer.action {tok_config.action!r}; choose one of {ACTIONS}")


def make_grammar(action_tokenizer) -> grammar.TokenGrammar:
  """The token automaton that only admits well-formed outputs of this action tokenizer."""
  if isinstance(action_tokenizer, string_actions.StringActionTokenizer):
    codec = action_tokenizer.codec
    return grammar.string_action_grammar(action_tokenizer.text, codec.horizon, codec.dim, codec.decimals)
  if isinstance(action_tokenizer, bin_actions.BinActionTokenizer):
    t = action_tokenizer
    return grammar.bin_action_grammar(t.first_id, t.num_bins, t.horizon * t.dim, t.eos_id)
  if isinstance(action_tokenizer, fast_actions.FastActionTokenizer):
    return action_tokenizer.grammar()
  raise TypeError(f"no grammar for {type(action_tokenizer).__name__}")
