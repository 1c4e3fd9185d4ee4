"""SentencePiece tokenizer and the PaliGemma prompt layout."""

import pickle

import numpy as np
import pytest

from genvla_jax.tokenizers import prompt, text


@pytest.fixture(scope="module")
def tok(demo_dir):
  return text.TextTokenizer(str(demo_dir / "tokenizer.model"))


def test_special_ids_and_digits(tok):
  assert (tok.pad_id, tok.eos_id, tok.bos_id) == (0, 1, 2)
  ids = tok.encode("0123456789")
  assert [tok.id_to_piece(i) for i in ids] == list("0123456789")
  assert tok.decode(tok.encode("move to the red square\n+0.1 | x")) == "move to the red square\n+0.1 | x"


def test_tokenizer_pickles(tok):
  clone = pickle.loads(pickle.dumps(tok))
  assert clone.encode("where is the red square?") == tok.encode("where is the red square?")


def test_prompt_layout(tok):
  out = prompt.build_prompt(tok, "move to the red square", [7, 8, 9], max_len=40)
  prefix = [tok.bos_id] + tok.encode("move to the red square\n")
  n = len(prefix)
  assert out["tokens"][:n].tolist() == prefix
  assert out["tokens"][n : n + 4].tolist() == [7, 8, 9, tok.eos_id]
  assert np.all(out["tokens"][n + 4 :] == tok.pad_id)
  assert out["input_mask"].tolist() == [True] * (n + 4) + [False] * (40 - n - 4)
  assert out["ar_mask"].tolist() == [False] * n + [True] * 4 + [False] * (40 - n - 4)
  assert out["loss_mask"].tolist() == out["ar_mask"].tolist()


def test_prompt_inference_has_no_answer(tok):
  out = prompt.build_prompt(tok, "go", None, max_len=16)
  assert not out["ar_mask"].any() and not out["loss_mask"].any()
  assert out["tokens"][int(out["input_mask"].sum()) - 1] == tok.encode("go\n")[-1]


def test_prompt_too_long_names_the_prompt(tok):
  with pytest.raises(prompt.PromptTooLongError, match="max_text_len"):
    prompt.build_prompt(tok, "a very long instruction " * 10, [1, 2, 3], max_len=16)


def test_truncated_prompt_that_fits_is_build_prompts(tok):
  for answer in ([7, 8, 9], [], list(range(3, 3 + 16 - len(prompt.encode_prefix(tok, "go")) - 1))):  # last: exactly 16
    want = prompt.build_prompt(tok, "go", answer, max_len=16)
    got, truncated = prompt.build_truncated_prompt(tok, "go", answer, max_len=16)
    assert not truncated and got.keys() == want.keys()
    for k in want:
      assert got[k].dtype == want[k].dtype and got[k].tobytes() == want[k].tobytes(), k


def test_too_long_answer_is_cut_without_eos(tok):
  prefix = [tok.bos_id] + tok.encode("where is the red square?\n")
  n, max_len = len(prefix), len(prefix) + 5
  answer = list(range(10, 30))  # 20 answer tokens + EOS, 5 fit
  with pytest.raises(prompt.PromptTooLongError, match=f"needs {n + 21} tokens"):
    prompt.build_prompt(tok, "where is the red square?", answer, max_len)
  out, truncated = prompt.build_truncated_prompt(tok, "where is the red square?", answer, max_len)
  assert truncated and out["tokens"].shape == (max_len,)
  assert out["tokens"].tolist() == prefix + answer[:5]  # exactly max_len, no EOS
  assert out["input_mask"].all()
  assert out["loss_mask"].tolist() == [False] * n + [True] * 5  # the kept answer tokens only
  assert out["ar_mask"].tolist() == out["loss_mask"].tolist()
  # an answer that fits only without its EOS is cut at the EOS
  out, truncated = prompt.build_truncated_prompt(tok, "where is the red square?", answer[:5], max_len)
  assert truncated and out["tokens"].tolist() == prefix + answer[:5]


def test_too_long_question_keeps_its_start_and_has_no_loss(tok):
  question = "where is the red square? " * 10
  prefix = prompt.encode_prefix(tok, question)
  for max_len in (12, len(prefix)):  # longer than max_len; exactly max_len (no room for an answer)
    out, truncated = prompt.build_truncated_prompt(tok, question, [7, 8, 9], max_len)
    assert truncated and out["tokens"].tolist() == prefix[:max_len]  # BOS + the leading tokens
    assert out["input_mask"].all() and not out["ar_mask"].any() and not out["loss_mask"].any()


def test_robot_prompt_writes_the_normalized_state():
  from genvla_jax.data import preprocess

  template = "do {instruction}? State: {state}"
  assert preprocess.prompt_uses_state(template) and not preprocess.prompt_uses_state("do {instruction}?")
  assert preprocess.state_text([0.123, -0.5, 1.7, -0.001]) == "+0.12 -0.50 +1.00 +0.00"  # clipped, no "-0"
  assert preprocess.robot_prompt(template, " Pick Up. ", np.array([-2.0, 0.456])) == "do pick up? State: -1.00 +0.46"
  assert preprocess.robot_prompt("do {instruction}", "go", np.ones(3)) == "do go"  # no field: state unused
  with pytest.raises(ValueError, match="no state was given"):
    preprocess.robot_prompt(template, "go")
  with pytest.raises(ValueError, match="non-finite"):
    preprocess.state_text([0.0, np.nan])
