"""Writes RLDS datasets the way the published ones are made: by TFDS itself (a GeneratorBasedBuilder),
so that whatever reads them (data/rlds.py, data/convert.py) is exercised on the real on-disk layout.
Used by the embedded demo, the simulators' expert recorder, the data benchmark and the tests."""

from typing import Iterable


def simple_step_features(image_size: int, state_dim: int, action_dim: int, cameras=("image",)) -> dict:
  """The step layout of the project's own datasets (embedded demo, simulator demos): one PNG image per camera
  `observation/<camera>` [S,S,3] (`observation/image` alone by default), `observation/state` [state_dim],
  `action` [action_dim], the instruction and RLDS's reward / discount / is_first / is_last / is_terminal, as a
  TFDS feature dict."""
  import numpy as np
  import tensorflow_datasets as tfds

  f = tfds.features
  return {
    "observation": {
      **{c: f.Image(shape=(image_size, image_size, 3), encoding_format="png") for c in cameras},
      "state": f.Tensor(shape=(state_dim,), dtype=np.float32),
    },
    "action": f.Tensor(shape=(action_dim,), dtype=np.float32),
    "language_instruction": f.Text(),
    "reward": f.Scalar(dtype=np.float32),
    "discount": f.Scalar(dtype=np.float32),
    "is_first": np.bool_,
    "is_last": np.bool_,
    "is_terminal": np.bool_,
  }


def write_rlds(
  root: str,
  name: str,
  step_features: dict,
  splits: dict[str, Iterable],
  *,
  version: str = "1.0.0",
  metadata_features: dict | None = None,
  file_format: str = "array_record",
) -> str:
  """TFDS writes `splits` ({split: iterable of (key, {"steps": [step dict], "episode_metadata": ...})})
  as dataset `name` (snake_case, e.g. "fractal20220817_data") under `root`. `step_features` and
  `metadata_features` are TFDS feature dicts. file_format "array_record" needs no TensorFlow;
  "tfrecord" (as OXE is published) does. -> the prepared version directory."""
  import tensorflow_datasets as tfds

  features = {"steps": tfds.features.Dataset(step_features)}
  if metadata_features:
    features["episode_metadata"] = metadata_features

  def info(self):
    return tfds.core.DatasetInfo(builder=self, features=tfds.features.FeaturesDict(features))

  def split_generators(self, dl_manager):
    del self, dl_manager
    return splits

  def generate_examples(self):
    raise NotImplementedError  # the splits come from _split_generators

  # TFDS names a dataset after its builder class: "demo_targets" <-> DemoTargets
  class_name = "".join(part.capitalize() for part in name.split("_"))
  builder_cls = type(
    class_name,
    (tfds.core.GeneratorBasedBuilder,),
    {
      "VERSION": tfds.core.Version(version),
      "__doc__": f"RLDS dataset {name} written by genvla_jax.",
      "_info": info,
      "_split_generators": split_generators,
      "_generate_examples": generate_examples,
    },
    skip_registration=True,
  )
  tfds.disable_progress_bar()
  builder = builder_cls(data_dir=root, file_format=file_format)
  builder.download_and_prepare(download_config=tfds.download.DownloadConfig(verify_ssl=False))
  return builder.data_dir
