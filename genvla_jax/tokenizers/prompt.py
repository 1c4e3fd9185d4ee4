"""PaliGemma prompt layout for one example (image tokens are prepended by the model, not here).

  tokens:    [BOS] prefix "\\n" | suffix [EOS] | PAD ...        -> length max_len
  input_mask  1 ...              1 ...         0 ...
  ar_mask     0 ...              1 ...         0 ...   (causal on the answer)
  loss_mask   0 ...              1 ...         0 ...   (loss on answer tokens and EOS)
With `suffix_ids=None` (inference) only the prefix is written and decoding continues after "\\n".
"""

import numpy as np


class PromptTooLongError(ValueError):
  pass


def encode_prefix(tokenizer, prefix: str, separator: str = "\n") -> list[int]:
  """[BOS] + the tokens of `prefix + separator`: exactly the ids `build_prompt` writes first (a prompt
  fits iff these plus its answer ids number at most max_len; the policy's prompt has no answer)."""
  return [tokenizer.bos_id] + tokenizer.encode(prefix + separator)


def build_prompt(tokenizer, prefix: str, suffix_ids, max_len: int, separator: str = "\n") -> dict[str, np.ndarray]:
  """-> {tokens [T] int32, input_mask [T] bool, ar_mask [T] bool, loss_mask [T] bool}, T = max_len.
  `separator` ends the prefix (config.tokenizer.prompt_separator: PaliGemma "\n"; OpenVLA's prompt
  ends in "Out:" followed by " ")."""
  prefix_ids = encode_prefix(tokenizer, prefix, separator)
  answer_ids = [] if suffix_ids is None else list(suffix_ids) + [tokenizer.eos_id]
  n = len(prefix_ids) + len(answer_ids)
  if n > max_len:
    raise PromptTooLongError(
      f"prompt needs {n} tokens ({len(prefix_ids)} prefix + {len(answer_ids)} answer) but "
      f"max_text_len is {max_len}; prefix was {prefix!r}. Raise tokenizer.max_text_len in the config."
    )
  tokens = np.full(max_len, tokenizer.pad_id, np.int32)
  tokens[:n] = prefix_ids + answer_ids
  input_mask = np.arange(max_len) < n
  answer = (np.arange(max_len) >= len(prefix_ids)) & input_mask
  return {"tokens": tokens, "input_mask": input_mask, "ar_mask": answer, "loss_mask": answer.copy()}
