"""Pre-flight checks of a training run: everything that needs no long work (run directory, pretrained
architecture, config consistency (model.num_cameras = the cameras data.cameras feeds), tokenizer, every data
source), all problems reported at once (`SetupError` lists them, one per line) before any data is converted.
With config.pretrained.architecture="checkpoint" `check_setup` takes config.model's architecture from the
checkpoint first. `resolve_data_dims`: the head's data-derived sizes, checked when the data is there."""

import json
import os
import re
from typing import Sequence
import jax
import numpy as np
from genvla_jax import cli, config_schema, heads
from genvla_jax.data import pipeline, prepare, transforms
from genvla_jax.models import build, remat
from genvla_jax.pretrained import api as pretrained_api
from genvla_jax.training import freezing, metric_writers, run_dir
from genvla_jax.training import sharding
from genvla_jax.tokenizers import actions as action_tokenizers, factory, prompt as prompt_lib


class ConfigError(cli.UserError, ValueError):
  """Config fields that contradict each other or the files they name."""


class SetupError(ConfigError):
  """Several problems with a run's setup, found together before any long work; `problems`: one line each."""

  def __init__(self, problems: Sequence[str]):
    self.problems = list(problems)
    super().__init__(
      f"{len(self.problems)} problems with this run's setup (nothing was converted or written; fix them all "
      "and start again):\n" + "\n".join(f"  - {p}" for p in self.problems)
    )


def raise_problems(errors: Sequence[cli.UserError]) -> None:
  """Nothing when `errors` is empty; one error raised as it is (its own type and one-line message);
  several as one SetupError listing them, a line each (repeated lines once)."""
  unique = list({str(e): e for e in errors}.values())
  if len(unique) == 1:
    raise unique[0]
  if unique:
    raise SetupError([str(e) for e in unique])


def settings_problems(config) -> list[str]:
  """Config fields that must agree with each other (and with this machine's devices), one line each;
  reads no file."""
  problems = build.attention_problems(config.model)  # (cuDNN on this backend, soft-capping, ...)
  rules = config_schema.entry_problems("mesh.rules", config.mesh.rules)
  if rules:
    problems.append("config " + "; ".join(rules))
  drift = config.train.drift
  if drift.every and not drift.data:
    problems.append("config.train.drift.every > 0 needs config.train.drift.data (CIFAR-10 dir or image folder)")
  elif (
    drift.every
    and not os.path.exists(os.path.expanduser(drift.data))
    and not prepare.is_generated(config.data, drift.data)
  ):
    problems.append(f"config.train.drift.data not found: {drift.data} (a CIFAR-10 dir or image folder)")
  try:
    head = heads.head_name(config)
  except ValueError as e:
    problems.append(str(e))
    head = None
  width, action = config.model.action_expert.width, config.tokenizer.action
  if head is not None and (head == "flow") != bool(width):
    problems.append(
      f"model.head={head!r} with model.action_expert.width={width}: the flow head (π0) needs width > 0 "
      "(configs/pi0_baseline.py); token heads need width 0"
    )
  if head is not None and (head == "flow") != (action == "flow"):
    problems.append(
      f"model.head={head!r} with tokenizer.action={action!r}: the flow head has no action "
      'tokens (tokenizer.action="flow"); token heads need an action tokenizer'
    )
  if action not in action_tokenizers.ACTIONS:
    problems.append(f"tokenizer.action={action!r}; choose one of {', '.join(action_tokenizers.ACTIONS)}")
  if config.tokenizer.action_horizon < 1:
    problems.append(f"tokenizer.action_horizon={config.tokenizer.action_horizon}: the action chunk needs >= 1 step")
  if config.model.remat_policy not in ("none", *remat.POLICIES):
    problems.append(
      f"model.remat_policy={config.model.remat_policy!r}; choose one of none, {', '.join(remat.POLICIES)}"
    )
  for key in ("steps", "log_every", "checkpoint_every", "grad_accum_steps", "keep_checkpoints"):
    if config.train[key] < 1:
      problems.append(f"train.{key}={config.train[key]} must be >= 1")
  return problems + camera_problems(config) + batch_problems(config)


def camera_problems(config) -> list[str]:
  """model.num_cameras is the number of cameras the data feeds (data.cameras, read by transforms.cameras_of:
  [] or one name = 1): the model's token count (FLOPs, memory, the policy's inputs) and the batches agree."""
  cameras = config.data.cameras
  if not isinstance(cameras, (list, tuple)):  # (prepare.config_problems says so)
    return []
  fed, expected = len(transforms.cameras_of(config.data)), build.num_cameras(config.model)
  if fed == expected:
    return []
  return [
    f"model.num_cameras={expected} but data.cameras={list(cameras)!r} feeds {fed} camera(s) per example: set "
    f"--config.model.num_cameras={fed}, or list {expected} camera(s) in data.cameras (in the order the model sees them)"
  ]


def batch_problems(config) -> list[str]:
  """The global batch splits over the mesh (data x fsdp devices, then grad_accum_steps micro-batches)
  and its robot / VL sides over the processes (pipeline.local_batch_split)."""
  try:
    mesh = sharding.make_mesh(config.mesh)
  except ValueError as e:
    return [f"{e} (config.mesh; -1 takes all remaining devices)"]
  batch, accum = config.data.batch_size, max(1, config.train.grad_accum_steps)
  rows = mesh.shape["data"] * mesh.shape["fsdp"]
  problems = []
  if batch % rows:
    problems.append(
      f"data.batch_size={batch} does not split over the mesh's {rows} data x fsdp devices: give a multiple of {rows}"
    )
  elif (batch // rows) % accum:
    problems.append(
      f"data.batch_size={batch} gives {batch // rows} rows per device, which do not split into "
      f"train.grad_accum_steps={accum} micro-batches"
    )
  if 0.0 <= config.data.robot_fraction <= 1.0:  # (outside: prepare.config_problems says so)
    try:
      pipeline.local_batch_split(config.data, jax.process_count())
    except ValueError as e:
      problems.append(str(e))
  return problems


def check_settings(config):
  """Settings that must agree (settings_problems), checked before any data is prepared: one ConfigError
  listing them, a line each."""
  problems = settings_problems(config)
  if problems:
    raise ConfigError("\n".join(problems))


def tokenizer_problems(config) -> list[str]:
  """The tokenizer exists, unless the configured demo / simulator data / VL corpus generates it."""
  path = os.path.abspath(os.path.expanduser(config.tokenizer.path)) if config.tokenizer.path else ""
  if not path:
    return [
      "config.tokenizer.path is empty: give --config.tokenizer.path=TOKENIZER.model "
      "(PaliGemma's SentencePiece model for released weights)"
    ]
  if not os.path.exists(path) and not prepare.is_generated(config.data, path):
    return [f"tokenizer not found: {path} (config.tokenizer.path)"]
  return []


def check_tokenizer(config):
  problems = tokenizer_problems(config)
  if problems:
    raise ConfigError(problems[0])


def tokenizer_fit_problems(config, action_dim: int | None) -> list[str]:
  """The tokenizer file against the model and the action chunks (when the file exists): its ids fit
  model.llm.vocab_size, the action tokenizer's reserved ids fit (bins / FAST), and, when the data's action
  size is known (`action_dim`, from converted data), a prompt with an empty instruction plus the answer for
  a chunk of zeros fits tokenizer.max_text_len (else the first example that does not fit stops the run)."""
  tok = config.tokenizer
  path = os.path.expanduser(tok.path)
  if not os.path.isfile(path) or tok.action == "fast":  # FAST: its BPE comes from the converted data
    return []
  try:
    text_tokenizer, action_tokenizer = factory.make_tokenizers(config, action_dim or 1)
  except ValueError as e:
    return [f"{e} (config.tokenizer / model.llm)"]
  except Exception as e:  # SentencePiece raises RuntimeError / OSError on a file that is no model
    return [f"cannot read the tokenizer {path}: {e} (config.tokenizer.path)"]
  if not action_dim or action_tokenizer is None:
    return []
  prompt = re.sub(r"\{[^}]*\}", "", config.data.prompt)
  prefix = len(prompt_lib.encode_prefix(text_tokenizer, prompt, tok.prompt_separator))
  answer = len(action_tokenizer.encode(np.zeros((tok.action_horizon, action_dim), np.float32))[0]) + 1
  if prefix + answer > tok.max_text_len:
    return [
      f"tokenizer.max_text_len={tok.max_text_len} is too short for the robot examples: the prompt without its "
      f"instruction takes {prefix} tokens and the {tok.action} answer for a chunk of {tok.action_horizon} x "
      f"{action_dim} zeros {answer}; raise tokenizer.max_text_len to more than {prefix + answer} or shorten "
      "tokenizer.action_horizon"
    ]
  return []


def pretrained_problems(config, check_match: bool = True) -> list[str]:
  """config.pretrained against config.model, from the checkpoint's config / tensor headers only. With
  pretrained.architecture="checkpoint" the checkpoint's architecture is first written into config.model
  (pretrained_api.from_checkpoint: image_size, img, llm incl. the vocabulary size), so the run builds, and
  saves in its config, the checkpoint's model. `check_match`: also name what still disagrees (a resumed
  run does not: its own checkpoints hold its weights)."""
  fmt, path, source = config.pretrained.format, config.pretrained.path, config.pretrained.architecture
  if source not in pretrained_api.ARCHITECTURE_SOURCES:
    return [
      f"config.pretrained.architecture={source!r}; choose 'config' (config.model must match the checkpoint) "
      "or 'checkpoint' (config.model's architecture is taken from it)"
    ]
  if not path:
    if source == "checkpoint":
      return [
        "config.pretrained.architecture='checkpoint' takes the architecture from config.pretrained.path, which is "
        "empty: give --config.pretrained.path=CHECKPOINT (and .format), or architecture=config"
      ]
    return []
  if fmt not in pretrained_api.FORMATS:
    return [f"config.pretrained.format={fmt!r}; choose one of {', '.join(pretrained_api.FORMATS)}"]
  path = os.path.expanduser(path)
  if not os.path.exists(path):
    return [f"pretrained checkpoint not found: {path} (config.pretrained.path)"]
  try:
    if source == "checkpoint":
      for field, value in pretrained_api.from_checkpoint(fmt, path, config.model).items():
        config.model[field] = value
    problems = pretrained_api.mismatches(fmt, path, config.model) if check_match else []
  except (cli.UserError, OSError, ValueError, KeyError) as e:
    return [f"cannot read the architecture of the {fmt} checkpoint {path}: {e} (config.pretrained)"]
  if problems:
    fix = "" if source == "checkpoint" else " (or --config.pretrained.architecture=checkpoint to take it from there)"
    return [f"config.model does not match the pretrained checkpoint {path}{fix}: " + "; ".join(problems)]
  return []


def check_pretrained(config):
  """A pretrained checkpoint's architecture matches config.model (reads its config only); with
  pretrained.architecture="checkpoint" config.model takes the checkpoint's first (pretrained_problems)."""
  problems = pretrained_problems(config)
  if problems:
    raise ConfigError(problems[0])


def _writable_problem(path: str, what: str) -> str | None:
  """`path` can be written: it is a writable directory, or its nearest existing parent is one."""
  existing = path
  while not os.path.exists(existing):
    existing = os.path.dirname(existing)
  if not os.path.isdir(existing):
    return f"{what} {path}: {existing} is a file, so nothing can be made there; give another path"
  if not os.access(existing, os.W_OK | os.X_OK):
    return f"{what} {path}: {existing} is not writable; give a directory you can write to"
  return None


def workdir_problems(workdir: str) -> list[str]:
  """The run directory is a directory or can be made (run_dir.check_workdir), and is writable."""
  try:
    run_dir.check_workdir(workdir)
  except run_dir.RunDirError as e:
    return [str(e)]
  problem = _writable_problem(workdir, "--workdir")
  return [problem] if problem else []


def check_setup(config, workdir: str, printer=print) -> bool:
  """Every check that needs no data conversion and no parameter, before any long work (seconds): the run
  directory (writable; bound to its config and tokenizer when it has checkpoints), the pretrained checkpoint's
  architecture (headers only; with pretrained.architecture="checkpoint" written into config.model here),
  config consistency (heads, tokenizer, mesh and batch, data section: entries, dataset names, co-training
  without VL data), optimizer.frozen / lora patterns against the model's parameter paths (shapes only), wandb,
  the tokenizer file and its fit, every data source and its layout, the cache
  directory. Every problem found is reported at once (raise_problems: one error, a line each).
  -> True when the run resumes (it has a checkpoint)."""
  errors: list[cli.UserError] = []

  def add(lines, kind=ConfigError):
    errors.extend(kind(line) for line in lines)

  bad_workdir = workdir_problems(workdir)
  add(bad_workdir, run_dir.RunDirError)
  resuming = not bad_workdir and run_dir.has_checkpoint(workdir)
  add(pretrained_problems(config, check_match=not resuming))  # first: it may set config.model
  if not bad_workdir:
    try:
      run_dir.check_config(workdir, json.loads(config.to_json()), printer)
    except run_dir.RunDirError as e:
      errors.append(e)
  add(settings_problems(config))
  add(freezing.config_problems(config))  # optimizer.frozen / lora.targets against the model's param paths
  try:
    metric_writers.check_wandb(config.train.wandb)
  except cli.UserError as e:
    errors.append(e)
  bad_tokenizer = tokenizer_problems(config)
  add(bad_tokenizer)
  tokenizer = os.path.expanduser(config.tokenizer.path)
  if resuming and not bad_tokenizer and os.path.isfile(tokenizer):  # a resumed run keeps its own tokenizer
    try:
      run_dir.check_assets(workdir, {"tokenizer.model": tokenizer})
    except run_dir.RunDirError as e:
      errors.append(e)
      bad_tokenizer = [str(e)]
  bad_data = prepare.config_problems(config.data)
  add(bad_data, prepare.DataConfigError)
  cotrain = config.data.robot_fraction < 1.0
  add(prepare.source_problems(config.data, with_vl=cotrain, skip_generated=True), prepare.DataConfigError)
  if not bad_tokenizer and not bad_data:
    try:
      prepared, _ = prepare.cached(config.data)
    except prepare.DataConfigError as e:
      errors.append(e)
      prepared = None
    add(tokenizer_fit_problems(config, prepared.action_dim if prepared else None))
  cache = _writable_problem(os.path.abspath(os.path.expanduser(config.data.cache_dir)), "data.cache_dir")
  add([cache] if cache else [])
  raise_problems(errors)
  return resuming


def resolve_data_dims(config, prepared):
  """The action head's sizes that come from the data (π0's action expert: action and state sizes) are
  written into the run's config (saved with every checkpoint), so the policy rebuilds the same model."""
  try:
    heads.from_config(config).fit_to_data(config, prepared)
  except ValueError as e:
    raise ConfigError(str(e)) from e
