"""A small synchronous client for the policy server (same protocol as openpi's WebsocketClientPolicy).

client = PolicyClient("localhost", 8000)          # api_key="..." for a server started with --api_key
client.metadata                      # what the server said on connect (action horizon, dims, ...)
reply = client.infer({"image": frame_uint8_hwc, "prompt": "put the spoon in the pot"})
reply["actions"]                     # float32 [H, D] in the robot's units
healthy("localhost", 8000)           # GET /healthz answered 200 (no key needed)
"""

import http.client

from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect

from genvla_jax.serving import msgpack_numpy


class ServerError(RuntimeError):
  """The server answered with an error message instead of actions (or refused the connection)."""


class PolicyClient:
  def __init__(
    self,
    host: str = "localhost",
    port: int = 8000,
    open_timeout: float = 30.0,
    max_message_bytes: int = 64 * 2**20,
    api_key: str | None = None,
  ):
    """`api_key`: sent as the header `Authorization: Api-Key <key>`, as openpi's client does; a server
    with a key refuses a connection without the right one (ServerError naming the 401)."""
    headers = {"Authorization": f"Api-Key {api_key}"} if api_key else None
    try:
      self._ws = connect(
        f"ws://{host}:{port}",
        open_timeout=open_timeout,
        max_size=max_message_bytes,
        compression=None,
        additional_headers=headers,
      )
    except InvalidStatus as e:
      body = (e.response.body or b"").decode("utf-8", "replace").strip()
      raise ServerError(f"server refused the connection: HTTP {e.response.status_code} {body}") from e
    self.metadata = msgpack_numpy.unpackb(self._ws.recv())

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
