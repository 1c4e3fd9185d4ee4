"""Progress reporting for long jobs: a console line (step, loss, examples/s, tokens/s, MFU, host data
wait, ETA) and one JSON object per logged step appended to `metrics.jsonl` (process 0 only), whose numeric
fields also go to the run's metric writers (training/metric_writers.py: TensorBoard, wandb when enabled).

Throughput fields: examples_per_s (global batch / step time), tokens_per_s (image + text positions the
model processes, padding included), step_time_s, data_wait_s (host time per step spent waiting for
the next batch, incl. the host -> device copy), mfu (training/flops.py: analytic model FLOPs / step time
/ peak FLOP/s of all devices; absent when the device's peak is unknown, e.g. CPU)."""

import dataclasses
import json
import math
import time
from typing import Any, Callable, Sequence

import jax
import numpy as np

from genvla_jax.training import metric_writers


def format_duration(seconds: float) -> str:
  if not math.isfinite(seconds):
    return "?"
  seconds = int(seconds)
  h, rem = divmod(seconds, 3600)
  m, s = divmod(rem, 60)
  return f"{h}h{m:02d}m{s:02d}s" if h else f"{m}m{s:02d}s"


class NonFiniteLossError(FloatingPointError):
  pass


@dataclasses.dataclass(frozen=True)
class Monitor:
  """An occasional measurement during training (e.g. eval/representation.drift_monitor): every `every`
  steps the trainer logs `measure(params) -> {metric: value}` as one `label` record (Progress.log_extra;
  in the metric writers as "<label>/<metric>")."""

  label: str
  every: int
  measure: Callable[[Any], dict]


class Progress:
  def __init__(
    self,
    *,
    total_steps,
    start_step,
    global_batch,
    metrics_path,
    log_every,
    printer=print,
    tokens_per_example: int = 0,
    flops_per_step: float = 0.0,
    peak_flops: float | None = None,
    writers: Sequence[metric_writers.MetricWriter] = (),
  ):
    self.total, self.batch, self.log_every = total_steps, global_batch, log_every
    self.tokens_per_example, self.flops_per_step, self.peak_flops = tokens_per_example, flops_per_step, peak_flops
    self.metrics_path, self.printer, self.writers = metrics_path, printer, tuple(writers)
    self.is_main = jax.process_index() == 0
    self._last_step, self._last_time = start_step, time.perf_counter()
    self._data_wait = 0.0

  def add_data_wait(self, seconds: float):
    self._data_wait += seconds

  def should_log(self, step: int) -> bool:
    return step % self.log_every == 0 or step == self.total

  def log_extra(self, step: int, values: dict, label: str) -> dict:
    """A separate record for occasional measurements (e.g. the representation drift monitor)."""
    record = dict(step=step, **values)
    if self.is_main:
      self.printer(
        f"step {step:>6}/{self.total} | {label}: "
        + " | ".join(f"{k} {v:.4f}" for k, v in values.items() if isinstance(v, float)),
        flush=True,
      )
      with open(self.metrics_path, "a") as f:
        f.write(json.dumps(record) + "\n")
      self._write(step, {f"{label}/{k}": v for k, v in metric_writers.scalars(values).items()})
    return record

  def _write(self, step: int, scalars: dict[str, float]):
    for writer in self.writers:
      writer.write(step, scalars)

  def log(self, step: int, metrics) -> dict:
    """step: number of completed steps. Fetches metrics (a sync point), prints, appends JSON."""
    metrics = {k: float(np.asarray(v)) for k, v in jax.device_get(metrics).items()}
    if not math.isfinite(metrics["loss"]):
      raise NonFiniteLossError(f"loss is {metrics['loss']} at step {step}; stopping (last checkpoint kept)")
    now = time.perf_counter()
    steps = max(step - self._last_step, 1)
    elapsed = now - self._last_time
    step_time = elapsed / steps
    record = dict(
      step=step,
      **metrics,
      examples_per_s=self.batch / step_time,
      tokens_per_s=self.batch * self.tokens_per_example / step_time,
      step_time_s=step_time,
      data_wait_s=self._data_wait / steps,
    )
    mfu = ""
    if self.peak_flops and self.flops_per_step:
      record["mfu"] = self.flops_per_step / step_time / self.peak_flops
      mfu = f" | MFU {record['mfu']:.1%}"
    eta = (self.total - step) * step_time
    if self.is_main:
      quality = (
        f"flow mse {metrics['flow_mse']:.4f}" if "flow_mse" in metrics else f"tok acc {metrics['token_accuracy']:.3f}"
      )
      self.printer(
        f"step {step:>6}/{self.total} | loss {metrics['loss']:.4f} | "
        f"{quality} | {record['examples_per_s']:.1f} ex/s | "
        f"{record['tokens_per_s']:.0f} tok/s | {step_time * 1000:.0f} ms/step{mfu} | "
        f"data wait {record['data_wait_s'] * 1000:.0f} ms | ETA {format_duration(eta)}",
        flush=True,
      )
      with open(self.metrics_path, "a") as f:
        f.write(json.dumps(record) + "\n")
      self._write(step, metric_writers.scalars(record))
    self._last_step, self._last_time, self._data_wait = step, now, 0.0
    return record
