"""Resolves the config's data section into ready-to-read datasets (generating / converting once).

robot entries: RLDS dir = data.rlds_root/path -> converted step shards in
  data.cache_dir/converted/<name>-<split>-<hash of the source path> (convert.py; reused when present)
vl entries: data.vl_root/path (LLaVA JSON with image paths relative to its folder, or parquet) ->
  converted shards in data.cache_dir/converted_vl/<name>-<hash of the input path> (convert_vl.py)
A path that names a finished converter output (`python -m genvla_jax.data.convert --out=DIR`,
`convert_lerobot --out=DIR` or `convert_vl --out=DIR`: its meta.json) is read as it is, never converted
again (its split and dataset must be the entry's: a LeRobot conversion's dataset is its registry LeRobot
entry, "lerobot" by default). A LeRobot dataset root is converted by the user first (convert_lerobot);
data.cameras names the cameras training takes from every robot dataset, in order (each checked here). Conversions print
where they go and their progress (`printer`); a robot dataset converts its parts in CONVERT_WORKERS
processes, and VL corpora larger than PARALLEL_MIN_BYTES convert side by side.
Entries are dicts with exactly config_schema.ROBOT_ENTRY / VL_ENTRY keys (checked first: check_entries).

Checks come as lists of problems (one line each, naming the entry and the fix) so that the trainer reports
every problem of a run's setup at once, before any conversion: config_problems (the data section on its
own: entries, dataset names, co-training without VL data, ...) and source_problems (every dataset folder /
corpus file exists, or is converted in the cache; reads no records). Sources under a folder the run
generates on first use (data.demo_dir / sim_dir / corpus_dir) are checked only once it has been made.
cached() is what a dry run reads instead of converting: the converted datasets when every one is already in
the cache, else what is missing.
"""

import concurrent.futures
import dataclasses
import glob
import hashlib
import json
import multiprocessing
import os

import numpy as np

from genvla_jax import cli, config_schema, progress
from genvla_jax.data import convert, convert_vl, demo, lerobot, registry, rlds, sim_record, vl_corpus


CONVERT_WORKERS = max(1, min(os.cpu_count() or 1, 8))  # processes converting one robot dataset's parts
PARALLEL_MIN_BYTES = 64 << 20  # VL inputs this large (together) convert in processes, one per corpus


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
  """-> (RLDS dir, split, converted dir) of a config.data.robot entry: the cache's, or the path itself when
  it is a finished `data.convert --out` (then RLDS dir == converted dir)."""
  split = split or entry["split"]
  rlds_dir = os.path.join(os.path.expanduser(data_config.rlds_root), os.path.expanduser(entry["path"]))
  if convert.finished(rlds_dir) is not None:
    return rlds_dir, split, rlds_dir
  return rlds_dir, split, converted_dir(data_config, rlds_dir, entry["name"], split)


def _vl_paths(data_config, entry) -> tuple[str, str, str]:
  """-> (input path, format, converted dir) of a config.data.vl entry: the cache's, or the path itself when
  it is a finished `convert_vl --out` (then input == converted dir)."""
  source = os.path.join(os.path.expanduser(data_config.vl_root), os.path.expanduser(entry["path"]))
  if convert_vl.finished(source) is not None:
    return source, entry["format"], source
  digest = hashlib.sha1(os.path.abspath(source).encode()).hexdigest()[:10]
  return (
    source,
    entry["format"],
    os.path.join(os.path.expanduser(data_config.cache_dir), "converted_vl", f"{entry['name']}-{digest}"),
  )


def _preconverted_problem(entry, meta: dict, split: str, where: str) -> str | None:
  """A finished `data.convert --out` named by a robot entry holds that entry's dataset and split, or why not."""
  try:
    dataset = registry.resolve(entry["name"])
  except registry.UnknownDatasetError:
    return None  # config_problems names it
  have = (meta.get("dataset"), meta.get("split"))
  if have == (dataset, split):
    return None
  return (
    f"config.data.robot entry {entry['name']!r}: {where} is a conversion of {have[0]!r} split {have[1]!r}, "
    f"the entry asks {dataset!r} split {split!r}: give the conversion of that split (python -m "
    + (
      f"genvla_jax.data.convert_lerobot --root=DIR --dataset={dataset} --split={split} --out=OUT)"
      if registry.is_lerobot(dataset)
      else f"genvla_jax.data.convert --dataset={dataset} --split={split} --out=DIR)"
    )
    + " or fix the entry's name / split"
  )


def _published(entry) -> tuple[str, "convert_vl.Published"] | None:
  """(download folder, its published layout) of a VL entry made from a corpus option (config_lib.published_vl:
  name in convert_vl.PUBLISHED, path ROOT/<its published path>), else None."""
  spec = convert_vl.PUBLISHED.get(entry["name"])
  suffix = os.sep + spec.path if spec else None
  if spec is None or not entry["path"].endswith(suffix):
    return None
  return entry["path"][: -len(suffix)] or os.sep, spec


def corpus_options() -> str:
  """'llava=DIR,vqasynth=DIR,...': the corpus options of configs/pi0_plus.py:full (convert_vl.PUBLISHED)."""
  return ",".join(f"{name}=DIR" for name in convert_vl.PUBLISHED)


def entries_problem(data_config) -> str | None:
  """data.robot / data.vl entries have exactly their keys (config_schema.entry_problems): one line naming
  every bad entry, or None."""
  problems = config_schema.entry_problems("data.robot", data_config.robot)
  problems += config_schema.entry_problems("data.vl", data_config.vl)
  return "config " + "; ".join(problems) if problems else None


def check_entries(data_config) -> None:
  """DataConfigError naming every bad data.robot / data.vl entry (entries_problem)."""
  problem = entries_problem(data_config)
  if problem:
    raise DataConfigError(problem)


def _well_formed(entries, keys) -> list[dict]:
  return [e for e in entries if isinstance(e, dict) and set(keys) <= set(e)]


def config_problems(data_config) -> list[str]:
  """What is wrong with config.data on its own (no file is read): the robot / VL balance, entries with the
  wrong keys, unknown dataset names (registry.resolve) or VL formats, weights, on_bad. One line each."""
  problems = []
  fraction = data_config.robot_fraction
  if not 0.0 <= fraction <= 1.0:
    problems.append(f"data.robot_fraction={fraction} must be in [0, 1] (1: robot only, 0: VL only)")
  vl_only = fraction == 0.0  # VLM pretraining: no robot data at all
  if vl_only and data_config.robot:
    names = ", ".join(str(e.get("name", "?")) if isinstance(e, dict) else repr(e) for e in data_config.robot)
    problems.append(
      f"data.robot_fraction=0 trains on VL data only, but data.robot lists {names}: set data.robot=[] "
      "(or a robot_fraction > 0 to co-train)"
    )
  if not data_config.robot and not vl_only:
    problems.append(
      "config.data.robot is empty: at least one robot dataset is needed (or data.robot_fraction=0 for VL only)"
    )
  entries = entries_problem(data_config)
  if entries:
    problems.append(entries)
  if fraction < 1.0 and not data_config.vl:
    problems.append(
      f"data.robot_fraction={fraction} < 1 (co-training) but config.data.vl is empty: give the paper's VL "
      f"corpora's download folders as options of the config, --config=configs/pi0_plus.py:full,{corpus_options()} "
      "(any of them), or VL entries, e.g. "
      """--set='data.vl=[{"name": "llava", "path": "llava/chat.json", "format": "llava_json", "weight": 1.0}]' """
      "(paths relative to data.vl_root), or set --config.data.robot_fraction=1 (robot data only)"
    )
  for entry in _well_formed(data_config.robot, config_schema.ROBOT_ENTRY):
    try:
      registry.resolve(entry["name"], f"config.data.robot entry path={entry['path']}")
    except registry.UnknownDatasetError as err:
      problems.append(str(err))
  for entry in _well_formed(data_config.vl, config_schema.VL_ENTRY):
    if entry["format"] not in convert_vl.FORMATS:
      problems.append(
        f"config.data.vl entry {entry['name']!r}: unknown format {entry['format']!r}; "
        f"choose one of {', '.join(convert_vl.FORMATS)}"
      )
  for key in ("robot", "vl"):
    keys = config_schema.ROBOT_ENTRY if key == "robot" else config_schema.VL_ENTRY
    for entry in _well_formed(data_config[key], keys):
      if not isinstance(entry["weight"], (int, float)) or entry["weight"] <= 0:
        problems.append(f"config.data.{key} entry {entry['name']!r}: weight {entry['weight']!r} must be a number > 0")
  if data_config.on_bad not in ("skip", "fail"):
    problems.append(f"data.on_bad={data_config.on_bad!r}: choose 'skip' or 'fail'")
  cameras = data_config.cameras
  if not isinstance(cameras, (list, tuple)) or not all(isinstance(c, str) and c for c in cameras):
    problems.append(
      f"data.cameras={cameras!r}: a list of camera names, in the order the model sees them, e.g. "
      '["front", "wrist"] ([]: the primary camera)'
    )
  elif len(set(cameras)) != len(cameras):
    problems.append(f"data.cameras={list(cameras)!r} names a camera twice: list each camera once")
  return problems


def camera_problems(data_config, meta: dict, where: str) -> list[str]:
  """Every camera config.data.cameras lists (transforms.cameras_of) that a converted robot dataset (its
  meta.json) lacks, one line each."""
  from genvla_jax.data import transforms  # here: importing prepare loads no model code

  problems = [convert.camera_problem(meta, name, where) for name in transforms.cameras_of(data_config)]
  return [p for p in problems if p]


def generated_dirs(data_config) -> list[str]:
  """The folders this config generates on first use (demo data, simulator demos, the VL corpus)."""
  dirs = (data_config.demo_dir, data_config.sim_dir, data_config.corpus_dir)
  return [os.path.abspath(os.path.expanduser(d)) for d in dirs if d]


def is_generated(data_config, path: str) -> bool:
  """True when `path` lies in a folder the run generates on first use (checked after generating it)."""
  path = os.path.abspath(os.path.expanduser(path))
  return any(path == d or path.startswith(d + os.sep) for d in generated_dirs(data_config))


def source_problems(data_config, robot_split=None, with_vl: bool = True, skip_generated: bool = False) -> list[str]:
  """Every configured dataset exists (or is already converted in the cache): one line per missing or
  malformed source, naming the config entry, the path and the fix. Reads no records. Entries whose keys
  or names are wrong are config_problems' (skipped here). `skip_generated`: sources under generated_dirs
  are not checked (they are made by prepare() first)."""
  problems = []
  for entry in _well_formed(data_config.robot, config_schema.ROBOT_ENTRY):
    rlds_dir, split, out = _robot_paths(data_config, entry, robot_split)
    if out == rlds_dir:  # a finished data.convert --out: read as it is
      problem = _preconverted_problem(entry, convert.finished(out), split, f"path={entry['path']}")
      problems += [problem] if problem else []
      continue
    if convert.completed_meta(out, convert.FORMAT_VERSION) is not None:
      continue  # converted before; convert() checks its provenance
    older = convert.existing_output(rlds_dir)["meta"] if os.path.isdir(rlds_dir) else None
    if older is not None:  # a data.convert --out of another format version
      problems.append(
        f"config.data.robot entry {entry['name']!r}: {rlds_dir} was converted by another genvla_jax (format "
        f"{older.get('format_version')}, now {convert.FORMAT_VERSION}): convert it again (python -m "
        "genvla_jax.data.convert ... --overwrite) or give the RLDS dataset directory"
      )
      continue
    if skip_generated and is_generated(data_config, rlds_dir):
      continue
    if lerobot.is_lerobot_root(rlds_dir) or registry.is_lerobot(entry["name"]):
      problems.append(
        f"config.data.robot entry {entry['name']!r}: path={entry['path']} is "
        + ("a LeRobot dataset" if lerobot.is_lerobot_root(rlds_dir) else "no finished LeRobot conversion")
        + ": convert it first (python -m genvla_jax.data.convert_lerobot --root=DIR --out=OUT; --dataset="
        "lerobot or a registry LeRobot entry) and give OUT as the path, the entry's name = that --dataset"
      )
      continue
    try:
      registry.get(entry["name"])
    except registry.UnknownDatasetError:
      continue  # config_problems names it
    try:
      rlds.check_dataset_dir(rlds_dir)
    except rlds.DatasetDirError as err:
      problems.append(
        f"config.data.robot entry {entry['name']!r} (data.rlds_root={data_config.rlds_root}, "
        f"path={entry['path']}): {err}"
      )
  for entry in _well_formed(data_config.vl, config_schema.VL_ENTRY) if with_vl else ():
    source, fmt, out = _vl_paths(data_config, entry)
    if convert.completed_meta(out, convert_vl.FORMAT_VERSION) is not None:
      continue
    if fmt not in convert_vl.FORMATS or (skip_generated and is_generated(data_config, source)):
      continue
    try:
      convert_vl.check_input(source, fmt)
    except convert_vl.VLInputError as err:
      published = _published(entry)
      if published is None:
        problems.append(f"config.data.vl entry {entry['name']!r} (data.vl_root={data_config.vl_root}): {err}")
        continue
      root, spec = published
      problems.append(
        f"option {entry['name']}={root}: {root} holds no {spec.path}; expected {spec.layout} "
        f"(give the corpus's download folder: --config=configs/pi0_plus.py:full,{entry['name']}=DIR)"
      )
  return problems


def _raise(problems: list[str]) -> None:
  if problems:
    raise DataConfigError("\n".join(problems))


def check_sources(data_config, robot_split=None, with_vl: bool = True) -> None:
  """Every configured dataset exists (or is already converted in the cache), checked before any
  conversion: one DataConfigError naming every bad entry, its path and the fix (a line each)."""
  check_entries(data_config)
  _raise(source_problems(data_config, robot_split, with_vl))


def prepare_robot(data_config, entry, split=None, printer=None) -> RobotSet:
  """A robot entry -> its converted step shards: a finished `data.convert --out` named by the entry's path as
  it is, else converted once into data.cache_dir (in CONVERT_WORKERS processes; `printer`: where it goes and
  the progress, part by part)."""
  rlds_dir, split, out = _robot_paths(data_config, entry, split)
  say = printer or (lambda *a, **k: None)
  if out == rlds_dir:  # converted before by the user: read as it is
    meta = convert.finished(out)
    problem = _preconverted_problem(entry, meta, split, out)
    if problem:
      raise DataConfigError(problem)
    meta = convert._check_reuse(meta, data_config.on_bad)
    how = " (converted before: read as it is)"
  else:
    how = ""
    cached_meta = convert.completed_meta(out, convert.FORMAT_VERSION)
    older = ((cached_meta or {}).get("provenance") or {}).get("converter_version")
    if cached_meta is None:
      say(f"converting robot dataset {entry['name']!r} ({rlds_dir}, split {split}) -> {out}", flush=True)
    elif older != convert.CONVERTER_VERSION:
      say(
        f"converting robot dataset {entry['name']!r} again ({rlds_dir}, split {split}) -> {out}: the cache was "
        f"made by converter version {older}, this is {convert.CONVERTER_VERSION}",
        flush=True,
      )
    # the cache dir is the converter's own: a conversion of other provenance there is replaced
    meta = convert.convert(
      rlds_dir,
      entry["name"],
      split,
      out,
      on_bad=data_config.on_bad,
      overwrite=True,
      num_workers=CONVERT_WORKERS,
      printer=printer,
    )
  _raise(camera_problems(data_config, meta, f"config.data.robot entry {entry['name']!r} ({out})"))
  say(
    f"robot dataset {entry['name']!r}: {meta['num_episodes']} episodes, {meta['num_steps']} steps in {out}{how}",
    flush=True,
  )
  with open(os.path.join(out, "stats.json")) as f:
    stats = json.load(f)
  return RobotSet(entry["name"], out, float(entry["weight"]), stats, meta)


def prepare_vl(data_config, entry, printer=None) -> VLSet:
  """A VL entry {name, path (relative to data.vl_root; a parquet glob is fine), format, weight} ->
  its converted shards: a finished `convert_vl --out` named by the path as it is, else made once in
  data.cache_dir/converted_vl/<name>-<hash of the input path> (`printer`: where it goes and the progress)."""
  source, fmt, out = _vl_paths(data_config, entry)
  converting = convert_vl.finished(out) is None
  if out == source:  # converted before by the user: read as it is
    meta = convert_vl.finished(out)
  else:  # made once in the cache (convert_vl checks a finished one is of this input and format)
    if converting and printer:
      printer(f"converting VL corpus {entry['name']!r} ({source}, {fmt}) -> {out}", flush=True)
    meta = convert_vl.convert_vl(source, fmt, out, on_bad=data_config.on_bad, printer=printer)
  if printer and not converting:  # (a conversion prints its own last line: what went where)
    how = " (converted before: read as it is)" if out == source else ""
    printer(f"VL corpus {entry['name']!r}: {meta['num_examples']} examples in {out}{how}", flush=True)
  return VLSet(entry["name"], out, float(entry["weight"]), meta)


def _input_bytes(source: str) -> int:
  """Size of a VL input (a file, or every file a parquet glob matches); 0 when unreadable."""
  files = [source] if os.path.isfile(source) else glob.glob(source)
  return sum(os.path.getsize(f) for f in files if os.path.isfile(f))


def _convert_vl_job(args) -> str:
  """One VL corpus converted in a worker process (prepare_vls): -> its out dir."""
  source, fmt, out, on_bad, verbose = args
  convert_vl.convert_vl(source, fmt, out, on_bad=on_bad, printer=print if verbose else None)
  return out


def prepare_vls(data_config, printer=None) -> list[VLSet]:
  """Every VL entry converted (prepare_vl); corpora still to convert whose inputs add up to PARALLEL_MIN_BYTES or
  more convert side by side, one process each (small ones convert here: a process start costs more)."""
  todo = []
  for entry in data_config.vl:
    source, fmt, out = _vl_paths(data_config, entry)
    if out != source and convert_vl.finished(out) is None:
      todo.append((entry, source, fmt, out))
  if len(todo) > 1 and sum(_input_bytes(source) for _, source, _, _ in todo) >= PARALLEL_MIN_BYTES:
    workers = min(len(todo), CONVERT_WORKERS)
    for entry, source, fmt, out in todo:
      if printer:
        printer(f"converting VL corpus {entry['name']!r} ({source}, {fmt}) -> {out}", flush=True)
    if printer:
      printer(f"converting {len(todo)} VL corpora in {workers} processes", flush=True)
    jobs = [(source, fmt, out, data_config.on_bad, printer is not None) for _, source, fmt, out in todo]
    context = multiprocessing.get_context("spawn")  # no fork of a multithreaded parent
    with concurrent.futures.ProcessPoolExecutor(workers, mp_context=context) as pool:
      try:
        list(pool.map(_convert_vl_job, jobs))
      except BaseException:
        pool.shutdown(wait=True, cancel_futures=True)
        raise
  return [prepare_vl(data_config, e, printer) for e in data_config.vl]


def prepare(data_config, robot_split: str | None = None, printer=print) -> PreparedData:
  """Generates demo data if configured, converts robot datasets if needed, loads VL lists. The data
  section (config_problems) and every source (source_problems) are checked before the first conversion;
  all their problems come in one DataConfigError, a line each. `printer`: every dataset's converted
  folder, and each conversion's progress (None: silent)."""
  _raise(config_problems(data_config))
  cotrain = data_config.robot_fraction < 1.0
  if data_config.demo_dir:
    demo.ensure(data_config.demo_dir)
  if data_config.sim_dir:  # a simulated benchmark's expert demonstrations (sim_record.py)
    sim_record.ensure(data_config.sim_dir, **data_config.sim_record)
  if data_config.corpus_dir:  # the generated VL pretraining corpus and its tokenizer (vl_corpus.py)
    vl_corpus.ensure(data_config.corpus_dir, **data_config.corpus)
  check_sources(data_config, robot_split, with_vl=cotrain)
  robot = [prepare_robot(data_config, e, robot_split, printer) for e in data_config.robot]
  dims = {r.name: r.meta["action_dim"] for r in robot}
  if len(set(dims.values())) > 1:
    raise DataConfigError(f"robot datasets in one run must share the action dimension, got {dims}")
  vl_sets = prepare_vls(data_config, printer) if cotrain else []
  return PreparedData(robot, vl_sets, next(iter(dims.values()), 0))


def cached(data_config, robot_split: str | None = None) -> tuple[PreparedData | None, list[str]]:
  """What prepare() would return, read from the cache only (nothing generated or converted; the
  conversions' provenance is not re-checked): (PreparedData, []) when every dataset is converted in
  data.cache_dir, else (None, [one line per dataset that is not])."""
  missing, robot, vl_sets = [], [], []
  for entry in data_config.robot:
    rlds_dir, split, out = _robot_paths(data_config, entry, robot_split)
    meta = convert.completed_meta(out, convert.FORMAT_VERSION)
    if meta is None:
      missing.append(f"robot {entry['name']} ({rlds_dir} split {split}) -> {out}")
      continue
    _raise(camera_problems(data_config, meta, f"config.data.robot entry {entry['name']!r} ({out})"))
    with open(os.path.join(out, "stats.json")) as f:
      robot.append(RobotSet(entry["name"], out, float(entry["weight"]), json.load(f), meta))
  for entry in data_config.vl if data_config.robot_fraction < 1.0 else ():
    source, _, out = _vl_paths(data_config, entry)
    meta = convert_vl.finished(out)
    if meta is None:
      missing.append(f"VL {entry['name']} ({source}) -> {out}")
      continue
    vl_sets.append(VLSet(entry["name"], out, float(entry["weight"]), meta))
  if missing:
    return None, missing
  dims = {r.name: r.meta["action_dim"] for r in robot}
  if len(set(dims.values())) > 1:
    raise DataConfigError(f"robot datasets in one run must share the action dimension, got {dims}")
  return PreparedData(robot, vl_sets, next(iter(dims.values()), 0)), []


def source_episodes(data_config, entry, robot_split: str | None = None) -> int | None:
  """Episodes in a robot entry's split as its dataset_info.json lists them (None when unreadable):
  the size of a dataset that is not converted yet, read without opening a shard."""
  rlds_dir, split, _ = _robot_paths(data_config, entry, robot_split)
  try:
    with open(os.path.join(rlds_dir, "dataset_info.json")) as f:
      splits = {s["name"]: s for s in json.load(f).get("splits", [])}
    return int(sum(int(n) for n in splits[split]["shardLengths"]))
  except (OSError, ValueError, KeyError, TypeError):
    return None


def dataset_sizes(data_config, robot_split: str | None = None) -> list[dict]:
  """{kind: "robot" | "vl", name, weight, converted, episodes, steps (robot), examples (VL)} per configured
  dataset, from the cache's meta.json when converted, else what the source lists without reading it (a
  robot dataset's episodes from dataset_info.json; None: unknown until converted)."""
  sizes = []
  for entry in _well_formed(data_config.robot, config_schema.ROBOT_ENTRY):
    _, _, out = _robot_paths(data_config, entry, robot_split)
    meta = convert.completed_meta(out, convert.FORMAT_VERSION)
    episodes = meta["num_episodes"] if meta else source_episodes(data_config, entry, robot_split)
    sizes.append(
      dict(
        kind="robot",
        name=entry["name"],
        weight=entry["weight"],
        converted=meta is not None,
        episodes=episodes,
        steps=meta["num_steps"] if meta else None,
      )
    )
  for entry in _well_formed(data_config.vl, config_schema.VL_ENTRY) if data_config.robot_fraction < 1.0 else ():
    meta = convert.completed_meta(_vl_paths(data_config, entry)[2], convert_vl.FORMAT_VERSION)
    sizes.append(
      dict(
        kind="vl",
        name=entry["name"],
        weight=entry["weight"],
        converted=meta is not None,
        examples=meta["num_examples"] if meta else None,
      )
    )
  return sizes


def fast_bpe_path(config, prepared: PreparedData, max_chunks: int = 20_000, seed: int = 0) -> str:
  """Where fast_bpe() keeps the FAST BPE of this data and these settings (data.cache_dir/fast/)."""
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
  return os.path.join(
    os.path.expanduser(config.data.cache_dir), "fast", hashlib.sha1(key.encode()).hexdigest()[:12] + ".model"
  )


def fast_bpe(config, prepared: PreparedData, max_chunks: int = 20_000, seed: int = 0) -> str:
  """Trains the FAST BPE on the robot training data's normalized action chunks [H,D] (a random sample
  of up to `max_chunks` per dataset), once: cached under data.cache_dir/fast/ by the converted data and
  the settings (fast_bpe_path). Sets and returns prepared.fast_bpe_path."""
  from genvla_jax.data import pipeline, stats as stats_lib
  from genvla_jax.tokenizers import fast_actions

  tok = config.tokenizer
  path = fast_bpe_path(config, prepared, max_chunks, seed)
  if not os.path.exists(path):
    rng = np.random.default_rng(seed)
    chunks = []
    for r in prepared.robot:
      source = pipeline.StepChunkSource(r.converted_dir, tok.action_horizon)
      picked = rng.permutation(len(source))[:max_chunks]
      shown = progress.Progress(f"FAST BPE: reading {r.name}'s action chunks", len(picked), "chunks")
      for k, i in enumerate(picked):
        chunks.append(stats_lib.normalize(source[int(i)]["actions"], r.stats["action"]))
        shown.update(k + 1)
    print(f"FAST BPE: training on {len(chunks)} chunks -> {path}", flush=True)
    fast_actions.train_bpe(np.stack(chunks), path, tok.action_horizon, tok.fast_scale, tok.fast_vocab_size)
  prepared.fast_bpe_path = path
  return path
