r"""Training data pipeline throughput and memory at 224 px (decode, augmentation, tokenization, batching).

  python benchmarks/data.py --episodes=50,500 --workers=0,2 --batches=40

For each dataset size (synthetic RLDS episodes of 20 steps with 256x256 JPEG frames, written by TFDS in
the published layout, then converted once): the full grain pipeline of a 224 px π0+ run (robot only, string
actions, augmentation on), measured per number of grain worker processes: time to first batch,
examples/s in total and per worker (or per process at 0 workers), and peak RSS of the whole process
tree (the main process plus worker processes, sampled every 20 ms). Memory should not grow with the
dataset size: the two sizes are 10x apart. Conversion time is reported separately.

The tf.data RLDS reference (Octo / OpenVLA style) is not run here: this project does not install
TensorFlow (see benchmarks/RESULTS.md).
"""

import os
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from absl import app, flags  # pylint: disable=g-import-not-at-top
import numpy as np

FLAGS = flags.FLAGS
flags.DEFINE_string("episodes", "50,500", "dataset sizes (episodes of 20 steps)")
flags.DEFINE_string("workers", "0,2", "grain worker process counts")
flags.DEFINE_integer("batches", 40, "batches timed after the first")
flags.DEFINE_integer("batch_size", 32, "global batch")
flags.DEFINE_string("root", "", "where datasets are written (default: a temporary directory)")


def tree_rss_bytes(pid: int) -> int:
  """RSS of a process and all its descendants (from /proc)."""
  children = {}
  for entry in os.listdir("/proc"):
    if entry.isdigit():
      try:
        with open(f"/proc/{entry}/stat") as f:
          parent = int(f.read().rsplit(")", 1)[1].split()[1])
        children.setdefault(parent, []).append(int(entry))
      except (OSError, ValueError, IndexError):
        continue
  total, stack = 0, [pid]
  while stack:
    p = stack.pop()
    try:
      with open(f"/proc/{p}/status") as f:
        total += next(int(line.split()[1]) for line in f if line.startswith("VmRSS:")) * 1024
    except (OSError, StopIteration):
      pass
    stack += children.get(p, [])
  return total


class PeakTreeRSS:
  def __init__(self):
    self.peak, self._stop = 0, threading.Event()
    self._thread = threading.Thread(target=self._run, daemon=True)
    self._thread.start()

  def _run(self):
    while not self._stop.wait(0.02):
      self.peak = max(self.peak, tree_rss_bytes(os.getpid()))

  def stop(self) -> int:
    self._stop.set()
    self._thread.join()
    return self.peak


def write_dataset(root: str, episodes: int, steps: int = 20, size: int = 256, seed: int = 0) -> str:
  """Synthetic RLDS (Bridge-like features) written by TFDS; smooth random images (JPEG-compressible)."""
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  from PIL import Image  # pylint: disable=g-import-not-at-top
  rng = np.random.default_rng(seed)
  base = rng.integers(0, 255, (8, 8, 3), dtype=np.uint8)

  def frame(t):
    small = np.clip(base.astype(int) + rng.integers(-20, 20, base.shape), 0, 255).astype(np.uint8)
    return Image.fromarray(small).resize((size, size), Image.BILINEAR)

  class SyntheticRobot(tfds.core.GeneratorBasedBuilder):
    VERSION = tfds.core.Version("1.0.0")

    def _info(self):
      f = tfds.features
      step = {"observation": {"image_0": f.Image(shape=(size, size, 3), encoding_format="jpeg"),
                              "state": f.Tensor(shape=(7,), dtype=np.float32)},
              "action": f.Tensor(shape=(7,), dtype=np.float32), "language_instruction": f.Text(),
              "is_first": np.bool_, "is_last": np.bool_, "is_terminal": np.bool_}
      return tfds.core.DatasetInfo(builder=self, features=f.FeaturesDict({"steps": f.Dataset(step)}))

    def _split_generators(self, dl_manager):
      return {"train": self._generate_examples()}

    def _generate_examples(self):
      for e in range(episodes):
        yield e, {"steps": [{"observation": {"image_0": frame(t), "state": rng.normal(0, 1, 7).astype(np.float32)},
                             "action": np.append(rng.normal(0, 0.02, 6), rng.integers(0, 2)).astype(np.float32),
                             "language_instruction": "put the spoon in the pot", "is_first": t == 0,
                             "is_last": t == steps - 1, "is_terminal": t == steps - 1} for t in range(steps)]}

  tfds.disable_progress_bar()
  builder = SyntheticRobot(data_dir=root, file_format="array_record")
  builder.download_and_prepare(download_config=tfds.download.DownloadConfig(verify_ssl=False))
  return builder.data_dir


def run_pipeline(config, workers: int, batches: int) -> dict:
  from genvla_jax.data import pipeline, prepare  # pylint: disable=g-import-not-at-top
  config.data.num_workers = workers
  prepared = prepare.prepare(config.data)
  sampler = PeakTreeRSS()
  start = time.perf_counter()
  it = iter(pipeline.make_dataset(config, prepared, seed=0))
  next(it)
  first = time.perf_counter() - start
  t = time.perf_counter()
  for _ in range(batches):
    next(it)
  seconds = time.perf_counter() - t
  if hasattr(it, "close"):
    it.close()
  peak = sampler.stop()
  examples = batches * config.data.batch_size
  return dict(first_s=first, examples_per_s=examples / seconds, peak_gib=peak / 2**30)


def main(argv):
  del argv
  from configs import pi0_plus  # pylint: disable=g-import-not-at-top
  from genvla_jax.tokenizers import text  # pylint: disable=g-import-not-at-top
  root = FLAGS.root or tempfile.mkdtemp(prefix="genvla_data_bench_")
  tokenizer = os.path.join(root, "tokenizer.model")
  if not os.path.exists(tokenizer):
    text.train_sentencepiece(["put the spoon in the pot", "+0.0312 -0.5000 | +1.0000"] * 50
                             + [str(i) for i in range(100)], tokenizer, vocab_size=128)
  print(f"{'episodes':>8} {'steps':>6} {'workers':>7} {'first batch s':>13} {'ex/s':>7} {'ex/s per proc':>13} "
        f"{'peak RSS GiB':>12}")
  for episodes in [int(e) for e in FLAGS.episodes.split(",")]:
    t = time.perf_counter()
    data_dir = write_dataset(os.path.join(root, f"rlds_{episodes}"), episodes)
    written = time.perf_counter() - t
    config = pi0_plus.get_config("full,ablation=DS")  # robot only, string actions; augmentation on
    config.unlock()
    config.data.rlds_root = os.path.dirname(os.path.dirname(data_dir))
    config.data.robot = [dict(name="bridge", path="synthetic_robot/1.0.0", split="train", weight=1.0)]
    config.data.cache_dir = os.path.join(root, "cache")
    config.data.batch_size = FLAGS.batch_size
    config.tokenizer.path = tokenizer
    config.model.llm.vocab_size = 1024
    t = time.perf_counter()
    from genvla_jax.data import prepare  # pylint: disable=g-import-not-at-top
    prepare.prepare(config.data)
    converted = time.perf_counter() - t
    print(f"# {episodes} episodes: written by TFDS in {written:.0f}s, converted in {converted:.1f}s", flush=True)
    for workers in [int(w) for w in FLAGS.workers.split(",")]:
      r = run_pipeline(config, workers, FLAGS.batches)
      print(f"{episodes:8d} {episodes * 20:6d} {workers:7d} {r['first_s']:13.2f} {r['examples_per_s']:7.1f} "
            f"{r['examples_per_s'] / max(workers, 1):13.1f} {r['peak_gib']:12.2f}", flush=True)


if __name__ == "__main__":
  app.run(main)
