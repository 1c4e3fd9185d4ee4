"""The ablation runner: two rows (the no-D/S/C bins row and π0) trained, evaluated closed-loop and
offline, the Table II layout written, and a rerun reusing everything."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from conftest import ROOT, TABLETOP_RECORD
from genvla_jax import cli
from genvla_jax.tools import ablate


def test_every_row_builds_with_its_switches():
  for row in ablate.ROWS:
    config = ablate.row_config(row, "tabletop")
    if row == "pi0":
      assert config.tokenizer.action == "flow" and config.model.action_expert.width > 0
      assert config.data.instruction_aug.prob > 0 and not config.model.dual_encoder
      continue
    letters = "" if row == "base" else row
    assert config.model.dual_encoder == ("D" in letters)
    assert config.tokenizer.action == ("string" if "S" in letters else "bins")
    assert (config.data.robot_fraction < 1.0) == ("C" in letters)
  with pytest.raises(ValueError, match="unknown ablation row"):
    ablate.row_config("DSX", "tabletop")
  config = ablate.row_config("base", "tabletop")
  ablate.apply_override(config, "train.steps=7")
  ablate.apply_override(config, "data.prompt=do {instruction}")
  assert config.train.steps == 7 and config.data.prompt == "do {instruction}"
  with pytest.raises(KeyError, match="no key"):
    ablate.apply_override(config, "train.stepz=7")
  # a row's start: "@start", else --vlm
  assert (
    ablate.split_row("DSC@scratch") == ("DSC", "scratch") and ablate.split_row("DSC", "pretrained")[1] == "pretrained"
  )
  scratch = ablate.row_config("base@scratch", "tabletop")
  assert scratch.data.corpus_dir and not scratch.pretrained.path and scratch.tokenizer.action == "bins"
  assert ablate.row_config("pi0", "tabletop", vlm="pretrained").pretrained.format == "hf"
  assert ablate.row_label("DSC@pretrained") == "π0+ (DSC) [pretrained]" and ablate.row_label("DSC") == "π0+ (DSC)"
  with pytest.raises(ValueError, match="unknown start"):
    ablate.split_row("DSC@imagenet")


def test_runner_trains_evaluates_and_writes_table_two(recorded, cache_dir, tmp_path):
  """The CLI (one device, as a user runs it) on two tiny rows; then a rerun through `run` reuses them."""
  workdir = tmp_path / "grid"
  record = dict(TABLETOP_RECORD)
  sets = [
    f"data.sim_dir={recorded}",
    f"data.sim_record={record!r}",
    "model.image_size=48",
    f"data.cache_dir={cache_dir}",
    "data.batch_size=8",
    "train.steps=2",
    "train.log_every=1",
    "train.checkpoint_every=2",
  ]
  eval_sets = [
    "episodes_per_task=2",
    "num_envs=2",
    "video_episodes=0",
    "env_kwargs.image_size=48",
    "env_kwargs.max_steps=3",
  ]
  env = dict(os.environ, PYTHONPATH=ROOT, JAX_PLATFORMS="cpu", XLA_FLAGS="--xla_force_host_platform_device_count=1")
  cmd = [
    sys.executable,
    "-m",
    "genvla_jax.tools.ablate",
    f"--workdir={workdir}",
    "--variant=tabletop",
    "--rows=base,pi0",
    "--num_examples=8",
    "--vqa_limit=4",
    "--row_episodes=base=1",
    "--eval_config=configs/eval_tabletop.py:quick,tasks=pick_object+open_drawer,"
    "protocols=visual_matching+variant_aggregation",
  ]
  cmd += [f"--set={s}" for s in sets] + [f"--eval_set={s}" for s in eval_sets]
  out = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
  assert out.returncode == 0, out.stderr[-3000:]
  results = json.load(open(workdir / "ablation.json"))["rows"]
  base, pi0 = results["base"], results["pi0"]
  for r in (base, pi0):
    assert r["train_steps"] == 2 and np.isfinite(r["action_mae_normalized"]) and 0 <= r["vqa_exact_match"] <= 1
    vm = r["closed_loop"]["protocols"]["visual_matching"]
    assert set(vm["tasks"]) == {"pick_object", "open_drawer"}
    assert vm["overall"]["episodes"] == (2 if r is base else 4)  # --row_episodes=base=1
    assert all(
      e["steps"] <= 3 for e in json.load(open(workdir / r_name(r) / "eval" / "tabletop" / "results.json"))["episodes"]
    )
  assert base["robot_token_accuracy"] is not None and base["flow_mse"] is None
  assert pi0["robot_token_accuracy"] is None and np.isfinite(pi0["flow_mse"])
  table = open(workdir / "ablation.md").read()
  assert table in out.stdout  # printed too
  assert "## visual_matching" in table and "## variant_aggregation" in table
  assert "| Model | pick_object | open_drawer | Average | 95% interval | n |" in table
  assert "| no D/S/C (bins) |" in table and "| π0 w/ Inst. Aug. |" in table
  assert "## Paper orderings" in table and "not run (DSC@pretrained)" in table  # rows without a start: not judged
  assert os.path.getsize(workdir / "ablation.png") > 1000
  # --report_only: the same report from ablation.json alone (no training), the plot too
  os.remove(workdir / "ablation.md"), os.remove(workdir / "ablation.png")
  assert ablate.report_only(str(workdir)) == table == open(workdir / "ablation.md").read()
  assert os.path.getsize(workdir / "ablation.png") > 1000
  with pytest.raises(cli.UserError, match="no .*ablation.json"):
    ablate.report_only(str(tmp_path / "empty"))
  # a rerun trains and evaluates nothing: every row is reused
  stamps = {
    p: os.path.getmtime(workdir / p)
    for p in ("base/metrics.jsonl", "pi0/eval/tabletop/results.json", "pi0/ablation_row.json")
  }

  def configure(config):
    for assignment in sets:
      ablate.apply_override(config, assignment)

  again = ablate.run(
    ["base", "pi0"], "tabletop", str(workdir), None, configure, printer=lambda *a, **k: None, row_episodes={"base": 1}
  )
  assert {p: os.path.getmtime(workdir / p) for p in stamps} == stamps
  assert again["pi0"]["closed_loop"] == pi0["closed_loop"]


def r_name(result):
  return {v[2]: k for k, v in ablate.ROWS.items()}[result["label"]]


def test_a_row_stopped_early_is_not_evaluated(tmp_path, monkeypatch):
  """A SIGTERM mid-row (train returns before its last step): the grid stops there, writes no row result and
  evaluates nothing; a rerun resumes the row."""

  def stopped_train(config, workdir, printer=print):
    os.makedirs(workdir, exist_ok=True)
    with open(os.path.join(workdir, "metrics.jsonl"), "w") as f:
      f.write(json.dumps({"step": 3, "loss": 1.0}) + "\n")
    return []

  monkeypatch.setattr(ablate.train, "train", stopped_train)
  messages = []
  results = ablate.run(["base", "pi0"], "tabletop", str(tmp_path), None, printer=lambda *a, **k: messages.append(a[0]))
  assert results == {} and not (tmp_path / "base" / "ablation_row.json").exists()
  assert not (tmp_path / "pi0").exists()
  assert "stopped at step 3 of 2000" in messages[-1] and ablate.last_step(str(tmp_path / "base")) == 3


def test_vqa_by_factor_table_orders_the_splits():
  scores = {"val": 0.8, "heldout_conditions": 0.5, "heldout_wordings": 0.7, "heldout": 0.4}
  results = {
    "DSC": {"label": "π0+ (D+S+C)", "vqa_by_factor": {k: {"exact_match": v, "n": 50} for k, v in scores.items()}}
  }
  lines = ablate._vqa_factor_lines(results)
  assert "| nothing held out | conditions held out | wordings held out | both held out | n each |" in lines[2]
  assert "| π0+ (D+S+C) | 80% | 50% | 70% | 40% | 50 |" in lines
  assert ablate._vqa_factor_lines({"base": {"label": "x"}}) == []


def _grid_row(successes: dict, probe=None) -> dict:
  """A grid row's results: {protocol: {task: (successes, episodes)}}, optional probe {pool: {tower: acc}}."""
  protocols = {
    p: {"tasks": {t: {"successes": k, "episodes": n, "success_rate": k / n} for t, (k, n) in cells.items()}}
    for p, cells in successes.items()
  }
  row = {"label": "row", "closed_loop": {"protocols": protocols}}
  if probe:
    row["representation"] = {pool: {"probe": accs, "n_test": 80} for pool, accs in probe.items()}
  return row


def test_paper_orderings_pool_rows_and_compare_wilson_intervals():
  from genvla_jax.tools import paper_orderings as po

  vm = lambda a, b: {"visual_matching": {"pick_object": (a, 50), "open_drawer": (b, 50)}}  # noqa: E731
  results = {
    "DSC@pretrained": _grid_row(vm(40, 50), {"wide": {"img": 0.3, "img_frozen": 0.6}}),
    "base@pretrained": _grid_row(vm(5, 45), {"wide": {"img": 0.25}}),
    "DSC@scratch": _grid_row(vm(20, 50)),
    "base@scratch": _grid_row(vm(10, 35)),
  }
  by_claim = {o.claim: o for o in po.ORDERINGS}
  table_two = po.judge(results, by_claim["Table II: π0+ (DSC) > base (bins) in visual matching"])
  assert table_two["verdict"] == "holds beyond the intervals"
  assert table_two["better"][0] == 0.9 and table_two["worse"][0] == 0.5  # pooled over tasks: 90/100, 50/100
  low, high = table_two["better"][1:]
  assert 0.8 < low < 0.9 < high < 0.96
  # the frozen tower of the DSC row against base's fine-tuned tower: 48/80 vs 20/80
  probe = po.judge(
    results, by_claim["Probe: the frozen tower (DSC) >= the fully fine-tuned tower (base), wide conditions"]
  )
  assert probe["verdict"] == "holds beyond the intervals" and probe["better"][0] == 0.6
  assert "not run" in po.judge(results, by_claim["Table IV: S+C rows > bins rows under paraphrase"])["verdict"]
  start = po.judge(results, by_claim["Start: pretrained > random (base) in visual matching"])
  assert start["verdict"] == "holds within the intervals"  # 50/100 vs 45/100: the intervals overlap
  # the opposite direction is named as such
  flipped = {"DSC@pretrained": results["base@pretrained"], "base@pretrained": results["DSC@pretrained"]}
  assert po.judge(flipped, by_claim["Table II: π0+ (DSC) > base (bins) in visual matching"])["verdict"] == (
    "opposite, beyond the intervals"
  )
  # rows evaluated with different episode counts weigh equally: S+C rows (DSC 50 per task, SC 20) against the
  # bins rows: DSC's 45/50 counts as 18/20 beside SC's 2/20 (mean 50%), not 47/70 (67%)
  para = lambda k, n: {"paraphrase": {"pick_object": (k, n)}}  # noqa: E731
  mixed = {
    "DSC@pretrained": _grid_row(para(45, 50)),
    "SC@pretrained": _grid_row(para(2, 20)),
    **{r: _grid_row(para(10, 20)) for r in ("base@pretrained", "D@pretrained", "C@pretrained")},
  }
  assert po.pool([(45, 50), (2, 20)]) == (20.0, 40) and po.pool([(3, 10)]) == (3.0, 10)
  s_c = po.judge(mixed, by_claim["Table IV: S+C rows > bins rows under paraphrase"])
  assert s_c["better"][0] == 0.5 and s_c["worse"][0] == 0.5 and s_c["verdict"] == "equal"  # pooled raw: 47/70
  assert s_c["better"][1:] == po.intervals.wilson_interval(20, 40)
  md = "\n".join(po.lines(results))
  assert "| Table II: π0+ (DSC) > base (bins) in visual matching | 90% [83%, 94%] | 50% [40%, 60%] |" in md
