"""Closed-loop results -> numbers with 95% confidence intervals, results.json, report.md, a plot and
rollout GIFs.

Success rates carry Wilson score intervals (95%): with n episodes and k successes the interval is
centred at (k + z^2/2) / (n + z^2), which stays inside [0, 1] and is sensible at 0% and 100%.
"""

import dataclasses
import json
import math
import os

import numpy as np

Z95 = 1.959964


def wilson_interval(successes: int, n: int, z: float = Z95) -> tuple[float, float]:
  if n == 0:
    return 0.0, 1.0
  p = successes / n
  centre = (p + z * z / (2 * n)) / (1 + z * z / n)
  half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
  return max(0.0, centre - half), min(1.0, centre + half)


def _cell(results) -> dict:
  k, n = sum(r.success for r in results), len(results)
  low, high = wilson_interval(k, n)
  return {
    "episodes": n,
    "successes": k,
    "success_rate": k / n if n else 0.0,
    "ci95": [low, high],
    "mean_steps": float(np.mean([r.steps for r in results])) if results else 0.0,
    "invalid_fields": int(sum(r.invalid_fields for r in results)),
  }


def summarize(results) -> dict:
  """-> {"protocols": {protocol: {"overall": cell, "tasks": {task: cell}}}, "overall": cell}; for
  variant_aggregation also per variant."""
  out = {"protocols": {}, "overall": _cell(results)}
  for protocol in dict.fromkeys(r.protocol for r in results):
    rows = [r for r in results if r.protocol == protocol]
    entry = {
      "overall": _cell(rows),
      "tasks": {t: _cell([r for r in rows if r.task == t]) for t in dict.fromkeys(r.task for r in rows)},
    }
    variants = sorted({r.variant for r in rows if r.variant})
    if variants:
      entry["variants"] = {v: _cell([r for r in rows if r.variant == v]) for v in variants}
    out["protocols"][protocol] = entry
  return out


def _pct(cell) -> str:
  low, high = cell["ci95"]
  return f"{cell['success_rate']:.0%} [{low:.0%}, {high:.0%}] (n={cell['episodes']})"


def markdown(summary: dict, title: str) -> str:
  protocols = list(summary["protocols"])
  tasks = list(dict.fromkeys(t for p in protocols for t in summary["protocols"][p]["tasks"]))
  lines = [
    f"# {title}",
    "",
    "Success rate [95% Wilson interval] (episodes).",
    "",
    "| task | " + " | ".join(protocols) + " |",
    "|---" * (len(protocols) + 1) + "|",
  ]
  for task in tasks:
    cells = [
      _pct(summary["protocols"][p]["tasks"][task]) if task in summary["protocols"][p]["tasks"] else "-"
      for p in protocols
    ]
    lines.append(f"| {task} | " + " | ".join(cells) + " |")
  lines.append("| **all tasks** | " + " | ".join(_pct(summary["protocols"][p]["overall"]) for p in protocols) + " |")
  for p in protocols:
    if "variants" in summary["protocols"][p]:
      lines += ["", f"{p} by variant:", ""] + [
        f"- {v}: {_pct(c)}" for v, c in summary["protocols"][p]["variants"].items()
      ]
  invalid = summary["overall"]["invalid_fields"]
  lines += ["", f"Unparsable action fields (executed as the fallback value): {invalid}.", ""]
  return "\n".join(lines)


def plot(summary: dict, path: str):
  import matplotlib

  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  protocols = list(summary["protocols"])
  tasks = list(dict.fromkeys(t for p in protocols for t in summary["protocols"][p]["tasks"]))
  fig, ax = plt.subplots(figsize=(1.6 + 1.5 * len(tasks), 3.2))
  width = 0.8 / max(len(protocols), 1)
  for j, p in enumerate(protocols):
    cells = [summary["protocols"][p]["tasks"].get(t) for t in tasks]
    rates = [c["success_rate"] if c else 0 for c in cells]
    errors = np.array(
      [[c["success_rate"] - c["ci95"][0], c["ci95"][1] - c["success_rate"]] if c else [0, 0] for c in cells]
    ).T
    ax.bar(np.arange(len(tasks)) + j * width, rates, width, yerr=errors, capsize=3, label=p)
  ax.set_xticks(np.arange(len(tasks)) + width * (len(protocols) - 1) / 2, tasks, fontsize=8)
  ax.set_ylim(0, 1.05)
  ax.set_ylabel("success rate")
  ax.legend(fontsize=7)
  fig.tight_layout()
  fig.savefig(path, dpi=120)
  plt.close(fig)


def write_gif(frames, path: str, fps: int = 10, scale: int = 3):
  from PIL import Image

  images = [
    Image.fromarray(np.asarray(f)).resize((f.shape[1] * scale, f.shape[0] * scale), Image.NEAREST) for f in frames
  ]
  images[0].save(path, save_all=True, append_images=images[1:], duration=int(1000 / fps), loop=0)


def write_mp4(frames, path: str, fps: int = 10, scale: int = 3):
  """H.264-compatible MPEG-4 part 2 ('mp4v', what OpenCV's bundled FFmpeg writes without extra codecs)."""
  import cv2

  h, w = frames[0].shape[:2]
  writer = cv2.VideoWriter(path, cv2.VideoWriter_fourcc(*"mp4v"), fps, (w * scale, h * scale))
  if not writer.isOpened():
    raise RuntimeError(f"OpenCV cannot write {path} (no mp4v encoder); use video_format='gif'")
  try:
    for f in frames:
      big = cv2.resize(np.asarray(f), (w * scale, h * scale), interpolation=cv2.INTER_NEAREST)
      writer.write(cv2.cvtColor(big, cv2.COLOR_RGB2BGR))
  finally:
    writer.release()


VIDEO_WRITERS = {"mp4": write_mp4, "gif": write_gif}


def write(results, out_dir: str, title: str, extra: dict | None = None, video_format: str = "mp4") -> dict:
  """results.json (summary + every episode), report.md, success.png, videos/*.<video_format>
  (mp4 | gif). -> summary."""
  if video_format not in VIDEO_WRITERS:
    raise ValueError(f"unknown video_format {video_format!r}; choose one of {sorted(VIDEO_WRITERS)}")
  os.makedirs(os.path.join(out_dir, "videos"), exist_ok=True)
  summary = summarize(results)
  episodes = [{k: v for k, v in dataclasses.asdict(r).items() if k != "frames"} for r in results]
  with open(os.path.join(out_dir, "results.json"), "w") as f:
    json.dump({"summary": summary, "episodes": episodes, **(extra or {})}, f, indent=1)
  with open(os.path.join(out_dir, "report.md"), "w") as f:
    f.write(markdown(summary, title))
  plot(summary, os.path.join(out_dir, "success.png"))
  for r in results:
    if r.frames:
      outcome = "success" if r.success else "failure"
      name = f"{r.protocol}-{r.task}-seed{r.seed}-{outcome}.{video_format}"
      VIDEO_WRITERS[video_format](r.frames, os.path.join(out_dir, "videos", name))
  return summary
