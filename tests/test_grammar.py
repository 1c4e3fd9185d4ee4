"""Action grammars: the character automaton accepts exactly the string format, its token lift accepts the
tokenizer's own encodings, every path through it parses, and constrained decoding on random models only
produces valid actions (greedy and sampled, string and bins)."""

import re

import jax
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st
from hypothesis.extra import numpy as hnp

from genvla_jax.inference import decode
from genvla_jax.models import build, surgery
from genvla_jax.tokenizers import actions, bin_actions, grammar, string_actions, text
import tolerances

values = st.floats(-1.5, 1.5, allow_nan=False, allow_infinity=False, width=32)
shapes = st.tuples(st.integers(1, 3), st.integers(1, 7))


def format_regex(horizon, dim, decimals):
  value = rf"[+-](0\.\d{{{decimals}}}|1\.0{{{decimals}}})"
  step = " ".join([value] * dim)
  return re.compile(" \\| ".join([step] * horizon))


def char_accepts(automaton, text_):
  transitions, accept = automaton
  state = 0
  for ch in text_:
    state = transitions[state].get(ch, -1)
    if state < 0:
      return False
  return state == accept


@settings(max_examples=150, deadline=None)
@given(shapes, st.data())
def test_char_automaton_is_the_format(shape, data):
  horizon, dim = shape
  automaton = grammar.char_automaton(horizon, dim, 4)
  pattern = format_regex(horizon, dim, 4)
  actions_ = data.draw(hnp.arrays(np.float64, shape, elements=values))
  canonical, _ = string_actions.StringActionCodec(horizon, dim).format(actions_)
  assert char_accepts(automaton, canonical)
  # mutations of a valid string and arbitrary strings: accepted iff the regex matches in full
  position = data.draw(st.integers(0, len(canonical) - 1))
  mutated = canonical[:position] + data.draw(st.sampled_from("+-0123456789. |x")) + canonical[position + 1 :]
  for candidate in (mutated, canonical[:position], data.draw(st.text("+-019. |", max_size=30))):
    assert char_accepts(automaton, candidate) == bool(pattern.fullmatch(candidate)), candidate


@pytest.fixture(scope="module")
def demo_tokenizer(demo_dir):
  from genvla_jax.data import demo

  return text.TextTokenizer(demo.demo_paths(str(demo_dir)).tokenizer)


@settings(max_examples=60, deadline=None)
@given(shape=shapes, data=st.data())
def test_token_grammar_accepts_the_tokenizers_encodings(demo_tokenizer, shape, data):
  tokenizer = string_actions.StringActionTokenizer(demo_tokenizer, *shape)
  g = actions.make_grammar(tokenizer)
  ids, _ = tokenizer.encode(data.draw(hnp.arrays(np.float64, shape, elements=values)))
  assert g.accepts(ids + [demo_tokenizer.eos_id])
  assert not g.accepts(ids)  # no EOS yet
  assert not g.accepts(ids[:-1] + [demo_tokenizer.eos_id])  # one token short


@settings(max_examples=60, deadline=None)
@given(shape=shapes, seed=st.integers(0, 2**31 - 1))
def test_every_path_through_the_grammar_parses(demo_tokenizer, shape, seed):
  """A random walk over allowed tokens (EOS as soon as allowed, with some probability) always yields
  text the strict parser accepts."""
  tokenizer = string_actions.StringActionTokenizer(demo_tokenizer, *shape)
  g = actions.make_grammar(tokenizer)
  rng = np.random.default_rng(seed)
  state, ids = 0, []
  while not g.accepting[state]:
    allowed = np.flatnonzero(g.next_state[state] >= 0)
    c = rng.choice(allowed)
    ids.append(int(g.token_ids[c]))
    state = g.next_state[state, c]
  assert len(ids) < tokenizer.max_decode_len()
  parsed = tokenizer.codec.parse_strict(demo_tokenizer.decode(ids))
  assert parsed.shape == shape and np.abs(parsed).max() <= 1.0


def test_forced_tokens_are_the_point_and_separators(demo_tokenizer):
  g = actions.make_grammar(string_actions.StringActionTokenizer(demo_tokenizer, 1, 2))
  forced = {demo_tokenizer.id_to_piece(int(t)) for t in g.forced() if t >= 0}
  assert "." in forced and demo_tokenizer.id_to_piece(demo_tokenizer.eos_id) in forced
  assert forced <= {".", "0", demo_tokenizer.id_to_piece(demo_tokenizer.eos_id)}  # 0: after a leading 1


def test_vocabulary_that_cannot_write_the_format_is_an_error():
  transitions, accept = grammar.char_automaton(1, 1, 2)
  pieces = {10 + i: d for i, d in enumerate("+-0.12345689")}  # no "7"
  with pytest.raises(ValueError, match="cannot write the action format"):
    grammar.lift_to_tokens(transitions, accept, pieces, eos_id=1)


def test_bin_grammar():
  tok = bin_actions.BinActionTokenizer(2, 3, first_id=100, num_bins=16, eos_id=1)
  g = actions.make_grammar(tok)
  ids, _ = tok.encode(np.linspace(-1, 1, 6))
  assert g.accepts(ids + [1]) and not g.accepts(ids[:-1] + [1]) and not g.accepts(ids[:-1] + [5, 1])


@pytest.fixture(scope="module")
def random_model(demo_dir, cache_dir):
  from conftest import tiny_config

  config = tiny_config(demo_dir, cache_dir)
  model = build.from_config(config.model)
  params = surgery.init_params(model, jax.random.PRNGKey(3), config.model.image_size)
  rng = np.random.default_rng(0)
  images = rng.uniform(-1, 1, (4, config.model.image_size, config.model.image_size, 3)).astype(np.float32)
  tokens = rng.integers(4, 300, (4, 7)).astype(np.int32)
  mask = np.arange(7)[None] < np.array([[3], [7], [5], [6]])
  return config, model, params, (images, np.where(mask, tokens, 0), mask)


def _action_tokenizer(kind, horizon, config, demo_tokenizer):
  """A 3-D action tokenizer of `kind` over the demo vocabulary (bins on its last 256 ids)."""
  if kind == "string":
    return string_actions.StringActionTokenizer(demo_tokenizer, horizon, 3)
  return bin_actions.BinActionTokenizer(horizon, 3, config.model.llm.vocab_size - 256, 256, demo_tokenizer.eos_id)


@pytest.mark.parametrize("kind", ["string", "bins"])
def test_constrained_decoding_of_a_random_model_always_parses(random_model, demo_tokenizer, kind):
  config, model, params, inputs = random_model
  tok = _action_tokenizer(kind, 2, config, demo_tokenizer)
  g = actions.make_grammar(tok)
  free = np.asarray(decode.make_greedy_decoder(model, tok.max_decode_len(), demo_tokenizer.eos_id)(params, *inputs))
  assert not all(tok.decode(row)[1].all() for row in free)  # unconstrained, a random model is garbage
  sampler = decode.make_decoder(model, tok.max_decode_len(), demo_tokenizer.eos_id, grammar=g, temperature=1.0)
  outputs = [sampler(params, *inputs, None)] + [sampler(params, *inputs, jax.random.PRNGKey(s)) for s in range(3)]
  for out in outputs:
    for row in np.asarray(out):
      assert g.accepts(row), row
      assert tok.decode(row)[1].all()


@pytest.mark.parametrize("kind, horizon", [("string", 1), ("string", 2), ("bins", 2)])
def test_jump_forward_equals_constrained_greedy(random_model, demo_tokenizer, kind, horizon):
  config, model, params, inputs = random_model
  tok = _action_tokenizer(kind, horizon, config, demo_tokenizer)
  g = actions.make_grammar(tok)
  eos = demo_tokenizer.eos_id
  plain = np.asarray(decode.make_greedy_decoder(model, tok.max_decode_len(), eos, grammar=g)(params, *inputs))
  result = decode.make_speculative_decoder(model, tok.max_decode_len(), eos, 0, g, proposal_len=1)(
    params, *inputs, None
  )
  jumped, passes = result["tokens"], result["passes"]
  np.testing.assert_array_equal(np.asarray(jumped), plain)
  tokens_written = int(np.max(np.sum(plain != 0, axis=1)))
  assert int(passes) == max(_passes(g, row) for row in plain)
  if kind == "string":
    assert int(passes) < tokens_written


def _passes(g, row):
  """Model passes jump-forward (one proposal per pass) needs for `row` after the prefill: each pass
  feeds the last chosen token plus the next one if the grammar forces it, and yields the choice after."""
  row = [int(t) for t in row if t != 0]
  states, forced = _states(g, row), g.forced()
  i, passes = 1, 0  # the prefill chose row[0]
  while i < len(row):
    passes += 1
    if forced[states[i]] == row[i]:
      i += 1
    i += 1
  return passes


def _states(g, row):
  """The grammar state before each token of `row`."""
  column = {int(t): c for c, t in enumerate(g.token_ids)}
  state, states = 0, []
  for t in row:
    states.append(state)
    if int(t) in column and state < len(g.accepting) - 1 and g.next_state[state, column[int(t)]] >= 0:
      state = g.next_state[state, column[int(t)]]
  return states


@pytest.mark.parametrize("kind, horizon", [("string", 2), ("bins", 2)])
def test_speculative_drafts_keep_the_output_and_save_passes(random_model, demo_tokenizer, kind, horizon):
  config, model, params, inputs = random_model
  tok = _action_tokenizer(kind, horizon, config, demo_tokenizer)
  g = actions.make_grammar(tok)
  eos, length = demo_tokenizer.eos_id, tok.max_decode_len()
  plain = np.asarray(decode.make_greedy_decoder(model, length, eos, grammar=g)(params, *inputs))
  spec = decode.make_speculative_decoder(model, length, eos, 0, g, proposal_len=6)
  rng = np.random.default_rng(0)
  corrupted = plain.copy()
  flips = rng.random(plain.shape) < 0.15
  corrupted[flips] = rng.choice(g.token_ids, size=int(flips.sum()))
  drafts = {
    "none": None,
    "perfect": plain,
    "corrupted": corrupted,
    "short": plain[:, :5],
    "garbage": np.full((4, 9), 5, np.int32),
  }
  passes = {}
  for name, draft in drafts.items():
    result = spec(params, *inputs, draft)
    np.testing.assert_array_equal(np.asarray(result["tokens"]), plain, err_msg=name)
    passes[name] = int(result["passes"])
    drafted, accepted = np.asarray(result["drafted"]), np.asarray(result["accepted"])
    assert (accepted <= drafted).all()
    if name == "perfect":
      assert (accepted == drafted).all() and drafted.sum() > 0
    if name == "corrupted":
      assert accepted.sum() < drafted.sum()
    if name in ("none", "garbage"):
      assert drafted.sum() == 0
  longest = int(np.max(np.sum(plain != 0, axis=1)))
  assert passes["perfect"] <= -(-(longest - 1) // 7)  # K+1 = 7 tokens per pass after the prefill
  assert passes["perfect"] <= passes["corrupted"] <= passes["none"] + 1


def test_unrolled_decoding_model_decodes_the_same(random_model, demo_tokenizer):
  _, model, params, inputs = random_model
  tok = string_actions.StringActionTokenizer(demo_tokenizer, 1, 3)
  g = actions.make_grammar(tok)
  outs = [
    np.asarray(decode.make_greedy_decoder(m, tok.max_decode_len(), demo_tokenizer.eos_id, grammar=g)(params, *inputs))
    for m in (model, build.for_decoding(model))
  ]
  assert build.for_decoding(model).llm_config["scan_unroll"] == model.llm_config["depth"]
  np.testing.assert_array_equal(outs[0], outs[1])


def test_uint8_pixels_equal_unit_range_floats(random_model):
  """The pipeline ships uint8 pixels; the model's own conversion matches the policy's float input."""
  from genvla_jax.data import preprocess

  config, model, params, (_, tokens, mask) = random_model
  pixels = np.random.default_rng(0).integers(0, 256, (4, 32, 32, 3), dtype=np.uint8)
  apply = jax.jit(lambda p, im: model.apply({"params": p}, im, tokens, mask, mask))
  want = np.asarray(apply(params, preprocess.to_unit_range(pixels)))
  # two programs: the conversion may round differently inside XLA (<= 1 ulp a pixel) and fuse into other
  # sums; float32 rounding along the whole forward's chain of reductions: eps * sqrt(n) * max|logit|
  m, patches = config.model, build.num_image_tokens(config.model)
  n = (
    m.img.patch_size**2 * 3
    + tolerances.transformer_terms(m.img, patches)
    + m.img.width * (1 + m.dual_encoder)
    + tolerances.transformer_terms(m.llm, patches + tokens.shape[1])
    + m.llm.width
  )
  _, atol = tolerances.float_tol(np.float32, n, scale=np.abs(want).max())
  np.testing.assert_allclose(np.asarray(apply(params, pixels)), want, rtol=0, atol=atol)
