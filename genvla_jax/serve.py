r"""Serves a trained policy to robots over websockets (openpi's client protocol; genvla_jax/serving/).

  python -m genvla_jax.serve --workdir=RUN [--step=N] [--port=8000] [--max_batch=16]
  GENVLA_API_KEY=... python -m genvla_jax.serve --workdir=RUN --host=0.0.0.0   # for the network

Clients: `genvla_jax.serving.client.PolicyClient`, or openpi's `WebsocketClientPolicy` pointed at the
port; observations {"image": uint8 [H,W,3], "prompt": str} -> {"actions": [H_chunk, D], ...}.
`GET /healthz` on the same port answers 200 (no key needed). Listens on loopback (127.0.0.1) unless
--host says otherwise; with --api_key (or $GENVLA_API_KEY) a client must send the header
`Authorization: Api-Key <key>` (openpi's client: `api_key=`; ours: `PolicyClient(..., api_key=)`).
Mistakes (no such run, port taken) are one line `error: ...`, exit 2, before the model loads.
"""

import asyncio
import os
import socket

from absl import flags, logging

from genvla_jax import cli

FLAGS = flags.FLAGS
API_KEY_ENV = "GENVLA_API_KEY"


def define_flags():
  """The CLI's flags (defined only when run as a program: other CLIs own flags of the same names)."""
  from genvla_jax.serving import server

  cli.define_run_dir_flag("run directory of a trained policy")
  flags.DEFINE_integer("step", None, "checkpoint step (default: latest)")
  flags.DEFINE_string(
    "host",
    "127.0.0.1",
    "interface to listen on. The default serves this machine only; "
    "--host=0.0.0.0 listens on all interfaces, which exposes the policy (and the robot it "
    "drives) to the network: pair it with --api_key",
  )
  flags.DEFINE_integer("port", 8000, "port (websocket and GET /healthz)")
  flags.DEFINE_string(
    "api_key",
    None,
    f"require clients to send 'Authorization: Api-Key <key>' (default: "
    f"${API_KEY_ENV}, else no key); /healthz stays open. The environment variable keeps "
    "the key out of the process list",
  )
  flags.DEFINE_integer("max_batch", 16, "most requests decoded together")
  flags.DEFINE_float("batch_window_ms", 2.0, "how long the first request of a batch waits for company")
  flags.DEFINE_integer("max_image_side", 1024, "larger images are refused")
  flags.DEFINE_integer(
    "max_prompt_chars",
    server.DEFAULT_MAX_PROMPT_CHARS,
    "longer prompts are refused before any tokenization (the policy's own token limit, "
    "tokenizer.max_text_len, is checked after)",
  )
  flags.DEFINE_integer("max_message_mb", 16, "a larger websocket message closes its connection (code 1009)")


def metadata(policy) -> dict:
  """What the server sends on connect, from the policy's protocol metadata (inference/protocol.py)."""
  meta = policy.metadata
  return {
    "server": "genvla_jax",
    "protocol": "openpi-websocket-msgpack-numpy",
    "action_horizon": int(meta.horizon),
    "action_dim": int(meta.action_dim),
    "image_size": int(meta.image_size),
    "action_tokenizer": meta.action_tokenizer,
    "state_dim": int(meta.state_dim),  # > 0: every observation must carry "state"
    "observation": {"image": "uint8 [H,W,3]", "prompt": "str"}
    | ({"state": f"float32 [{meta.state_dim}] in the robot's units"} if meta.state_dim else {}),
    "reply": {"actions": "float32 [action_horizon, action_dim]", "valid": "bool [action_horizon, action_dim]"},
  }


def api_key(flag_value: str | None) -> str | None:
  """--api_key, else $GENVLA_API_KEY, else None (no key)."""
  return flag_value or os.environ.get(API_KEY_ENV) or None


def check_listen(host: str, port: int):
  """UserError unless `host:port` can be listened on now (checked before the model loads)."""
  family = socket.AF_INET6 if ":" in host else socket.AF_INET
  try:
    socket.create_server((host, port), family=family).close()
  except (OSError, OverflowError) as e:  # OverflowError: a port outside 0..65535
    why = getattr(e, "strerror", None) or str(e)
    raise cli.UserError(
      f"cannot listen on {host}:{port}: {why} (another server running? choose --port, or check --host)"
    ) from e


def make_server(workdir: str, step: int | None = None, **options):
  """The policy of the run `workdir` (at `step`, default latest) behind a PolicyServer(**options)."""
  from genvla_jax.inference import policy as policy_lib
  from genvla_jax.serving import server

  policy = policy_lib.Policy.from_workdir(workdir, step=step)
  return server.PolicyServer(policy, metadata(policy), **options)


def main(argv):
  if len(argv) > 1:
    raise cli.UserError(f"unexpected arguments {argv[1:]} (flags are --name=value)")
  workdir = cli.run_dir()
  for name in ("max_batch", "max_image_side", "max_prompt_chars", "max_message_mb"):
    if FLAGS[name].value < 1:
      raise cli.UserError(f"--{name}={FLAGS[name].value}: must be at least 1")
  check_listen(FLAGS.host, FLAGS.port)
  key = api_key(FLAGS.api_key)
  srv = make_server(
    workdir,
    FLAGS.step,
    max_batch=FLAGS.max_batch,
    batch_window_ms=FLAGS.batch_window_ms,
    max_image_side=FLAGS.max_image_side,
    max_prompt_chars=FLAGS.max_prompt_chars,
    max_message_bytes=FLAGS.max_message_mb * 2**20,
    api_key=key,
  )
  logging.set_verbosity(logging.INFO)
  if not key and FLAGS.host not in ("127.0.0.1", "localhost", "::1"):
    logging.warning(
      "listening on %s without an API key: anyone who reaches the port drives the policy (set --api_key or $%s)",
      FLAGS.host,
      API_KEY_ENV,
    )
  print(
    f"serving {workdir} on ws://{FLAGS.host}:{FLAGS.port} (health: "
    f"http://{FLAGS.host}:{FLAGS.port}/healthz; API key {'required' if key else 'off'})",
    flush=True,
  )
  try:
    asyncio.run(srv.serve(FLAGS.host, FLAGS.port))
  except KeyboardInterrupt:
    print(f"stopped; served {srv.stats}", flush=True)


if __name__ == "__main__":
  define_flags()
  cli.run(main)
