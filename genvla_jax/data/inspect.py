r"""What is in a dataset: the command to run first on new data.

  python -m genvla_jax.data.inspect --data=CONVERTED_DIR [--json]     # output of data/convert.py
  python -m genvla_jax.data.inspect --data=LLAVA.json [--json]        # a LLaVA-style VL corpus
  python -m genvla_jax.data.inspect --data=CONVERTED_VL_DIR [--json]  # output of data/convert_vl.py
  python -m genvla_jax.data.inspect --data=DIR1,DIR2 [--json]         # pooled statistics of several

Converted robot data: episodes, steps, episode length range, per-step feature names / shapes / dtypes
(from the first record), image format and size, instructions seen (most frequent first), action and
state statistics, skipped (bad) records by reason with their first locations, shard checksums.
VL corpus: conversations, turns, images found / missing, the first questions.
"""

import collections
import json
import os

from absl import app, flags
import numpy as np

from genvla_jax.data import convert, preprocess, vl

FLAGS = flags.FLAGS


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
  from genvla_jax.data import pipeline  # pylint: disable=g-import-not-at-top
  source = pipeline.StepChunkSource(out_dir, horizon=1)
  first = convert.decode_step(source._source[0])  # pylint: disable=protected-access
  image = preprocess.decode_image(first["image"])
  step = max(1, len(source) // sample)
  instructions = collections.Counter(
      convert.decode_step(source._source[i])["instruction"]  # pylint: disable=protected-access
      for i in range(0, len(source), step))
  reasons = collections.Counter(s["reason"].split(":")[0] for s in meta["skipped_steps"])
  return {
      "path": os.path.abspath(out_dir), "dataset": meta.get("dataset"), "split": meta.get("split"),
      "source": meta.get("source"), "episodes": meta["num_episodes"], "steps": meta["num_steps"],
      "episode_length": {"min": int(index["length"].min()), "max": int(index["length"].max()),
                         "mean": float(index["length"].mean())},
      "features": {k: _describe_value(v) for k, v in sorted(first.items())},
      "image": {"format": "jpeg" if first["image"][:2] == b"\xff\xd8" else "png", "shape": list(image.shape)},
      "instructions": {"distinct_in_sample": len(instructions), "sampled_steps": sum(instructions.values()),
                       "most_common": instructions.most_common(max_instructions)},
      "statistics": statistics,
      "skipped": {"total": len(meta["skipped_steps"]), "by_reason": dict(reasons),
                  "first": meta["skipped_steps"][:5]},
      "shards": len(meta["shards"]),
  }


def inspect_vl(json_path: str, max_questions: int = 5) -> dict:
  examples = vl.load_llava_json(json_path)
  images = [e["image_path"] for e in examples]
  missing = [p for p in images if not os.path.exists(p)]
  return {"path": os.path.abspath(json_path), "examples": len(examples),
          "images": len(set(images)), "missing_images": len(set(missing)),
          "first_missing": sorted(set(missing))[:5],
          "first_questions": [e["question"] for e in examples[:max_questions]]}


def inspect_converted_vl(out_dir: str, max_questions: int = 5) -> dict:
  """Summary of a convert_vl.py output directory."""
  from genvla_jax.data import convert_vl  # pylint: disable=g-import-not-at-top
  with open(os.path.join(out_dir, "meta.json")) as f:
    meta = json.load(f)
  source = convert_vl.VLSource(out_dir)
  first = [source[i] for i in range(min(max_questions, len(source)))]
  reasons = collections.Counter(s["reason"].split(":")[0] for s in meta["skipped"])
  return {"path": os.path.abspath(out_dir), "input": meta["input"], "format": meta["format"],
          "examples": meta["num_examples"], "conversations": meta["num_conversations"],
          "shards": len(meta["shards"]),
          "image": {"shape": list(preprocess.decode_image(first[0]["image"]).shape)} if first else {},
          "first_examples": [{"question": r["question"], "answer": r["answer"]} for r in first],
          "skipped": {"total": len(meta["skipped"]), "by_reason": dict(reasons), "first": meta["skipped"][:5]}}


def inspect(path: str) -> dict:
  if os.path.isdir(path) and os.path.exists(os.path.join(path, "meta.json")):
    with open(os.path.join(path, "meta.json")) as f:
      if "num_examples" in json.load(f):
        return inspect_converted_vl(path)
    return inspect_converted(path)
  if path.endswith(".json") and os.path.isfile(path):
    return inspect_vl(path)
  raise ValueError(f"{path} is neither a converted dataset (a directory with meta.json; run "
                   "`python -m genvla_jax.data.convert` first) nor a LLaVA-style .json")


def format_text(summary: dict) -> str:
  lines = []
  for key, value in summary.items():
    if key == "statistics":
      for part, s in value.items():
        if s is None:
          continue
        lines.append(f"{part}: q01 {np.round(s['q01'], 4).tolist()}")
        lines.append(f"{' ' * len(part)}  q99 {np.round(s['q99'], 4).tolist()}")
        if "normalize_mask" in s:
          lines.append(f"{' ' * len(part)}  normalized {s['normalize_mask']}")
    elif isinstance(value, dict):
      lines.append(f"{key}: " + ", ".join(f"{k}={v}" for k, v in value.items()))
    else:
      lines.append(f"{key}: {value}")
  return "\n".join(lines)


def inspect_many(paths: list[str]) -> dict:
  """Several converted robot datasets: each one's counts, and their pooled statistics."""
  with open(os.path.join(paths[0], "stats.json")) as f:
    mask = json.load(f)["action"].get("normalize_mask")
  return {"datasets": {p: {k: v for k, v in inspect_converted(p).items()
                           if k in ("dataset", "split", "episodes", "steps")} for p in paths},
          "statistics": convert.combined_stats(paths, mask)}


def main(argv):
  del argv
  paths = FLAGS.data.split(",")
  summary = inspect(paths[0]) if len(paths) == 1 else inspect_many(paths)
  print(json.dumps(summary, indent=1) if FLAGS.json else format_text(summary))


if __name__ == "__main__":
  flags.DEFINE_string("data", None, "converted dataset directory or LLaVA-style JSON", required=True)
  flags.DEFINE_bool("json", False, "print JSON instead of text")
  app.run(main)
