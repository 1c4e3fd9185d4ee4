r"""Host memory and time of importing a full-size PaliGemma HF checkpoint (streamed, tensor by tensor).

  python benchmarks/import_checkpoint.py --backbone=paligemma_224 --dir=/tmp/paligemma_random \
      --dtype=bfloat16

Writes a random full-size checkpoint to --dir first if it has none (random weights: the numbers are
about bytes, not values). Then, each in a fresh process, so that peak RSS is that method's alone:
  reference  safetensors.numpy.load_file of every shard (one whole host copy, what a naive loader holds)
  genvla     genvla_jax.pretrained.api.load into the model (params on the default device, cast to --dtype)
Reported: wall seconds, peak RSS (current RSS sampled every 5 ms), RSS added over the process after jax
has initialised its device, and that increase relative to the reference's.
"""

import json
import os
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from absl import app, flags

import measure as measure_lib

FLAGS = flags.FLAGS
flags.DEFINE_string("backbone", "paligemma_224", "genvla_jax.config_lib.BACKBONES entry")
flags.DEFINE_string("dir", "/tmp/paligemma_random", "checkpoint directory (written if missing)")
flags.DEFINE_string("dtype", "bfloat16", "storage dtype of the written checkpoint and of the params")
flags.DEFINE_string("method", "", "internal: run one method in this process and print JSON")


def write_random(backbone: str, out: str, dtype: str):
  import jax
  import ml_collections
  from genvla_jax import config_lib
  from genvla_jax.models import build, surgery
  from genvla_jax.pretrained import hf

  img, llm, size = config_lib.BACKBONES[backbone]
  model = build.vla(dict(img), dict(llm), param_dtype=dtype)
  params = jax.jit(lambda: surgery.init_params(model, jax.random.PRNGKey(0), size))()
  config = ml_collections.ConfigDict(dict(image_size=size, img=dict(img), llm=dict(llm)))
  hf.export(params, config, out, dtype=dtype)


def measure(method: str) -> dict:
  import jax

  jax.numpy.zeros(1).block_until_ready()  # device initialised before the baseline
  base = measure_lib.rss_bytes(os.getpid()) / 2**30
  sampler = measure_lib.PeakRSS()
  t = time.perf_counter()
  if method == "reference":
    from safetensors.numpy import load_file

    tensors = {}
    for f in sorted(os.listdir(FLAGS.dir)):
      if f.endswith(".safetensors"):
        tensors.update(load_file(os.path.join(FLAGS.dir, f)))
    count = sum(v.size for v in tensors.values())
  else:
    from genvla_jax.models import build, surgery
    from genvla_jax.pretrained import api

    arch = api.architecture("hf", FLAGS.dir)
    model = build.vla(arch["img"], arch["llm"], param_dtype=FLAGS.dtype)
    params = api.load("hf", FLAGS.dir, model, arch["image_size"])
    jax.block_until_ready(params)
    count = surgery.count_params(params)
  seconds = time.perf_counter() - t
  return dict(
    seconds=seconds, peak_gib=sampler.stop() / 2**30, base_gib=base, params=count, device=jax.devices()[0].device_kind
  )


def main(argv):
  del argv
  if FLAGS.method:
    print(json.dumps(measure(FLAGS.method)))
    return
  if not os.path.exists(os.path.join(FLAGS.dir, "config.json")):
    t = time.perf_counter()
    write_random(FLAGS.backbone, FLAGS.dir, FLAGS.dtype)
    print(f"wrote random {FLAGS.backbone} checkpoint to {FLAGS.dir} in {time.perf_counter() - t:.0f}s")
  size = (
    sum(os.path.getsize(os.path.join(FLAGS.dir, f)) for f in os.listdir(FLAGS.dir) if f.endswith(".safetensors"))
    / 2**30
  )
  results = {}
  for method in ("reference", "genvla"):
    out = subprocess.run(
      [sys.executable, __file__, f"--method={method}", f"--dir={FLAGS.dir}", f"--dtype={FLAGS.dtype}"],
      check=True,
      capture_output=True,
      text=True,
      cwd=ROOT,
    )
    results[method] = json.loads(out.stdout.strip().splitlines()[-1])
  print(
    f"checkpoint: {FLAGS.dir} ({size:.2f} GiB safetensors, {results['genvla']['params'] / 1e9:.3f} B params, "
    f"{FLAGS.dtype}); device {results['genvla']['device']}"
  )
  print(f"{'method':>10} {'seconds':>8} {'peak RSS GiB':>12} {'added GiB':>9} {'added vs reference':>18}")
  ref_added = results["reference"]["peak_gib"] - results["reference"]["base_gib"]
  for method, r in results.items():
    added = r["peak_gib"] - r["base_gib"]
    print(f"{method:>10} {r['seconds']:8.1f} {r['peak_gib']:12.2f} {added:9.2f} {added / max(ref_added, 1e-9):18.2f}")


if __name__ == "__main__":
  app.run(main)
