r"""Every GPU measurement of issue 25 in one command, on one H100/H200, in under 8 minutes; `--tiny`: the same code
path with the configs' tiny (demo) models, a CPU rehearsal (tests/test_gpu_suite.py runs it).

  bash benchmarks/gpu_suite.sh                                   # -> /tmp/gpu_suite (+ packed into $OUT if set)
  python benchmarks/gpu_suite.py --out=DIR [--budget_s=450] [--only=train_step,decode] [--flag_sets=...]
  python benchmarks/gpu_suite.py --tiny --out=/tmp/suite         # CPU rehearsal (5 min on 2 busy cores)

Writes DIR/<table>.md (one Markdown table per measurement) and DIR/<table>.json (the same rows, raw numbers),
DIR/summary.md (the targets: met / missed / not measured; where the time goes; the budget as it ran),
DIR/profiles/ (jax.profiler traces of one train step and one decode step, for TensorBoard / xprof),
DIR/items/<item>.json (status and seconds of each item) and DIR/device.json.

The measurements, in order of value (the targets first: train step >= 45% MFU on full-size π0+ in bf16 on one
device; decode <= 1.5x the bandwidth floor per pass and <= 150 ms per 7-DoF string action at batch 1 without
drafts), with the estimated device seconds at full size (compiles dominate: ~1-2 min per full-size train-step
compile on an H100; steps are 0.15-0.45 s, benchmarks/RESULTS.md):

  item          tables                      rows (full size)                                           est. s
  train_step    train_step, train_profile   π0+ bf16 storage + compute, remat dots, batch 32, attention     115
                                            xla (the 37.5%-MFU row of RESULTS) + a profile of one step
  attention     attention                   the same with model.attention_impl=cudnn (--attention_impls)    95
  decode        decode                      H=1, batch 1, 7-DoF: bins, string constrained, jump-forward,     115
                                            jump-forward + speculative (benchmarks/decode.py)
  decode_step   decode_step, decode_profile one cached decode step, model.decode_attention xla | fused:      65
                                            ms vs the LLM floor, kernels in the compiled step and in a
                                            profiled step (benchmarks/decode_step.py)
  memory        memory                      XLA's memory analysis of the trainer's step on this device       240
                                            (training/plan.memory_plan, compile only): LoRA r16, full
                                            fine-tuning, frozen LLM at the 24-48 GB recipe (bf16, remat
                                            full, batch 4)
  openvla_plus  openvla_plus                OpenVLA+ (7.5 B) train step, bf16, remat dots, batch 8: full     340
                                            fine-tuning, LoRA r16
  train_sweep   train_sweep                 remat dots_no_batch b32; dots b64; full b64; fp32 params +       410
                                            bf16 frozen tower b16
  xla_flags     xla_flags                   the train_step row and one decode step under each FLAG_SETS      600
                                            entry, each in a fresh process (XLA_FLAGS is read when JAX
                                            starts)
  decode_h4     decode_h4                   the decode rows at H=4                                           135
                                                                                                   total ~2115

So one 8-minute run measures the targets (train_step, attention, decode, decode_step: ~390 s) and whatever else
fits; every row checks the budget before it starts (its estimate, scaled by how the rows that ran so far compared
with theirs) and is written as "skipped: budget ..." when it would end past `--budget_s`; later, cheaper rows may
still run. `--only=memory,openvla_plus,...` runs the rest in another session (into the same --out: tables of
items not selected are left as they are). Each row runs in its own try/except: a failure (out of memory, an
implementation this device lacks, a config field that does not exist) becomes a row saying so. The items run in a
worker process (JAX starts there, not here); a worker that dies (e.g. a CUDA abort) or outlives budget + grace
(--grace_s: the hard stop, under the device tool's 10 minutes a command) costs only its current item, written as
failed, and a new worker goes on with the rest; summary.md is written in any case.

Needs on the device: the project's imports; of those the H200 image lacks ml_collections (every item) and, for
`memory` only (training/plan.py imports the data pipeline), grain, tensorflow_datasets and array_record: carry
them as wheels (the device tool's README), else those rows say ModuleNotFoundError. XLA_PYTHON_CLIENT_MEM_FRACTION
is left at JAX's default (.75), as in RESULTS' H100 rows. --tiny's numbers are not GPU measurements.
"""

import dataclasses
import datetime
import glob
import json
import math
import os
import subprocess
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # the repository
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # benchmarks/: train_step, decode, ...

from absl import app, flags

FLAGS = flags.FLAGS

# -- the plan --------------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Item:
  """One measurement: its tables (DIR/<table>.md/.json), estimated device seconds at full size, and whether it
  runs inside a worker (False: xla_flags, which starts its own processes)."""

  name: str
  tables: tuple[str, ...]
  estimate_s: float
  in_worker: bool = True


ITEMS = (
  Item("train_step", ("train_step", "train_profile"), 115),
  Item("attention", ("attention",), 95),
  Item("decode", ("decode",), 115),
  Item("decode_step", ("decode_step", "decode_profile"), 65),
  Item("memory", ("memory",), 240),
  Item("openvla_plus", ("openvla_plus",), 340),
  Item("train_sweep", ("train_sweep",), 410),
  Item("xla_flags", ("xla_flags",), 600, in_worker=False),
  Item("decode_h4", ("decode_h4",), 135),
)
ITEM_BY_NAME = {item.name: item for item in ITEMS}

# XLA flag sets the train step (and one decode step) are measured under, each in a fresh process. The defaults
# they change are those of XLA's debug_options_flags.cc (jaxlib 0.10-0.11); a flag this jaxlib does not know
# makes the process fail at start, and its row says so.
FLAG_SETS = (
  (
    "latency_hiding",
    "--xla_gpu_enable_latency_hiding_scheduler=true",
    "schedules independent work (async copies, the frozen tower's forward beside the trained parts) to overlap; "
    "off by default in XLA, on in NVIDIA's JAX-Toolbox images and JAX's GPU performance tips",
  ),
  (
    "command_buffers",
    "--xla_gpu_enable_command_buffer=FUSION,CUBLAS,CUBLASLT,CUSTOM_CALL,CUDNN,DYNAMIC_SLICE_FUSION,WHILE,CONDITIONAL"
    " --xla_gpu_graph_min_graph_size=1",
    "CUDA graphs also around while loops / conditionals (the layer scans, the decoder loop) and for graphs of any "
    "size: less host launch overhead, the suspect of the decode step's ~400 small kernels (default: no WHILE / "
    "CONDITIONAL, min size 5)",
  ),
  (
    "cublas_gemm",
    "--xla_gpu_enable_triton_gemm=false",
    "GEMMs through cuBLAS instead of Triton-generated fusions (JAX-Toolbox's LLM flag list); often faster for "
    "large bf16 GEMMs on Hopper",
  ),
  (
    "while_double_buffering",
    "--xla_gpu_enable_while_loop_double_buffering=true",
    "double-buffers the scanned layer loops so a layer's weight slices / copies overlap the previous layer's "
    "compute (default off)",
  ),
)

# What each mode measures. Estimates are device seconds per row (compile included) at that size.
FULL = dict(
  pi0="pi0_plus.py:full",
  openvla="openvla_plus.py:full",
  train=dict(dtype="bfloat16", param_dtype="bfloat16", frozen_dtype="bfloat16", remat="dots", batch=32),
  text_len=64,
  steps=5,
  train_row_s=95,
  state_init_s=15,
  attention_impls=("cudnn",),
  decode=dict(dtype="bfloat16", batch=1, dof=7, repeats=4, proposal_len=8, unroll=0),
  decode_variants=("bins", "string constrained", "string jump-forward", "string jf + speculative"),
  decode_setup_s=15,
  decode_variant_s=25,
  decode_h4_variant_s=30,
  decode_step=dict(cache=400, loop=32),
  decode_step_impls=("xla", "fused"),
  decode_step_row_s=32,
  memory_recipe=dict(dtype="bfloat16", param_dtype="bfloat16", frozen_dtype="bfloat16", remat="full", batch=4),
  memory_row_s=80,
  openvla_train=dict(dtype="bfloat16", param_dtype="bfloat16", frozen_dtype="bfloat16", remat="dots", batch=8),
  openvla_rows=(("full fine-tuning", 0, ()), ("LoRA r16", 16, ("llm/.*",))),  # (label, LoRA rank, frozen)
  openvla_row_s=170,
  sweep=(  # (remat, batch, param dtype, frozen dtype)
    ("dots_no_batch", 32, "bfloat16", "bfloat16"),
    ("dots", 64, "bfloat16", "bfloat16"),
    ("full", 64, "bfloat16", "bfloat16"),
    ("dots", 16, "float32", "bfloat16"),
  ),
  flag_sets=tuple(name for name, _, _ in FLAG_SETS),
  flag_set_s=150,
  profile_top=15,
  budget_s=450,
)
F32 = dict(dtype="float32", param_dtype="float32", frozen_dtype="float32")  # a CPU compiles float32 ~2x faster
TINY = dict(
  FULL,
  pi0="pi0_plus.py:demo",
  openvla="openvla_plus.py:demo",
  train=dict(FULL["train"], batch=8, **F32),
  steps=2,
  train_row_s=8,
  state_init_s=2,
  attention_impls=("cudnn", "dot_product", "auto"),  # cudnn: expected to fail on a CPU (a row saying so)
  decode=dict(FULL["decode"], dtype="float32", repeats=1),
  decode_setup_s=3,
  decode_variant_s=4,
  decode_h4_variant_s=4,
  decode_step=dict(cache=64, loop=4),
  decode_step_row_s=4,
  memory_recipe=dict(FULL["memory_recipe"], batch=8, **F32),
  memory_row_s=6,
  openvla_train=dict(FULL["openvla_train"], batch=8, **F32),
  openvla_rows=FULL["openvla_rows"][:1],
  openvla_row_s=10,
  sweep=(("full", 16, "float32", "bfloat16"),),  # another remat, batch and storage (a new state)
  flag_sets=FULL["flag_sets"][:1],  # one flag set on a CPU (the GPU flags are accepted and ignored there)
  flag_set_s=25,
  profile_top=10,
  budget_s=1800,
)


def define_flags():
  flags.DEFINE_string("out", "/tmp/gpu_suite", "results directory (created; files in it are replaced)")
  flags.DEFINE_bool("tiny", False, "the configs' tiny models (a CPU rehearsal of the same code path)")
  flags.DEFINE_float("budget_s", None, "device seconds for the whole suite (default 450; --tiny: 1800)")
  flags.DEFINE_float("grace_s", 30, "a worker still running at budget + grace is stopped (its item: failed)")
  flags.DEFINE_list("only", [], f"items to run (default all): {', '.join(i.name for i in ITEMS)}")
  flags.DEFINE_list("flag_sets", [], "xla_flags: the FLAG_SETS to run (default all; --tiny: the first)")
  flags.DEFINE_list("attention_impls", [], "attention: model.attention_impl values (default: cudnn; --tiny: all)")
  flags.DEFINE_list("worker", [], "(internal) run these items in this process")
  flags.DEFINE_float("t0", 0.0, "(internal) the suite's start (time.time())")
  flags.DEFINE_string("flag_set", "", "(internal) the flag set this worker measures under")


def mode_spec(tiny: bool) -> dict:
  spec = dict(TINY if tiny else FULL)
  if FLAGS.attention_impls:
    spec["attention_impls"] = tuple(FLAGS.attention_impls)
  if FLAGS.flag_sets:
    known = [name for name, _, _ in FLAG_SETS]
    unknown = [n for n in FLAGS.flag_sets if n not in known]
    if unknown:
      raise app.UsageError(f"--flag_sets: unknown {unknown}; known: {known}")
    spec["flag_sets"] = tuple(FLAGS.flag_sets)
  return spec


# -- tables ----------------------------------------------------------------------------------------------------

# column key -> (header, format of a number)
COLUMNS = {
  "row": ("row", None),
  "model": ("model", None),
  "remat": ("remat", None),
  "batch": ("batch", "{:d}"),
  "storage": ("storage (params / frozen)", None),
  "attention": ("attention", None),
  "step_ms": ("step ms", "{:.1f}"),
  "ex_s": ("ex/s", "{:.1f}"),
  "tokens_s": ("tokens/s", "{:,.0f}"),
  "tflop_step": ("TFLOP/step", "{:.2f}"),
  "tflop_s": ("TFLOP/s", "{:.1f}"),
  "mfu": ("MFU", "{:.1%}"),
  "vs_matmul": ("vs matmul", "{:.2f}"),
  "xla_peak_gib": ("XLA peak GiB", "{:.2f}"),
  "peak_gib": ("peak_bytes_in_use GiB*", "{:.2f}"),
  "compile_s": ("compile s", "{:.1f}"),
  "fallbacks": ("auto -> xla fallbacks", None),
  "variant": ("variant", None),
  "H": ("H", "{:d}"),
  "ms_action": ("ms/action", "{:.1f}"),
  "passes": ("passes", "{:.1f}"),
  "ms_pass": ("ms/pass", "{:.2f}"),
  "vs_bins": ("vs bins", "{:.2f}"),
  "passes_vs_constrained": ("passes vs constrained", "{:.2f}"),
  "vs_floor": ("vs floor (all params)", "{:.2f}"),
  "vs_llm_floor": ("vs LLM floor", "{:.2f}"),
  "draft_accepted": ("draft accepted", "{:.2f}"),
  "decode_attention": ("decode attention", None),
  "floor_ms": ("LLM floor ms", "{:.2f}"),
  "loop_ms": ("per step in a loop ms", "{:.2f}"),
  "step_vs_floor": ("step vs floor", "{:.2f}"),
  "loop_vs_floor": ("loop vs floor", "{:.2f}"),
  "fusions": ("fusions", "{:d}"),
  "custom_calls": ("custom calls", "{:d}"),
  "while_loops": ("while loops", "{:d}"),
  "profiled_kernels": ("kernels in a profiled step", "{:d}"),
  "run": ("run", None),
  "op": ("op", None),
  "kind": ("kind", None),
  "kernel": ("first kernel", None),
  "count": ("count", "{:d}"),
  "ms": ("ms", "{:.3f}"),
  "share": ("share", "{:.1%}"),
  "mode": ("mode", None),
  "trainable_b": ("trainable B params", "{:.3f}"),
  "params_gib": ("params GiB", "{:.2f}"),
  "grads_gib": ("grads GiB", "{:.2f}"),
  "opt_gib": ("opt. state GiB", "{:.2f}"),
  "act_gib": ("act.+temp. GiB", "{:.2f}"),
  "total_gib": ("total GiB (XLA peak)", "{:.2f}"),
  "fits": ("fits 24 / 40 / 48 / 80 GiB", None),
  "flag_set": ("flag set", None),
  "xla_flags": ("XLA_FLAGS", None),
  "step_vs_default": ("step vs default", "{:.2f}"),
  "decode_ms": ("decode step ms (loop)", "{:.2f}"),
  "decode_vs_default": ("decode vs default", "{:.2f}"),
  "why": ("why", None),
  "status": ("status", None),
}


@dataclasses.dataclass
class Table:
  """One measurement's rows (dicts keyed by `columns`; missing = blank) with notes; written as DIR/<name>.md and
  DIR/<name>.json (`extra`: more raw data for the JSON)."""

  name: str
  title: str
  columns: list
  rows: list
  notes: list = dataclasses.field(default_factory=list)
  extra: dict = dataclasses.field(default_factory=dict)

  def markdown(self) -> str:
    head = [COLUMNS[c][0] for c in self.columns]
    lines = [f"## {self.title}", "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in self.rows:
      lines.append("| " + " | ".join(cell(row.get(c), COLUMNS[c][1]) for c in self.columns) + " |")
    return "\n".join(lines + [""] + [f"- {n}" for n in self.notes]) + "\n"

  def write(self, out: str):
    with open(os.path.join(out, f"{self.name}.md"), "w") as f:
      f.write(self.markdown())
    record = dict(name=self.name, title=self.title, columns=self.columns, rows=self.rows, notes=self.notes)
    write_json(os.path.join(out, f"{self.name}.json"), dict(record, **self.extra))


def cell(value, fmt) -> str:
  if value is None:
    return ""
  if fmt and isinstance(value, (int, float)) and not isinstance(value, bool):
    if isinstance(value, float) and not math.isfinite(value):
      return "n/a"
    return fmt.format(int(value) if fmt == "{:d}" else value)
  return str(value).replace("|", "\\|").replace("\n", " ")


def finite_or_none(x):
  """JSON without NaN / inf (not JSON): None instead, recursively."""
  if isinstance(x, float):
    return x if math.isfinite(x) else None
  if isinstance(x, dict):
    return {k: finite_or_none(v) for k, v in x.items()}
  if isinstance(x, (list, tuple)):
    return [finite_or_none(v) for v in x]
  return x


def write_json(path: str, record):
  tmp = path + ".tmp"
  with open(tmp, "w") as f:
    json.dump(finite_or_none(record), f, indent=1, default=str)
  os.replace(tmp, path)


def read_json(path: str):
  with open(path) as f:
    return json.load(f)


def one_line(error: BaseException) -> str:
  """An exception as one short line, out-of-memory named as such."""
  text = f"{type(error).__name__}: {str(error).strip().splitlines()[0] if str(error).strip() else ''}"[:300]
  if "RESOURCE_EXHAUSTED" in str(error) or "out of memory" in str(error).lower():
    return "OOM: " + text
  return text


def status_tables(item: Item, status: str) -> list[Table]:
  """An item that did not run (skipped, not selected, its worker died): each of its tables with one row saying
  why."""
  return [Table(name, f"{name}: not measured", ["status"], [dict(status=status)]) for name in item.tables]


# -- the clock and the budget ------------------------------------------------------------------------------------


class Budget:
  """The suite's clock (shared by its processes through t0 = time.time() at the start) and budget. A row may start
  when elapsed + its estimate x calibration <= budget; calibration = measured / estimated seconds of the rows
  that ran so far, in any process (DIR/items/rows.jsonl), within [0.5, 3]."""

  def __init__(self, t0: float, budget_s: float, out: str):
    self.t0, self.budget_s, self.out = t0, budget_s, out
    self.rows_path = os.path.join(out, "items", "rows.jsonl")

  def elapsed(self) -> float:
    return time.time() - self.t0

  def record(self, estimate_s: float, seconds: float):
    with open(self.rows_path, "a") as f:
      f.write(json.dumps(dict(estimate_s=estimate_s, seconds=seconds)) + "\n")

  def calibration(self) -> float:
    if not os.path.exists(self.rows_path):
      return 1.0
    with open(self.rows_path) as f:
      done = [json.loads(line) for line in f if line.strip()]
    estimated = sum(d["estimate_s"] for d in done)
    return min(3.0, max(0.5, sum(d["seconds"] for d in done) / estimated)) if estimated else 1.0

  def refusal(self, estimate_s: float) -> str | None:
    """None if a row estimated at `estimate_s` fits, else the reason it is skipped."""
    scaled, elapsed = estimate_s * self.calibration(), self.elapsed()
    if elapsed + scaled <= self.budget_s:
      return None
    return f"skipped: budget (elapsed {elapsed:.0f} s + estimate {scaled:.0f} s > {self.budget_s:.0f} s)"


class Run:
  """One worker's context: the mode's spec, the output directory, the budget, caches (the train state of the last
  train row, the matmul reference)."""

  def __init__(self, spec: dict, out: str, budget: Budget, tiny: bool):
    self.spec, self.out, self.budget, self.tiny = spec, out, budget, tiny
    self.state_cache: dict = {}
    self._matmul: dict = {}
    self.item = ""  # the item running (its finished rows go to DIR/items/<item>.rows.jsonl)

  def attempt(self, row: dict, estimate_s: float, fn) -> dict:
    """`row` completed by fn() (a dict of measured columns) and status "ok"; or with the status of a skip
    (budget) or a failure (the exception in one line). Prints the row."""
    refusal = self.budget.refusal(estimate_s)
    if refusal:
      out = dict(row, status=refusal)
    else:
      t = time.time()
      try:
        out = dict(row, **fn())
        out.setdefault("status", "ok")
      except Exception as e:  # a failure is a row, not a crashed suite
        out = dict(row, status="failed: " + one_line(e))
        self.state_cache.clear()
      out["row_s"] = round(time.time() - t, 1)
      if str(out["status"]).startswith("ok"):  # (a refusal in a second says nothing about compile times)
        self.budget.record(estimate_s, out["row_s"])
    print(f"[{self.budget.elapsed():6.0f} s] " + ", ".join(f"{k}={v}" for k, v in out.items()), flush=True)
    if self.item:
      with open(os.path.join(self.out, "items", f"{self.item}.rows.jsonl"), "a") as f:
        f.write(json.dumps(finite_or_none({k: v for k, v in out.items() if k != "raw"}), default=str) + "\n")
    return out

  def matmul(self, dtype: str) -> float:
    import jax.numpy as jnp
    import train_step

    if dtype not in self._matmul:
      self._matmul[dtype] = train_step.matmul_reference(jnp.dtype(dtype))
    return self._matmul[dtype]

  def profile_dir(self, name: str) -> str:
    path = os.path.join(self.out, "profiles", name)
    os.makedirs(path, exist_ok=True)
    return path


# -- configs -----------------------------------------------------------------------------------------------------


def load_config(spec: str):
  """'pi0_plus.py:full' -> the shipped config file's get_config(arg) (genvla_jax.config_files finds it)."""
  import importlib.util

  from genvla_jax import config_files

  name, _, arg = spec.partition(":")
  path = config_files.shipped(name)
  if path is None:
    raise ValueError(f"no shipped config file {name!r}")
  module_spec = importlib.util.spec_from_file_location(os.path.splitext(name)[0], path)
  module = importlib.util.module_from_spec(module_spec)
  module_spec.loader.exec_module(module)
  return module.get_config(arg or None)


def has_field(config, dotted: str) -> bool:
  node = config
  for part in dotted.split("."):
    if part not in node:
      return False
    node = node[part]
  return True


def train_config(spec_name: str, train: dict, attention: str | None = None, lora_rank: int = 0, frozen=()):
  """A config for a train row: `train`'s dtypes, remat; model.attention_impl when given (and the field exists);
  LoRA rank and optimizer.frozen. -> (config, problem or None)."""
  config = load_config(spec_name)
  config.model.dtype = train["dtype"]
  config.model.param_dtype = train["param_dtype"]
  config.model.frozen_dtype = train["frozen_dtype"]
  config.model.remat_policy = train["remat"]
  config.lora.rank = lora_rank
  config.optimizer.frozen = list(frozen)
  if attention is not None:
    if not has_field(config, "model.attention_impl"):
      return config, "field not available (config.model.attention_impl is not in the schema yet)"
    config.model.attention_impl = attention
  return config, None


def storage(train: dict) -> str:
  return f"{train['param_dtype']} / {train['frozen_dtype']}"


# -- measurements --------------------------------------------------------------------------------------------------


def train_row(run: Run, config, train: dict, profile: str = "") -> dict:
  """One train-step row of `config` at train["batch"] (benchmarks/train_step.run_one + throughput)."""
  import jax
  import train_step
  from genvla_jax.training import flops as flops_lib

  spec = run.spec
  counted = attention_fallbacks()
  r = train_step.run_one(
    config,
    train["batch"],
    spec["text_len"],
    spec["steps"],
    profile_dir=run.profile_dir(profile) if profile else None,
    state_cache=run.state_cache,
  )
  peak = flops_lib.peak_flops(jax.devices()[0])
  d = train_step.throughput(config, train["batch"], spec["text_len"], r["step_s"], peak, run.matmul(config.model.dtype))
  row = dict(
    step_ms=r["step_s"] * 1e3,
    **{k: d[k] for k in ("ex_s", "tokens_s", "tflop_step", "tflop_s", "mfu", "vs_matmul")},
    xla_peak_gib=r["xla_peak_gib"],
    peak_gib=r["peak_gib"],
    compile_s=r["compile_s"],
  )
  if config.lora.rank:
    row["mfu"] = None  # (the analytic FLOPs are full fine-tuning's: a LoRA step does less)
  fallbacks = attention_fallbacks() - counted
  if fallbacks:
    row["fallbacks"] = ", ".join(f"{k}: {v}" for k, v in fallbacks.items())
  if r.get("profile_error"):
    row["status"] = "ok (profile failed: " + r["profile_error"][:200] + ")"
  return row


def attention_fallbacks():
  """models/attention.FALLBACKS ("auto" calls traced onto "xla", by reason) where that module exists."""
  import collections

  try:
    from genvla_jax.models import attention
  except ImportError:
    return collections.Counter()
  return collections.Counter(getattr(attention, "FALLBACKS", {}))


TRAIN_COLUMNS = [
  "row",
  "remat",
  "batch",
  "storage",
  "attention",
  "step_ms",
  "ex_s",
  "tokens_s",
  "tflop_step",
  "tflop_s",
  "mfu",
  "vs_matmul",
  "xla_peak_gib",
  "peak_gib",
  "compile_s",
  "status",
]
TRAIN_NOTES = [
  "Random weights, a synthetic batch (image tokens + 64 text tokens), one device; AdamW state float32. MFU: the "
  "analytic model FLOPs (training/flops.py, remat recomputation not counted) / step time / the device's peak "
  "(no MFU for LoRA rows: the analytic count is full fine-tuning's); vs matmul: / a large matmul measured here.",
  "XLA peak: XLA's memory analysis of this row's compiled step (arguments + outputs - donated + temporaries); "
  "* peak_bytes_in_use is the process's running maximum, so a row shows at least the rows before it.",
]


def measure_train_step(run: Run) -> list[Table]:
  spec, train = run.spec, run.spec["train"]
  config, _ = train_config(spec["pi0"], train)
  row = dict(row=f"π0+ {spec['pi0']}", remat=train["remat"], batch=train["batch"], storage=storage(train))
  row["attention"] = "xla (default)"
  estimate = spec["train_row_s"] + spec["state_init_s"]
  row = run.attempt(row, estimate, lambda: train_row(run, config, train, profile="train_step"))
  tables = [Table("train_step", "Train step: full-size π0+ (the headline configuration)", TRAIN_COLUMNS, [row])]
  tables[0].notes = list(TRAIN_NOTES)
  tables.append(profile_table("train_profile", "One train step, profiled", run, "train_step", row, "train_step"))
  return tables


PROFILE_COLUMNS = ["run", "op", "kind", "kernel", "count", "ms", "share", "status"]


def profile_table(name: str, title: str, run: Run, profile: str, row: dict, label: str = "") -> Table:
  """The profiled call's ops by time (profile_summary) as a table; a row saying why when there is no trace."""
  import profile_summary

  columns = PROFILE_COLUMNS
  if not str(row.get("status", "")).startswith("ok"):
    return Table(name, title, columns, [dict(run=label, status="not profiled: " + str(row.get("status")))])
  try:
    s = profile_summary.summarize(os.path.join(run.out, "profiles", profile), run.spec["profile_top"])
  except Exception as e:
    return Table(name, title, columns, [dict(run=label, status="no summary: " + one_line(e))])
  rows = [dict(r, run=label, status="ok") for r in s["rows"]]
  notes = [
    f"{s['events']} events ({s['where']}) of program {s['module']}, {s['total_ms']:.2f} ms in all; raw trace: "
    f"{os.path.relpath(s['trace'], run.out)} (TensorBoard / xprof)",
    "kinds by time: " + ", ".join(f"{k} {c} x {ms:.2f} ms" for k, (c, ms) in list(s["kinds"].items())[:8]),
    "XLA turns command buffers (CUDA graphs) off while profiling: a profiled GPU step launches every kernel itself.",
  ]
  extra = {"profiles": {label or profile: {k: s[k] for k in ("events", "where", "module", "total_ms", "kinds")}}}
  return Table(name, title, columns, rows, notes, extra)


def measure_attention(run: Run) -> list[Table]:
  spec, train = run.spec, run.spec["train"]
  rows = []
  for impl in spec["attention_impls"]:
    config, problem = train_config(spec["pi0"], train, attention=impl)
    row = dict(row=f"π0+ {spec['pi0']}", remat=train["remat"], batch=train["batch"], storage=storage(train))
    row["attention"] = impl
    if problem:
      rows.append(dict(row, status=problem))
      continue
    rows.append(run.attempt(row, spec["train_row_s"], lambda config=config: train_row(run, config, train)))
  notes = TRAIN_NOTES + [
    "The reference row (model.attention_impl=xla, today's path) is train_step's. 'cudnn': cuDNN flash attention "
    "(jax.nn.dot_product_attention implementation='cudnn'; needs an NVIDIA GPU and bf16: refused elsewhere); "
    "'dot_product': jax.nn.dot_product_attention with XLA; 'auto': cudnn where a call qualifies, else xla "
    "(fallbacks counted)."
  ]
  columns = TRAIN_COLUMNS[:-1] + ["fallbacks", "status"]
  return [Table("attention", "Train step by attention implementation (model.attention_impl)", columns, rows, notes)]


def suite_tokenizer(run: Run) -> str:
  """A small SentencePiece model for the decoders (prompt words + string actions; digits single pieces), written
  once into DIR/assets: the full-size configs' PaliGemma tokenizer is not needed to time random weights."""
  import numpy as np
  from genvla_jax.tokenizers import string_actions, text

  path = os.path.join(run.out, "assets", "tokenizer.model")
  if not os.path.exists(path):
    rng = np.random.default_rng(0)
    codec = string_actions.StringActionCodec(horizon=2, dim=7)
    corpus = ["What action should the robot take to pick up the can?"] * 20
    corpus += [codec.format(rng.uniform(-1, 1, (2, 7)))[0] for _ in range(200)]
    text.train_sentencepiece(corpus, path, 384)
  return path


DECODE_COLUMNS = [
  "variant",
  "H",
  "ms_action",
  "passes",
  "ms_pass",
  "vs_bins",
  "passes_vs_constrained",
  "vs_floor",
  "vs_llm_floor",
  "draft_accepted",
  "status",
]


def measure_decode(run: Run, horizon: int = 1, name: str = "decode") -> list[Table]:
  """benchmarks/decode.py's variants at one horizon, batch 1, random weights; ratios as that script's, plus the
  time per pass vs the LLM-only floor (what a decode pass must read)."""
  import jax
  import decode
  from genvla_jax.models import build
  from measure import bandwidth

  spec, d = run.spec, run.spec["decode"]
  setup = {}

  def load():
    config, model, params, tokenizer = decode.load_model(load_config(spec["pi0"]), "", suite_tokenizer(run), d["dtype"])
    bw = bandwidth()
    setup.update(
      config=config,
      model=build.for_decoding(model, d["unroll"] or None),
      params=params,
      tokenizer=tokenizer,
      floor=decode.param_bytes(params) / bw,
      llm_floor=decode.param_bytes(params["llm"]) / bw,
    )
    return {}

  per_variant = spec["decode_variant_s"] if horizon == 1 else spec["decode_h4_variant_s"]
  loaded = run.attempt(dict(variant="(model)", H=horizon), spec["decode_setup_s"], load)
  title = f"Decode latency per action, H={horizon}, batch {d['batch']}, {d['dof']}-DoF (benchmarks/decode.py)"
  if loaded["status"] != "ok":
    return [Table(name, title, DECODE_COLUMNS, [loaded])]
  prompt, images = decode.inputs(
    setup["tokenizer"], d["batch"], setup["config"].model.image_size, d["repeats"] + decode.WARMUP_FRAMES
  )
  named = decode.variants(
    setup["model"],
    setup["tokenizer"],
    setup["config"].model.llm.vocab_size,
    horizon,
    d["dof"],
    d["proposal_len"],
    spec["decode_variants"],
  )

  def attempt(variant, measure):
    row = run.attempt(dict(variant=variant, H=horizon), per_variant, lambda: dict(raw=measure()))
    return row["raw"] if row["status"] == "ok" else row["status"]

  rows = decode.measure_horizon(named, setup["params"], images, prompt, horizon, setup["floor"], attempt)
  for row in rows:
    row.setdefault("status", "ok")
    if row.get("ms_pass") is not None:
      row["vs_llm_floor"] = row["ms_pass"] / 1e3 / setup["llm_floor"]
  notes = [
    f"device {jax.devices()[0].device_kind}; {setup['config'].model.llm.vocab_size} vocabulary, "
    f"{d['dtype']}, decoder layers unrolled; floors: all parameters {setup['floor'] * 1e3:.2f} ms, LLM "
    f"{setup['llm_floor'] * 1e3:.2f} ms per pass (bytes / measured copy bandwidth)",
    "passes include the prefill; median over frames after two warm-up frames (each compiles); the speculative "
    "row's draft (the previous frame's action) is near-perfect with random weights: an upper bound.",
  ]
  return [Table(name, title, DECODE_COLUMNS, rows, notes)]


def measure_decode_h4(run: Run) -> list[Table]:
  return measure_decode(run, horizon=4, name="decode_h4")


DECODE_STEP_COLUMNS = [
  "decode_attention",
  "floor_ms",
  "step_ms",
  "loop_ms",
  "step_vs_floor",
  "loop_vs_floor",
  "fusions",
  "custom_calls",
  "while_loops",
  "profiled_kernels",
  "status",
]


def decode_step_row(run: Run, impl: str, profile: str = "") -> dict:
  """One decode step (benchmarks/decode_step.measure) with model.decode_attention=`impl` (the field left alone
  when it does not exist and impl is today's "xla")."""
  import decode_step

  spec = run.spec
  config = load_config(spec["pi0"])
  if has_field(config, "model.decode_attention"):
    config.model.decode_attention = impl
  elif impl != "xla":
    return dict(status="field not available (config.model.decode_attention is not in the schema yet)")
  ds = spec["decode_step"]
  r = decode_step.measure(
    config,
    spec["decode"]["dtype"],
    ds["cache"],
    ds["loop"],
    profile_dir=run.profile_dir(profile) if profile else None,
  )
  counts = list(r["counts"].values())  # fusions, custom calls, while loops (decode_step.kernel_counts)
  row = dict(
    floor_ms=r["floor_s"] * 1e3,
    step_ms=r["step_s"] * 1e3,
    loop_ms=r["loop_s"] * 1e3,
    step_vs_floor=r["step_s"] / r["floor_s"],
    loop_vs_floor=r["loop_s"] / r["floor_s"],
    fusions=counts[0],
    custom_calls=counts[1],
    while_loops=counts[2],
  )
  if r.get("profile_error"):
    row["status"] = "ok (profile failed: " + r["profile_error"][:200] + ")"
  return row


def measure_decode_step(run: Run) -> list[Table]:
  import profile_summary

  spec = run.spec
  rows, profiles = [], []
  for impl in spec["decode_step_impls"]:
    profile = f"decode_step_{impl}"
    row = run.attempt(
      dict(decode_attention=impl), spec["decode_step_row_s"], lambda: decode_step_row(run, impl, profile)
    )
    if str(row["status"]).startswith("ok"):
      try:
        s = profile_summary.summarize(os.path.join(run.out, "profiles", profile), 1)
        row["profiled_kernels"] = s["events"]
      except Exception as e:
        row["status"] = "ok (no profile summary: " + one_line(e) + ")"
    rows.append(row)
    profiles.append(profile_table("decode_profile", "One decode step, profiled", run, profile, row, impl))
  notes = [
    "Batch 1, one token, a KV cache of "
    f"{spec['decode_step']['cache']} slots, decoder layers unrolled; step: a jitted call (dispatch included); "
    f"loop: per step of a lax.fori_loop of {spec['decode_step']['loop']} steps (what the decoder's while loop "
    "pays); floor: LLM parameter bytes / measured copy bandwidth.",
    "fusions / custom calls / while loops: counted in the compiled step's HLO (backend-dependent: a CPU fuses "
    "differently); kernels in a profiled step: device events of one traced step (CPU: runtime thunks).",
  ]
  profile = Table("decode_profile", "One decode step, profiled, per decode_attention", PROFILE_COLUMNS, [])
  for p in profiles:
    profile.rows += p.rows
    profile.notes += [n for n in p.notes if n not in profile.notes]
    profile.extra.setdefault("profiles", {}).update(p.extra.get("profiles", {}))
  return [
    Table("decode_step", "One cached decode step (benchmarks/decode_step.py)", DECODE_STEP_COLUMNS, rows, notes),
    profile,
  ]


MEMORY_COLUMNS = [
  "mode",
  "trainable_b",
  "params_gib",
  "grads_gib",
  "opt_gib",
  "act_gib",
  "total_gib",
  "fits",
  "compile_s",
  "status",
]


def memory_row(run: Run, lora_rank: int, frozen) -> dict:
  """XLA's memory analysis of the trainer's own step (training/plan.memory_plan, compiled on abstract inputs on
  this device: nothing allocated) at the memory recipe."""
  from genvla_jax.models import surgery
  from genvla_jax.training import freezing, plan

  recipe = run.spec["memory_recipe"]
  config, _ = train_config(run.spec["pi0"], recipe, lora_rank=lora_rank, frozen=frozen)
  config.data.batch_size = recipe["batch"]
  memory, params, _, _ = plan.memory_plan(config, plan.Options(compile=True), printer=lambda *a, **k: None)
  mask = freezing.trainable_mask(params, config.optimizer.frozen)
  trainable = surgery.count_params(freezing.partition(params, mask)[0])
  gib = 2**30
  compiled = memory["compiled"] or {}
  return dict(
    trainable_b=trainable / 1e9,
    params_gib=memory["params"] / gib,
    grads_gib=memory["gradients"] / gib,
    opt_gib=memory["optimizer"] / gib,
    act_gib=memory["activations"] / gib,
    total_gib=memory["total"] / gib,
    fits=" / ".join(memory["fits"][g] for g in plan.DEVICE_GB),
    compile_s=compiled.get("seconds"),
    status="ok" if compiled else "ok (no XLA analysis on this backend: analytic estimate)",
  )


def measure_memory(run: Run) -> list[Table]:
  spec, recipe = run.spec, run.spec["memory_recipe"]
  cases = (("LoRA r16 (decoder)", 16, ["llm/.*"]), ("full fine-tuning", 0, []), ("frozen LLM", 0, ["llm/.*"]))
  rows = [
    run.attempt(dict(mode=mode), spec["memory_row_s"], lambda rank=rank, frozen=frozen: memory_row(run, rank, frozen))
    for mode, rank, frozen in cases
  ]
  notes = [
    f"π0+ ({spec['pi0']}), {storage(recipe)} storage, {recipe['dtype']} compute, remat {recipe['remat']}, batch "
    f"{recipe['batch']}, the config's text length; training/plan.memory_plan with --plan_compile's analysis "
    "(`train --dry_run --plan_compile`), compiled for this device: nothing allocated. LoRA: rank 16, alpha 16, "
    "the decoder's attention + MLP, `llm/.*` frozen (benchmarks/RESULTS.md's recipe). fits: peak <= 0.75 of the "
    "device ('at 0.95': with XLA_PYTHON_CLIENT_MEM_FRACTION=.95).",
  ]
  return [
    Table("memory", "Peak memory per device: LoRA vs full fine-tuning (XLA's analysis)", MEMORY_COLUMNS, rows, notes)
  ]


def measure_openvla(run: Run) -> list[Table]:
  spec, train = run.spec, run.spec["openvla_train"]
  rows = []
  for label, rank, frozen in spec["openvla_rows"]:
    config, _ = train_config(spec["openvla"], train, lora_rank=rank, frozen=frozen)
    row = dict(row=f"OpenVLA+ {label}", remat=train["remat"], batch=train["batch"], storage=storage(train))
    rows.append(
      run.attempt(
        row, spec["openvla_row_s"] + spec["state_init_s"], lambda config=config: train_row(run, config, train)
      )
    )
  notes = TRAIN_NOTES + [
    "OpenVLA+ = DINOv2 (trained) + SigLIP (frozen) fused per patch -> Llama 2 7B, string actions; full "
    "fine-tuning holds ~84 GiB of bf16 params + fp32 AdamW before activations (out of memory under an H100's "
    "0.75 x 80 GiB; may fit an H200)."
  ]
  return [Table("openvla_plus", "Train step: OpenVLA+ (7.5 B)", TRAIN_COLUMNS, rows, notes)]


def measure_sweep(run: Run) -> list[Table]:
  spec = run.spec
  rows = []
  for remat, batch, param_dtype, frozen_dtype in spec["sweep"]:
    train = dict(spec["train"], remat=remat, batch=batch, param_dtype=param_dtype, frozen_dtype=frozen_dtype)
    config, _ = train_config(spec["pi0"], train)
    row = dict(row=f"π0+ {spec['pi0']}", remat=remat, batch=batch, storage=storage(train), attention="xla (default)")
    new_state = (param_dtype, frozen_dtype) != (spec["train"]["param_dtype"], spec["train"]["frozen_dtype"])
    estimate = spec["train_row_s"] + (spec["state_init_s"] if new_state else 0)
    rows.append(run.attempt(row, estimate, lambda config=config, train=train: train_row(run, config, train)))
  return [Table("train_sweep", "Train step sweep: remat, batch, storage", TRAIN_COLUMNS, rows, list(TRAIN_NOTES))]


def measure_flag_probe(run: Run) -> list[Table]:
  """(In a worker started with XLA_FLAGS = a FLAG_SETS entry.) The train_step row and one decode step ->
  DIR/flags/<set>.json, which xla_flags turns into its table."""
  spec, train = run.spec, run.spec["train"]
  config, _ = train_config(spec["pi0"], train)
  train = run.attempt(dict(), spec["train_row_s"] + spec["state_init_s"], lambda: train_row(run, config, train))
  run.state_cache.clear()
  step = run.attempt(dict(), spec["decode_step_row_s"], lambda: decode_step_row(run, "xla"))
  os.makedirs(os.path.join(run.out, "flags"), exist_ok=True)
  write_json(
    os.path.join(run.out, "flags", f"{FLAGS.flag_set}.json"),
    dict(set=FLAGS.flag_set, xla_flags=os.environ.get("XLA_FLAGS", ""), train=train, decode_step=step),
  )
  return []


TRAIN_ITEMS = ("train_step", "attention", "openvla_plus", "train_sweep", "flag_probe")  # items that reuse a state
MEASUREMENTS = {
  "train_step": measure_train_step,
  "attention": measure_attention,
  "decode": measure_decode,
  "decode_step": measure_decode_step,
  "memory": measure_memory,
  "openvla_plus": measure_openvla,
  "train_sweep": measure_sweep,
  "decode_h4": measure_decode_h4,
  "flag_probe": measure_flag_probe,
}


# -- the worker: items in this process ------------------------------------------------------------------------------


def worker(names: list[str], out: str, budget: Budget, tiny: bool):
  import jax

  run = Run(mode_spec(tiny), out, budget, tiny)
  if not FLAGS.flag_set:
    dev = jax.devices()[0]
    write_json(
      os.path.join(out, "device.json"),
      dict(
        device_kind=dev.device_kind,
        platform=dev.platform,
        device_count=jax.device_count(),
        jax=jax.__version__,
        xla_flags=os.environ.get("XLA_FLAGS", ""),
        mode="tiny" if tiny else "full",
      ),
    )
  for name in names:
    with open(os.path.join(out, ".running"), "w") as f:
      f.write(name)
    if name not in TRAIN_ITEMS:
      run.state_cache.clear()  # (the last train state: device memory the other items may need)
    print(f"[{budget.elapsed():6.0f} s] {name} ...", flush=True)
    run.item = name
    t = time.time()
    item = ITEM_BY_NAME.get(name)
    try:
      tables = MEASUREMENTS[name](run)
      status = "ran"
    except Exception as e:  # (rows catch their own failures; this is the item's set-up)
      status = "failed: " + one_line(e)
      tables = status_tables(item, status) if item else []
    for table in tables:
      table.write(out)
    if item:
      estimate = item.estimate_s if not tiny else None
      record = dict(item=name, status=status, seconds=round(time.time() - t, 1), estimate_s=estimate)
      write_json(os.path.join(out, "items", f"{name}.json"), record)
    print(f"[{budget.elapsed():6.0f} s] {name}: {status} in {time.time() - t:.1f} s", flush=True)
  run.state_cache.clear()
  os.remove(os.path.join(out, ".running"))


# -- the orchestrator: processes, budget, summary ---------------------------------------------------------------------


def spawn(args: list[str], env: dict, log: str, timeout_s: float) -> tuple[int, str]:
  """Runs this script with `args` in a child process, its output shown here and kept in `log`; killed after
  `timeout_s`. -> (exit code, last line of its output)."""
  proc = subprocess.Popen(
    [sys.executable, os.path.abspath(__file__), *args],
    stdout=subprocess.PIPE,
    stderr=subprocess.STDOUT,
    env=env,
    text=True,
  )
  timer = threading.Timer(max(timeout_s, 1), proc.kill)
  timer.start()
  last = ""
  try:
    with open(log, "a") as f:
      for line in proc.stdout:
        sys.stdout.write(line)
        sys.stdout.flush()
        f.write(line)
        last = line.strip() or last
    code = proc.wait()
  finally:
    timer.cancel()
  return code, last


def common_args(out: str, t0: float, budget_s: float, tiny: bool) -> list[str]:
  args = [f"--out={out}", f"--t0={t0}", f"--budget_s={budget_s}"]
  if tiny:
    args.append("--tiny")
  if FLAGS.attention_impls:
    args.append("--attention_impls=" + ",".join(FLAGS.attention_impls))
  return args


def run_workers(names: list[str], out: str, budget: Budget, tiny: bool):
  """Runs the in-worker items `names` in worker processes: one for all of them, and after one dies (its current
  item written as failed) another for the rest."""
  remaining = list(names)
  while remaining:
    if budget.elapsed() >= budget.budget_s:
      for name in remaining:
        skip(out, name, f"skipped: budget ({budget.elapsed():.0f} s elapsed >= {budget.budget_s:.0f} s)")
      return
    running = os.path.join(out, ".running")
    if os.path.exists(running):
      os.remove(running)
    timeout = budget.budget_s + FLAGS.grace_s - budget.elapsed()  # a row may end past the budget; a hang may not
    code, last = spawn(
      ["--worker=" + ",".join(remaining), *common_args(out, budget.t0, budget.budget_s, tiny)],
      dict(os.environ),
      os.path.join(out, "logs", "worker.log"),
      timeout,
    )
    if code == 0:
      return
    current = open(running).read().strip() if os.path.exists(running) else remaining[0]
    if budget.elapsed() >= budget.budget_s + FLAGS.grace_s - 1:
      status = f"failed: stopped at budget + grace ({budget.budget_s + FLAGS.grace_s:.0f} s)"
    else:
      status = f"failed: worker process died (exit code {code}): {last[:200]}"
    print(f"[{budget.elapsed():6.0f} s] {current}: {status}", flush=True)
    skip(out, current, status)
    remaining = remaining[remaining.index(current) + 1 :] if current in remaining else remaining[1:]


def skip(out: str, name: str, status: str):
  """Writes item `name`'s tables with one row saying `status` (and its items/ record); the rows its worker finished
  before it died (DIR/items/<name>.rows.jsonl) come first in its first table."""
  item = ITEM_BY_NAME[name]
  tables = status_tables(item, status)
  partial = os.path.join(out, "items", f"{name}.rows.jsonl")
  if os.path.exists(partial):
    with open(partial) as f:
      rows = [json.loads(line) for line in f if line.strip()]
    columns = [c for c in COLUMNS if c != "status" and any(c in r for r in rows)] + ["status"]
    tables[0].rows[:0] = rows
    tables[0].columns = columns
  for table in tables:
    table.write(out)
  write_json(os.path.join(out, "items", f"{name}.json"), dict(item=name, status=status, seconds=0.0, estimate_s=None))


FLAG_COLUMNS = [
  "flag_set",
  "xla_flags",
  "step_ms",
  "mfu",
  "step_vs_default",
  "decode_ms",
  "decode_vs_default",
  "why",
  "status",
]


def run_flag_sets(out: str, budget: Budget, spec: dict, tiny: bool):
  """xla_flags: each chosen FLAG_SETS entry in its own worker process (XLA_FLAGS set before JAX starts there):
  the train_step row and one decode step, against the default flags' (the train_step and decode_step tables)."""
  t = time.time()
  default_train = first_row(out, "train_step")
  default_decode = first_row(out, "decode_step")
  rows = []
  for name, xla_flags, why in FLAG_SETS:
    if name not in spec["flag_sets"]:
      continue
    row = dict(flag_set=name, xla_flags=xla_flags, why=why)
    refusal = budget.refusal(spec["flag_set_s"])
    if refusal:
      rows.append(dict(row, status=refusal))
      continue
    env = dict(os.environ, XLA_FLAGS=(os.environ.get("XLA_FLAGS", "") + " " + xla_flags).strip())
    result_path = os.path.join(out, "flags", f"{name}.json")
    if os.path.exists(result_path):
      os.remove(result_path)
    code, last = spawn(
      ["--worker=flag_probe", f"--flag_set={name}", *common_args(out, budget.t0, budget.budget_s, tiny)],
      env,
      os.path.join(out, "logs", f"flags_{name}.log"),
      budget.budget_s + FLAGS.grace_s - budget.elapsed(),
    )
    if code != 0 or not os.path.exists(result_path):
      rows.append(dict(row, status=f"failed: process exit code {code}: {last[:200]}"))
      continue
    result = read_json(result_path)
    train, step = result["train"], result["decode_step"]
    row.update(step_ms=train.get("step_ms"), mfu=train.get("mfu"), decode_ms=step.get("loop_ms"))
    row["step_vs_default"] = ratio(row["step_ms"], default_train.get("step_ms"))
    row["decode_vs_default"] = ratio(row["decode_ms"], default_decode.get("loop_ms"))
    statuses = [s for s in (train.get("status"), step.get("status")) if s and s != "ok"]
    row["status"] = "ok" if not statuses else "; ".join(statuses)
    rows.append(row)
  notes = [
    "Each set runs in a fresh process (XLA reads XLA_FLAGS when JAX starts): the train_step row's configuration "
    "and one decode step (loop ms per step); 'vs default' against the train_step / decode_step tables' rows "
    "(default flags, measured in the main worker).",
  ]
  if tiny:
    notes.append(
      f"--tiny: one flag set only ({', '.join(spec['flag_sets'])}); on a CPU the GPU flags are accepted and ignored, "
      "so this rehearses the subprocess path, not the flags."
    )
  Table("xla_flags", "Train step and decode step under XLA flag sets", FLAG_COLUMNS, rows, notes).write(out)
  ran = any(not r["status"].startswith("skipped") for r in rows)
  status = "ran" if ran or not rows else rows[0]["status"]
  record = dict(item="xla_flags", status=status, seconds=round(time.time() - t, 1), estimate_s=None if tiny else 600)
  write_json(os.path.join(out, "items", "xla_flags.json"), record)


def first_row(out: str, table: str) -> dict:
  path = os.path.join(out, f"{table}.json")
  if not os.path.exists(path):
    return {}
  rows = read_json(path)["rows"]
  return rows[0] if rows else {}


def ratio(a, b):
  return a / b if isinstance(a, (int, float)) and isinstance(b, (int, float)) and b else None


# -- the summary ---------------------------------------------------------------------------------------------------


def verdict(value, limit, higher_is_better: bool) -> str:
  if value is None:
    return "not measured"
  return "met" if (value >= limit if higher_is_better else value <= limit) else "missed"


def targets(out: str) -> list[dict]:
  """The three targets from the tables: [{target, value, verdict, source}]."""

  def rows(name):
    path = os.path.join(out, f"{name}.json")
    return read_json(path)["rows"] if os.path.exists(path) else []

  ok = lambda r: str(r.get("status", "")).startswith("ok")
  train = [
    (r["mfu"], f"{name}: {r.get('remat')} b{r.get('batch')} {r.get('storage')}, attention {r.get('attention')}")
    for name in ("train_step", "attention", "train_sweep")
    for r in rows(name)
    if ok(r) and r.get("mfu") is not None
  ]
  train += [(r["mfu"], f"xla_flags: {r['flag_set']}") for r in rows("xla_flags") if ok(r) and r.get("mfu") is not None]
  best_train = max(train, default=None)
  steps = [
    (r["loop_vs_floor"], f"decode_step: decode_attention {r['decode_attention']}") for r in rows("decode_step") if ok(r)
  ]
  best_step = min(steps, default=None)
  per_action = {r["variant"]: r for r in rows("decode") if ok(r) and r.get("H") == 1}
  action = per_action.get("string jump-forward") or per_action.get("string constrained")
  return [
    dict(
      target="train step >= 45% MFU (full-size π0+, bf16, one device)",
      value=f"{best_train[0]:.1%}" if best_train else "",
      verdict=verdict(best_train and best_train[0], 0.45, True),
      source=best_train[1] if best_train else "no train row with an MFU (not run, failed, or a device without a peak)",
    ),
    dict(
      target="decode <= 1.5x the bandwidth floor per pass (LLM bytes / copy bandwidth)",
      value=f"{best_step[0]:.2f}x" if best_step else "",
      verdict=verdict(best_step and best_step[0], 1.5, False),
      source=(best_step[1] + " (per step in a fori_loop)") if best_step else "no decode_step row",
    ),
    dict(
      target="<= 150 ms per 7-DoF string action at batch 1 without drafts",
      value=f"{action['ms_action']:.1f} ms" if action else "",
      verdict=verdict(action and action["ms_action"], 150.0, False),
      source=f"decode: {action['variant']}, H=1" if action else "no decode row",
    ),
  ]


def write_summary(out: str, tiny: bool, budget: Budget):
  device = read_json(os.path.join(out, "device.json")) if os.path.exists(os.path.join(out, "device.json")) else {}
  lines = [
    f"# GPU suite: {device.get('device_kind', 'device unknown')} ({device.get('platform', '?')}), jax "
    f"{device.get('jax', '?')}, {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC",
    "",
    f"`python benchmarks/gpu_suite.py {' '.join(sys.argv[1:])}`",
    "",
  ]
  if tiny:
    lines += [
      "**--tiny: a rehearsal with the configs' tiny models (here on "
      f"{device.get('platform', '?')}); the numbers are not GPU measurements and the verdicts only show that "
      "the path from the tables to them works.**",
      "",
    ]
  lines += ["## Targets", "", "| target | value | verdict | from |", "|---|---|---|---|"]
  for t in targets(out):
    lines.append(f"| {t['target']} | {t['value']} | {t['verdict']} | {t['source']} |")
  lines += ["", "## Where the time goes", ""]
  for name, what in (("train_profile", "one train step"), ("decode_profile", "one decode step")):
    path = os.path.join(out, f"{name}.json")
    profiles = read_json(path).get("profiles", {}) if os.path.exists(path) else {}
    if not profiles:
      lines.append(f"- {what}: no profile (see {name}.md)")
    for label, p in profiles.items():
      kinds = ", ".join(f"{k} {c} x {ms:.2f} ms" for k, (c, ms) in list(p["kinds"].items())[:5])
      lines.append(
        f"- {what} ({label}): {p['events']} kernels / thunks, {p['total_ms']:.2f} ms ({p['where']}); {kinds}"
      )
  step = {
    r.get("decode_attention"): r
    for r in (
      read_json(os.path.join(out, "decode_step.json"))["rows"]
      if os.path.exists(os.path.join(out, "decode_step.json"))
      else []
    )
  }
  for impl, r in step.items():
    if r.get("fusions") is not None:
      lines.append(
        f"- decode step ({impl}): {r['fusions']} fusions, {r['custom_calls']} custom calls, {r['while_loops']} while "
        f"loops in the compiled step; {r.get('profiled_kernels', '?')} kernels in a profiled step"
      )
  lines += [
    "",
    "## Budget",
    "",
    f"Budget {budget.budget_s:.0f} s; {budget.elapsed():.0f} s in all.",
    "",
    "| item | estimate s (full size) | ran s | status | running total s |",
    "|---|---|---|---|---|",
  ]
  total = 0.0
  for item in ITEMS:
    path = os.path.join(out, "items", f"{item.name}.json")
    record = read_json(path) if os.path.exists(path) else dict(status="not selected (--only)", seconds=0.0)
    total += record.get("seconds") or 0.0
    lines.append(
      f"| {item.name} | {item.estimate_s:.0f} | {record.get('seconds', 0):.1f} | {record['status']} | {total:.0f} |"
    )
  lines += ["", "Tables: " + ", ".join(f"[{t}]({t}.md)" for item in ITEMS for t in item.tables), ""]
  with open(os.path.join(out, "summary.md"), "w") as f:
    f.write("\n".join(lines))


def print_plan(budget_s: float, selected: list[str], tiny: bool):
  total = 0.0
  print(f"plan ({'tiny rehearsal' if tiny else 'full size'}; estimates are full-size device seconds):")
  for item in ITEMS:
    chosen = item.name in selected
    total += item.estimate_s if chosen else 0
    mark = "" if chosen else "  (not selected)"
    print(f"  {item.name:<13} {item.estimate_s:5.0f} s   running total {total:5.0f} s{mark}")
  print(f"budget {budget_s:.0f} s: rows whose estimate would end past it are skipped (written as such)", flush=True)


def orchestrate(out: str, tiny: bool):
  spec = mode_spec(tiny)
  budget_s = FLAGS.budget_s if FLAGS.budget_s is not None else spec["budget_s"]
  unknown = [n for n in FLAGS.only if n not in ITEM_BY_NAME]
  if unknown:
    raise app.UsageError(f"--only: unknown item(s) {unknown}; items: {', '.join(ITEM_BY_NAME)}")
  selected = [i.name for i in ITEMS if not FLAGS.only or i.name in FLAGS.only]
  for sub in ("items", "flags", "logs", "profiles"):
    os.makedirs(os.path.join(out, sub), exist_ok=True)
  for path in glob.glob(os.path.join(out, "items", "*")):  # (a previous run's records would skew the budget)
    os.remove(path)
  budget = Budget(time.time(), budget_s, out)
  print_plan(budget_s, selected, tiny)
  segment = []
  for item in ITEMS:
    if item.name not in selected:
      continue
    if item.in_worker:
      segment.append(item.name)
      continue
    run_workers(segment, out, budget, tiny)
    segment = []
    run_flag_sets(out, budget, spec, tiny)
  run_workers(segment, out, budget, tiny)
  write_summary(out, tiny, budget)
  print(f"[{budget.elapsed():6.0f} s] done: {out}/summary.md", flush=True)


def main(argv):
  del argv
  out = os.path.abspath(FLAGS.out)
  if FLAGS.worker:
    budget_s = FLAGS.budget_s if FLAGS.budget_s is not None else mode_spec(FLAGS.tiny)["budget_s"]
    worker(FLAGS.worker, out, Budget(FLAGS.t0 or time.time(), budget_s, out), FLAGS.tiny)
  else:
    orchestrate(out, FLAGS.tiny)


if __name__ == "__main__":
  define_flags()
  app.run(main)
