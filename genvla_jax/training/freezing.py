"""Which parameters train: config.optimizer.frozen, the always-frozen towers, LoRA's base kernels.

A parameter is frozen (no gradient computed, no optimizer state, never updated) when
  - it belongs to the dual encoder's frozen towers (surgery.FROZEN_PARTS: behind stop_gradient in the model),
  - its '/'-joined path (e.g. "llm/layers/attn/q_einsum") fully matches a regex of config.optimizer.frozen
    ("llm/.*" the whole decoder, "llm/embedder/.*" its embedding table, "img/.*", "projector/.*",
    "expert/.*"; LoRA's adapters are the part "lora/..."), or
  - it is a kernel that LoRA adapts (models/lora.py: the adapters train instead).
Everything else trains. A pattern that matches no parameter is an error naming it (`trainable_mask`), found at
start-up by `config_problems` (training/preflight.py), before any data work.

`partition` / `combine` split a tree into its trainable and frozen leaves (None where the other side has
them), so the train step differentiates only the trainable ones (training/step.py). `report` is the table
training prints at start-up: trainable / frozen parameters and bytes per top-level part.
"""

import re
from typing import Sequence

import jax
import numpy as np

from genvla_jax.models import build, lora as lora_lib, surgery


def _path(path) -> str:
  return lora_lib.path_str(path)


def trainable_mask(params, frozen: Sequence[str] = ()):
  """A tree like `params` of bools: True = trains. `frozen`: config.optimizer.frozen (regexes, full match on
  the '/'-joined path). A pattern that matches no parameter raises ValueError naming it."""
  patterns = [(p, re.compile(p)) for p in frozen]
  adapted = lora_lib.adapted(params)
  used = set()

  def trains(path, _):
    name = _path(path)
    hits = [p for p, rx in patterns if rx.fullmatch(name)]
    used.update(hits)
    return not (hits or name.split("/")[0] in surgery.FROZEN_PARTS or name in adapted)

  mask = jax.tree_util.tree_map_with_path(trains, params)
  unmatched = [p for p, _ in patterns if p not in used]
  if unmatched:
    parts = ", ".join(params)
    raise ValueError(
      f"optimizer.frozen pattern(s) {unmatched} match no parameter (a full match on the '/'-joined path, e.g. "
      f"'llm/.*' or 'llm/embedder/.*'; this model's parts: {parts})"
    )
  return mask


def partition(tree, mask):
  """-> (trainable, frozen): `tree` twice, each with None in place of the other side's leaves."""
  trainable = jax.tree.map(lambda x, m: x if m else None, tree, mask)
  frozen = jax.tree.map(lambda x, m: None if m else x, tree, mask)
  return trainable, frozen


def combine(trainable, frozen):
  """partition's inverse."""
  return jax.tree.map(lambda t, f: f if t is None else t, trainable, frozen, is_leaf=lambda x: x is None)


def counts(params, mask) -> dict[str, dict[str, int]]:
  """{top-level part: {trainable, trainable_bytes, frozen, frozen_bytes}} (+ "total")."""
  out: dict[str, dict[str, int]] = {}
  zero = dict(trainable=0, trainable_bytes=0, frozen=0, frozen_bytes=0)
  for (path, leaf), trains in zip(jax.tree_util.tree_flatten_with_path(params)[0], jax.tree.leaves(mask)):
    part = _path(path).split("/")[0]
    kind = "trainable" if trains else "frozen"
    size = int(np.prod(leaf.shape))
    for key in (part, "total"):
      row = out.setdefault(key, dict(zero))
      row[kind] += size
      row[kind + "_bytes"] += size * np.dtype(leaf.dtype).itemsize
  if "total" in out:
    out["total"] = out.pop("total")  # last
  return out


def _n(n: int) -> str:
  return f"{n / 1e9:.2f}B" if n >= 1e9 else f"{n / 1e6:.2f}M" if n >= 1e6 else f"{n / 1e3:.1f}K" if n >= 1e3 else str(n)


def _b(n: int) -> str:
  if n < 2**10:
    return f"{n} B"
  return f"{n / 2**30:.2f} GiB" if n >= 2**30 else f"{n / 2**20:.1f} MiB" if n >= 2**20 else f"{n / 2**10:.1f} KiB"


def report(params, mask) -> list[str]:
  """The start-up table: per top-level part (and in total) trainable and frozen parameters and their bytes."""
  rows = [("part", "trainable", "bytes", "frozen", "bytes")]
  for part, c in counts(params, mask).items():
    rows.append((part, _n(c["trainable"]), _b(c["trainable_bytes"]), _n(c["frozen"]), _b(c["frozen_bytes"])))
  widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
  return [
    "  " + "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths))) for r in rows
  ]


def summary(params, frozen: Sequence[str] = (), lora: lora_lib.Spec | None = None) -> str:
  """What training prints at start-up: why parameters are frozen, then `report`'s table."""
  why = [f"optimizer.frozen={list(frozen)}"] if frozen else []
  if any(k in surgery.FROZEN_PARTS for k in params):
    why.append("the dual encoder's frozen towers")
  if lora is not None and lora.enabled:
    why.append(f"the kernels LoRA adapts (rank {lora.rank}, alpha {lora.alpha:g}; adapters: the part {lora_lib.KEY})")
  head = f"parameters, trainable / frozen (frozen: {'; '.join(why)})" if why else "parameters (all trainable)"
  return "\n".join([head + ":", *report(params, trainable_mask(params, frozen))])


def config_problems(config) -> list[str]:
  """config.optimizer.frozen and config.lora checked against the model's parameter paths (abstract shapes
  only, nothing allocated): a pattern that matches nothing, a LoRA target that is no adaptable kernel, a bad
  rank. One line each; nothing to check (no patterns, LoRA off) costs nothing."""
  spec = lora_lib.Spec.from_config(config.lora)
  problems = []
  if spec.rank < 0:
    problems.append(f"lora.rank={spec.rank} must be >= 0 (0: no LoRA)")
  if spec.enabled and not spec.alpha > 0:
    problems.append(f"lora.alpha={spec.alpha} must be > 0")
  if spec.enabled and not spec.targets:
    problems.append("lora.rank > 0 with no lora.targets: name the kernels to adapt (e.g. 'llm/layers/attn/.*')")
  for pattern in [*config.optimizer.frozen, *spec.targets]:
    try:
      re.compile(pattern)
    except re.error as e:
      problems.append(f"bad regex {pattern!r} in optimizer.frozen / lora.targets: {e}")
  if problems or not (config.optimizer.frozen or spec.enabled):
    return problems
  try:
    params = abstract_params(config)
  except (ValueError, TypeError, KeyError) as e:
    return [f"optimizer.frozen / lora.targets not checked: the model does not build ({type(e).__name__}: {e})"]
  try:
    trainable_mask(params, config.optimizer.frozen)
  except ValueError as e:
    problems.append(str(e))
  return problems


def abstract_params(config):
  """The shapes of a run's params (adapters included), from config alone; π0's data-derived sizes (unknown
  before the data is read) as 1, which changes no parameter path."""
  model_config = config.model
  if model_config.action_expert.width and not model_config.action_expert.action_dim:
    model_config = config.model.copy_and_resolve_references()
    model_config.action_expert.action_dim = 1
    model_config.action_expert.state_dim = 1 if model_config.action_expert.use_state else 0
  model = build.from_config(model_config)
  spec = lora_lib.Spec.from_config(config.lora)
  rng = jax.random.PRNGKey(0)
  base = jax.eval_shape(lambda: surgery.init_params(model, rng, model_config.image_size))
  return jax.eval_shape(lambda: lora_lib.with_adapters(base, spec, rng))
