"""A websocket policy server speaking openpi's protocol, with batching of concurrent requests.

Protocol (openpi's `WebsocketPolicyServer` / `WebsocketClientPolicy`): on connect the server sends the
metadata (a msgpack map); then each binary message from the client is one observation map
(msgpack_numpy.py) and gets one reply: the action map, or — when the request is bad — a text message
with the error (openpi's clients raise it). Unlike openpi's server, a bad request does not close the
connection: the next request is served.

The policy is an `inference.protocol.Policy`; the server reads its `metadata` (the state size, the image
size) and `prompt_spec()` (to check prompts) and calls `reset()` + `act(..., full_width=True)` (with
`image_mask` for several cameras); nothing else.

Observation: where the cameras, the state and the prompt are is the server's KeyMap
(serving/observation_keys.py: a style — genvla, libero, droid, aloha — resolved for the policy's cameras).
Default (genvla, one camera): {"image" or "observation/image": uint8 [H,W,3], "prompt" or "instruction":
str, and for policies that take the robot state (`metadata.state_dim` > 0: π0's state token, prompts that
write it) "state" or "observation/state": float [S] in the robot's units}; other keys are ignored.
Frames may also come channels first, [3,H,W]. A policy with several cameras gets act(images
[B,C,S,S,3], image_mask [B,C]): each camera of a request resized to the policy's image size S (the resize
act() would do), a camera the request lacks black and masked out.
Reply: {"actions": float32 [H_chunk, D] in the robot's units,
"valid": bool [H_chunk, D] (False: the field did not parse and holds the fallback; with constrained
decoding, the default, never), "server_timing": {"infer_ms", "batch_size"}}.

Requests arriving while the model is busy, or within `batch_window_ms` of each other, are decoded as one
batch (up to `max_batch`; padded to the next power of two, so each batch size compiles once; prompts
use the full max_text_len). With `warm_up`, `serve` compiles every such size before it listens
(serving/warmup.py), so no request of an episode waits for a compilation. Every batch starts with
`policy.reset()`: its rows come from different clients, so nothing of a previous call (the trained
policy's previous-action drafts) carries over.

One client cannot fail another's request:
- every request is validated completely before it joins a batch (`PolicyServer.validate`): message and
  image shape/dtype/size, prompt size in characters (`max_prompt_chars`, checked before any text
  processing), the robot state when the policy takes it, and then the policy's own prompt preprocessing
  (`PromptCheck` of its `prompt_spec()`: template, tokenization, length in tokens against max_text_len);
- should a batch still fail, its requests are retried one by one, so a request that fails fails alone;
- an error reply goes only to the client whose request caused it, and comes from a call on that
  request alone; it quotes at most QUOTE_CHARS characters of the client's prompt.

Also: `GET /healthz` on the same port answers 200 "ok" (no key needed); with `api_key` every websocket
handshake must carry the header `Authorization: Api-Key <key>` (what openpi's client sends) or is
refused with 401. A client that goes away before its reply is counted in `stats["disconnects"]`, not
as an error.
"""

import asyncio
import concurrent.futures
import dataclasses
import hmac
import http
import logging
import pickle
import time

import numpy as np
import websockets
from websockets.asyncio.server import serve
from websockets.frames import CloseCode

from genvla_jax.data import preprocess, stats as stats_lib
from genvla_jax.inference import protocol
from genvla_jax.serving import msgpack_numpy, observation_keys, warmup
from genvla_jax.tokenizers import prompt as prompt_lib

DEFAULT_MAX_PROMPT_CHARS = 2000  # robot instructions are a sentence; the token limit is checked after this
QUOTE_CHARS = 60  # at most this much of a client's prompt is quoted back in an error
MAX_ERROR_CHARS = 500  # longest error text sent to a client
HEALTH_PATH = "/healthz"


class RequestError(ValueError):
  """A bad request: answered, to its own client only, as 'bad request: <message>'."""


def quote(text: str, limit: int = QUOTE_CHARS) -> str:
  """repr(text), cut to `limit` characters (then noting the full length): never a huge echo."""
  if len(text) <= limit:
    return repr(text)
  return f"{text[:limit]!r}... ({len(text)} characters)"


def _clip(text: str, limit: int = MAX_ERROR_CHARS) -> str:
  return text if len(text) <= limit else text[:limit] + f"... ({len(text)} characters)"


@dataclasses.dataclass
class Request:
  """One validated observation: per policy camera (KeyMap order) its frame uint8 [H,W,3] or None (not in
  the request: masked out), the instruction, the robot state float32 [state_dim] or None."""

  frames: list
  prompt: str
  state: np.ndarray | None

  @property
  def image_mask(self) -> list[bool]:
    return [f is not None for f in self.frames]


ONE_CAMERA = observation_keys.resolve(observation_keys.DEFAULT_STYLE, [""])


def parse_observation(
  message, max_image_side: int, state_dim: int = 0, max_prompt_chars: int = DEFAULT_MAX_PROMPT_CHARS
) -> tuple[np.ndarray, str, np.ndarray | None]:
  """One client message in the genvla style for a one-camera policy -> (image uint8 [H,W,3], instruction,
  state float32 [state_dim] or None); see parse_request."""
  request = parse_request(message, ONE_CAMERA, max_image_side, state_dim, max_prompt_chars)
  return request.frames[0], request.prompt, request.state


def parse_request(
  message,
  keys: observation_keys.KeyMap,
  max_image_side: int,
  state_dim: int = 0,
  max_prompt_chars: int = DEFAULT_MAX_PROMPT_CHARS,
  image_size: int = 0,
) -> Request:
  """One client message -> Request, reading the keys of `keys` (serving/observation_keys.py);
  RequestError names what is wrong and the request key it is about. Frames: uint8 [H,W,3], or [3,H,W]
  (channels first, as openpi's ALOHA runtime sends them). With several cameras a camera the request lacks
  is masked out (at least one must be there); with one it is an error. `state_dim` > 0: the policy takes
  the robot state, which the message must carry. A prompt over `max_prompt_chars` characters is refused
  here, before any text processing. `image_size` 0 (a policy without a fixed size): one request's
  cameras must share a size (otherwise each is resized to `image_size`)."""
  if isinstance(message, str):
    raise RequestError("send observations as binary msgpack messages, not text")
  try:
    obs = msgpack_numpy.unpackb(message)
  except Exception as e:  # (msgpack raises many kinds on garbage)
    raise RequestError(f"message is not msgpack-numpy: {type(e).__name__}: {_clip(str(e), 200)}") from e
  if not isinstance(obs, dict):
    raise RequestError(f"observation must be a map, got {type(obs).__name__}")
  obs = _str_keys(obs)
  found = [_lookup(obs, k) for k in keys.camera_keys]
  _, prompt = _lookup(obs, keys.prompt_keys)
  if prompt is None:
    prompt = keys.default_prompt
  missing = [] if any(v is not None for _, v in found) else [_either(keys.camera_keys[0])]
  if keys.num_cameras > 1 and missing:
    missing = [f"one of the cameras {', '.join(repr(k[0]) for k in keys.camera_keys)}"]
  if prompt is None:
    missing.append(_either(keys.prompt_keys))
  if missing:
    raise RequestError(f"observation needs {' and '.join(missing)}; got keys [{', '.join(_key_list(obs))}]")
  prompt = _parse_prompt(prompt, max_prompt_chars)
  frames = [None if v is None else _check_image(v, k, max_image_side) for k, v in found]
  if not image_size:
    sizes = {f.shape for f in frames if f is not None}
    if len(sizes) > 1:
      raise RequestError(f"this policy takes its cameras at one size; got {sorted(s[:2] for s in sizes)}")
  return Request(frames, prompt, _parse_state(obs, keys.state_keys, state_dim))


def _str_keys(obs: dict) -> dict:
  return {
    (k.decode("utf-8", "replace") if isinstance(k, bytes) else k): (_str_keys(v) if isinstance(v, dict) else v)
    for k, v in obs.items()
  }


def _find(obs: dict, key: str):
  """obs[key], else the path `key` ("images/cam_high") through nested maps, else None."""
  if key in obs:
    return obs[key]
  head, sep, rest = key.partition("/")
  if sep and isinstance(obs.get(head), dict):
    return _find(obs[head], rest)
  return None


def _lookup(obs: dict, alternatives) -> tuple[str, object]:
  """-> (the first of `alternatives` the observation has, its value), else (first alternative, None)."""
  for key in alternatives:
    value = _find(obs, key)
    if value is not None:
      return key, value
  return alternatives[0], None


def _either(alternatives) -> str:
  first, *others = alternatives
  return repr(first) + (f" (or {' or '.join(repr(o) for o in others)})" if others else "")


def _key_list(obs: dict, limit: int = 20) -> list[str]:
  keys = []
  for k, v in obs.items():
    keys += [f"{k}/{n}" for n in v] if isinstance(v, dict) else [str(k)]
  return sorted(quote(k, 40) for k in keys)[:limit]


def _parse_prompt(prompt, max_chars: int) -> str:
  """-> the prompt as a non-blank str of at most `max_chars` characters (length checked first)."""
  if isinstance(prompt, bytes):
    if len(prompt) > 4 * max_chars:  # 4 bytes per character at most in UTF-8
      raise RequestError(f"prompt of {len(prompt)} bytes: this server takes at most {max_chars} characters")
    prompt = prompt.decode("utf-8", "replace")
  if not isinstance(prompt, str):
    raise RequestError(f"prompt must be a non-empty string, got {type(prompt).__name__}")
  if len(prompt) > max_chars:
    raise RequestError(
      f"prompt of {len(prompt)} characters: this server takes at most {max_chars} (--max_prompt_chars)"
    )
  if not prompt.strip():
    raise RequestError("prompt must be a non-empty string")
  return prompt


def _check_image(image, key: str, max_image_side: int) -> np.ndarray:
  """-> the frame as uint8 [H,W,3] (a [3,H,W] one transposed); RequestError naming `key` otherwise."""
  ok = isinstance(image, np.ndarray) and image.dtype == np.uint8 and image.ndim == 3
  if ok and image.shape[2] != 3 and image.shape[0] == 3:
    image = np.ascontiguousarray(image.transpose(1, 2, 0))  # channels first (openpi's ALOHA runtime)
  if not ok or image.shape[2] != 3:
    what = f"{image.dtype} {image.shape}" if isinstance(image, np.ndarray) else type(image).__name__
    raise RequestError(f"{key!r}: image must be uint8 [H,W,3] (or [3,H,W]), got {what}")
  if max(image.shape[:2]) > max_image_side or min(image.shape[:2]) < 1:
    raise RequestError(f"{key!r}: image of {image.shape[0]}x{image.shape[1]} pixels: sides must be 1..{max_image_side}")
  return image


def _parse_state(obs: dict, parts, state_dim: int) -> np.ndarray | None:
  """The state: the values of `parts` (each a tuple of alternative keys) concatenated."""
  if not state_dim:
    return None
  found = [_lookup(obs, alternatives) for alternatives in parts]
  if any(v is None for _, v in found):
    send = " + ".join(_either(alternatives) for alternatives in parts)
    raise RequestError(f"this policy takes the robot state: send {send}, {state_dim} numbers")
  try:
    state = np.concatenate([np.asarray(v, np.float32).reshape(-1) for _, v in found])
  except (TypeError, ValueError) as e:
    raise RequestError(f"state must be {state_dim} numbers: {_clip(str(e), 200)}") from e
  if state.shape != (state_dim,) or not np.all(np.isfinite(state)):
    what = " + ".join(f"{k!r}" for k, _ in found)
    raise RequestError(f"state ({what}) must be {state_dim} finite numbers, got {_clip(str(state.tolist()), 200)}")
  return state


class PromptCheck:
  """The policy's own prompt preprocessing for ONE request, without building a batch, from its
  `prompt_spec()`: the prompt template (`preprocess.robot_prompt`, with the normalized state for
  templates that write it), the tokenizer (`prompt.encode_prefix`, what `prompt.build_prompt` writes)
  and the token limit. A prompt it accepts is one `policy.act` preprocesses without error
  (tests/test_faults_serve.py)."""

  def __init__(self, spec: protocol.PromptSpec):
    self.template, self.separator, self.max_len = spec.template, spec.separator, int(spec.max_text_len)
    # an own copy: checks run on the event loop while the decoding thread tokenizes with the policy's
    self.tokenizer = pickle.loads(pickle.dumps(spec.tokenizer))
    self.state_stats = spec.state_stats

  def __call__(self, instruction: str, state=None) -> int:
    """-> the prompt's length in tokens; RequestError when the policy would refuse it."""
    normalized = None
    if self.state_stats is not None and state is not None:
      normalized = stats_lib.normalize(state, self.state_stats)  # as Policy.act does before the prompt
    try:
      text = preprocess.robot_prompt(self.template, instruction, normalized)
    except ValueError as e:
      raise RequestError(f"prompt {quote(instruction)} refused: {_clip(str(e), 200)}") from None
    try:
      n = len(prompt_lib.encode_prefix(self.tokenizer, text, self.separator))
    except Exception as e:  # (whatever the tokenizer refuses)
      raise RequestError(f"prompt {quote(instruction)} cannot be tokenized ({type(e).__name__})") from None
    if n > self.max_len:
      raise RequestError(
        f"prompt {quote(instruction)} takes {n} tokens in the policy's prompt; at most "
        f"{self.max_len} fit (tokenizer.max_text_len): shorten the instruction"
      )
    return n


class PolicyServer:
  """Serves `policy` (an inference.protocol.Policy: inference.policy.Policy, or a stand-in).

  stats: requests (messages received), errors (bad requests, failed inferences, oversized messages),
  disconnects (clients gone before their reply, or without a closing handshake), unauthorized (refused
  handshakes), batches, max_batch_size, retried_batches (batches that failed and were retried per row)."""

  def __init__(
    self,
    policy: protocol.Policy,
    metadata: dict,
    max_batch: int = 16,
    batch_window_ms: float = 2.0,
    max_image_side: int = 1024,
    max_message_bytes: int = 16 * 2**20,
    max_prompt_chars: int = DEFAULT_MAX_PROMPT_CHARS,
    api_key: str | None = None,
    keys: observation_keys.KeyMap | None = None,
    warm_up: bool = False,
  ):
    """`keys`: where requests hold the policy's cameras, state and prompt (serving/observation_keys.py;
    default: the genvla style for `policy.metadata.cameras`); its cameras are the ones act() gets, in
    order. `warm_up`: `serve` compiles every batch size (`warm_up()`) before it listens."""
    self.policy, self.metadata = policy, dict(metadata)
    self.max_batch, self.window = max_batch, batch_window_ms / 1000
    self.max_image_side, self.max_message_bytes = max_image_side, max_message_bytes
    self.max_prompt_chars = max_prompt_chars
    self._authorization = f"Api-Key {api_key}" if api_key else None
    self.stats = {
      "requests": 0,
      "errors": 0,
      "disconnects": 0,
      "unauthorized": 0,
      "batches": 0,
      "max_batch_size": 0,
      "retried_batches": 0,
    }
    self._queue: asyncio.Queue | None = None
    self._executor = concurrent.futures.ThreadPoolExecutor(1)  # one decoding thread: the model is one
    self.state_dim = policy.metadata.state_dim  # > 0: requests must carry the robot state
    self.image_size = int(policy.metadata.image_size)  # 0: frames go to act() at the size they came
    self.keys = keys or observation_keys.resolve(observation_keys.DEFAULT_STYLE, policy.metadata.cameras)
    spec = policy.prompt_spec()
    self.check_prompt = PromptCheck(spec) if spec is not None else None  # None: no text prompt to check
    self.warm_up_on_start, self.warmup_seconds = warm_up, None  # {batch size: seconds} once warmed up

  def validate(self, message) -> Request:
    """A client message -> the Request that the policy's preprocessing accepts, or RequestError:
    everything a request can get wrong is found here, before it joins a batch."""
    request = parse_request(
      message, self.keys, self.max_image_side, self.state_dim, self.max_prompt_chars, self.image_size
    )
    if self.check_prompt is not None:
      self.check_prompt(request.prompt, request.state)
    return request

  def warm_up(self) -> dict[int, float]:
    """Runs the policy once at every batch size the server pads to (warmup.batch_sizes), so that no
    request waits for a compilation; -> {batch size: seconds}. Not counted in `stats`."""
    side = self.image_size or 64
    frames = [np.zeros((side, side, 3), np.uint8)] * self.keys.num_cameras
    state = np.zeros(self.state_dim, np.float32) if self.state_dim else None
    request = Request(frames, warmup.PROMPT, state)
    if self.check_prompt is not None:
      self.check_prompt(request.prompt, state)
    seconds = {}
    for size in warmup.batch_sizes(self.max_batch):
      start = time.perf_counter()
      self._act([request] * size)
      seconds[size] = time.perf_counter() - start
    self.policy.reset()
    self.warmup_seconds = seconds
    return seconds

  async def _handle(self, websocket):
    try:
      await websocket.send(msgpack_numpy.packb(self.metadata))
      async for message in websocket:
        await websocket.send(await self._reply(message))
    except websockets.ConnectionClosed as e:
      self._closed(websocket, e)

  async def _reply(self, message) -> bytes | str:
    """The reply to one message: packed actions, or an error text about this message alone."""
    self.stats["requests"] += 1
    try:
      request = self.validate(message)
      future = asyncio.get_running_loop().create_future()
      await self._queue.put((request, future))
      return msgpack_numpy.packb(await future)
    except RequestError as e:
      self.stats["errors"] += 1
      return f"bad request: {e}"
    except Exception as e:  # (inference failed: say so, keep serving)
      self.stats["errors"] += 1
      logging.error("inference failed for one request: %s: %s", type(e).__name__, _clip(str(e)), exc_info=e)
      return f"server error: {type(e).__name__}: {_clip(str(e))}"

  def _closed(self, websocket, error: websockets.ConnectionClosed):
    """A connection ended abnormally or with a reply owed: the client left (or sent too much)."""
    if error.sent is not None and error.sent.code == CloseCode.MESSAGE_TOO_BIG:
      self.stats["errors"] += 1
      logging.info(
        "closed the connection of %s: a message over %d bytes", websocket.remote_address, self.max_message_bytes
      )
      return
    self.stats["disconnects"] += 1
    logging.info("client %s disconnected (%s)", websocket.remote_address, error)

  def _process_request(self, connection, request):
    """Before the websocket handshake: /healthz -> 200; with an API key, a missing/wrong one -> 401."""
    if request.path.split("?", 1)[0] == HEALTH_PATH:
      return connection.respond(http.HTTPStatus.OK, "ok\n")
    if self._authorization is None:
      return None
    given = request.headers.get("Authorization", "")
    if hmac.compare_digest(given.encode("utf-8"), self._authorization.encode("utf-8")):
      return None
    self.stats["unauthorized"] += 1
    logging.warning("refused %s: %s API key", connection.remote_address, "wrong" if given else "no")
    return connection.respond(
      http.HTTPStatus.UNAUTHORIZED, "missing or wrong API key: send the header 'Authorization: Api-Key <key>'\n"
    )

  async def _batcher(self):
    loop = asyncio.get_running_loop()
    while True:
      batch = await self._next_batch(loop)
      try:
        replies = await loop.run_in_executor(self._executor, self._infer_rows, batch)
      except Exception as e:  # (the executor itself failed: no row's text)
        replies = [e] * len(batch)
      for (_, future), reply in zip(batch, replies):
        if future.done():
          continue
        if isinstance(reply, BaseException):
          future.set_exception(reply)
        else:
          future.set_result(reply)

  async def _next_batch(self, loop) -> list:
    batch = [await self._queue.get()]
    deadline = loop.time() + self.window
    while len(batch) < self.max_batch:
      timeout = deadline - loop.time()
      if timeout <= 0 and self._queue.empty():
        break
      try:
        batch.append(await asyncio.wait_for(self._queue.get(), max(timeout, 0.0)))
      except asyncio.TimeoutError:
        break
    return batch

  def _infer_rows(self, batch) -> list:
    """-> per row, its reply or the exception it raised. A failed batch is retried row by row, so an
    exception returned for a row was raised by a call on that row alone."""
    try:
      return self._infer(batch)
    except Exception as e:
      if len(batch) == 1:
        return [e]
      self.stats["retried_batches"] += 1
      logging.warning("a batch of %d failed (%s); retrying its requests one by one", len(batch), type(e).__name__)
    replies = []
    for row in batch:
      try:
        replies += self._infer([row])
      except Exception as e:
        replies.append(e)
    return replies

  def _infer(self, batch) -> list[dict]:
    n = len(batch)
    start = time.perf_counter()
    actions, valid = self._act([request for request, _ in batch])
    infer_ms = (time.perf_counter() - start) * 1000
    self.stats["batches"] += 1
    self.stats["max_batch_size"] = max(self.stats["max_batch_size"], n)
    return [
      {
        "actions": np.asarray(actions[i], np.float32),
        "valid": np.asarray(valid[i], bool),
        "server_timing": {"infer_ms": infer_ms, "batch_size": n},
      }
      for i in range(n)
    ]

  def _act(self, requests: list[Request]):
    """policy.act on `requests`, padded to the next power of two (one compile per size) by repeating the
    last; one camera: images [B,H,W,3] as they came; several: [B,C,S,S,3] at the policy's image size S
    (a missing camera: black, image_mask False)."""
    n = len(requests)
    rows = requests + [requests[-1]] * (warmup.padded(n) - n)
    prompts = [r.prompt for r in rows]
    states = np.stack([r.state for r in rows]) if self.state_dim else None
    cameras = {}
    if self.keys.num_cameras == 1:
      images = [r.frames[0] for r in rows]
    else:
      images = np.stack([self._pixels(r) for r in rows])
      cameras["image_mask"] = np.array([r.image_mask for r in rows], bool)
    self.policy.reset()  # the rows are unrelated requests: no per-episode state (drafts) carries over
    return self.policy.act(images, prompts, states=states, full_width=True, **cameras)

  def _pixels(self, request: Request) -> np.ndarray:
    """A request's cameras as uint8 [C,S,S,3]: each resized to the policy's image size (what act() would
    do itself; the same function, so the result is act()'s on the original frames); missing ones black."""
    present = [f for f in request.frames if f is not None]
    shape = (self.image_size, self.image_size, 3) if self.image_size else present[0].shape
    return np.stack(
      [
        np.zeros(shape, np.uint8)
        if f is None
        else (preprocess.resize_image(f, self.image_size) if self.image_size else f)
        for f in request.frames
      ]
    )

  async def serve(
    self,
    host: str = "127.0.0.1",
    port: int = 8000,
    ready: asyncio.Event | None = None,
    stop: asyncio.Event | None = None,
  ):
    """Serves until `stop` is set (forever without one). `ready` is set once the port listens.
    Loopback by default; host "0.0.0.0" listens on every interface (then set an api_key)."""
    if self.warm_up_on_start and self.warmup_seconds is None:
      seconds = await asyncio.get_running_loop().run_in_executor(self._executor, self.warm_up)
      logging.info("compiled batch sizes %s in %.1f s", sorted(seconds), sum(seconds.values()))
    self._queue = asyncio.Queue()
    batcher = asyncio.create_task(self._batcher())
    try:
      # max_queue: the protocol is one request, one reply; a client cannot make us buffer more frames
      async with serve(
        self._handle,
        host,
        port,
        max_size=self.max_message_bytes,
        max_queue=4,
        compression=None,
        process_request=self._process_request,
      ) as server:
        self.port = server.sockets[0].getsockname()[1]
        if ready is not None:
          ready.set()
        await (stop.wait() if stop is not None else asyncio.Future())
    finally:
      batcher.cancel()
