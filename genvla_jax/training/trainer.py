"""The training run: train(config, workdir, monitors=...) = cheap checks (check_setup: run dir, pretrained
architecture, config consistency, tokenizer, every data source; all problems reported at once, in
seconds) -> data prepared -> mesh, state (fresh, imported or resumed) -> jitted step loop with
checkpoints; `python -m genvla_jax.train` (train.py) runs it with the monitors the config asks for.
`train(..., dry_run=True)` (`--dry_run`) stops after the checks with the run's plan (plan(): one real batch
when the data is already converted, the abstract state, parameters, per-device memory, data mixture,
steps, checkpoints) and writes nothing. With config.pretrained.architecture="checkpoint" the checks take
config.model's architecture from the pretrained checkpoint (before the model is built; the saved config
records it). Imports nothing of eval/ or inference/: what to measure besides the loss comes in as
`loop.Monitor`s.

Run directory layout:
  config.json            the resolved config
  assets/tokenizer.model assets/stats.json   (tokenizer and action statistics the policy uses;
  assets/fast_bpe.model                      with tokenizer.action="fast", the BPE trained on the data)
  checkpoints/<step>/    orbax: params, train (step, opt_state), data (iterator), meta (config, stats); with
                         LoRA / optimizer.frozen params holds the trainable leaves only and meta a reference
                         to the base they complete (training/frozen_base.py)
  metrics.jsonl          one JSON object per logged step
  tensorboard/           the same metrics as TensorBoard scalars (training/metric_writers.py; wandb/ when
                         config.train.wandb.mode is offline or online)
Restarting the same command resumes from the latest checkpoint (same step count, same data order).
SIGTERM (preemption) makes the loop save a checkpoint and exit cleanly.
"""

import json
import os
import shutil
import signal
import threading
import time
from typing import Sequence

import jax
import numpy as np

from genvla_jax import heads
from genvla_jax.data import pipeline, prepare
from genvla_jax.models import build, lora as lora_lib, surgery
from genvla_jax.pretrained import api as pretrained_api
from genvla_jax.training import checkpoint, distributed, flops as flops_lib, freezing, frozen_base, loop, metric_writers
from genvla_jax.training import optimizer
from genvla_jax.training import run_dir
from genvla_jax.training import plan as plan_lib, preflight, sharding
from genvla_jax.training import state as state_lib, step as step_lib


def prepare_data(config):
  """Converts / generates the run's data once: process 0 first, then the others (which find it done on
  a shared file system, or convert their own copy on local disks)."""

  def run():
    prepared = prepare.prepare(config.data)
    if config.tokenizer.action == "fast":
      prepare.fast_bpe(config, prepared)
    return prepared

  if jax.process_count() == 1:
    return run()
  from jax.experimental import multihost_utils

  prepared = run() if jax.process_index() == 0 else None
  multihost_utils.sync_global_devices("genvla_jax: data prepared by process 0")
  return prepared or run()


def checkpoint_meta(config, prepared) -> dict:
  """What every checkpoint carries besides arrays, so that it describes itself."""
  meta = {
    "config": json.loads(config.to_json()),
    "stats": prepared.stats,
    "action_dim": prepared.action_dim,
    "tokenizer": "assets/tokenizer.model",
  }
  if prepared.fast_bpe_path:
    meta["fast_bpe"] = "assets/fast_bpe.model"
  return meta


def asset_sources(config, prepared) -> dict[str, str]:
  """{asset name: the file this start copies into WORKDIR/assets}."""
  sources = {"tokenizer.model": os.path.expanduser(config.tokenizer.path)}
  if prepared.fast_bpe_path:
    sources["fast_bpe.model"] = prepared.fast_bpe_path
  return sources


def write_assets(config, prepared, workdir):
  """Copies the tokenizer and writes stats/config into the run directory (process 0)."""
  assets = os.path.join(workdir, "assets")
  os.makedirs(assets, exist_ok=True)
  shutil.copyfile(os.path.expanduser(config.tokenizer.path), os.path.join(assets, "tokenizer.model"))
  if prepared.fast_bpe_path:
    shutil.copyfile(prepared.fast_bpe_path, os.path.join(assets, "fast_bpe.model"))
  with open(os.path.join(assets, "stats.json"), "w") as f:
    json.dump(prepared.stats, f, indent=1)
  with open(os.path.join(workdir, "config.json"), "w") as f:
    f.write(config.to_json(indent=1))


def initial_params(config, model, mesh, rules, printer):
  """Imported PaliGemma weights when config.pretrained.path is set (else None: random init)."""
  fmt, path = config.pretrained.format, config.pretrained.path
  if not path:
    return None
  preflight.check_pretrained(config)  # (train() ran it before the data; callers of this function may not have)
  path = os.path.expanduser(path)
  t = time.perf_counter()
  params = pretrained_api.load(
    fmt, path, model, config.model.image_size, mesh, rules, rng=jax.random.PRNGKey(config.seed)
  )
  printer(f"initialised from {fmt} checkpoint {path} in {time.perf_counter() - t:.1f}s", flush=True)
  return params


class _StopSignal:
  """Turns SIGTERM into a flag the loop checks between steps."""

  def __init__(self):
    self.requested = False
    self._previous = signal.signal(signal.SIGTERM, self._handle) if _main_thread() else None

  def _handle(self, signum, frame):
    del signum, frame
    self.requested = True

  def restore(self):
    if self._previous is not None:
      signal.signal(signal.SIGTERM, self._previous)


def _any_process(flag: bool) -> bool:
  """True on every process if `flag` is true on any: all processes must stop at the same step (the
  checkpoint save is collective), even when only some of them received SIGTERM."""
  if jax.process_count() == 1:
    return flag
  from jax.experimental import multihost_utils

  return bool(np.any(multihost_utils.process_allgather(np.array([flag], np.int32))))


def _main_thread():
  return threading.current_thread() is threading.main_thread()


def train(
  config,
  workdir: str,
  *,
  monitors: Sequence[loop.Monitor] = (),
  stop_after: int | None = None,
  printer=print,
  dry_run: bool = False,
  plan_options: plan_lib.Options | None = None,
) -> list[dict]:
  """Trains (or resumes) in `workdir`. Every check that needs no long work runs first (check_setup: all
  problems reported at once). `monitors`: measurements logged every `monitor.every` steps
  (genvla_jax.train.monitors(config) builds those config.train asks for). `stop_after`: stop (with a
  checkpoint) after this many steps in this call, as a preemption would. `dry_run`: check, print the plan
  (plan(); `plan_options`: how it plans memory) and return [the plan] without writing anything. Returns the
  logged metric records of this call."""
  started = distributed.initialize(config.distributed)  # before anything touches a JAX backend
  if jax.process_index() != 0:
    printer = lambda *a, **k: None
  printer(started, flush=True)
  workdir = os.path.abspath(os.path.expanduser(workdir))
  # Checks that need no data, before any data preparation (seconds, not an hour in); with
  # pretrained.architecture="checkpoint" they also set config.model from the checkpoint.
  resuming = preflight.check_setup(config, workdir, printer)
  if dry_run:
    return [plan_lib.plan(config, workdir, resuming, printer, plan_options)]
  created = not os.path.exists(workdir)
  try:
    return _train(config, workdir, resuming, monitors, stop_after, printer)
  except BaseException:
    if (
      created
      and jax.process_index() == 0
      and not run_dir.has_checkpoint(workdir)
      and not os.path.exists(os.path.join(workdir, "metrics.jsonl"))
    ):
      shutil.rmtree(workdir, ignore_errors=True)  # a failed set-up leaves no half-made run behind
    raise


def _train(config, workdir, resuming, monitors, stop_after, printer):
  """train() after the config checks."""
  prepared = prepare_data(config)
  preflight.resolve_data_dims(config, prepared)
  meta = checkpoint_meta(config, prepared)
  if resuming:  # the run's assets stay as they are; they must be what this start would write
    run_dir.check_assets(workdir, asset_sources(config, prepared))
    run_dir.check_stats(workdir, prepared.stats)
  if jax.process_index() == 0:
    os.makedirs(workdir, exist_ok=True)
    if resuming:
      with open(os.path.join(workdir, "config.json"), "w") as f:  # only resumable fields can differ
        f.write(config.to_json(indent=1))
    else:
      write_assets(config, prepared, workdir)

  model = build.from_config(config.model)
  lora = lora_lib.Spec.from_config(config.lora)
  mesh = sharding.make_mesh(config.mesh)
  total = config.train.steps
  tx = optimizer.make(config.optimizer, total)
  rules = [tuple(r) for r in config.mesh.rules]
  ckpt = checkpoint.Checkpointer(
    os.path.join(workdir, "checkpoints"), keep=config.train.keep_checkpoints, keep_every=config.train.keep_every
  )
  data_it = iter(
    pipeline.make_dataset(
      config, prepared, seed=config.seed, process_index=jax.process_index(), process_count=jax.process_count()
    )
  )
  trainable_only = frozen_base.trainable_only(config)  # checkpoints: trainable leaves + a reference to the base
  state, start = None, 0
  if not ckpt.steps() or trainable_only:  # a fresh start, or the base an adapters-only checkpoint completes
    params = initial_params(config, model, mesh, rules, printer)
    state, shardings, _ = state_lib.create(
      model, tx, config.model.image_size, mesh, jax.random.PRNGKey(config.seed), rules, params=params, lora=lora
    )
    del params
  if ckpt.steps():
    abstract, shardings = state_lib.abstract(model, tx, config.model.image_size, mesh, rules, lora)
    base = None if state is None else state["params"]  # (a whole checkpoint, from before, ignores it)
    latest, state = ckpt.restore_newest_good(
      lambda s: ckpt.restore(s, abstract, data_it, base_params=base),
      warn=lambda m: printer(f"warning: {m}", flush=True),
    )
    del base
    start = int(state["step"])
    printer(f"resumed from {workdir}/checkpoints/{latest} (step {start})", flush=True)
  base_ref = frozen_base.reference(config, state["params"]) if trainable_only else None
  if base_ref is not None:
    printer(
      f"checkpoints: the trainable parameters only ({len(base_ref['leaves'])} frozen leaves rebuilt at restore "
      f"from {frozen_base.describe(base_ref)}, fingerprint {base_ref['fingerprint']})",
      flush=True,
    )
  metrics_path = os.path.join(workdir, "metrics.jsonl")
  if jax.process_index() == 0:
    dropped = run_dir.truncate_metrics(metrics_path, start)
    if dropped:
      printer(f"metrics.jsonl: dropped {dropped} record(s) after step {start} (re-logged by this run)", flush=True)
  printer(
    f"model: {surgery.count_params(state['params']) / 1e6:.2f} M params "
    f"(dual encoder: {config.model.dual_encoder}, actions: {config.tokenizer.action}); "
    f"mesh {dict(mesh.shape)}; global batch {config.data.batch_size} "
    f"(robot fraction {config.data.robot_fraction})",
    flush=True,
  )
  printer(freezing.summary(state["params"], config.optimizer.frozen, lora), flush=True)

  head = heads.from_config(config)
  train_step = step_lib.jit_train_step(
    step_lib.make_train_step(
      model,
      tx,
      optimizer.schedule(config.optimizer, total),
      config.train.grad_accum_steps,
      config.seed,
      head=head,
      cameras=pipeline.cameras_of(config.data),  # names of the camera_missing_fraction metrics
      frozen=config.optimizer.frozen,
      lora=lora,
    ),
    shardings,
    mesh,
  )
  batch_size, text_len = config.data.batch_size, config.tokenizer.max_text_len
  peak = flops_lib.peak_flops(jax.devices()[0], config.train.peak_flops_per_device)
  writers = []
  if jax.process_index() == 0:  # TensorBoard (+ wandb), hiding steps > start an earlier attempt logged
    writers = metric_writers.for_run(config.train, workdir, start, json.loads(config.to_json()))
  progress = loop.Progress(
    total_steps=total,
    start_step=start,
    global_batch=batch_size,
    metrics_path=metrics_path,
    log_every=config.train.log_every,
    printer=printer,
    tokens_per_example=build.num_image_tokens(config.model) + text_len,
    flops_per_step=flops_lib.model_flops(
      config.model, batch_size, text_len, config.tokenizer.action_horizon, head=head
    ),
    peak_flops=peak * jax.device_count() if peak else None,
    writers=writers,
  )
  stop = _StopSignal()
  records, step = [], start
  try:
    while step < total:
      t = time.perf_counter()
      batch = sharding.to_global(next(data_it), mesh)
      progress.add_data_wait(time.perf_counter() - t)
      if step == start:  # compile once, ahead of time, and say what XLA counts
        t_compile = time.perf_counter()
        train_step = train_step.lower(state, batch).compile()
        xla_flops = flops_lib.compiled_flops(train_step)
        printer(
          f"train step compiled in {time.perf_counter() - t_compile:.1f}s; model FLOPs/step "
          f"{progress.flops_per_step:.3g} (XLA, per device: {xla_flops or float('nan'):.3g}); "
          f"peak {'unknown (no MFU)' if not peak else f'{peak:.3g} FLOP/s per device'}",
          flush=True,
        )
      state, metrics = train_step(state, batch)
      step += 1
      preempted = _any_process(stop.requested)
      stopping = preempted or (stop_after is not None and step - start >= stop_after)
      saving = step % config.train.checkpoint_every == 0 or step == total or stopping
      if progress.should_log(step) or saving:  # logging checks the loss is finite before any save
        records.append(progress.log(step, metrics))
      for monitor in monitors:
        if step % monitor.every == 0:
          params = lora_lib.merged(state["params"], lora.alpha)  # (the model's params: adapters merged)
          records.append(progress.log_extra(step, monitor.measure(params), monitor.label))
      if saving:
        ckpt.save(step, state, data_it, meta, base=base_ref)
      if stopping:
        printer(f"stopping at step {step} ({'SIGTERM' if preempted else 'stop_after'}); checkpoint saved", flush=True)
        break
  finally:
    ckpt.wait()
    ckpt.close()
    stop.restore()
    if hasattr(data_it, "close"):
      data_it.close()
    metric_writers.close_all(writers)
  return records
