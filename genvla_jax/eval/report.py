"""Closed-loop results -> numbers with 95% confidence intervals, results.json, report.md, a plot, the
success rates as TensorBoard scalars and rollout videos.

Videos: "mp4" is H.264 (yuv420p, even width and height: odd sizes are padded by repeating the last row /
column) written through PyAV (libx264), which browsers play. Where PyAV or its H.264 encoder is missing,
the videos are GIFs instead: results.json's "videos" counts them (gif_fallbacks, with the reason) and
report.md says so. "gif" writes GIFs.

TensorBoard (`<out>/tensorboard/`): per protocol and task "success_rate/<protocol>/<task>", and
"success_rate/<protocol>/all_tasks" (the protocol's overall rate, report.md's "all tasks" row: its
episodes pooled), at the evaluated checkpoint's step (0 when unknown). Each step has its own event file
(suffix ".step<N>"): evaluating a step again replaces that step's file, so readers see one value per step.

Success rates carry Wilson score intervals (95%, genvla_jax/intervals.py).
"""

import dataclasses
import json
import os

import numpy as np

from genvla_jax.intervals import wilson_interval
from genvla_jax.training import metric_writers


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
    ).T.clip(0.0)  # rounding: an interval's end may sit 1e-17 on the wrong side of 0% / 100%
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


H264_ENCODERS = ("libx264", "h264")  # FFmpeg's names, tried in order


def h264_encoder() -> tuple[str | None, str]:
  """-> (name of an H.264 encoder PyAV has, "") or (None, why there is none)."""
  try:
    import av
  except ImportError:
    return None, "PyAV is not installed (pip install av)"
  for name in H264_ENCODERS:
    try:
      av.codec.Codec(name, "w")
    except av.codec.codec.UnknownCodecError:
      continue
    return name, ""
  return None, f"PyAV {av.__version__} has no H.264 encoder ({', '.join(H264_ENCODERS)})"


def even_frame(frame: np.ndarray) -> np.ndarray:
  """[H,W,3] -> [H',W',3] with even H', W' (yuv420p halves both): the last row / column repeated."""
  h, w = frame.shape[:2]
  return np.pad(frame, ((0, h % 2), (0, w % 2), (0, 0)), mode="edge")


def write_mp4(frames, path: str, fps: int = 10, scale: int = 3):
  """H.264 (yuv420p) in an mp4 with its index first (plays while loading), through PyAV."""
  import av

  encoder, reason = h264_encoder()
  if encoder is None:
    raise RuntimeError(f"cannot write {path}: {reason}")
  big = [even_frame(np.asarray(f).repeat(scale, axis=0).repeat(scale, axis=1)) for f in frames]
  with av.open(path, mode="w", options={"movflags": "faststart"}) as container:
    stream = container.add_stream(encoder, rate=fps)
    stream.height, stream.width = big[0].shape[:2]
    stream.pix_fmt = "yuv420p"
    for f in big:
      container.mux(stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(f), format="rgb24")))
    container.mux(stream.encode())  # flush the encoder's delayed frames


VIDEO_WRITERS = {"mp4": write_mp4, "gif": write_gif}


def video_format_to_write(requested: str) -> tuple[str, str]:
  """-> (format the videos are written in, why it is not `requested` or "")."""
  if requested != "mp4":
    return requested, ""
  encoder, reason = h264_encoder()
  return ("mp4", "") if encoder else ("gif", reason)


def success_scalars(summary: dict) -> dict[str, float]:
  """{"success_rate/<protocol>/<task>": rate, "success_rate/<protocol>/all_tasks": overall rate}."""
  out = {}
  for protocol, entry in summary["protocols"].items():
    for task, cell in entry["tasks"].items():
      out[f"success_rate/{protocol}/{task}"] = cell["success_rate"]
    out[f"success_rate/{protocol}/all_tasks"] = entry["overall"]["success_rate"]
  return out


def write_scalars(summary: dict, logdir: str, step: int):
  """The success rates into `logdir` at `step`, replacing what an earlier evaluation of `step` wrote."""
  suffix = f".step{step}"
  if os.path.isdir(logdir):
    for name in os.listdir(logdir):
      if name.startswith("events.out.tfevents.") and name.endswith(suffix):
        os.remove(os.path.join(logdir, name))
  writer = metric_writers.TensorBoardWriter(logdir, filename_suffix=suffix)
  try:
    writer.write(step, success_scalars(summary))
  finally:
    writer.close()


def write(
  results, out_dir: str, title: str, extra: dict | None = None, video_format: str = "mp4", step: int | None = None
) -> dict:
  """results.json (summary + every episode + videos), report.md, success.png, tensorboard/ (at `step`, the
  evaluated checkpoint's; None: 0), videos/*.<video_format> (mp4 | gif; GIF when no H.264). -> summary."""
  if video_format not in VIDEO_WRITERS:
    raise ValueError(f"unknown video_format {video_format!r}; choose one of {sorted(VIDEO_WRITERS)}")
  os.makedirs(os.path.join(out_dir, "videos"), exist_ok=True)
  summary = summarize(results)
  written, fallback = video_format_to_write(video_format)
  with_frames = [r for r in results if r.frames]
  videos = {
    "requested": video_format,
    "format": written,
    "count": len(with_frames),
    "gif_fallbacks": len(with_frames) if fallback else 0,
    "fallback_reason": fallback,
  }
  episodes = [{k: v for k, v in dataclasses.asdict(r).items() if k != "frames"} for r in results]
  with open(os.path.join(out_dir, "results.json"), "w") as f:
    json.dump({"summary": summary, "episodes": episodes, "videos": videos, **(extra or {})}, f, indent=1)
  with open(os.path.join(out_dir, "report.md"), "w") as f:
    f.write(markdown(summary, title))
    if fallback and with_frames:
      f.write(f"Videos: {len(with_frames)} GIF instead of mp4: {fallback}.\n")
  plot(summary, os.path.join(out_dir, "success.png"))
  write_scalars(summary, os.path.join(out_dir, "tensorboard"), step or 0)
  for r in with_frames:
    outcome = "success" if r.success else "failure"
    name = f"{r.protocol}-{r.task}-seed{r.seed}-{outcome}.{written}"
    VIDEO_WRITERS[written](r.frames, os.path.join(out_dir, "videos", name))
  return summary
