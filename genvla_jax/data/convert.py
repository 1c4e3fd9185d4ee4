"""Converts a published RLDS dataset into step-level ArrayRecord shards that grain reads at random.

  python -m genvla_jax.data.convert --rlds_dir=DIR [--dataset=NAME] --split=train --out=OUT [--overwrite]

NAME is a registry entry (data/registry.py) by its short name ("bridge") or the name the dataset is
published under ("bridge_dataset"); without --dataset, the "name" in DIR's dataset_info.json picks it.

The split is cut into parts (`episodes_per_part` episodes of one input file, planned from TFDS's shard
lengths); parts convert independently, in parallel processes (`--num_workers`), each written atomically,
so an interrupted conversion resumes where it stopped (finished parts are kept). Output directory:
  part-XXXXX-of-YYYYY.array_record  one msgpack record per step, episodes contiguous:
      {"image": bytes, "state": f32 [S], "action": f32 [D], "instruction": str,
       "episode": int (source episode index), "step": int, "episode_length": int}
      Cameras: every camera of the registry entry (registry.Camera; meta.json "cameras", in order, and
      "camera_keys" {name: RLDS step key}). "image" is the primary camera ("cameras"[0]: bridge's image_0,
      "image" for single-camera entries) and "images": {name: bytes} holds the others the step has, by
      their names in "cameras" (a record without "images" has one camera; LeRobot conversions,
      data/convert_lerobot.py, use the same layout). A camera missing in a step (no key, empty bytes, or
      an all-zero frame of a camera whose dataset pads absent views with zeros: Camera.zeros_missing,
      Bridge's image_1..image_3) is omitted from that record: the pipeline feeds it as zeros, masked; a
      step without its primary camera is skipped. meta.json "camera_frames" {name: records holding it}.
      `camera_names(meta)` / `camera_image(record, name, meta)` read them; readers that take "image"
      see the primary camera, so single-camera training reads what it read before cameras existed.
  part-XXXXX-of-YYYYY.{npz,json}    per part: actions/states/episode lengths; record count, sha256, skips,
                                    provenance
  episodes.npz   start [E], length [E] (global record index of each episode's first step), source_episode
  stats.json     action/state statistics (stats.py), with the registry's normalize_mask
  meta.json      written last (the conversion is complete): provenance, counts, shards with record counts
                 and sha256, skipped steps / episodes with their location

Provenance (source path and its shard files' names and sizes, dataset, split, CONVERTER_VERSION,
episodes_per_part) is recorded in every part and in meta.json. An existing --out is reused (finished) or
resumed (partial) only when its provenance matches exactly; otherwise OutputDirError names the differing
fields (another --out, or `overwrite=True`, which deletes only the converter's own files). The inputs
are checked before anything in --out is touched; a failed run removes the --out it created while empty.

Bad input (listed in meta.json's skipped_steps, counted in skipped_episodes, printed by the CLI;
`on_bad="fail"`: BadRecordError at the first instead):
  * whole episode skipped, entry {"file", "record", "episode", "step", "reason"}: a record whose checksum
    fails, an undecodable record, a stored image that does not decode; a truncated file (or corrupt
    framing) loses the rest of that file: one entry with "episodes_lost", the episodes before it are kept
    (every camera's frames are decoded: "camera NAME: ..." names a non-primary one);
  * one step skipped, entry {"episode", "step", "reason"}: a non-finite action or state, an empty
    instruction, a missing primary image or key.
A conversion in which every episode is skipped raises NoUsableDataError (nothing is left in --out).

Training reads a finished --out as it is when a data.robot entry's path names it (`finished`; data/prepare.py).
"""

import concurrent.futures
import dataclasses
import hashlib
import json
import multiprocessing
import os
import re
import time

from absl import flags, logging
from array_record.python import array_record_module
from flax import serialization
import numpy as np

from genvla_jax import cli
from genvla_jax.data import preprocess, registry, rlds, stats as stats_lib

FORMAT_VERSION = 2  # the record layout readers depend on (pipeline, inspect)
# what conversion does (provenance; 3: checksums verified, every stored image decoded; 4: every registry camera
# written, "images"): an --out of an older version is not reused (prepare re-converts its cache)
CONVERTER_VERSION = 4
CAMERAS_SINCE = 4  # the first CONVERTER_VERSION that writes every camera of an RLDS dataset


class BadRecordError(cli.UserError, ValueError):
  """A bad record under on_bad="fail": names the file, record, episode, step and reason."""


class OutputDirError(cli.UserError):
  """--out cannot be used as asked (another dataset's output, foreign files); names the fix."""


class NoUsableDataError(cli.UserError, ValueError):
  """Every episode of the split was skipped."""


UnknownDatasetError = registry.UnknownDatasetError  # --dataset is not a name data/registry.py knows


class ShardCorruptError(cli.UserError, ValueError):
  """A converted shard's sha256 does not match meta.json."""


PRIMARY_CAMERA = "image"  # the camera name of a conversion whose meta.json names none (RLDS: one camera)


def camera_names(meta: dict) -> list[str]:
  """The cameras of a converted dataset, in order (meta.json "cameras"; the first is the records' "image")."""
  return list(meta.get("cameras") or [PRIMARY_CAMERA])


def camera_image(record: dict, name: str, cameras: list[str]) -> bytes:
  """The encoded frame of camera `name` in a step record of a dataset with `cameras` (camera_names)."""
  if name == cameras[0] or not name:
    return record["image"]
  images = record.get("images") or {}
  if name not in images:
    raise KeyError(f"camera {name!r} not in this record (the dataset's cameras: {cameras})")
  return images[name]


def camera_problem(meta: dict, camera: str, where: str) -> str | None:
  """Why a converted dataset (its meta.json) cannot give `camera` (config.data.cameras), or None."""
  cameras = camera_names(meta)
  if not camera or camera in cameras:
    return None
  older = (meta.get("provenance") or {}).get("converter_version")
  if "cameras" not in meta and isinstance(older, int) and older < CAMERAS_SINCE:
    return (
      f"{where} has no camera {camera!r} (config.data.cameras): it was converted by an older genvla_jax "
      f"(converter_version {older}) that kept the primary camera only: convert it again (python -m "
      "genvla_jax.data.convert ... --overwrite; a conversion in data.cache_dir is redone by training), or "
      "data.cameras=[] for its primary camera"
    )
  return (
    f"{where} has no camera {camera!r} (config.data.cameras); its cameras: {cameras}: name one of them, "
    "or data.cameras=[] for its primary camera"
  )


def encode_step(record: dict) -> bytes:
  return serialization.msgpack_serialize(record)


def decode_step(data: bytes) -> dict:
  return serialization.msgpack_restore(data)


def _sha256(path):
  h = hashlib.sha256()
  with open(path, "rb") as f:
    for block in iter(lambda: f.read(1 << 20), b""):
      h.update(block)
  return h.hexdigest()


def _bad_reason(step) -> str | None:
  if not np.all(np.isfinite(step["action"])):
    return "non-finite action"
  if not np.all(np.isfinite(step["state"])):
    return "non-finite state"
  if not step["instruction"].strip():
    return "empty instruction"
  if not isinstance(step["image"], bytes) or not step["image"]:
    return "missing image"
  return None


def image_problem(data: bytes, shape: tuple | None = None) -> tuple[str | None, tuple | None]:
  """(None, its shape (H, W, 3)) if `data` decodes to an RGB image (of `shape` when given), else (why
  not, None)."""
  problem, image = _decoded(data, shape)
  return problem, None if image is None else tuple(image.shape)


def _decoded(data: bytes, shape: tuple | None = None) -> tuple[str | None, np.ndarray | None]:
  """(None, the decoded image) if `data` decodes to an RGB image (of `shape` when given), else (why not, None)."""
  try:
    image = preprocess.decode_image(data)
  except preprocess.BadImageError as err:
    return str(err), None
  if shape is not None and tuple(image.shape) != tuple(shape):
    return f"image is {list(image.shape)}, the episode's first image {list(shape)}", None
  return None, image


def _frames_problem(step: dict, cameras, shapes: dict) -> str | None:
  """Decodes every frame of a standardized step (`cameras`: its registry entry's): why one does not decode
  or differs in shape from its camera's first frame in the episode (`shapes`, filled here), else None. A
  frame of a Camera.zeros_missing camera that is all zeros is the dataset's padding: removed from
  step["images"] (the camera is missing in this step)."""
  problem, image = _decoded(step["image"], shapes.get(cameras[0].name))
  if problem:
    return problem
  shapes[cameras[0].name] = image.shape
  images = step.get("images") or {}
  for camera in cameras[1:]:
    if camera.name not in images:
      continue
    problem, image = _decoded(images[camera.name])
    if problem:
      return f"camera {camera.name}: {problem}"
    if camera.zeros_missing and not image.any():
      del images[camera.name]
      continue
    if camera.name in shapes and image.shape != shapes[camera.name]:
      return f"camera {camera.name}: image is {list(image.shape)}, its first image {list(shapes[camera.name])}"
    shapes[camera.name] = image.shape
  return None


@dataclasses.dataclass(frozen=True)
class Part:
  """A unit of conversion work: `count` episodes starting at record `first` of one input file."""

  index: int
  file: str
  first: int
  count: int
  first_episode: int  # global index of its first episode in the split (source order)
  episodes_per_part: int = 0  # the plan's setting (part of the provenance)


def plan(source: rlds.RLDSDataset, episodes_per_part: int) -> list[Part]:
  """Splits the split's input files into parts of at most `episodes_per_part` episodes (from TFDS's
  recorded shard lengths, so no data is read)."""
  lengths = list(source.split_info.shard_lengths) or [len(source)]
  parts, episode = [], 0
  for file, length in zip(source.files, lengths):
    for first in range(0, length, episodes_per_part):
      count = min(episodes_per_part, length - first)
      parts.append(Part(len(parts), file, first, count, episode + first, episodes_per_part))
    episode += length
  return parts


def provenance(
  rlds_dir: str, dataset: str, split: str, episodes_per_part: int, source: rlds.RLDSDataset | None = None
) -> dict:
  """What a conversion is made from and how; equal provenance = interchangeable output. `source_files`
  (the split's shard files: count, total bytes, sha1 of their names and sizes) only when the source is
  given."""
  out = {
    "source": os.path.abspath(rlds_dir),
    "dataset": dataset,
    "split": split,
    "converter_version": CONVERTER_VERSION,
    "episodes_per_part": int(episodes_per_part),
  }
  if source is not None:
    sizes = sorted((os.path.basename(p), os.path.getsize(p)) for p in source.files)
    digest = hashlib.sha1(json.dumps(sizes).encode()).hexdigest()[:16]
    out["source_files"] = f"{len(sizes)} files, {sum(n for _, n in sizes)} bytes, sha1 {digest}"
  return out


def provenance_diff(have: dict | None, want: dict) -> list[str]:
  """Fields where `have` (an existing output's provenance) differs from `want`, worded for a message."""
  if not have:
    return ["provenance (none recorded: written by an older genvla_jax)"]
  diffs = []
  for key in sorted(set(have) | set(want)):
    if have.get(key) != want.get(key):
      if key == "source_files":
        diffs.append("source_files (the shard files differ in names or sizes)")
      else:
        diffs.append(f"{key} {have.get(key)!r} (asked {want.get(key)!r})")
  return diffs


def _part_name(part: Part, total: int) -> str:
  return f"part-{part.index:05d}-of-{total:05d}"


def _part_done(out_dir: str, name: str) -> bool:
  return os.path.exists(os.path.join(out_dir, name + ".json"))


class _Skips:
  """Collects skipped steps / episodes (`entries`, meta.json's skipped_steps); under on_bad="fail" the
  first one raises BadRecordError instead."""

  def __init__(self, on_bad: str):
    self.on_bad, self.entries = on_bad, []

  def add(self, entry: dict, where: str):
    if self.on_bad == "fail":
      raise BadRecordError(
        f"{where}: bad record in episode {entry['episode']} step {entry['step']}: "
        f"{entry['reason']} (on_bad='fail'; on_bad='skip' skips it and lists it in "
        "meta.json)"
      )
    self.entries.append(entry)


def _episode_entry(path: str, k: int, e: int, step, reason: str, **extra) -> dict:
  return dict(
    {"file": os.path.basename(path), "record": k, "episode": e, "step": step, "reason": reason[:300]}, **extra
  )


def _good_steps(source, spec, serialized, where: tuple, skips: _Skips) -> list[dict]:
  """One serialized episode -> its standardized, checked steps; `where` = (file, record, episode).
  Bad steps are skipped alone; an undecodable record or image skips the whole episode (-> [])."""
  path, k, e = where
  at = f"{path} record {k}"
  try:
    episode = source.decode_episode(serialized)
  except Exception as err:
    skips.add(_episode_entry(path, k, e, None, f"undecodable episode: {err}"), at)
    return []
  standardized = []
  for s, raw in enumerate(episode["steps"]):
    try:
      standardized.append(dict(registry.standardize_step(spec, raw), _source_step=s))
    except (KeyError, ValueError, TypeError) as err:
      skips.add({"episode": e, "step": s, "reason": f"cannot standardize: {err}"[:200]}, at)
  if spec.episode_transform is not None and standardized:
    standardized = spec.episode_transform(standardized)
  good, shapes = [], {}
  for step in standardized:
    s = step.pop("_source_step")
    reason = _bad_reason(step)
    if reason:
      skips.add({"episode": e, "step": s, "reason": reason}, at)
      continue
    problem = _frames_problem(step, spec.cameras, shapes)
    if problem:
      skips.add(_episode_entry(path, k, e, s, f"undecodable image: {problem}"), at)
      return []
    good.append(step)
  return good


def convert_part(
  rlds_dir: str, split: str, dataset: str, part: Part, total: int, out_dir: str, on_bad: str = "skip"
) -> dict:
  """Converts one part into `<name>.array_record` + `<name>.npz` (per good step: action, state;
  per episode: source index, length) + `<name>.json` (written last: the part is done; counts, skips,
  provenance). Nothing of the part is left on an error."""
  spec = registry.get(dataset)
  source = rlds.RLDSDataset(rlds_dir, split)
  name = _part_name(part, total)
  skips = _Skips(on_bad)
  numbered = ((part.first_episode + k - part.first, good) for k, good in _part_episodes(source, spec, part, skips))
  info = write_part(out_dir, name, numbered, spec.camera_names)
  info.update(
    skipped_steps=skips.entries,
    skipped_episodes=part.count - info["episodes"],
    provenance=provenance(rlds_dir, dataset, split, part.episodes_per_part, source),
  )
  return finish_part(out_dir, name, info)


def write_part(out_dir: str, name: str, episodes, cameras: list[str] | None = None) -> dict:
  """Streams `episodes` ((episode index, its good standardized steps), memory: one episode) into
  `<name>.array_record` (one encoded step per record) + `<name>.npz` (per step: action, state; per episode:
  index, length), both in place only when both are complete: nothing of the part is left on an error.
  `cameras` (the dataset's, primary first): count the records holding each (info "camera_frames").
  -> the part's info {"file", "records", "episodes", "sha256"(, "camera_frames")}; finish_part writes it."""
  actions, states, indices, lengths = [], [], [], []
  frames = dict.fromkeys(cameras or (), 0)
  tmp = os.path.join(out_dir, f".{name}.tmp{os.getpid()}")
  writer = array_record_module.ArrayRecordWriter(tmp + ".array_record", "group_size:1")
  try:
    for e, good in episodes:
      indices.append(e)
      lengths.append(len(good))
      for s, step in enumerate(good):
        writer.write(encode_step(dict(step, episode=e, step=s, episode_length=len(good))))
        if cameras:
          for camera in [cameras[0], *step.get("images", ())]:
            frames[camera] += 1
        actions.append(step["action"])
        states.append(step["state"])
    writer.close()
    np.savez(
      tmp + ".npz",
      actions=_rows(actions),
      states=_rows(states),
      episodes=np.asarray(indices, np.int64),
      lengths=np.asarray(lengths, np.int64),
    )
  except BaseException:
    writer.close()
    for suffix in (".array_record", ".npz"):
      if os.path.exists(tmp + suffix):
        os.remove(tmp + suffix)
    raise
  os.replace(tmp + ".array_record", os.path.join(out_dir, name + ".array_record"))
  os.replace(tmp + ".npz", os.path.join(out_dir, name + ".npz"))
  info = {
    "file": name + ".array_record",
    "records": len(actions),
    "episodes": len(indices),
    "sha256": _sha256(os.path.join(out_dir, name + ".array_record")),
  }
  if cameras:
    info["camera_frames"] = frames
  return info


def finish_part(out_dir: str, name: str, info: dict) -> dict:
  """Writes the part's `<name>.json` (atomically, last: its presence marks the part done) -> info."""
  tmp = os.path.join(out_dir, f".{name}.tmp{os.getpid()}.json")
  with open(tmp, "w") as f:
    json.dump(info, f)
  os.replace(tmp, os.path.join(out_dir, name + ".json"))
  return info


def _rows(vectors: list) -> np.ndarray:
  """[N] vectors of one length D -> float32 [N,D] ([0,0] for none: a part whose episodes were all skipped)."""
  return np.asarray(vectors, np.float32).reshape(len(vectors), -1) if vectors else np.zeros((0, 0), np.float32)


def _part_episodes(source, spec, part: Part, skips: _Skips):
  """(record index, good steps) for each usable episode of the part; unreadable records, and the rest of
  a file whose framing is lost, go to `skips`."""
  path = part.file
  for k, item in source.iter_file(path, part.first, part.first + part.count):
    first = max(k, part.first)
    e = part.first_episode + first - part.first
    if isinstance(item, rlds.RecordError) and item.rest_lost:
      lost = part.first + part.count - first
      skips.add(
        _episode_entry(
          path,
          first,
          e,
          None,
          f"unreadable from byte {item.offset} (record {item.index}) on, {lost} episodes lost: {item.reason}",
          episodes_lost=lost,
        ),
        f"{path} record {item.index}",
      )
      return
    if isinstance(item, rlds.RecordError):
      skips.add(_episode_entry(path, k, e, None, item.reason), item.where)
      continue
    good = _good_steps(source, spec, item, (path, k, e), skips)
    if good:
      yield k, good


def completed_meta(out_dir: str, format_version: int) -> dict | None:
  """meta.json of a finished conversion in this format version (it is written last), else None."""
  meta = _read_json(os.path.join(out_dir, "meta.json"))
  return meta if meta is not None and meta.get("format_version") == format_version else None


def finished(out_dir: str) -> dict | None:
  """meta.json of a finished robot conversion (this converter's, this FORMAT_VERSION) in `out_dir`, else None:
  how training tells a `--out` given as a data.robot entry's path (read as it is) from an RLDS dataset."""
  meta = completed_meta(out_dir, FORMAT_VERSION)
  return meta if _is_robot_meta(meta) else None


def _read_json(path: str) -> dict | None:
  """A JSON object file's content; None when absent, unreadable or not an object."""
  try:
    with open(path) as f:
      data = json.load(f)
  except (OSError, ValueError):
    return None
  return data if isinstance(data, dict) else None


_PART_FILE = re.compile(r"^\.?part-\d{5}-of-\d{5}(\.tmp\d+)?\.(array_record|npz|json)$")
_OWN_FILES = ("episodes.npz", "stats.json", "meta.json")


def _is_robot_meta(meta: dict | None) -> bool:
  return meta is not None and {"format_version", "shards", "num_steps"} <= set(meta)


def existing_output(out_dir: str) -> dict:
  """What `out_dir` holds: {"meta": converter meta.json or None, "foreign": [files the converter would
  write but did not], "parts": {part json name: provenance or None}}. Reads only small JSON files."""
  names = sorted(os.listdir(out_dir)) if os.path.isdir(out_dir) else []
  meta = _read_json(os.path.join(out_dir, "meta.json")) if "meta.json" in names else None
  parts = {
    n: (_read_json(os.path.join(out_dir, n)) or {}).get("provenance")
    for n in names
    if _PART_FILE.match(n) and n.endswith(".json") and not n.startswith(".")
  }
  robot_meta = _is_robot_meta(meta)
  foreign = ["meta.json"] if "meta.json" in names and not robot_meta else []
  foreign += [n for n in ("episodes.npz", "stats.json") if n in names and not (robot_meta or parts)]
  return {"meta": meta if robot_meta else None, "foreign": foreign, "parts": parts}


def remove_own_files(out_dir: str) -> list[str]:
  """Deletes the converter's files in `out_dir` (parts, their temp files, episodes.npz, stats.json, a
  converter meta.json); anything else stays. -> the names deleted."""
  state = existing_output(out_dir)
  removed = []
  for name in sorted(os.listdir(out_dir)):
    mine = (
      _PART_FILE.match(name)
      or re.match(r"^meta\.json\.tmp\d+$", name)
      or (name in _OWN_FILES and name not in state["foreign"])
    )
    if mine:
      os.remove(os.path.join(out_dir, name))
      removed.append(name)
  return removed


def dataset_from_info(rlds_dir: str) -> tuple[str, str]:
  """-> (registry entry, published name) of a TFDS prepared dataset, from the "name" field of its
  dataset_info.json; UnknownDatasetError (naming the file) when the registry does not know that name."""
  rlds.check_dataset_dir(rlds_dir)
  path = os.path.join(rlds_dir, "dataset_info.json")
  try:
    with open(path) as f:
      name = json.load(f)["name"]
  except (json.JSONDecodeError, KeyError, TypeError) as err:
    raise rlds.DatasetDirError(f"{path} has no dataset name ({err}): give --dataset=NAME") from err
  return registry.resolve(name, f"the name in {path}; or give --dataset=NAME"), name


def _check_options(on_bad: str, episodes_per_part: int):
  if on_bad not in ("skip", "fail"):
    raise ValueError(f"on_bad must be 'skip' or 'fail', got {on_bad!r}")
  if episodes_per_part < 1:
    raise cli.UserError(f"episodes_per_part must be >= 1, got {episodes_per_part}")


def _check_out(out_dir: str, want: dict, overwrite: bool) -> dict | None:
  """Decides what to do with an existing --out before anything is written: -> its meta when it is a
  finished conversion of exactly `want` (reuse); None when it is free, resumable or (overwrite) cleared.
  Raises OutputDirError naming the conflict and the fix otherwise."""
  if os.path.exists(out_dir) and not os.path.isdir(out_dir):
    raise OutputDirError(f"--out {out_dir} is a file, not a directory: give another --out")
  state = existing_output(out_dir)
  fix = "give another --out, or --overwrite to replace the converter's files there"
  if state["foreign"]:
    raise OutputDirError(
      f"--out {out_dir} holds {', '.join(state['foreign'])} not written by the robot "
      "converter: give another --out (nothing was changed there)"
    )
  have = [state["meta"].get("provenance")] if state["meta"] else []
  have += [p for p in state["parts"].values()]
  diffs = next((provenance_diff(p, want) for p in have if provenance_diff(p, want)), [])
  if diffs and not overwrite:
    what = "a finished conversion" if state["meta"] else "an unfinished conversion"
    raise OutputDirError(f"--out {out_dir} holds {what} of other input: {'; '.join(diffs)}: {fix}")
  if diffs:
    removed = remove_own_files(out_dir)
    logging.warning("overwrite: removed %d converter files from %s", len(removed), out_dir)
    return None
  if state["meta"] and state["meta"].get("format_version") == FORMAT_VERSION:
    return state["meta"]
  return None


def _make_dirs(path: str) -> str | None:
  """Creates `path` and missing parents; -> the top-most directory it created (None: it existed)."""
  missing, p = None, os.path.abspath(path)
  while not os.path.exists(p):
    missing, p = p, os.path.dirname(p)
  os.makedirs(path, exist_ok=True)
  return missing


def _remove_empty_dirs(path: str, top: str | None):
  """Removes `path` and its parents up to `top` (what _make_dirs created) while they are empty."""
  if top is None:
    return
  p = os.path.abspath(path)
  while True:
    try:
      os.rmdir(p)
    except OSError:  # not empty: keep it (and its parents)
      return
    if p == top:
      return
    p = os.path.dirname(p)


def _reuse_without_source(out_dir: str, want: dict, error: Exception) -> dict:
  """The source is unreadable: a finished --out whose provenance matches on everything checkable is
  still returned (warning); otherwise the source's error is raised."""
  state = existing_output(out_dir) if os.path.isdir(out_dir) else {"meta": None}
  have = (state["meta"] or {}).get("provenance")
  if (
    have
    and state["meta"].get("format_version") == FORMAT_VERSION
    and not provenance_diff({k: v for k, v in have.items() if k != "source_files"}, want)
  ):
    logging.warning("%s; using the finished conversion in %s (its source files were not checked)", error, out_dir)
    return state["meta"]
  raise error


def _where(entry: dict) -> str:
  """'<file> record <k>: ' for an entry that names its record ('<file>: ' its file only), else ''."""
  if "file" not in entry:
    return ""
  return f"{entry['file']}: " if entry.get("record") is None else f"{entry['file']} record {entry['record']}: "


def _check_reuse(meta: dict, on_bad: str) -> dict:
  """`meta` unless on_bad="fail" and it skipped records (resumed parts, a reused conversion)."""
  if on_bad == "fail" and meta["skipped_steps"]:
    first = meta["skipped_steps"][0]
    raise BadRecordError(
      f"{_where(first)}bad record in episode {first['episode']} step {first['step']}: "
      f"{first['reason']} (on_bad='fail'; the existing conversion skipped it)"
    )
  return meta


def convert(
  rlds_dir: str,
  dataset: str,
  split: str,
  out_dir: str,
  *,
  episodes_per_part: int = 1000,
  num_workers: int = 0,
  printer=None,
  on_bad: str = "skip",
  overwrite: bool = False,
) -> dict:
  """Converts one split (see the module docstring); returns meta. Inputs and --out are checked first.
  Resumable: parts of the same provenance already written by an interrupted run are kept; a complete
  conversion of the same provenance is returned as is. num_workers > 0 converts parts in that many
  processes. `dataset`: a short or published registry name (recorded as the entry's short name)."""
  dataset = registry.resolve(dataset, "--dataset")  # unknown names fail before any work
  registry.get(dataset)  # a LeRobot entry's name: the LeRobot converter's (data/convert_lerobot.py)
  _check_options(on_bad, episodes_per_part)
  try:
    source = rlds.RLDSDataset(rlds_dir, split)
  except (rlds.DatasetDirError, rlds.UnknownSplitError) as err:
    return _check_reuse(
      _reuse_without_source(out_dir, provenance(rlds_dir, dataset, split, episodes_per_part), err), on_bad
    )
  want = provenance(rlds_dir, dataset, split, episodes_per_part, source)
  done = _check_out(out_dir, want, overwrite)
  if done is not None:
    return _check_reuse(done, on_bad)
  parts = plan(source, episodes_per_part)
  created = _make_dirs(out_dir)
  try:
    meta = _convert_parts(rlds_dir, dataset, split, out_dir, parts, num_workers, printer, on_bad)
  except NoUsableDataError:
    remove_own_files(out_dir)
    _remove_empty_dirs(out_dir, created)
    raise
  except BaseException:
    _remove_empty_dirs(out_dir, created)
    raise
  spec = registry.get(dataset)
  meta.update(
    source=os.path.abspath(rlds_dir),
    dataset=dataset,
    split=split,
    provenance=want,
    cameras=spec.camera_names,
    camera_keys={c.name: c.key for c in spec.cameras},
  )
  meta_path = os.path.join(out_dir, "meta.json")
  tmp = meta_path + f".tmp{os.getpid()}"
  with open(tmp, "w") as f:
    json.dump(meta, f, indent=1)
  os.replace(tmp, meta_path)
  logging.info(
    "converted %s/%s: %d episodes, %d steps, %d episodes and %d steps skipped -> %s",
    dataset,
    split,
    meta["num_episodes"],
    meta["num_steps"],
    meta["skipped_episodes"],
    _skipped_step_count(meta),
    out_dir,
  )
  return _check_reuse(meta, on_bad)


def _convert_parts(rlds_dir, dataset, split, out_dir, parts, num_workers, printer, on_bad) -> dict:
  """Converts the parts not yet done, then assembles index, statistics and meta (not yet written)."""
  todo = [p for p in parts if not _part_done(out_dir, _part_name(p, len(parts)))]
  progress = _Progress(len(parts), len(parts) - len(todo), printer)
  args = [(rlds_dir, split, dataset, p, len(parts), out_dir, on_bad) for p in todo]
  if num_workers > 0 and len(todo) > 1:
    context = multiprocessing.get_context("spawn")  # no fork of a multithreaded parent
    with concurrent.futures.ProcessPoolExecutor(num_workers, mp_context=context) as pool:
      try:
        for info in pool.map(_convert_part_args, args):
          progress.update(info)
      except BaseException:
        pool.shutdown(wait=True, cancel_futures=True)  # parts not started are not converted after an error
        raise
  else:
    for a in args:
      progress.update(convert_part(*a))
  return _assemble(out_dir, parts, dataset, rlds_dir, split)


def _skipped_step_count(meta: dict) -> int:
  return sum(1 for s in meta["skipped_steps"] if "file" not in s)


def summary_lines(meta: dict, out_dir: str, first: int = 5) -> list[str]:
  """What the CLI prints after a conversion: counts, and the first skipped records by name."""
  lines = [
    f"converted {meta['dataset']}/{meta['split']}: {meta['num_episodes']} episodes, {meta['num_steps']} "
    f"steps -> {out_dir}"
  ]
  frames = meta.get("camera_frames") or {}
  if len(frames) > 1:
    lines.append(
      "cameras (steps holding each; the others are missing there: masked in training): "
      + ", ".join(f"{name} {frames.get(name, 0)}/{meta['num_steps']}" for name in camera_names(meta))
    )
  skipped = meta["skipped_steps"]
  if not skipped:
    return lines + ["skipped: none (every record's checksum and every stored image verified)"]
  lines.append(
    f"skipped: {meta.get('skipped_episodes', 0)} episodes, {_skipped_step_count(meta)} single steps "
    f"({len(skipped)} entries in {os.path.join(out_dir, 'meta.json')} skipped_steps), first:"
  )
  for s in skipped[:first]:
    record = _where(s).replace(": ", ", ") if "file" in s else ""
    step = f", step {s['step']}" if s.get("step") is not None else ""
    lines.append(f"  {record}episode {s['episode']}{step}: {s['reason']}")
  return lines


def _convert_part_args(args):
  return convert_part(*args)


class _Progress:
  """One line per finished part: parts done, steps, steps/s, ETA."""

  def __init__(self, total: int, done: int, printer):
    self.total, self.done, self.printer = total, done, printer
    self.steps, self.start = 0, time.perf_counter()

  def update(self, info: dict):
    self.done += 1
    self.steps += info["records"]
    if self.printer:
      elapsed = time.perf_counter() - self.start
      rate = self.steps / max(elapsed, 1e-9)
      remaining = elapsed / max(self.done, 1) * (self.total - self.done)
      self.printer(
        f"converted {self.done}/{self.total} parts | {self.steps} steps | {rate:.0f} steps/s | ETA {remaining:.0f}s",
        flush=True,
      )


def _assemble(
  out_dir: str, parts: list, dataset: str, rlds_dir: str = "?", split: str = "?", normalize_mask=None
) -> dict:
  """Per-part files -> episode index, statistics (one vectorised pass over the parts' arrays), meta
  (returned, not written). NoUsableDataError when every episode was skipped. `parts`: objects with
  `index` and `count` (episodes); `normalize_mask`: the action's (default: the RLDS registry entry's)."""
  if normalize_mask is None:
    normalize_mask = registry.get(dataset).normalize_mask
  shards, skipped, actions, states, starts, lengths, episode_ids = [], [], [], [], [], [], []
  offset, skipped_episodes, camera_frames = 0, 0, {}
  for part in parts:
    name = _part_name(part, len(parts))
    with open(os.path.join(out_dir, name + ".json")) as f:
      info = json.load(f)
    with np.load(os.path.join(out_dir, name + ".npz")) as arrays:
      if info["records"]:
        actions.append(arrays["actions"])
        states.append(arrays["states"])
      part_lengths = arrays["lengths"]
      episode_ids.append(arrays["episodes"])
    starts.append(
      offset + np.concatenate([[0], np.cumsum(part_lengths)[:-1]]).astype(np.int64)
      if len(part_lengths)
      else np.zeros(0, np.int64)
    )
    lengths.append(part_lengths)
    offset += info["records"]
    skipped += info["skipped_steps"]
    skipped_episodes += info.get("skipped_episodes", 0)
    for name, count in (info.get("camera_frames") or {}).items():
      camera_frames[name] = camera_frames.get(name, 0) + int(count)
    shards.append({k: info[k] for k in ("file", "records", "sha256")})
  if not offset:
    first = skipped[0] if skipped else {}
    raise NoUsableDataError(
      f"no usable episodes in {rlds_dir} split {split!r}: all {sum(p.count for p in parts)} "
      f"skipped, first: {_where(first)}episode {first.get('episode')}: {first.get('reason')} "
      f"(a damaged source, or --dataset={dataset} does not match it; nothing was kept)"
    )
  actions, states = np.concatenate(actions), np.concatenate(states)
  np.savez(
    os.path.join(out_dir, "episodes.npz"),
    start=np.concatenate(starts),
    length=np.concatenate(lengths),
    source_episode=np.concatenate(episode_ids),
  )
  statistics = {"action": stats_lib.describe(actions, normalize_mask), "state": stats_lib.describe(states)}
  with open(os.path.join(out_dir, "stats.json"), "w") as f:
    json.dump(statistics, f, indent=1)
  meta = {
    "format_version": FORMAT_VERSION,
    "num_episodes": int(sum(len(l) for l in lengths)),
    "num_steps": int(offset),
    "action_dim": int(actions.shape[1]),
    "state_dim": int(states.shape[1]),
    "shards": shards,
    "skipped_steps": skipped,
    "skipped_episodes": int(skipped_episodes),
  }
  if camera_frames:  # RLDS conversions: records holding each camera (the primary: every record)
    meta["camera_frames"] = camera_frames
  return meta


def actions_and_states(out_dir: str) -> tuple[np.ndarray, np.ndarray]:
  """All steps' actions [N,D] and states [N,S] of a converted dataset (from its parts' arrays)."""
  with open(os.path.join(out_dir, "meta.json")) as f:
    meta = json.load(f)
  if meta.get("format_version") != FORMAT_VERSION:
    raise cli.UserError(
      f"{out_dir} was converted by an older genvla_jax (format "
      f"{meta.get('format_version')}, now {FORMAT_VERSION}); convert it again"
    )
  actions, states = [], []
  for shard in meta["shards"]:
    with np.load(os.path.join(out_dir, shard["file"].replace(".array_record", ".npz"))) as arrays:
      actions.append(arrays["actions"])
      states.append(arrays["states"])
  return np.concatenate(actions), np.concatenate(states)


def combined_stats(out_dirs: list[str], normalize_mask=None) -> dict:
  """Statistics of several converted datasets pooled (exact: quantiles over all their steps), e.g. to
  normalize a mixture of datasets that share an action space with one set of statistics."""
  pairs = [actions_and_states(d) for d in out_dirs]
  dims = {a.shape[1] for a, _ in pairs}
  if len(dims) != 1:
    raise ValueError(f"datasets have different action dimensions {sorted(dims)}: {out_dirs}")
  return {
    "action": stats_lib.describe(np.concatenate([a for a, _ in pairs]), normalize_mask),
    "state": stats_lib.describe(np.concatenate([s for _, s in pairs]))
    if len({s.shape[1] for _, s in pairs}) == 1
    else None,
  }


def verify(out_dir: str) -> dict:
  """Checks every shard's checksum and record count against meta.json; raises naming the bad shard."""
  with open(os.path.join(out_dir, "meta.json")) as f:
    meta = json.load(f)
  for shard in meta["shards"]:
    path = os.path.join(out_dir, shard["file"])
    if not os.path.exists(path):
      raise FileNotFoundError(f"shard missing: {path}")
    if _sha256(path) != shard["sha256"]:
      raise ShardCorruptError(f"shard corrupt (sha256 mismatch): {path} (convert again with --overwrite)")
  return meta


FLAGS = flags.FLAGS


def main(argv):
  del argv
  dataset = FLAGS.dataset
  if dataset is None:
    dataset, published = dataset_from_info(FLAGS.rlds_dir)
    print(f"dataset: registry entry {dataset!r} (name {published!r} in {FLAGS.rlds_dir}/dataset_info.json)")
  meta = convert(
    FLAGS.rlds_dir,
    dataset,
    FLAGS.split,
    FLAGS.out,
    episodes_per_part=FLAGS.episodes_per_part,
    num_workers=FLAGS.num_workers,
    printer=print,
    on_bad=FLAGS.on_bad,
    overwrite=FLAGS.overwrite,
  )
  verify(FLAGS.out)
  print(json.dumps({k: v for k, v in meta.items() if k not in ("shards", "skipped_steps")}, indent=1))
  print("\n".join(summary_lines(meta, FLAGS.out)))


if __name__ == "__main__":
  flags.DEFINE_string("rlds_dir", None, "TFDS prepared-dataset version directory", required=True)
  flags.DEFINE_string(
    "dataset",
    None,
    f"registry entry, short or published name: {registry.known_names()} (default: from dataset_info.json)",
  )
  flags.DEFINE_string("split", "train", "split to convert")
  flags.DEFINE_string("out", None, "output directory", required=True)
  flags.DEFINE_integer("episodes_per_part", 1000, "episodes per output part (the unit of parallelism)")
  flags.DEFINE_integer("num_workers", os.cpu_count() or 1, "conversion processes (0: in this process)")
  flags.DEFINE_enum("on_bad", "skip", ["skip", "fail"], "skip and report bad records, or stop at the first")
  flags.DEFINE_bool(
    "overwrite",
    False,
    "--out holds a conversion of other input: delete the converter's files there (only those) and convert again",
  )
  cli.run(main)
