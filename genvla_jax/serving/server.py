"""A websocket policy server speaking openpi's protocol, with batching of concurrent requests.

Protocol (openpi's `WebsocketPolicyServer` / `WebsocketClientPolicy`): on connect the server sends the
metadata (a msgpack map); then each binary message from the client is one observation map
(msgpack_numpy.py) and gets one reply: the action map, or — when the request is bad — a text message
with the error (openpi's clients raise it). Unlike openpi's server, a bad request does not close the
connection: the next request is served.

Observation: {"image" or "observation/image": uint8 [H,W,3], "prompt" or "instruction": str, and for
policies that take the robot state (`uses_state`: π0's state token, prompts that write the state)
"state" or "observation/state": float [S] in the robot's units}; other keys are ignored.
Reply: {"actions": float32 [H_chunk, D] in the robot's units,
"valid": bool [H_chunk, D] (False: the field did not parse and holds the fallback; with constrained
decoding, the default, never), "server_timing": {"infer_ms", "batch_size"}}.

Requests arriving while the model is busy, or within `batch_window_ms` of each other, are decoded as one
batch (up to `max_batch`; padded to the next power of two, so each batch size compiles once; prompts
use the full max_text_len). The policy's previous-action drafts are off: rows of a batch come from
different clients.
"""

import asyncio
import concurrent.futures
import logging
import time

import numpy as np
import websockets
from websockets.asyncio.server import serve

from genvla_jax.serving import msgpack_numpy


class RequestError(ValueError):
  pass


def parse_observation(message, max_image_side: int, state_dim: int = 0) -> tuple[np.ndarray, str, np.ndarray | None]:
  """One client message -> (image uint8 [H,W,3], instruction, state float32 [state_dim] or None);
  RequestError names what is wrong. `state_dim` > 0: the policy takes the robot state, which the
  message must carry as 'state' (or 'observation/state')."""
  if isinstance(message, str):
    raise RequestError("send observations as binary msgpack messages, not text")
  try:
    obs = msgpack_numpy.unpackb(message)
  except Exception as e:  # pylint: disable=broad-except  (msgpack raises many kinds on garbage)
    raise RequestError(f"message is not msgpack-numpy: {type(e).__name__}: {e}") from e
  if not isinstance(obs, dict):
    raise RequestError(f"observation must be a map, got {type(obs).__name__}")
  obs = {k.decode() if isinstance(k, bytes) else k: v for k, v in obs.items()}
  image = obs.get("image", obs.get("observation/image"))
  prompt = obs.get("prompt", obs.get("instruction"))
  if image is None or prompt is None:
    raise RequestError(f"observation needs 'image' (or 'observation/image') and 'prompt' (or "
                       f"'instruction'); got keys {sorted(map(str, obs))}")
  if isinstance(prompt, bytes):
    prompt = prompt.decode("utf-8", "replace")
  if not isinstance(prompt, str) or not prompt.strip():
    raise RequestError("prompt must be a non-empty string")
  if not isinstance(image, np.ndarray) or image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
    what = f"{image.dtype} {image.shape}" if isinstance(image, np.ndarray) else type(image).__name__
    raise RequestError(f"image must be uint8 [H,W,3], got {what}")
  if max(image.shape[:2]) > max_image_side or min(image.shape[:2]) < 1:
    raise RequestError(f"image of {image.shape[0]}x{image.shape[1]} pixels: sides must be 1..{max_image_side}")
  if not state_dim:
    return image, prompt, None
  state = obs.get("state", obs.get("observation/state"))
  if state is None:
    raise RequestError(f"this policy takes the robot state: send 'state' (or 'observation/state'), "
                       f"{state_dim} numbers")
  try:
    state = np.asarray(state, np.float32).reshape(-1)
  except (TypeError, ValueError) as e:
    raise RequestError(f"state must be {state_dim} numbers: {e}") from e
  if state.shape != (state_dim,) or not np.all(np.isfinite(state)):
    raise RequestError(f"state must be {state_dim} finite numbers, got {state.tolist()}")
  return image, prompt, state


class PolicyServer:
  """Serves `policy` (inference.policy.Policy or anything with act(images, instructions, full_width))."""

  def __init__(self, policy, metadata: dict, max_batch: int = 16, batch_window_ms: float = 2.0,
               max_image_side: int = 1024, max_message_bytes: int = 16 * 2**20):
    self.policy, self.metadata = policy, dict(metadata)
    self.max_batch, self.window = max_batch, batch_window_ms / 1000
    self.max_image_side, self.max_message_bytes = max_image_side, max_message_bytes
    self.stats = {"requests": 0, "errors": 0, "batches": 0, "max_batch_size": 0}
    self._queue: asyncio.Queue | None = None
    self._executor = concurrent.futures.ThreadPoolExecutor(1)  # one decoding thread: the model is one
    if hasattr(policy, "draft_previous"):
      policy.draft_previous = False
    self.state_dim = len(policy.state_stats["mean"]) if getattr(policy, "uses_state", False) else 0

  async def _handle(self, websocket):
    await websocket.send(msgpack_numpy.packb(self.metadata))
    try:
      async for message in websocket:
        self.stats["requests"] += 1
        try:
          image, prompt, state = parse_observation(message, self.max_image_side, self.state_dim)
          future = asyncio.get_running_loop().create_future()
          await self._queue.put((image, prompt, state, future))
          await websocket.send(msgpack_numpy.packb(await future))
        except RequestError as e:
          self.stats["errors"] += 1
          await websocket.send(f"bad request: {e}")
        except Exception as e:  # pylint: disable=broad-except  (inference failed: say so, keep serving)
          self.stats["errors"] += 1
          logging.exception("inference failed")
          await websocket.send(f"server error: {type(e).__name__}: {e}")
    except websockets.ConnectionClosed:
      pass

  async def _batcher(self):
    loop = asyncio.get_running_loop()
    while True:
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
      try:
        replies = await loop.run_in_executor(self._executor, self._infer, batch)
      except Exception as e:  # pylint: disable=broad-except
        for *_, future in batch:
          if not future.done():
            future.set_exception(e)
        continue
      for (*_, future), reply in zip(batch, replies):
        if not future.done():
          future.set_result(reply)

  def _infer(self, batch) -> list[dict]:
    n = len(batch)
    size = 1 << (n - 1).bit_length()  # pad to a power of two: one compile per size
    images = [b[0] for b in batch] + [batch[-1][0]] * (size - n)
    prompts = [b[1] for b in batch] + [batch[-1][1]] * (size - n)
    extra = {}
    if self.state_dim:
      extra["states"] = np.stack([b[2] for b in batch] + [batch[-1][2]] * (size - n))
    start = time.perf_counter()
    actions, valid = self.policy.act(images, prompts, full_width=True, **extra)
    infer_ms = (time.perf_counter() - start) * 1000
    self.stats["batches"] += 1
    self.stats["max_batch_size"] = max(self.stats["max_batch_size"], n)
    return [{"actions": np.asarray(actions[i], np.float32), "valid": np.asarray(valid[i], bool),
             "server_timing": {"infer_ms": infer_ms, "batch_size": n}} for i in range(n)]

  async def serve(self, host: str = "0.0.0.0", port: int = 8000, ready: asyncio.Event | None = None,
                  stop: asyncio.Event | None = None):
    """Serves until `stop` is set (forever without one). `ready` is set once the port listens."""
    self._queue = asyncio.Queue()
    batcher = asyncio.create_task(self._batcher())
    async with serve(self._handle, host, port, max_size=self.max_message_bytes, compression=None) as server:
      self.port = server.sockets[0].getsockname()[1]
      if ready is not None:
        ready.set()
      await (stop.wait() if stop is not None else asyncio.Future())
    batcher.cancel()
