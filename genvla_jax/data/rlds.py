"""Reads published RLDS datasets (TFDS prepared directories) through grain, without TensorFlow.

A TFDS prepared-dataset version directory holds `features.json`, `dataset_info.json` and shards in
TFRecord or ArrayRecord format, one serialized example per episode with the nested `steps` dataset.
Images are not decoded: step dicts keep the encoded JPEG/PNG bytes.
"""

import os
from typing import Iterator

import grain
import tensorflow_datasets as tfds


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


class RLDSDataset:
  """One split of a TFDS RLDS directory. `len()` episodes; iterate for episode dicts."""

  def __init__(self, dataset_dir: str, split: str):
    for required in ("features.json", "dataset_info.json"):
      if not os.path.exists(os.path.join(dataset_dir, required)):
        raise FileNotFoundError(f"{dataset_dir} is not a TFDS prepared dataset: missing {required}")
    self.builder = tfds.builder_from_directory(dataset_dir)
    if split not in self.builder.info.splits:
      raise KeyError(f"split {split!r} not in {dataset_dir}; available: {list(self.builder.info.splits)}")
    self.split_info = self.builder.info.splits[split]
    self.files = [os.fspath(p) for p in self.split_info.filepaths]
    self.file_format = self.builder.info.file_format.value  # "tfrecord" | "array_record"
    self.features = self.builder.info.features
    self.decoders = _skip_image_decoding(self.features)

  def __len__(self):
    return self.split_info.num_examples

  def _records(self, path) -> grain.IterDataset:
    if self.file_format == "tfrecord":
      return grain.experimental.TFRecordIterDataset(path)
    if self.file_format == "array_record":
      return grain.MapDataset.source(grain.sources.ArrayRecordDataSource([path])).to_iter_dataset()
    raise ValueError(f"unsupported TFDS file format {self.file_format!r}")

  def decode_episode(self, serialized: bytes) -> dict:
    """-> {"steps": [flat step dict, ...], "episode_metadata/...": ...}."""
    example = self.features.deserialize_example_np(serialized, decoders=self.decoders)
    steps = example.pop("steps")
    out = _flatten(example)
    out["steps"] = [_flatten(steps[i]) for i in range(len(steps))]
    return out

  def iter_file(self, path) -> Iterator[tuple[int, bytes]]:
    """(record index within the file, serialized episode) for one shard file."""
    yield from enumerate(self._records(path))

  def __iter__(self) -> Iterator[dict]:
    for path in self.files:
      for _, serialized in self.iter_file(path):
        yield self.decode_episode(serialized)
