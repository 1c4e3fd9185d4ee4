"""The grain training pipeline: converted robot shards + VL examples -> host-local batches.

Per source: random-access grain MapDataset -> global shuffle (reshuffled every epoch, no shuffle
buffer) -> repeat -> example builder (data/transforms.py: decode, resize, normalize, tokenize). Several
datasets on one side are mixed by weight. Every global batch holds exactly R = round(B * robot_fraction)
robot examples and B - R VL examples (the co-training ratio holds per batch, not just on average).

Hosts: every process indexes the same global example streams; process p of P builds only its rows of
each global batch (robot examples [p R/P, (p+1) R/P) of the batch, then its VL examples), via
`batch(R/P)[p::P]` (grain computes only the elements asked for). So the global batch, and hence the
training run, is the same whatever the number of processes. Host-local batch dict (B = global batch /
process count, T = max_text_len):

  image [B,S,S,3] uint8 (the model maps pixels to [-1,1] on the accelerator: 1/4 of the bytes)
  tokens, input_mask, ar_mask, loss_mask [B,T]
  is_robot [B] bool                     actions [B,H,D] float32 (normalized; zeros for VL)
  action_pad [B,H] bool (True = padding past the episode end or VL)   num_clipped [B] int32
  paraphrased [B] bool (instruction replaced by instruction augmentation, data/instruction_aug.py)
  vl_truncated [B] bool (VL row cut to fit max_text_len, tokenizer.vl_overflow; False for robot rows)
  state [B,S] float32 (normalized; zeros for VL) only for models with a state token (π0 use_state)
A prompt template with a "{state}" field (config.data.prompt) writes the normalized state into the
robot prompt as text instead (preprocess.state_text: "+0.12 -0.50 ..."), for token heads.

With tokenizer.action="flow" (π0) robot rows carry no answer tokens: the prompt only, the actions go
to the action expert as the `actions` field.

Cameras: a converted step holds its dataset's cameras by name (convert.camera_names: "image" is the
primary one, LeRobot conversions add the others). config.data.cameras lists the ones the model sees, in
order (transforms.cameras_of: the one reader of that list; [] = each dataset's primary camera). With one
camera, `image` above is its frame and there is no image_mask (batches as before cameras existed); with C > 1:

  image [B,C,S,S,3] uint8 (in config.data.cameras' order)   image_mask [B,C] bool (False: missing; zeros)

A robot record lacking a listed camera (its dataset lists it: a dataset without it at all is refused by
prepare) gets zeros and False, counted per camera in StepChunkSource.missing and logged; a VL row's image is
camera 0, the others masked. model.num_cameras must equal C (training/preflight.py checks).
"""

import collections
import json
import os
from typing import Sequence

from absl import logging
import grain
import numpy as np

from genvla_jax import cli
from genvla_jax.data import convert, convert_vl, instruction_aug, transforms
from genvla_jax.tokenizers import factory


class CameraError(cli.UserError, ValueError):
  """config.data.cameras names a camera a robot dataset does not have."""


cameras_of = transforms.cameras_of  # the cameras the model sees, in order ([""]: each dataset's primary)


def camera_of(data_config) -> str:
  """The first camera of `cameras_of` ("": each dataset's primary)."""
  return cameras_of(data_config)[0]


class StepChunkSource:
  """Random access to converted steps; item i carries the action chunk of steps i..i+H-1 of its episode
  (`actions` [H,D], `action_pad` [H]: steps past the episode end repeat the last action, pad=True) and the
  frames of `camera`: one name ("": the primary camera) -> `image`, that camera's bytes; a list of C > 1
  names -> `frames`, their bytes in that order (None where the record lacks one: counted in `missing`
  {name: records}, logged). The records' other cameras are dropped."""

  def __init__(self, converted_dir: str, horizon: int, camera: str | Sequence[str] = ""):
    with open(os.path.join(converted_dir, "meta.json")) as f:
      meta = json.load(f)
    wanted = [camera] if isinstance(camera, str) else [str(c) for c in camera] or [""]
    for name in wanted:
      problem = convert.camera_problem(meta, name, converted_dir)
      if problem:
        raise CameraError(problem)
    self._paths = [os.path.join(converted_dir, s["file"]) for s in meta["shards"]]
    self._source = grain.sources.ArrayRecordDataSource(self._paths)
    self.converted_dir = converted_dir
    self.horizon = horizon
    self.cameras = convert.camera_names(meta)
    self.wanted = [name or self.cameras[0] for name in wanted]  # the cameras fed, by name
    self.camera = wanted[0] if len(wanted) == 1 and wanted[0] != self.cameras[0] else ""
    self.missing = collections.Counter()

  def __len__(self):
    return len(self._source)

  def _frame(self, record, name):
    """Camera `name`'s bytes of `record`, or None (counted, logged) when the record lacks it."""
    frame = record.get("image") if name == self.cameras[0] else (record.get("images") or {}).get(name)
    if frame:
      return frame
    self.missing[name] += 1
    if self.missing[name] in (1, 10, 100, 1000) or self.missing[name] % 10000 == 0:
      logging.warning(
        "%s: episode %s step %s lacks camera %r: fed as zeros, masked (image_mask False); %d such record(s) so far",
        self.converted_dir,
        record.get("episode"),
        record.get("step"),
        name,
        self.missing[name],
      )
    return None

  def __getitem__(self, index):
    record = convert.decode_step(self._source[index])
    if len(self.wanted) > 1:
      record["frames"] = [self._frame(record, name) for name in self.wanted]
      record.pop("image", None)
    elif self.camera:
      record["image"] = convert.camera_image(record, self.camera, self.cameras)
    record.pop("images", None)
    chunk, pad, last = [record["action"]], [False], record
    for j in range(1, self.horizon):
      if record["step"] + j < record["episode_length"]:
        last = convert.decode_step(self._source[index + j])
      chunk.append(last["action"])
      pad.append(record["step"] + j >= record["episode_length"])
    record["actions"] = np.stack(chunk).astype(np.float32)
    record["action_pad"] = np.array(pad)
    return record


class RobotExample(grain.transforms.RandomMap):
  """Step record -> training example: `transform.robot_example` (data/transforms.py; augmentation and
  instruction augmentation as configured, keyed by grain's per-example generator)."""

  def __init__(self, transform: transforms.ObservationTransform):
    self.transform = transform

  def random_map(self, record, rng):
    return self.transform.robot_example(record, rng, train=True)


class VLExample(grain.transforms.RandomMap):
  """{"image": bytes, "question", "answer"} (convert_vl.py records) -> training example:
  `transform.vl_example` (question -> answer text)."""

  def __init__(self, transform: transforms.ObservationTransform):
    self.transform = transform

  def random_map(self, example, rng):
    return self.transform.vl_example(example, rng, train=True)


def _concat_batches(pair):
  robot, vl = pair
  return {k: np.concatenate([robot[k], vl[k]], axis=0) for k in robot}


def _mixed(datasets, weights):
  if len(datasets) == 1:
    return datasets[0]
  return grain.MapDataset.mix(datasets, weights=list(weights))


def host_batches(ds, local_size: int, process_index: int, process_count: int):
  """Global example stream -> this process's rows of each global batch: global batch t is blocks
  t P .. t P + P - 1 of `local_size` consecutive examples; process p takes block t P + p."""
  return ds.batch(local_size, drop_remainder=True)[process_index::process_count]


def local_batch_split(data_config, process_count: int) -> tuple[int, int]:
  """-> (robot examples, VL examples) per host-local batch; both sides of the global batch must split
  evenly over the processes."""
  batch = data_config.batch_size
  fraction = data_config.robot_fraction
  if not 0.0 <= fraction <= 1.0:
    raise ValueError(f"data.robot_fraction must be in [0, 1] (0: VL only), got {fraction}")
  num_robot = int(round(batch * fraction))
  if (fraction > 0.0 and num_robot == 0) or (fraction < 1.0 and num_robot == batch):
    raise ValueError(
      f"robot_fraction {data_config.robot_fraction} of a batch of {batch} leaves one "
      "side empty; change batch_size or robot_fraction"
    )
  if num_robot % process_count or (batch - num_robot) % process_count:
    raise ValueError(
      f"data.batch_size {batch} = {num_robot} robot + {batch - num_robot} VL examples: "
      f"each side must divide by the {process_count} processes"
    )
  return num_robot // process_count, (batch - num_robot) // process_count


def example_transforms(config, prepared) -> tuple[list, transforms.ObservationTransform]:
  """-> (one ObservationTransform per robot dataset of `prepared` (its statistics), the VL transform): the run's
  tokenizers and instruction augmenter, built once."""
  text_tokenizer, action_tokenizer = factory.make_tokenizers(
    config, prepared.action_dim, fast_bpe_path=prepared.fast_bpe_path
  )
  instructions = instruction_aug.from_config(config.data)

  def transform(stats=None):
    return transforms.ObservationTransform.from_config(
      config, text_tokenizer, action_tokenizer, prepared.action_dim, stats, instructions
    )

  return [transform(r.stats) for r in prepared.robot], transform()


def make_dataset(config, prepared, *, seed: int, process_index: int = 0, process_count: int = 1) -> grain.IterDataset:
  """Infinite host-local batch stream (see module docstring)."""
  horizon = config.tokenizer.action_horizon
  robot_transforms, vl_transform = example_transforms(config, prepared)
  num_robot, num_vl = local_batch_split(config.data, process_count)
  cameras = cameras_of(config.data)
  robot = []
  for i, r in enumerate(prepared.robot):
    ds = grain.MapDataset.source(StepChunkSource(r.converted_dir, horizon, cameras))
    robot.append(ds.shuffle(seed=seed + i).repeat().random_map(RobotExample(robot_transforms[i]), seed=seed + 500 + i))
  ds = None
  if num_robot:
    ds = host_batches(_mixed(robot, [r.weight for r in prepared.robot]), num_robot, process_index, process_count)
  if num_vl:
    vl_datasets = []
    for i, v in enumerate(prepared.vl):
      vds = grain.MapDataset.source(convert_vl.VLSource(v.converted_dir))
      vl_datasets.append(
        vds.shuffle(seed=seed + 1000 + i).repeat().random_map(VLExample(vl_transform), seed=seed + 1500 + i)
      )
    vl_ds = host_batches(_mixed(vl_datasets, [v.weight for v in prepared.vl]), num_vl, process_index, process_count)
    if ds is None:  # VL only (robot_fraction 0: VLM pretraining)
      ds = vl_ds
    else:
      n = min(len(ds), len(vl_ds))  # both are (practically) infinite; zip needs equal lengths
      ds = grain.experimental.ZipMapDataset([ds[:n], vl_ds[:n]]).map(_concat_batches)
  it_ds = ds.to_iter_dataset(grain.ReadOptions(num_threads=2, prefetch_buffer_size=2))
  if config.data.num_workers > 0:
    it_ds = it_ds.mp_prefetch(grain.MultiprocessingOptions(num_workers=config.data.num_workers))
  return it_ds
