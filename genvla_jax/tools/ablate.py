r"""The ablation grid in one command: train and evaluate chosen rows of the paper's Table II, write the
table (per-task closed-loop success + average, per protocol) and the offline metrics per row.

  python -m genvla_jax.tools.ablate --workdir=/tmp/ablation --variant=tabletop \
      --rows=base,D,S,C,DS,SC,DSC,pi0 --eval_config=configs/eval_tabletop.py:quick --set=train.steps=1500
  python -m genvla_jax.tools.ablate --workdir=gs://.../ablation --variant=full --rows=DSC,pi0 \
      --eval_config=configs/eval_simpler.py --set=data.rlds_root=/data/oxe ...       # cluster sizes

Rows (all on the config's PaliGemma backbone; D = dual encoder, S = string actions (else 256 bins),
C = co-training with VL data):
  base            no D/S/C: 256-bin action tokens, one tower, robot data only (OpenVLA-style head)
  D S C DS SC DC  the switches on (configs/pi0_plus.py:<variant>,ablation=<letters>)
  DSC             π0+ (the recipe)
  pi0             π0 with instruction augmentation (configs/pi0_baseline.py:<variant>)
A row may name its start after "@": `DSC@pretrained`, `base@scratch` (the config option vlm=: "pretrained" =
the project's VLM, configs/pretrain_vlm.py, shipped at config_lib.VLM_DIR; "scratch" = its architecture and
tokenizer from random weights; tabletop only); rows without one use `--vlm` (default none: today's tiny model).
`--row_episodes=ROW=N` (repeatable) sets a row's closed-loop episodes per task and protocol (e.g. 50 for
base, DSC and pi0, the eval config's count for the others).
`--variant` is the config variant every row uses (tabletop | metaworld | demo | full); `--set=KEY=VALUE`
overrides a config value in every row, `--eval_set=KEY=VALUE` one of the eval config (both repeatable;
as the train CLI's `--set` (config_lib.set_fields): the value is JSON or a Python literal when it is one,
else text for a string field, e.g. `--eval_set=env_kwargs.max_steps=40`, `--set='data.vl=[...]'`).
`--eval_config=none` skips closed-loop evaluation (offline metrics only; the `demo` variant has
no simulator).

Each row trains in WORKDIR/<row> (a rerun resumes unfinished training and reuses a finished row's
WORKDIR/<row>/ablation_row.json when its step count and eval config match), then: action error on the robot
data's val split against the mean action, last logged
answer-token accuracy (token rows) or flow MSE (π0), VQA on the VL set held out next to the training VL
set (`heldout.json` of a generated corpus, else `val.json`, when there is one) answered by unconstrained
greedy decoding (exact match; per question family and pointing distance for a corpus), and the closed-loop
evaluation (eval/harness.py). Results: WORKDIR/ablation.md and WORKDIR/ablation.json; `--report_only` rewrites
them (and the plot) from ablation.json with this checkout's report code, training nothing.
"""

import importlib.util
import json
import os
import time

from absl import flags, logging
import ml_collections
import numpy as np

from genvla_jax import cli, config_files, config_lib, predict, train
from genvla_jax import intervals
from genvla_jax.tools import paper_orderings

ROWS = {  # row -> (config file, argument after the variant, label in the table)
  "base": ("pi0_plus", "ablation=", "no D/S/C (bins)"),
  "D": ("pi0_plus", "ablation=D", "+D"),
  "S": ("pi0_plus", "ablation=S", "+S"),
  "C": ("pi0_plus", "ablation=C", "+C"),
  "DS": ("pi0_plus", "ablation=DS", "+DS"),
  "SC": ("pi0_plus", "ablation=SC", "+SC"),
  "DC": ("pi0_plus", "ablation=DC", "+DC"),
  "DSC": ("pi0_plus", "ablation=DSC", "π0+ (DSC)"),
  "pi0": ("pi0_baseline", "", "π0 w/ Inst. Aug."),
}


def load_config_file(path_and_arg: str):
  """'configs/x.py:arg' -> x.get_config(arg) (the same syntax and lookup as --config: a path, or the name
  of a shipped config file, config_files.resolve)."""
  path, _, arg = config_files.resolve(path_and_arg).partition(":")
  spec = importlib.util.spec_from_file_location(os.path.splitext(os.path.basename(path))[0], path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config(arg or None)


def split_row(row: str, vlm: str = "none") -> tuple[str, str]:
  """'DSC@pretrained' -> ('DSC', 'pretrained'); 'DSC' -> ('DSC', vlm)."""
  name, _, start = row.partition("@")
  start = start or vlm
  if name not in ROWS:
    raise ValueError(f"unknown ablation row {name!r}; rows: {list(ROWS)}")
  if start not in config_lib.VLM_STARTS:
    raise ValueError(f"unknown start {start!r} of row {row!r}; one of {config_lib.VLM_STARTS}")
  return name, start


def row_label(row: str, vlm: str = "none") -> str:
  name, start = split_row(row, vlm)
  return ROWS[name][2] + ("" if start == "none" else f" [{start}]")


def row_config(row: str, variant: str, vlm: str = "none"):
  name, start = split_row(row, vlm)
  file, arg, _ = ROWS[name]
  args = [variant, arg] + ([f"vlm={start}"] if start != "none" else [])
  return load_config_file(config_files.shipped(f"{file}.py") + ":" + ",".join(a for a in args if a))


def apply_override(config, assignment: str):
  """'train.steps=1500' -> config.train.steps = 1500: config_lib.set_fields (the train CLI's --set)."""
  config_lib.set_fields(config, [assignment])


def last_step(workdir: str) -> int:
  """The last logged training step of a run directory (0 when nothing is logged)."""
  path = os.path.join(workdir, "metrics.jsonl")
  if not os.path.exists(path):
    return 0
  with open(path) as f:
    steps = [json.loads(line).get("step", 0) for line in f if line.strip()]
  return int(max(steps, default=0))


def offline_metrics(policy, config, workdir: str, num_examples: int, vqa_limit: int) -> dict:
  out = {}
  errors = predict.evaluate_split(policy, "val", num_examples)
  out["action_mae_normalized"] = float(np.mean([e["mae_normalized"] for e in errors.values()]))
  out["baseline_mae_normalized"] = float(np.mean([e["baseline_mae_normalized"] for e in errors.values()]))
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    last = [json.loads(line) for line in f if line.strip()][-1]
  out["train_steps"] = int(last["step"])
  out["robot_token_accuracy"] = last["robot_token_accuracy"] if "flow_mse" not in last else None
  out["flow_mse"] = last.get("flow_mse")
  out["vqa"] = vqa_scores(policy, config, vqa_limit)
  out["vqa_exact_match"] = None if out["vqa"] is None else out["vqa"]["exact_match"]
  if config.data.corpus_dir:  # rows on the pretrained VLM's world: probes of the towers (drift)
    towers = {k: policy.params[k] for k in ("img", "img_frozen") if k in policy.params}
    if config.pretrained.path:
      towers["pretrained"] = pretrained_tower(config)
    out["representation"] = representation_scores(towers, config.model, config.data.corpus_dir)
    out["vqa_by_factor"] = vqa_by_factor(policy, config, vqa_limit)
  return out


def vqa_by_factor(policy, config, limit: int) -> dict:
  """VQA exact match on the generated corpus' one-factor splits (data/vl_corpus.one_factor_splits: new scenes
  with nothing, only the conditions, only the wordings held out; `limit` questions each) and on its held-out
  split (both) -> {split: {"exact_match", "n"}}."""
  from genvla_jax.data import vl_corpus
  from genvla_jax.eval import vqa

  root = os.path.expanduser(config.data.corpus_dir)
  splits_dir = vl_corpus.one_factor_splits(os.path.join(root, "eval_splits"), limit, config.model.image_size)
  answerer, out = vqa.Answerer(policy, max_answer_len=24), {}
  for split in (*vl_corpus.EVAL_SPLITS, "heldout"):
    path = os.path.join(root if split == "heldout" else splits_dir, f"{split}.json")
    result = vqa.evaluate(answerer, "llava", vqa.load("llava", path, "")[:limit])
    out[split] = {"exact_match": result["exact_match"], "n": result["n"]}
  return out


PROBE_PER_CLASS = 100  # images per colour class of each probe set (80% fit the probe, 20% score it)


def pretrained_tower(config):
  """The image tower of the checkpoint config.pretrained names (what the fine-tuned towers started from)."""
  from genvla_jax.models import build
  from genvla_jax.pretrained import api

  model = build.from_config(config.model)  # api.load reads the checkpoint into the single-encoder model first
  return api.load(config.pretrained.format, os.path.expanduser(config.pretrained.path), model, config.model.image_size)[
    "img"
  ]


def representation_scores(towers: dict, model_config, probe_root: str, per_class: int = PROBE_PER_CLASS) -> dict:
  """Linear-probe accuracy of each tower ("img" trained, "img_frozen", "pretrained") on the cube-colour probe
  sets (data/vl_corpus.probe_set) of the robot demos' appearance ("default") and both condition pools, and
  CKA(trained, frozen) on each. -> {pool: eval/representation.evaluate's result}."""
  from genvla_jax.data import vl_corpus
  from genvla_jax.eval import representation

  out = {}
  for pool in vl_corpus.PROBE_POOLS:
    data = vl_corpus.probe_set(
      os.path.join(os.path.expanduser(probe_root), f"probe_{pool}"), pool, per_class, model_config.image_size
    )
    out[pool] = representation.evaluate(towers, model_config, data, limit=0)
  return out


def vqa_scores(policy, config, limit: int) -> dict | None:
  """VQA on the held-out set next to each training VL set: a generated corpus' `heldout.json` (held-out
  conditions and wordings), else `val.json`; exact match, per family and pointing (eval/vqa.py
  corpus_scores). None when there is none (robot-only rows of configs without VL data)."""
  from genvla_jax.eval import vqa

  items = []
  for entry in config.data.vl:
    train_path = os.path.join(os.path.expanduser(config.data.vl_root), entry["path"])
    for name in ("heldout.json", "val.json"):
      path = os.path.join(os.path.dirname(train_path), name)
      if os.path.exists(path):
        items += vqa.load("llava", path, "")
        break
  if not items:
    return None
  items = items[:limit]
  return vqa.evaluate(vqa.Answerer(policy, max_answer_len=24), "llava", items)


def run(
  rows,
  variant: str,
  workdir: str,
  eval_config=None,
  configure=None,
  num_examples: int = 200,
  vqa_limit: int = 200,
  printer=print,
  vlm: str = "none",
  row_episodes: dict | None = None,
) -> dict:
  """Trains / evaluates every row (resumable) and writes ablation.md + ablation.json. `configure`:
  fn(config) applied to every row's config (e.g. overrides); `vlm`: the start of rows without "@start";
  `row_episodes`: {row: closed-loop episodes per task and protocol}. -> {row: results}."""
  from genvla_jax.eval.__main__ import evaluate
  from genvla_jax.inference import policy as policy_lib

  workdir = os.path.abspath(os.path.expanduser(workdir))
  os.makedirs(workdir, exist_ok=True)
  results = {}
  for n, row in enumerate(rows):
    config = row_config(row, variant, vlm)
    if configure:
      configure(config)
    label = row_label(row, vlm)
    row_eval = None if eval_config is None else eval_config.copy_and_resolve_references()
    if row_eval is not None and row in (row_episodes or {}):
      row_eval.episodes_per_task = int(row_episodes[row])
    row_dir = os.path.join(workdir, row)
    row_file = os.path.join(row_dir, "ablation_row.json")
    if os.path.exists(row_file):  # finished earlier with the same number of steps: reuse
      with open(row_file) as f:
        result = json.load(f)
      wanted = None if row_eval is None else json.loads(json.dumps(row_eval.to_dict()))
      if result["train_steps"] == config.train.steps and wanted in (None, result.get("eval_config")):
        printer(f"[ablation] row {n + 1}/{len(rows)}: {row} done earlier ({row_file})", flush=True)
        results[row] = result
        continue
    started = time.perf_counter()
    printer(f"[ablation] row {n + 1}/{len(rows)}: {row} ({label}) in {row_dir}", flush=True)
    train.train(config, row_dir, printer=printer)
    reached = last_step(row_dir)
    if reached < config.train.steps:  # stopped early (SIGTERM): no evaluation of a half-trained row
      printer(
        f"[ablation] row {row} stopped at step {reached} of {config.train.steps}; rerun the same command to "
        "resume it (finished rows are reused)",
        flush=True,
      )
      break
    trained = time.perf_counter()
    policy = policy_lib.Policy.from_workdir(row_dir)
    result = {"label": label, **offline_metrics(policy, config, row_dir, num_examples, vqa_limit)}
    if row_eval is not None:
      result["closed_loop"] = evaluate(
        row_eval, policy, os.path.join(row_dir, "eval", row_eval.env), f"{row_eval.env}: {label}", printer=printer
      )
      result["eval_config"] = row_eval.to_dict()
    result["train_seconds"] = trained - started  # training (a resumed row: this session's part only)
    result["seconds"] = time.perf_counter() - started
    with open(row_file, "w") as f:
      json.dump(result, f, indent=1)
    results[row] = result
    write(results, workdir, variant, eval_config)  # after every row: a partial grid is already readable
  return results


def _rate(cell) -> str:
  return f"{cell['success_rate']:.0%}"


def markdown(results: dict, variant: str, eval_config=None) -> str:
  lines = [f"# Ablation grid ({variant})", ""]
  if eval_config is not None:
    tasks = list(eval_config.tasks)
    lines += [
      f"Closed-loop success on {eval_config.env}, episodes per task and protocol in the column n "
      "(Average = mean over tasks, as in the paper's Table II, with the Wilson 95% interval of the pooled "
      "episodes; per-task intervals in each row's eval/ report).",
      "",
    ]
    lines += _summary_lines(results, eval_config)
    lines += paper_orderings.lines(results, tasks) + ["![average success per protocol](ablation.png)", ""]
    for protocol in eval_config.protocols:
      lines += [
        f"## {protocol}",
        "",
        "| Model | " + " | ".join(tasks) + " | Average | 95% interval | n |",
        "|---" * (len(tasks) + 4) + "|",
      ]
      for r in results.values():
        cells = r["closed_loop"]["protocols"][protocol]["tasks"]
        mean, low, high = _pooled(cells, tasks)
        lines.append(
          f"| {r['label']} | " + " | ".join(_rate(cells[t]) for t in tasks) + f" | {mean:.0%} | "
          f"[{low:.0%}, {high:.0%}] | {cells[tasks[0]]['episodes']} |"
        )
      lines.append("")
  lines += _representation_lines(results) + _vqa_lines(results) + _vqa_factor_lines(results)
  lines += [
    "## Offline metrics",
    "",
    "| Model | action MAE (normalized) | mean-action MAE | robot token acc. | flow MSE | VQA exact match | steps |",
    "|---" * 7 + "|",
  ]

  def fmt(v, spec=".3f"):
    return "-" if v is None else format(v, spec)

  for r in results.values():
    lines.append(
      f"| {r['label']} | {fmt(r['action_mae_normalized'])} | {fmt(r['baseline_mae_normalized'])} | "
      f"{fmt(r['robot_token_accuracy'])} | {fmt(r['flow_mse'])} | {fmt(r['vqa_exact_match'])} | "
      f"{r['train_steps']} |"
    )
  return "\n".join(lines) + "\n"


def _pooled(cells: dict, tasks) -> tuple[float, float, float]:
  """-> (mean success over tasks, Wilson 95% interval of the pooled episodes)."""
  k, n = sum(cells[t]["successes"] for t in tasks), sum(cells[t]["episodes"] for t in tasks)
  return (float(np.mean([cells[t]["success_rate"] for t in tasks])), *intervals.wilson_interval(k, n))


def _summary_lines(results: dict, eval_config) -> list[str]:
  """Every protocol's average side by side (the paper's Tables III / IV: how much each model loses under
  visual shifts and paraphrases relative to visual matching)."""
  tasks, protocols = list(eval_config.tasks), list(eval_config.protocols)
  lines = [
    "## Summary: average success per protocol [95% interval]",
    "",
    "| Model | " + " | ".join(protocols) + " |",
    "|---" * (len(protocols) + 1) + "|",
  ]
  for r in results.values():
    cells = []
    for protocol in protocols:
      mean, low, high = _pooled(r["closed_loop"]["protocols"][protocol]["tasks"], tasks)
      cells.append(f"{mean:.0%} [{low:.0%}, {high:.0%}]")
    lines.append(f"| {r['label']} | " + " | ".join(cells) + " |")
  return lines + [""]


def _representation_lines(results: dict) -> list[str]:
  """The representation table: probe accuracy (cube colour) of each tower per probe set, CKA(trained, frozen)."""
  rows = {k: r["representation"] for k, r in results.items() if r.get("representation")}
  if not rows:
    return []
  pools = list(next(iter(rows.values())))
  lines = [
    "## Representations: linear probe of the image towers (cube colour), CKA(trained, frozen)",
    "",
    "| Model | " + " | ".join(f"{p}: trained / frozen / pretrained | {p}: CKA" for p in pools) + " |",
    "|---" * (1 + 2 * len(pools)) + "|",
  ]

  def acc(probe, tower):
    return f"{probe[tower]:.0%}" if tower in probe else "-"

  for key, rep in rows.items():
    cells = []
    for p in pools:
      probe, cka = rep[p]["probe"], rep[p]["cka_trained_vs_frozen"]
      cells += [
        " / ".join(acc(probe, t) for t in ("img", "img_frozen", "pretrained")),
        "-" if cka is None else f"{cka:.2f}",
      ]
    lines.append(f"| {results[key]['label']} | " + " | ".join(cells) + " |")
  return lines + [""]


def _vqa_factor_lines(results: dict) -> list[str]:
  """VQA exact match with each factor of the held-out split held out alone (ablate.vqa_by_factor)."""
  rows = {k: r["vqa_by_factor"] for k, r in results.items() if r.get("vqa_by_factor")}
  if not rows:
    return []
  splits = ("val", "heldout_conditions", "heldout_wordings", "heldout")
  lines = [
    "## VQA by held-out factor: exact match on new scenes",
    "",
    "| Model | nothing held out | conditions held out | wordings held out | both held out | n each |",
    "|---|---|---|---|---|---|",
  ]
  for key, v in rows.items():
    cells = [f"{v[s]['exact_match']:.0%}" if s in v else "-" for s in splits]
    lines.append(f"| {results[key]['label']} | " + " | ".join(cells) + f" | {v[splits[0]]['n']} |")
  return lines + [""]


def _vqa_lines(results: dict) -> list[str]:
  """VQA retention on the held-out set: exact match overall and per family, pointing hit rate."""
  rows = {k: r["vqa"] for k, r in results.items() if r.get("vqa") and "families" in r["vqa"]}
  if not rows:
    return []
  families = sorted({f for v in rows.values() for f in v["families"]})
  lines = [
    "## VQA retention (held-out conditions and wordings): exact match",
    "",
    "| Model | all | " + " | ".join(families) + " | pointing hit rate (<= 0.1) | n |",
    "|---" * (len(families) + 4) + "|",
  ]
  for key, v in rows.items():
    fams = [f"{v['families'][f]['exact_match']:.0%}" if f in v["families"] else "-" for f in families]
    hit = f"{v['pointing']['hit_rate']:.0%}" if "pointing" in v else "-"
    lines.append(f"| {results[key]['label']} | {v['exact_match']:.0%} | " + " | ".join(fams) + f" | {hit} | {v['n']} |")
  return lines + [""]


def write(results: dict, workdir: str, variant: str, eval_config=None):
  """ablation.md (tables, the paper orderings), ablation.json (every row's results), ablation.png (the plot)."""
  with open(os.path.join(workdir, "ablation.md"), "w") as f:
    f.write(markdown(results, variant, eval_config))
  if eval_config is not None and any(r.get("closed_loop") for r in results.values()):
    paper_orderings.plot(
      results, list(eval_config.protocols), list(eval_config.tasks), os.path.join(workdir, "ablation.png")
    )
  with open(os.path.join(workdir, "ablation.json"), "w") as f:
    json.dump(
      {"variant": variant, "eval_config": eval_config.to_dict() if eval_config else None, "rows": results}, f, indent=1
    )


FLAGS = flags.FLAGS


def report_only(workdir: str) -> str:
  """Rewrites WORKDIR/ablation.md / .png / .json from WORKDIR/ablation.json with this checkout's report code
  (a grid runs from a worktree at a fixed commit; its tables and orderings are re-read by later code). -> the
  Markdown."""
  path = os.path.join(os.path.expanduser(workdir), "ablation.json")
  if not os.path.exists(path):
    raise cli.UserError(f"--report_only: no {path} (a grid writes it after its first finished row)")
  with open(path) as f:
    saved = json.load(f)
  eval_config = None if saved["eval_config"] is None else ml_collections.ConfigDict(saved["eval_config"])
  write(saved["rows"], os.path.dirname(path), saved["variant"], eval_config)
  return markdown(saved["rows"], saved["variant"], eval_config)


def main(argv):
  if len(argv) > 1:
    raise cli.UserError(f"unexpected arguments: {argv[1:]}")
  logging.set_verbosity(logging.WARNING)
  if FLAGS.report_only:
    print(report_only(FLAGS.workdir))
    return
  rows = [r for r in FLAGS.rows.split(",") if r]
  for r in rows:  # fail before training anything
    row_config(r, FLAGS.variant, FLAGS.vlm)
  row_episodes = {}
  for assignment in FLAGS.row_episodes:
    row, _, n = assignment.partition("=")
    if row not in rows or not n.isdigit():
      raise cli.UserError(f"--row_episodes={assignment}: give ROW=N for one of the rows {rows}")
    row_episodes[row] = int(n)
  eval_config = None if FLAGS.eval_config == "none" else load_config_file(FLAGS.eval_config)
  if eval_config is not None:
    for assignment in FLAGS.eval_set:
      apply_override(eval_config, assignment)

  def configure(config):
    for assignment in FLAGS.set:
      apply_override(config, assignment)

  run(
    rows,
    FLAGS.variant,
    FLAGS.workdir,
    eval_config,
    configure,
    FLAGS.num_examples,
    FLAGS.vqa_limit,
    vlm=FLAGS.vlm,
    row_episodes=row_episodes,
  )
  print(open(os.path.join(os.path.expanduser(FLAGS.workdir), "ablation.md")).read())


if __name__ == "__main__":
  flags.DEFINE_string("workdir", None, "one run directory per row below this", required=True)
  flags.DEFINE_string("rows", "base,D,S,C,DS,SC,DSC,pi0", f"comma-separated rows of {list(ROWS)}")
  flags.DEFINE_string("variant", "tabletop", "config variant of every row: tabletop | metaworld | demo | full")
  flags.DEFINE_string("eval_config", "configs/eval_tabletop.py:quick", "eval config file[:arg], or none")
  flags.DEFINE_multi_string("set", [], "KEY=VALUE config override for every row (repeatable)")
  flags.DEFINE_multi_string("eval_set", [], "KEY=VALUE override of the eval config (repeatable)")
  flags.DEFINE_integer("num_examples", 200, "val frames for the offline action error")
  flags.DEFINE_integer("vqa_limit", 200, "held-out VL questions for the VQA accuracy")
  flags.DEFINE_enum("vlm", "none", list(config_lib.VLM_STARTS), "start of rows without @start (vlm= option)")
  flags.DEFINE_multi_string("row_episodes", [], "ROW=N closed-loop episodes per task and protocol of a row")
  flags.DEFINE_bool("report_only", False, "rewrite WORKDIR's report from its ablation.json (no training)")
  cli.run(main)
