"""Measurement helpers shared by the benchmark scripts: device copy bandwidth, median call time, and
resident memory (one process, or a process tree) sampled in a background thread."""

import os
import threading
import time

import numpy as np


def bandwidth() -> float:
  """Bytes/s of a large on-device copy (read + write), the reference for bandwidth floors."""
  import jax
  import jax.numpy as jnp

  n = (256 << 20) if jax.devices()[0].platform != "cpu" else (32 << 20)
  x = jnp.ones((n,), jnp.float32)
  f = jax.jit(lambda a: a * 1.0001)
  f(x).block_until_ready()
  t = time.perf_counter()
  for _ in range(5):
    y = f(x)
  y.block_until_ready()
  return 2 * 4 * n * 5 / (time.perf_counter() - t)


def median_time(fn, *args, repeats=50) -> float:
  """Median seconds of `fn(*args)` (results blocked on) after one warm-up call."""
  import jax

  jax.block_until_ready(fn(*args))
  times = []
  for _ in range(repeats):
    t = time.perf_counter()
    jax.block_until_ready(fn(*args))
    times.append(time.perf_counter() - t)
  return float(np.median(times))


def rss_bytes(pid: int) -> int:
  """Current resident set size of one process (not ru_maxrss: device initialisation can peak above
  anything measured after it)."""
  try:
    with open(f"/proc/{pid}/status") as f:
      return next(int(line.split()[1]) for line in f if line.startswith("VmRSS:")) * 1024
  except (OSError, StopIteration):
    return 0


def _tree(pid: int) -> list[int]:
  """A process and all its descendants (from /proc)."""
  children = {}
  for entry in os.listdir("/proc"):
    if entry.isdigit():
      try:
        with open(f"/proc/{entry}/stat") as f:
          parent = int(f.read().rsplit(")", 1)[1].split()[1])
        children.setdefault(parent, []).append(int(entry))
      except (OSError, ValueError, IndexError):
        continue
  tree, stack = [], [pid]
  while stack:
    p = stack.pop()
    tree.append(p)
    stack += children.get(p, [])
  return tree


def tree_rss_bytes(pid: int) -> int:
  """RSS of a process and all its descendants (from /proc)."""
  return sum(rss_bytes(p) for p in _tree(pid))


def cpu_seconds(pid: int) -> float:
  """User + system CPU seconds one live process (all its threads) has used so far."""
  try:
    with open(f"/proc/{pid}/stat") as f:
      fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime, stime
  except (OSError, ValueError, IndexError):
    return 0.0


def tree_cpu_seconds(pid: int) -> float:
  """CPU seconds of a process and its live descendants: the difference of two readings is the CPU the tree
  spent in between, as long as no process of it ended in between (a loader's workers live as long as it)."""
  return sum(cpu_seconds(p) for p in _tree(pid))


class PeakRSS:
  """Samples `measure(os.getpid())` (bytes) every `interval` seconds in a thread; stop() -> the peak."""

  def __init__(self, measure=rss_bytes, interval: float = 0.005):
    self._measure, self._interval = measure, interval
    self.peak, self._stop = measure(os.getpid()), threading.Event()
    self._thread = threading.Thread(target=self._run, daemon=True)
    self._thread.start()

  def _run(self):
    while not self._stop.wait(self._interval):
      self.peak = max(self.peak, self._measure(os.getpid()))

  def stop(self) -> int:
    self._stop.set()
    self._thread.join()
    return max(self.peak, self._measure(os.getpid()))
