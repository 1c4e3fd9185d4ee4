r"""Decode latency per action: bins vs string tokens, plain vs grammar-constrained, H=1 and H=4, 7-DoF.

  python benchmarks/decode.py                                 # tiny demo model (random weights), CPU
  python benchmarks/decode.py --workdir=/tmp/run              # a trained run's weights and tokenizer
  python benchmarks/decode.py --config=configs/pi0_plus.py --dtype=bfloat16 --tokenizer=PATH  # full size

Frames: a base image drifting slowly plus noise (consecutive camera frames); every variant decodes
them in order, the first two frames are warm-up (the second compiles the draft path). Per variant: wall time per
action (batch `--batch`,
median over frames, prefill included), sequential model passes per action (prefill included), time per
pass, and ratios measured in the same run: time vs the bins baseline, passes vs constrained string
decoding (whose output jump-forward and speculative decoding reproduce exactly), time per pass vs the
memory-bandwidth floor (parameter bytes / bandwidth of a large on-device copy), and for speculative
decoding the share of draft tokens (the previous frame's action) accepted. With random weights, plain
(unconstrained) string decoding stops at the first EOS the random model emits, so its pass count is
not an action's; constrained decoding always writes the whole format.
"""

import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from absl import app, flags
import jax
import jax.numpy as jnp
from ml_collections import config_flags
import numpy as np

from genvla_jax.inference import decode
from genvla_jax.models import build, surgery
from genvla_jax.tokenizers import bin_actions, fast_actions, string_actions, text
from measure import bandwidth

FLAGS = flags.FLAGS


def define_flags():
  """The CLI's flags (defined only when run as a script: benchmarks/gpu_suite.py imports this module)."""
  config_flags.DEFINE_config_file(
    "config", "configs/pi0_plus.py:demo", "model config (random weights)", lock_config=False
  )
  flags.DEFINE_string("workdir", "", "use this run's weights, config and tokenizer instead")
  flags.DEFINE_string("tokenizer", "", "SentencePiece model (default: the config's / the demo's)")
  flags.DEFINE_string("dtype", "float32", "compute and parameter dtype for random weights")
  flags.DEFINE_integer("dof", 7, "action dimensions")
  flags.DEFINE_string("horizons", "1,4", "action chunk lengths")
  flags.DEFINE_integer("batch", 1, "requests decoded together")
  flags.DEFINE_integer("repeats", 5, "timed frames per variant (after two warm-up frames)")
  flags.DEFINE_integer("unroll", 0, "decoder layers unrolled per scan iteration (0: all)")
  flags.DEFINE_integer("proposal_len", 8, "tokens proposed per pass (jump-forward / speculative)")


def load_model(config, workdir: str = "", tokenizer_path: str = "", dtype: str = "float32"):
  """-> (config, model, params, text tokenizer): a trained run's (`workdir`), else `config`'s model with random
  weights in `dtype` (dual encoder on) and the tokenizer at `tokenizer_path` (default: the config's; the demo's
  is generated when missing)."""
  if workdir:  # imported here: the data stack (grain, tfds) is not needed for random weights
    from genvla_jax.inference import policy as policy_lib

    policy = policy_lib.Policy.from_workdir(workdir)
    return policy.config, policy.model, policy.params, policy.text
  config.model.dtype = config.model.param_dtype = config.model.frozen_dtype = dtype
  config.model.dual_encoder = True
  path = tokenizer_path or os.path.expanduser(config.tokenizer.path)
  if not os.path.exists(path):  # the demo tokenizer, generated on first use
    from genvla_jax.data import demo

    demo.ensure(os.path.expanduser(config.data.demo_dir))
  model = build.from_config(config.model)
  params = jax.jit(lambda: surgery.init_params(model, jax.random.PRNGKey(0), config.model.image_size))()
  return config, model, params, text.TextTokenizer(path)


WARMUP_FRAMES = 2


def frames(base, count, rng):
  """`count` consecutive camera frames: the base image drifting slowly plus sensor noise [B,S,S,3]."""
  drift = rng.normal(0, 1, base.shape).astype(np.float32)
  return [
    np.clip(base + 0.02 * f * drift + rng.normal(0, 0.02, base.shape), -1, 1).astype(np.float32) for f in range(count)
  ]


def run_variant(fn, params, images, prompt, with_draft):
  """Decodes every frame in turn (the first two are warm-up: the first call has no draft yet, the second
  is the first with one, so each compiles); with_draft: the previous frame's output
  is the draft. -> (median seconds, passes per action incl. prefill, accepted / drafted)."""
  times, passes, drafted, accepted, previous = [], [], 0, 0, None
  for f, image in enumerate(images):
    t = time.perf_counter()
    result = jax.device_get(fn(params, image, *prompt, previous if with_draft else None))
    seconds = time.perf_counter() - t
    previous = result["tokens"]
    if f >= WARMUP_FRAMES:
      times.append(seconds)
      passes.append(result["passes"] + 1)
      drafted, accepted = drafted + int(result["drafted"].sum()), accepted + int(result["accepted"].sum())
  return float(np.median(times)), float(np.mean(passes)), (accepted / drafted if drafted else float("nan"))


def fast_tokenizer(horizon, vocab, tokenizer, dof: int = 7):
  """A FAST tokenizer whose BPE is trained on smooth synthetic chunks (start value + slow drift per
  dimension), on the ids above the text vocabulary (at most 1024)."""
  import tempfile

  rng = np.random.default_rng(0)
  t = np.arange(horizon)[None, :, None] / max(horizon, 1)
  chunks = np.clip(rng.uniform(-0.8, 0.8, (4000, 1, dof)) + rng.normal(0, 0.3, (4000, 1, dof)) * t, -1, 1)
  path = os.path.join(tempfile.mkdtemp(), "fast.model")
  pieces = min(1024, vocab - tokenizer.vocab_size)
  fast_actions.train_bpe(chunks, path, horizon, vocab_size=pieces)
  return fast_actions.FastActionTokenizer(path, horizon, dof, vocab - fast_actions.bpe_size(path), tokenizer.eos_id)


def greedy_fn(model, tok, tokenizer, grammar):
  decoder = decode.make_greedy_decoder(model, tok.max_decode_len(), tokenizer.eos_id, tokenizer.pad_id, grammar)

  def fn(params, images, tokens, mask, draft):
    del draft
    out = decoder(params, images, tokens, mask)  # one pass per token written (EOS included)
    zeros = jnp.zeros((out.shape[0],), jnp.int32)
    return {
      "tokens": out,
      "passes": jnp.max(jnp.sum(out != tokenizer.pad_id, axis=1)),
      "drafted": zeros,
      "accepted": zeros,
    }

  return fn


VARIANTS = (
  "bins",
  "fast constrained",
  "bins constrained",
  "string plain",
  "string constrained",
  "string jump-forward",
  "string jf + speculative",
)


def variants(model, tokenizer, vocab: int, horizon: int, dof: int, proposal_len: int, names=VARIANTS):
  """-> [(name, decode fn, with_draft)] of the VARIANTS in `names` (in VARIANTS' order; only those are built:
  the FAST one trains a BPE)."""
  bins = lambda: bin_actions.BinActionTokenizer(horizon, dof, vocab - 256, 256, tokenizer.eos_id)
  strings = string_actions.StringActionTokenizer(tokenizer, horizon, dof)
  grammar = strings.grammar()
  spec = []  # one speculative decoder for both of its rows (the same jitted function)

  def speculative():
    if not spec:
      spec.append(
        decode.make_speculative_decoder(
          model, strings.max_decode_len(), tokenizer.eos_id, tokenizer.pad_id, grammar, proposal_len
        )
      )
    return spec[0]

  def fast():
    tok = fast_tokenizer(horizon, vocab, tokenizer, dof)
    return greedy_fn(model, tok, tokenizer, tok.grammar())

  builders = {
    "bins": (lambda: greedy_fn(model, bins(), tokenizer, None), False),
    "fast constrained": (fast, False),
    "bins constrained": (lambda: greedy_fn(model, bins(), tokenizer, bins().grammar()), False),
    "string plain": (lambda: greedy_fn(model, strings, tokenizer, None), False),
    "string constrained": (lambda: greedy_fn(model, strings, tokenizer, grammar), False),
    "string jump-forward": (speculative, False),
    "string jf + speculative": (speculative, True),
  }
  unknown = [n for n in names if n not in builders]
  if unknown:
    raise ValueError(f"unknown decode variant(s) {unknown}; known: {list(VARIANTS)}")
  return [(name, builders[name][0](), builders[name][1]) for name in VARIANTS if name in names]


def inputs(tokenizer, batch: int, size: int, count: int, seed: int = 0):
  """-> (prompt (tokens [B,T], mask [B,T]), `count` frames [B,S,S,3]): the robot prompt and drifting frames."""
  rng = np.random.default_rng(seed)
  ids = [tokenizer.bos_id] + tokenizer.encode("What action should the robot take to pick up the can?\n")
  prompt = (np.tile(np.asarray(ids, np.int32), (batch, 1)), np.ones((batch, len(ids)), bool))
  return prompt, frames(rng.uniform(-1, 1, (batch, size, size, 3)).astype(np.float32), count, rng)


def measure_horizon(named_fns, params, images, prompt, horizon: int, floor: float, attempt=None) -> list[dict]:
  """Decodes the frames with every (name, fn, with_draft) in turn -> one row each: ms per action, passes, ms per
  pass, time vs the first variant (bins), passes vs string constrained (when measured before), time per pass vs
  `floor` (seconds), draft acceptance. `attempt(name, measure)`: runs measure() -> run_variant's result, or returns
  a string (why it did not run: the row's status; benchmarks/gpu_suite.py's budget and failures)."""
  rows, base, constrained = [], None, None
  for name, fn, with_draft in named_fns:
    measure = lambda fn=fn, with_draft=with_draft: run_variant(fn, params, images, prompt, with_draft)
    result = attempt(name, measure) if attempt else measure()
    if isinstance(result, str):
      rows.append(dict(variant=name, H=horizon, status=result))
      continue
    seconds, passes, acceptance = result
    base = base or seconds
    constrained = passes if name == "string constrained" else constrained
    rows.append(
      dict(
        variant=name,
        H=horizon,
        ms_action=seconds * 1e3,
        passes=passes,
        ms_pass=seconds / passes * 1e3,
        vs_bins=seconds / base,
        passes_vs_constrained=passes / constrained if constrained else None,
        vs_floor=seconds / passes / floor,
        draft_accepted=acceptance,
      )
    )
  return rows


def param_bytes(params) -> int:
  return sum(x.size * x.dtype.itemsize for x in jax.tree.leaves(params))


def main(argv):
  del argv
  config, model, params, tokenizer = load_model(FLAGS.config, FLAGS.workdir, FLAGS.tokenizer, FLAGS.dtype)
  model = build.for_decoding(model, FLAGS.unroll or None)
  size, batch = config.model.image_size, FLAGS.batch
  prompt, images = inputs(tokenizer, batch, size, FLAGS.repeats + WARMUP_FRAMES)
  nbytes = param_bytes(params)
  bw = bandwidth()
  floor = nbytes / bw
  print(
    f"device {jax.devices()[0].device_kind} | params {surgery.count_params(params) / 1e6:.1f} M "
    f"({nbytes / 2**20:.0f} MiB) | copy bandwidth {bw / 1e9:.1f} GB/s | floor per pass "
    f"{floor * 1e3:.2f} ms | unroll {model.llm_config['scan_unroll']} | batch {batch} | "
    f"{'trained' if FLAGS.workdir else 'random'} weights"
  )
  print(
    f"{'variant':<26} {'H':>2} {'ms/action':>10} {'passes':>7} {'ms/pass':>8} {'vs bins':>8} "
    f"{'passes vs constrained':>21} {'vs floor':>9} {'draft accepted':>14}"
  )
  vocab = config.model.llm.vocab_size
  for horizon in [int(h) for h in FLAGS.horizons.split(",")]:
    named = variants(model, tokenizer, vocab, horizon, FLAGS.dof, FLAGS.proposal_len)
    for r in measure_horizon(named, params, images, prompt, horizon, floor):
      ratio = f"{r['passes_vs_constrained']:21.2f}" if r["passes_vs_constrained"] else f"{'':>21}"
      print(
        f"{r['variant']:<26} {horizon:>2} {r['ms_action']:10.1f} {r['passes']:7.1f} {r['ms_pass']:8.2f} "
        f"{r['vs_bins']:8.2f} {ratio} {r['vs_floor']:9.2f} {r['draft_accepted']:14.2f}",
        flush=True,
      )


if __name__ == "__main__":
  define_flags()
  app.run(main)
