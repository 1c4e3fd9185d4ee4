r"""One cached decode step of the LLM, in isolation: time vs the bandwidth floor, and kernels per step.

  python3 benchmarks/decode_step.py --config=configs/pi0_plus.py --dtype=bfloat16 --cache=400

Times (median of 50 calls after warm-up, batch 1, one token, a KV cache of --cache slots):
  step      jitted VLA.decode_step called from Python (dispatch included)
  loop/N    a lax.fori_loop of N decode steps in one call, divided by N (what the decoder's while loop pays)
and their ratio to the floor (LLM parameter bytes / measured copy bandwidth; the towers are not read).
Counts the kernels XLA launches per step (fusions, GEMMs / custom calls) in the compiled step, the
first thing to look at when the step is far above the floor.
"""

import os
import re
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from absl import app, flags
import jax
import jax.numpy as jnp
from ml_collections import config_flags

from genvla_jax.models import build, prefix_lm, surgery
from measure import bandwidth, median_time

FLAGS = flags.FLAGS


def define_flags():
  """The CLI's flags (defined only when run as a script: benchmarks/gpu_suite.py imports this module)."""
  config_flags.DEFINE_config_file("config", "configs/pi0_plus.py:demo", "model config", lock_config=False)
  flags.DEFINE_string("dtype", "float32", "compute and parameter dtype")
  flags.DEFINE_integer("cache", 400, "KV cache slots")
  flags.DEFINE_integer("loop", 32, "steps per fori_loop call")
  flags.DEFINE_string("dump", "", "write the compiled step's HLO text here")
  flags.DEFINE_integer("unroll", 0, "decoder layers unrolled per scan iteration (0: all)")


def kernel_counts(compiled_text: str) -> dict:
  """Kernel-launching instructions in the entry and loop bodies of compiled HLO (a rough count)."""
  return {
    "fusions": len(re.findall(r"= \S+ fusion\(", compiled_text)),
    "custom-calls (GEMM etc.)": len(re.findall(r"custom-call\(", compiled_text)),
    "while loops": len(re.findall(r" while\(", compiled_text)),
  }


def measure(config, dtype: str, cache_slots: int, loop_steps: int, unroll: int = 0, dump: str = "", profile_dir=None):
  """One cached decode step of `config`'s LLM (random weights in `dtype`, batch 1, a KV cache of `cache_slots`):
  -> {llm_bytes, floor_s (LLM bytes / copy bandwidth), step_s (jitted call, dispatch included), loop_s (per step
  of a fori_loop of `loop_steps`), counts (kernel_counts of the compiled step), unroll, profile_error}; `dump`:
  the compiled HLO text to this path; `profile_dir`: one more step under jax.profiler.trace there."""
  config.model.dtype = config.model.param_dtype = config.model.frozen_dtype = dtype
  model = build.for_decoding(build.from_config(config.model), unroll or None)
  params = jax.jit(lambda: surgery.init_params(model, jax.random.PRNGKey(0), config.model.image_size))()
  llm_bytes = sum(x.size * x.dtype.itemsize for x in jax.tree.leaves(params["llm"]))
  floor = llm_bytes / bandwidth()
  cache = model.apply({"params": params}, 1, cache_slots, method=lambda m, b, s: m.llm.init_cache(b, s))
  valid = jnp.ones((1, cache_slots), bool)
  token, pos = jnp.ones((1, 1), jnp.int32), jnp.full((1, 1), 300, jnp.int32)

  @jax.jit
  def step(params, cache):
    return model.apply({"params": params}, token, pos, cache, 300, valid, method=prefix_lm.PrefixLM.decode_step)

  @jax.jit
  def loop(params, cache):
    def body(i, carry):
      logits, cache = carry
      tok = jnp.argmax(logits, -1).astype(jnp.int32)[:, None]
      return model.apply(
        {"params": params}, tok, pos + i, cache, 300 + i % 64, valid, method=prefix_lm.PrefixLM.decode_step
      )

    return jax.lax.fori_loop(0, loop_steps, body, step(params, cache))

  one = median_time(step, params, cache)
  many = median_time(loop, params, cache, repeats=10) / (loop_steps + 1)
  text = step.lower(params, cache).compile().as_text()
  if dump:
    with open(dump, "w") as f:
      f.write(text)
  profile_error = None
  if profile_dir:
    try:  # (a profiler that cannot start must not lose the measurement)
      with jax.profiler.trace(profile_dir):
        jax.block_until_ready(step(params, cache))
    except Exception as e:
      profile_error = f"{type(e).__name__}: {e}"
  return dict(
    llm_bytes=llm_bytes,
    floor_s=floor,
    step_s=one,
    loop_s=many,
    counts=kernel_counts(text),
    unroll=model.llm_config["scan_unroll"],
    profile_error=profile_error,
  )


def main(argv):
  del argv
  r = measure(FLAGS.config, FLAGS.dtype, FLAGS.cache, FLAGS.loop, FLAGS.unroll, FLAGS.dump)
  floor, one, many = r["floor_s"], r["step_s"], r["loop_s"]
  print(
    f"device {jax.devices()[0].device_kind} | LLM {r['llm_bytes'] / 2**30:.2f} GiB ({FLAGS.dtype}) | floor "
    f"{floor * 1e3:.2f} ms | unroll {r['unroll']} | cache {FLAGS.cache}"
  )
  print(f"{'measure':<10} {'ms':>7} {'vs floor':>9}")
  print(f"{'step':<10} {one * 1e3:7.2f} {one / floor:9.2f}")
  print(f"{'loop/N':<10} {many * 1e3:7.2f} {many / floor:9.2f}")
  print("compiled step: " + ", ".join(f"{k} {v}" for k, v in r["counts"].items()))


if __name__ == "__main__":
  define_flags()
  app.run(main)
