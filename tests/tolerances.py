"""Numerical tolerances for the tests, derived from the dtype's precision and the size of the reduction, not
from what one machine happened to produce (XLA's CPU code differs between CPUs, so the low bits do too).

Two evaluations of the same math that group a float sum of n terms differently (another batch split, mesh,
collective, fusion, kernel or CPU) differ by rounding alone. The worst case is ~n * eps * sum|x_i| (Higham,
"Accuracy and Stability of Numerical Algorithms", 2nd ed., §4.2); the rounding errors are independent and of
both signs, so in practice the error is a random walk, ~eps * sqrt(n) * (the scale of the partial sums)
(Higham §2.8). `float_tol` uses the random-walk model: over ~1e6 compared elements its maximum is ~2 * eps *
sqrt(n) * scale, and the default safety 4 leaves another 2x for errors compounding through a network's layers.
Where the claim is exact equality (a resumed run, a replay of the same compiled function on the same inputs)
the tests compare with assert_array_equal instead: no tolerance, the computation is deterministic.
"""

import math

import jax
import numpy as np

from genvla_jax.training import sharding

EPS32 = float(np.finfo(np.float32).eps)
ADAM_EPS = 1e-8  # optax.adamw's default eps (training/optimizer.py does not set it)


def float_tol(dtype, reduction_size: int, scale: float = 1.0, safety: float = 4.0) -> tuple[float, float]:
  """-> (rtol, atol) for comparing two evaluations of the same `dtype` math that sum `reduction_size`
  terms in different orders: rtol = safety * eps * sqrt(n), atol = rtol * scale, where `scale` is the
  magnitude of the compared quantity (e.g. max|x| over the whole tree: elements that cancel to ~0 keep
  rounding noise of the size of their terms, not of their own value)."""
  rtol = safety * float(np.finfo(dtype).eps) * math.sqrt(max(int(reduction_size), 1))
  return rtol, rtol * float(scale)


def transformer_terms(config: dict, seq_len: int) -> int:
  """~ the float terms summed along the longest chain of reductions from a transformer stack's input to one
  of its outputs (config: a model config dict, e.g. config_lib.GEMMA_TINY): per layer the q/k/v projection,
  the output projection and the MLP's input (width terms each), the attention logits (head_dim), the
  attention-weighted sum (seq_len) and the MLP's output (mlp_dim). Successive reductions' rounding errors add
  like independent random walks, so their lengths add: float_tol(dtype, sum of the stages' terms)."""
  head_dim = config.get("head_dim") or config["width"] // config["num_heads"]
  return config["depth"] * (3 * config["width"] + head_dim + seq_len + config["mlp_dim"])


def paligemma_logits_atol(model_config, num_image_tokens: int, text_len: int, scale: float) -> float:
  """atol for a PaliGemma's text logits computed twice (ours vs transformers', float32): the reductions of the
  patch embedding, the tower, its projection, the decoder and the head over `num_image_tokens` + `text_len`
  positions; `scale`: max |logit|."""
  m = model_config
  terms = (
    m.img.patch_size**2 * 3
    + transformer_terms(m.img, num_image_tokens)
    + m.img.width
    + transformer_terms(m.llm, num_image_tokens + text_len)
    + m.llm.width
  )
  return float_tol(np.float32, terms, scale=scale)[1]


def tree_max_abs(tree) -> float:
  return max(float(np.abs(np.asarray(x, np.float64)).max(initial=0.0)) for x in jax.tree.leaves(tree))


def adam_ratio_bound(b1: float, b2: float, count: int) -> float:
  """max |m_hat / sqrt(v_hat)| of Adam after `count` steps, over all gradient sequences (Cauchy-Schwarz:
  m_hat and v_hat are weighted averages of g and g^2, weights w1 and w2 each summing to 1, so the ratio is
  at most sqrt(sum w1^2 / w2)); ~1.00 for b1=0.9, b2=0.95, 3 steps, at most 1.17 for any count."""
  k = np.arange(count)
  w1 = (1 - b1) * b1**k / (1 - b1**count)
  w2 = (1 - b2) * b2**k / (1 - b2**count)
  return float(np.sqrt(np.sum(w1**2 / w2)))


def adam_update_tol(lr: float, nu_hat, grad_atol: float, b1: float, b2: float, count: int, adam_eps=ADAM_EPS):
  """Per-element bound on how much one Adam update lr * m_hat / (sqrt(nu_hat) + eps) can differ between
  two runs whose gradients (as Adam sees them, after clipping) differ by at most `grad_atol` at every step:
  m_hat and sqrt(nu_hat) are weighted averages (weights summing to 1) of g and of |g| (in the root-mean-square
  sense), so each moves by at most grad_atol, and the update by at most
  lr * (1 + A) * grad_atol / (sqrt(nu_hat) + eps), A = adam_ratio_bound; and never by more than 2 * lr * A
  (both updates are at most lr * A). The second bound is what remains for an element whose gradient is
  rounding noise (|g| <~ grad_atol, e.g. an attention key bias, whose exact gradient is 0: softmax ignores
  a shift shared by all keys): Adam normalises that noise to a full-size step of either sign.
  `nu_hat`: the bias-corrected second moment that this update divided by (the reference run's, per element)."""
  a = adam_ratio_bound(b1, b2, count)
  return lr * np.minimum(2 * a, (1 + a) * grad_atol / (np.sqrt(nu_hat) + adam_eps))


def assert_within(actual, desired, atol, rtol: float = 0.0, name: str = ""):
  """|actual - desired| <= atol + rtol * |desired| elementwise, where `atol` may be an array (a per-element
  bound, e.g. from adam_update_tol); the message names the worst element and how many are off."""
  actual, desired = np.asarray(actual, np.float64), np.asarray(desired, np.float64)
  err, bound = np.abs(actual - desired), np.broadcast_to(atol + rtol * np.abs(desired), desired.shape)
  if actual.shape != desired.shape or not np.all(err <= bound):
    if actual.shape != desired.shape:
      raise AssertionError(f"{name}: shape {actual.shape} != {desired.shape}")
    worst = np.unravel_index(np.argmax(err - bound), err.shape)
    raise AssertionError(
      f"{name}: {int(np.sum(~(err <= bound)))} of {err.size} elements off; worst at {worst}: "
      f"|{actual[worst]:.9g} - {desired[worst]:.9g}| = {err[worst]:.3g} > {bound[worst]:.3g}"
    )


def by_path(tree) -> dict:
  """{"llm/layers/...": numpy array} of a (possibly sharded) tree."""
  flat = jax.tree_util.tree_flatten_with_path(jax.device_get(tree))[0]
  return {sharding.path_str(p): np.asarray(x) for p, x in flat}


def adam_moments(opt_state):
  """-> (count, {param path: nu}): the trained parameters' Adam state (training/optimizer.py's adamw)."""
  flat = by_path(opt_state)
  nu = {p.split("/nu/", 1)[1]: x for p, x in flat.items() if "/nu/" in p}
  prefix = next(p.split("/nu/", 1)[0] for p in flat if "/nu/" in p)
  return int(flat[prefix + "/count"]), nu


def trained_params_atol(adam_steps, b1: float, b2: float, reduction_size: int) -> dict:
  """{param path: per-element atol} for the parameters of two runs of the same Adam training whose
  gradients differ only by float32 summation order (another mesh, micro-batching, process layout).
  adam_steps: the reference run's [(lr, count, {path: nu})] after each step (nu after the update that used
  lr). Every gradient entry sums `reduction_size` terms: float_tol at the step's gradient scale (as Adam saw
  it: clipped; g_t^2 <= nu_hat * (1 - b2^t) / (1 - b2) bounds it); adam_update_tol turns that into a bound
  on each update; the bounds add up over the steps. Not covered, and negligible: weight decay
  (lr * wd * |dp|) and a parameter difference feeding back into later gradients (inside float_tol's margin).
  Parameters without Adam state (a frozen tower) get 0."""
  atol = {}
  for lr, count, nu in adam_steps:
    nu_hat = {k: v / (1 - b2**count) for k, v in nu.items()}
    g_max = max(float(np.sqrt(v.max(initial=0.0))) for v in nu_hat.values()) * math.sqrt((1 - b2**count) / (1 - b2))
    grad_atol = float_tol(np.float32, reduction_size, g_max)[1]
    for k, v in nu_hat.items():
      atol[k] = atol.get(k, 0.0) + adam_update_tol(lr, v, grad_atol, b1, b2, count)
  return atol


def assert_params_close(params, reference, atol_by_path: dict, steps: int):
  """Every parameter within its trained_params_atol, plus the rounding of p <- p - update: once per step,
  <= 1 ulp (eps * |p|) apart each time."""
  ref = by_path(reference)
  for path, x in by_path(params).items():
    assert_within(x, ref[path], atol_by_path.get(path, 0.0), rtol=steps * EPS32, name=path)
