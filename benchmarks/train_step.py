r"""Train-step throughput of a config's model on the local accelerator (random weights, synthetic batch).

  python benchmarks/train_step.py --config=configs/pi0_plus.py --batch_sizes=4,8,16 --dtype=bfloat16 \
      --remat=none,dots
  python benchmarks/train_step.py --config=configs/pi0_plus.py:demo --batch_sizes=8     # CPU smoke
  ... --param_dtype=bfloat16 --frozen_dtype=bfloat16   # bf16 storage, float32 optimizer state
  ... --grad_accum=4                                    # micro-batches: the same update, 1/4 the activations

For each (remat policy, batch size): step time, examples/s, tokens/s, model FLOPs per step (analytic,
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
from genvla_jax.models import build, surgery
from genvla_jax.training import flops as flops_lib, optimizer, sharding, state as state_lib, step as step_lib

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file("config", "configs/pi0_plus.py", "model config", lock_config=False)
flags.DEFINE_string("batch_sizes", "4,8", "comma-separated global batch sizes")
flags.DEFINE_string("remat", "none", "comma-separated remat policies (none, dots, dots_no_batch, full)")
flags.DEFINE_string("dtype", "bfloat16", "compute dtype")
flags.DEFINE_string("param_dtype", "float32", "storage dtype of trained params (optimizer state: float32)")
flags.DEFINE_string("frozen_dtype", "float32", "storage dtype of the frozen tower")
flags.DEFINE_integer("text_len", 64, "text tokens per example (prompt + answer)")
flags.DEFINE_integer("steps", 5, "timed steps (after 2 warm-up steps)")
flags.DEFINE_integer("grad_accum", 1, "micro-batches per step (config.train.grad_accum_steps)")


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


def run_one(config, batch: int, text_len: int, steps: int):
  model = build.from_config(config.model)
  tx = optimizer.make(config.optimizer, 1000)
  mesh = sharding.make_mesh(config.mesh)
  state, shardings, _ = state_lib.create(model, tx, config.model.image_size, mesh, jax.random.PRNGKey(0))
  size = config.model.image_size
  rng = np.random.default_rng(0)
  prompt = text_len // 2
  local = dict(
    image=rng.uniform(-1, 1, (batch, size, size, 3)).astype(np.float32),
    tokens=rng.integers(3, 1000, (batch, text_len)).astype(np.int32),
    input_mask=np.ones((batch, text_len), bool),
    ar_mask=np.broadcast_to(np.arange(text_len) >= prompt, (batch, text_len)).copy(),
    loss_mask=np.broadcast_to(np.arange(text_len) >= prompt, (batch, text_len)).copy(),
    is_robot=np.ones(batch, bool),
    num_clipped=np.zeros(batch, np.int32),
  )
  batch_arrays = sharding.to_global(local, mesh)
  train_step = step_lib.jit_train_step(
    step_lib.make_train_step(model, tx, lambda s: 1e-5, FLAGS.grad_accum), shardings, mesh
  )
  t = time.perf_counter()
  state, metrics = train_step(state, batch_arrays)
  jax.block_until_ready(metrics)
  compile_s = time.perf_counter() - t
  state, metrics = train_step(state, batch_arrays)
  jax.block_until_ready(metrics)
  t = time.perf_counter()
  for _ in range(steps):
    state, metrics = train_step(state, batch_arrays)
  jax.block_until_ready(metrics)
  step_s = (time.perf_counter() - t) / steps
  stats = jax.devices()[0].memory_stats() or {}
  del state
  return dict(
    step_s=step_s,
    compile_s=compile_s,
    loss=float(metrics["loss"]),
    peak_gib=stats.get("peak_bytes_in_use", 0) / 2**30,
    params=surgery.count_params(jax.eval_shape(lambda: surgery.init_params(model, jax.random.PRNGKey(0), size))),
  )


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
    f"{'remat':>14} {'batch':>5} {'step ms':>9} {'ex/s':>8} {'tokens/s':>10} {'TFLOP/step':>10} "
    f"{'TFLOP/s':>8} {'MFU':>6} {'vs matmul':>9} {'peak GiB':>8} {'compile s':>9}"
  )
  print(header)
  for policy in FLAGS.remat.split(","):
    config.model.remat_policy = policy
    for batch in [int(b) for b in FLAGS.batch_sizes.split(",")]:
      try:
        r = run_one(config, batch, FLAGS.text_len, FLAGS.steps)
      except Exception as e:  # out of memory at large batch: report and go on
        print(f"{policy:>14} {batch:>5} failed: {type(e).__name__}: {str(e).splitlines()[0][:120]}")
        continue
      flops = flops_lib.model_flops(config.model, batch, FLAGS.text_len, head=heads.from_config(config))
      achieved = flops / r["step_s"]
      tokens = batch * ((config.model.image_size // config.model.img.patch_size) ** 2 + FLAGS.text_len)
      mfu = f"{achieved / peak:6.1%}" if peak else "   n/a"
      print(
        f"{policy:>14} {batch:>5} {r['step_s'] * 1e3:9.1f} {batch / r['step_s']:8.1f} "
        f"{tokens / r['step_s']:10.0f} {flops / 1e12:10.2f} {achieved / 1e12:8.1f} {mfu} "
        f"{achieved / ref:9.2f} {r['peak_gib']:8.1f} {r['compile_s']:9.1f}",
        flush=True,
      )
  print(f"params: {r['params'] / 1e9:.3f} B" if "r" in locals() else "")


if __name__ == "__main__":
  app.run(main)
