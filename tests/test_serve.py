"""The policy server: a trained checkpoint served over websockets (openpi's protocol), fuzzing with bad
requests (every reply is an action or an error, the server never stops serving), and 16 concurrent
clients batched together."""

import asyncio
import threading

import numpy as np
import pytest
import websockets

from genvla_jax.inference import protocol
from genvla_jax.serving import client as client_lib, msgpack_numpy, server as server_lib
import tolerances


class _Running:
  """A PolicyServer on a free localhost port, in a background thread with its own event loop."""

  def __init__(self, srv, port=0):
    self.srv, self._ready, self._loop, self._port = srv, threading.Event(), None, port
    self._thread = threading.Thread(target=lambda: asyncio.run(self._main()), daemon=True)
    self._thread.start()
    assert self._ready.wait(300)

  async def _main(self):
    self._loop, self._stop, ready = asyncio.get_running_loop(), asyncio.Event(), asyncio.Event()
    task = asyncio.create_task(self.srv.serve("127.0.0.1", self._port, ready=ready, stop=self._stop))
    await ready.wait()
    self._ready.set()
    await task

  def client(self):
    return client_lib.PolicyClient("127.0.0.1", self.srv.port)

  def close(self):
    self._loop.call_soon_threadsafe(self._stop.set)
    self._thread.join(30)


class FakePolicy:
  """Deterministic stand-in (the policy protocol): action = (mean pixel / 255, prompt length) per row;
  records batch sizes."""

  metadata = protocol.PolicyMetadata(horizon=2, action_dim=2)

  def __init__(self):
    self.batch_sizes = []

  def reset(self):
    pass

  def prompt_spec(self):
    return None

  def act(self, images, prompts, *, states=None, full_width=False):
    assert full_width and states is None
    self.batch_sizes.append(len(images))
    actions = np.array([[[im.mean() / 255, len(p)]] * 2 for im, p in zip(images, prompts)], np.float32)
    return actions, np.ones(actions.shape, bool)


@pytest.fixture(scope="module")
def fake():
  policy = FakePolicy()
  running = _Running(
    server_lib.PolicyServer(
      policy, {"action_horizon": 2}, max_batch=16, batch_window_ms=20, max_image_side=512, max_message_bytes=4 * 2**20
    )
  )
  yield running, policy
  running.close()


def _obs(value=7, side=16, prompt="pick up the cube"):
  return {"image": np.full((side, side, 3), value, np.uint8), "prompt": prompt}


def test_bad_requests_get_errors_and_the_connection_keeps_serving(fake):
  running, _ = fake
  with running.client() as c:
    assert c.metadata == {"action_horizon": 2}
    bad = [
      b"\x00\xff garbage",
      msgpack_numpy.packb([1, 2, 3]),
      msgpack_numpy.packb({"img": 1}),
      msgpack_numpy.packb({"image": np.zeros((8, 8, 3), np.float32), "prompt": "x"}),
      msgpack_numpy.packb({"image": np.zeros((8, 8), np.uint8), "prompt": "x"}),
      msgpack_numpy.packb({"image": np.zeros((600, 8, 3), np.uint8), "prompt": "x"}),
      msgpack_numpy.packb({"image": np.zeros((8, 8, 3), np.uint8), "prompt": ""}),
      msgpack_numpy.packb({"image": np.zeros((8, 8, 3), np.uint8), "prompt": 5}),
      "a text frame",
    ]
    for message in bad:
      reply = c.send_raw(message)
      assert isinstance(reply, str) and reply.startswith("bad request"), reply
      good = c.infer(_obs(51))  # the same connection still serves
      np.testing.assert_allclose(good["actions"], [[0.2, 16]] * 2, rtol=tolerances.EPS32)  # float32 transport
    with pytest.raises(client_lib.ServerError, match="image must be uint8"):
      c.infer({"observation/image": np.zeros((4, 4, 3), np.int64), "prompt": "x"})
    reply = c.infer({"observation/image": np.zeros((4, 4, 3), np.uint8), "instruction": "abc", "state": [1.0]})
    assert reply["actions"].shape == (2, 2) and reply["valid"].all()  # openpi-style keys, extra keys ignored
  with running.client() as c:  # an oversized message closes that connection (1009) ...
    with pytest.raises(websockets.ConnectionClosed):
      c.send_raw(b"\x00" * (5 * 2**20))
  with running.client() as c:  # ... and the server keeps serving everyone else
    assert c.infer(_obs())["actions"].shape == (2, 2)
  assert running.srv.stats["errors"] >= len(bad) + 1


def test_state_is_parsed_and_checked_for_policies_that_take_it():
  image = np.zeros((4, 4, 3), np.uint8)
  message = msgpack_numpy.packb({"image": image, "prompt": "go", "observation/state": np.arange(3.0)})
  _, _, state = server_lib.parse_observation(message, 64, state_dim=3)
  assert state.dtype == np.float32 and state.tolist() == [0.0, 1.0, 2.0]
  assert server_lib.parse_observation(message, 64)[2] is None  # a policy without state ignores it
  for bad, match in [
    ({}, "takes the robot state"),
    ({"state": [1.0, 2.0]}, "3 finite numbers"),
    ({"state": [1.0, np.nan, 2.0]}, "3 finite numbers"),
    ({"state": "abc"}, "3 numbers"),
  ]:
    with pytest.raises(server_lib.RequestError, match=match):
      server_lib.parse_observation(msgpack_numpy.packb({"image": image, "prompt": "go", **bad}), 64, 3)


def test_sixteen_concurrent_clients_are_batched(fake):
  running, policy = fake
  policy.batch_sizes.clear()
  results, errors = {}, []

  def worker(i):
    try:
      with running.client() as c:
        results[i] = [c.infer(_obs(value=i, prompt="x" * (i + 1)))["actions"] for _ in range(3)]
    except Exception as e:
      errors.append(e)

  threads = [threading.Thread(target=worker, args=(i,)) for i in range(16)]
  for t in threads:
    t.start()
  for t in threads:
    t.join(60)
  assert not errors and len(results) == 16
  for i, replies in results.items():  # every client got its own answer back
    for actions in replies:
      np.testing.assert_allclose(actions, [[i / 255, i + 1]] * 2, rtol=tolerances.EPS32)  # float32 transport
  assert max(policy.batch_sizes) > 1 and all(s in (1, 2, 4, 8, 16) for s in policy.batch_sizes)


def test_serves_a_trained_checkpoint(tmp_path, demo_dir, cache_dir):
  from conftest import tiny_config
  from genvla_jax import serve, train
  from genvla_jax.data import demo
  from genvla_jax.inference import policy as policy_lib

  config = tiny_config(demo_dir, cache_dir)
  config.train.update(steps=2, checkpoint_every=2)
  train.train(config, str(tmp_path), printer=lambda *a, **k: None)
  policy = policy_lib.Policy.from_workdir(str(tmp_path))
  reference = policy_lib.Policy.from_workdir(str(tmp_path))
  running = _Running(server_lib.PolicyServer(policy, serve.metadata(policy)))
  try:
    image = demo.render(demo.random_scene(np.random.default_rng(3)))
    with running.client() as c:
      assert c.metadata["action_dim"] == 2 and c.metadata["action_horizon"] == 1
      assert c.metadata["state_dim"] == 0 and "state" not in c.metadata["observation"]  # the demo takes none
      assert c.metadata["observation_style"] == "genvla" and c.metadata["cameras"] == ["image"]
      assert set(c.metadata["observation"]) == {"image", "prompt"}
      reply = c.infer({"image": image, "prompt": "move to the red square"})
    want, valid = reference.act(image, "move to the red square")
    assert reply["actions"].shape == (1, 2) and reply["actions"].dtype == np.float32
    np.testing.assert_array_equal(reply["actions"], want)  # the same decoded tokens, the same numpy numbers
    assert reply["valid"].all() and valid.all()  # constrained decoding: every reply is a valid action
  finally:
    running.close()


def test_metadata_tells_clients_to_send_the_state():
  from genvla_jax import serve
  from genvla_jax.inference import protocol

  class WithState:
    metadata = protocol.PolicyMetadata(horizon=4, action_dim=7, state_dim=8, image_size=224, action_tokenizer="flow")

  meta = serve.metadata(WithState())
  assert meta["state_dim"] == 8 and meta["observation"]["state"].startswith("float32 [8]")
