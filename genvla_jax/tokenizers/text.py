"""SentencePiece text tokenizer: the real PaliGemma model from a path, or a tiny one trained here.

Special ids follow PaliGemma's tokenizer: pad=0, eos=1, bos=2, unk=3. Digits are always single tokens
(`split_digits`), so the string action tokenizer sees one token per digit.
"""

import io
import os

import sentencepiece as spm


class TextTokenizer:
  """Picklable (grain workers receive the serialized model, not a file handle)."""

  def __init__(self, model_path: str):
    if not os.path.exists(model_path):
      raise FileNotFoundError(f"SentencePiece model not found: {model_path}")
    with open(model_path, "rb") as f:
      self._proto = f.read()
    self._load()

  def _load(self):
    self.sp = spm.SentencePieceProcessor(model_proto=self._proto)

  def __getstate__(self):
    return {"_proto": self._proto}

  def __setstate__(self, state):
    self._proto = state["_proto"]
    self._load()

  @property
  def vocab_size(self) -> int:
    return self.sp.get_piece_size()

  @property
  def bos_id(self) -> int:
    return self.sp.bos_id()

  @property
  def eos_id(self) -> int:
    return self.sp.eos_id()

  @property
  def pad_id(self) -> int:
    return self.sp.pad_id()

  def encode(self, text: str) -> list[int]:
    return self.sp.encode(text)

  def decode(self, ids) -> str:
    return self.sp.decode([int(i) for i in ids])

  def id_to_piece(self, i: int) -> str:
    return self.sp.id_to_piece(int(i))


def train_sentencepiece(texts, out_path: str, vocab_size: int) -> str:
  """Trains a small BPE SentencePiece model on `texts` (an iterable of str) and writes `out_path`."""
  model = io.BytesIO()
  spm.SentencePieceTrainer.train(
    sentence_iterator=iter(texts),
    model_writer=model,
    vocab_size=vocab_size,
    model_type="bpe",
    character_coverage=1.0,
    split_digits=True,
    byte_fallback=True,
    add_dummy_prefix=False,
    remove_extra_whitespaces=False,
    normalization_rule_name="identity",
    pad_id=0,
    eos_id=1,
    bos_id=2,
    unk_id=3,
    hard_vocab_limit=False,
    minloglevel=2,
    num_threads=1,
  )
  os.makedirs(os.path.dirname(os.path.abspath(out_path)), exist_ok=True)
  tmp = out_path + ".tmp"
  with open(tmp, "wb") as f:
    f.write(model.getvalue())
  os.replace(tmp, out_path)
  return out_path
