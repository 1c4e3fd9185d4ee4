"""benchmarks/gpu_suite.py: its --tiny rehearsal writes every table with the expected rows and finite numbers (the
whole suite: slow; one item: here), and its bookkeeping (tables, budget, targets, a dead worker) on synthetic
input."""

import importlib.util
import json
import math
import os
import subprocess
import sys
import time

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SUITE = os.path.join(ROOT, "benchmarks", "gpu_suite.py")


@pytest.fixture(scope="module")
def suite():
  """The suite module (its flags are defined only when run as a script); sys.path as it was."""
  path = list(sys.path)
  spec = importlib.util.spec_from_file_location("gpu_suite", SUITE)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  sys.path[:] = path
  return module


def run_suite(out, *args, timeout=900):
  """The suite as a command: one CPU device (not the tests' 8), a persistent XLA cache for reruns."""
  env = dict(os.environ, JAX_PLATFORMS="cpu", XLA_FLAGS="")
  env.setdefault("JAX_COMPILATION_CACHE_DIR", os.environ.get("GENVLA_TEST_XLA_CACHE", "/tmp/genvla_xla_cache"))
  env.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0.5")
  result = subprocess.run(
    [sys.executable, SUITE, f"--out={out}", *args], env=env, capture_output=True, text=True, timeout=timeout
  )
  assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
  return result.stdout


def table(out, name):
  with open(os.path.join(out, f"{name}.json")) as f:
    record = json.load(f)
  with open(os.path.join(out, f"{name}.md")) as f:
    markdown = f.read()
  assert markdown.startswith("## "), markdown[:200]
  assert markdown.count("\n|") == len(record["rows"]) + 2, markdown  # header, separator, one line per row
  return record


def ok(row):
  return str(row.get("status", "")).startswith("ok")


def finite(row, keys):
  for key in keys:
    assert isinstance(row.get(key), (int, float)) and math.isfinite(row[key]), (key, row)


TRAIN_NUMBERS = ("step_ms", "ex_s", "tokens_s", "tflop_step", "tflop_s", "vs_matmul", "xla_peak_gib", "compile_s")
DECODE_NUMBERS = ("ms_action", "passes", "ms_pass", "vs_bins", "vs_floor", "vs_llm_floor")
STEP_NUMBERS = ("floor_ms", "step_ms", "loop_ms", "step_vs_floor", "loop_vs_floor", "fusions", "profiled_kernels")


def check_decode_step(out):
  rows = {r["decode_attention"]: r for r in table(out, "decode_step")["rows"]}
  assert list(rows) == ["xla", "fused"]
  assert ok(rows["xla"]), rows["xla"]
  finite(rows["xla"], STEP_NUMBERS)
  assert rows["xla"]["fusions"] > 0 and rows["xla"]["profiled_kernels"] > 0
  assert ok(rows["fused"]) or rows["fused"]["status"].startswith("field not available"), rows["fused"]
  profile = table(out, "decode_profile")
  ranked = [r for r in profile["rows"] if r["run"] == "xla"]
  assert len(ranked) >= 2 and all(ok(r) for r in ranked)
  for r in ranked:
    finite(r, ("count", "ms", "share"))
  assert abs(sum(r["share"] for r in ranked) - 1.0) < 1e-6  # the top ops + "(other ...)": every event once
  assert profile["profiles"]["xla"]["events"] == sum(r["count"] for r in ranked)


def test_decode_step_item_rehearsal(tmp_path):
  """One item through the real path (orchestrator -> worker -> tables -> summary): decode_step at tiny size; items
  not selected write nothing (a directory can collect several sessions' items)."""
  out = tmp_path / "suite"
  run_suite(out, "--tiny", "--only=decode_step")
  check_decode_step(out)
  assert not os.path.exists(out / "train_step.json")
  summary = (out / "summary.md").read_text()
  assert "| train step >= 45% MFU" in summary and "not measured" in summary
  assert "- decode step (xla): " in summary and "| train_step | 115 | 0.0 | not selected (--only) | 0 |" in summary


@pytest.mark.slow
def test_tiny_rehearsal_writes_every_table(tmp_path, suite):
  """The whole suite with --tiny (every item; ~3-5 minutes on a loaded 2-core CPU, compiles dominate)."""
  out = tmp_path / "suite"
  run_suite(out, "--tiny", timeout=1800)
  for item in suite.ITEMS:
    for name in item.tables:
      assert os.path.exists(out / f"{name}.md") and os.path.exists(out / f"{name}.json"), name
      with open(out / "items" / f"{item.name}.json") as f:
        assert json.load(f)["status"] == "ran", item.name

  (row,) = table(out, "train_step")["rows"]
  assert ok(row), row
  finite(row, TRAIN_NUMBERS)
  assert row["mfu"] is None  # a CPU has no peak FLOP/s
  train_profile = table(out, "train_profile")["rows"]
  assert len(train_profile) >= 2 and all(ok(r) for r in train_profile)

  attention = {r["attention"]: r for r in table(out, "attention")["rows"]}
  assert list(attention) == ["cudnn", "dot_product", "auto"]
  assert attention["cudnn"]["status"].startswith(("failed: ValueError", "field not available")), attention["cudnn"]
  if "NVIDIA GPU" not in attention["cudnn"]["status"]:
    assert attention["cudnn"]["status"].startswith("field not available")
  for impl in ("dot_product", "auto"):
    assert ok(attention[impl]) or attention[impl]["status"].startswith("field not available"), attention[impl]
    if ok(attention[impl]):
      finite(attention[impl], TRAIN_NUMBERS)

  for name, horizon in (("decode", 1), ("decode_h4", 4)):
    rows = table(out, name)["rows"]
    variants = ["bins", "string constrained", "string jump-forward", "string jf + speculative"]
    assert [r["variant"] for r in rows] == variants
    for r in rows:
      assert ok(r) and r["H"] == horizon, r
      finite(r, DECODE_NUMBERS)
    bins, constrained, jump, speculative = rows
    assert bins["passes"] == 7 * horizon + 2  # prefill + one token per value + EOS
    assert speculative["passes"] < jump["passes"] < constrained["passes"]  # forced tokens, then drafts, save passes
    assert speculative["draft_accepted"] is not None and bins["draft_accepted"] is None

  check_decode_step(out)

  memory = {r["mode"]: r for r in table(out, "memory")["rows"]}
  assert len(memory) == 3 and all(ok(r) for r in memory.values()), memory
  for r in memory.values():
    finite(r, ("trainable_b", "params_gib", "grads_gib", "opt_gib", "act_gib", "total_gib"))
    assert r["fits"].count("/") == 3
  lora, full, frozen = memory.values()
  assert frozen["trainable_b"] < lora["trainable_b"] < full["trainable_b"]
  assert lora["opt_gib"] < full["opt_gib"]

  (openvla,) = table(out, "openvla_plus")["rows"]
  assert ok(openvla), openvla
  finite(openvla, TRAIN_NUMBERS)
  (sweep,) = table(out, "train_sweep")["rows"]
  assert ok(sweep) and sweep["remat"] == "full" and sweep["storage"] == "float32 / bfloat16", sweep
  finite(sweep, TRAIN_NUMBERS)

  flags = table(out, "xla_flags")
  (flag_row,) = flags["rows"]  # one flag set on a CPU, and the table says so
  assert ok(flag_row) and flag_row["flag_set"] == suite.FLAG_SETS[0][0], flag_row
  finite(flag_row, ("step_ms", "step_vs_default", "decode_ms", "decode_vs_default"))
  assert any("one flag set only" in n for n in flags["notes"])

  summary = (out / "summary.md").read_text()
  for target in ("45% MFU", "1.5x the bandwidth floor", "150 ms per 7-DoF"):
    assert target in summary
  assert "--tiny: a rehearsal" in summary


def test_table_markdown_and_json(suite, tmp_path):
  t = suite.Table(
    "x",
    "Title",
    ["variant", "ms_action", "mfu", "draft_accepted", "status"],
    [dict(variant="a|b", ms_action=12.345, mfu=0.4567, draft_accepted=float("nan"), status="ok"), dict(status="skip")],
    ["a note"],
  )
  t.write(str(tmp_path))
  md = (tmp_path / "x.md").read_text().splitlines()
  assert md[0] == "## Title"
  assert md[2] == "| variant | ms/action | MFU | draft accepted | status |"
  assert md[4] == "| a\\|b | 12.3 | 45.7% | n/a | ok |"
  assert md[5] == "|  |  |  |  | skip |"
  assert md[-1] == "- a note"
  record = json.loads((tmp_path / "x.json").read_text())  # strict JSON: NaN written as null
  assert record["rows"][0]["draft_accepted"] is None and record["rows"][0]["mfu"] == 0.4567


def test_budget_refuses_rows_past_it_calibrated_by_measured_rows(suite, tmp_path):
  os.makedirs(tmp_path / "items")
  budget = suite.Budget(time.time() - 100, 150, str(tmp_path))
  assert budget.refusal(40) is None
  assert budget.refusal(60).startswith("skipped: budget (elapsed 100 s + estimate 60 s > 150 s)")
  budget.record(10, 20)  # rows so far took twice their estimate
  budget.record(10, 20)
  assert budget.calibration() == pytest.approx(2.0)
  assert budget.refusal(20) is None and budget.refusal(30) is not None  # 30 x 2 = 60 s would end past 150
  budget.record(1, 100)
  assert budget.calibration() == 3.0  # clipped


def write_rows(out, name, rows):
  with open(os.path.join(out, f"{name}.json"), "w") as f:
    json.dump(dict(name=name, rows=rows), f)


def test_targets_from_tables(suite, tmp_path):
  out = str(tmp_path)
  assert [t["verdict"] for t in suite.targets(out)] == ["not measured"] * 3
  write_rows(out, "train_step", [dict(mfu=0.375, remat="dots", batch=32, status="ok")])
  write_rows(out, "attention", [dict(mfu=0.9, status="failed: OOM"), dict(mfu=0.41, attention="cudnn", status="ok")])
  write_rows(out, "decode_step", [dict(decode_attention="xla", loop_vs_floor=2.87, status="ok")])
  write_rows(out, "decode", [dict(variant="string constrained", H=1, ms_action=268.1, status="ok")])
  train, step, action = suite.targets(out)
  assert (train["value"], train["verdict"]) == ("41.0%", "missed") and "cudnn" in train["source"]
  assert (step["value"], step["verdict"]) == ("2.87x", "missed")
  assert (action["value"], action["verdict"], action["source"]) == (
    "268.1 ms",
    "missed",
    "decode: string constrained, H=1",
  )
  write_rows(
    out,
    "decode_step",
    [
      dict(decode_attention="xla", loop_vs_floor=2.87, status="ok"),
      dict(decode_attention="fused", loop_vs_floor=1.4, status="ok"),
    ],
  )
  write_rows(out, "decode", [dict(variant="string jump-forward", H=1, ms_action=140.0, status="ok")])
  write_rows(out, "train_sweep", [dict(mfu=0.46, status="ok")])
  assert [t["verdict"] for t in suite.targets(out)] == ["met", "met", "met"]


def test_budget_spent_before_start_skips_every_item_with_a_note(tmp_path):
  """--budget_s=0: no worker starts; every table exists, each row saying why it was not measured."""
  out = tmp_path / "suite"
  run_suite(out, "--tiny", "--budget_s=0", timeout=120)
  for name in ("train_step", "train_profile", "attention", "decode", "decode_step", "memory", "decode_h4"):
    (row,) = table(out, name)["rows"]
    assert row["status"].startswith("skipped: budget"), (name, row)
  (row,) = table(out, "xla_flags")["rows"]
  assert row["status"].startswith("skipped: budget") and row["flag_set"] == "latency_hiding"
  assert "| train_step | 115 | 0.0 | skipped: budget" in (out / "summary.md").read_text()


def test_a_dead_worker_fails_its_item_and_a_new_one_goes_on(suite, tmp_path, monkeypatch):
  out = str(tmp_path)
  for sub in ("items", "logs"):
    os.makedirs(os.path.join(out, sub))
  calls = []

  def spawn(args, env, log, timeout_s):
    calls.append(args[0])
    if len(calls) == 1:  # the first worker dies in its second item, after one of its rows
      with open(os.path.join(out, ".running"), "w") as f:
        f.write("decode")
      with open(os.path.join(out, "items", "decode.rows.jsonl"), "w") as f:
        f.write(json.dumps(dict(variant="bins", H=1, ms_action=57.0, status="ok")) + "\n")
      return -6, "Aborted (core dumped)"
    return 0, ""

  monkeypatch.setattr(suite, "spawn", spawn)
  monkeypatch.setattr(suite, "FLAGS", type("F", (), {"attention_impls": [], "grace_s": 90})())
  suite.run_workers(["train_step", "decode", "decode_step"], out, suite.Budget(time.time(), 100, out), True)
  assert calls == ["--worker=train_step,decode,decode_step", "--worker=decode_step"]
  decode = table(out, "decode")
  assert decode["rows"] == [
    dict(variant="bins", H=1, ms_action=57.0, status="ok"),
    dict(status="failed: worker process died (exit code -6): Aborted (core dumped)"),
  ]
  assert decode["columns"] == ["variant", "H", "ms_action", "status"]
