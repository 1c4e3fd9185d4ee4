r"""Checkpoint bytes on disk, whole vs adapters-only (training/frozen_base.py), measured at the demo size and
expected at full size from the parameter counts.

  python benchmarks/lora_checkpoint_size.py [--rank=16] [--workdir=/tmp/lora_ckpt_size]

Measured: configs/pi0_plus.py:demo with LoRA (rank 4, decoder attention + MLP) and optimizer.frozen=["llm/.*"],
2 steps at batch 8, saved once with train.checkpoint_frozen=True (whole) and once by default (trainable
leaves + a reference to the base); bytes of the step directory (all items) and of its params + train items.
Expected at full size (nothing allocated: abstract shapes): params item = the saved leaves at their storage
dtype, train item = AdamW's two float32 moments per trainable parameter; whole = every parameter + the same
optimizer state. Rows: pi0_plus:full and pi0_baseline:full with LoRA rank --rank on the decoder (and the
expert's decoder for π0), the decoder frozen ("classic LoRA": tower, projector trainable), and with the trained
tower frozen too.
"""

import json
import os
import pathlib
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from absl import app, flags

FLAGS = flags.FLAGS
flags.DEFINE_integer("rank", 16, "LoRA rank of the full-size rows")
flags.DEFINE_string("workdir", "/tmp/lora_ckpt_size", "scratch directory (demo data + the two runs)")


def _bytes(path: pathlib.Path) -> int:
  return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def measured(workdir: str) -> dict:
  from configs import pi0_plus
  from genvla_jax import train
  from genvla_jax.data import demo

  root = pathlib.Path(workdir)
  demo.ensure(str(root / "demo"), train_episodes=24, val_episodes=6, vl_train=40, vl_val=8)
  out = {}
  for name, whole in (("whole", True), ("adapters_only", False)):
    config = pi0_plus.get_config("demo")
    config.data.demo_dir, config.data.cache_dir = str(root / "demo"), str(root / "cache")
    config.data.batch_size, config.train.steps, config.train.checkpoint_every = 8, 2, 2
    config.lora.rank, config.lora.alpha = 4, 8.0
    config.optimizer.frozen = ["llm/.*"]
    config.train.checkpoint_frozen = whole
    run = root / name
    if not (run / "checkpoints" / "2").is_dir():
      train.train(config, str(run), printer=lambda *a, **k: None)
    step = run / "checkpoints" / "2"
    out[name] = {"step_dir": _bytes(step), "params+train": _bytes(step / "params") + _bytes(step / "train")}
  out["ratio_step_dir"] = out["adapters_only"]["step_dir"] / out["whole"]["step_dir"]
  out["ratio_params+train"] = out["adapters_only"]["params+train"] / out["whole"]["params+train"]
  return out


def expected(config_name: str, arg: str, rank: int, frozen: list[str], targets: list[str]) -> dict:
  import importlib

  import jax
  import numpy as np

  from genvla_jax.training import freezing

  config = importlib.import_module(f"configs.{config_name}").get_config(arg)
  config.lora.rank, config.lora.targets = rank, targets
  config.optimizer.frozen = frozen
  params = freezing.abstract_params(config)
  mask = jax.tree.leaves(freezing.trainable_mask(params, frozen))
  leaves = jax.tree.leaves(params)
  nbytes = [int(np.prod(x.shape)) * np.dtype(x.dtype).itemsize for x in leaves]
  trainable = sum(int(np.prod(x.shape)) for x, m in zip(leaves, mask) if m)
  adapters = sum(int(np.prod(x.shape)) for x in jax.tree.leaves(params["lora"]))
  opt = 8 * trainable  # AdamW mu + nu, float32
  whole = sum(nbytes) + opt
  only = sum(b for b, m in zip(nbytes, mask) if m) + opt
  return {
    "config": f"{config_name}:{arg}",
    "frozen": frozen,
    "params": sum(int(np.prod(x.shape)) for x in leaves) - adapters,
    "adapters": adapters,
    "trainable": trainable,
    "whole_GiB": whole / 2**30,
    "adapters_only_GiB": only / 2**30,
    "ratio": only / whole,
    "adapter_bytes_over_total": 4 * adapters / sum(nbytes),
  }


def main(argv):
  del argv
  rows = {"measured_demo": measured(FLAGS.workdir)}
  decoder = ["llm/layers/attn/.*", "llm/layers/mlp/.*"]
  expert = ["expert/llm/layers/(attn|mlp)/.*"]
  rows["full"] = [
    expected("pi0_plus", "full", FLAGS.rank, ["llm/.*"], decoder),
    expected("pi0_plus", "full", FLAGS.rank, ["llm/.*", "img/.*"], decoder),
    expected("pi0_baseline", "full", FLAGS.rank, ["llm/.*", "expert/llm/.*"], decoder + expert),
  ]
  print(json.dumps(rows, indent=1))


if __name__ == "__main__":
  app.run(main)
