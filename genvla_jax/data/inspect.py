r"""What is in a dataset: the command to run first on new data.

  python -m genvla_jax.data.inspect --data=CONVERTED_DIR [--json] [--verify]     # output of data/convert.py
  python -m genvla_jax.data.inspect --data=LLAVA.json [--json] [--verify]        # a LLaVA-style VL corpus
  python -m genvla_jax.data.inspect --data=CONVERTED_VL_DIR [--json] [--verify]  # output of data/convert_vl.py
  python -m genvla_jax.data.inspect --data=DIR1,DIR2 [--json] [--verify]         # pooled statistics of several
  python -m genvla_jax.data.inspect --data=LEROBOT_ROOT [--json] [--verify]      # a LeRobot dataset, before
                                                                                 # data/convert_lerobot.py

Converted robot data: episodes, steps, episode length range, per-step feature names / shapes / dtypes
(from the first record), image format and size, instructions seen (most frequent first), action and
state statistics, skipped (bad) records by reason with their first locations, shard count.
VL corpus: conversations, turns, images found / missing, the first questions.
LeRobot dataset (a folder with meta/info.json; data/lerobot.py): format version, fps, its own feature names
with dtype / shape / names (which are cameras: video or image, and the video codec), episodes, steps,
tasks, the default feature mapping (`--dataset`: a registry LeRobot entry) and the action / state
statistics from the parquet columns (no frame decoded): what to give the converter's flags.

The summary reads a sample. `--verify` checks everything and names every problem (`verify` in the
output; the command exits with status 2 when there is one): converted data: each shard's sha256 and
record count against meta.json, every record decodes with its fields, every image decodes, actions and
states finite and of the recorded dimensions, episodes.npz agrees with the records; a LLaVA JSON: every
entry parses and its image exists and decodes; a LeRobot dataset: every episode's rows read, every frame
decodes (videos at each step's timestamp), as the converter would read them (bad episodes by file).
"""

import collections
import json
import os

from absl import flags
import numpy as np

from genvla_jax import cli
from genvla_jax.data import convert, preprocess, vl

FLAGS = flags.FLAGS
MAX_LISTED = 50  # problems listed by name in a verification (all are counted)


class NotADatasetError(cli.UserError, ValueError):
  """--data is neither a converted dataset nor a LLaVA JSON."""


class VerificationFailed(cli.UserError):
  """--verify found problems (they are listed in the printed summary)."""


def _describe_value(value):
  if isinstance(value, bytes):
    return {"type": "bytes", "length": len(value)}
  if isinstance(value, str):
    return {"type": "str"}
  array = np.asarray(value)
  return {"type": str(array.dtype), "shape": list(array.shape)}


def inspect_converted(out_dir: str, max_instructions: int = 10, sample: int = 2000) -> dict:
  """Summary of a converted robot dataset (reads meta/stats/index and up to `sample` records)."""
  with open(os.path.join(out_dir, "meta.json")) as f:
    meta = json.load(f)
  with open(os.path.join(out_dir, "stats.json")) as f:
    statistics = json.load(f)
  index = np.load(os.path.join(out_dir, "episodes.npz"))
  from genvla_jax.data import pipeline

  source = pipeline.StepChunkSource(out_dir, horizon=1)
  first = convert.decode_step(source._source[0])
  image = preprocess.decode_image(first["image"])
  step = max(1, len(source) // sample)
  instructions = collections.Counter(
    convert.decode_step(source._source[i])["instruction"] for i in range(0, len(source), step)
  )
  reasons = collections.Counter(s["reason"].split(":")[0] for s in meta["skipped_steps"])
  return {
    "path": os.path.abspath(out_dir),
    "dataset": meta.get("dataset"),
    "split": meta.get("split"),
    "source": meta.get("source"),
    "episodes": meta["num_episodes"],
    "steps": meta["num_steps"],
    "episode_length": {
      "min": int(index["length"].min()),
      "max": int(index["length"].max()),
      "mean": float(index["length"].mean()),
    },
    "features": {k: _describe_value(v) for k, v in sorted(first.items())},
    "image": {"format": "jpeg" if first["image"][:2] == b"\xff\xd8" else "png", "shape": list(image.shape)},
    "cameras": convert.camera_names(meta),
    "instructions": {
      "distinct_in_sample": len(instructions),
      "sampled_steps": sum(instructions.values()),
      "most_common": instructions.most_common(max_instructions),
    },
    "statistics": statistics,
    "skipped": {
      "total": len(meta["skipped_steps"]),
      "episodes": meta.get("skipped_episodes"),
      "by_reason": dict(reasons),
      "first": meta["skipped_steps"][:5],
    },
    "shards": len(meta["shards"]),
  }


def inspect_vl(json_path: str, max_questions: int = 5) -> dict:
  examples = vl.load_llava_json(json_path)
  images = [e["image_path"] for e in examples]
  missing = [p for p in images if not os.path.exists(p)]
  return {
    "path": os.path.abspath(json_path),
    "examples": len(examples),
    "images": len(set(images)),
    "missing_images": len(set(missing)),
    "first_missing": sorted(set(missing))[:5],
    "first_questions": [e["question"] for e in examples[:max_questions]],
  }


def inspect_converted_vl(out_dir: str, max_questions: int = 5) -> dict:
  """Summary of a convert_vl.py output directory."""
  from genvla_jax.data import convert_vl

  with open(os.path.join(out_dir, "meta.json")) as f:
    meta = json.load(f)
  source = convert_vl.VLSource(out_dir)
  first = [source[i] for i in range(min(max_questions, len(source)))]
  reasons = collections.Counter(s["reason"].split(":")[0] for s in meta["skipped"])
  return {
    "path": os.path.abspath(out_dir),
    "input": meta["input"],
    "format": meta["format"],
    "examples": meta["num_examples"],
    "conversations": meta["num_conversations"],
    "shards": len(meta["shards"]),
    "image": {"shape": list(preprocess.decode_image(first[0]["image"]).shape)} if first else {},
    "first_examples": [{"question": r["question"], "answer": r["answer"]} for r in first],
    "skipped": {"total": len(meta["skipped"]), "by_reason": dict(reasons), "first": meta["skipped"][:5]},
  }


class _Problems:
  """Problems found by a verification: counted, the first MAX_LISTED named."""

  def __init__(self):
    self.count, self.listed = 0, []

  def add(self, where: str, what: str):
    self.count += 1
    if len(self.listed) < MAX_LISTED:
      self.listed.append(f"{where}: {what}")

  def report(self, checked: dict) -> dict:
    return {"ok": not self.count, **checked, "problems": self.count, "listed": self.listed}


def _shard_records(path: str, expected: int, problems: _Problems):
  """(record index, bytes) of one ArrayRecord shard; unreadable records and a wrong count -> problems."""
  import grain

  name = os.path.basename(path)
  try:
    source = grain.sources.ArrayRecordDataSource([path])
    count = len(source)
  except Exception as err:
    problems.add(name, f"unreadable shard: {str(err)[:200]}")
    return
  if count != expected:
    problems.add(name, f"{count} records, meta.json says {expected}")
  for i in range(count):
    try:
      yield i, source[i]
    except Exception as err:
      problems.add(f"{name} record {i}", f"unreadable: {str(err)[:200]}")


def _check_shard_file(out_dir: str, shard: dict, problems: _Problems) -> bool:
  """The shard exists and its sha256 matches meta.json (a mismatch is a problem; its records are still
  read, to name the damaged ones). -> whether the file exists."""
  path = os.path.join(out_dir, shard["file"])
  if not os.path.isfile(path):
    problems.add(shard["file"], "missing")
    return False
  if convert._sha256(path) != shard.get("sha256"):
    problems.add(shard["file"], "sha256 differs from meta.json (the file changed after conversion)")
  return True


_STEP_KEYS = ("image", "state", "action", "instruction", "episode", "step", "episode_length")


def _step_problem(record, meta: dict) -> str | None:
  """Why a decoded step record is bad (missing field, wrong dimension, non-finite value, bad image)."""
  missing = [k for k in _STEP_KEYS if k not in record]
  if missing:
    return f"missing {missing}"
  for key, dim in (("action", meta["action_dim"]), ("state", meta["state_dim"])):
    value = np.asarray(record[key])
    if value.shape != (dim,):
      return f"{key} shape {list(value.shape)}, meta.json says [{dim}]"
    if not np.all(np.isfinite(value)):
      return f"non-finite {key} {value.tolist()}"
  if not isinstance(record["instruction"], str) or not record["instruction"].strip():
    return "empty instruction"
  problem, _ = convert.image_problem(record["image"])
  for name, data in (record.get("images") or {}).items():
    problem = problem or next((f"camera {name}: {p}" for p in [convert.image_problem(data)[0]] if p), None)
  return f"undecodable image: {problem}" if problem else None


def verify_converted(out_dir: str) -> dict:
  """Reads every record of a converted robot dataset (see the module docstring) -> {"ok", "records",
  "problems" (count), "listed" (the first MAX_LISTED, by shard / record / episode / step)}."""
  with open(os.path.join(out_dir, "meta.json")) as f:
    meta = json.load(f)
  problems, checked = _Problems(), 0
  index = _index_steps(out_dir, meta, problems)  # (episode [N], step [N]) the index expects, or None
  mismatches = []
  for shard in meta["shards"]:
    if not _check_shard_file(out_dir, shard, problems):
      checked += shard["records"]
      continue
    for i, data in _shard_records(os.path.join(out_dir, shard["file"]), shard["records"], problems):
      g, where = checked, f"{shard['file']} record {i}"
      checked += 1
      try:
        record = convert.decode_step(data)
      except Exception as err:
        problems.add(where, f"undecodable record: {str(err)[:200]}")
        continue
      if not isinstance(record, dict):
        problems.add(where, "not a step record")
        continue
      if "episode" in record and "step" in record:
        where += f" (episode {record['episode']} step {record['step']})"
        if (
          index is not None and g < len(index[0]) and (record["episode"], record["step"]) != (index[0][g], index[1][g])
        ):
          mismatches.append(f"{where}: episodes.npz says episode {index[0][g]} step {index[1][g]}")
      problem = _step_problem(record, meta)
      if problem:
        problems.add(where, problem)
  if mismatches:
    problems.add("episodes.npz", f"{len(mismatches)} records disagree with the index, first: {mismatches[0]}")
  return problems.report({"records": checked})


def _index_steps(out_dir: str, meta: dict, problems: _Problems):
  """episodes.npz -> (source episode [N], step [N]) of every record in order, checked against meta.json;
  None (and a problem) when it is unreadable or inconsistent."""
  try:
    with np.load(os.path.join(out_dir, "episodes.npz")) as index:
      start, length, episode = index["start"], index["length"], index["source_episode"]
  except Exception as err:
    problems.add("episodes.npz", f"unreadable: {str(err)[:200]}")
    return None
  if int(length.sum()) != meta["num_steps"] or not np.array_equal(
    start, np.concatenate([[0], np.cumsum(length)[:-1]]).astype(start.dtype)
  ):
    problems.add("episodes.npz", f"indexes {int(length.sum())} steps, meta.json says {meta['num_steps']}")
    return None
  steps = np.arange(int(length.sum())) - np.repeat(start, length)
  return np.repeat(episode, length), steps


def verify_converted_vl(out_dir: str) -> dict:
  """Every shard's sha256 and count, every record's fields and image, of a convert_vl.py output."""
  with open(os.path.join(out_dir, "meta.json")) as f:
    meta = json.load(f)
  problems, checked = _Problems(), 0
  for shard in meta["shards"]:
    if not _check_shard_file(out_dir, shard, problems):
      continue
    for i, data in _shard_records(os.path.join(out_dir, shard["file"]), shard["records"], problems):
      checked += 1
      try:
        record = convert.decode_step(data)
        where = f"{shard['file']} record {i} ({record.get('source')})"
        bad = [k for k in ("question", "answer") if not isinstance(record.get(k), str) or not record[k].strip()]
        problem = f"empty {bad}" if bad else convert.image_problem(record["image"])[0]
      except Exception as err:
        where, problem = f"{shard['file']} record {i}", f"undecodable record: {str(err)[:200]}"
      if problem:
        problems.add(where, problem)
  return problems.report({"records": checked})


def verify_llava_json(json_path: str) -> dict:
  """Every entry of a LLaVA-style JSON parses, and its image exists and decodes (each image once)."""
  from genvla_jax.data import convert_vl

  problems, checked, images = _Problems(), 0, {}
  for source, image, pairs in convert_vl.iter_llava_json(json_path):
    checked += 1
    if isinstance(image, Exception):
      problems.add(source, str(image))
      continue
    key = hash(image)
    if key not in images:
      images[key] = convert.image_problem(image)[0]
    if images[key]:
      problems.add(source, f"undecodable image: {images[key]}")
    elif not pairs:
      problems.add(source, "no complete (question, answer) turn pair")
  return problems.report({"entries": checked, "images": len(images)})


def inspect_lerobot(root: str, dataset: str = "lerobot") -> dict:
  """A LeRobot dataset before conversion (lerobot.describe with the registry LeRobot entry's mapping)."""
  from genvla_jax.data import lerobot

  return lerobot.describe(root, dataset)


def verify_lerobot(root: str, dataset: str = "lerobot") -> dict:
  """Reads every episode of a LeRobot dataset as the converter does (convert_lerobot.check)."""
  from genvla_jax.data import convert_lerobot

  problems = _Problems()
  checked = convert_lerobot.check(root, dataset)
  for entry in checked["bad"]:
    step = f" step {entry['step']}" if entry.get("step") is not None else ""
    file = f"{entry['file']} " if "file" in entry else ""
    problems.add(f"{file}episode {entry['episode']}{step}", entry["reason"])
  return problems.report({"episodes": checked["episodes"], "steps": checked["steps"]})


def _kind(path: str) -> str:
  """ "robot" | "vl" (converted directories) | "llava_json" | "lerobot"; NotADatasetError otherwise."""
  from genvla_jax.data import lerobot

  if os.path.isdir(path) and lerobot.is_lerobot_root(path):
    return "lerobot"
  if os.path.isdir(path) and os.path.exists(os.path.join(path, "meta.json")):
    meta = convert._read_json(os.path.join(path, "meta.json"))
    if meta is not None and "num_examples" in meta:
      return "vl"
    if meta is not None and "num_steps" in meta:
      return "robot"
    raise NotADatasetError(f"{path}/meta.json is not the meta.json of a converted dataset")
  if path.endswith(".json") and os.path.isfile(path):
    return "llava_json"
  if not os.path.exists(path):
    raise NotADatasetError(f"{path} does not exist (give a converted dataset directory or a LLaVA-style .json)")
  raise NotADatasetError(
    f"{path} is neither a converted dataset (a directory with meta.json; run "
    "`python -m genvla_jax.data.convert` first), a LeRobot dataset (meta/info.json) nor a LLaVA-style .json"
  )


_SUMMARIES = {
  "robot": inspect_converted,
  "vl": inspect_converted_vl,
  "llava_json": inspect_vl,
  "lerobot": inspect_lerobot,
}
_VERIFIERS = {
  "robot": verify_converted,
  "vl": verify_converted_vl,
  "llava_json": verify_llava_json,
  "lerobot": verify_lerobot,
}


def inspect(path: str, verify: bool = False, dataset: str = "lerobot") -> dict:
  """Summary of `path` (see the module docstring); `verify`: plus "verify" (every record checked).
  `dataset`: for a LeRobot root, the registry LeRobot entry whose feature mapping is shown."""
  kind = _kind(path)
  extra = (dataset,) if kind == "lerobot" else ()
  try:
    summary = _SUMMARIES[kind](path, *extra)
  except Exception as err:
    if not verify:
      raise (
        err
        if isinstance(err, cli.UserError)
        else cli.UserError(
          f"{path}: cannot be read ({' '.join(str(err).split())[:300]}); --verify names every damaged record"
        )
      ) from err
    summary = {"path": os.path.abspath(path), "summary_error": " ".join(str(err).split())[:300]}
  if verify:
    summary["verify"] = _VERIFIERS[kind](path, *extra)
  else:
    summary["verified"] = "no: a sample was read; --verify checks every record, image and checksum"
  return summary


def format_text(summary: dict) -> str:
  lines = []
  for key, value in summary.items():
    if key == "verify":
      listed = value["listed"]
      more = value["problems"] - len(listed)
      lines.append("verify: " + ", ".join(f"{k}={v}" for k, v in value.items() if k != "listed"))
      lines += [f"  {problem}" for problem in listed] + ([f"  ... {more} more"] if more else [])
    elif key == "datasets":
      for path, part in value.items():
        lines.append(f"{path}:")
        lines += [f"  {line}" for line in format_text(part).splitlines()]
    elif key == "statistics":
      for part, s in value.items():
        if s is None:
          continue
        lines.append(f"{part}: q01 {np.round(s['q01'], 4).tolist()}")
        lines.append(f"{' ' * len(part)}  q99 {np.round(s['q99'], 4).tolist()}")
        if "normalize_mask" in s:
          lines.append(f"{' ' * len(part)}  normalized {s['normalize_mask']}")
    elif key == "features" and value and all(isinstance(v, dict) for v in value.values()):
      lines.append("features:")
      lines += [f"  {name}: " + ", ".join(f"{k}={v}" for k, v in f.items()) for name, f in value.items()]
    elif isinstance(value, dict):
      lines.append(f"{key}: " + ", ".join(f"{k}={v}" for k, v in value.items()))
    else:
      lines.append(f"{key}: {value}")
  return "\n".join(lines)


def inspect_many(paths: list[str], verify: bool = False) -> dict:
  """Several converted robot datasets: each one's counts (and verification), and their pooled statistics."""
  for p in paths:
    if _kind(p) != "robot":
      raise NotADatasetError(f"{p}: several --data paths must all be converted robot datasets")
  with open(os.path.join(paths[0], "stats.json")) as f:
    mask = json.load(f)["action"].get("normalize_mask")
  keep = ("dataset", "split", "episodes", "steps", "verify")
  return {
    "datasets": {p: {k: v for k, v in inspect(p, verify).items() if k in keep} for p in paths},
    "statistics": convert.combined_stats(paths, mask),
  }


def failures(summary: dict) -> tuple[int, list[str]]:
  """(problem count, the problems listed by name) of a verified summary (one dataset or several; the
  names of several are prefixed by their dataset)."""
  if "datasets" in summary:
    found = [failures(s) for s in summary["datasets"].values()]
    return sum(n for n, _ in found), [f"{p}: {x}" for p, (_, xs) in zip(summary["datasets"], found) for x in xs]
  result = summary.get("verify")
  return (result["problems"], result["listed"]) if result else (0, [])


def main(argv):
  del argv
  paths = FLAGS.data.split(",")
  summary = inspect(paths[0], FLAGS.verify, FLAGS.dataset) if len(paths) == 1 else inspect_many(paths, FLAGS.verify)
  print(json.dumps(summary, indent=1) if FLAGS.json else format_text(summary))
  count, listed = failures(summary)
  if count:
    raise VerificationFailed(
      f"--verify found {count} problem(s) in {FLAGS.data}, first: {listed[0]} (the first ones are listed "
      + (
        "above; the converter skips these episodes)"
        if "format" in summary
        else "above; convert again with --overwrite)"
      )
    )


if __name__ == "__main__":
  flags.DEFINE_string("data", None, "converted dataset directory or LLaVA-style JSON", required=True)
  flags.DEFINE_bool("json", False, "print JSON instead of text")
  flags.DEFINE_bool("verify", False, "check every record, image and checksum; exit 2 naming the bad ones")
  flags.DEFINE_string("dataset", "lerobot", "a LeRobot root: the registry LeRobot entry whose mapping to show")
  cli.run(main)
