"""The VLA model: dual-encoder identity at init, prefix-LM attention, cached decoding = full forward."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from genvla_jax.inference import decode
from genvla_jax.models import build, masks, prefix_lm, surgery
import tolerances

IMG = dict(patch_size=8, width=32, depth=2, mlp_dim=64, num_heads=2)
LLM = dict(vocab_size=97, width=32, depth=2, mlp_dim=64, num_heads=4, num_kv_heads=1, head_dim=8)
SIZE, B, T = 32, 2, 12
NUM_IMAGE = (SIZE // 8) ** 2
# float terms along the language model's chain of reductions, image + text positions, and the logits
LLM_TERMS = tolerances.transformer_terms(LLM, NUM_IMAGE + T) + LLM["width"]


@pytest.fixture(scope="module")
def models():
  single = build.vla(IMG, LLM)
  dual = build.vla(IMG, LLM, dual="copy")
  rng = jax.random.PRNGKey(1)
  return single, dual, surgery.init_params(single, rng, SIZE), surgery.init_params(dual, rng, SIZE)


@pytest.fixture(scope="module")
def inputs():
  rng = np.random.default_rng(0)
  images = rng.uniform(-1, 1, (B, SIZE, SIZE, 3)).astype(np.float32)
  tokens = rng.integers(3, 97, (B, T)).astype(np.int32)
  prefix_len = np.array([5, 3])
  answer_len = np.array([7, 6])
  pos = np.arange(T)[None]
  input_mask = pos < (prefix_len + answer_len)[:, None]
  ar_mask = (pos >= prefix_len[:, None]) & input_mask
  tokens = np.where(input_mask, tokens, 0)
  return images, tokens, input_mask, ar_mask, prefix_len


def test_dual_encoder_equals_single_at_init(models, inputs):
  single, dual, p_single, p_dual = models
  images, tokens, input_mask, ar_mask, _ = inputs
  l1 = single.apply({"params": p_single}, images, tokens, input_mask, ar_mask)
  l2 = dual.apply({"params": p_dual}, images, tokens, input_mask, ar_mask)
  assert l1.shape == (B, T, LLM["vocab_size"])
  # same towers (same ops on the same images), then a 2 x 32-term projector instead of 32 terms: float32
  # summation order from there on, eps * sqrt(n) * max|logit|
  _, atol = tolerances.float_tol(np.float32, 2 * IMG["width"] + LLM_TERMS, scale=float(jnp.abs(l1).max()))
  np.testing.assert_allclose(l2, l1, rtol=0, atol=atol)
  assert set(p_dual) == {"img", "img_frozen", "projector", "llm"}
  assert p_dual["projector"]["kernel"].shape == (2 * IMG["width"], LLM["width"])
  jax.tree.map(np.testing.assert_array_equal, p_dual["img_frozen"], p_single["img"])


def test_frozen_tower_gets_no_gradient(models, inputs):
  _, dual, _, p_dual = models
  images, tokens, input_mask, ar_mask, _ = inputs

  def loss(p):
    return jnp.mean(dual.apply({"params": p}, images, tokens, input_mask, ar_mask) ** 2)

  grads = jax.jit(jax.grad(loss))(p_dual)
  assert all(float(jnp.abs(g).max()) == 0.0 for g in jax.tree.leaves(grads["img_frozen"]))
  assert any(float(jnp.abs(g).max()) > 0.0 for g in jax.tree.leaves(grads["img"]))


def test_unrolled_layers_compute_the_same_loss_and_gradients(models, inputs):
  """config.model.scan_unroll (towers and decoder) is not architecture: the same params, the same numbers."""
  _, dual, _, p_dual = models
  unrolled = build.vla(IMG, LLM, dual="copy", scan_unroll=4)
  images, tokens, input_mask, ar_mask, _ = inputs

  def loss_of(model):
    return jax.jit(
      jax.value_and_grad(lambda p: jnp.mean(model.apply({"params": p}, images, tokens, input_mask, ar_mask) ** 2))
    )

  assert jax.tree.structure(surgery.init_params(unrolled, jax.random.PRNGKey(1), SIZE)) == jax.tree.structure(p_dual)
  (l1, g1), (l2, g2) = loss_of(dual)(p_dual), loss_of(unrolled)(p_dual)
  jaxpr = str(jax.make_jaxpr(lambda p: unrolled.apply({"params": p}, images, tokens, input_mask, ar_mask))(p_dual))
  assert jaxpr.count("unroll=4") == 3 and "unroll=1" not in jaxpr  # both towers and the decoder
  assert float(l1) > 0
  np.testing.assert_allclose(l2, l1, rtol=1e-6)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(b, a, rtol=1e-5, atol=1e-7), g1, g2)


def test_param_names_are_stable(models):
  _, _, _, p_dual = models
  names = {"/".join(str(k.key) for k in path) for path, _ in jax.tree_util.tree_flatten_with_path(p_dual)[0]}
  for expected in [
    "img/embedding/kernel",
    "img/pos_embedding",
    "img/encoder_norm/scale",
    "img/blocks/MultiHeadDotProductAttention_0/query/kernel",
    "llm/embedder/input_embedding",
    "llm/layers/attn/q_einsum",
    "llm/layers/attn/kv_einsum",
    "llm/layers/attn/attn_vec_einsum",
    "llm/layers/mlp/gating_einsum",
    "llm/layers/mlp/linear",
    "llm/final_norm/scale",
    "projector/kernel",
    "img_frozen/embedding/kernel",
  ]:
    assert expected in names, expected
  assert p_dual["llm"]["layers"]["attn"]["kv_einsum"].shape == (2, 2, 1, 32, 8)  # [L,2,K,D,Hd]


def test_prefix_lm_mask():
  input_mask = jnp.array([[1, 1, 1, 1, 1, 0]], bool)
  ar_mask = jnp.array([[0, 0, 0, 1, 1, 0]], bool)
  m = np.asarray(masks.prefix_lm_mask(input_mask, ar_mask)[0]).astype(int)
  expected = np.array(
    [
      [1, 1, 1, 0, 0, 0],
      [1, 1, 1, 0, 0, 0],
      [1, 1, 1, 0, 0, 0],
      [1, 1, 1, 1, 0, 0],
      [1, 1, 1, 1, 1, 0],
      [0, 0, 0, 0, 0, 0],
    ]
  )
  np.testing.assert_array_equal(m, expected)


def test_prefix_is_bidirectional_and_answer_causal(models, inputs):
  single, _, params, _ = models
  images, tokens, input_mask, ar_mask, prefix_len = inputs
  base = single.apply({"params": params}, images, tokens, input_mask, ar_mask)
  changed_prefix = tokens.copy()
  changed_prefix[0, prefix_len[0] - 1] = (tokens[0, prefix_len[0] - 1] + 1) % 97
  out = single.apply({"params": params}, images, changed_prefix, input_mask, ar_mask)
  assert float(jnp.abs(out[0, 0] - base[0, 0]).max()) > 1e-4  # earlier prefix token sees a later one
  changed_answer = tokens.copy()
  last = int(input_mask[0].sum()) - 1
  changed_answer[0, last] = (tokens[0, last] + 1) % 97
  out = single.apply({"params": params}, images, changed_answer, input_mask, ar_mask)
  # answer is causal: a masked key gets weight exp(-inf) = 0 exactly, and the same ops on the same shapes
  # give bit-identical results, so nothing before `last` (and nothing in row 1) may change at all
  np.testing.assert_array_equal(out[0, :last], base[0, :last])
  np.testing.assert_array_equal(out[1], base[1])


def test_cached_decoding_equals_full_forward(models, inputs):
  _, dual, _, params = models
  images, tokens, input_mask, ar_mask, prefix_len = inputs
  full = dual.apply({"params": params}, images, tokens, input_mask, ar_mask)
  p_width = int(prefix_len.max())
  p_tokens = np.where(np.arange(p_width)[None] < prefix_len[:, None], tokens[:, :p_width], 0)
  p_mask = np.arange(p_width)[None] < prefix_len[:, None]
  steps = 4
  cache_size = NUM_IMAGE + p_width + steps
  logits, cache, next_pos = dual.apply(
    {"params": params}, images, p_tokens, p_mask, cache_size, method=prefix_lm.PrefixLM.prefill
  )
  rows = np.arange(B)
  # other sequence lengths (cache slots vs the full sequence): float32 summation order, eps*sqrt(n)*max|logit|
  _, atol = tolerances.float_tol(np.float32, LLM_TERMS, scale=float(jnp.abs(full).max()))
  np.testing.assert_allclose(logits, full[rows, prefix_len - 1], rtol=0, atol=atol)
  valid = np.concatenate([np.ones((B, NUM_IMAGE), bool), p_mask, np.zeros((B, steps), bool)], 1)
  for i in range(steps):
    slot = NUM_IMAGE + p_width + i
    valid[:, slot] = True
    logits, cache = dual.apply(
      {"params": params},
      tokens[rows, prefix_len + i][:, None],
      (next_pos + i)[:, None],
      cache,
      slot,
      jnp.array(valid),  # a copy: valid changes in the next iteration
      method=prefix_lm.PrefixLM.decode_step,
    )
    np.testing.assert_allclose(logits, full[rows, prefix_len + i], rtol=0, atol=atol)


def test_greedy_decoder_matches_naive_greedy(models, inputs):
  _, dual, _, params = models
  images, tokens, _, _, prefix_len = inputs
  p_width = int(prefix_len.max())
  p_mask = np.arange(p_width)[None] < prefix_len[:, None]
  p_tokens = np.where(p_mask, tokens[:, :p_width], 0)
  steps = 5
  out = np.asarray(decode.make_greedy_decoder(dual, steps, eos_id=1)(params, images, p_tokens, p_mask))
  width = p_width + steps
  forward = jax.jit(lambda images, t, m, ar: dual.apply({"params": params}, images, t, m, ar))
  for b in range(B):  # naive greedy: re-run the full forward on the growing (fixed-width) sequence
    seq = list(p_tokens[b, : prefix_len[b]])
    for i in range(steps):
      t = np.zeros((1, width), np.int32)
      t[0, : len(seq)] = seq
      m = np.arange(width)[None] < len(seq)
      ar = (np.arange(width)[None] >= prefix_len[b]) & m
      logits = forward(images[b : b + 1], t, m, ar)
      nxt = int(jnp.argmax(logits[0, len(seq) - 1]))
      assert out[b, i] == nxt, (b, i)
      if nxt == 1:
        assert np.all(out[b, i + 1 :] == 0)
        break
      seq.append(nxt)


def test_bad_image_shape_is_named(models):
  single, _, params, _ = models
  with pytest.raises(ValueError, match="image tower expects images"):
    single.apply(
      {"params": params},
      np.zeros((1, 32, 32)),
      np.zeros((1, 4), np.int32),
      np.ones((1, 4), bool),
      np.zeros((1, 4), bool),
    )
