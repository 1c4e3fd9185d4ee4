"""Converts a published RLDS dataset into step-level ArrayRecord shards that grain reads at random.

  python -m genvla_jax.data.convert --rlds_dir=DIR --dataset=NAME --split=train --out=OUT

Output directory (written to OUT.tmp-*, renamed into place only when complete):
  steps-XXXXX-of-YYYYY.array_record   one msgpack record per step, episodes contiguous:
      {"image": bytes, "state": f32 [S], "action": f32 [D], "instruction": str,
       "episode": int, "step": int, "episode_length": int}
  episodes.npz   start [E], length [E] (global record index of each episode's first step)
  stats.json     action/state statistics (stats.py), with the registry's normalize_mask
  meta.json      source, counts, per-shard record counts and sha256, skipped steps with their location
Steps with a non-finite action or state, or an empty instruction, are skipped and listed in meta.json.
"""

import hashlib
import json
import os
import shutil
import tempfile

from absl import app, flags, logging
from array_record.python import array_record_module
from flax import serialization
import numpy as np

from genvla_jax.data import registry, rlds, stats as stats_lib

FORMAT_VERSION = 1


def encode_step(record: dict) -> bytes:
  return serialization.msgpack_serialize(record)


def decode_step(data: bytes) -> dict:
  return serialization.msgpack_restore(data)


def _sha256(path):
  h = hashlib.sha256()
  with open(path, "rb") as f:
    for block in iter(lambda: f.read(1 << 20), b""):
      h.update(block)
  return h.hexdigest()


def _bad_reason(step) -> str | None:
  if not np.all(np.isfinite(step["action"])):
    return "non-finite action"
  if not np.all(np.isfinite(step["state"])):
    return "non-finite state"
  if not step["instruction"].strip():
    return "empty instruction"
  if not isinstance(step["image"], bytes) or not step["image"]:
    return "missing image"
  return None


def convert(rlds_dir: str, dataset: str, split: str, out_dir: str, steps_per_shard: int = 10_000) -> dict:
  """Converts one split; returns meta. Skips the work if `out_dir` already holds a complete conversion."""
  meta_path = os.path.join(out_dir, "meta.json")
  if os.path.exists(meta_path):
    with open(meta_path) as f:
      return json.load(f)
  spec = registry.get(dataset)
  source = rlds.RLDSDataset(rlds_dir, split)
  parent = os.path.dirname(os.path.abspath(out_dir))
  os.makedirs(parent, exist_ok=True)
  tmp = tempfile.mkdtemp(prefix=os.path.basename(out_dir) + ".tmp-", dir=parent)
  try:
    meta = _write(source, spec, tmp, steps_per_shard)
    meta.update(source=os.path.abspath(rlds_dir), dataset=dataset, split=split)
    with open(os.path.join(tmp, "meta.json"), "w") as f:
      json.dump(meta, f, indent=1)
    os.rename(tmp, out_dir)
  except BaseException:
    shutil.rmtree(tmp, ignore_errors=True)
    raise
  logging.info("converted %s/%s: %d episodes, %d steps, %d skipped -> %s", dataset, split,
               meta["num_episodes"], meta["num_steps"], len(meta["skipped_steps"]), out_dir)
  return meta


def _write(source, spec, out_dir, steps_per_shard) -> dict:
  records, starts, lengths, skipped, actions, states = [], [], [], [], [], []
  for e, episode in enumerate(source):
    good = []
    for s, raw in enumerate(episode["steps"]):
      step = spec.standardize(raw)
      reason = _bad_reason(step)
      if reason:
        skipped.append({"episode": e, "step": s, "reason": reason})
        continue
      good.append(step)
    if not good:
      continue
    starts.append(len(records))
    lengths.append(len(good))
    for s, step in enumerate(good):
      records.append(encode_step(dict(step, episode=len(starts) - 1, step=s, episode_length=len(good))))
      actions.append(step["action"])
      states.append(step["state"])
  if not records:
    raise ValueError(f"no usable steps in {source.files}")
  num_shards = -(-len(records) // steps_per_shard)
  shards = []
  for i in range(num_shards):
    name = f"steps-{i:05d}-of-{num_shards:05d}.array_record"
    path = os.path.join(out_dir, name)
    writer = array_record_module.ArrayRecordWriter(path, "group_size:1")
    chunk = records[i * steps_per_shard:(i + 1) * steps_per_shard]
    for r in chunk:
      writer.write(r)
    writer.close()
    shards.append({"file": name, "records": len(chunk), "sha256": _sha256(path)})
  np.savez(os.path.join(out_dir, "episodes.npz"), start=np.array(starts), length=np.array(lengths))
  statistics = {"action": stats_lib.describe(np.stack(actions), spec.normalize_mask),
                "state": stats_lib.describe(np.stack(states))}
  with open(os.path.join(out_dir, "stats.json"), "w") as f:
    json.dump(statistics, f, indent=1)
  return {"format_version": FORMAT_VERSION, "num_episodes": len(starts), "num_steps": len(records),
          "action_dim": int(len(actions[0])), "state_dim": int(len(states[0])), "shards": shards,
          "skipped_steps": skipped}


def verify(out_dir: str) -> dict:
  """Checks every shard's checksum and record count against meta.json; raises naming the bad shard."""
  with open(os.path.join(out_dir, "meta.json")) as f:
    meta = json.load(f)
  for shard in meta["shards"]:
    path = os.path.join(out_dir, shard["file"])
    if not os.path.exists(path):
      raise FileNotFoundError(f"shard missing: {path}")
    if _sha256(path) != shard["sha256"]:
      raise ValueError(f"shard corrupt (sha256 mismatch): {path}")
  return meta


FLAGS = flags.FLAGS


def main(argv):
  del argv
  meta = convert(FLAGS.rlds_dir, FLAGS.dataset, FLAGS.split, FLAGS.out, FLAGS.steps_per_shard)
  verify(FLAGS.out)
  print(json.dumps({k: v for k, v in meta.items() if k != "shards"}, indent=1))


if __name__ == "__main__":
  flags.DEFINE_string("rlds_dir", None, "TFDS prepared-dataset version directory", required=True)
  flags.DEFINE_string("dataset", None, f"registry entry: {sorted(registry.REGISTRY)}", required=True)
  flags.DEFINE_string("split", "train", "split to convert")
  flags.DEFINE_string("out", None, "output directory", required=True)
  flags.DEFINE_integer("steps_per_shard", 10_000, "records per ArrayRecord shard")
  app.run(main)
