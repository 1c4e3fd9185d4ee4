r"""Serves a trained policy to robots over websockets (openpi's client protocol; genvla_jax/serving/).

  python -m genvla_jax.serve --checkpoint=WORKDIR [--port=8000] [--max_batch=16]

Clients: `genvla_jax.serving.client.PolicyClient`, or openpi's `WebsocketClientPolicy` pointed at the
port; observations {"image": uint8 [H,W,3], "prompt": str} -> {"actions": [H_chunk, D], ...}.
"""

import asyncio

from absl import app, flags, logging

FLAGS = flags.FLAGS


def metadata(policy) -> dict:
  """What the server sends on connect."""
  return {"server": "genvla_jax", "protocol": "openpi-websocket-msgpack-numpy",
          "action_horizon": int(policy.horizon), "action_dim": int(policy.action_dim),
          "image_size": int(policy.config.model.image_size), "action_tokenizer": policy.config.tokenizer.action,
          "observation": {"image": "uint8 [H,W,3]", "prompt": "str"},
          "reply": {"actions": "float32 [action_horizon, action_dim]", "valid": "bool [action_horizon, action_dim]"}}


def main(argv):
  del argv
  from genvla_jax.inference import policy as policy_lib  # pylint: disable=g-import-not-at-top
  from genvla_jax.serving import server  # pylint: disable=g-import-not-at-top
  policy = policy_lib.Policy.from_workdir(FLAGS.checkpoint, step=FLAGS.step)
  srv = server.PolicyServer(policy, metadata(policy), max_batch=FLAGS.max_batch,
                            batch_window_ms=FLAGS.batch_window_ms, max_image_side=FLAGS.max_image_side)
  logging.set_verbosity(logging.INFO)
  print(f"serving {FLAGS.checkpoint} on ws://{FLAGS.host}:{FLAGS.port}", flush=True)
  asyncio.run(srv.serve(FLAGS.host, FLAGS.port))


if __name__ == "__main__":
  flags.DEFINE_string("checkpoint", None, "run directory of a trained policy", required=True)
  flags.DEFINE_integer("step", None, "checkpoint step (default: latest)")
  flags.DEFINE_string("host", "0.0.0.0", "interface to listen on")
  flags.DEFINE_integer("port", 8000, "port")
  flags.DEFINE_integer("max_batch", 16, "most requests decoded together")
  flags.DEFINE_float("batch_window_ms", 2.0, "how long the first request of a batch waits for company")
  flags.DEFINE_integer("max_image_side", 1024, "larger images are refused")
  app.run(main)
