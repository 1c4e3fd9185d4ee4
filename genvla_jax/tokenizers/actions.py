"""Builds the action tokenizer chosen by `config.tokenizer.action` ("string" or "bins")."""

from genvla_jax.tokenizers import bin_actions, grammar, string_actions


def make_action_tokenizer(tok_config, text_tokenizer, vocab_size: int, action_dim: int):
  horizon = tok_config.action_horizon
  if tok_config.action == "string":
    return string_actions.StringActionTokenizer(text_tokenizer, horizon, action_dim, tok_config.decimals)
  if tok_config.action == "bins":
    first_id = vocab_size - tok_config.num_bins
    if first_id < text_tokenizer.vocab_size and not tok_config.bins_overwrite_text_ids:
      raise ValueError(f"bin ids [{first_id}, {vocab_size}) overlap the text vocabulary "
                       f"({text_tokenizer.vocab_size} ids); enlarge model.llm.vocab_size or set "
                       "tokenizer.bins_overwrite_text_ids=True (OpenVLA reuses least-used ids)")
    return bin_actions.BinActionTokenizer(horizon, action_dim, first_id, tok_config.num_bins,
                                          text_tokenizer.eos_id)
  raise ValueError(f"unknown tokenizer.action {tok_config.action!r}; choose 'string' or 'bins'")


def make_grammar(action_tokenizer) -> grammar.TokenGrammar:
  """The token automaton that only admits well-formed outputs of this action tokenizer."""
  if isinstance(action_tokenizer, string_actions.StringActionTokenizer):
    codec = action_tokenizer.codec
    return grammar.string_action_grammar(action_tokenizer.text, codec.horizon, codec.dim, codec.decimals)
  if isinstance(action_tokenizer, bin_actions.BinActionTokenizer):
    t = action_tokenizer
    return grammar.bin_action_grammar(t.first_id, t.num_bins, t.horizon * t.dim, t.eos_id)
  raise TypeError(f"no grammar for {type(action_tokenizer).__name__}")
