"""The dry run (`train --dry_run`): the run's plan from the abstract state — one real batch when the data is
already converted, parameters (total / trainable / frozen), per-device memory (params, gradients, optimizer
state from shapes and shardings; activations: an analytic estimate), the data mixture, steps and checkpoints.
No parameter is materialised and nothing is written.

The memory plan (memory_plan) with `--plan_compile` (Options.compile): the trainer's own train step
(training/step.py, same jit, shardings and donation) lowered and compiled on abstract inputs (the abstract
state and a batch of ShapeDtypeStructs: nothing allocated), and XLA's memory analysis of it read: the total is
its peak (arguments + non-donated outputs + temporaries), "activations" its temporaries less the gradients
(everything else the step holds: activations kept for the backward pass, merged LoRA kernels and their
gradients, casts, optimizer temporaries). The CPU compiler gives the analysis for full-size shapes (tens of
seconds for π0+); a backend that gives none leaves the analytic estimate, and every number says where it came
from. The total is checked against device sizes (fits: peak <= JAX's default .75 of the device). The CPU's
numbers are the CPU program's: it computes bfloat16 matmuls in float32, so for a bf16-compute config it
overstates what a GPU needs (benchmarks/RESULTS.md: the H100 calibration)."""

import dataclasses
import math
import os
import time

import jax
import numpy as np
from genvla_jax import heads
from genvla_jax.data import pipeline, prepare
from genvla_jax.models import build, lora as lora_lib, surgery, vit
from genvla_jax.training import freezing, frozen_base, optimizer
from genvla_jax.training import preflight, sharding
from genvla_jax.training import state as state_lib
from genvla_jax.training import step as step_lib


def _bytes(tree, per_device: bool = True) -> int:
  """Bytes of an abstract tree: on one device (its shard of every leaf), or in all."""
  total = 0
  for leaf in jax.tree.leaves(tree):
    shape = leaf.sharding.shard_shape(leaf.shape) if per_device and leaf.sharding is not None else leaf.shape
    total += math.prod(shape) * np.dtype(leaf.dtype).itemsize
  return total


def checkpoint_bytes(config, params, opt_state) -> int:
  """Bytes one checkpoint of this run writes (abstract trees, all shards): the parameters and optimizer state,
  or, when the run keeps adapters-only checkpoints (frozen_base.trainable_only: LoRA or optimizer.frozen), the
  trainable parameters and optimizer state only (the frozen base is rebuilt from its source at restore)."""
  saved = _bytes(params, per_device=False) + _bytes(opt_state, per_device=False)
  if frozen_base.trainable_only(config):
    saved -= _bytes(list(frozen_base.frozen_leaves(params, config.optimizer.frozen).values()), per_device=False)
  return saved


def _checkpoint_holds(config) -> str:
  if frozen_base.trainable_only(config):
    return "trainable params + optimizer state; the frozen base rebuilt at restore"
  return "params + optimizer state"


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
  """A rough analytic estimate (the fallback of memory_plan: no compile) of the
  activation bytes a train step keeps for its backward pass on `rows` examples (a device's micro-batch),
  per part: each trained image tower, the decoder, the float32 logits at the text positions (with their
  log-softmax and gradient), π0's action expert; every one of model.num_cameras frames goes through the towers
  and the decoder sees all their tokens. Frozen towers run forward only (nothing kept). With remat, one layer's
  full activations are live again while it is recomputed. Heads and MLP units split over the mesh's
  "model" axis (`model_split`) divide everything but the logits. A rough guide, not a bound: XLA's CPU
  memory analysis of the compiled step (memory_plan with Options.compile: temporaries less the gradients) is
  0.84x (remat "dots"), 0.97x ("full") and 1.5x ("none") of this on the demo model (batch 32, float32) and
  1.24x on full-size π0+ (batch 8, float32, "none"; 1.08x with the decoder frozen) (benchmarks/RESULTS.md)."""
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


# -- the memory plan ---------------------------------------------------------------------------------------

DEVICE_GB = (24, 40, 48, 80)  # device sizes the plan checks (GiB: a "24 GB" card holds 24 GiB)
# JAX preallocates this share of a GPU for its allocator (XLA_PYTHON_CLIENT_MEM_FRACTION's default .75); the
# rest holds the CUDA context, cuDNN / cuBLAS workspaces and other processes. A step "fits" a device when its
# peak is at most this share, "fits at .95" when it needs XLA_PYTHON_CLIENT_MEM_FRACTION=.95.
MEM_FRACTION, MEM_FRACTION_MAX = 0.75, 0.95


@dataclasses.dataclass(frozen=True)
class Options:
  """How the dry run plans memory (`train --dry_run --plan_compile --device_gb=24,40`). `compile`: lower and
  compile the real train step on abstract inputs and read XLA's memory analysis (nothing allocated; up to
  about a minute at full size on a 2-core CPU) instead of the analytic activation estimate; `device_gb`: the
  device sizes (GiB) the total is checked against."""

  compile: bool = False
  device_gb: tuple[float, ...] = DEVICE_GB


def fits(total_bytes: float, device_gb: float) -> str:
  """ "yes" (within JAX's default MEM_FRACTION of the device), "at .95" (needs XLA_PYTHON_CLIENT_MEM_FRACTION=.95)
  or "no"."""
  if total_bytes <= MEM_FRACTION * device_gb * (1 << 30):
    return "yes"
  return f"at {MEM_FRACTION_MAX:g}" if total_bytes <= MEM_FRACTION_MAX * device_gb * (1 << 30) else "no"


def _with_data_sizes(config):
  """π0's action / state sizes come from the data: before it is converted, a copy with size 1 (the count is
  then off by the expert's in/out projections of one action dimension); else `config` itself."""
  expert = config.model.action_expert
  if not expert.width or expert.action_dim:
    return config
  config = config.copy_and_resolve_references()
  config.model.action_expert.action_dim = 1
  config.model.action_expert.state_dim = 1 if expert.use_state else 0
  return config


def abstract_batch(config, mesh, shapes: dict | None = None) -> dict:
  """The train step's global batch (data/pipeline.py's fields) as ShapeDtypeStructs with the batch sharding:
  `shapes` ({key: (shape, dtype)} of one real host-local batch, _one_batch) with data.batch_size rows, or,
  without one, from the config: image uint8 [B,S,S,3] ([B,C,S,S,3] + image_mask with C cameras), tokens and
  the masks [B,T], actions [B,H,D], action_pad [B,H], row flags [B], state [B,state_token_dim] for π0."""
  rows = config.data.batch_size
  if shapes is None:
    m, tok = config.model, config.tokenizer
    cameras, size, text, horizon = build.num_cameras(m), m.image_size, tok.max_text_len, tok.action_horizon
    image = (cameras, size, size, 3) if cameras > 1 else (size, size, 3)
    shapes = {"image": (image, "uint8"), "tokens": ((text,), "int32")}
    shapes.update({k: ((text,), "bool") for k in ("input_mask", "ar_mask", "loss_mask")})
    shapes.update({k: ((), "bool") for k in ("is_robot", "paraphrased", "vl_truncated")})
    shapes.update(
      num_clipped=((), "int32"),
      actions=((horizon, m.action_expert.action_dim or 1), "float32"),
      action_pad=((horizon,), "bool"),
    )
    if cameras > 1:
      shapes["image_mask"] = ((cameras,), "bool")
    state = heads.from_config(config).state_token_dim
    if state:
      shapes["state"] = ((state,), "float32")
    shapes = {k: ((rows, *shape), dtype) for k, (shape, dtype) in shapes.items()}
  batch_sharding = sharding.batch_sharding(mesh)
  return {
    k: jax.ShapeDtypeStruct((rows, *shape[1:]), np.dtype(dtype), sharding=batch_sharding)
    for k, (shape, dtype) in shapes.items()
  }


def compiled_memory(config, model, tx, lora, abstract_state, state_shardings, mesh, batch) -> dict | None:
  """Lowers and compiles the trainer's train step (training/step.py: make_train_step + jit_train_step, the
  same shardings and donation) on the abstract state and batch and returns XLA's memory analysis per device
  ({argument, output, alias, temp, generated_code}_bytes, `peak` = argument + output - alias + temp +
  generated code: the inputs live throughout, the donated state's outputs reuse its buffers, temp holds
  the gradients, activations and every other intermediate) and `seconds` (the compile); None when the
  backend gives no analysis. Nothing is allocated."""
  head = heads.from_config(config)
  train_step = step_lib.jit_train_step(
    step_lib.make_train_step(
      model,
      tx,
      optimizer.schedule(config.optimizer, config.train.steps),
      config.train.grad_accum_steps,
      config.seed,
      head=head,
      cameras=pipeline.cameras_of(config.data),
      frozen=config.optimizer.frozen,
      lora=lora,
    ),
    state_shardings,
    mesh,
  )
  t = time.perf_counter()
  compiled = train_step.lower(abstract_state, batch).compile()
  seconds = time.perf_counter() - t
  try:
    analysis = compiled.memory_analysis()
  except NotImplementedError:
    analysis = None
  if analysis is None:
    return None
  names = ("argument", "output", "alias", "temp", "generated_code")
  out = {f"{n}_bytes": int(getattr(analysis, f"{n}_size_in_bytes")) for n in names}
  out["peak"] = (
    out["argument_bytes"] + out["output_bytes"] - out["alias_bytes"] + out["temp_bytes"] + out["generated_code_bytes"]
  )
  out["seconds"] = seconds
  return out


def memory_plan(config, options: Options = Options(), batch_shapes: dict | None = None, printer=print):
  """Per-device memory of config's train step on this host's mesh -> (memory, abstract params, abstract state,
  printed lines). memory: params, gradients, optimizer (from the abstract state's shapes, dtypes and
  shardings), activations (analytic: activation_estimate; with options.compile: XLA's temp bytes less the
  gradients, i.e. activations and every other temporary), total (the sum; compiled: XLA's peak, which adds the
  batch and the step's non-donated outputs), `sources` (where each number came from), `activation_parts`
  (the analytic estimate's parts, always), `compiled` (compiled_memory, or None) and `fits` ({device GiB:
  fits()}). `batch_shapes`: one real batch's (else built from the config, abstract_batch)."""
  model_config = config.model
  model = build.from_config(model_config)
  mesh = sharding.make_mesh(config.mesh)
  tx = optimizer.make(config.optimizer, config.train.steps)
  rules = [tuple(r) for r in config.mesh.rules]
  lora = lora_lib.Spec.from_config(config.lora)
  abstract, state_shardings = state_lib.abstract(model, tx, model_config.image_size, mesh, rules, lora)
  params = abstract["params"]
  mask = freezing.trainable_mask(params, config.optimizer.frozen)
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
  sources = dict.fromkeys(("params", "gradients", "optimizer"), "abstract state")
  sources.update(activations="analytic", total="analytic")
  compiled = None
  if options.compile:
    printer(
      "compiling the train step on abstract inputs for XLA's memory analysis (nothing allocated; a full-size "
      "model takes up to about a minute on a 2-core CPU) ...",
      flush=True,
    )
    compiled = compiled_memory(
      config, model, tx, lora, abstract, state_shardings, mesh, abstract_batch(config, mesh, batch_shapes)
    )
    if compiled is None:
      printer("  the backend gives no memory analysis: the analytic estimate stands", flush=True)
    else:
      printer(f"  compiled in {compiled['seconds']:.1f}s", flush=True)
      memory.update(activations=compiled["temp_bytes"] - grads, total=compiled["peak"])
      sources.update(activations="XLA temp - gradients", total="XLA peak")
  memory.update(
    sources=sources,
    activation_parts=activations,
    compiled=compiled,
    fits={gb: fits(memory["total"], gb) for gb in options.device_gb},
  )
  kind = jax.devices()[0].platform
  lines = [
    f"memory per device, mesh {dict(mesh.shape)} over the {jax.device_count()} {kind} device(s) here "
    f"(XLA_FLAGS=--xla_force_host_platform_device_count=N JAX_PLATFORMS=cpu plans for N), "
    f"{rows} rows per device x {accum} micro-batch(es), remat {model_config.remat_policy!r}, {model_config.dtype}:",
    f"  params {_size(memory['params'])} ({model_config.param_dtype}; frozen {model_config.frozen_dtype}; "
    f"abstract state), gradients {_size(grads)} (trainable leaves), optimizer state {_size(memory['optimizer'])} "
    f"(AdamW, float32; abstract state)",
  ]
  analytic = f"~{_size(sum(activations.values()))} analytic estimate: " + ", ".join(
    f"{k} {_size(v)}" for k, v in activations.items()
  )
  if compiled is None:
    lines.append(f"  activations {analytic}; total ~{_size(memory['total'])} (analytic)")
  else:
    batch_bytes = compiled["argument_bytes"] - _bytes(abstract)
    lines.append(
      f"  activations and other temporaries {_size(memory['activations'])} (XLA: temp {_size(compiled['temp_bytes'])} "
      f"less the gradients; the {analytic}); batch {_size(batch_bytes)}; total {_size(memory['total'])} (XLA: "
      f"arguments {_size(compiled['argument_bytes'])} + outputs {_size(compiled['output_bytes'])} - donated "
      f"{_size(compiled['alias_bytes'])} + temp + code {_size(compiled['generated_code_bytes'])})"
    )
  if compiled is not None and kind == "cpu" and model_config.dtype == "bfloat16":
    lines.append(
      "  note: this CPU computes bfloat16 matmuls in float32 (it keeps float32 copies of the stacked weights and "
      "float32 activations), so for model.dtype bfloat16 these numbers overstate a GPU's: full-size π0+ on an "
      "H100 peaked at 0.6-0.8x of them (benchmarks/RESULTS.md)"
    )
  lines.append(
    f"  fits (peak <= {MEM_FRACTION:g} x device, JAX's default XLA_PYTHON_CLIENT_MEM_FRACTION; 'at "
    f"{MEM_FRACTION_MAX:g}': with XLA_PYTHON_CLIENT_MEM_FRACTION={MEM_FRACTION_MAX:g}): "
    + ", ".join(f"{gb:g} GiB {verdict}" for gb, verdict in memory["fits"].items())
    + ("" if compiled else " (from the analytic total; --plan_compile for XLA's)")
  )
  return memory, params, abstract, lines


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


def plan(config, workdir: str, resuming: bool, printer=print, options: "Options | None" = None) -> dict:
  """After check_setup: the run's plan, printed and returned, with nothing written (no run directory, no
  data generated or converted, no parameter materialised). Builds one real batch when every dataset is
  already converted in data.cache_dir (else says what is not, and skips it: a real run converts it
  first), the abstract train state (jax.eval_shape) on this host's mesh, and from them: parameters
  (total / trainable / frozen), per-device memory of params, gradients, optimizer state (from the
  abstract state's shapes, dtypes and shardings) and activations (activation_estimate: analytic),
  the data mixture with sizes, steps and checkpoint cadence. `options` (Options): with `compile`, the
  memory comes from XLA's analysis of the compiled train step (memory_plan), and the total is checked
  against `device_gb`."""
  options = options or Options()
  original = config
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

  config = _with_data_sizes(config)
  if config is not original:
    lines.append("  (π0's action expert counted with action/state size 1: the data's sizes are known once converted)")
  for line in lines:  # before a compile's seconds
    printer(line, flush=True)
  lines = []
  memory, params, abstract, memory_lines = memory_plan(config, options, out["batch"], printer)
  table = freezing.counts(params, freezing.trainable_mask(params, config.optimizer.frozen))
  counts = {k: surgery.count_params(v) for k, v in params.items()}
  frozen = table["total"]["frozen"]
  total = sum(counts.values())
  frozen_parts = [k for k in params if table[k]["frozen"]]
  out["params"] = {"total": total, "trainable": total - frozen, "frozen": frozen, "parts": counts}
  lines.append(
    f"parameters: {_count(total)} total = {_count(total - frozen)} trainable + {_count(frozen)} frozen "
    f"({', '.join(frozen_parts) or 'none'}); " + ", ".join(f"{k} {_count(n)}" for k, n in counts.items())
  )
  lines += freezing.report(params, freezing.trainable_mask(params, config.optimizer.frozen))
  out["memory_per_device"] = memory
  lines += memory_lines

  steps, start = config.train.steps, 0
  if resuming:
    ckpt_dir = os.path.join(workdir, "checkpoints")
    start = max(int(n) for n in os.listdir(ckpt_dir) if n.isdigit())
  every = config.train.checkpoint_every
  saves = sum(1 for s in range(start + 1, steps + 1) if s % every == 0 or s == steps)
  on_disk = checkpoint_bytes(config, params, abstract["opt_state"])
  out["schedule"] = {"start": start, "steps": steps, "checkpoint_every": every, "checkpoints": saves}
  out["checkpoint_bytes"] = on_disk
  o = config.optimizer
  lines.append(
    f"steps: {start} -> {steps} ({'resuming' if resuming else 'new run'}), lr {o.lr:g} (warmup {o.warmup_steps}, "
    f"cosine), log every {config.train.log_every}; checkpoints every {every} steps: {saves} saves of ~"
    f"{_size(on_disk)} ({_checkpoint_holds(config)}), the newest {config.train.keep_checkpoints} kept"
    + (f" + every {config.train.keep_every}th step" if config.train.keep_every else "")
  )
  out["seconds"] = time.perf_counter() - t0
  lines.append(f"planned in {out['seconds']:.1f}s; run the same command without --dry_run to train")
  for line in lines:
    printer(line, flush=True)
  return out
