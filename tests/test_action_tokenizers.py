"""String and bin action tokenizers: round trips, clipping, malformed text."""

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st
from hypothesis.extra import numpy as hnp

from genvla_jax.tokenizers import bin_actions, string_actions, text

finite_in_range = st.floats(-1.0, 1.0, allow_nan=False, allow_infinity=False, width=32)


@settings(max_examples=200, deadline=None)
@given(hnp.arrays(np.float32, st.tuples(st.integers(1, 4), st.integers(1, 8)), elements=finite_in_range))
def test_string_round_trip_within_1e4(actions):
  codec = string_actions.StringActionCodec(*actions.shape)
  text_, clipped = codec.format(actions)
  parsed, valid = codec.parse(text_)
  assert clipped == 0
  assert valid.all()
  assert np.abs(parsed - actions).max() <= 0.5e-4 + 1e-7


def test_string_format_exact():
  codec = string_actions.StringActionCodec(2, 3)
  text_, clipped = codec.format([[0.0312, -0.5, 1.0], [-0.00001, 0.12346, -1.0]])
  assert text_ == "+0.0312 -0.5000 +1.0000 | +0.0000 +0.1235 -1.0000"  # -0.0000 written as +0.0000
  assert clipped == 0


def test_string_clipping_is_counted():
  codec = string_actions.StringActionCodec(1, 3)
  text_, clipped = codec.format([1.7, -3.0, 0.25])
  assert text_ == "+1.0000 -1.0000 +0.2500"
  assert clipped == 2


def test_string_rejects_non_finite():
  with pytest.raises(ValueError, match="non-finite"):
    string_actions.StringActionCodec(1, 2).format([np.nan, 0.0])


@pytest.mark.parametrize(
  "garbage, expected_valid",
  [
    ("", [[False, False, False]]),
    ("+0.1234 -0.5000", [[True, True, False]]),  # truncated
    ("+0.1234 0.5000 +0.1", [[True, False, False]]),  # missing sign, too few decimals
    ("+0.1234 +1.5000 -0.0001", [[True, False, True]]),  # out of range
    ("hello world !!", [[False, False, False]]),
    ("+0.1234 -0.5000 +0.2500 +0.9999", [[True, True, True]]),  # extra field ignored
  ],
)
def test_string_parse_malformed(garbage, expected_valid):
  codec = string_actions.StringActionCodec(1, 3)
  actions, valid = codec.parse(garbage)
  assert valid.tolist() == expected_valid
  assert np.all(actions[~valid] == 0.0)
  with (
    pytest.raises(string_actions.ActionParseError, match="malformed action text")
    if not all(expected_valid[0])
    else _nothing()
  ):
    codec.parse_strict(garbage)


class _nothing:
  def __enter__(self):
    return self

  def __exit__(self, *exc):
    return False


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet=st.characters(codec="utf-8"), max_size=80))
def test_string_parser_never_raises_on_arbitrary_text(s):
  actions, valid = string_actions.StringActionCodec(2, 3).parse(s)
  assert actions.shape == valid.shape == (2, 3)
  assert np.all(np.abs(actions) <= 1.0)


def test_string_tokens_round_trip_through_sentencepiece(demo_dir):
  tok = text.TextTokenizer(str(demo_dir / "tokenizer.model"))
  action_tok = string_actions.StringActionTokenizer(tok, horizon=2, dim=7)
  rng = np.random.default_rng(0)
  for _ in range(20):
    actions = rng.uniform(-1, 1, (2, 7)).astype(np.float32)
    ids, _ = action_tok.encode(actions)
    assert len(ids) + 1 <= action_tok.max_decode_len()
    decoded, valid = action_tok.decode(ids + [tok.eos_id, 0, 0])
    assert valid.all() and np.abs(decoded - actions).max() <= 0.5e-4 + 1e-7
    # digits are single tokens, so the answer is one token per character apart from merged " +"/" -"
    assert all(len(tok.id_to_piece(i).replace("\u2581", " ")) <= 2 for i in ids)


def test_bins_round_trip_within_half_bin():
  tok = bin_actions.BinActionTokenizer(horizon=2, dim=7, first_id=1000, num_bins=256)
  rng = np.random.default_rng(0)
  actions = rng.uniform(-1, 1, (2, 7))
  ids, clipped = tok.encode(actions)
  assert clipped == 0 and len(ids) == 14 and all(1000 <= i < 1256 for i in ids)
  decoded, valid = tok.decode(ids)
  assert valid.all()
  assert np.abs(decoded - actions).max() <= (2 / 256) / 2 + 1e-6
  assert tok.encode([[-1.0] * 7, [1.0] * 7])[0] == [1000] * 7 + [1255] * 7


def test_bins_openvla_layout_matches_its_action_tokenizer_by_hand():
  """OpenVLA (Llama vocab_end 32000, 256 'bins'): edges linspace(-1,1,256), d = digitize(x, edges),
  id = 32000 - d; decode: centre of interval clip(32000 - id - 1, 0, 254)."""
  tok = bin_actions.BinActionTokenizer(horizon=1, dim=5, first_id=32000 - 256, num_bins=256, layout="openvla")
  step = 2 / 255
  ids, clipped = tok.encode([[-1.0, 0.0, 1.0, 0.5, -1.5]])
  # x=-1 -> d=1; x=0 lies in [edges[127], edges[128]) -> d=128; x=1 -> d=256; x=0.5: edges[191]=0.498 -> d=192
  assert ids == [31999, 31872, 31744, 31808, 31999] and clipped == 1
  decoded, valid = tok.decode(ids)
  want = [-1 + step / 2, 0.0, 1 - step / 2, -1 + 191.5 * step, -1 + step / 2]
  assert valid.all() and np.allclose(decoded[0], want, rtol=0, atol=1e-6)  # float32 centres: a few eps32 of <= 1
  rng = np.random.default_rng(1)
  actions = rng.uniform(-1, 1, (1, 5))
  back, _ = tok.decode(tok.encode(actions)[0])
  assert np.abs(back - actions).max() <= step / 2 + 1e-6  # within half an interval
  assert tok.decode([31743, 32000])[1].tolist() == [[False, False, False, False, False]]  # outside the block


def test_bins_invalid_ids():
  tok = bin_actions.BinActionTokenizer(horizon=1, dim=3, first_id=100, num_bins=256)
  decoded, valid = tok.decode([5, 130])
  assert valid.tolist() == [[False, True, False]]
  assert decoded[0, 0] == 0.0
