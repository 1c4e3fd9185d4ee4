"""Reads LeRobot datasets (format v2.0, v2.1 and v3.0) from a local directory; no hub access.

A LeRobot dataset root holds:
  meta/info.json   codebase_version, fps, features ({key: dtype, shape, names; video info}), splits,
                   chunks_size, and the path templates `data_path` / `video_path`
  v3.0: meta/episodes/chunk-*/file-*.parquet  one row per episode: episode_index, tasks, length,
          data/{chunk,file}_index, dataset_{from,to}_index, videos/<key>/{chunk,file}_index and
          videos/<key>/{from,to}_timestamp (the episode's span in a video file holding many episodes)
        meta/tasks.parquet  task_index and the task string (a column, or the pandas index)
        data/chunk-XXX/file-YYY.parquet  many episodes per file; videos/<key>/chunk-XXX/file-YYY.mp4 likewise
  v2.x: meta/episodes.jsonl ({episode_index, tasks, length}), meta/tasks.jsonl ({task_index, task}),
        data/chunk-XXX/episode_EEEEEE.parquet and videos/chunk-XXX/<key>/episode_EEEEEE.mp4, one episode
        each (chunk = episode_index // chunks_size; the video starts at time 0)
Per step (a parquet row): the numeric features (observation.state, action, ...), timestamp, frame_index,
episode_index, index, task_index, and each camera of dtype "image" as a struct {bytes (PNG/JPEG), path};
a camera of dtype "video" is the frame of its MP4 (AV1, H.264, ...) at the row's timestamp (v3.0: plus the
episode's from_timestamp), decoded here with PyAV.

`LeRobotDir(root)` reads the metadata (a missing or unreadable file is a LeRobotDirError naming it);
`resolve_mapping` turns a registry.LeRobotSpec (+ flags) into the concrete feature mapping; `statistics`
computes action/state statistics from the parquet columns alone (no frame decoded); `describe` is what
`data.inspect` shows for a root before conversion. The converter is data/convert_lerobot.py.
"""

import dataclasses
import glob
import json
import os

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from genvla_jax import cli
from genvla_jax.data import registry, stats as stats_lib

VERSIONS = ("v2.0", "v2.1", "v3.0")
CAMERA_DTYPES = ("video", "image")
CAMERA_PREFIX = "observation.images."


class LeRobotDirError(cli.UserError, ValueError):
  """A directory that is not a (readable) LeRobot dataset; the message names the file and the fix."""


class MappingError(cli.UserError, ValueError):
  """A feature mapping (registry entry / flags) that does not fit the dataset's features."""


class VideoError(ValueError):
  """A video file (or part of it) that does not decode; `path` names it."""


@dataclasses.dataclass(frozen=True)
class Episode:
  index: int  # episode_index
  length: int
  tasks: tuple[str, ...]
  data_file: str  # relative to the root
  videos: dict  # video feature key -> (relative path, from_timestamp, to_timestamp)


def is_lerobot_root(path: str) -> bool:
  """True when `path` has a meta/info.json with a LeRobot codebase_version."""
  try:
    with open(os.path.join(path, "meta", "info.json")) as f:
      return str(json.load(f).get("codebase_version", "")).startswith("v")
  except (OSError, ValueError, AttributeError):
    return False


def _read_json(path: str) -> dict:
  try:
    with open(path) as f:
      return json.load(f)
  except FileNotFoundError:
    raise LeRobotDirError(f"{path} is missing: not a LeRobot dataset root (give the folder holding meta/)") from None
  except (OSError, ValueError) as err:
    raise LeRobotDirError(f"{path} is unreadable: {err}") from None


def _read_jsonl(path: str) -> list[dict]:
  try:
    with open(path) as f:
      return [json.loads(line) for line in f if line.strip()]
  except FileNotFoundError:
    raise LeRobotDirError(f"{path} is missing (a LeRobot v2 dataset keeps its episodes and tasks there)") from None
  except (OSError, ValueError) as err:
    raise LeRobotDirError(f"{path} is unreadable: {err}") from None


def _read_table(path: str, columns=None) -> pa.Table:
  try:
    return pq.read_table(path, columns=columns)
  except FileNotFoundError:
    raise LeRobotDirError(f"{path} is missing") from None
  except (OSError, pa.ArrowException) as err:
    raise LeRobotDirError(f"{path} is unreadable: {' '.join(str(err).split())[:200]}") from None


def _task_column(table: pa.Table) -> str:
  """The column of tasks.parquet holding the task strings: "task", else the pandas index lerobot writes."""
  if "task" in table.column_names:
    return "task"
  pandas = json.loads((table.schema.metadata or {}).get(b"pandas", b"{}"))
  names = [n for n in pandas.get("index_columns", []) if isinstance(n, str)]
  strings = [n for n in table.column_names if pa.types.is_string(table.schema.field(n).type)]
  strings += [n for n in table.column_names if pa.types.is_large_string(table.schema.field(n).type)]
  for name in names + strings:
    if name in table.column_names:
      return name
  raise LeRobotDirError(f"tasks.parquet has no task string column (columns {table.column_names})")


class LeRobotDir:
  """The metadata of a LeRobot dataset root: info, features, tasks, episodes (see the module docstring)."""

  def __init__(self, root: str):
    self.root = os.path.abspath(os.path.expanduser(root))
    if not os.path.isdir(self.root):
      raise LeRobotDirError(f"{root} does not exist (give a LeRobot dataset root: the folder holding meta/info.json)")
    self.info = _read_json(os.path.join(self.root, "meta", "info.json"))
    self.version = str(self.info.get("codebase_version"))
    if self.version not in VERSIONS:
      raise LeRobotDirError(
        f"{self.root}/meta/info.json: codebase_version {self.version!r}; readable: {', '.join(VERSIONS)} "
        "(convert older datasets with lerobot's own conversion scripts first)"
      )
    self.fps = float(self.info["fps"])
    self.features = dict(self.info.get("features", {}))
    self.tasks = self._tasks()
    self.episodes = self._episodes()

  @property
  def v3(self) -> bool:
    return self.version == "v3.0"

  def camera_keys(self) -> list[str]:
    """Video and image features in info.json order (depth maps left out)."""
    return [
      k
      for k, f in self.features.items()
      if f.get("dtype") in CAMERA_DTYPES and not (f.get("info") or {}).get("video.is_depth_map", False)
    ]

  def is_video(self, key: str) -> bool:
    return self.features[key]["dtype"] == "video"

  def path(self, relative: str) -> str:
    return os.path.join(self.root, relative)

  def _tasks(self) -> dict[int, str]:
    if self.v3:
      table = _read_table(self.path("meta/tasks.parquet"))
      column = _task_column(table)
      return {int(i): str(t) for i, t in zip(table.column("task_index").to_pylist(), table.column(column).to_pylist())}
    return {int(r["task_index"]): str(r["task"]) for r in _read_jsonl(self.path("meta/tasks.jsonl"))}

  def _episodes(self) -> list[Episode]:
    videos = [k for k in self.camera_keys() if self.is_video(k)]
    if self.v3:
      return self._episodes_v3(videos)
    chunks = int(self.info.get("chunks_size", 1000))
    out = []
    for row in _read_jsonl(self.path("meta/episodes.jsonl")):
      e, length = int(row["episode_index"]), int(row["length"])
      chunk = e // chunks
      data = self.info["data_path"].format(episode_chunk=chunk, episode_index=e)
      out.append(
        Episode(
          e,
          length,
          tuple(row.get("tasks", ())),
          data,
          {
            k: (
              self.info["video_path"].format(episode_chunk=chunk, video_key=k, episode_index=e),
              0.0,
              length / self.fps,
            )
            for k in videos
          },
        )
      )
    return sorted(out, key=lambda ep: ep.index)

  def _episodes_v3(self, videos) -> list[Episode]:
    files = sorted(glob.glob(self.path("meta/episodes/chunk-*/file-*.parquet")))
    if not files:
      raise LeRobotDirError(
        f"{self.root}/meta/episodes/ holds no chunk-*/file-*.parquet (v3.0 keeps its episodes there)"
      )
    wanted = ["episode_index", "tasks", "length", "data/chunk_index", "data/file_index"]
    for k in videos:
      wanted += [f"videos/{k}/{c}" for c in ("chunk_index", "file_index", "from_timestamp", "to_timestamp")]
    out = []
    for path in files:
      names = pq.read_schema(path).names if os.path.exists(path) else []
      missing = [c for c in wanted if c not in names]
      if missing:
        raise LeRobotDirError(f"{path} lacks the columns {missing}")
      rows = _read_table(path, wanted).to_pylist()
      for row in rows:
        data = self.info["data_path"].format(chunk_index=row["data/chunk_index"], file_index=row["data/file_index"])
        spans = {}
        for k in videos:
          file = self.info["video_path"].format(
            video_key=k, chunk_index=row[f"videos/{k}/chunk_index"], file_index=row[f"videos/{k}/file_index"]
          )
          spans[k] = (file, float(row[f"videos/{k}/from_timestamp"]), float(row[f"videos/{k}/to_timestamp"]))
        out.append(Episode(int(row["episode_index"]), int(row["length"]), tuple(row["tasks"] or ()), data, spans))
    return sorted(out, key=lambda ep: ep.index)

  def split_episodes(self, split: str) -> list[Episode]:
    """The episodes of `split` (info.json's splits: "start:stop" episode ranges)."""
    splits = self.info.get("splits") or {"train": f"0:{len(self.episodes)}"}
    if split not in splits:
      raise LeRobotDirError(f"{self.root}: no split {split!r} in meta/info.json (splits: {sorted(splits)})")
    start, stop = (int(x) for x in str(splits[split]).split(":"))
    return [e for e in self.episodes if start <= e.index < stop]

  def source_files(self) -> list[str]:
    """Every data / video file the episodes name (relative paths, sorted)."""
    files = {e.data_file for e in self.episodes}
    files |= {v[0] for e in self.episodes for v in e.videos.values()}
    return sorted(files)


# -- feature mapping ----------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Mapping:
  """Which features make a step record (registry.LeRobotSpec resolved against a dataset's features)."""

  cameras: tuple[tuple[str, str], ...]  # (name in the records, feature key), primary first
  state_key: str
  action_key: str
  instruction_key: str
  gripper_dims: tuple[int, ...]
  gripper: str
  action_dim: int
  state_dim: int

  @property
  def normalize_mask(self) -> tuple[bool, ...]:
    return tuple(d not in self.gripper_dims for d in range(self.action_dim))

  def as_dict(self) -> dict:
    out = dataclasses.asdict(self)
    out["cameras"] = {name: key for name, key in self.cameras}
    out["gripper_dims"] = list(self.gripper_dims)
    return out

  def map_actions(self, actions: np.ndarray) -> np.ndarray:
    """Actions [T,D] in the dataset's gripper convention -> this project's (registry.GRIPPER_CONVENTIONS)."""
    actions = np.array(actions, np.float32)
    for d in self.gripper_dims:
      g = actions[:, d]
      if self.gripper == "closed_is_1":
        actions[:, d] = 1.0 - g
      elif self.gripper == "signed_close_positive":
        actions[:, d] = (1.0 - g) / 2.0
      elif self.gripper == "signed_open_positive":
        actions[:, d] = (1.0 + g) / 2.0
    return actions


def _names(feature: dict) -> list[str]:
  names = feature.get("names")
  if isinstance(names, dict):  # {"motors": [...]}
    names = next(iter(names.values()), None)
  return [str(n) for n in names] if isinstance(names, list) else []


def _dim(feature: dict) -> int:
  return int(np.prod(feature.get("shape") or [1]))


def camera_name(key: str, keys: list[str]) -> str:
  """A camera's name in the records: the feature key without "observation.images." (unless that makes two
  names equal)."""
  short = [k[len(CAMERA_PREFIX) :] if k.startswith(CAMERA_PREFIX) else k for k in keys]
  if len(set(short)) < len(short):
    return key
  return short[keys.index(key)]


def resolve_mapping(
  ds: LeRobotDir,
  spec: registry.LeRobotSpec,
  cameras=None,
  state_key=None,
  action_key=None,
  instruction_key=None,
  gripper_dims=None,
  gripper=None,
) -> Mapping:
  """The spec's fields, overridden by the given arguments (flags), with None filled in from info.json;
  MappingError naming the dataset's features when a key is not one of them."""
  features = ds.features
  all_cameras = ds.camera_keys()
  keys = list(cameras or spec.cameras or all_cameras)
  by_name = {camera_name(k, all_cameras): k for k in all_cameras}
  keys = [by_name.get(k, k) for k in keys]  # a short name ("wrist") is fine too

  def pick(given, default, candidates, what):
    key = given or default or next((c for c in candidates if c in features), None)
    if key is None or key not in features:
      raise MappingError(
        f"{ds.root}: no {what} feature {key or ' or '.join(candidates)!r}; its features: {sorted(features)} "
        f"(give --{what}_key=KEY)"
      )
    return key

  bad = [k for k in keys if k not in all_cameras]
  if bad or not keys:
    raise MappingError(
      f"{ds.root}: cameras {bad or keys} are not video/image features of this dataset; its cameras: "
      f"{all_cameras} (give --cameras=KEY,... with these keys or their short names {sorted(by_name)})"
    )
  state = pick(state_key, spec.state_key, ("observation.state", "state"), "state")
  action = pick(action_key, spec.action_key, ("action", "actions"), "action")
  instruction = instruction_key or spec.instruction_key
  if instruction not in features:
    raise MappingError(f"{ds.root}: no instruction feature {instruction!r}; its features: {sorted(features)}")
  action_dim = _dim(features[action])
  if gripper_dims is None:
    gripper_dims = spec.gripper_dims
  if gripper_dims is None:
    gripper_dims = tuple(d for d, n in enumerate(_names(features[action])) if "gripper" in n.lower())
  dims = tuple(sorted(d % action_dim for d in gripper_dims if -action_dim <= d < action_dim))
  if len(dims) != len(tuple(gripper_dims)):
    raise MappingError(f"gripper dims {list(gripper_dims)} outside the action's {action_dim} dimensions")
  convention = gripper or spec.gripper
  if convention not in registry.GRIPPER_CONVENTIONS:
    raise MappingError(f"gripper convention {convention!r}; choose one of {', '.join(registry.GRIPPER_CONVENTIONS)}")
  return Mapping(
    tuple((camera_name(k, all_cameras), k) for k in keys),
    state,
    action,
    instruction,
    dims,
    convention,
    action_dim,
    _dim(features[state]),
  )


def instruction_of(ds: LeRobotDir, mapping: Mapping, value) -> str:
  """A row's instruction: the task table's string for an index column, else the column's text."""
  if isinstance(value, (bytes, str)):
    return value.decode() if isinstance(value, bytes) else value
  if isinstance(value, (list, tuple, np.ndarray)):
    value = np.asarray(value).reshape(-1)[0]
  return ds.tasks.get(int(value), "")


# -- parquet rows -------------------------------------------------------------------------------------------


def column_array(table: pa.Table, key: str, dim: int) -> np.ndarray:
  """A numeric feature column -> float32 [N, dim] (fixed-size lists, lists or scalars)."""
  column = table.column(key).combine_chunks()
  if pa.types.is_fixed_size_list(column.type) or pa.types.is_list(column.type) or pa.types.is_large_list(column.type):
    values = column.flatten().to_numpy(zero_copy_only=False)
  else:
    values = column.to_numpy(zero_copy_only=False)
  return np.asarray(values, np.float32).reshape(len(table), dim)


class DataFile:
  """One data parquet file, its rows read per episode (only the row groups that hold it)."""

  def __init__(self, path: str):
    self.path = path
    self.file = pq.ParquetFile(path)  # a truncated file fails here (no footer)
    self.episode_index = self.file.read(columns=["episode_index"]).column(0).to_numpy()
    sizes = [self.file.metadata.row_group(i).num_rows for i in range(self.file.num_row_groups)]
    self.group_start = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)

  def rows(self, episode: int, columns: list[str]) -> pa.Table:
    """The rows of `episode` (in file order) with `columns`."""
    where = np.flatnonzero(self.episode_index == episode)
    if not len(where):
      return self.file.schema_arrow.empty_table().select(columns)
    first = int(np.searchsorted(self.group_start, where[0], side="right") - 1)
    last = int(np.searchsorted(self.group_start, where[-1], side="right") - 1)
    table = self.file.read_row_groups(list(range(first, last + 1)), columns=columns)
    return table.take(pa.array(where - self.group_start[first]))


def statistics(ds: LeRobotDir, mapping: Mapping, split: str = "train") -> dict:
  """Action (with the mapping's normalize mask and gripper convention) and state statistics of a split from
  the parquet files' two columns alone: no frame is decoded, no image column is read."""
  episodes = {e.index for e in ds.split_episodes(split)}
  actions, states = [], []
  for data_file in sorted({e.data_file for e in ds.split_episodes(split)}):
    table = _read_table(ds.path(data_file), [mapping.action_key, mapping.state_key, "episode_index"])
    keep = np.isin(table.column("episode_index").to_numpy(), list(episodes))
    table = table.filter(pa.array(keep))
    actions.append(mapping.map_actions(column_array(table, mapping.action_key, mapping.action_dim)))
    states.append(column_array(table, mapping.state_key, mapping.state_dim))
  return {
    "action": stats_lib.describe(np.concatenate(actions), mapping.normalize_mask),
    "state": stats_lib.describe(np.concatenate(states)),
  }


# -- video --------------------------------------------------------------------------------------------------


class VideoCursor:
  """Decodes one video file forward with PyAV: `frames_at(times)` -> RGB frames at those times (seconds,
  increasing), seeking only when the times lie behind the last decoded frame or far ahead of it, so the
  episodes of a v3.0 file, read in order, decode the file once."""

  SEEK_AHEAD_S = 2.0  # a gap larger than this is skipped by seeking

  def __init__(self, path: str, fps: float):
    self.path, self.fps = path, fps
    self.tolerance = 0.25 / fps  # a frame matches a time within a quarter frame period
    self._container = self._frames = self._pending = None
    self._last = None

  def close(self):
    if self._container is not None:
      self._container.close()
    self._container = self._frames = self._pending = self._last = None

  def _open(self, start: float):
    import av  # the genvla_jax[lerobot] extra (PyAV); only video conversions need it

    self.close()
    try:
      self._container = av.open(self.path)
      stream = self._container.streams.video[0]
      if start > 0:
        self._container.seek(int(start / stream.time_base), stream=stream, backward=True, any_frame=False)
      self._frames = self._decode(stream)
    except (av.FFmpegError, IndexError, OSError) as err:
      self.close()
      raise VideoError(f"cannot open the video ({' '.join(str(err).split())[:200]})") from None

  def _decode(self, stream):
    for frame in self._container.decode(stream):
      if frame.pts is None:
        continue
      yield float(frame.pts * stream.time_base), frame

  def frames_at(self, times) -> list[np.ndarray]:
    """uint8 [H,W,3] frames at `times`; VideoError naming the first time with no frame (decoding error or
    a time the file does not hold)."""
    import av

    times = [float(t) for t in times]
    if not times:
      return []
    first = times[0]
    if self._last is None or first < self._last - self.tolerance or first > self._last + self.SEEK_AHEAD_S:
      self._open(max(0.0, first - 1.0 / self.fps))
    out = []
    try:
      for t in times:
        while True:
          if self._pending is None:
            self._pending = next(self._frames, None)
          if self._pending is None:
            raise VideoError(f"no frame at {t:.4f}s: the video ends at {self._last}s")
          ts, frame = self._pending
          if ts < t - self.tolerance:  # before the wanted time: skip
            self._pending, self._last = None, ts
            continue
          if ts > t + self.tolerance:
            raise VideoError(f"no frame at {t:.4f}s (the next frame is at {ts:.4f}s)")
          out.append(frame.to_ndarray(format="rgb24"))
          self._pending, self._last = None, ts
          break
    except av.FFmpegError as err:
      self.close()
      raise VideoError(f"decoding failed near {t:.4f}s ({' '.join(str(err).split())[:200]})") from None
    except VideoError:
      self.close()
      raise
    return out


# -- what inspect shows --------------------------------------------------------------------------------------


def describe(root: str, dataset: str = "lerobot", split: str = "train") -> dict:
  """A LeRobot root before conversion: version, fps, features (dtype, shape, names; which are cameras),
  episodes, steps, tasks, the default feature mapping of the registry entry `dataset`, and the action /
  state statistics from the parquet columns (no frame decoded)."""
  ds = LeRobotDir(root)
  episodes = ds.split_episodes(split)
  lengths = np.asarray([e.length for e in episodes])
  features = {}
  for key, f in ds.features.items():
    kind = "video" if f.get("dtype") == "video" else "image" if f.get("dtype") == "image" else "value"
    entry = {"dtype": f.get("dtype"), "shape": list(f.get("shape") or []), "kind": kind}
    names = _names(f)
    if names:
      entry["names"] = names
    codec = (f.get("info") or {}).get("video.codec")
    if codec:
      entry["codec"] = codec
    features[key] = entry
  out = {
    "path": ds.root,
    "format": f"LeRobot {ds.version}",
    "robot_type": ds.info.get("robot_type"),
    "fps": ds.fps,
    "split": split,
    "episodes": len(episodes),
    "steps": int(lengths.sum()) if len(lengths) else 0,
    "episode_length": {"min": int(lengths.min()), "max": int(lengths.max()), "mean": float(lengths.mean())}
    if len(lengths)
    else {},
    "tasks": {"count": len(ds.tasks), "first": [ds.tasks[i] for i in sorted(ds.tasks)[:10]]},
    "features": features,
    "cameras": {camera_name(k, ds.camera_keys()): k for k in ds.camera_keys()},
  }
  try:
    mapping = resolve_mapping(ds, registry.lerobot(dataset))
  except MappingError as err:
    out["mapping"] = f"none by default: {err}"
  else:
    out["mapping"] = mapping.as_dict()
    try:
      out["statistics"] = statistics(ds, mapping, split)
    except LeRobotDirError as err:  # a damaged parquet file: --verify names its episodes
      out["statistics_error"] = str(err)
  out["convert"] = (
    f"python -m genvla_jax.data.convert_lerobot --root={ds.root} --out=OUT [--dataset={dataset}] "
    "[--cameras=...] [--state_key=...] [--action_key=...] [--gripper_dims=...] [--image_size=...]"
  )
  return out
