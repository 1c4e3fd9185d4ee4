"""A small synchronous client for the policy server (same protocol as openpi's WebsocketClientPolicy).

client = PolicyClient("localhost", 8000)          # api_key="..." for a server started with --api_key
client.metadata                      # what the server said on connect (action horizon, dims, keys, ...)
reply = client.infer({"image": frame_uint8_hwc, "prompt": "put the spoon in the pot"})
reply["actions"]                     # float32 [H, D] in the robot's units
healthy("localhost", 8000)           # GET /healthz answered 200 (no key needed)

Like openpi's client, it waits for a server that is not up yet (still loading, compiling): it retries
the connection until `wait_s` seconds have passed, then raises ServerUnavailable naming host:port.
"""

import http.client
import logging
import time

from websockets.exceptions import InvalidMessage, InvalidStatus
from websockets.sync.client import connect

from genvla_jax.serving import msgpack_numpy

RETRY_STATUSES = (502, 503, 504)  # a proxy or load balancer in front of a server not up yet


class ServerError(RuntimeError):
  """The server answered with an error message instead of actions (or refused the connection)."""


class ServerUnavailable(ServerError):
  """No server answered at host:port within the client's `wait_s`."""


class PolicyClient:
  def __init__(
    self,
    host: str = "localhost",
    port: int | None = 8000,
    open_timeout: float = 30.0,
    max_message_bytes: int = 64 * 2**20,
    api_key: str | None = None,
    wait_s: float = 300.0,
  ):
    """`host`: a name, an address, or a ws:// URI (then `port` may be None), as openpi's client takes.
    `api_key`: sent as the header `Authorization: Api-Key <key>`, as openpi's client does; a server with
    a key refuses a connection without the right one (ServerError naming the 401, at once). `wait_s`:
    how long to keep retrying while nothing listens at host:port yet (0: one try)."""
    uri = host if host.startswith(("ws://", "wss://")) else f"ws://{host}"
    self.uri = uri + (f":{port}" if port is not None else "")
    headers = {"Authorization": f"Api-Key {api_key}"} if api_key else None
    deadline, delay, last_log = time.monotonic() + max(wait_s, 0.0), 0.1, time.monotonic()
    while True:
      try:
        self._ws = connect(
          self.uri,
          open_timeout=open_timeout,
          max_size=max_message_bytes,
          compression=None,
          additional_headers=headers,
        )
        self.metadata = msgpack_numpy.unpackb(self._ws.recv())
        return
      except InvalidStatus as e:
        status, body = e.response.status_code, (e.response.body or b"").decode("utf-8", "replace").strip()
        if status not in RETRY_STATUSES:
          raise ServerError(f"server refused the connection: HTTP {status} {body}") from e
        error = e
      except (OSError, TimeoutError, EOFError, InvalidMessage) as e:  # refused, reset, cut: not up (yet)
        error = e
      now = time.monotonic()
      if now >= deadline:
        raise ServerUnavailable(
          f"no policy server answered at {self.uri} within {wait_s:g} s ({type(error).__name__}: "
          f"{error}); is it started (python -m genvla_jax.serve), and on this host and port?"
        ) from error
      if now - last_log >= 5:
        logging.info("still waiting for the policy server at %s (%s)", self.uri, type(error).__name__)
        last_log = now
      time.sleep(min(delay, max(deadline - now, 0.0)))
      delay = min(delay * 2, 2.0)

  def get_server_metadata(self) -> dict:
    """The metadata (openpi's WebsocketClientPolicy method)."""
    return self.metadata

  def reset(self) -> None:
    """Nothing to forget on this side (openpi's BasePolicy method)."""

  def infer(self, observation: dict, timeout: float | None = 120.0) -> dict:
    self._ws.send(msgpack_numpy.packb(observation))
    reply = self._ws.recv(timeout=timeout)
    if isinstance(reply, str):
      raise ServerError(reply)
    return msgpack_numpy.unpackb(reply)

  def send_raw(self, data, timeout: float | None = 120.0):
    """Sends bytes/str as they are and returns the raw reply (tests, debugging)."""
    self._ws.send(data)
    return self._ws.recv(timeout=timeout)

  def close(self):
    self._ws.close()

  def __enter__(self):
    return self

  def __exit__(self, *exc):
    self.close()


def healthy(host: str = "localhost", port: int = 8000, timeout: float = 5.0) -> bool:
  """True when the server answers `GET /healthz` with 200 (a readiness probe; needs no API key)."""
  conn = http.client.HTTPConnection(host, port, timeout=timeout)
  try:
    conn.request("GET", "/healthz")
    return conn.getresponse().status == 200
  except OSError:
    return False
  finally:
    conn.close()
