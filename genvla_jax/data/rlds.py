"""Reads published RLDS datasets (TFDS prepared directories) through grain, without TensorFlow.

A TFDS prepared-dataset version directory holds `features.json`, `dataset_info.json` and shards in
TFRecord or ArrayRecord format, one serialized example per episode with the nested `steps` dataset.
Images are not decoded: step dicts keep the encoded JPEG/PNG bytes.

Every record is checked as it is read: TFRecord frames carry masked CRC-32C checksums of their length and
their data, both verified here (grain's reader skips them); ArrayRecord (riegeli) checks its own chunk
hashes. `iter_file` yields a `RecordError` in place of a record that fails (naming the file, record index
and byte offset) and goes on with the next one; when the file's framing is lost (a truncated file, a
corrupt length field) the error says so (`rest_lost`) and is the last item of that file.
"""

import os
import struct
from typing import Iterator

import google_crc32c
import grain
import tensorflow_datasets as tfds

from genvla_jax import cli

_HEADER = struct.Struct("<QI")  # TFRecord frame: uint64 length, uint32 masked crc32c(length)
_FOOTER = struct.Struct("<I")  # then the data, then uint32 masked crc32c(data)
_CRC_MASK_DELTA = 0xA282EAD8


class DatasetDirError(cli.UserError, ValueError):
  """--rlds_dir (or data.rlds_root/path) is not a readable TFDS prepared dataset; names the path and the fix."""


class UnknownSplitError(cli.UserError, KeyError):
  """The split is not in dataset_info.json."""

  def __str__(self):
    return str(self.args[0])


class RecordError(cli.UserError):
  """A record that cannot be read. `index` is its record index in `path`, `offset` the byte where the
  problem is; `rest_lost`: the file's framing is lost there, no later record of the file can be read."""

  def __init__(self, path: str, index: int, offset: int, reason: str, rest_lost: bool = False):
    self.path, self.index, self.offset, self.reason, self.rest_lost = path, index, offset, reason, rest_lost
    super().__init__(f"{self.where}: {reason}")

  @property
  def where(self) -> str:
    """'<path>: record <index> (byte <offset>)' (the offset when known)."""
    return f"{self.path}: record {self.index}" + (f" (byte {self.offset})" if self.offset >= 0 else "")

  def __reduce__(self):  # picklable across worker processes despite the custom __init__
    return (RecordError, (self.path, self.index, self.offset, self.reason, self.rest_lost))


def masked_crc32c(data: bytes) -> int:
  """TFRecord's checksum: CRC-32C of `data`, rotated right by 15 bits plus a constant (uint32)."""
  crc = google_crc32c.value(data)
  return (((crc >> 15) | (crc << 17)) + _CRC_MASK_DELTA) & 0xFFFFFFFF


def tfrecord_frame(data: bytes) -> bytes:
  """One TFRecord frame: length, masked crc of the length, data, masked crc of the data."""
  length = struct.pack("<Q", len(data))
  return length + _FOOTER.pack(masked_crc32c(length)) + data + _FOOTER.pack(masked_crc32c(data))


def iter_tfrecord(path: str, start: int = 0, stop: int | None = None) -> Iterator[tuple[int, bytes | RecordError]]:
  """(record index, data or RecordError) for records start..stop-1 of a TFRecord file, every checksum
  verified (records before `start` are skipped by their verified lengths, their data unread). A file that
  ends before record `stop` (when given) or inside a frame yields a final RecordError with rest_lost."""
  size = os.path.getsize(path)
  with open(path, "rb") as f:
    k = 0
    while stop is None or k < stop:
      offset = f.tell()
      header = f.read(_HEADER.size)
      if not header:
        if stop is not None:
          yield (
            k,
            RecordError(
              path,
              k,
              offset,
              f"the file ends after {k} records ({size} bytes) but "
              f"dataset_info.json lists at least {stop}: truncated copy?",
              rest_lost=True,
            ),
          )
        return
      if len(header) < _HEADER.size:
        yield (
          k,
          RecordError(
            path, k, offset, f"the file ends inside a record header ({size} bytes): truncated copy?", rest_lost=True
          ),
        )
        return
      length, length_crc = _HEADER.unpack(header)
      length_ok = masked_crc32c(header[:8]) == length_crc
      end = offset + _HEADER.size + length + _FOOTER.size
      if not length_ok and end > size:
        yield (
          k,
          RecordError(
            path,
            k,
            offset,
            "corrupt record length (checksum mismatch): the rest of the file cannot be located",
            rest_lost=True,
          ),
        )
        return
      if end > size:
        yield (
          k,
          RecordError(
            path,
            k,
            offset,
            f"the file ends inside this record ({size} bytes, the record needs {end}): truncated copy?",
            rest_lost=True,
          ),
        )
        return
      if k < start and length_ok:
        f.seek(end)
        k += 1
        continue
      data = f.read(length)
      (data_crc,) = _FOOTER.unpack(f.read(_FOOTER.size))
      data_ok = masked_crc32c(data) == data_crc
      if not length_ok and not data_ok:  # the length itself may be wrong: no way to find the next record
        yield (
          k,
          RecordError(
            path,
            k,
            offset,
            "corrupt record length (checksum mismatch): the rest of the file cannot be located",
            rest_lost=True,
          ),
        )
        return
      if k >= start:  # a bad length checksum over data whose own checksum holds: the crc field was hit
        yield k, (data if data_ok else RecordError(path, k, offset, "corrupt data (checksum mismatch)"))
      k += 1


def iter_array_record(path: str, start: int = 0, stop: int | None = None) -> Iterator[tuple[int, bytes | RecordError]]:
  """(record index, data or RecordError) for records start..stop-1 of an ArrayRecord file."""
  try:
    source = grain.sources.ArrayRecordDataSource([path])
    count = len(source)
  except Exception as err:
    yield start, RecordError(path, start, 0, f"unreadable ArrayRecord file: {_short(err)}", rest_lost=True)
    return
  for k in range(start, count if stop is None else min(stop, count)):
    try:
      yield k, source[k]
    except Exception as err:
      yield k, RecordError(path, k, -1, f"corrupt record: {_short(err)}")
  if stop is not None and count < stop:
    yield (
      count,
      RecordError(
        path,
        count,
        os.path.getsize(path),
        f"the file holds {count} records but dataset_info.json lists at least {stop}: truncated copy?",
        rest_lost=True,
      ),
    )


def _short(err: BaseException, limit: int = 200) -> str:
  text = " ".join(str(err).split())
  return text if len(text) <= limit else text[:limit] + "..."


def _skip_image_decoding(feature):
  """Decoder tree that keeps every Image feature as encoded bytes."""
  if isinstance(feature, tfds.features.Image):
    return tfds.decode.SkipDecoding()
  if isinstance(feature, tfds.features.Dataset):
    return _skip_image_decoding(feature.feature)
  if isinstance(feature, tfds.features.FeaturesDict):
    decoders = {k: _skip_image_decoding(v) for k, v in feature.items()}
    return {k: v for k, v in decoders.items() if v is not None} or None
  return None


def _flatten(tree, prefix=""):
  out = {}
  for key, value in tree.items():
    if isinstance(value, dict):
      out.update(_flatten(value, f"{prefix}{key}/"))
    else:
      out[prefix + key] = value
  return out


def check_dataset_dir(dataset_dir: str) -> None:
  """Raises DatasetDirError (one line: the path and the fix) unless `dataset_dir` holds features.json and
  dataset_info.json; reads nothing else."""
  if not os.path.exists(dataset_dir):
    raise DatasetDirError(
      f"RLDS dataset directory not found: {dataset_dir} (give the TFDS version "
      "directory, e.g. .../bridge_dataset/1.0.0)"
    )
  if not os.path.isdir(dataset_dir):
    raise DatasetDirError(
      f"{dataset_dir} is a file, not a TFDS dataset directory (give the folder that holds "
      "dataset_info.json, features.json and the shards)"
    )
  missing = [
    name for name in ("dataset_info.json", "features.json") if not os.path.isfile(os.path.join(dataset_dir, name))
  ]
  if not missing:
    return
  inner = _version_dirs(dataset_dir)
  if inner:
    hint = f"did you mean {inner[0]}?"
  elif len(missing) == 2:
    hint = "give the version directory that holds them and the shards, e.g. .../bridge_dataset/1.0.0"
  else:
    hint = f"an incomplete download or copy: fetch {missing[0]} again with the dataset"
  raise DatasetDirError(f"{dataset_dir} is not a TFDS prepared dataset: missing {' and '.join(missing)} ({hint})")


def _version_dirs(path: str, depth: int = 2) -> list[str]:
  """Sub-directories (up to `depth` levels) that are TFDS prepared datasets: the likely meant path."""
  found = []
  for name in sorted(os.listdir(path)):
    sub = os.path.join(path, name)
    if os.path.isdir(sub):
      if os.path.isfile(os.path.join(sub, "dataset_info.json")):
        found.append(sub)
      elif depth > 1:
        found += _version_dirs(sub, depth - 1)
  return found


class RLDSDataset:
  """One split of a TFDS RLDS directory. `len()` episodes; iterate for episode dicts. Construction checks
  the directory, the split and that every shard file exists (DatasetDirError / UnknownSplitError)."""

  def __init__(self, dataset_dir: str, split: str):
    check_dataset_dir(dataset_dir)
    try:
      self.builder = tfds.builder_from_directory(dataset_dir)
    except Exception as err:
      raise DatasetDirError(
        f"{dataset_dir}: cannot read its dataset_info.json / features.json "
        f"({_short(err)}); fetch them again with the dataset"
      ) from err
    if split not in self.builder.info.splits:
      raise UnknownSplitError(f"split {split!r} not in {dataset_dir}; available: {list(self.builder.info.splits)}")
    self.split_info = self.builder.info.splits[split]
    self.files = [os.fspath(p) for p in self.split_info.filepaths]
    self.file_format = self.builder.info.file_format.value  # "tfrecord" | "array_record"
    if self.file_format not in ("tfrecord", "array_record"):
      raise DatasetDirError(
        f"{dataset_dir}: unsupported TFDS file format {self.file_format!r} (tfrecord or array_record)"
      )
    missing = [p for p in self.files if not os.path.isfile(p)]
    if missing:
      raise DatasetDirError(
        f"{len(missing)} of {len(self.files)} shard files of split {split!r} are missing, "
        f"first: {missing[0]} (an incomplete download: fetch the dataset again)"
      )
    self.features = self.builder.info.features
    self.decoders = _skip_image_decoding(self.features)

  def __len__(self):
    return self.split_info.num_examples

  def decode_episode(self, serialized: bytes) -> dict:
    """-> {"steps": [flat step dict, ...], "episode_metadata/...": ...}."""
    example = self.features.deserialize_example_np(serialized, decoders=self.decoders)
    steps = example.pop("steps")
    out = _flatten(example)
    out["steps"] = [_flatten(steps[i]) for i in range(len(steps))]
    return out

  def iter_file(self, path, start: int = 0, stop: int | None = None) -> Iterator[tuple[int, bytes | RecordError]]:
    """(record index within the file, serialized episode or RecordError) for records start..stop-1 of one
    shard file, checksums verified (see the module docstring)."""
    if self.file_format == "tfrecord":
      yield from iter_tfrecord(path, start, stop)
    else:
      yield from iter_array_record(path, start, stop)

  def __iter__(self) -> Iterator[dict]:
    """Every episode of the split; raises the RecordError of the first record that cannot be read (a
    file holding fewer records than dataset_info.json lists included)."""
    lengths = list(self.split_info.shard_lengths) or [None] * len(self.files)
    for path, length in zip(self.files, lengths):
      for _, serialized in self.iter_file(path, 0, length):
        if isinstance(serialized, RecordError):
          raise serialized
        yield self.decode_episode(serialized)
