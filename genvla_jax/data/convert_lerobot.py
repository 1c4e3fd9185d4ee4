"""Converts a LeRobot dataset (v2.0 / v2.1 / v3.0, a local directory) into the step shards training reads.

  python -m genvla_jax.data.convert_lerobot --root=DIR --out=OUT [--dataset=lerobot] [--split=train]
      [--cameras=front,wrist] [--state_key=KEY] [--action_key=KEY] [--gripper_dims=6] [--gripper=keep]
      [--image_size=0] [--image_format=jpeg] [--episodes_per_part=50] [--num_workers=N] [--overwrite]

`python -m genvla_jax.data.inspect --data=DIR` on the LeRobot root shows its features, cameras, tasks, the
default mapping and the statistics first. The feature mapping is a registry.LeRobotSpec (`--dataset`:
"lerobot" = everything from meta/info.json, or a named entry such as "libero"), overridden by the flags.

Output: the same directory layout and step records as data/convert.py (parts converted in parallel
processes, each written atomically, so a rerun resumes; provenance in every part and meta.json; meta.json
last), so training reads it as any conversion (a data.robot entry whose path is OUT, name = the entry).
Records: "image" = the first camera, "images" = {name: bytes} the others (convert.camera_names); every
frame is stored once as JPEG (quality JPEG_QUALITY) or PNG, resized to --image_size x --image_size when
given (0: the source size). A video frame is decoded (PyAV: AV1, H.264, ...) and encoded once; an image
column's PNG/JPEG bytes are stored as they are unless resized. The action's gripper dimensions are mapped
to this project's convention (--gripper) and kept out of normalization. Statistics (stats.json) come from
the good steps' parquet columns; `lerobot.statistics` computes them without conversion.

Bad input is reported as the RLDS converter does (meta.json skipped_steps, summary_lines; --on_bad=fail
stops at the first): a data parquet file that cannot be read (truncated, corrupt) skips every episode it
holds, one entry per episode {"file": the parquet file, "episode", "reason"}; a video that does not decode
(or lacks a frame at a step's timestamp) skips its episode {"file": the mp4, "episode", "step", "reason"};
an image cell that does not decode likewise; a step with a non-finite action / state or no instruction
is skipped alone.
"""

import concurrent.futures
import dataclasses
import hashlib
import json
import multiprocessing
import os
import time

from absl import flags, logging
import cv2
import numpy as np
import pyarrow as pa

from genvla_jax import cli
from genvla_jax.data import convert, lerobot, preprocess, registry

CONVERTER_VERSION = 1  # what this conversion does (provenance)
JPEG_QUALITY = 95
IMAGE_FORMATS = ("jpeg", "png")


@dataclasses.dataclass(frozen=True)
class Part:
  """Conversion work: `episodes` (episode_index values, in order) of one data file."""

  index: int
  data_file: str
  episodes: tuple[int, ...]

  @property
  def count(self) -> int:
    return len(self.episodes)


@dataclasses.dataclass(frozen=True)
class Options:
  """How a conversion is made (everything in its provenance besides the source)."""

  dataset: str
  split: str
  mapping: dict  # lerobot.Mapping.as_dict()
  image_size: int
  image_format: str
  episodes_per_part: int


def plan(episodes: list, episodes_per_part: int) -> list[Part]:
  """Episodes grouped by data file (in episode order), cut into parts of at most `episodes_per_part`."""
  parts, run = [], []

  def flush():
    for i in range(0, len(run), episodes_per_part):
      parts.append(Part(len(parts), run[0].data_file, tuple(e.index for e in run[i : i + episodes_per_part])))

  for e in episodes:
    if run and e.data_file != run[-1].data_file:
      flush()
      run = []
    run.append(e)
  if run:
    flush()
  return parts


def provenance(ds: lerobot.LeRobotDir, options: Options) -> dict:
  """What a conversion is made from and how (equal provenance = interchangeable output)."""
  sizes = []
  for rel in ds.source_files():
    path = ds.path(rel)
    sizes.append((rel, os.path.getsize(path) if os.path.exists(path) else -1))
  digest = hashlib.sha1(json.dumps(sizes).encode()).hexdigest()[:16]
  return {
    "source": ds.root,
    "source_format": f"lerobot {ds.version}",
    "dataset": options.dataset,
    "split": options.split,
    "converter_version": CONVERTER_VERSION,
    "lerobot_converter": True,
    "mapping": options.mapping,
    "image_size": options.image_size,
    "image_format": options.image_format,
    "episodes_per_part": options.episodes_per_part,
    "source_files": f"{len(sizes)} files, {sum(max(n, 0) for _, n in sizes)} bytes, sha1 {digest}",
  }


def encode_frame(frame: np.ndarray, image_format: str) -> bytes:
  """uint8 RGB [H,W,3] -> JPEG (JPEG_QUALITY) or PNG bytes (OpenCV)."""
  bgr = cv2.cvtColor(np.ascontiguousarray(frame), cv2.COLOR_RGB2BGR)
  if image_format == "png":
    ok, data = cv2.imencode(".png", bgr)
  else:
    ok, data = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
  if not ok:
    raise ValueError(f"cannot encode a frame of shape {frame.shape} as {image_format}")
  return data.tobytes()


def _store(frame: np.ndarray, options: Options) -> bytes:
  if options.image_size:
    frame = preprocess.resize_image(frame, options.image_size)
  return encode_frame(frame, options.image_format)


class _Episodes:
  """Reads a part's episodes: parquet rows, then each camera's frames (a camera's video cursor stays open
  across the part's episodes while they share its file, so a v3.0 file is decoded once, in order)."""

  def __init__(self, ds: lerobot.LeRobotDir, mapping: lerobot.Mapping, options: Options):
    self.ds, self.mapping, self.options = ds, mapping, options
    self.cursors = {}
    self.store = lambda frame: _store(frame, options)  # decoded frame -> stored bytes

  def close(self):
    for cursor in self.cursors.values():
      cursor.close()

  def columns(self) -> list[str]:
    m = self.mapping
    keys = [m.state_key, m.action_key, m.instruction_key, "timestamp"]
    keys += [key for _, key in m.cameras if not self.ds.is_video(key)]
    return list(dict.fromkeys(keys))

  def frames(self, episode: lerobot.Episode, key: str, table: pa.Table) -> tuple[list[bytes], str]:
    """-> (the episode's encoded frames of camera `key`, the file they come from); _Bad when one does not
    decode."""
    if self.ds.is_video(key):
      file, start, _ = episode.videos[key]
      cursor = self.cursors.get(key)
      if cursor is None or cursor.path != self.ds.path(file):  # one open video per camera
        if cursor is not None:
          cursor.close()
        cursor = self.cursors[key] = lerobot.VideoCursor(self.ds.path(file), self.ds.fps)
      times = start + table.column("timestamp").to_numpy().astype(np.float64)
      try:
        frames = cursor.frames_at(times)
      except lerobot.VideoError as err:
        raise _Bad(file, None, f"undecodable video: {err}") from None
      return [self.store(f) for f in frames], file
    out, shape = [], None
    for s, cell in enumerate(table.column(key).to_pylist()):
      data = cell.get("bytes") if isinstance(cell, dict) else cell
      if not data and isinstance(cell, dict) and cell.get("path") and os.path.isfile(self.ds.path(cell["path"])):
        with open(self.ds.path(cell["path"]), "rb") as f:
          data = f.read()
      if not data:
        raise _Bad(episode.data_file, s, f"no image bytes in column {key}")
      problem, shape = convert.image_problem(data, shape)
      if problem:
        raise _Bad(episode.data_file, s, f"undecodable image in column {key}: {problem}")
      out.append(self.store(preprocess.decode_image(data)) if self.options.image_size else data)
    return out, episode.data_file


class _Bad(Exception):
  """A bad episode: the file that holds the damage, the step (or None) and why."""

  def __init__(self, file, step, reason):
    super().__init__(reason)
    self.file, self.step, self.reason = file, step, reason


def _entry(file: str, episode: int, step, reason: str, **extra) -> dict:
  return dict({"file": file, "record": None, "episode": episode, "step": step, "reason": reason[:300]}, **extra)


def _steps(reader: _Episodes, episode: lerobot.Episode, table: pa.Table, skips) -> list[dict]:
  """An episode's rows -> its good step records (without episode / step / episode_length); a bad video /
  image skips the whole episode (-> [])."""
  m = reader.mapping
  where = f"{episode.data_file} episode {episode.index}"
  if len(table) != episode.length:
    skips.add(
      _entry(episode.data_file, episode.index, None, f"{len(table)} rows, meta/episodes says {episode.length}"),
      where,
    )
    return []
  actions = m.map_actions(lerobot.column_array(table, m.action_key, m.action_dim))
  states = lerobot.column_array(table, m.state_key, m.state_dim)
  instructions = [lerobot.instruction_of(reader.ds, m, v) for v in table.column(m.instruction_key).to_pylist()]
  images = {}
  for name, key in m.cameras:
    try:
      images[name], _ = reader.frames(episode, key, table)
    except _Bad as bad:
      skips.add(_entry(bad.file, episode.index, bad.step, bad.reason), where)
      return []
  good = []
  for s in range(len(table)):
    step = {
      "image": images[m.cameras[0][0]][s],
      "state": states[s],
      "action": actions[s],
      "instruction": instructions[s],
    }
    reason = convert._bad_reason(step)
    if reason:
      skips.add({"episode": episode.index, "step": s, "reason": reason}, where)
      continue
    if len(m.cameras) > 1:
      step["images"] = {name: images[name][s] for name, _ in m.cameras[1:]}
    good.append(step)
  return good


def _part_episodes(reader: _Episodes, part: Part, skips):
  """(episode index, good steps) for each usable episode of the part; a data file that cannot be read
  skips all of the part's episodes (one entry each), unreadable rows their episode."""
  by_index = {e.index: e for e in reader.ds.episodes}
  try:
    data = lerobot.DataFile(reader.ds.path(part.data_file))
  except (OSError, pa.ArrowException) as err:
    reason = f"unreadable parquet file ({' '.join(str(err).split())[:200]}): its {part.count} episodes lost"
    for e in part.episodes:
      skips.add(_entry(part.data_file, e, None, reason), f"{part.data_file} episode {e}")
    return
  for e in part.episodes:
    try:
      table = data.rows(e, reader.columns())
    except (OSError, pa.ArrowException) as err:
      reason = f"unreadable rows ({' '.join(str(err).split())[:200]})"
      skips.add(_entry(part.data_file, e, None, reason), f"{part.data_file} episode {e}")
      continue
    good = _steps(reader, by_index[e], table, skips)
    if good:
      yield e, good


def check(root: str, dataset: str = "lerobot", split: str = "train", **mapping) -> dict:
  """Reads every episode of `split` as a conversion would (rows, every frame decoded) without writing:
  {"episodes": usable, "steps": usable, "bad": skipped entries (as meta.json's skipped_steps)}."""
  ds = lerobot.LeRobotDir(root)
  m = lerobot.resolve_mapping(ds, registry.lerobot(dataset), **mapping)
  options = Options(dataset, split, m.as_dict(), 0, "png", 1)
  reader, skips, episodes, steps = _Episodes(ds, m, options), convert._Skips("skip"), 0, 0
  reader.store = lambda frame: b"-"  # frames are decoded, not encoded
  try:
    for part in plan(ds.split_episodes(split), 1 << 30):
      for _, good in _part_episodes(reader, part, skips):
        episodes, steps = episodes + 1, steps + len(good)
  finally:
    reader.close()
  return {"episodes": episodes, "steps": steps, "bad": skips.entries}


def convert_part(
  root: str, options: Options, part: Part, total: int, out_dir: str, on_bad: str = "skip", want: dict | None = None
) -> dict:
  """Converts one part into `<name>.array_record` + `.npz` + `.json` (last), as convert.convert_part does
  (convert.write_part / finish_part). `want`: the conversion's provenance (computed once by the caller; None:
  here)."""
  ds = lerobot.LeRobotDir(root)
  mapping = _mapping(ds, options)
  name = convert._part_name(part, total)
  skips = convert._Skips(on_bad)
  reader = _Episodes(ds, mapping, options)
  try:
    info = convert.write_part(out_dir, name, _part_episodes(reader, part, skips))
  finally:
    reader.close()
  info.update(
    skipped_steps=skips.entries,
    skipped_episodes=part.count - info["episodes"],
    provenance=want or provenance(ds, options),
  )
  return convert.finish_part(out_dir, name, info)


def _mapping(ds: lerobot.LeRobotDir, options: Options) -> lerobot.Mapping:
  m = options.mapping
  return lerobot.resolve_mapping(
    ds,
    registry.lerobot(options.dataset),
    cameras=list(m["cameras"].values()),
    state_key=m["state_key"],
    action_key=m["action_key"],
    instruction_key=m["instruction_key"],
    gripper_dims=tuple(m["gripper_dims"]),
    gripper=m["gripper"],
  )


def _convert_part_args(args):
  return convert_part(*args)


def convert_lerobot(
  root: str,
  out_dir: str,
  *,
  dataset: str = "lerobot",
  split: str = "train",
  cameras=None,
  state_key: str | None = None,
  action_key: str | None = None,
  instruction_key: str | None = None,
  gripper_dims=None,
  gripper: str | None = None,
  image_size: int = 0,
  image_format: str = "jpeg",
  episodes_per_part: int = 50,
  num_workers: int = 0,
  printer=None,
  on_bad: str = "skip",
  overwrite: bool = False,
) -> dict:
  """Converts a LeRobot root (see the module docstring); returns meta. Inputs and --out are checked first;
  resumable; a finished conversion of the same provenance is returned as is."""
  convert._check_options(on_bad, episodes_per_part)
  if image_format not in IMAGE_FORMATS:
    raise cli.UserError(f"image_format {image_format!r}: choose one of {', '.join(IMAGE_FORMATS)}")
  if image_size < 0:
    raise cli.UserError(f"image_size must be >= 0 (0: the source size), got {image_size}")
  ds = lerobot.LeRobotDir(root)
  spec = registry.lerobot(dataset)
  mapping = lerobot.resolve_mapping(ds, spec, cameras, state_key, action_key, instruction_key, gripper_dims, gripper)
  options = Options(dataset, split, mapping.as_dict(), int(image_size), image_format, int(episodes_per_part))
  episodes = ds.split_episodes(split)
  want = provenance(ds, options)
  done = convert._check_out(out_dir, want, overwrite)
  if done is not None:
    return convert._check_reuse(done, on_bad)
  parts = plan(episodes, episodes_per_part)
  if not parts:
    raise convert.NoUsableDataError(f"{ds.root}: split {split!r} has no episodes")
  created = convert._make_dirs(out_dir)
  try:
    meta = _convert_parts(ds.root, options, out_dir, parts, num_workers, printer, on_bad, mapping, want)
  except convert.NoUsableDataError:
    convert.remove_own_files(out_dir)
    convert._remove_empty_dirs(out_dir, created)
    raise
  except BaseException:
    convert._remove_empty_dirs(out_dir, created)
    raise
  meta.update(
    source=ds.root,
    dataset=dataset,
    split=split,
    provenance=want,
    cameras=[name for name, _ in mapping.cameras],
    camera_keys={name: key for name, key in mapping.cameras},
    fps=ds.fps,
    source_format=f"lerobot {ds.version}",
  )
  meta_path = os.path.join(out_dir, "meta.json")
  tmp = meta_path + f".tmp{os.getpid()}"
  with open(tmp, "w") as f:
    json.dump(meta, f, indent=1)
  os.replace(tmp, meta_path)
  logging.info(
    "converted LeRobot %s: %d episodes, %d steps, %d episodes skipped -> %s",
    ds.root,
    meta["num_episodes"],
    meta["num_steps"],
    meta["skipped_episodes"],
    out_dir,
  )
  return convert._check_reuse(meta, on_bad)


def _convert_parts(root, options, out_dir, parts, num_workers, printer, on_bad, mapping, want) -> dict:
  todo = [p for p in parts if not convert._part_done(out_dir, convert._part_name(p, len(parts)))]
  progress = convert._Progress(len(parts), len(parts) - len(todo), printer)
  args = [(root, options, p, len(parts), out_dir, on_bad, want) for p in todo]
  start = time.perf_counter()
  if num_workers > 0 and len(todo) > 1:
    context = multiprocessing.get_context("spawn")
    with concurrent.futures.ProcessPoolExecutor(num_workers, mp_context=context) as pool:
      try:
        for info in pool.map(_convert_part_args, args):
          progress.update(info)
      except BaseException:
        pool.shutdown(wait=True, cancel_futures=True)
        raise
  else:
    for a in args:
      progress.update(convert_part(*a))
  logging.info("converted %d parts in %.1fs", len(todo), time.perf_counter() - start)
  return convert._assemble(out_dir, parts, options.dataset, root, options.split, normalize_mask=mapping.normalize_mask)


FLAGS = flags.FLAGS


def _list(value: str | None):
  return [v.strip() for v in value.split(",") if v.strip()] if value else None


def main(argv):
  del argv
  dims = None if FLAGS.gripper_dims is None else tuple(int(d) for d in _list(FLAGS.gripper_dims) or ())
  meta = convert_lerobot(
    FLAGS.root,
    FLAGS.out,
    dataset=FLAGS.dataset,
    split=FLAGS.split,
    cameras=_list(FLAGS.cameras),
    state_key=FLAGS.state_key,
    action_key=FLAGS.action_key,
    instruction_key=FLAGS.instruction_key,
    gripper_dims=dims,
    gripper=FLAGS.gripper,
    image_size=FLAGS.image_size,
    image_format=FLAGS.image_format,
    episodes_per_part=FLAGS.episodes_per_part,
    num_workers=FLAGS.num_workers,
    printer=print,
    on_bad=FLAGS.on_bad,
    overwrite=FLAGS.overwrite,
  )
  convert.verify(FLAGS.out)
  keep = ("num_episodes", "num_steps", "action_dim", "state_dim", "skipped_episodes", "cameras", "source_format")
  print(json.dumps({k: meta[k] for k in keep}, indent=1))
  print("\n".join(convert.summary_lines(meta, FLAGS.out)))


if __name__ == "__main__":
  flags.DEFINE_string("root", None, "LeRobot dataset root (the folder holding meta/info.json)", required=True)
  flags.DEFINE_string("out", None, "output directory", required=True)
  flags.DEFINE_string("dataset", "lerobot", f"LeRobot registry entry: {', '.join(registry.LEROBOT)}")
  flags.DEFINE_string("split", "train", "split (meta/info.json splits)")
  flags.DEFINE_string("cameras", None, "camera features, primary first (keys or short names; default: all)")
  flags.DEFINE_string("state_key", None, "state feature (default: observation.state)")
  flags.DEFINE_string("action_key", None, "action feature (default: action)")
  flags.DEFINE_string("instruction_key", None, "instruction: task_index (the task table) or a string column")
  flags.DEFINE_string("gripper_dims", None, "action dims that are a gripper, e.g. 6 or -1 ('' for none)")
  flags.DEFINE_enum("gripper", None, list(registry.GRIPPER_CONVENTIONS), "gripper convention of the dataset")
  flags.DEFINE_integer("image_size", 0, "store frames resized to this square size (0: as they are)")
  flags.DEFINE_enum("image_format", "jpeg", list(IMAGE_FORMATS), "how frames are stored")
  flags.DEFINE_integer("episodes_per_part", 50, "episodes per output part (the unit of parallelism)")
  flags.DEFINE_integer("num_workers", os.cpu_count() or 1, "conversion processes (0: in this process)")
  flags.DEFINE_enum("on_bad", "skip", ["skip", "fail"], "skip and report bad episodes, or stop at the first")
  flags.DEFINE_bool("overwrite", False, "--out holds another conversion: delete the converter's files there")
  cli.run(main)
