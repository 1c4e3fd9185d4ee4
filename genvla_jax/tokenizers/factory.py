"""The run's tokenizers, built from its config: the one place the training pipeline and the policy get
them from (so both tokenize with the same text model and the same action tokenizer)."""

import os

from genvla_jax.tokenizers import actions as action_tokenizers, text


def make_tokenizers(config, action_dim, tokenizer_path: str | None = None, fast_bpe_path: str | None = None):
  """-> (text tokenizer, action tokenizer) as the config defines them (shared with the policy).
  `tokenizer_path` overrides config.tokenizer.path (the policy reads the run's own copy);
  `fast_bpe_path` is the FAST BPE (tokenizer.action="fast")."""
  text_tokenizer = text.TextTokenizer(os.path.expanduser(tokenizer_path or config.tokenizer.path))
  if text_tokenizer.vocab_size > config.model.llm.vocab_size:
    raise ValueError(
      f"tokenizer has {text_tokenizer.vocab_size} ids but model.llm.vocab_size is {config.model.llm.vocab_size}"
    )
  action_tokenizer = action_tokenizers.make_action_tokenizer(
    config.tokenizer, text_tokenizer, config.model.llm.vocab_size, action_dim, fast_bpe_path
  )
  return text_tokenizer, action_tokenizer
