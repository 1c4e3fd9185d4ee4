"""Builds the action tokenizer chosen by `config.tokenizer.action` ("string" or "bins")."""

from genvla_jax.tokenizers import bin_actions, string_actions


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
