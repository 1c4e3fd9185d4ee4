"""The π0 baseline: flow-matching math, the action expert's attention structure (prefix never sees the
expert; training forward == cached inference), a sampler that recovers a memorised action chunk, and
the config trained end to end through the CLI pieces and the policy."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from genvla_jax import config_lib
from genvla_jax.inference import flow_sampler
from genvla_jax.models import build, flow_matching, surgery
from genvla_jax.training import step as step_lib
import tolerances

H, D, S = 3, 2, 2  # action chunk, action dim, state dim
IMG = dict(config_lib.SIGLIP_TINY, width=32, depth=1, mlp_dim=64, num_heads=2)
LLM = dict(config_lib.GEMMA_TINY, width=32, depth=2, mlp_dim=64, num_heads=2, head_dim=16, vocab_size=64)


def _model(state_dim=S, width=16):
  return build.vla(
    IMG,
    LLM,
    expert=dict(width=width, mlp_dim=2 * width, action_dim=D, state_dim=state_dim),
  )


def _inputs(batch=2, text=5, seed=0):
  rng = np.random.default_rng(seed)
  images = rng.integers(0, 256, (batch, 16, 16, 3), dtype=np.uint8)
  tokens = rng.integers(1, 64, (batch, text)).astype(np.int32)
  mask = np.ones((batch, text), bool)
  if batch > 1:
    mask[1, 3:] = False  # a right-padded prompt
  return images, tokens, mask


def test_flow_matching_math():
  a = jnp.array([[[0.5, -1.0]]])
  eps = jnp.array([[[2.0, 1.0]]])
  x_t, u = flow_matching.noisy_actions(a, eps, jnp.array([0.25]))
  np.testing.assert_allclose(x_t, [[[0.25 * 2.0 + 0.75 * 0.5, 0.25 * 1.0 - 0.75]]], rtol=1e-6)
  np.testing.assert_allclose(u, eps - a)
  t = flow_matching.sample_time(jax.random.PRNGKey(0), 10_000)
  assert 0.001 <= float(t.min()) and float(t.max()) <= 1.0
  assert abs(float(t.mean()) - (0.001 + 0.999 * 1.5 / 2.5)) < 0.01  # Beta(1.5, 1) mean 0.6
  # Euler on the exact single-point field v = (x - a) / t lands on a (the field is linear along the path)
  target = jnp.array([[[0.3, -0.7], [0.1, 0.9]]])
  out = flow_matching.euler_sample(
    lambda x, t: (x - target) / t[:, None, None], jnp.array([[[1.5, 0.2], [-0.4, 2.0]]]), 10
  )
  # 10 Euler updates of |x| <= 2 in float32: eps * sqrt(10) * 2
  np.testing.assert_allclose(out, target, rtol=0, atol=tolerances.float_tol(np.float32, 10, scale=2.0)[1])
  emb = flow_matching.time_embedding(jnp.array([0.0, 1.0]), 8)
  assert emb.shape == (2, 8) and np.allclose(emb[0, :4], 0.0) and np.allclose(emb[0, 4:], 1.0)


@pytest.fixture(scope="module")
def model_and_params():
  model = _model()
  return model, surgery.init_params(model, jax.random.PRNGKey(0), 16)


def test_param_tree_has_the_expert_without_an_embedding(model_and_params):
  _, params = model_and_params
  assert set(params) == {"img", "projector", "llm", "expert"}
  assert set(params["expert"]) == {"llm", "action_in", "time_mlp_in", "time_mlp_out", "action_out", "state_in"}
  assert "embedder" not in params["expert"]["llm"]
  assert params["expert"]["llm"]["layers"]["attn"]["q_einsum"].shape == (2, 2, 16, 16)  # [L,N,W,Hd]
  assert params["expert"]["action_out"]["kernel"].shape == (16, D)


def test_prefix_ignores_the_expert_and_training_equals_cached_inference(model_and_params):
  model, params = model_and_params
  images, tokens, mask = _inputs()
  ar = np.zeros_like(mask)
  rng = np.random.default_rng(1)
  x_t = rng.standard_normal((2, H, D)).astype(np.float32)
  t = np.array([0.3, 0.9], np.float32)
  state = rng.standard_normal((2, S)).astype(np.float32)

  @jax.jit
  def everything(p):
    v = {"params": p}
    logits, vel = model.apply(v, images, tokens, mask, ar, x_t, t, state, method=model.flow_forward)
    plain = model.apply(v, images, tokens, mask, ar)
    cache, valid, nxt = model.apply(v, images, tokens, mask, H, method=model.prefix_cache)
    cached = model.apply(v, cache, valid, nxt, x_t, t, state, method=model.velocity)
    _, short = model.apply(
      v, images[1:], tokens[1:, :3], mask[1:, :3], ar[1:, :3], x_t[1:], t[1:], state[1:], method=model.flow_forward
    )
    _, other = model.apply(v, images, tokens, mask, ar, x_t, t, state + 1.0, method=model.flow_forward)
    return logits, plain, vel, cached, short, other

  logits, plain, v, v_cached, v_short, v_other = map(np.asarray, everything(params))
  # each pair: the same math over other sequence lengths (masked slots, a cache): float32 summation order,
  # eps * sqrt(n) * max|output| with n the terms along the prefix (+ expert) chain of reductions
  seq = 4 + 5 + 1 + H  # image, prompt, state, actions
  prefix_terms = tolerances.transformer_terms(LLM, seq) + LLM["width"]
  expert_terms = prefix_terms + tolerances.transformer_terms(dict(LLM, width=16, mlp_dim=32), seq) + 16
  # the prefix never attends the expert (padded positions attend nothing: their outputs are arbitrary)
  _, atol = tolerances.float_tol(np.float32, prefix_terms, scale=np.abs(plain[mask]).max())
  np.testing.assert_allclose(logits[mask], plain[mask], rtol=0, atol=atol)
  _, atol = tolerances.float_tol(np.float32, expert_terms, scale=np.abs(v).max())
  np.testing.assert_allclose(v, v_cached, rtol=0, atol=atol)  # training forward == cached inference
  # padding: row 1's prompt padding changes nothing (same prompt without the padded slots, alone)
  np.testing.assert_allclose(v[1:], v_short, rtol=0, atol=atol)
  assert np.abs(v_other - v).max() > 1e-4  # the state token matters


def test_sampler_recovers_a_memorised_action_chunk():
  """Trained on one example (image, prompt, chunk), 10 Euler steps from any noise land on the chunk."""
  model = _model(state_dim=0, width=64)
  images, tokens, mask = _inputs(batch=1)
  target = np.array([[[0.6, -0.4], [0.2, 0.8], [-0.7, 0.1]]], np.float32)
  batch = 64
  data = dict(
    image=np.repeat(images, batch, 0),
    tokens=np.repeat(tokens, batch, 0),
    input_mask=np.repeat(mask, batch, 0),
    ar_mask=np.zeros((batch, 5), bool),
    loss_mask=np.zeros((batch, 5), bool),
    is_robot=np.ones(batch, bool),
    actions=np.repeat(target, batch, 0),
    action_pad=np.zeros((batch, H), bool),
    num_clipped=np.zeros(batch, np.int32),
  )
  params = surgery.init_params(model, jax.random.PRNGKey(1), 16)
  schedule = optax.warmup_cosine_decay_schedule(0.0, 3e-3, 50, 600, 1.5e-4)
  tx = optax.adam(schedule)
  train_step = jax.jit(step_lib.make_train_step(model, tx, schedule, seed=0, flow=config_lib.base_config().flow))
  state = {"step": jnp.zeros((), jnp.int32), "params": params, "opt_state": tx.init(params)}
  losses = []
  for _ in range(600):
    state, metrics = train_step(state, data)
    losses.append(float(metrics["flow_mse"]))
  assert np.mean(losses[-20:]) < 0.1 * np.mean(losses[:20])
  sample = flow_sampler.make_flow_sampler(model, H, num_steps=10)
  n = 16  # noise draws
  noise = np.random.default_rng(3).standard_normal((n, H, D)).astype(np.float32)
  inputs = (np.repeat(images, n, 0), np.repeat(tokens, n, 0), np.repeat(mask, n, 0), noise)
  out = np.asarray(sample(state["params"], *inputs))
  assert out.shape == (n, H, D)
  error = np.abs(out - target)  # measured: mean 0.014, max 0.086 (the noise spans ~[-2.5, 2.5])
  assert error.mean() < 0.03 and error.max() < 0.15, (error.mean(), error.max())
  # and the untrained model does not (the test can fail)
  assert np.abs(np.asarray(sample(params, *inputs)) - target).mean() > 0.2


def test_missing_state_is_named():
  model = _model()
  params = jax.eval_shape(lambda: surgery.init_params(model, jax.random.PRNGKey(0), 16))
  images, tokens, mask = _inputs()
  with pytest.raises(ValueError, match="state token"):
    jax.eval_shape(
      lambda p: model.apply(
        {"params": p},
        images,
        tokens,
        mask,
        np.zeros_like(mask),
        np.zeros((2, H, D), np.float32),
        np.ones(2, np.float32),
        method=model.flow_forward,
      ),
      params,
    )


def test_expert_config_needs_the_resolved_action_dim():
  from configs import pi0_baseline

  config = pi0_baseline.get_config("demo")
  with pytest.raises(ValueError, match="action_dim"):
    build.from_config(config.model)
  config.model.action_expert.action_dim = 2
  model = build.from_config(config.model)
  assert model.expert_config == dict(width=64, mlp_dim=256, action_dim=2, state_dim=0)
  assert dataclasses.replace(model, parent=None).encoder.dual is None
  full = pi0_baseline.get_config()
  assert (full.model.action_expert.width, full.model.action_expert.mlp_dim) == (1024, 4096)
  assert full.tokenizer.action_horizon == 50 and full.flow.num_steps == 10
  assert full.data.robot_fraction == 1.0 and full.data.instruction_aug.prob == 0.5
