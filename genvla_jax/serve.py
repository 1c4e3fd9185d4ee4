r"""Serves a trained policy to robots over websockets (openpi's client protocol; genvla_jax/serving/).

  python -m genvla_jax.serve --workdir=RUN [--step=N] [--port=8000] [--max_batch=16]
  python -m genvla_jax.serve --workdir=RUN --obs_style=libero       # openpi's LIBERO runtime, unchanged
  GENVLA_API_KEY=... python -m genvla_jax.serve --workdir=RUN --host=0.0.0.0   # for the network

Clients: `genvla_jax.serving.client.PolicyClient`, or openpi's `WebsocketClientPolicy` pointed at the
port; observations {"image": uint8 [H,W,3], "prompt": str} -> {"actions": [H_chunk, D], ...}.
--obs_style picks where requests hold the cameras, state and prompt: genvla (above), or the keys openpi's
example runtimes send: libero, droid, aloha (serving/observation_keys.py); a policy with several cameras
(config.data.cameras) gets each from its key, and a camera a request lacks is masked out. The metadata
sent on connect lists the style, the cameras and the keys expected.
Before it listens, the server compiles the policy for every batch size it pads to (--warm_up), reading
and writing JAX's persistent compilation cache (--compilation_cache), so a restart compiles little.
`GET /healthz` on the same port answers 200 (no key needed). Listens on loopback (127.0.0.1) unless
--host says otherwise; with --api_key (or $GENVLA_API_KEY) a client must send the header
`Authorization: Api-Key <key>` (openpi's client: `api_key=`; ours: `PolicyClient(..., api_key=)`).
Mistakes (no such run, port taken, unknown style) are one line `error: ...`, exit 2, before the model loads.
"""

import asyncio
import os
import socket
import time

from absl import flags, logging

from genvla_jax import cli

FLAGS = flags.FLAGS
API_KEY_ENV = "GENVLA_API_KEY"


def define_flags():
  """The CLI's flags (defined only when run as a program: other CLIs own flags of the same names)."""
  from genvla_jax.serving import observation_keys, server, warmup

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
  flags.DEFINE_enum(
    "obs_style",
    observation_keys.DEFAULT_STYLE,
    list(observation_keys.STYLES),
    "request keys of the cameras, state and prompt: genvla ('image', 'state', 'prompt'), or those openpi's "
    "example runtimes send: libero ('observation/image', 'observation/wrist_image', 'observation/state'), "
    "droid ('observation/exterior_image_1_left', 'observation/wrist_image_left', "
    "'observation/joint_position' + 'observation/gripper_position'), aloha ('images': {'cam_high', "
    "'cam_left_wrist', 'cam_right_wrist', 'cam_low'}, 'state')",
  )
  flags.DEFINE_string(
    "camera_keys",
    None,
    "CAMERA=REQUEST_KEY,...: read the policy's camera CAMERA (config.data.cameras) from REQUEST_KEY, "
    "overriding --obs_style (e.g. wrist=observation/wrist_image)",
  )
  flags.DEFINE_string("default_prompt", None, "the instruction for requests without one (openpi's ALOHA runtime)")
  flags.DEFINE_bool("warm_up", True, "compile every batch size before listening (no compile mid-episode)")
  flags.DEFINE_string(
    "compilation_cache",
    warmup.DEFAULT_CACHE_DIR,
    "JAX's persistent compilation cache: compiled programs are kept here and read back on the next "
    "start ('' turns it off)",
  )


def policy_cameras(policy) -> tuple[str, ...]:
  """The cameras the policy's act() takes, by name, in order ("" where unnamed): its metadata's, else one
  unnamed camera (policies that name none)."""
  return tuple(policy.metadata.cameras) or ("",)


def observation_keys_for(policy, style: str = "genvla", camera_keys=None, default_prompt=None):
  """The observation KeyMap of `style` for the policy's cameras (serving/observation_keys.py); a camera the
  style cannot place is a UserError."""
  from genvla_jax.serving import observation_keys

  try:
    return observation_keys.resolve(style, policy_cameras(policy), camera_keys, default_prompt)
  except ValueError as e:
    raise cli.UserError(str(e)) from None


def metadata(policy, keys=None) -> dict:
  """What the server sends on connect, from the policy's protocol metadata (inference/protocol.py) and the
  observation keys it reads (`keys`, default: the genvla style)."""
  meta = policy.metadata
  keys = keys or observation_keys_for(policy)
  return {
    "server": "genvla_jax",
    "protocol": "openpi-websocket-msgpack-numpy",
    "action_horizon": int(meta.horizon),
    "action_dim": int(meta.action_dim),
    "image_size": int(meta.image_size),
    "action_tokenizer": meta.action_tokenizer,
    "state_dim": int(meta.state_dim),  # > 0: every observation must carry the state
    "observation_style": keys.style,
    "cameras": list(keys.cameras),  # the policy's cameras, in its order
    "observation": keys.describe(int(meta.state_dim)),  # request key -> what it holds
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


def make_server(
  workdir: str,
  step: int | None = None,
  obs_style: str = "genvla",
  camera_keys: dict | None = None,
  default_prompt: str | None = None,
  **options,
):
  """The policy of the run `workdir` (at `step`, default latest) behind a PolicyServer(**options) that
  reads requests in `obs_style` (serving/observation_keys.py; `camera_keys` {camera: request key}
  override it; `default_prompt` serves requests without a prompt)."""
  from genvla_jax.inference import policy as policy_lib
  from genvla_jax.serving import server

  policy = policy_lib.Policy.from_workdir(workdir, step=step)
  keys = observation_keys_for(policy, obs_style, camera_keys, default_prompt)
  return server.PolicyServer(policy, metadata(policy, keys), keys=keys, **options)


def main(argv):
  from genvla_jax.serving import observation_keys, warmup

  if len(argv) > 1:
    raise cli.UserError(f"unexpected arguments {argv[1:]} (flags are --name=value)")
  workdir = cli.run_dir()
  for name in ("max_batch", "max_image_side", "max_prompt_chars", "max_message_mb"):
    if FLAGS[name].value < 1:
      raise cli.UserError(f"--{name}={FLAGS[name].value}: must be at least 1")
  try:
    camera_keys = observation_keys.parse_overrides(FLAGS.camera_keys)
  except ValueError as e:
    raise cli.UserError(f"--camera_keys: {e}") from None
  check_listen(FLAGS.host, FLAGS.port)
  key = api_key(FLAGS.api_key)
  cache = warmup.enable_compilation_cache(FLAGS.compilation_cache)  # before anything compiles
  srv = make_server(
    workdir,
    FLAGS.step,
    obs_style=FLAGS.obs_style,
    camera_keys=camera_keys,
    default_prompt=FLAGS.default_prompt,
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
  keys = srv.keys
  print(
    f"observations in the {keys.style} style: cameras "
    + ", ".join(f"{name}={k[0]!r}" for name, k in zip(keys.cameras, keys.camera_keys)),
    flush=True,
  )
  if FLAGS.warm_up:
    start = time.perf_counter()
    seconds = srv.warm_up()
    each = ", ".join(f"{size}: {s:.1f} s" for size, s in sorted(seconds.items()))
    print(
      f"compiled batch sizes {sorted(seconds)} in {time.perf_counter() - start:.1f} s ({each}; compilation "
      f"cache: {cache or 'off'})",
      flush=True,
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
