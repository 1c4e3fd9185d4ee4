r"""Training data pipeline throughput and memory at 224 px (decode, augmentation, tokenization, batching).

  python benchmarks/data.py --episodes=50,500 --workers=0,2 --batches=40

For each dataset size (synthetic RLDS episodes of 20 steps with 256x256 JPEG frames, written by TFDS in
the published layout, then converted once): the full grain pipeline of a 224 px π0+ run (robot only, string
actions, augmentation on), measured per number of grain worker processes: time to first batch,
examples/s in total and per worker (or per process at 0 workers), and peak RSS of the whole process
tree (the main process plus worker processes, sampled every 20 ms), each measured in a fresh process
(conversion runs before, in the parent). Memory should not grow with the
dataset size: the two sizes are 10x apart. Conversion time is reported separately.

With --reference_python (a Python that has tensorflow and tensorflow-datasets; this project does not
install TensorFlow), the datasets are written as TFRecord like the published ones and the tf.data RLDS
reference (Octo / OpenVLA style: frame shuffle buffer, decode, resize, augment, batch; `run_reference`)
runs over the same episodes in the same run; genvla converts and reads that same TFRecord data.
"""

import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from absl import app, flags
import numpy as np

from measure import PeakRSS, tree_rss_bytes

from genvla_jax.data import rlds_writer  # (imports only TFDS)

FLAGS = flags.FLAGS
flags.DEFINE_string("episodes", "50,500", "dataset sizes (episodes of 20 steps)")
flags.DEFINE_string("workers", "0,2", "grain worker process counts")
flags.DEFINE_integer("batches", 40, "batches timed (after the first batch and the warm-up batches)")
flags.DEFINE_integer("warmup", 10, "batches skipped after the first (drains what workers prefetched)")
flags.DEFINE_integer("batch_size", 32, "global batch")
flags.DEFINE_string("root", "", "where datasets are written (default: a temporary directory)")
flags.DEFINE_integer("measure_episodes", 0, "internal: measure the pipeline on this size in this process")
flags.DEFINE_integer("measure_workers", 0, "internal: grain workers for --measure_episodes")
flags.DEFINE_string(
  "reference_python",
  "",
  "a Python with tensorflow + tensorflow-datasets: writes the datasets "
  "as TFRecord (as published) and runs the tf.data reference",
)
flags.DEFINE_integer("shuffle_buffer", 10_000, "reference: frame shuffle buffer (OpenVLA uses 256 000)")
flags.DEFINE_integer("write_episodes", 0, "internal (reference env): write a TFRecord dataset of this size")
flags.DEFINE_integer("reference_episodes", 0, "internal (reference env): run the tf.data reference")


def write_dataset(
  root: str, episodes: int, steps: int = 20, size: int = 256, seed: int = 0, file_format: str = "array_record"
) -> str:
  """Synthetic RLDS (Bridge-like features) written by TFDS; smooth random images (JPEG-compressible)."""
  import tensorflow_datasets as tfds
  from PIL import Image

  rng = np.random.default_rng(seed)
  base = rng.integers(0, 255, (8, 8, 3), dtype=np.uint8)

  def frame(t):
    small = np.clip(base.astype(int) + rng.integers(-20, 20, base.shape), 0, 255).astype(np.uint8)
    return Image.fromarray(small).resize((size, size), Image.BILINEAR)

  f = tfds.features
  step = {
    "observation": {
      "image_0": f.Image(shape=(size, size, 3), encoding_format="jpeg"),
      "state": f.Tensor(shape=(7,), dtype=np.float32),
    },
    "action": f.Tensor(shape=(7,), dtype=np.float32),
    "language_instruction": f.Text(),
    "is_first": np.bool_,
    "is_last": np.bool_,
    "is_terminal": np.bool_,
  }
  episodes_iter = (
    (
      e,
      {
        "steps": [
          {
            "observation": {"image_0": frame(t), "state": rng.normal(0, 1, 7).astype(np.float32)},
            "action": np.append(rng.normal(0, 0.02, 6), rng.integers(0, 2)).astype(np.float32),
            "language_instruction": "put the spoon in the pot",
            "is_first": t == 0,
            "is_last": t == steps - 1,
            "is_terminal": t == steps - 1,
          }
          for t in range(steps)
        ]
      },
    )
    for e in range(episodes)
  )
  return rlds_writer.write_rlds(root, "synthetic_robot", step, {"train": episodes_iter}, file_format=file_format)


def time_batches(it, start: float, batches: int, warmup: int, batch_size: int) -> dict:
  """Time to the first batch (since `start`), then examples/s over `batches` after `warmup` more."""
  next(it)
  first = time.perf_counter() - start
  for _ in range(warmup):
    next(it)
  t = time.perf_counter()
  for _ in range(batches):
    next(it)
  return dict(first_s=first, examples_per_s=batches * batch_size / (time.perf_counter() - t))


def run_pipeline(config, workers: int, batches: int, warmup: int) -> dict:
  from genvla_jax.data import pipeline, prepare

  config.data.num_workers = workers
  prepared = prepare.prepare(config.data)
  sampler = PeakRSS(tree_rss_bytes, interval=0.02)
  start = time.perf_counter()
  it = iter(pipeline.make_dataset(config, prepared, seed=0))
  result = time_batches(it, start, batches, warmup, config.data.batch_size)
  if hasattr(it, "close"):
    it.close()
  return dict(result, peak_gib=sampler.stop() / 2**30)


def run_reference(data_dir: str, batches: int, warmup: int, batch_size: int, buffer: int) -> dict:
  """The tf.data RLDS pipeline the Octo / OpenVLA loaders build (runs where TensorFlow is installed):
  episodes -> flat_map to frames (images still encoded) -> shuffle buffer -> decode, resize to 224,
  random crop + colour jitter -> batch -> prefetch. Tokenization is not included (those loaders do it
  in Python afterwards), so the reference does strictly less work than the genvla pipeline."""
  import tensorflow as tf
  import tensorflow_datasets as tfds

  sampler = PeakRSS(tree_rss_bytes, interval=0.02)
  start = time.perf_counter()
  builder = tfds.builder_from_directory(data_dir)
  decoders = {"steps": {"observation": {"image_0": tfds.decode.SkipDecoding()}}}
  ds = builder.as_dataset(split="train", shuffle_files=True, decoders=decoders).repeat()
  ds = ds.flat_map(lambda episode: episode["steps"]).shuffle(buffer, seed=0)

  def frame(step):
    image = tf.io.decode_jpeg(step["observation"]["image_0"], channels=3)
    image = tf.image.resize(tf.image.random_crop(image, (243, 243, 3)), (224, 224))
    image = tf.image.random_brightness(image, 0.2 * 255)
    image = tf.image.random_contrast(image, 0.8, 1.2)
    image = tf.image.random_saturation(image, 0.8, 1.2)
    return {
      "image": tf.clip_by_value(image, 0, 255) / 127.5 - 1,
      "action": step["action"],
      "instruction": step["language_instruction"],
    }

  ds = ds.map(frame, num_parallel_calls=tf.data.AUTOTUNE).batch(batch_size).prefetch(tf.data.AUTOTUNE)
  result = time_batches(iter(ds), start, batches, warmup, batch_size)
  return dict(result, peak_gib=sampler.stop() / 2**30)


def make_config(root: str, episodes: int):
  from configs import pi0_plus

  config = pi0_plus.get_config("full,ablation=DS")  # robot only, string actions; augmentation on
  config.unlock()
  config.data.rlds_root = os.path.join(root, f"rlds_{episodes}")
  config.data.robot = [dict(name="bridge", path="synthetic_robot/1.0.0", split="train", weight=1.0)]
  config.data.cache_dir = os.path.join(root, "cache")
  config.data.batch_size = FLAGS.batch_size
  config.tokenizer.path = os.path.join(root, "tokenizer.model")
  config.model.llm.vocab_size = 1024
  return config


def main(argv):
  del argv
  import json
  import subprocess

  root = FLAGS.root or tempfile.mkdtemp(prefix="genvla_data_bench_")
  if FLAGS.write_episodes:  # reference env: TFDS can write TFRecord where TensorFlow is installed
    write_dataset(os.path.join(root, f"rlds_{FLAGS.write_episodes}"), FLAGS.write_episodes, file_format="tfrecord")
    return
  if FLAGS.reference_episodes:
    data_dir = os.path.join(root, f"rlds_{FLAGS.reference_episodes}", "synthetic_robot", "1.0.0")
    print(json.dumps(run_reference(data_dir, FLAGS.batches, FLAGS.warmup, FLAGS.batch_size, FLAGS.shuffle_buffer)))
    return
  from genvla_jax.data import prepare
  from genvla_jax.tokenizers import text

  if FLAGS.measure_episodes:  # child process: the pipeline alone
    r = run_pipeline(make_config(root, FLAGS.measure_episodes), FLAGS.measure_workers, FLAGS.batches, FLAGS.warmup)
    print(json.dumps(r))
    return
  tokenizer = os.path.join(root, "tokenizer.model")
  if not os.path.exists(tokenizer):
    text.train_sentencepiece(
      ["put the spoon in the pot", "+0.0312 -0.5000 | +1.0000"] * 50 + [str(i) for i in range(100)],
      tokenizer,
      vocab_size=384,
    )
  print(
    f"{'episodes':>8} {'steps':>6} {'workers':>7} {'first batch s':>13} {'ex/s':>7} {'ex/s per proc':>13} "
    f"{'peak RSS GiB':>12}"
  )
  for episodes in [int(e) for e in FLAGS.episodes.split(",")]:
    t = time.perf_counter()
    if FLAGS.reference_python:
      subprocess.run(
        [FLAGS.reference_python, os.path.abspath(__file__), f"--root={root}", f"--write_episodes={episodes}"],
        check=True,
        capture_output=True,
      )
    else:
      write_dataset(os.path.join(root, f"rlds_{episodes}"), episodes)
    written = time.perf_counter() - t
    t = time.perf_counter()
    prepare.prepare(make_config(root, episodes).data)  # conversion, in this process
    converted = time.perf_counter() - t
    print(f"# {episodes} episodes: written by TFDS in {written:.0f}s, converted in {converted:.1f}s", flush=True)
    for workers in [int(w) for w in FLAGS.workers.split(",")]:
      out = subprocess.run(
        [
          sys.executable,
          os.path.abspath(__file__),
          f"--root={root}",
          f"--measure_episodes={episodes}",
          f"--measure_workers={workers}",
          f"--batches={FLAGS.batches}",
          f"--warmup={FLAGS.warmup}",
          f"--batch_size={FLAGS.batch_size}",
        ],
        check=True,
        capture_output=True,
        text=True,
      )
      r = json.loads(out.stdout.strip().splitlines()[-1])
      print(
        f"{episodes:8d} {episodes * 20:6d} {workers:7d} {r['first_s']:13.2f} {r['examples_per_s']:7.1f} "
        f"{r['examples_per_s'] / max(workers, 1):13.1f} {r['peak_gib']:12.2f}",
        flush=True,
      )
    if FLAGS.reference_python:
      out = subprocess.run(
        [
          FLAGS.reference_python,
          os.path.abspath(__file__),
          f"--root={root}",
          f"--reference_episodes={episodes}",
          f"--batches={FLAGS.batches}",
          f"--warmup={FLAGS.warmup}",
          f"--batch_size={FLAGS.batch_size}",
          f"--shuffle_buffer={FLAGS.shuffle_buffer}",
        ],
        check=True,
        capture_output=True,
        text=True,
      )
      r = json.loads(out.stdout.strip().splitlines()[-1])
      print(
        f"{episodes:8d} {episodes * 20:6d} {'tf.data':>7} {r['first_s']:13.2f} {r['examples_per_s']:7.1f} "
        f"{'(all cores)':>13} {r['peak_gib']:12.2f}",
        flush=True,
      )


if __name__ == "__main__":
  app.run(main)
