"""FAST-style action tokenizer (baseline): frequency-space compression of an action chunk, with a BPE
trained by the project on the dataset's own actions.

  normalized chunk [H,D] in [-1,1]
    -> coefficients round(scale * DCT-II_ortho(chunk, over time)) [H,D], clipped to [-max_coef, max_coef]
    -> flattened frequency-major (every dimension's frequency 0, then frequency 1, ...)
    -> one character per coefficient (chr(CHAR_BASE + c + max_coef))
    -> SentencePiece BPE pieces -> model ids first_id + piece id (a reserved block at the end of the
       vocabulary, like the bins).
Decoding inverts each step. The DCT mixes time steps, so validity is all-or-nothing per chunk: ids
outside the block, unknown pieces or a coefficient count other than H*D give valid=False everywhere
(values 0.0). Per-value reconstruction error is at most sqrt(H) * 0.5 / scale (orthonormal DCT).
`grammar()` admits exactly the piece sequences that decode to H*D coefficients, so constrained decoding
always yields a decodable chunk.
"""

import io
import math
import os

import numpy as np
import scipy.fft
import sentencepiece as spm

from genvla_jax.tokenizers import grammar as grammar_lib

CHAR_BASE = 0x100  # Latin Extended: no whitespace, no digits, one code point per character


def max_coefficient(horizon: int, scale: float) -> int:
  """Largest |coefficient| an orthonormal DCT of values in [-1,1] over `horizon` steps can give."""
  return int(math.ceil(scale * math.sqrt(horizon)))


def coefficients(chunk, scale: float, max_coef: int) -> np.ndarray:
  """[H,D] normalized -> int [H*D] frequency-major."""
  dct = scipy.fft.dct(np.asarray(chunk, np.float64), type=2, norm="ortho", axis=0)
  return np.clip(np.round(scale * dct), -max_coef, max_coef).astype(np.int64).reshape(-1)


def to_text(coefs, max_coef: int) -> str:
  return "".join(chr(CHAR_BASE + int(c) + max_coef) for c in coefs)


def train_bpe(chunks, out_path: str, horizon: int, scale: float = 10.0, vocab_size: int = 1024) -> str:
  """Trains the BPE on normalized action chunks [N,H,D] (the dataset's, after clipping to [-1,1])."""
  max_coef = max_coefficient(horizon, scale)
  alphabet = "".join(chr(CHAR_BASE + i) for i in range(2 * max_coef + 1))
  texts = [to_text(coefficients(c, scale, max_coef), max_coef) for c in np.clip(chunks, -1, 1)]
  model = io.BytesIO()
  spm.SentencePieceTrainer.train(
    sentence_iterator=iter(texts),
    model_writer=model,
    vocab_size=vocab_size,
    model_type="bpe",
    character_coverage=1.0,
    required_chars=alphabet,
    add_dummy_prefix=False,
    remove_extra_whitespaces=False,
    normalization_rule_name="identity",
    split_by_unicode_script=False,
    split_by_number=False,
    max_sentencepiece_length=16,
    pad_id=-1,
    bos_id=-1,
    eos_id=-1,
    unk_id=0,
    hard_vocab_limit=False,
    minloglevel=2,
    num_threads=1,
  )
  os.makedirs(os.path.dirname(os.path.abspath(out_path)), exist_ok=True)
  tmp = f"{out_path}.tmp{os.getpid()}"  # hosts sharing a cache directory do not collide
  with open(tmp, "wb") as f:
    f.write(model.getvalue())
  os.replace(tmp, out_path)
  return out_path


def bpe_size(bpe_path: str) -> int:
  """Pieces in a FAST BPE model: the size of the id block its tokenizer needs (before constructing it)."""
  return spm.SentencePieceProcessor(model_file=bpe_path).get_piece_size()


class FastActionTokenizer:
  """Action chunk [H,D] <-> BPE piece ids in [first_id, first_id + bpe_size) (an actions.ActionTokenizer)."""

  def __init__(self, bpe_path: str, horizon: int, dim: int, first_id: int, eos_id: int, scale: float = 10.0):
    self.sp = spm.SentencePieceProcessor(model_file=bpe_path)
    self.horizon, self.dim, self.first_id, self.eos_id, self.scale = horizon, dim, first_id, eos_id, scale
    self.max_coef = max_coefficient(horizon, scale)
    self.num_pieces = self.sp.get_piece_size()

  def encode(self, actions) -> tuple[list[int], int]:
    actions = np.asarray(actions, np.float64).reshape(self.horizon, self.dim)
    if not np.all(np.isfinite(actions)):
      raise ValueError(f"non-finite action values cannot be tokenized: {actions.tolist()}")
    clipped = np.clip(actions, -1.0, 1.0)
    pieces = self.sp.encode(to_text(coefficients(clipped, self.scale, self.max_coef), self.max_coef))
    return [self.first_id + p for p in pieces], int(np.sum(clipped != actions))

  def decode(self, ids) -> tuple[np.ndarray, np.ndarray]:
    shape = (self.horizon, self.dim)
    ids = [int(i) for i in ids]
    ids = ids[: ids.index(self.eos_id)] if self.eos_id in ids else ids
    pieces = [i - self.first_id for i in ids]
    if any(not 0 < p < self.num_pieces for p in pieces):  # outside the block, or <unk>
      return np.zeros(shape, np.float32), np.zeros(shape, bool)
    coefs = [ord(ch) - CHAR_BASE - self.max_coef for ch in self.sp.decode(pieces)]
    if len(coefs) != self.horizon * self.dim or any(abs(c) > self.max_coef for c in coefs):
      return np.zeros(shape, np.float32), np.zeros(shape, bool)
    dct = np.asarray(coefs, np.float64).reshape(shape) / self.scale
    actions = scipy.fft.idct(dct, type=2, norm="ortho", axis=0)
    return np.clip(actions, -1, 1).astype(np.float32), np.ones(shape, bool)

  def max_decode_len(self) -> int:
    return self.horizon * self.dim + 1  # every piece covers at least one coefficient

  def grammar(self) -> grammar_lib.TokenGrammar:
    """States = coefficients written so far (0..H*D); a piece of n characters advances by n."""
    total = self.horizon * self.dim
    lengths = {
      p: len(self.sp.id_to_piece(p))
      for p in range(self.num_pieces)
      if not (self.sp.is_unknown(p) or self.sp.is_control(p))
      and all(0 <= ord(ch) - CHAR_BASE <= 2 * self.max_coef for ch in self.sp.id_to_piece(p))
    }
    pieces = sorted(lengths)
    next_state = np.full((total + 2, len(pieces)), -1, np.int32)  # last row: after EOS
    for s in range(total + 1):
      for c, p in enumerate(pieces):
        if s + lengths[p] <= total:
          next_state[s, c] = s + lengths[p]
    accepting = np.zeros(total + 2, bool)
    accepting[total] = True
    return grammar_lib.TokenGrammar(
      np.asarray([self.first_id + p for p in pieces], np.int32), next_state, accepting, self.eos_id
    )
