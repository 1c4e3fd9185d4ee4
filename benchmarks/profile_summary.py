"""Where one profiled call spends its time: a jax.profiler trace (an .xplane.pb under a trace directory) -> the
compiled program's ops by device time.

Which events count: those carrying XLA's `hlo_op` stat (the op a kernel or thunk runs for). On a GPU they are
the kernels (and copies) on the device planes ("/device:GPU:0"), several per op where a library call (cuBLAS,
cuDNN) launches more than one; on the CPU, where there is no device plane, the runtime's thunks on the host
plane, without the control-flow thunks (`while`, `conditional`, `call`: each spans the thunks of its body,
which are counted). Only the program (`hlo_module`) with the most time is summarised (the profiled step; a
trace can hold small helper programs too). Caveat: XLA disables command buffers (CUDA graphs) while
profiling, so a profiled GPU step launches every kernel itself; its time can differ from the timed step's.
"""

import collections
import glob
import os
import re


def newest_trace(trace_dir: str) -> str:
  """The newest .xplane.pb under `trace_dir` (jax.profiler.trace writes plugins/profile/<time>/<host>.xplane.pb)."""
  paths = glob.glob(os.path.join(trace_dir, "**", "*.xplane.pb"), recursive=True)
  if not paths:
    raise FileNotFoundError(f"no .xplane.pb under {trace_dir} (did the profiler write a trace?)")
  return max(paths, key=os.path.getmtime)


CONTROL_FLOW = ("while", "conditional", "call")


def _op_events(profile_data):
  """-> (where, [(plane, event name, hlo_op, hlo_module, duration ns)]): device events with an hlo_op when any
  device plane has them, else the host's."""
  device, host = [], []
  for plane in profile_data.planes:
    for line in plane.lines:
      for event in line.events:
        stats = dict(event.stats)
        if "hlo_op" not in stats:
          continue
        record = (plane.name, event.name, str(stats["hlo_op"]), str(stats.get("hlo_module", "")), event.duration_ns)
        if plane.name.startswith("/device:"):
          device.append(record)
        elif kind(record[2]) not in CONTROL_FLOW:  # a host thunk of a loop spans the thunks of its body
          host.append(record)
  return ("device", device) if device else ("host (no device plane: CPU thunks)", host)


def kind(op: str) -> str:
  """An op's kind: its name without the instance number (`loop_fusion.12` -> `loop_fusion`)."""
  return re.sub(r"[._-]?\d+$", "", op) or op


def summarize(trace_dir: str, top: int = 15) -> dict:
  """-> {trace, where, module, events (kernels / thunks of the program in the trace), total_ms, rows: the `top`
  ops by time [{op, kind, first kernel, count, ms, share}] + one "(other ops)" row, kinds: {kind: (count, ms)}}."""
  import jax

  path = newest_trace(trace_dir)
  where, events = _op_events(jax.profiler.ProfileData.from_file(path))
  if not events:
    raise ValueError(f"{path}: no event carries an hlo_op stat (nothing of a compiled program was traced)")
  per_module = collections.Counter()
  for _, _, _, module, ns in events:
    per_module[module] += ns
  module = per_module.most_common(1)[0][0]
  events = [e for e in events if e[3] == module]
  total = sum(e[4] for e in events)
  ops = collections.defaultdict(lambda: [0, 0, ""])  # op -> [count, ns, first kernel name]
  kinds = collections.defaultdict(lambda: [0, 0])
  for _, name, op, _, ns in events:
    ops[op][0] += 1
    ops[op][1] += ns
    ops[op][2] = ops[op][2] or name
    kinds[kind(op)][0] += 1
    kinds[kind(op)][1] += ns
  ranked = sorted(ops.items(), key=lambda kv: -kv[1][1])
  rows = [
    dict(op=op, kind=kind(op), kernel=name[:60], count=count, ms=ns / 1e6, share=ns / total if total else 0.0)
    for op, (count, ns, name) in ranked[:top]
  ]
  rest = ranked[top:]
  if rest:
    ns = sum(v[1] for _, v in rest)
    rows.append(
      dict(
        op=f"(other {len(rest)} ops)",
        kind="",
        kernel="",
        count=sum(v[0] for _, v in rest),
        ms=ns / 1e6,
        share=ns / total if total else 0.0,
      )
    )
  return dict(
    trace=path,
    where=where,
    module=module,
    events=len(events),
    total_ms=total / 1e6,
    rows=rows,
    kinds={k: (c, ns / 1e6) for k, (c, ns) in sorted(kinds.items(), key=lambda kv: -kv[1][1])},
  )
