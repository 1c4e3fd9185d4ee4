"""One progress line for long loops: `label: done/total unit (pct), rate unit/s, ETA` at most every
`every_s` seconds and once at the end. Used where a job counts what it did (recording demonstrations, VQA
answers, FAST BPE chunks); training has its own line (training/loop.py), the closed-loop harness its own."""

import time


class Progress:
  def __init__(self, label: str, total: int, unit: str = "", printer=print, every_s: float = 10.0):
    self.label, self.total, self.unit, self.printer, self.every_s = label, total, unit, printer, every_s
    self.start = self.last = time.monotonic()

  def line(self, done: int, now: float) -> str:
    elapsed = max(now - self.start, 1e-9)
    rate = done / elapsed
    eta = (self.total - done) / rate if rate > 0 else float("inf")
    unit = f" {self.unit}" if self.unit else ""
    pct = f" ({100 * done / self.total:.0f}%)" if self.total else ""
    return f"{self.label}: {done}/{self.total}{unit}{pct}, {rate:.1f}{unit}/s, ETA {_duration(eta)}"

  def update(self, done: int) -> None:
    now = time.monotonic()
    if now - self.last >= self.every_s or done >= self.total:
      self.last = now
      self.printer(self.line(done, now), flush=True)


def _duration(seconds: float) -> str:
  if seconds == float("inf"):
    return "?"
  minutes, s = divmod(int(round(seconds)), 60)
  return f"{minutes}m{s:02d}s" if minutes else f"{s}s"
