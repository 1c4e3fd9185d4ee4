"""FAST-style tokenizer: round-trip error bound, compression on smooth chunks, never-raising decoding,
grammar paths always decode, and a run trained with tokenizer.action="fast" acts through the policy."""

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from genvla_jax.tokenizers import actions, fast_actions

H, D = 4, 7


def smooth_chunks(n, rng):
  """[n,H,D] in [-1,1]: a start value per dimension plus a slow drift (robot-like chunks)."""
  t = np.arange(H)[None, :, None] / H
  return np.clip(rng.uniform(-0.8, 0.8, (n, 1, D)) + rng.normal(0, 0.3, (n, 1, D)) * t, -1, 1)


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory):
  path = str(tmp_path_factory.mktemp("fast") / "bpe.model")
  fast_actions.train_bpe(smooth_chunks(2000, np.random.default_rng(0)), path, H, vocab_size=400)
  return fast_actions.FastActionTokenizer(path, H, D, first_id=1000, eos_id=1)


def test_round_trip_within_the_dct_rounding_bound(tokenizer):
  chunks = smooth_chunks(300, np.random.default_rng(1))  # not the training chunks
  bound = np.sqrt(H) * 0.5 / tokenizer.scale
  lengths = []
  for chunk in chunks:
    ids, clipped = tokenizer.encode(chunk)
    assert clipped == 0 and all(1000 < i < 1000 + tokenizer.num_pieces for i in ids)
    decoded, valid = tokenizer.decode(ids + [1])
    assert valid.all() and np.abs(decoded - chunk).max() <= bound + 1e-6
    lengths.append(len(ids))
  assert np.mean(lengths) < 0.5 * H * D  # compresses smooth chunks well below one token per value


def test_clipping_is_counted_and_non_finite_refused(tokenizer):
  chunk = np.zeros((H, D))
  chunk[0, 0], chunk[2, 3] = 3.0, -1.5
  _, clipped = tokenizer.encode(chunk)
  assert clipped == 2
  chunk[1, 1] = np.nan
  with pytest.raises(ValueError, match="non-finite"):
    tokenizer.encode(chunk)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(0, 1600), max_size=40))
def test_decode_never_raises_and_is_all_or_nothing(tokenizer, ids):
  decoded, valid = tokenizer.decode(ids)
  assert decoded.shape == valid.shape == (H, D)
  assert valid.all() or (not valid.any() and not decoded.any())


@settings(max_examples=60, deadline=None)
@given(st.integers(0, 2**31 - 1))
def test_every_grammar_path_decodes(tokenizer, seed):
  g = actions.make_grammar(tokenizer)
  rng = np.random.default_rng(seed)
  state, ids = 0, []
  while not g.accepting[state]:
    c = rng.choice(np.flatnonzero(g.next_state[state] >= 0))
    ids.append(int(g.token_ids[c]))
    state = g.next_state[state, c]
  assert len(ids) < tokenizer.max_decode_len()
  assert g.accepts(ids + [1]) and tokenizer.decode(ids + [1])[1].all()


def test_run_with_fast_actions_trains_and_acts(config, tmp_path):
  """train.py trains the BPE on the demo data, keeps it in the run's assets, and the policy decodes
  grammar-constrained FAST tokens into valid actions."""
  from genvla_jax import train
  from genvla_jax.data import demo
  from genvla_jax.inference import policy as policy_lib

  config.tokenizer.action = "fast"
  config.tokenizer.fast_vocab_size = 200  # the demo vocabulary has 256 spare ids
  config.tokenizer.action_horizon = 2
  config.train.steps = 2
  records = train.train(config, str(tmp_path / "run"), printer=lambda *a, **k: None)
  assert np.isfinite(records[-1]["loss"])
  assert (tmp_path / "run" / "assets" / "fast_bpe.model").exists()
  policy = policy_lib.Policy.from_workdir(str(tmp_path / "run"))
  assert isinstance(policy.action_tokenizer, fast_actions.FastActionTokenizer)
  image = demo.render(demo.random_scene(np.random.default_rng(0)))
  acts, valid = policy.act(image, "move to the red square")
  assert acts.shape == (2, 2) and valid.all() and np.isfinite(acts).all()
