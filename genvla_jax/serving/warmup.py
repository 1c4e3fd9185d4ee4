"""Compiling before serving: the batch sizes the server pads to, JAX's persistent compilation cache (a
restarted server reads its compiled programs from disk instead of compiling them again) and a counter of
the compilations a piece of code triggers (tests, measurements)."""

import contextlib
import os

PROMPT = "pick up the object"  # the warm-up's instruction: any prompt compiles the same (full-width) program
DEFAULT_CACHE_DIR = "~/.cache/genvla_jax/jax_cache"
TRACE_EVENT = "/jax/core/compile/jaxpr_trace_duration"  # jax._src.dispatch: one per trace of a function
COMPILE_EVENT = "/jax/core/compile/backend_compile_duration"  # one per program compiled or read from the cache
CACHE_HIT_EVENT = "/jax/compilation_cache/cache_hits"  # one per program read from the persistent cache


def padded(n: int) -> int:
  """The batch size `n` requests are padded to: the next power of two (one compile per size)."""
  return 1 << (n - 1).bit_length()


def batch_sizes(max_batch: int) -> list[int]:
  """Every batch size a server batching at most `max_batch` requests calls the policy with."""
  return sorted({padded(n) for n in range(1, max_batch + 1)})


def enable_compilation_cache(path: str | None, min_compile_seconds: float = 0.5) -> str | None:
  """Persistent compilation cache in `path` (created; None or "": off) for programs that take at least
  `min_compile_seconds` to compile; call before anything compiles. -> the absolute path, or None."""
  if not path:
    return None
  import jax

  path = os.path.abspath(os.path.expanduser(path))
  os.makedirs(path, exist_ok=True)
  jax.config.update("jax_compilation_cache_dir", path)
  jax.config.update("jax_persistent_cache_min_compile_time_secs", min_compile_seconds)
  return path


@contextlib.contextmanager
def count_compiles():
  """with count_compiles() as counts: ... -> counts["traces"] (functions JAX traced), counts["compiles"]
  (programs XLA compiled or read from the persistent cache) and counts["cache_hits"] (of those, read from
  the persistent cache) inside the block. Zero traces: every call found its compiled program in memory."""
  from jax import monitoring

  counts = {"traces": 0, "compiles": 0, "cache_hits": 0}
  names = {TRACE_EVENT: "traces", COMPILE_EVENT: "compiles", CACHE_HIT_EVENT: "cache_hits"}

  def on_duration(event, duration, **kwargs):
    if event in names:
      counts[names[event]] += 1

  def on_event(event, **kwargs):
    if event in names:
      counts[names[event]] += 1

  monitoring.register_event_duration_secs_listener(on_duration)
  monitoring.register_event_listener(on_event)
  try:
    yield counts
  finally:
    monitoring.unregister_event_duration_listener(on_duration)
    monitoring.unregister_event_listener(on_event)
