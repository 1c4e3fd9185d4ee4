r"""Decode latency per action: bins vs string tokens, plain vs grammar-constrained, H=1 and H=4, 7-DoF.

  python benchmarks/decode.py                                 # tiny demo model (random weights), CPU
  python benchmarks/decode.py --workdir=/tmp/run              # a trained run's weights and tokenizer
  python benchmarks/decode.py --config=configs/pi0_plus.py --dtype=bfloat16 --tokenizer=PATH  # full size

Per variant: wall time per decoded action (batch `--batch`, median of `--repeats` jitted calls after a
warm-up), sequential decode steps per action (model passes after the prefill), time per decode step, and
two ratios measured in the same run: time vs the bins baseline, and time per decode step vs the
memory-bandwidth floor (parameter bytes / bandwidth of a large on-device copy, i.e. the time to read
every weight once). With random weights, plain (unconstrained) string decoding stops at the first EOS
the random model emits, so its step count is not an action's; constrained decoding always writes the
whole format. Jump-forward counts model passes (each writes up to 2 tokens). Speculative drafts are
not built yet (issue 5).
"""

import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from absl import app, flags  # pylint: disable=g-import-not-at-top
import jax
import jax.numpy as jnp
from ml_collections import config_flags
import numpy as np

from genvla_jax.inference import decode
from genvla_jax.models import vlm
from genvla_jax.tokenizers import actions, bin_actions, string_actions, text

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file("config", "configs/pi0_plus.py:demo", "model config (random weights)",
                                lock_config=False)
flags.DEFINE_string("workdir", "", "use this run's weights, config and tokenizer instead")
flags.DEFINE_string("tokenizer", "", "SentencePiece model (default: the config's / the demo's)")
flags.DEFINE_string("dtype", "float32", "compute and parameter dtype for random weights")
flags.DEFINE_integer("dof", 7, "action dimensions")
flags.DEFINE_string("horizons", "1,4", "action chunk lengths")
flags.DEFINE_integer("batch", 1, "requests decoded together")
flags.DEFINE_integer("repeats", 5, "timed calls per variant")


def bandwidth() -> float:
  """Bytes/s of a large on-device copy (read + write), the reference for the bandwidth floor."""
  n = (256 << 20) if jax.devices()[0].platform != "cpu" else (32 << 20)
  x = jnp.ones((n,), jnp.float32)
  f = jax.jit(lambda a: a * 1.0001)
  f(x).block_until_ready()
  t = time.perf_counter()
  for _ in range(5):
    y = f(x)
  y.block_until_ready()
  return 2 * 4 * n * 5 / (time.perf_counter() - t)


def load_model():
  if FLAGS.workdir:  # imported here: the data stack (grain, tfds) is not needed for random weights
    from genvla_jax.inference import policy as policy_lib  # pylint: disable=g-import-not-at-top
    policy = policy_lib.Policy.from_workdir(FLAGS.workdir)
    return policy.config, policy.model, policy.params, policy.text
  config = FLAGS.config
  config.model.dtype = config.model.param_dtype = config.model.frozen_dtype = FLAGS.dtype
  config.model.dual_encoder = True
  path = FLAGS.tokenizer or os.path.expanduser(config.tokenizer.path)
  if not os.path.exists(path):  # the demo tokenizer, generated on first use
    from genvla_jax.data import demo  # pylint: disable=g-import-not-at-top
    demo.ensure(os.path.expanduser(config.data.demo_dir))
  model = vlm.from_config(config.model)
  params = jax.jit(lambda: vlm.init_params(model, jax.random.PRNGKey(0), config.model.image_size))()
  return config, model, params, text.TextTokenizer(path)


def time_variant(decoder, params, inputs, repeats):
  out = decoder(params, *inputs)
  jax.block_until_ready(out)
  times = []
  for _ in range(repeats):
    t = time.perf_counter()
    out = decoder(params, *inputs)
    jax.block_until_ready(out)
    times.append(time.perf_counter() - t)
  return float(np.median(times)), jax.device_get(out)


def main(argv):
  del argv
  config, model, params, tokenizer = load_model()
  size, batch = config.model.image_size, FLAGS.batch
  rng = np.random.default_rng(0)
  prompt = [tokenizer.bos_id] + tokenizer.encode("What action should the robot take to pick up the can?\n")
  inputs = (rng.uniform(-1, 1, (batch, size, size, 3)).astype(np.float32),
            np.tile(np.asarray(prompt, np.int32), (batch, 1)), np.ones((batch, len(prompt)), bool))
  param_bytes = sum(x.size * x.dtype.itemsize for x in jax.tree.leaves(params))
  bw = bandwidth()
  floor = param_bytes / bw
  print(f"device {jax.devices()[0].device_kind} | params {vlm.count_params(params) / 1e6:.1f} M "
        f"({param_bytes / 2**20:.0f} MiB) | copy bandwidth {bw / 1e9:.1f} GB/s | floor per step "
        f"{floor * 1e3:.2f} ms | batch {batch} | {'trained' if FLAGS.workdir else 'random'} weights")
  print(f"{'variant':<22} {'H':>2} {'ms/action':>10} {'steps':>6} {'ms/step':>8} {'vs bins':>8} {'vs floor':>9}")
  vocab = config.model.llm.vocab_size
  for horizon in [int(h) for h in FLAGS.horizons.split(",")]:
    bins = bin_actions.BinActionTokenizer(horizon, FLAGS.dof, vocab - 256, 256, tokenizer.eos_id)
    strings = string_actions.StringActionTokenizer(tokenizer, horizon, FLAGS.dof)
    variants = [("bins", bins, None), ("bins constrained", bins, actions.make_grammar(bins)),
                ("string plain", strings, None),
                ("string constrained", strings, actions.make_grammar(strings)),
                ("string jump-forward", strings, "jump")]
    base = None
    for name, tok, grammar in variants:
      if grammar == "jump":
        jump = decode.make_jump_forward_decoder(model, tok.max_decode_len(), tokenizer.eos_id,
                                                tokenizer.pad_id, actions.make_grammar(tok))
        seconds, (out, passes) = time_variant(jump, params, inputs, FLAGS.repeats)
        steps = int(passes)  # model passes (each may write 2 tokens)
      else:
        decoder = decode.make_greedy_decoder(model, tok.max_decode_len(), tokenizer.eos_id,
                                             tokenizer.pad_id, grammar)
        seconds, out = time_variant(decoder, params, inputs, FLAGS.repeats)
        steps = int(np.max(np.sum(out != tokenizer.pad_id, axis=1)))  # tokens written, EOS included
      base = base or seconds
      print(f"{name:<22} {horizon:>2} {seconds * 1e3:10.1f} {steps:6d} {seconds / steps * 1e3:8.2f} "
            f"{seconds / base:8.2f} {seconds / steps / floor:9.2f}", flush=True)


if __name__ == "__main__":
  app.run(main)
