"""Resolves the config's data section into ready-to-read datasets (generating / converting once).

robot entries: RLDS dir = data.rlds_root/path -> converted step shards in
  data.cache_dir/converted/<name>-<split>-<hash of the source path> (convert.py; reused when present)
vl entries: data.vl_root/path (LLaVA JSON with image paths relative to its folder, or parquet) ->
  converted shards in data.cache_dir/converted_vl/<name>-<hash of the input path> (convert_vl.py)
Entries are dicts with exactly config_schema.ROBOT_ENTRY / VL_ENTRY keys (checked first: check_entries).
"""

import dataclasses
import hashlib
import json
import os

import numpy as np

from genvla_jax import cli, config_schema
from genvla_jax.data import convert, convert_vl, demo, registry, rlds, sim_record, vl_corpus


class DataConfigError(cli.UserError, ValueError):
  """config.data names data that cannot be used; the message names the entry, the path and the fix."""


@dataclasses.dataclass
class RobotSet:
  name: str
  converted_dir: str
  weight: float
  stats: dict
  meta: dict


@dataclasses.dataclass
class VLSet:
  name: str
  converted_dir: str  # convert_vl.py output: ArrayRecord shards of (image bytes, question, answer)
  weight: float
  meta: dict


@dataclasses.dataclass
class PreparedData:
  robot: list[RobotSet]
  vl: list[VLSet]
  action_dim: int
  fast_bpe_path: str | None = None  # set by fast_bpe() for tokenizer.action="fast"

  @property
  def stats(self) -> dict:
    """{robot dataset name: statistics} (saved with checkpoints)."""
    return {r.name: r.stats for r in self.robot}


def converted_dir(data_config, rlds_dir: str, name: str, split: str) -> str:
  digest = hashlib.sha1(os.path.abspath(rlds_dir).encode()).hexdigest()[:10]
  return os.path.join(os.path.expanduser(data_config.cache_dir), "converted", f"{name}-{split}-{digest}")


def _robot_paths(data_config, entry, split=None) -> tuple[str, str, str]:
  """-> (RLDS dir, split, converted cache dir) of a config.data.robot entry."""
  split = split or entry["split"]
  rlds_dir = os.path.join(os.path.expanduser(data_config.rlds_root), entry["path"])
  return rlds_dir, split, converted_dir(data_config, rlds_dir, entry["name"], split)


def _vl_paths(data_config, entry) -> tuple[str, str, str]:
  """-> (input path, format, converted cache dir) of a config.data.vl entry."""
  source = os.path.join(os.path.expanduser(data_config.vl_root), entry["path"])
  digest = hashlib.sha1(os.path.abspath(source).encode()).hexdigest()[:10]
  return (
    source,
    entry["format"],
    os.path.join(os.path.expanduser(data_config.cache_dir), "converted_vl", f"{entry['name']}-{digest}"),
  )


def check_entries(data_config) -> None:
  """data.robot / data.vl entries have exactly their keys (config_schema.entry_problems): one
  DataConfigError naming every bad entry."""
  problems = config_schema.entry_problems("data.robot", data_config.robot)
  problems += config_schema.entry_problems("data.vl", data_config.vl)
  if problems:
    raise DataConfigError("config " + "; ".join(problems))


def check_sources(data_config, robot_split=None, with_vl: bool = True) -> None:
  """Every configured dataset exists (or is already converted in the cache), checked before any
  conversion: DataConfigError naming the config entry, the path and the fix. Reads no records."""
  check_entries(data_config)
  for entry in data_config.robot:
    rlds_dir, split, out = _robot_paths(data_config, entry, robot_split)
    if convert.completed_meta(out, convert.FORMAT_VERSION) is not None:
      continue  # converted before; convert() checks its provenance
    try:
      registry.get(entry["name"])
      rlds.check_dataset_dir(rlds_dir)
    except (KeyError, rlds.DatasetDirError) as err:
      why = err.args[0] if isinstance(err, KeyError) else err
      raise DataConfigError(
        f"config.data.robot entry {entry['name']!r} (data.rlds_root="
        f"{data_config.rlds_root}, path={entry['path']}): {why}"
      ) from err
  for entry in data_config.vl if with_vl else ():
    source, fmt, out = _vl_paths(data_config, entry)
    if convert.completed_meta(out, convert_vl.FORMAT_VERSION) is None:
      try:
        convert_vl.check_input(source, fmt)
      except convert_vl.VLInputError as err:
        raise DataConfigError(
          f"config.data.vl entry {entry['name']!r} (data.vl_root={data_config.vl_root}): {err}"
        ) from err


def prepare_robot(data_config, entry, split=None) -> RobotSet:
  rlds_dir, split, out = _robot_paths(data_config, entry, split)
  # the cache dir is the converter's own: a conversion of other provenance there is replaced
  meta = convert.convert(rlds_dir, entry["name"], split, out, on_bad=data_config.on_bad, overwrite=True)
  with open(os.path.join(out, "stats.json")) as f:
    stats = json.load(f)
  return RobotSet(entry["name"], out, float(entry["weight"]), stats, meta)


def prepare_vl(data_config, entry) -> VLSet:
  """A VL entry {name, path (relative to data.vl_root; a parquet glob is fine), format, weight} ->
  its converted shards in data.cache_dir/converted_vl/<name>-<hash of the input path> (made once)."""
  source, fmt, out = _vl_paths(data_config, entry)
  meta = convert_vl.convert_vl(source, fmt, out, on_bad=data_config.on_bad)
  return VLSet(entry["name"], out, float(entry["weight"]), meta)


def prepare(data_config, robot_split: str | None = None) -> PreparedData:
  """Generates demo data if configured, converts robot datasets if needed, loads VL lists. Every source
  is checked (check_sources) before the first conversion."""
  vl_only = data_config.robot_fraction == 0.0  # VLM pretraining: no robot data at all
  if vl_only and data_config.robot:
    names = ", ".join(e["name"] for e in data_config.robot)
    raise DataConfigError(
      f"data.robot_fraction=0 trains on VL data only, but data.robot lists {names}: set data.robot=[] "
      "(or a robot_fraction > 0 to co-train)"
    )
  if not data_config.robot and not vl_only:
    raise DataConfigError(
      "config.data.robot is empty: at least one robot dataset is needed (or data.robot_fraction=0 for VL only)"
    )
  check_entries(data_config)
  cotrain = data_config.robot_fraction < 1.0
  if cotrain and not data_config.vl:
    raise DataConfigError(
      "data.robot_fraction < 1 (co-training) but config.data.vl is empty: add VL entries, e.g. "
      """--set='data.vl=[{"name": "llava", "path": "llava/chat.json", "format": "llava_json", "weight": 1.0}]' """
      "(paths relative to data.vl_root), or set --config.data.robot_fraction=1"
    )
  if data_config.demo_dir:
    demo.ensure(data_config.demo_dir)
  if data_config.sim_dir:  # a simulated benchmark's expert demonstrations (sim_record.py)
    sim_record.ensure(data_config.sim_dir, **data_config.sim_record)
  if data_config.corpus_dir:  # the generated VL pretraining corpus and its tokenizer (vl_corpus.py)
    vl_corpus.ensure(data_config.corpus_dir, **data_config.corpus)
  check_sources(data_config, robot_split, with_vl=cotrain)
  robot = [prepare_robot(data_config, e, robot_split) for e in data_config.robot]
  dims = {r.name: r.meta["action_dim"] for r in robot}
  if len(set(dims.values())) > 1:
    raise DataConfigError(f"robot datasets in one run must share the action dimension, got {dims}")
  vl_sets = []
  if cotrain:
    vl_sets = [prepare_vl(data_config, e) for e in data_config.vl]
  return PreparedData(robot, vl_sets, next(iter(dims.values()), 0))


def fast_bpe(config, prepared: PreparedData, max_chunks: int = 20_000, seed: int = 0) -> str:
  """Trains the FAST BPE on the robot training data's normalized action chunks [H,D] (a random sample
  of up to `max_chunks` per dataset), once: cached under data.cache_dir/fast/ by the converted data and
  the settings. Sets and returns prepared.fast_bpe_path."""
  from genvla_jax.data import pipeline, stats as stats_lib
  from genvla_jax.tokenizers import fast_actions

  tok = config.tokenizer
  key = json.dumps(
    [
      [r.converted_dir for r in prepared.robot],
      tok.action_horizon,
      tok.fast_scale,
      tok.fast_vocab_size,
      max_chunks,
      seed,
    ]
  )
  path = os.path.join(
    os.path.expanduser(config.data.cache_dir), "fast", hashlib.sha1(key.encode()).hexdigest()[:12] + ".model"
  )
  if not os.path.exists(path):
    rng = np.random.default_rng(seed)
    chunks = []
    for r in prepared.robot:
      source = pipeline.StepChunkSource(r.converted_dir, tok.action_horizon)
      for i in rng.permutation(len(source))[:max_chunks]:
        chunks.append(stats_lib.normalize(source[int(i)]["actions"], r.stats["action"]))
    fast_actions.train_bpe(np.stack(chunks), path, tok.action_horizon, tok.fast_scale, tok.fast_vocab_size)
  prepared.fast_bpe_path = path
  return path
