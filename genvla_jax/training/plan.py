"""The dry run (`train --dry_run`): the run's plan from the abstract state — one real batch when the data is
already converted, parameters (total / trainable / frozen), per-device memory (params, gradients, optimizer
state from shapes and shardings; activations: an analytic estimate), the data mixture, steps and checkpoints.
No parameter is materialised and nothing is written."""

import math
import os
import time
import jax
import numpy as np
from genvla_jax.data import pipeline, prepare
from genvla_jax.models import build, lora as lora_lib, surgery, vit
from genvla_jax.training import freezing, optimizer
from genvla_jax.training import preflight, sharding
from genvla_jax.training import state as state_lib


def _bytes(tree, per_device: bool = True) -> int:
  """Bytes of an abstract tree: on one device (its shard of every leaf), or in all."""
  total = 0
  for leaf in jax.tree.leaves(tree):
    shape = leaf.sharding.shard_shape(leaf.shape) if per_device and leaf.sharding is not None else leaf.shape
    total += math.prod(shape) * np.dtype(leaf.dtype).itemsize
  return total


def _layer_elements(policy, tokens, width, mlp_dim, heads, kv_heads, head_dim, kv_len) -> tuple[int, int]:
  """(activation elements one transformer layer keeps for the backward pass per example under the remat
  `policy`, elements of its full activations). Full: the norms' inputs and outputs, the residuals and the
  projections' outputs (7 x width), q / k / v, RoPE'd q and k and the attention output (3 x q, 3 x k),
  attention logits, masked logits and probabilities (3 x heads x kv_len), the MLP's gate, up, GELU
  intermediates and product (5 x mlp_dim). "dots" keeps the matmul outputs, "dots_no_batch" those without
  batch dimensions (not the attention logits), "full" / "nothing_saveable" the layer's input."""
  q, k = heads * head_dim, kv_heads * head_dim
  full = tokens * (7 * width + 3 * q + 3 * k + 3 * heads * kv_len + 5 * mlp_dim)
  kept = {
    "none": full,
    "dots": tokens * (2 * width + 2 * q + 2 * k + heads * kv_len + 2 * mlp_dim),
    "dots_no_batch": tokens * (2 * width + q + 2 * k + 2 * mlp_dim),
  }.get(policy, tokens * width)
  return kept, full


def activation_estimate(model_config, text_len: int, action_horizon: int, rows: int, model_split: int = 1) -> dict:
  """A rough analytic estimate (not XLA's: compiling a full-size step on a CPU takes minutes) of the
  activation bytes a train step keeps for its backward pass on `rows` examples (a device's micro-batch),
  per part: each trained image tower, the decoder, the float32 logits at the text positions (with their
  log-softmax and gradient), π0's action expert; every one of model.num_cameras frames goes through the towers
  and the decoder sees all their tokens. Frozen towers run forward only (nothing kept). With remat, one layer's
  full activations are live again while it is recomputed. Heads and MLP units split over the mesh's
  "model" axis (`model_split`) divide everything but the logits. A rough guide, not a bound: on the
  demo model (batch 32) XLA's CPU memory analysis of the whole step's temporaries is 0.7x (remat "dots") to
  1.4x (remat "none") of this plus the gradients."""
  m, policy = model_config, model_config.remat_policy
  item = jax.numpy.dtype(m.dtype).itemsize
  parts = {}

  def stack(name, depth, **dims):
    kept, full = _layer_elements(policy, **dims)
    parts[name] = rows * (depth * kept + (0 if policy == "none" else full)) * item // model_split

  frames = build.num_cameras(m)  # every camera's frame runs through the towers, attending within itself
  for tower in build.encoder(m).built():
    if tower.frozen:
      continue
    t = vit.options(tower.vit)
    n = (m.image_size // t["patch_size"]) ** 2 + int(t["cls_token"]) + t["num_registers"]
    attention = dict(heads=t["num_heads"], kv_heads=t["num_heads"], head_dim=t["width"] // t["num_heads"])
    stack(tower.name, t["depth"], tokens=frames * n, width=t["width"], mlp_dim=t["mlp_dim"], kv_len=n, **attention)
  llm = dict(m.llm)
  seq = build.num_image_tokens(m) + text_len
  dims = dict(heads=llm["num_heads"], kv_heads=llm["num_kv_heads"], head_dim=llm["head_dim"])
  stack("llm", llm["depth"], tokens=seq, width=llm["width"], mlp_dim=llm["mlp_dim"], kv_len=seq, **dims)
  parts["logits"] = rows * text_len * llm["vocab_size"] * 4 * 3  # logits, log-softmax, their gradient (float32)
  expert = m.action_expert
  if expert.width:
    n = action_horizon + 1  # the action tokens and the state token
    stack("expert", llm["depth"], tokens=n, width=expert.width, mlp_dim=expert.mlp_dim, kv_len=seq + n, **dims)
  return parts


def _size(n: float) -> str:
  for unit, scale in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
    if n >= scale:
      return f"{n / scale:.2f} {unit}"
  return f"{int(n)} B"


def _count(n: float) -> str:
  for unit, scale in (("B", 1e9), ("M", 1e6), ("K", 1e3)):
    if n >= scale:
      return f"{n / scale:.3g} {unit}"
  return str(int(n))


def _data_plan(config, sizes: list[dict]) -> tuple[dict, list[str]]:
  """The data mixture: robot / VL rows per batch, each dataset's size, share and epochs over the run."""
  data, steps = config.data, config.train.steps
  robot_rows = int(round(data.batch_size * data.robot_fraction))
  rows = {"robot": robot_rows, "vl": data.batch_size - robot_rows}
  lines = [
    f"data: global batch {data.batch_size} = {rows['robot']} robot + {rows['vl']} VL rows "
    f"(robot_fraction {data.robot_fraction})"
  ]
  for kind in ("robot", "vl"):
    entries = [s for s in sizes if s["kind"] == kind]
    total_weight = sum(s["weight"] for s in entries) or 1.0
    for s in entries:
      s["share"] = s["weight"] / total_weight
      seen = steps * rows[kind] * s["share"]  # examples drawn from it over the run
      unit = "steps" if kind == "robot" else "examples"
      size = s["steps"] if kind == "robot" else s["examples"]
      s["epochs"] = seen / size if size else None
      what = [f"{s['episodes']:,} episodes"] if s.get("episodes") is not None else []
      what += [f"{size:,} {unit}"] if size is not None else [f"{unit}: counted at conversion"]
      state = "converted" if s["converted"] else "not converted yet"
      epochs = f", {s['epochs']:.2f} epochs over the run" if s["epochs"] is not None else ""
      lines.append(
        f"  {kind:5s} {s['name']}: weight {s['weight']:g} ({s['share']:.0%} of the {kind} rows); "
        f"{', '.join(what)} ({state}){epochs}"
      )
  return {"rows": rows, "datasets": sizes}, lines


def _one_batch(config, prepared) -> dict:
  """One real host-local batch from the pipeline (in the main process: data.num_workers=0) -> {key: (shape,
  dtype)}."""
  batch_config = config.copy_and_resolve_references()
  batch_config.data.num_workers = 0
  it = iter(
    pipeline.make_dataset(
      batch_config, prepared, seed=config.seed, process_index=jax.process_index(), process_count=jax.process_count()
    )
  )
  try:
    batch = next(it)
  finally:
    if hasattr(it, "close"):
      it.close()
  flat = jax.tree_util.tree_flatten_with_path(batch)[0]
  return {sharding.path_str(path): (tuple(np.shape(x)), str(np.asarray(x).dtype)) for path, x in flat}


def plan(config, workdir: str, resuming: bool, printer=print) -> dict:
  """After check_setup: the run's plan, printed and returned, with nothing written (no run directory, no
  data generated or converted, no parameter materialised). Builds one real batch when every dataset is
  already converted in data.cache_dir (else says what is not, and skips it: a real run converts it
  first), the abstract train state (jax.eval_shape) on this host's mesh, and from them: parameters
  (total / trainable / frozen), per-device memory of params, gradients, optimizer state (from the
  abstract state's shapes, dtypes and shardings) and activations (activation_estimate: analytic),
  the data mixture with sizes, steps and checkpoint cadence."""
  t0 = time.perf_counter()
  out: dict = {"workdir": workdir, "resuming": resuming}
  lines = [f"dry run of {workdir}: every check passed; nothing is written"]
  prepared, missing = prepare.cached(config.data)
  if prepared is not None and config.tokenizer.action == "fast":
    bpe = prepare.fast_bpe_path(config, prepared)
    if os.path.exists(bpe):
      prepared.fast_bpe_path = bpe
    else:
      prepared, missing = None, [f"the FAST BPE {bpe} (trained on the converted data)"]
  if prepared is not None:
    preflight.resolve_data_dims(config, prepared)
  data_plan, data_lines = _data_plan(config, prepare.dataset_sizes(config.data))
  out["data"] = data_plan
  lines += data_lines
  if prepared is not None:
    t = time.perf_counter()
    out["batch"] = _one_batch(config, prepared)
    shapes = ", ".join(f"{k} {list(shape)} {dtype}" for k, (shape, dtype) in out["batch"].items())
    lines.append(f"one real batch (this process's rows) in {time.perf_counter() - t:.1f}s: {shapes}")
  else:
    out["batch"] = None
    lines.append(
      "one real batch: skipped, the data is not converted yet (a dry run converts nothing; training converts "
      "it first, into data.cache_dir): " + "; ".join(missing)
    )

  model_config = config.model
  if model_config.action_expert.width and not model_config.action_expert.action_dim:  # sizes from the data
    model_config = config.model.copy_and_resolve_references()
    model_config.action_expert.action_dim = 1
    model_config.action_expert.state_dim = 1 if model_config.action_expert.use_state else 0
    lines.append("  (π0's action expert counted with action/state size 1: the data's sizes are known once converted)")
  model = build.from_config(model_config)
  mesh = sharding.make_mesh(config.mesh)
  steps = config.train.steps
  tx = optimizer.make(config.optimizer, steps)
  rules = [tuple(r) for r in config.mesh.rules]
  lora = lora_lib.Spec.from_config(config.lora)
  abstract, _ = state_lib.abstract(model, tx, model_config.image_size, mesh, rules, lora)
  params = abstract["params"]
  mask = freezing.trainable_mask(params, config.optimizer.frozen)
  table = freezing.counts(params, mask)
  frozen_parts = [k for k in params if table[k]["frozen"]]
  counts = {k: surgery.count_params(v) for k, v in params.items()}
  frozen = table["total"]["frozen"]
  total = sum(counts.values())
  out["params"] = {"total": total, "trainable": total - frozen, "frozen": frozen, "parts": counts}
  lines.append(
    f"parameters: {_count(total)} total = {_count(total - frozen)} trainable + {_count(frozen)} frozen "
    f"({', '.join(frozen_parts) or 'none'}); " + ", ".join(f"{k} {_count(n)}" for k, n in counts.items())
  )
  lines += freezing.report(params, mask)

  devices = mesh.shape["data"] * mesh.shape["fsdp"]
  accum = config.train.grad_accum_steps
  rows = config.data.batch_size // devices // accum
  trained = freezing.partition(params, mask)[0]
  grad_item = 4 if accum > 1 else None  # accumulated in float32; else in the parameters' dtype
  grads = sum(
    math.prod(leaf.sharding.shard_shape(leaf.shape)) * (grad_item or np.dtype(leaf.dtype).itemsize)
    for leaf in jax.tree.leaves(trained)
  )
  activations = activation_estimate(
    model_config, config.tokenizer.max_text_len, config.tokenizer.action_horizon, rows, mesh.shape["model"]
  )
  memory = {
    "params": _bytes(params),
    "gradients": grads,
    "optimizer": _bytes(abstract["opt_state"]),
    "activations": sum(activations.values()),
  }
  memory["total"] = sum(memory.values())
  out["memory_per_device"] = dict(memory, activation_parts=activations)
  kind = jax.devices()[0].platform
  lines.append(
    f"memory per device, mesh {dict(mesh.shape)} over the {jax.device_count()} {kind} device(s) here "
    f"(XLA_FLAGS=--xla_force_host_platform_device_count=N JAX_PLATFORMS=cpu plans for N): "
    f"params {_size(memory['params'])} ({model_config.param_dtype}; frozen {model_config.frozen_dtype}), "
    f"gradients {_size(memory['gradients'])}, optimizer state {_size(memory['optimizer'])} (AdamW, float32), "
    f"activations ~{_size(memory['activations'])} (analytic estimate, remat {model_config.remat_policy!r}, "
    f"{rows} rows per device x {accum} micro-batch(es), {model_config.dtype}: "
    + ", ".join(f"{k} {_size(v)}" for k, v in activations.items())
    + f"); total ~{_size(memory['total'])}"
  )

  start = 0
  if resuming:
    ckpt_dir = os.path.join(workdir, "checkpoints")
    start = max(int(n) for n in os.listdir(ckpt_dir) if n.isdigit())
  every = config.train.checkpoint_every
  saves = sum(1 for s in range(start + 1, steps + 1) if s % every == 0 or s == steps)
  on_disk = _bytes(params, per_device=False) + _bytes(abstract["opt_state"], per_device=False)
  out["schedule"] = {"start": start, "steps": steps, "checkpoint_every": every, "checkpoints": saves}
  o = config.optimizer
  lines.append(
    f"steps: {start} -> {steps} ({'resuming' if resuming else 'new run'}), lr {o.lr:g} (warmup {o.warmup_steps}, "
    f"cosine), log every {config.train.log_every}; checkpoints every {every} steps: {saves} saves of ~"
    f"{_size(on_disk)} (params + optimizer state), the newest {config.train.keep_checkpoints} kept"
    + (f" + every {config.train.keep_every}th step" if config.train.keep_every else "")
  )
  out["seconds"] = time.perf_counter() - t0
  lines.append(f"planned in {out['seconds']:.1f}s; run the same command without --dry_run to train")
  for line in lines:
    printer(line, flush=True)
  return out
