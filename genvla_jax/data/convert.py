"""Converts a published RLDS dataset into step-level ArrayRecord shards that grain reads at random.

  python -m genvla_jax.data.convert --rlds_dir=DIR --dataset=NAME --split=train --out=OUT

The split is cut into parts (`episodes_per_part` episodes of one input file, planned from TFDS's shard
lengths); parts convert independently, in parallel processes (`--num_workers`), each written atomically,
so an interrupted conversion resumes where it stopped (finished parts are kept). Output directory:
  part-XXXXX-of-YYYYY.array_record  one msgpack record per step, episodes contiguous:
      {"image": bytes, "state": f32 [S], "action": f32 [D], "instruction": str,
       "episode": int (source episode index), "step": int, "episode_length": int}
  part-XXXXX-of-YYYYY.{npz,json}    per part: actions/states/episode lengths; record count, sha256, skips
  episodes.npz   start [E], length [E] (global record index of each episode's first step), source_episode
  stats.json     action/state statistics (stats.py), with the registry's normalize_mask
  meta.json      written last (the conversion is complete): source, counts, shards with record counts and
                 sha256, skipped steps with their location
An undecodable episode, or a step with a non-finite action or state, an empty instruction, a missing
image or key, is skipped and listed in meta.json with its episode and step (`on_bad="fail"`: raise
BadRecordError at the first instead).
"""

import concurrent.futures
import dataclasses
import hashlib
import itertools
import json
import multiprocessing
import os
import shutil
import time

from absl import app, flags, logging
from array_record.python import array_record_module
from flax import serialization
import numpy as np

from genvla_jax.data import registry, rlds, stats as stats_lib

FORMAT_VERSION = 2


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


@dataclasses.dataclass(frozen=True)
class Part:
  """A unit of conversion work: `count` episodes starting at record `first` of one input file."""
  index: int
  file: str
  first: int
  count: int
  first_episode: int  # global index of its first episode in the split (source order)


def plan(source: rlds.RLDSDataset, episodes_per_part: int) -> list[Part]:
  """Splits the split's input files into parts of at most `episodes_per_part` episodes (from TFDS's
  recorded shard lengths, so no data is read)."""
  lengths = list(source.split_info.shard_lengths) or [len(source)]
  parts, episode = [], 0
  for file, length in zip(source.files, lengths):
    for first in range(0, length, episodes_per_part):
      count = min(episodes_per_part, length - first)
      parts.append(Part(len(parts), file, first, count, episode + first))
    episode += length
  return parts


def _part_name(part: Part, total: int) -> str:
  return f"part-{part.index:05d}-of-{total:05d}"


def _part_done(out_dir: str, name: str) -> bool:
  return os.path.exists(os.path.join(out_dir, name + ".json"))


def _records(source, part: Part):
  """The part's serialized episodes; a file that cannot be read raises naming the file and record."""
  it = itertools.islice(source.iter_file(part.file), part.first, part.first + part.count)
  k = part.first
  while True:
    try:
      _, serialized = next(it)
    except StopIteration:
      return
    except Exception as err:  # a corrupt TFRecord frame: the rest of the file cannot be located
      raise ValueError(f"cannot read record {k} of {part.file}: {err}") from err
    k += 1
    yield serialized


class BadRecordError(ValueError):
  pass


def _skip(skipped: list, on_bad: str, location: dict):
  if on_bad == "fail":
    raise BadRecordError(f"bad record in episode {location['episode']} step {location['step']}: "
                         f"{location['reason']} (on_bad='fail')")
  skipped.append(location)


def _good_steps(source, spec, serialized, e: int, skipped: list, on_bad: str) -> list[dict]:
  """One serialized episode -> its standardized, checked steps (bad ones reported in `skipped`)."""
  try:
    episode = source.decode_episode(serialized)
  except Exception as err:  # corrupt record: skipped, reported with its location
    _skip(skipped, on_bad, {"episode": e, "step": None, "reason": f"undecodable episode: {err}"[:200]})
    return []
  standardized = []
  for s, raw in enumerate(episode["steps"]):
    try:
      standardized.append(dict(spec.standardize(raw), _source_step=s))
    except (KeyError, ValueError, TypeError) as err:
      _skip(skipped, on_bad, {"episode": e, "step": s, "reason": f"cannot standardize: {err}"[:200]})
  if spec.episode_transform is not None and standardized:
    standardized = spec.episode_transform(standardized)
  good = []
  for step in standardized:
    s = step.pop("_source_step")
    reason = _bad_reason(step)
    if reason:
      _skip(skipped, on_bad, {"episode": e, "step": s, "reason": reason})
      continue
    good.append(step)
  return good


def convert_part(rlds_dir: str, split: str, dataset: str, part: Part, total: int, out_dir: str,
                 on_bad: str = "skip") -> dict:
  """Converts one part into `<name>.array_record` + `<name>.npz` (per good step: action, state;
  per episode: source index, length) + `<name>.json` (written last: the part is done)."""
  spec = registry.get(dataset)
  source = rlds.RLDSDataset(rlds_dir, split)
  name = _part_name(part, total)
  skipped, actions, states, episodes, lengths = [], [], [], [], []
  tmp = os.path.join(out_dir, f".{name}.tmp{os.getpid()}")
  writer = array_record_module.ArrayRecordWriter(tmp + ".array_record", "group_size:1")
  try:  # records stream to the writer: memory holds one episode, not the part
    for k, serialized in enumerate(_records(source, part)):
      e = part.first_episode + k
      good = _good_steps(source, spec, serialized, e, skipped, on_bad)
      if not good:
        continue
      episodes.append(e)
      lengths.append(len(good))
      for s, step in enumerate(good):
        writer.write(encode_step(dict(step, episode=e, step=s, episode_length=len(good))))
        actions.append(step["action"])
        states.append(step["state"])
  except BaseException:
    writer.close()
    os.remove(tmp + ".array_record")
    raise
  writer.close()
  np.savez(tmp + ".npz", actions=np.asarray(actions, np.float32).reshape(len(actions), -1),
           states=np.asarray(states, np.float32).reshape(len(states), -1),
           episodes=np.asarray(episodes, np.int64), lengths=np.asarray(lengths, np.int64))
  os.replace(tmp + ".array_record", os.path.join(out_dir, name + ".array_record"))
  os.replace(tmp + ".npz", os.path.join(out_dir, name + ".npz"))
  info = {"file": name + ".array_record", "records": len(actions), "episodes": len(episodes),
          "sha256": _sha256(os.path.join(out_dir, name + ".array_record")), "skipped_steps": skipped}
  with open(tmp + ".json", "w") as f:
    json.dump(info, f)
  os.replace(tmp + ".json", os.path.join(out_dir, name + ".json"))
  return info


def completed_meta(out_dir: str, format_version: int) -> dict | None:
  """meta.json of a finished conversion in this format version (it is written last), else None."""
  path = os.path.join(out_dir, "meta.json")
  if not os.path.exists(path):
    return None
  with open(path) as f:
    meta = json.load(f)
  return meta if meta.get("format_version") == format_version else None


def convert(rlds_dir: str, dataset: str, split: str, out_dir: str, *, episodes_per_part: int = 1000,
            num_workers: int = 0, printer=None, on_bad: str = "skip") -> dict:
  """Converts one split (see the module docstring); returns meta. Resumable: parts already written by an
  interrupted run are kept; a complete conversion (meta.json of this format version) is returned as is.
  num_workers > 0 converts parts in that many processes."""
  meta_path = os.path.join(out_dir, "meta.json")
  done = completed_meta(out_dir, FORMAT_VERSION)
  if done is not None:
    return done
  if os.path.exists(meta_path):
    shutil.rmtree(out_dir)  # an older layout: convert again
  registry.get(dataset)  # unknown names fail before any work
  if on_bad not in ("skip", "fail"):
    raise ValueError(f"on_bad must be 'skip' or 'fail', got {on_bad!r}")
  source = rlds.RLDSDataset(rlds_dir, split)
  parts = plan(source, episodes_per_part)
  os.makedirs(out_dir, exist_ok=True)
  todo = [p for p in parts if not _part_done(out_dir, _part_name(p, len(parts)))]
  progress = _Progress(len(parts), len(parts) - len(todo), printer)
  args = [(rlds_dir, split, dataset, p, len(parts), out_dir, on_bad) for p in todo]
  if num_workers > 0 and len(todo) > 1:
    context = multiprocessing.get_context("spawn")  # no fork of a multithreaded parent
    with concurrent.futures.ProcessPoolExecutor(num_workers, mp_context=context) as pool:
      for info in pool.map(_convert_part_args, args):
        progress.update(info)
  else:
    for a in args:
      progress.update(convert_part(*a))
  meta = _assemble(out_dir, parts, dataset)
  meta.update(source=os.path.abspath(rlds_dir), dataset=dataset, split=split)
  tmp = meta_path + f".tmp{os.getpid()}"
  with open(tmp, "w") as f:
    json.dump(meta, f, indent=1)
  os.replace(tmp, meta_path)
  logging.info("converted %s/%s: %d episodes, %d steps, %d skipped -> %s", dataset, split,
               meta["num_episodes"], meta["num_steps"], len(meta["skipped_steps"]), out_dir)
  return meta


def _convert_part_args(args):
  return convert_part(*args)


class _Progress:
  """One line per finished part: parts done, steps, steps/s, ETA."""

  def __init__(self, total: int, done: int, printer):
    self.total, self.done, self.printer = total, done, printer
    self.steps, self.start = 0, time.perf_counter()

  def update(self, info: dict):
    self.done += 1
    self.steps += info["records"]
    if self.printer:
      elapsed = time.perf_counter() - self.start
      rate = self.steps / max(elapsed, 1e-9)
      remaining = elapsed / max(self.done, 1) * (self.total - self.done)
      self.printer(f"converted {self.done}/{self.total} parts | {self.steps} steps | {rate:.0f} steps/s | "
                   f"ETA {remaining:.0f}s", flush=True)


def _assemble(out_dir: str, parts: list[Part], dataset: str) -> dict:
  """Per-part files -> episode index, statistics (one vectorised pass over the parts' arrays), meta."""
  spec = registry.get(dataset)
  shards, skipped, actions, states, starts, lengths, episode_ids = [], [], [], [], [], [], []
  offset = 0
  for part in parts:
    name = _part_name(part, len(parts))
    with open(os.path.join(out_dir, name + ".json")) as f:
      info = json.load(f)
    with np.load(os.path.join(out_dir, name + ".npz")) as arrays:
      if info["records"]:
        actions.append(arrays["actions"])
        states.append(arrays["states"])
      part_lengths = arrays["lengths"]
      episode_ids.append(arrays["episodes"])
    starts.append(offset + np.concatenate([[0], np.cumsum(part_lengths)[:-1]]).astype(np.int64)
                  if len(part_lengths) else np.zeros(0, np.int64))
    lengths.append(part_lengths)
    offset += info["records"]
    skipped += info["skipped_steps"]
    shards.append({k: info[k] for k in ("file", "records", "sha256")})
  if not offset:
    raise ValueError(f"no usable steps in {out_dir} ({len(skipped)} skipped)")
  actions, states = np.concatenate(actions), np.concatenate(states)
  np.savez(os.path.join(out_dir, "episodes.npz"), start=np.concatenate(starts),
           length=np.concatenate(lengths), source_episode=np.concatenate(episode_ids))
  statistics = {"action": stats_lib.describe(actions, spec.normalize_mask),
                "state": stats_lib.describe(states)}
  with open(os.path.join(out_dir, "stats.json"), "w") as f:
    json.dump(statistics, f, indent=1)
  return {"format_version": FORMAT_VERSION, "num_episodes": int(sum(len(l) for l in lengths)),
          "num_steps": int(offset), "action_dim": int(actions.shape[1]), "state_dim": int(states.shape[1]),
          "shards": shards, "skipped_steps": skipped}


def actions_and_states(out_dir: str) -> tuple[np.ndarray, np.ndarray]:
  """All steps' actions [N,D] and states [N,S] of a converted dataset (from its parts' arrays)."""
  with open(os.path.join(out_dir, "meta.json")) as f:
    meta = json.load(f)
  if meta.get("format_version") != FORMAT_VERSION:
    raise ValueError(f"{out_dir} was converted by an older genvla_jax (format "
                     f"{meta.get('format_version')}, now {FORMAT_VERSION}); convert it again")
  actions, states = [], []
  for shard in meta["shards"]:
    with np.load(os.path.join(out_dir, shard["file"].replace(".array_record", ".npz"))) as arrays:
      actions.append(arrays["actions"])
      states.append(arrays["states"])
  return np.concatenate(actions), np.concatenate(states)


def combined_stats(out_dirs: list[str], normalize_mask=None) -> dict:
  """Statistics of several converted datasets pooled (exact: quantiles over all their steps), e.g. to
  normalize a mixture of datasets that share an action space with one set of statistics."""
  pairs = [actions_and_states(d) for d in out_dirs]
  dims = {a.shape[1] for a, _ in pairs}
  if len(dims) != 1:
    raise ValueError(f"datasets have different action dimensions {sorted(dims)}: {out_dirs}")
  return {"action": stats_lib.describe(np.concatenate([a for a, _ in pairs]), normalize_mask),
          "state": stats_lib.describe(np.concatenate([s for _, s in pairs]))
          if len({s.shape[1] for _, s in pairs}) == 1 else None}


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
  meta = convert(FLAGS.rlds_dir, FLAGS.dataset, FLAGS.split, FLAGS.out,
                 episodes_per_part=FLAGS.episodes_per_part, num_workers=FLAGS.num_workers, printer=print,
                 on_bad=FLAGS.on_bad)
  verify(FLAGS.out)
  print(json.dumps({k: v for k, v in meta.items() if k != "shards"}, indent=1))


if __name__ == "__main__":
  flags.DEFINE_string("rlds_dir", None, "TFDS prepared-dataset version directory", required=True)
  flags.DEFINE_string("dataset", None, f"registry entry: {sorted(registry.REGISTRY)}", required=True)
  flags.DEFINE_string("split", "train", "split to convert")
  flags.DEFINE_string("out", None, "output directory", required=True)
  flags.DEFINE_integer("episodes_per_part", 1000, "episodes per output part (the unit of parallelism)")
  flags.DEFINE_integer("num_workers", os.cpu_count() or 1, "conversion processes (0: in this process)")
  flags.DEFINE_enum("on_bad", "skip", ["skip", "fail"], "skip and report bad records, or stop at the first")
  app.run(main)
