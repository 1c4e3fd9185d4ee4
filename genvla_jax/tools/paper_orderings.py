"""The paper's claims as orderings between rows of the ablation grid, judged on the grid's results
(tools/ablate.py writes them under the tables: "Paper orderings"), and the grid's plot.

Each Ordering pools the episodes (or probe images) of its `better` rows and of its `worse` rows, every row
weighing equally (`pool`: rows evaluated with more episodes than the side's smallest are scaled down to it, so a
50-episode row does not outvote a 20-episode one and the interval stays conservative), and compares the two
Wilson 95% intervals: "holds beyond the intervals" (better's lower end above worse's upper end),
"holds within the intervals" (better's rate higher, the intervals overlap), "opposite ..." likewise, or "not
run" while a row is missing. The orderings are fixed here, before the grid runs; the evaluation is not tuned
to them.
"""

import dataclasses

import numpy as np

from genvla_jax import intervals


@dataclasses.dataclass(frozen=True)
class Ordering:
  claim: str  # the paper's claim, with its table
  better: tuple[str, ...]  # grid rows ("DSC@pretrained", ...) pooled on the side the paper says is higher
  worse: tuple[str, ...]
  measure: str  # a closed-loop protocol (average over tasks), or "probe:<pool>" (cube-colour probe accuracy)
  better_tower: str = "img"  # probe orderings: which tower of the better rows ("img": trained, "img_frozen")


P = "@pretrained"
BINS_ROWS = ("base" + P, "D" + P, "C" + P)  # rows without string actions (OpenVLA-style bins)
STRING_COTRAIN_ROWS = ("SC" + P, "DSC" + P)  # rows with string actions and co-training
ORDERINGS = (
  Ordering("Table II: π0+ (DSC) > base (bins) in visual matching", ("DSC" + P,), ("base" + P,), "visual_matching"),
  Ordering("Table III: π0+ (DSC) > base under variant aggregation", ("DSC" + P,), ("base" + P,), "variant_aggregation"),
  Ordering("Table III: π0+ (DSC) > base under background masking", ("DSC" + P,), ("base" + P,), "background_masking"),
  Ordering("Table IV: S+C rows > bins rows under paraphrase", STRING_COTRAIN_ROWS, BINS_ROWS, "paraphrase"),
  Ordering(
    "Table IV: S+C rows > π0 w/ instruction augmentation under paraphrase",
    STRING_COTRAIN_ROWS,
    ("pi0" + P,),
    "paraphrase",
  ),
  Ordering(
    "Probe: the frozen tower (DSC) >= the fully fine-tuned tower (base), wide conditions",
    ("DSC" + P,),
    ("base" + P,),
    "probe:wide",
    better_tower="img_frozen",
  ),
  Ordering(
    "Probe: the frozen tower (DSC) >= the fully fine-tuned tower (base), held-out conditions",
    ("DSC" + P,),
    ("base" + P,),
    "probe:held_out",
    better_tower="img_frozen",
  ),
  Ordering("Start: pretrained > random (π0+) in visual matching", ("DSC" + P,), ("DSC@scratch",), "visual_matching"),
  Ordering("Start: pretrained > random (base) in visual matching", ("base" + P,), ("base@scratch",), "visual_matching"),
)


def counts(row: dict, measure: str, tower: str = "img", tasks=None) -> tuple[int, int] | None:
  """(successes, trials) of one grid row on `measure`: a protocol's episodes pooled over `tasks` (all of the
  row's tasks by default), or a probe's correct test images; None when the row does not have it."""
  if measure.startswith("probe:"):
    pool = (row.get("representation") or {}).get(measure.split(":", 1)[1])
    if not pool or tower not in pool["probe"]:
      return None
    n = int(pool["n_test"])
    return int(round(pool["probe"][tower] * n)), n
  protocols = (row.get("closed_loop") or {}).get("protocols", {})
  if measure not in protocols:
    return None
  cells = protocols[measure]["tasks"]
  tasks = list(tasks or cells)
  return sum(cells[t]["successes"] for t in tasks), sum(cells[t]["episodes"] for t in tasks)


def pool(counts_per_row: list[tuple[int, int]]) -> tuple[float, int]:
  """[(successes, trials) per row] -> (successes, trials) of the rows pooled with equal weight: each row's
  count scaled to the fewest trials among them (k * n_min / n, n_min). The rate is the mean of the rows'
  rates; the trials are n_min per row, never more than every row measured (a conservative interval). One
  row: its own count."""
  n_min = min(n for _, n in counts_per_row)
  if n_min == 0:
    return 0.0, 0
  return sum(k * n_min / n for k, n in counts_per_row), n_min * len(counts_per_row)


def judge(results: dict, ordering: Ordering, tasks=None) -> dict:
  """-> {"verdict", "better": (rate, low, high), "worse": (...)} for one ordering on the grid's rows."""
  sides = {}
  for side, rows, tower in (
    ("better", ordering.better, ordering.better_tower),
    ("worse", ordering.worse, "img"),
  ):
    pooled = [counts(results[r], ordering.measure, tower, tasks) if r in results else None for r in rows]
    if any(p is None for p in pooled):
      return {"verdict": "not run (" + ", ".join(r for r, p in zip(rows, pooled) if p is None) + ")"}
    k, n = pool(pooled)
    sides[side] = (k / n if n else 0.0, *intervals.wilson_interval(k, n))
  (b, b_low, b_high), (w, w_low, w_high) = sides["better"], sides["worse"]
  if b_low > w_high:
    verdict = "holds beyond the intervals"
  elif w_low > b_high:
    verdict = "opposite, beyond the intervals"
  elif b > w:
    verdict = "holds within the intervals"
  elif b < w:
    verdict = "opposite, within the intervals"
  else:
    verdict = "equal"
  return {"verdict": verdict, **sides}


def lines(results: dict, tasks=None) -> list[str]:
  """The "Paper orderings" section of the grid's report (Markdown lines)."""
  out = [
    "## Paper orderings (fixed before the grid ran; Wilson 95% intervals of the pooled episodes / probe images,"
    " every row weighing equally)",
    "",
    "| Claim | higher side | lower side | verdict |",
    "|---|---|---|---|",
  ]
  for o in ORDERINGS:
    j = judge(results, o, tasks)
    fmt = lambda s: f"{s[0]:.0%} [{s[1]:.0%}, {s[2]:.0%}]" if s else "-"  # noqa: E731
    out.append(f"| {o.claim} | {fmt(j.get('better'))} | {fmt(j.get('worse'))} | {j['verdict']} |")
  return out + [""]


def plot(results: dict, protocols, tasks, path: str):
  """Grouped bars: each row's average success per protocol (pooled over `tasks`) with its Wilson interval."""
  import matplotlib

  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  rows = [k for k, r in results.items() if r.get("closed_loop")]
  fig, ax = plt.subplots(figsize=(2.0 + 1.6 * len(protocols), 3.6))
  width = 0.8 / max(len(rows), 1)
  for j, key in enumerate(rows):
    stats = []
    for p in protocols:
      k, n = counts(results[key], p, tasks=tasks)
      stats.append((k / n if n else 0.0, *intervals.wilson_interval(k, n)))
    rate = np.array([s[0] for s in stats])
    errors = np.array([[s[0] - s[1], s[2] - s[0]] for s in stats]).T.clip(0.0)
    ax.bar(np.arange(len(protocols)) + j * width, rate, width, yerr=errors, capsize=2, label=results[key]["label"])
  ax.set_xticks(np.arange(len(protocols)) + width * (len(rows) - 1) / 2, protocols, fontsize=7)
  ax.set_ylim(0, 1.05)
  ax.set_ylabel("average success (pooled episodes)")
  ax.legend(fontsize=6, ncol=2)
  fig.tight_layout()
  fig.savefig(path, dpi=120)
  plt.close(fig)
