r"""Train-step throughput of a config's model on the local accelerator (random weights, synthetic batch).

  python benchmarks/train_step.py --config=configs/pi0_plus.py --batch_sizes=4,8,16 --dtype=bfloat16 \
      --remat=none,dots
  python benchmarks/train_step.py --config=configs/pi0_plus.py:demo --batch_sizes=8     # CPU smoke
  ... --param_dtype=bfloat16 --frozen_dtype=bfloat16   # bf16 storage, float32 optimizer state
  ... --grad_accum=4                                    # micro-batches: the same update, 1/4 the activations
  python benchmarks/train_step.py --config=configs/demo_tabletop.py --batch_sizes=16 --dtype=float32 \
      --text_len=80 --scan_unroll=1,8 --repeats=3        # scanned vs unrolled layers (`vs first`: step time ratio)

For each (remat policy, scan unroll, batch size): step time, examples/s, tokens/s, model FLOPs per step (analytic,
below), MFU against the device's peak, peak device memory. The reference measured in the same run is a
large bf16 (or f32 on CPU) matmul: `vs matmul` = achieved FLOP/s of the step / achieved FLOP/s of the
matmul, i.e. how close the step gets to what this device actually sustains.

Analytic model FLOPs (genvla_jax/training/flops.model_flops; the usual 6·N·tokens convention; remat
recomputation is not counted):
  trained parameters: 6 · params · tokens they see (LLM: image + text tokens; tower: image patches)
  frozen tower: 2 · params · patches (forward only)
  attention: 12 · layers · B · S^2 · (heads · head_dim) for trained blocks (4 · ... for the frozen tower)
  logits (tied embedding): 6 · B · S_text · V · D
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

from genvla_jax import heads
from genvla_jax.models import build, gemma, lora as lora_lib, surgery
from genvla_jax.training import flops as flops_lib, optimizer, sharding, state as state_lib, step as step_lib

FLAGS = flags.FLAGS


def define_flags():
  """The CLI's flags (defined only when run as a script: benchmarks/gpu_suite.py imports this module)."""
  config_flags.DEFINE_config_file("config", "configs/pi0_plus.py", "model config", lock_config=False)
  flags.DEFINE_string("batch_sizes", "4,8", "comma-separated global batch sizes")
  flags.DEFINE_string("remat", "none", "comma-separated remat policies (none, dots, dots_no_batch, full)")
  flags.DEFINE_string("dtype", "bfloat16", "compute dtype")
  flags.DEFINE_string("param_dtype", "float32", "storage dtype of trained params (optimizer state: float32)")
  flags.DEFINE_string("frozen_dtype", "float32", "storage dtype of the frozen tower")
  flags.DEFINE_integer("text_len", 64, "text tokens per example (prompt + answer)")
  flags.DEFINE_integer("steps", 5, "timed steps (after 2 warm-up steps)")
  flags.DEFINE_integer("grad_accum", 1, "micro-batches per step (config.train.grad_accum_steps)")
  flags.DEFINE_string("scan_unroll", "", "comma-separated config.model.scan_unroll values (default: the config's)")
  flags.DEFINE_integer("repeats", 1, "measure the whole grid this many times (interleaved: load drift hits all rows)")
  flags.DEFINE_string("profile_dir", "", "also trace one step per row there and print its ops by time")


def matmul_reference(dtype) -> float:
  """Achieved FLOP/s of a large square matmul on device 0."""
  n = 8192 if jax.devices()[0].platform != "cpu" else 1024
  a = jnp.ones((n, n), dtype)
  f = jax.jit(lambda x: x @ x)
  f(a).block_until_ready()
  t = time.perf_counter()
  reps = 10
  for _ in range(reps):
    out = f(a)
  out.block_until_ready()
  return 2 * n**3 * reps / (time.perf_counter() - t)


def synthetic_batch(batch: int, text_len: int, size: int, cameras: int = 1, vocab: int = 1000) -> dict:
  """A host batch of random pixels and tokens: the first half of the text is the prompt, the rest the answer.
  With cameras > 1 the images are [B, cameras, size, size, 3] with an all-present `image_mask` [B, cameras], as the
  data pipeline writes them (one camera: [B, size, size, 3]). Token ids in [3, vocab) (a tiny model's vocabulary
  is smaller than 1000: an id past it would make the loss NaN)."""
  rng = np.random.default_rng(0)
  prompt = text_len // 2
  shape = (batch, size, size, 3) if cameras == 1 else (batch, cameras, size, size, 3)
  extra = {} if cameras == 1 else {"image_mask": np.ones((batch, cameras), bool)}
  return dict(
    extra,
    image=rng.uniform(-1, 1, shape).astype(np.float32),
    tokens=rng.integers(3, min(vocab, 1000), (batch, text_len)).astype(np.int32),
    input_mask=np.ones((batch, text_len), bool),
    ar_mask=np.broadcast_to(np.arange(text_len) >= prompt, (batch, text_len)).copy(),
    loss_mask=np.broadcast_to(np.arange(text_len) >= prompt, (batch, text_len)).copy(),
    is_robot=np.ones(batch, bool),
    num_clipped=np.zeros(batch, np.int32),
  )


STATE_NEUTRAL = ("remat_policy", "attention_impl", "decode_attention")  # model fields the train state ignores


def _state_key(config) -> str:
  """What the train state depends on (not remat or attention implementation): states are reused across rows
  that agree on it (run_one's state_cache)."""
  model = {k: v for k, v in config.model.to_dict().items() if k not in STATE_NEUTRAL}
  return repr((sorted(model.items()), config.lora.to_dict(), config.optimizer.to_dict(), config.mesh.to_dict()))


def run_one(config, batch: int, text_len: int, steps: int, grad_accum: int = 1, profile_dir=None, state_cache=None):
  """Times the train step of `config` (config.lora / optimizer.frozen as the trainer applies them) on a synthetic
  batch: compile (ahead of time), 2 warm-up steps, `steps` timed steps; `profile_dir`: then one more step under
  jax.profiler.trace. `state_cache` (a dict): reuses the state it holds when the config's state agrees
  (_state_key), frees it otherwise, and keeps this row's state there afterwards (saves the init compile)."""
  model = build.from_config(config.model)
  tx = optimizer.make(config.optimizer, 1000)
  mesh = sharding.make_mesh(config.mesh)
  lora = lora_lib.Spec.from_config(config.lora)
  size = config.model.image_size
  key, cache = _state_key(config), state_cache if state_cache is not None else {}
  if cache.get("key") == key:
    state, shardings = cache.pop("state"), cache.pop("shardings")
  else:
    cache.clear()  # (frees the other state before this one is made)
    state, shardings, _ = state_lib.create(model, tx, size, mesh, jax.random.PRNGKey(0), lora=lora)
  cache.pop("key", None)
  vocab = gemma.options(config.model.llm)["vocab_size"]
  batch_arrays = sharding.to_global(
    synthetic_batch(batch, text_len, size, build.num_cameras(config.model), vocab), mesh
  )
  train_step = step_lib.jit_train_step(
    step_lib.make_train_step(model, tx, lambda s: 1e-5, grad_accum, frozen=tuple(config.optimizer.frozen), lora=lora),
    shardings,
    mesh,
  )
  t = time.perf_counter()
  compiled = train_step.lower(state, batch_arrays).compile()
  compile_s = time.perf_counter() - t
  for _ in range(2):  # warm-up
    state, metrics = compiled(state, batch_arrays)
  jax.block_until_ready(metrics)
  t = time.perf_counter()
  for _ in range(steps):
    state, metrics = compiled(state, batch_arrays)
  jax.block_until_ready(metrics)
  step_s = (time.perf_counter() - t) / steps
  profile_error = None
  if profile_dir:
    try:  # (a profiler that cannot start must not lose the row)
      with jax.profiler.trace(profile_dir):
        state, metrics = compiled(state, batch_arrays)
        jax.block_until_ready(metrics)
    except Exception as e:
      profile_error = f"{type(e).__name__}: {e}"
  stats = jax.devices()[0].memory_stats() or {}
  try:
    analysis = compiled.memory_analysis()
  except NotImplementedError:  # (a backend without one)
    analysis = None
  if state_cache is not None:
    state_cache.update(key=key, state=state, shardings=shardings)
  del state
  return dict(
    step_s=step_s,
    compile_s=compile_s,
    loss=float(metrics["loss"]),
    peak_gib=stats.get("peak_bytes_in_use", 0) / 2**30,
    xla_peak_gib=None if analysis is None else xla_peak(analysis) / 2**30,
    profile_error=profile_error,
    params=surgery.count_params(jax.eval_shape(lambda: surgery.init_params(model, jax.random.PRNGKey(0), size))),
  )


def xla_peak(analysis) -> int:
  """Peak bytes of one compiled program from XLA's memory analysis (as training/plan.compiled_memory reads it)."""
  return (
    analysis.argument_size_in_bytes
    + analysis.output_size_in_bytes
    - analysis.alias_size_in_bytes
    + analysis.temp_size_in_bytes
    + analysis.generated_code_size_in_bytes
  )


def throughput(config, batch: int, text_len: int, step_s: float, peak, matmul) -> dict:
  """A row's derived numbers: analytic model FLOPs per step (flops.model_flops), achieved FLOP/s, examples/s,
  tokens/s, MFU against `peak` FLOP/s (None: unknown device) and the ratio to the measured `matmul` FLOP/s."""
  flops = flops_lib.model_flops(config.model, batch, text_len, head=heads.from_config(config))
  achieved = flops / step_s
  tokens = batch * (build.num_image_tokens(config.model) + text_len)
  return dict(
    tflop_step=flops / 1e12,
    tflop_s=achieved / 1e12,
    ex_s=batch / step_s,
    tokens_s=tokens / step_s,
    mfu=achieved / peak if peak else None,
    vs_matmul=achieved / matmul,
  )


def print_profile(trace_dir: str, error):
  """The traced step's op kinds by time (benchmarks/profile_summary.py), or why there is no trace."""
  if error:
    print(f"  (no profile: {error})")
    return
  import profile_summary

  summary = profile_summary.summarize(trace_dir)
  print(f"  profiled step: {summary['total_ms']:.1f} ms in {summary['events']} ops ({summary['where']}); by kind:")
  for name, (count, ms) in list(summary["kinds"].items())[:12]:
    print(f"  {name:>40} {count:6d} ops {ms:9.1f} ms {ms / summary['total_ms']:6.1%}")


def main(argv):
  del argv
  config = FLAGS.config
  config.model.dtype = FLAGS.dtype
  config.model.param_dtype = FLAGS.param_dtype
  config.model.frozen_dtype = FLAGS.frozen_dtype
  dtype = jnp.dtype(FLAGS.dtype)
  ref = matmul_reference(dtype)
  peak = flops_lib.peak_flops(jax.devices()[0])
  dev = jax.devices()[0]
  print(f"params {FLAGS.param_dtype}, frozen tower {FLAGS.frozen_dtype}, compute {FLAGS.dtype}")
  print(
    f"device: {dev.device_kind} x{jax.device_count()} | matmul reference {ref / 1e12:.1f} TFLOP/s "
    f"({dtype}) | peak {peak / 1e12 if peak else float('nan'):.0f} TFLOP/s"
  )
  header = (
    f"{'remat':>14} {'unroll':>6} {'batch':>5} {'step ms':>9} {'vs first':>8} {'ex/s':>8} {'tokens/s':>10} "
    f"{'TFLOP/step':>10} {'TFLOP/s':>8} {'MFU':>6} {'vs matmul':>9} {'peak GiB':>8} {'compile s':>9}"
  )
  print(header)
  unrolls = [int(u) for u in FLAGS.scan_unroll.split(",")] if FLAGS.scan_unroll else [config.model.scan_unroll]
  grid = [(p, u, b) for p in FLAGS.remat.split(",") for u in unrolls for b in map(int, FLAGS.batch_sizes.split(","))]
  first = {}  # batch -> the first row's step time at that batch: `vs first`
  for repeat in range(FLAGS.repeats):
    for policy, unroll, batch in grid:
      config.model.remat_policy, config.model.scan_unroll = policy, unroll
      try:
        name = f"{policy}_u{unroll}_b{batch}" + (f"_r{repeat}" if FLAGS.repeats > 1 else "")
        trace_dir = os.path.join(FLAGS.profile_dir, name) if FLAGS.profile_dir else None
        r = run_one(config, batch, FLAGS.text_len, FLAGS.steps, FLAGS.grad_accum, trace_dir)
      except Exception as e:  # out of memory at large batch: report and go on
        print(f"{policy:>14} {unroll:>6} {batch:>5} failed: {type(e).__name__}: {str(e).splitlines()[0][:120]}")
        continue
      d = throughput(config, batch, FLAGS.text_len, r["step_s"], peak, ref)
      mfu = f"{d['mfu']:6.1%}" if peak else "   n/a"
      ratio = r["step_s"] / first.setdefault(batch, r["step_s"])
      print(
        f"{policy:>14} {unroll:>6} {batch:>5} {r['step_s'] * 1e3:9.1f} {ratio:8.2f} {d['ex_s']:8.1f} "
        f"{d['tokens_s']:10.0f} {d['tflop_step']:10.2f} {d['tflop_s']:8.1f} {mfu} "
        f"{d['vs_matmul']:9.2f} {r['peak_gib']:8.1f} {r['compile_s']:9.1f}",
        flush=True,
      )
      if trace_dir:
        print_profile(trace_dir, r["profile_error"])
  print(f"params: {r['params'] / 1e9:.3f} B" if "r" in locals() else "")


if __name__ == "__main__":
  define_flags()
  app.run(main)
