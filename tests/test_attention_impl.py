"""The attention switches (models/attention.py): config.model.attention_impl ("xla" | "dot_product" | "cudnn" |
"auto") and config.model.decode_attention ("xla" | "fused") compute what today's path computes.

- "dot_product" equals "xla" through a train-step-shaped forward/backward (prefix-LM masks, padding, multi-query
  and grouped-query heads; the ViT towers' attention changes formulation too) and through cached decoding;
- "fused" one-token decode equals today's decode (same greedy tokens; logits within float32 rounding), with
  Gemma 2's soft-capping and sliding window as well;
- what cannot run is refused at model build with the culprit named (cuDNN on CPU, in float32; soft-capping
  under jax.nn.dot_product_attention; unknown names); "auto" on CPU is "xla", counted.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from genvla_jax import config_lib
from genvla_jax.inference import decode
from genvla_jax.models import attention, build, masks, prefix_lm, surgery
from genvla_jax.training import preflight
import tolerances

IMG = dict(patch_size=8, width=32, depth=2, mlp_dim=64, num_heads=2)
LLMS = {
  "mqa": dict(vocab_size=97, width=32, depth=2, mlp_dim=64, num_heads=4, num_kv_heads=1, head_dim=8),
  "gqa": dict(vocab_size=97, width=32, depth=2, mlp_dim=64, num_heads=4, num_kv_heads=2, head_dim=8),
  # Gemma 2 options: soft-capped attention and final logits, a sliding window (4 < the sequence) on layer 0
  "gemma2": dict(
    vocab_size=97,
    width=32,
    depth=2,
    mlp_dim=64,
    num_heads=4,
    num_kv_heads=2,
    head_dim=8,
    query_pre_attn_scalar=8,
    post_norms=True,
    attn_logits_softcap=5.0,  # small: the cap bends these tiny logits (50 would be nearly linear)
    final_logits_softcap=30.0,
    sliding_window=4,
  ),
}
SIZE, B, T = 16, 2, 10
NUM_IMAGE = (SIZE // 8) ** 2
STEPS = 4


def terms(llm) -> int:
  """float terms along the decoder's chain of reductions (image + text positions) and the logits."""
  return tolerances.transformer_terms(llm, NUM_IMAGE + T + STEPS) + llm["width"]


def bf16_atol(reduction_size: int, scale: float) -> float:
  """tolerances.float_tol's atol for bfloat16 (numpy's finfo does not know it; jnp's does)."""
  return 4.0 * float(jnp.finfo(jnp.bfloat16).eps) * reduction_size**0.5 * scale


@functools.lru_cache(maxsize=None)
def model(llm: str, attention_impl="xla", decode_attention="xla"):
  return build.vla(IMG, LLMS[llm], attention_impl=attention_impl, decode_attention=decode_attention)


@functools.lru_cache(maxsize=None)
def params(llm: str):
  return surgery.init_params(model(llm), jax.random.PRNGKey(1), SIZE)


@pytest.fixture(scope="module")
def inputs():
  """Two rows of different prefix / answer lengths, right-padded (row 1 has padding)."""
  rng = np.random.default_rng(0)
  images = rng.uniform(-1, 1, (B, SIZE, SIZE, 3)).astype(np.float32)
  tokens = rng.integers(3, 97, (B, T)).astype(np.int32)
  prefix_len, answer_len = np.array([5, 3]), np.array([5, 4])
  pos = np.arange(T)[None]
  input_mask = pos < (prefix_len + answer_len)[:, None]
  ar_mask = (pos >= prefix_len[:, None]) & input_mask
  return images, np.where(input_mask, tokens, 0), input_mask, ar_mask, prefix_len


@functools.lru_cache(maxsize=None)
def loss_and_grads(llm: str, attention_impl: str):
  """A train-step-shaped function: mean cross-entropy over the answer tokens (next-token targets), its gradients."""
  m = model(llm, attention_impl)

  def loss(p, images, tokens, input_mask, ar_mask):
    logits = m.apply({"params": p}, images, tokens, input_mask, ar_mask)
    logp = jax.nn.log_softmax(logits[:, :-1])
    target = jnp.take_along_axis(logp, tokens[:, 1:, None], -1)[..., 0]
    weight = ar_mask[:, 1:] & input_mask[:, 1:]
    return -jnp.sum(target * weight) / jnp.sum(weight), logits

  return jax.jit(jax.value_and_grad(loss, has_aux=True))


@pytest.mark.parametrize("llm", ["mqa", "gqa"])
def test_dot_product_equals_xla_forward_and_gradients(llm, inputs):
  images, tokens, input_mask, ar_mask, _ = inputs
  p = params(llm)
  (loss_x, logits_x), grads_x = loss_and_grads(llm, "xla")(p, images, tokens, input_mask, ar_mask)
  (loss_d, logits_d), grads_d = loss_and_grads(llm, "dot_product")(p, images, tokens, input_mask, ar_mask)
  n = terms(LLMS[llm]) + tolerances.transformer_terms(IMG, NUM_IMAGE)  # towers' chain, then the decoder's
  _, atol = tolerances.float_tol(np.float32, n, scale=float(jnp.abs(logits_x).max()))
  np.testing.assert_allclose(logits_d, logits_x, rtol=0, atol=atol)
  np.testing.assert_allclose(loss_d, loss_x, rtol=0, atol=atol)
  # the backward pass doubles the chain; the scale is the whole tree's (gradients that cancel to ~0, like the
  # ViT's key bias under a softmax, keep rounding noise of the size of their terms, not of their own value)
  _, g_atol = tolerances.float_tol(np.float32, 2 * n, scale=tolerances.tree_max_abs(grads_x))
  for path, gx in jax.tree_util.tree_flatten_with_path(grads_x)[0]:
    np.testing.assert_allclose(_at(grads_d, path), gx, rtol=0, atol=g_atol, err_msg=jax.tree_util.keystr(path))
  assert float(jnp.abs(grads_x["img"]["blocks"]["MultiHeadDotProductAttention_0"]["query"]["kernel"]).max()) > 0


def _at(tree, path):
  for key in path:
    tree = tree[key.key]
  return tree


def test_switches_leave_the_parameter_tree_alone():
  shapes = {
    impl: jax.tree.map(lambda x: x.shape, surgery.init_params(model("gqa", impl), jax.random.PRNGKey(1), SIZE))
    for impl in ("xla", "dot_product")
  }
  assert shapes["xla"] == shapes["dot_product"]
  fused = surgery.init_params(model("gqa", "xla", "fused"), jax.random.PRNGKey(1), SIZE)
  jax.tree.map(np.testing.assert_array_equal, fused, params("gqa"))


@functools.lru_cache(maxsize=None)
def cached_steps(llm: str, attention_impl="xla", decode_attention="xla"):
  """prefill + decode_step, jitted for one model: (prefill(p, images, tokens, mask, cache_size), step(...))."""
  m = model(llm, attention_impl, decode_attention)
  prefill = jax.jit(
    lambda p, images, tokens, mask: m.apply(
      {"params": p}, images, tokens, mask, NUM_IMAGE + tokens.shape[1] + STEPS, method=prefix_lm.PrefixLM.prefill
    )
  )
  step = jax.jit(
    lambda p, tok, pos, cache, slot, valid: m.apply(
      {"params": p}, tok, pos, cache, slot, valid, method=prefix_lm.PrefixLM.decode_step
    )
  )
  return prefill, step


def teacher_forced_decode(llm, inputs, attention_impl="xla", decode_attention="xla"):
  """Prefill with each row's prompt, then STEPS one-token steps feeding the row's answer tokens -> the logits
  [STEPS + 1, B, V] (the prefill's last, then each step's)."""
  images, tokens, _, _, prefix_len = inputs
  prefill, step = cached_steps(llm, attention_impl, decode_attention)
  p_width = int(prefix_len.max())
  p_mask = np.arange(p_width)[None] < prefix_len[:, None]
  p_tokens = np.where(p_mask, tokens[:, :p_width], 0)
  logits, cache, next_pos = prefill(params(llm), images, p_tokens, p_mask)
  out = [logits]
  rows = np.arange(B)
  valid = np.concatenate([np.ones((B, NUM_IMAGE), bool), p_mask, np.zeros((B, STEPS), bool)], 1)
  for i in range(STEPS):
    slot = NUM_IMAGE + p_width + i
    valid[:, slot] = True
    tok = tokens[rows, np.minimum(prefix_len + i, T - 1)][:, None]
    # a fresh copy per step: JAX may alias a numpy buffer on CPU, and `valid` changes before the step has run
    logits, cache = step(params(llm), tok, (next_pos + i)[:, None], cache, jnp.int32(slot), valid.copy())
    out.append(logits)
  return np.stack(out)


@pytest.mark.parametrize("llm", ["mqa", "gqa"])
def test_dot_product_cached_decoding_equals_xla(llm, inputs):
  xla = teacher_forced_decode(llm, inputs)
  dot = teacher_forced_decode(llm, inputs, "dot_product")
  _, atol = tolerances.float_tol(np.float32, terms(LLMS[llm]), scale=float(np.abs(xla).max()))
  np.testing.assert_allclose(dot, xla, rtol=0, atol=atol)


@pytest.mark.parametrize("llm", ["mqa", "gqa", "gemma2"])
def test_fused_decode_equals_xla_decode(llm, inputs):
  xla = teacher_forced_decode(llm, inputs)
  fused = teacher_forced_decode(llm, inputs, "xla", "fused")
  np.testing.assert_array_equal(fused[0], xla[0])  # the prefill (T > 1) is not a one-token step: untouched
  _, atol = tolerances.float_tol(np.float32, terms(LLMS[llm]), scale=float(np.abs(xla).max()))
  np.testing.assert_allclose(fused, xla, rtol=0, atol=atol)
  assert float(np.abs(fused[1:] - xla[1:]).max()) > 0  # the steps really took the other formulation


@pytest.mark.parametrize("llm", ["mqa", "gemma2"])
def test_fused_decode_greedy_tokens_identical(llm, inputs):
  images, tokens, _, _, prefix_len = inputs
  p_width = int(prefix_len.max())
  p_mask = np.arange(p_width)[None] < prefix_len[:, None]
  p_tokens = np.where(p_mask, tokens[:, :p_width], 0)
  steps = 6
  outs = [
    np.asarray(decode.make_greedy_decoder(model(llm, "xla", d), steps, eos_id=1)(params(llm), images, p_tokens, p_mask))
    for d in ("xla", "fused")
  ]
  assert outs[0].shape == (B, steps)
  np.testing.assert_array_equal(outs[1], outs[0])


def test_one_query_equals_attend_with_softcap_gqa_and_a_fully_masked_row():
  rng = np.random.default_rng(3)
  b, s, n, k, hd = 3, 11, 6, 2, 8
  q = rng.normal(size=(b, 1, n, hd)).astype(np.float32)
  kk = rng.normal(size=(b, s, k, hd)).astype(np.float32)
  v = rng.normal(size=(b, s, k, hd)).astype(np.float32)
  mask = rng.uniform(size=(b, 1, s)) < 0.6
  mask[0, 0, 0] = True
  mask[2] = False  # a padding row: both give the uniform average
  for softcap in (None, 2.0):
    ref = attention.attend(q, kk, v, mask, 0.3, softcap)
    out = attention.one_query(q, kk, v, mask, 0.3, softcap)
    assert out.shape == (b, 1, n, hd)
    _, atol = tolerances.float_tol(np.float32, hd + s, scale=float(np.abs(v).max()))
    np.testing.assert_allclose(out, ref, rtol=0, atol=atol)
  np.testing.assert_allclose(out[2], np.broadcast_to(v[2].mean(0).repeat(n // k, 0), (1, n, hd)), atol=atol)
  # bf16 compute: today's path rounds the weights to bf16 before the weighted sum, one_query keeps float32
  q16, k16, v16 = (x.astype(jnp.bfloat16) for x in (q, kk, v))
  ref = np.float32(attention.attend(q16, k16, v16, mask, 0.3))
  out = np.float32(attention.one_query(q16, k16, v16, mask, 0.3))
  atol = bf16_atol(hd + s, scale=float(np.abs(v).max()))
  np.testing.assert_allclose(out, ref, rtol=0, atol=atol)
  with pytest.raises(ValueError, match="one query token"):
    attention.one_query(np.zeros((1, 2, n, hd)), kk, v, mask, 0.3)


def test_cudnn_is_refused_on_cpu_at_build():
  assert jax.default_backend() == "cpu"
  with pytest.raises(ValueError, match="'cudnn' needs an NVIDIA GPU") as err:
    build.vla(IMG, LLMS["mqa"], attention_impl="cudnn", dtype="bfloat16")
  assert "model.dtype" not in str(err.value)  # bf16 is fine: only the backend is named
  with pytest.raises(ValueError, match="bfloat16 or float16"):
    build.vla(IMG, LLMS["mqa"], attention_impl="cudnn")  # float32 as well
  config = config_lib.base_config("paligemma_224")
  config.model.attention_impl = "cudnn"
  with pytest.raises(ValueError, match="NVIDIA GPU"):
    build.from_config(config.model)
  # the trainer's checks, before any data is prepared: a line each, nothing built
  problems = preflight.settings_problems(config)
  assert [p for p in problems if "attention_impl" in p] == build.attention_problems(config.model)
  assert len(build.attention_problems(config.model)) == 2  # the backend, and float32


def test_auto_and_cudnn_resolution_on_a_gpu_backend(monkeypatch):
  """What "auto" picks and explicit "cudnn" refuses, with the backend reported as a GPU (the lowering is not run)."""
  monkeypatch.setattr(jax, "default_backend", lambda: "gpu")
  attention.FALLBACKS.clear()
  q32, k32 = np.zeros((2, 6, 4, 8), np.float32), np.zeros((2, 10, 2, 8), np.float32)
  q16, k16 = q32.astype(jnp.bfloat16), k32.astype(jnp.bfloat16)
  assert attention.resolve("auto", q16, k16, masked=True) == "cudnn"
  assert attention.resolve("auto", q32, k32, masked=True) == "xla"
  assert attention.resolve("auto", q16, k16, softcap=50.0) == "xla"
  assert attention.resolve("auto", q16[:, :5], k16, masked=True) == "xla"  # odd query length with a mask
  assert attention.resolve("auto", q16[:, :5], k16) == "cudnn"  # no mask (the towers): any length
  assert attention.resolve("auto", np.zeros((2, 6, 4, 12), jnp.bfloat16), k16) == "xla"  # head dim 12
  assert dict(attention.FALLBACKS) == {
    "dtype float32": 1,
    "soft-capped logits": 1,
    "odd length with a mask (queries 5, keys 10)": 1,
    "head dim 12": 1,
  }
  assert attention.resolve("cudnn", q16[:, :5], k16, masked=True) == "cudnn"  # a prefill may be odd
  with pytest.raises(ValueError, match=r"'cudnn' cannot take this call \(dtype float32\)"):
    attention.resolve("cudnn", q32, k32)
  for impl in ("xla", "dot_product"):
    assert attention.resolve(impl, q32, k32) == impl


@pytest.mark.skipif(jax.default_backend() != "gpu", reason="cuDNN flash attention runs on an NVIDIA GPU only")
def test_cudnn_equals_xla_on_a_gpu():
  """On a GPU (run with JAX_PLATFORMS=cuda): cuDNN's attention and its gradients equal the XLA path's in bf16,
  with a prefix-LM mask, padding and grouped-query heads."""
  rng = np.random.default_rng(0)
  b, t, n, k, hd = 2, 16, 4, 2, 64
  q, kk, v = (jnp.asarray(rng.normal(size=(b, t, h, hd)), jnp.bfloat16) for h in (n, k, k))
  lengths, prefix = np.array([16, 11]), np.array([6, 4])
  pos = np.arange(t)
  real = pos[None] < lengths[:, None]
  mask = masks.prefix_lm_mask(jnp.asarray(real), jnp.asarray((pos[None] >= prefix[:, None]) & real))

  def run(impl):
    def loss(q, kk, v):
      out = attention.attend(q, kk, v, mask, hd**-0.5, None, impl)
      return jnp.sum(out.astype(jnp.float32) ** 2), out

    return jax.jit(jax.value_and_grad(loss, argnums=(0, 1, 2), has_aux=True))(q, kk, v)

  (_, out_c), grads_c = run("cudnn")
  (_, out_x), grads_x = run("xla")
  atol = bf16_atol(hd + t, scale=float(jnp.abs(out_x.astype(jnp.float32)).max()))
  np.testing.assert_allclose(np.float32(out_c), np.float32(out_x), rtol=0, atol=atol)
  for gc, gx in zip(grads_c, grads_x):
    g_atol = bf16_atol(2 * (hd + t), scale=tolerances.tree_max_abs(np.float32(gx)))
    np.testing.assert_allclose(np.float32(gc), np.float32(gx), rtol=0, atol=g_atol)
  assert attention.resolve("auto", q, kk, masked=True) == "cudnn"


def test_cudnn_problems_on_a_gpu_name_dtype_head_dim_and_softcap():
  found = attention.problems("cudnn", "xla", "bfloat16", head_dims=(72, 256, 12), softcap=True, backend="gpu")
  text = "\n".join(found)
  assert "NVIDIA GPU" not in text
  assert "head dim 12" in text and "soft-capping" in text and "head dim 72" not in text
  assert attention.problems("cudnn", "fused", "bfloat16", head_dims=(64, 72), backend="gpu") == []


def test_dot_product_refuses_soft_capped_logits():
  with pytest.raises(ValueError, match="no logit soft-capping"):
    build.vla(IMG, LLMS["gemma2"], attention_impl="dot_product")
  build.vla(IMG, LLMS["gemma2"], attention_impl="auto")  # auto keeps soft-capped calls on "xla"


def test_unknown_names_are_refused():
  with pytest.raises(ValueError, match="attention_impl='flash' is unknown"):
    build.vla(IMG, LLMS["mqa"], attention_impl="flash")
  with pytest.raises(ValueError, match="decode_attention='pallas' is unknown"):
    build.vla(IMG, LLMS["mqa"], decode_attention="pallas")


def test_auto_on_cpu_is_xla_and_counted(inputs):
  images, tokens, input_mask, ar_mask, _ = inputs
  attention.FALLBACKS.clear()
  p = params("mqa")
  (loss_a, logits_a), _ = loss_and_grads("mqa", "auto")(p, images, tokens, input_mask, ar_mask)
  (loss_x, logits_x), _ = loss_and_grads("mqa", "xla")(p, images, tokens, input_mask, ar_mask)
  np.testing.assert_array_equal(logits_a, logits_x)
  assert attention.FALLBACKS["backend cpu"] >= 2  # the towers' and the decoder's attention, each traced


def test_config_fields_reach_the_model():
  config = config_lib.base_config("paligemma_224")
  assert (config.model.attention_impl, config.model.decode_attention) == ("xla", "xla")
  config.model.attention_impl, config.model.decode_attention = "dot_product", "fused"
  m = build.from_config(config.model)
  assert (m.attention_impl, m.decode_attention) == ("dot_product", "fused")
  decoding = build.for_decoding(m)
  assert (decoding.attention_impl, decoding.decode_attention) == ("dot_product", "fused")
