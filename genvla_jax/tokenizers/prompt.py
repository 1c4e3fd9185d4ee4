"""PaliGemma prompt layout for one example (image tokens are prepended by the model, not here).

  tokens:    [BOS] prefix "\\n" | suffix [EOS] | PAD ...        -> length max_len
  input_mask  1 ...              1 ...         0 ...
  ar_mask     0 ...              1 ...         0 ...   (causal on the answer)
  loss_mask   0 ...              1 ...         0 ...   (loss on answer tokens and EOS)
With `suffix_ids=None` (inference) only the prefix is written and decoding continues after "\\n".

A prompt longer than max_len: `build_prompt` raises PromptTooLongError (robot rows, whose length the
config fixes, and inference). `build_truncated_prompt` is the counted fallback for vision-language
training rows (config.tokenizer.vl_overflow="truncate", big_vision's way), returning whether it cut:
  - the prefix fits with room for >= 1 answer token: the answer is cut to the tokens that fit and has
    no EOS (the loss covers the kept answer tokens only; the model is never taught to stop at the cut);
  - otherwise (the question alone fills max_len): [BOS] + the question's leading tokens, all max_len of
    them prefix, and no loss at all (loss_mask all False). A cut question's answer may depend on what was
    cut (RoboPoint's target object comes last), so the row is not taught rather than taught wrong.
"""

import numpy as np

VL_OVERFLOW = ("truncate", "fail")  # config.tokenizer.vl_overflow


class PromptTooLongError(ValueError):
  pass


def encode_prefix(tokenizer, prefix: str, separator: str = "\n") -> list[int]:
  """[BOS] + the tokens of `prefix + separator`: exactly the ids `build_prompt` writes first (a prompt
  fits iff these plus its answer ids number at most max_len; the policy's prompt has no answer)."""
  return [tokenizer.bos_id] + tokenizer.encode(prefix + separator)


def _layout(tokenizer, ids: list[int], num_prefix: int, max_len: int) -> dict[str, np.ndarray]:
  """ids (at most max_len), the first `num_prefix` of them the prefix -> the padded arrays."""
  n = len(ids)
  tokens = np.full(max_len, tokenizer.pad_id, np.int32)
  tokens[:n] = ids
  input_mask = np.arange(max_len) < n
  answer = (np.arange(max_len) >= num_prefix) & input_mask
  return {"tokens": tokens, "input_mask": input_mask, "ar_mask": answer, "loss_mask": answer.copy()}


def build_prompt(tokenizer, prefix: str, suffix_ids, max_len: int, separator: str = "\n") -> dict[str, np.ndarray]:
  """-> {tokens [T] int32, input_mask [T] bool, ar_mask [T] bool, loss_mask [T] bool}, T = max_len.
  `separator` ends the prefix (config.tokenizer.prompt_separator: PaliGemma "\n"; OpenVLA's prompt
  ends in "Out:" followed by " "). Raises PromptTooLongError (naming the lengths and the prefix) when
  the prompt exceeds max_len."""
  prefix_ids = encode_prefix(tokenizer, prefix, separator)
  answer_ids = [] if suffix_ids is None else list(suffix_ids) + [tokenizer.eos_id]
  n = len(prefix_ids) + len(answer_ids)
  if n > max_len:
    raise PromptTooLongError(
      f"prompt needs {n} tokens ({len(prefix_ids)} prefix + {len(answer_ids)} answer) but "
      f"max_text_len is {max_len}; prefix was {prefix!r}. Raise tokenizer.max_text_len in the config."
    )
  return _layout(tokenizer, prefix_ids + answer_ids, len(prefix_ids), max_len)


def build_truncated_prompt(
  tokenizer, prefix: str, suffix_ids, max_len: int, separator: str = "\n"
) -> tuple[dict[str, np.ndarray], bool]:
  """A training prompt that always fits -> (build_prompt's arrays, truncated). A prompt that fits is
  build_prompt's, unchanged (truncated False); one that does not is cut as the module docstring says."""
  prefix_ids = encode_prefix(tokenizer, prefix, separator)
  answer_ids = list(suffix_ids) + [tokenizer.eos_id]
  if len(prefix_ids) + len(answer_ids) <= max_len:
    return _layout(tokenizer, prefix_ids + answer_ids, len(prefix_ids), max_len), False
  room = max_len - len(prefix_ids)
  if room >= 1:  # the answer's first `room` tokens, no EOS
    return _layout(tokenizer, prefix_ids + answer_ids[:room], len(prefix_ids), max_len), True
  return _layout(tokenizer, prefix_ids[:max_len], max_len, max_len), True  # no answer, no loss
