"""Faults and bad inputs at the policy server (issue 18): a request can fail only itself (complete validation
before batching, per-row retry of a failed batch), error texts go only to their own client and quote
little, the prompt size is bounded before tokenization, disconnects are not errors, GET /healthz, the
API key (openpi's header), and the CLI's loopback default, --step and one-line errors."""

import logging
import os
import socket
import subprocess
import sys
import threading
import time
import urllib.request

import ml_collections
import numpy as np
import pytest
from websockets.sync.client import connect

from genvla_jax.inference import protocol
from genvla_jax.serving import client as client_lib, msgpack_numpy, server as server_lib
from test_serve import _Running

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
GOOD = "move to the red square"
OVER_LONG = GOOD + " zanzibar" * 30  # < max_prompt_chars, > max_text_len (40) tokens
HUGE = "zanzibar " * 1_100_000  # 9.9 MB: under the message limit, far over max_prompt_chars


class StandIn:
  """Deterministic policy stand-in (the policy protocol): action = (mean pixel / 255, prompt length) per
  row. Raises, naming the prompt, for prompts containing "poison" (a failure only the batched call finds);
  sleeps `delay`."""

  metadata = protocol.PolicyMetadata(horizon=2, action_dim=2)

  def __init__(self, delay=0.0):
    self.calls, self.delay = [], delay

  def reset(self):
    pass

  def prompt_spec(self):
    return None

  def act(self, images, prompts, *, states=None, full_width=False):
    assert full_width and states is None
    self.calls.append(list(prompts))
    time.sleep(self.delay)
    poisoned = [p for p in prompts if "poison" in p]
    if poisoned:
      raise ValueError(f"cannot act on {poisoned[0]!r}")
    actions = np.array([[[im.mean() / 255, len(p)]] * 2 for im, p in zip(images, prompts)], np.float32)
    return actions, np.ones(actions.shape, bool)


def _concurrently(port, prompts, image, **client_kwargs) -> list:
  """Each prompt from its own connection, sent together (barrier) -> the raw replies, in order."""
  replies, barrier = [None] * len(prompts), threading.Barrier(len(prompts))

  def worker(i):
    try:
      with client_lib.PolicyClient("127.0.0.1", port, **client_kwargs) as c:
        barrier.wait(30)
        replies[i] = c.send_raw(msgpack_numpy.packb({"image": image, "prompt": prompts[i]}))
    except Exception as e:
      replies[i] = e

  threads = [threading.Thread(target=worker, args=(i,)) for i in range(len(prompts))]
  for t in threads:
    t.start()
  for t in threads:
    t.join(300)
  return replies


def _actions(reply) -> np.ndarray:
  assert isinstance(reply, bytes), f"expected actions, got {reply!r:.300}"
  return msgpack_numpy.unpackb(reply)["actions"]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory, demo_dir, cache_dir):
  """A tiny demo policy trained for 2 steps, checkpoints at steps 1 and 2."""
  from conftest import tiny_config
  from genvla_jax import train

  config = tiny_config(demo_dir, cache_dir)
  config.train.update(steps=2, checkpoint_every=1)
  workdir = str(tmp_path_factory.mktemp("serve_run"))
  train.train(config, workdir, printer=lambda *a, **k: None)
  return workdir


@pytest.fixture(scope="module")
def policy(run_dir):
  from genvla_jax.inference import policy as policy_lib

  return policy_lib.Policy.from_workdir(run_dir)


@pytest.fixture(scope="module")
def image():
  from genvla_jax.data import demo

  return demo.render(demo.random_scene(np.random.default_rng(3)))


def _round(policy, prompts, image):
  """`prompts` sent at once to a server on the trained policy; a 1 s window batches what passes.
  -> (raw replies, server stats)."""
  from genvla_jax import serve

  srv = server_lib.PolicyServer(policy, serve.metadata(policy), max_batch=8, batch_window_ms=1000)
  running = _Running(srv)
  try:
    return _concurrently(srv.port, prompts, image), dict(srv.stats)
  finally:
    running.close()


def test_prompt_that_the_policy_refuses_fails_only_its_own_request(policy, image):
  """Bad case 7: '.' passed the old validation, raised inside the batched call and failed every client
  of the batch (59 of 63 in the probe)."""
  replies, stats = _round(policy, [GOOD, GOOD, GOOD, "."], image)
  for reply in replies[:3]:
    actions = _actions(reply)
    assert actions.shape == (1, 2) and np.all(np.isfinite(actions))
  assert isinstance(replies[3], str) and replies[3].startswith("bad request: prompt '.'"), replies[3][:300]
  assert stats["retried_batches"] == 0 and stats["max_batch_size"] <= 3  # refused before batching
  assert stats["errors"] == 1 and stats["requests"] == 4


def test_over_long_prompts_fail_alone_and_are_not_echoed(policy, image):
  """Bad case 8: a prompt over the token limit failed the whole batch, its full text went to every client
  of the batch, and a 9.9 MB prompt was tokenized (seconds on the only decoding thread)."""
  replies, stats = _round(policy, [GOOD, GOOD, GOOD, OVER_LONG, HUGE], image)
  for reply in replies[:3]:  # actions: no one else's error, no one else's text
    assert "zanzibar" not in str(reply)[:100000]
    assert _actions(reply).shape == (1, 2)
  long_reply, huge_reply = replies[3], replies[4]
  assert isinstance(long_reply, str) and long_reply.startswith("bad request: prompt"), long_reply[:300]
  assert "tokens" in long_reply and "max_text_len" in long_reply and len(long_reply) < 400
  assert isinstance(huge_reply, str) and "9900000 characters" in huge_reply and len(huge_reply) < 200
  assert stats["retried_batches"] == 0 and stats["errors"] == 2


def test_prompt_size_is_bounded_before_any_tokenization():
  """Bad case 8: the old parse accepted a prompt of any size and handed it to the tokenizer."""
  image = np.zeros((8, 8, 3), np.uint8)
  with pytest.raises(server_lib.RequestError, match="9900000 characters"):
    server_lib.parse_observation(msgpack_numpy.packb({"image": image, "prompt": HUGE}), 64)
  with pytest.raises(server_lib.RequestError, match="bytes"):
    server_lib.parse_observation(msgpack_numpy.packb({"image": image, "prompt": HUGE.encode()}), 64)
  with pytest.raises(server_lib.RequestError, match="at most 10"):
    server_lib.parse_observation(msgpack_numpy.packb({"image": image, "prompt": "x" * 11}), 64, max_prompt_chars=10)
  assert (
    server_lib.parse_observation(msgpack_numpy.packb({"image": image, "prompt": "x" * 10}), 64, max_prompt_chars=10)[1]
    == "x" * 10
  )


def test_validation_refuses_exactly_what_the_policy_preprocessing_refuses(policy, image):
  """The server's checks are the model input's: for prompts around the token limit, odd text and
  (for a template that writes the state) states, `validate` refuses iff `prepare_inputs` raises."""
  from genvla_jax.data import stats as stats_lib

  srv = server_lib.PolicyServer(policy, {})
  prompts = [GOOD + " red" * k for k in range(0, 20)] + [".", " . ", "...", "\x00", "é" * 30, "\u202e<>{}"]
  verdicts = [_agrees(srv, policy, image, p) for p in prompts]
  assert True in verdicts and False in verdicts  # both sides of the limit were tried
  with pytest.raises(server_lib.RequestError, match="cannot be tokenized"):  # text SentencePiece refuses
    srv.check_prompt("go \ud800")
  state_policy = _with_state_prompt(policy)
  srv = server_lib.PolicyServer(state_policy, {})
  assert srv.state_dim == 2
  for k in (0, 8, 12, 16):
    for state in ([0.0, 1.0], [-1e30, 1e30], [0.123, -7.0]):
      normalized = stats_lib.normalize(np.asarray([state], np.float32), state_policy.state_stats)
      _agrees(srv, state_policy, image, GOOD + " red" * k, state, normalized)


def _agrees(srv, policy, image, prompt, state=None, normalized=None) -> bool:
  """Asserts validate and prepare_inputs agree on one request; -> accepted."""
  message = {"image": image, "prompt": prompt, **({} if state is None else {"state": state})}
  try:
    srv.validate(msgpack_numpy.packb(message))
    accepted = True
  except server_lib.RequestError:
    accepted = False
  try:
    policy.prepare_inputs([image], [prompt], full_width=True, states=normalized)
    prepared = True
  except ValueError:
    prepared = False
  assert accepted == prepared, (prompt, state, accepted)
  return accepted


def _with_state_prompt(policy):
  """A shallow copy of `policy` whose prompt template writes the robot state (the demo data has one)."""
  import copy

  clone = copy.copy(policy)
  clone.config = ml_collections.ConfigDict(policy.config.to_dict())
  clone.config.data.prompt = "What action should the robot take to {instruction}? State: {state}"
  assert clone.state_stats is not None and clone.uses_state
  return clone


@pytest.fixture(scope="module")
def stand_in():
  policy = StandIn(delay=0.05)
  running = _Running(server_lib.PolicyServer(policy, {"action_horizon": 2}, max_batch=8, batch_window_ms=500))
  yield running, policy
  running.close()


def test_a_failure_inside_a_batch_is_retried_per_row_and_reported_only_to_its_client(stand_in):
  """Bad cases 7/8 for failures no check can foresee: the old server failed the whole batch and sent the
  failing row's text (here its prompt) to every client of the batch."""
  running, policy = stand_in
  policy.calls.clear()
  poison = "poison " + "y" * 1500
  image = np.full((8, 8, 3), 51, np.uint8)
  replies = _concurrently(running.srv.port, ["a", "bb", poison, "dddd"], image)
  assert any(len(c) > 1 and any("poison" in p for p in c) for c in policy.calls)  # it was batched
  for i in (0, 1, 3):
    np.testing.assert_allclose(_actions(replies[i]), [[0.2, [1, 2, 0, 4][i]]] * 2, rtol=1e-6)
  assert isinstance(replies[2], str) and replies[2].startswith("server error: ValueError: cannot act on 'poison")
  assert len(replies[2]) < 700  # quoted, not echoed in full
  assert running.srv.stats["retried_batches"] >= 1


def test_a_client_that_leaves_before_its_reply_is_a_disconnect_not_an_error(caplog):
  """Weak case: the old server logged 'inference failed' with a traceback and counted an error."""
  caplog.set_level(logging.INFO)
  running = _Running(server_lib.PolicyServer(StandIn(delay=0.5), {}, batch_window_ms=1))
  try:
    ws = connect(f"ws://127.0.0.1:{running.srv.port}", compression=None)
    ws.recv()
    ws.send(msgpack_numpy.packb({"image": np.zeros((4, 4, 3), np.uint8), "prompt": "go"}))
    ws.close()  # before the reply
    deadline = time.monotonic() + 20
    while running.srv.stats["disconnects"] < 1 and time.monotonic() < deadline:
      time.sleep(0.05)
    assert running.srv.stats["disconnects"] == 1 and running.srv.stats["errors"] == 0
    assert not [r for r in caplog.records if "inference failed" in r.getMessage()]
    with running.client() as c:  # still serving
      assert c.infer({"image": np.zeros((4, 4, 3), np.uint8), "prompt": "go"})["actions"].shape == (2, 2)
  finally:
    running.close()


def test_healthz_answers_200_on_the_websocket_port(stand_in):
  """Weak case: no health endpoint (the old server answered a plain GET with 426)."""
  running, _ = stand_in
  with urllib.request.urlopen(f"http://127.0.0.1:{running.srv.port}/healthz", timeout=10) as response:
    assert response.status == 200 and response.read() == b"ok\n"
  assert client_lib.healthy("127.0.0.1", running.srv.port)


def test_api_key_is_required_at_the_handshake_and_healthz_stays_open():
  """Weak case: no authentication. openpi's client sends `Authorization: Api-Key <key>`."""
  running = _Running(server_lib.PolicyServer(StandIn(), {"action_horizon": 2}, api_key="s3cret"))
  port, obs = running.srv.port, {"image": np.zeros((4, 4, 3), np.uint8), "prompt": "go"}
  try:
    for key in (None, "wrong"):
      with pytest.raises(client_lib.ServerError, match="HTTP 401"):
        client_lib.PolicyClient("127.0.0.1", port, api_key=key)
    assert running.srv.stats["unauthorized"] == 2
    with client_lib.PolicyClient("127.0.0.1", port, api_key="s3cret") as c:
      assert c.infer(obs)["actions"].shape == (2, 2)
    # what openpi's WebsocketClientPolicy(api_key=...) does
    with connect(
      f"ws://127.0.0.1:{port}", compression=None, max_size=None, additional_headers={"Authorization": "Api-Key s3cret"}
    ) as ws:
      assert msgpack_numpy.unpackb(ws.recv()) == {"action_horizon": 2}
    assert client_lib.healthy("127.0.0.1", port)
  finally:
    running.close()


def test_step_selects_the_served_checkpoint(run_dir):
  """--step keeps working: make_server (what the CLI runs) restores the asked-for step."""
  from genvla_jax import serve
  from genvla_jax.inference import policy as policy_lib
  import jax

  served = serve.make_server(run_dir, step=1, max_batch=4).policy.params
  same = jax.tree.map(
    lambda a, b: bool(np.array_equal(a, b)), served, policy_lib.Policy.from_workdir(run_dir, step=1).params
  )
  assert all(jax.tree.leaves(same))
  latest = jax.tree.map(lambda a, b: bool(np.array_equal(a, b)), served, policy_lib.Policy.from_workdir(run_dir).params)
  assert not all(jax.tree.leaves(latest))


def _serve_cli(*args, timeout=60):
  env = dict(os.environ, PYTHONPATH=ROOT, JAX_PLATFORMS="cpu")
  env.pop("GENVLA_API_KEY", None)
  return subprocess.run(
    [sys.executable, "-m", "genvla_jax.serve", *args],
    capture_output=True,
    text=True,
    timeout=timeout,
    cwd=ROOT,
    env=env,
    check=False,
  )


def test_cli_listens_on_loopback_by_default_and_documents_the_switch():
  """Weak case: the server listened on all interfaces by default, without authentication."""
  out = _serve_cli("--helpshort")
  text = " ".join((out.stdout + out.stderr).split())
  host_help = text[text.index("--host:") : text.index("--max_batch:")]
  assert "(default: '127.0.0.1')" in host_help and "--host=0.0.0.0" in host_help and "--api_key" in host_help
  assert "GENVLA_API_KEY" in text and "--max_prompt_chars" in text


def test_cli_mistakes_are_one_line_before_the_model_loads(tmp_path):
  """No such run directory, or a port already taken: `error: ...`, exit 2, no traceback."""
  out = _serve_cli(f"--checkpoint={tmp_path}/nope")
  assert out.returncode == 2 and out.stderr.strip().splitlines() == [
    f"error: --checkpoint={tmp_path}/nope: no such run directory"
  ], out.stderr[-2000:]
  with socket.create_server(("127.0.0.1", 0)) as taken:
    port = taken.getsockname()[1]
    out = _serve_cli(f"--checkpoint={tmp_path}", f"--port={port}")
  lines = out.stderr.strip().splitlines()
  assert out.returncode == 2 and len(lines) == 1 and lines[0].startswith(f"error: cannot listen on 127.0.0.1:{port}")
