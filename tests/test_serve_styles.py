"""The server for existing robot runtimes (issue 22 item 3): observation key styles of openpi's example
runtimes (LIBERO, DROID, ALOHA) with several cameras per request, a missing camera masked (or named in the
error for a one-camera policy), a client that waits for a server still starting, and every batch size
compiled before the server listens."""

import socket
import threading
import time

import numpy as np
import pytest

from genvla_jax.inference import protocol
from genvla_jax.serving import client as client_lib, msgpack_numpy, observation_keys, server as server_lib, warmup
from test_serve import _Running

SIZE = 16  # the tiny policy's image size
PROMPT = "move to the red square"


@pytest.fixture(scope="module")
def two_camera_policy(demo_dir, cache_dir, prepared):
  """A tiny untrained two-camera policy (token head, constrained decoding: deterministic) whose prompt writes
  the robot state, so that every style's state keys are read."""
  import jax

  from conftest import tiny_config
  from genvla_jax.inference import policy as policy_lib
  from genvla_jax.models import build, surgery
  from genvla_jax.training import preflight

  config = tiny_config(demo_dir, cache_dir)
  config.model.update(image_size=SIZE, num_cameras=2)
  config.data.prompt = "What action should the robot take to {instruction}? State: {state}"
  config.tokenizer.max_text_len = 80
  preflight.resolve_data_dims(config, prepared)
  params = surgery.init_params(build.from_config(config.model), jax.random.PRNGKey(0), SIZE)
  robot = prepared.robot[0]
  policy = policy_lib.Policy(config, params, {robot.name: robot.stats}, prepared.action_dim, config.tokenizer.path)
  assert policy.uses_state and policy.metadata.state_dim >= 2
  return policy


def _server(policy, style, default_prompt=None, max_batch=1, **options):
  from genvla_jax import serve

  keys = serve.observation_keys_for(policy, style, default_prompt=default_prompt)
  return server_lib.PolicyServer(policy, serve.metadata(policy, keys), keys=keys, max_batch=max_batch, **options)


def _request(style, frames, state, prompt=PROMPT):
  """An observation as openpi's example runtime of `style` sends it (openpi examples/*/main.py, env.py)."""
  front, wrist = frames
  if style == "libero":
    return {"observation/image": front, "observation/wrist_image": wrist, "observation/state": state, "prompt": prompt}
  if style == "droid":
    return {
      "observation/exterior_image_1_left": front,
      "observation/wrist_image_left": wrist,
      "observation/joint_position": state[:-1],
      "observation/gripper_position": state[-1:],
      "prompt": prompt,
    }
  if style == "aloha":  # channels first, nested "images", no prompt (the server's default prompt)
    images = {"cam_high": front.transpose(2, 0, 1), "cam_left_wrist": wrist.transpose(2, 0, 1)}
    return {"images": images, "state": state}
  raise ValueError(style)


@pytest.mark.parametrize("style", ["libero", "droid", "aloha"])
def test_two_camera_request_in_each_style_gets_the_policys_actions(two_camera_policy, style):
  policy = two_camera_policy
  rng = np.random.default_rng(0)
  frames = rng.integers(0, 256, (2, 40, 40, 3), dtype=np.uint8)
  state = rng.uniform(-1, 1, policy.metadata.state_dim).astype(np.float32)
  running = _Running(_server(policy, style, default_prompt=PROMPT if style == "aloha" else None))
  try:
    with running.client() as c:
      assert c.metadata["observation_style"] == style and len(c.metadata["cameras"]) == 2
      sent = _request(style, frames, state)
      flat = {f"images/{k}" for k in sent.get("images", {})} | set(sent) - {"images"}
      assert set(c.metadata["observation"]) - {"prompt"} <= flat  # the metadata asks for what the runtime sends
      reply = c.infer(sent)
      # a camera the request lacks is masked out (openpi's runtimes may send fewer cameras than the policy sees)
      sent = _request(style, frames, state)
      (sent["images"] if style == "aloha" else sent).pop(next(k for k in sent.get("images", sent) if "wrist" in k))
      masked = c.infer(sent)
  finally:
    running.close()
  want, _ = policy.act(frames[None], [PROMPT], states=state[None], image_mask=np.ones((1, 2), bool))
  np.testing.assert_array_equal(reply["actions"], want[0])  # same frames, same decoded tokens, same numbers
  black = frames.copy()
  black[1] = 0
  want_masked, _ = policy.act(black[None], [PROMPT], states=state[None], image_mask=np.array([[True, False]]))
  np.testing.assert_array_equal(masked["actions"], want_masked[0])
  _check_what_act_gets(style, frames, state)


class Recorder:
  """A two-camera stand-in (unnamed cameras, as the tiny policy's) that records what act() gets."""

  def __init__(self, state_dim):
    self.metadata = protocol.PolicyMetadata(1, 1, state_dim=state_dim, image_size=SIZE, cameras=("", ""))
    self.calls = []

  def reset(self):
    pass

  def prompt_spec(self):
    return None

  def act(self, images, prompts, *, states=None, full_width=False, image_mask=None):
    self.calls.append((np.asarray(images), list(prompts), states, image_mask))
    return np.zeros((len(prompts), 1, 1), np.float32), np.ones((len(prompts), 1, 1), bool)


def _check_what_act_gets(style, frames, state):
  """The untrained policy's actions hardly depend on its frames: check the frames themselves, camera by
  camera, the mask, the state and the prompt that act() gets from a request of `style`."""
  from genvla_jax.data import preprocess

  recorder = Recorder(len(state))
  keys = observation_keys.resolve(style, recorder.metadata.cameras, default_prompt=PROMPT)
  running = _Running(server_lib.PolicyServer(recorder, {}, keys=keys, max_batch=1))
  try:
    with running.client() as c:
      c.infer(_request(style, frames, state))
      sent = _request(style, frames, state)
      if style == "aloha":
        del sent["images"]["cam_high"]
      else:
        del sent[keys.camera_keys[0][0]]
      c.infer(sent)
  finally:
    running.close()
  resized = np.stack([preprocess.resize_image(f, SIZE) for f in frames])
  (images, prompts, states, mask), (images_1, _, _, mask_1) = recorder.calls
  np.testing.assert_array_equal(images, resized[None])  # each camera in its place
  np.testing.assert_array_equal(states, state[None])  # DROID: joints + gripper, concatenated
  assert prompts == [PROMPT] and mask.tolist() == [[True, True]]
  assert mask_1.tolist() == [[False, True]] and not images_1[0, 0].any()  # primary camera missing: black, masked
  np.testing.assert_array_equal(images_1[0, 1], resized[1])


def test_cameras_of_different_sizes_are_resized_each(two_camera_policy):
  """Each camera of a request is resized to the policy's image size on its own (act()'s resize)."""
  from genvla_jax.data import preprocess

  policy = two_camera_policy
  rng = np.random.default_rng(1)
  front, wrist = rng.integers(0, 256, (48, 64, 3), dtype=np.uint8), rng.integers(0, 256, (24, 20, 3), dtype=np.uint8)
  state = np.zeros(policy.metadata.state_dim, np.float32)
  running = _Running(_server(policy, "libero"))
  try:
    with running.client() as c:
      reply = c.infer(_request("libero", (front, wrist), state))
      with pytest.raises(client_lib.ServerError, match=r"'observation/wrist_image': image must be uint8"):
        c.infer(_request("libero", (front, wrist.astype(np.float32)), state))
      with pytest.raises(client_lib.ServerError, match="observation needs one of the cameras 'observation/image'"):
        c.infer({"observation/state": state, "prompt": PROMPT})
  finally:
    running.close()
  frames = np.stack([preprocess.resize_image(f, SIZE) for f in (front, wrist)])
  want, _ = policy.act(frames[None], [PROMPT], states=state[None], image_mask=np.ones((1, 2), bool))
  np.testing.assert_array_equal(reply["actions"], want[0])


class OneCamera:
  """A one-camera stand-in: action = mean pixel / 255."""

  metadata = protocol.PolicyMetadata(horizon=1, action_dim=1)

  def reset(self):
    pass

  def prompt_spec(self):
    return None

  def act(self, images, prompts, *, states=None, full_width=False):
    actions = np.array([[[im.mean() / 255]] for im in images], np.float32)
    return actions, np.ones(actions.shape, bool)


def test_one_camera_policy_names_the_missing_key_and_takes_the_styles_primary_camera():
  keys = observation_keys.resolve("droid", [""])
  srv = server_lib.PolicyServer(OneCamera(), {}, keys=keys)
  wrist_only = {"observation/wrist_image_left": np.zeros((4, 4, 3), np.uint8), "prompt": "go"}
  with pytest.raises(server_lib.RequestError, match="observation needs 'observation/exterior_image_1_left'"):
    srv.validate(msgpack_numpy.packb(wrist_only))
  running = _Running(srv)
  try:
    with running.client() as c:
      with pytest.raises(client_lib.ServerError, match="'observation/exterior_image_1_left'"):
        c.infer(wrist_only)
      frame = np.full((4, 4, 3), 51, np.uint8)
      reply = c.infer({"observation/exterior_image_1_left": frame, "prompt": "go"})
      np.testing.assert_allclose(reply["actions"], [[0.2]], rtol=1e-6)
  finally:
    running.close()


def test_styles_resolve_by_camera_name_position_and_override():
  libero = observation_keys.resolve("libero", ["wrist_image", "image"])  # by name, in the policy's order
  assert libero.camera_keys == (("observation/wrist_image",), ("observation/image",))
  aloha = observation_keys.resolve("aloha", ["", ""])  # unnamed: the style's cameras in order
  assert aloha.cameras == ("cam_high", "cam_left_wrist") and aloha.camera_keys[1] == ("images/cam_left_wrist",)
  assert observation_keys.resolve("libero", ["front"]).camera_keys == (("observation/image",),)  # its primary
  with pytest.raises(ValueError, match="--camera_keys=front=REQUEST_KEY"):
    observation_keys.resolve("droid", ["front", "wrist"])
  mapped = observation_keys.resolve("droid", ["front", "wrist"], {"front": "a", "wrist": "b"})
  assert mapped.camera_keys == (("a",), ("b",))
  with pytest.raises(ValueError, match="no such camera"):
    observation_keys.resolve("libero", ["image"], {"wrist": "x"})
  with pytest.raises(ValueError, match="unknown observation style 'openvla'; styles: genvla, libero"):
    observation_keys.resolve("openvla", [""])
  genvla = observation_keys.resolve("genvla", ["front", "wrist"])  # today's keys, further cameras by name
  assert genvla.camera_keys == (("image", "observation/image", "front"), ("wrist",))
  assert observation_keys.parse_overrides("wrist=observation/wrist_image, a=b") == {
    "wrist": "observation/wrist_image",
    "a": "b",
  }
  droid = observation_keys.resolve("droid", [""]).describe(8)  # the metadata: what to send
  assert "observation/joint_position" in droid and "concatenated" in droid["observation/gripper_position"]


def _free_port() -> int:
  with socket.create_server(("127.0.0.1", 0)) as s:
    return s.getsockname()[1]


def test_client_waits_for_a_server_that_starts_later_and_times_out_naming_it():
  port = _free_port()
  with pytest.raises(client_lib.ServerUnavailable, match=f"127.0.0.1:{port} within 0.3 s"):
    client_lib.PolicyClient("127.0.0.1", port, wait_s=0.3)
  started = []
  threading.Thread(
    target=lambda: (time.sleep(1.0), started.append(_Running(server_lib.PolicyServer(OneCamera(), {"a": 1}), port))),
    daemon=True,
  ).start()
  begin = time.monotonic()
  try:
    with client_lib.PolicyClient("127.0.0.1", port, wait_s=60) as c:  # nothing listens for the first second
      assert time.monotonic() - begin >= 0.9 and c.get_server_metadata() == {"a": 1}
      assert c.infer({"image": np.zeros((4, 4, 3), np.uint8), "prompt": "go"})["actions"].shape == (1, 1)
    with client_lib.PolicyClient(f"ws://127.0.0.1:{port}", None, wait_s=0) as c:  # openpi's URI form
      assert c.metadata == {"a": 1}
  finally:
    for running in started:
      running.close()


def test_every_batch_size_is_compiled_before_the_server_listens(two_camera_policy):
  """With warm_up the first requests of each batch size trace and compile nothing."""
  policy = two_camera_policy
  srv = _server(policy, "libero", max_batch=2, warm_up=True)
  running = _Running(srv)  # returns once the port listens
  try:
    assert sorted(srv.warmup_seconds) == warmup.batch_sizes(2) == [1, 2]
    frames = np.random.default_rng(2).integers(0, 256, (2, 32, 32, 3), dtype=np.uint8)
    state = np.zeros(policy.metadata.state_dim, np.float32)
    with warmup.count_compiles() as counts, running.client() as c:
      reply = c.infer(_request("libero", frames, state))
    assert reply["server_timing"]["batch_size"] == 1
    assert counts == {"traces": 0, "compiles": 0, "cache_hits": 0}, counts
    srv.policy.reset()
    with warmup.count_compiles() as counts:  # a batch of 2 (what two clients at once get) as well
      srv._act([srv.validate(msgpack_numpy.packb(_request("libero", frames, state)))] * 2)
    assert counts["traces"] == 0 and counts["compiles"] == 0, counts
  finally:
    running.close()
  assert warmup.batch_sizes(5) == [1, 2, 4, 8] and warmup.batch_sizes(16) == [1, 2, 4, 8, 16]
