"""Several cameras per observation (issue 22): images [B,C,H,W,3] (+ image_mask [B,C]) through the same towers,
their tokens concatenated camera-major in the prefix; a missing camera is masked out; one camera is today's
path, bit for bit; FLOP / memory accounting and the decoders know the token count; the policy acts."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from conftest import tiny_config
from genvla_jax import config_lib, config_schema, heads
from genvla_jax.inference import decode, flow_sampler, policy as policy_lib
from genvla_jax.models import build, prefix_lm, surgery
from genvla_jax.training import flops as flops_lib, plan as plan_lib, preflight, step as step_lib
import tolerances

IMG = dict(patch_size=8, width=32, depth=1, mlp_dim=64, num_heads=2)
LLM = dict(vocab_size=97, width=32, depth=2, mlp_dim=64, num_heads=4, num_kv_heads=1, head_dim=8)
SIZE, B, T = 16, 2, 10
P = (SIZE // 8) ** 2  # image tokens per camera
H, D, S = 3, 2, 2  # π0: action chunk, action size, state size
# float terms along the decoder's chain of reductions (two cameras' tokens + text), and the logits
LLM_TERMS = tolerances.transformer_terms(LLM, 2 * P + T) + LLM["width"]


@pytest.fixture(scope="module")
def models():
  single, dual = build.vla(IMG, LLM), build.vla(IMG, LLM, dual="copy")
  rng = jax.random.PRNGKey(1)
  return {
    "single": (single, surgery.init_params(single, rng, SIZE)),
    "dual": (dual, surgery.init_params(dual, rng, SIZE)),
  }


@pytest.fixture(scope="module")
def inputs():
  """Two cameras per row (uint8, as the pipeline ships them), prompts of 5 / 3 tokens + answers."""
  rng = np.random.default_rng(0)
  images = rng.integers(0, 256, (B, 2, SIZE, SIZE, 3), dtype=np.uint8)
  tokens = rng.integers(3, 97, (B, T)).astype(np.int32)
  prefix_len, answer_len = np.array([5, 3]), np.array([4, 6])
  pos = np.arange(T)[None]
  input_mask = pos < (prefix_len + answer_len)[:, None]
  ar_mask = (pos >= prefix_len[:, None]) & input_mask
  return images, np.where(input_mask, tokens, 0), input_mask, ar_mask, prefix_len


def _forward(model, params):
  return jax.jit(lambda *a, image_mask=None: model.apply({"params": params}, *a, image_mask=image_mask))


def _other_pixels(images, camera):
  out = images.copy()
  out[:, camera] = 255 - out[:, camera]
  return out


@pytest.mark.parametrize("kind", ["single", "dual"])
def test_one_camera_is_todays_path(models, inputs, kind):
  """[B,H,W,3] and [B,1,H,W,3] (with or without an all-present mask) compute the same bits: logits and decoding."""
  model, params = models[kind]
  images, tokens, input_mask, ar_mask, prefix_len = inputs
  one = images[:, 0]
  forward = _forward(model, params)
  base = np.asarray(forward(one, tokens, input_mask, ar_mask))
  np.testing.assert_array_equal(forward(one[:, None], tokens, input_mask, ar_mask), base)
  present = np.ones((B, 1), bool)
  np.testing.assert_array_equal(forward(one[:, None], tokens, input_mask, ar_mask, image_mask=present), base)
  p_width = int(prefix_len.max())
  p_mask = np.arange(p_width)[None] < prefix_len[:, None]
  p_tokens = np.where(p_mask, tokens[:, :p_width], 0)
  decoder = decode.make_greedy_decoder(model, 4, eos_id=1)
  out = np.asarray(decoder(params, one, p_tokens, p_mask))
  np.testing.assert_array_equal(decoder(params, one[:, None], p_tokens, p_mask, present), out)


def test_two_cameras_concatenate_their_tokens_and_a_missing_one_is_masked(models, inputs):
  model, params = models["single"]
  images, tokens, input_mask, ar_mask, _ = inputs
  v = {"params": params}
  x, full_input, n = model.apply(v, images, tokens, input_mask, method=prefix_lm.PrefixLM.embed_inputs)
  assert n == 2 * P and x.shape == (B, 2 * P + T, LLM["width"]) and full_input.shape == (B, 2 * P + T)
  # camera-major: the first P tokens are camera 0's, as it alone gives them (other batch: summation order)
  both = model.apply(v, images, method=prefix_lm.PrefixLM.encode_images)
  per_camera = [model.apply(v, images[:, c], method=prefix_lm.PrefixLM.encode_images) for c in (0, 1)]
  terms = 3 * IMG["patch_size"] ** 2 + tolerances.transformer_terms(IMG, P) + IMG["width"]  # patches, tower, projector
  _, atol = tolerances.float_tol(np.float32, terms, scale=float(jnp.abs(both).max()))
  np.testing.assert_allclose(both, jnp.concatenate(per_camera, axis=1), rtol=0, atol=atol)

  forward = _forward(model, params)
  base = np.asarray(forward(images, tokens, input_mask, ar_mask))
  changed = np.asarray(forward(_other_pixels(images, 1), tokens, input_mask, ar_mask))
  assert all(np.abs(changed[b] - base[b]).max() > 1e-4 for b in range(B))
  # row 0 lacks camera 1: its pixels change nothing at its real tokens (bit for bit: nothing attends to the
  # camera; its pixels are zeroed too, which also keeps the padding's outputs); row 1 has it and sees the change
  mask = np.array([[True, False], [True, True]])
  masked = np.asarray(forward(images, tokens, input_mask, ar_mask, image_mask=mask))
  changed = np.asarray(forward(_other_pixels(images, 1), tokens, input_mask, ar_mask, image_mask=mask))
  np.testing.assert_array_equal(changed[0][input_mask[0]], masked[0][input_mask[0]])
  assert np.abs(changed[1] - masked[1]).max() > 1e-4
  np.testing.assert_array_equal(masked[1], base[1])  # the mask is per row
  # a missing camera is no camera: row 0 computes what camera 0 alone gives (other lengths: summation order);
  # likewise with the first camera missing (the text's positions follow the real tokens)
  _, atol = tolerances.float_tol(np.float32, LLM_TERMS, scale=float(np.abs(base).max()))
  alone = np.asarray(forward(images[:, 0], tokens, input_mask, ar_mask))
  np.testing.assert_allclose(masked[0][input_mask[0]], alone[0][input_mask[0]], rtol=0, atol=atol)
  first_missing = np.asarray(forward(images, tokens, input_mask, ar_mask, image_mask=np.array([[0, 1], [1, 1]], bool)))
  alone = np.asarray(forward(images[:, 1], tokens, input_mask, ar_mask))
  np.testing.assert_allclose(first_missing[0][input_mask[0]], alone[0][input_mask[0]], rtol=0, atol=atol)
  with pytest.raises(ValueError, match=r"image_mask must be \[B,C\]"):
    forward(images, tokens, input_mask, ar_mask, image_mask=np.ones((B, 3), bool))


def test_dual_encoder_per_camera_frozen_tower_gets_no_gradient(models, inputs):
  model, params = models["dual"]
  images, tokens, input_mask, ar_mask, _ = inputs
  single_camera_shapes = jax.tree.map(jnp.shape, params)  # made from one camera: the same tree serves two

  def loss(p):
    return jnp.mean(model.apply({"params": p}, images, tokens, input_mask, ar_mask, np.ones((B, 2), bool)) ** 2)

  grads = jax.jit(jax.grad(loss))(params)
  assert jax.tree.map(jnp.shape, grads) == single_camera_shapes
  assert all(float(jnp.abs(g).max()) == 0.0 for g in jax.tree.leaves(grads["img_frozen"]))
  assert any(float(jnp.abs(g).max()) > 0.0 for g in jax.tree.leaves(grads["img"]))


def _pi0():
  model = build.vla(IMG, LLM, expert=dict(width=16, mlp_dim=32, action_dim=D, state_dim=S))
  return model, surgery.init_params(model, jax.random.PRNGKey(2), SIZE)


def test_pi0_two_cameras_train_step_cached_inference_and_sampling(inputs):
  model, params = _pi0()
  images, tokens, _, _, _ = inputs
  rng = np.random.default_rng(1)
  prompt = np.ones((B, 5), bool)
  prompt[1, 3:] = False
  mask = np.array([[True, True], [False, True]])  # row 1 lacks camera 0
  x_t = rng.standard_normal((B, H, D)).astype(np.float32)
  t, state = np.array([0.3, 0.8], np.float32), rng.standard_normal((B, S)).astype(np.float32)
  v = {"params": params}
  args = (images, tokens[:, :5], prompt)
  _, velocity = model.apply(v, *args, np.zeros_like(prompt), x_t, t, state, mask, method=model.flow_forward)
  cache, valid, nxt = model.apply(v, *args, H, mask, method=model.prefix_cache)
  assert valid.shape == (B, 2 * P + 5) and not valid[1, :P].any() and valid[1, P:].sum() == P + 3
  cached = model.apply(v, cache, valid, nxt, x_t, t, state, method=model.velocity)
  seq = 2 * P + 5 + 1 + H
  terms = 2 * tolerances.transformer_terms(LLM, seq) + LLM["width"] + 16
  _, atol = tolerances.float_tol(np.float32, terms, scale=float(np.abs(velocity).max()))
  np.testing.assert_allclose(cached, velocity, rtol=0, atol=atol)  # training forward == cached inference

  # one train step through the flow head with a two-camera batch
  batch = dict(
    image=images,
    image_mask=mask,
    tokens=tokens[:, :5],
    input_mask=prompt,
    ar_mask=np.zeros_like(prompt),
    loss_mask=np.zeros_like(prompt),
    is_robot=np.ones(B, bool),
    actions=rng.uniform(-1, 1, (B, H, D)).astype(np.float32),
    action_pad=np.zeros((B, H), bool),
    num_clipped=np.zeros(B, np.int32),
    state=state,
  )
  tx = optax.sgd(1e-2)
  train_step = jax.jit(step_lib.make_train_step(model, tx, lambda s: 1e-2, flow=config_lib.base_config().flow))
  new, metrics = train_step({"step": jnp.zeros((), jnp.int32), "params": params, "opt_state": tx.init(params)}, batch)
  assert np.isfinite(float(metrics["loss"])) and float(metrics["flow_mse"]) > 0
  assert float(jnp.abs(new["params"]["img"]["embedding"]["kernel"] - params["img"]["embedding"]["kernel"]).max()) > 0

  # sampling: actions of the chunk's shape; a missing camera's pixels change nothing
  sample = flow_sampler.make_flow_sampler(model, H, num_steps=3)
  noise = rng.standard_normal((B, H, D)).astype(np.float32)
  out = np.asarray(sample(params, *args, noise, state, mask))
  assert out.shape == (B, H, D) and np.isfinite(out).all()
  other = np.asarray(sample(params, _other_pixels(images, 0), *args[1:], noise, state, mask))
  np.testing.assert_array_equal(other[1], out[1])
  assert np.abs(other[0] - out[0]).max() > 0


def test_flops_and_memory_count_every_cameras_tokens():
  config = config_schema.defaults()
  config.model.update(image_size=SIZE, img=dict(config_lib.SIGLIP_TINY, **IMG), llm=dict(config_lib.GEMMA_TINY, **LLM))
  two = config.model.copy_and_resolve_references()
  two.num_cameras = 2
  assert build.num_image_tokens(config.model) == P and build.num_image_tokens(two) == 2 * P

  class Spy:  # an action head that records the decoder's sequence length FLOP counting gives it
    seen = []

    def extra_flops(self, model_config, batch, seq, action_horizon):
      self.seen.append(seq)
      return 0.0

  flops_lib.model_flops(two, 4, T, head=Spy())
  assert Spy.seen == [2 * P + T]
  # the towers and the projector run on every camera's frame: without a decoder, two cameras cost twice one
  no_llm = dict(depth=0, vocab_size=0)
  one_cam, two_cam = config.model.copy_and_resolve_references(), two.copy_and_resolve_references()
  one_cam.llm.update(no_llm)
  two_cam.llm.update(no_llm)
  assert flops_lib.model_flops(two_cam, 4, T, head=Spy()) == 2 * flops_lib.model_flops(one_cam, 4, T, head=Spy()) > 0
  # memory: the decoder's activations are those of a sequence with P more tokens; the tower's of twice the rows
  a_two = plan_lib.activation_estimate(two, T, 1, rows=4)
  assert a_two["llm"] == plan_lib.activation_estimate(config.model, T + P, 1, rows=4)["llm"]
  assert a_two["img"] == plan_lib.activation_estimate(config.model, T, 1, rows=8)["img"]


def test_decoding_two_cameras_matches_the_full_forwards_greedy_argmax(models, inputs):
  model, params = models["dual"]
  images, tokens, _, _, prefix_len = inputs
  mask = np.array([[True, False], [True, True]])
  p_width = int(prefix_len.max())
  p_mask = np.arange(p_width)[None] < prefix_len[:, None]
  p_tokens = np.where(p_mask, tokens[:, :p_width], 0)
  steps = 4
  out = np.asarray(decode.make_greedy_decoder(model, steps, eos_id=1)(params, images, p_tokens, p_mask, mask))
  width = p_width + steps
  forward = _forward(model, params)
  for b in range(B):  # naive greedy: the full forward on the growing (fixed-width) sequence
    seq = list(p_tokens[b, : prefix_len[b]])
    for i in range(steps):
      t = np.zeros((1, width), np.int32)
      t[0, : len(seq)] = seq
      m = np.arange(width)[None] < len(seq)
      ar = (np.arange(width)[None] >= prefix_len[b]) & m
      logits = forward(images[b : b + 1], t, m, ar, image_mask=mask[b : b + 1])
      nxt = int(jnp.argmax(logits[0, len(seq) - 1]))
      assert out[b, i] == nxt, (b, i)
      if nxt == 1:
        break
      seq.append(nxt)


@pytest.mark.parametrize("config_file", ["pi0_plus", "pi0_baseline"], ids=["tokens", "flow"])
def test_policy_acts_on_two_cameras(demo_dir, cache_dir, prepared, config_file):
  config = tiny_config(demo_dir, cache_dir, config_file=config_file)
  config.model.update(image_size=16, num_cameras=2)
  preflight.resolve_data_dims(config, prepared)  # π0: the data's action / state sizes
  params = surgery.init_params(build.from_config(config.model), jax.random.PRNGKey(0), 16)
  robot = prepared.robot[0]
  policy = policy_lib.Policy(config, params, {robot.name: robot.stats}, prepared.action_dim, config.tokenizer.path)
  assert isinstance(policy.head, heads.HEADS["tokens" if config_file == "pi0_plus" else "flow"])
  frames = np.random.default_rng(0).integers(0, 256, (2, 2, 40, 40, 3), dtype=np.uint8)  # resized to 16
  states = np.zeros((2, len(robot.stats["state"]["mean"])), np.float32) if policy.uses_state else None
  actions, valid = policy.act(frames, ["pick", "place"], states=states, image_mask=np.array([[1, 1], [1, 0]], bool))
  assert actions.shape == valid.shape == (2, config.tokenizer.action_horizon, prepared.action_dim)
  assert np.isfinite(actions).all()
  one, _ = policy.act(frames[0], "pick", states=None if states is None else states[0])  # one request [C,H,W,3]
  assert one.shape == actions.shape[1:]
  with pytest.raises(ValueError, match="sees 2 camera"):
    policy.act(frames[:, 0], ["pick", "place"], states=states)
