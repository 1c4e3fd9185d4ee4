"""Per-dataset standardization: how one RLDS step of a published dataset becomes our step record.

A standardized step (`standardize_step`) is {"image": encoded JPEG/PNG bytes of the primary camera, "state":
float32 [S], "action": float32 [D], "instruction": str}, plus "images": {name: bytes} for the entry's other
cameras when it has several. Step dicts come from `rlds.RLDSDataset` with flattened keys ("observation/image_0").
`standardize` gives state, action and instruction; the frames come from the entry's `cameras` (Camera: the
name converted records, meta.json "cameras" and config.data.cameras use; the step key; whether an all-zero
frame is the dataset's padding for a view the episode lacks), primary first. The primary camera is required
(a step without it is skipped); another camera a step lacks (no key, empty bytes, or a padding frame: see
Camera.zeros_missing, applied by the converter) is left out of that step's "images", and the pipeline masks it.
Camera lists follow each dataset's published features.json: Bridge V2 (bridge_dataset 1.0.0) has
observation/image_0..image_3, RT-1 (fractal20220817_data 0.1.0) only observation/image, DROID (droid 1.0.1)
observation/exterior_image_1_left, exterior_image_2_left and wrist_image_left.
`episode_transform` (optional) rewrites an episode's standardized steps where a convention needs the
whole episode (relative -> absolute gripper, actions relabelled from states); it may drop steps.
`normalize_mask[d]` is False for dimensions kept as they are (gripper open/close), True for dimensions
mapped to [-1,1] with the dataset's q01/q99 statistics. Add a dataset by adding a DatasetSpec to REGISTRY
here (and, for a published dataset, its TFDS name to PUBLISHED_NAMES). Every name is resolved by `resolve`:
the short name ("bridge") and the name the dataset is published under ("bridge_dataset", the "name" of its
dataset_info.json) give the same entry.

LeRobot datasets (data/lerobot.py, data/convert_lerobot.py) are described by a LeRobotSpec in LEROBOT
instead: which of the dataset's features are the cameras (in order; the first is the primary camera), the
state, the action and the instruction, which action dimensions are a gripper (kept, not normalized) and
the gripper's convention. Fields left None take defaults from the dataset's meta/info.json
(lerobot.resolve_mapping); the converter's flags override any field. `resolve` knows these names too, so a
data.robot entry can name a finished LeRobot conversion by its entry.

Named mixtures (MIXTURES, the configs' `mixture=` option) list data.robot entries; MIXTURE_CAMERAS gives the
cameras each mixture's examples carry (data.cameras, model.num_cameras); an entry of a LeRobot dataset names
ROBOT_DIR, the user's finished conversion (`robot_dir=` option).

Conventions after standardization (all RLDS datasets): action = [xyz delta (3), rotation delta (3), gripper
(1)] with gripper absolute, 1 = open, 0 = closed. LeRobot entries keep their dataset's action space (aloha,
droid_lerobot: joint positions), only the gripper mapped by its convention.
"""

import dataclasses
import os
from typing import Callable

import numpy as np

from genvla_jax import cli


class UnknownDatasetError(cli.UserError, KeyError):
  """A robot dataset name that is neither an entry of REGISTRY nor in PUBLISHED_NAMES."""

  def __str__(self):
    return str(self.args[0])


@dataclasses.dataclass(frozen=True)
class Camera:
  """One camera of an RLDS dataset. `name`: how converted records (the primary as "image", the others in
  "images"), meta.json "cameras" and config.data.cameras call it; `key`: its flattened step key;
  `zeros_missing`: an all-zero frame is the dataset's stand-in for a view the episode does not have (Bridge V2
  stores absent views so, with episode_metadata/has_image_k flags that are False even for views that exist, in
  the sample and in the published release: rail-berkeley/bridge_data_v2 issue 40), so the converter leaves it
  out of the record; False (the primary camera always): a black frame is kept as a picture."""

  name: str
  key: str
  zeros_missing: bool = False


ONE_CAMERA = (Camera("image", "observation/image"),)  # the project's own recordings, RT-1


@dataclasses.dataclass(frozen=True)
class DatasetSpec:
  name: str
  standardize: Callable[[dict], dict]
  normalize_mask: tuple[bool, ...]
  episode_transform: Callable[[list[dict]], list[dict]] | None = None
  cameras: tuple[Camera, ...] = ONE_CAMERA  # primary first (its frame is the record's "image")

  def __post_init__(self):
    names = [c.name for c in self.cameras]
    if not names or len(set(names)) != len(names) or not all(names):
      raise ValueError(f"DatasetSpec {self.name!r}: cameras must name at least one camera, each once: {names}")
    if self.cameras[0].zeros_missing:
      raise ValueError(f"DatasetSpec {self.name!r}: the primary camera is required (zeros_missing=False)")

  @property
  def camera_names(self) -> list[str]:
    """The cameras, in order (meta.json "cameras"; the first is the records' "image")."""
    return [c.name for c in self.cameras]


def standardize_step(spec: DatasetSpec, step: dict) -> dict:
  """One flattened RLDS step -> its standardized step (module docstring): `spec.standardize`'s fields, the
  primary camera's bytes as "image" (KeyError when the step lacks it) and, for an entry with several cameras,
  "images" = {name: bytes} of the other cameras the step has (key present, bytes non-empty)."""
  out = dict(spec.standardize(step))
  out["image"] = step[spec.cameras[0].key]
  if len(spec.cameras) > 1:
    out["images"] = {
      c.name: step[c.key] for c in spec.cameras[1:] if isinstance(step.get(c.key), bytes) and step[c.key]
    }
  return out


def _text(x) -> str:
  return x.decode("utf-8") if isinstance(x, bytes) else str(x)


def _plain_step():
  def standardize(step):
    return {
      "state": np.asarray(step["observation/state"], np.float32),
      "action": np.asarray(step["action"], np.float32),
      "instruction": _text(step["language_instruction"]),
    }

  return standardize


def rel2abs_gripper(relative) -> np.ndarray:
  """Relative gripper commands [T] (> 0.1: close, < -0.1: open, else no change; fractal's convention)
  -> absolute gripper state [T] in {0, 1}, 1 = open. Before the first command the gripper is taken to
  be in the opposite state (the first command is not redundant); with no command at all, open."""
  command = np.where(np.asarray(relative) < -0.1, 1.0, np.where(np.asarray(relative) > 0.1, -1.0, 0.0))
  issued = np.flatnonzero(command)
  state = -command[issued[0]] if len(issued) else 1.0
  out = np.empty(len(command), np.float32)
  for t, c in enumerate(command):
    state = c if c != 0 else state
    out[t] = (state + 1) / 2
  return out


def _fractal_step(step):
  """RT-1 (fractal20220817_data): action dict -> [world_vector, rotation_delta, gripper (relative)];
  state = [base_pose_tool_reached (7: xyz + quaternion), gripper_closed (1)]."""
  action = np.concatenate(
    [step["action/world_vector"], step["action/rotation_delta"], step["action/gripper_closedness_action"]]
  ).astype(np.float32)
  state = np.concatenate([step["observation/base_pose_tool_reached"], step["observation/gripper_closed"]]).astype(
    np.float32
  )
  return {
    "state": state,
    "action": action,
    "instruction": _text(step["observation/natural_language_instruction"]),
  }


def _fractal_episode(steps):
  gripper = rel2abs_gripper([s["action"][6] for s in steps])
  return [dict(s, action=np.concatenate([s["action"][:6], g[None]]).astype(np.float32)) for s, g in zip(steps, gripper)]


def _relabel_from_states(steps):
  """BridgeData V2: the recorded xyz/rpy commands are offset from the motion; use the achieved state
  change instead (action[:6] = state[t+1][:6] - state[t][:6], gripper kept); the last step has no
  successor and is dropped."""
  return [
    dict(s, action=np.concatenate([n["state"][:6] - s["state"][:6], s["action"][6:]]).astype(np.float32))
    for s, n in zip(steps[:-1], steps[1:])
  ]


def _droid_step(step):
  """DROID as published in RLDS (droid 1.0.1: steps/observation, steps/action_dict, language_instruction; the
  release's schema in droid-dataset/droid docs/the-droid-dataset.md). Action = [action_dict/cartesian_velocity
  (6), 1 - action_dict/gripper_position (1)]: the OXE standardization's choice (openvla's droid_baseact_transform,
  prismatic/vla/datasets/rlds/oxe/utils/droid_utils.py), i.e. this project's [xyz delta, rotation delta,
  gripper 1 = open]. The Cartesian velocity is the teleoperation command per 15 Hz step, each half scaled to norm
  <= 1 (droid/robot_ik/robot_ik_solver.py: norm 1 = 0.075 m, 0.15 rad per step; base frame, Euler xyz), so a
  delta in units of the robot's step; DROID's gripper_position is 0 = open, 1 = closed (droid/franka/robot.py:
  1 - width / max width), hence 1 - g. The release's own steps/action (7) is not used: its schema calls it joint
  velocities + gripper, the builder fork of droid_dataset_builder writes Cartesian position + gripper, so the
  explicit action_dict fields are read instead. State = [observation/cartesian_position (6: xyz, Euler xyz),
  observation/gripper_position (1, 0 = open)] (openvla's "proprio"). Instruction: language_instruction (the
  release's other two annotations, language_instruction_2 / _3, are not read; episodes without an annotation
  have an empty one, kept as published)."""
  gripper = np.asarray(step["action_dict/gripper_position"], np.float32)
  action = np.concatenate([np.asarray(step["action_dict/cartesian_velocity"], np.float32), 1.0 - gripper])
  state = np.concatenate([step["observation/cartesian_position"], step["observation/gripper_position"]])
  return {
    "state": state.astype(np.float32),
    "action": action.astype(np.float32),
    "instruction": _text(step["language_instruction"]),
  }


# DROID's three cameras (droid 1.0.1 features: observation/exterior_image_1_left, exterior_image_2_left,
# wrist_image_left, each 180 x 320 x 3 JPEG; the left image of each ZED stereo pair): the first exterior camera is
# the primary one (as openvla's OXE config makes it: prismatic/vla/datasets/rlds/oxe/configs.py "droid"), then the
# second exterior camera and the wrist camera. Every episode records all three: no padding frames.
DROID_CAMERAS = tuple(
  Camera(name, f"observation/{name}") for name in ("exterior_image_1_left", "exterior_image_2_left", "wrist_image_left")
)

# BridgeData V2's four camera slots (features.json of bridge_dataset 1.0.0: observation/image_0..image_3):
# image_0 the fixed main view, in every episode; image_1..image_3 the other views, which many episodes lack
# (all-zero frames there: in the shared sample image_3 is all zeros in every step).
BRIDGE_CAMERAS = (Camera("image_0", "observation/image_0"),) + tuple(
  Camera(f"image_{k}", f"observation/image_{k}", zeros_missing=True) for k in (1, 2, 3)
)

REGISTRY = {
  # The project's own demo task (data/demo.py): 2-D offset of the named target from the agent.
  "demo_targets": DatasetSpec("demo_targets", _plain_step(), (True, True)),
  # The project's MuJoCo tabletop benchmark (eval/envs/tabletop.py, recorded by data/sim_record.py):
  # end-effector delta xyz in metres + gripper (1 = closed, not normalized).
  "tabletop": DatasetSpec("tabletop", _plain_step(), (True, True, True, False)),
  # The same recorded with a second camera on the gripper, looking down (data/sim_record.py CAMERA_DATASETS)
  "tabletop_wrist": DatasetSpec(
    "tabletop_wrist",
    _plain_step(),
    (True, True, True, False),
    cameras=(Camera("image", "observation/image"), Camera("wrist_image", "observation/wrist_image")),
  ),
  # MetaWorld MT10 expert demonstrations (data/sim_record.py): xyz effort in [-1, 1] + gripper effort.
  "metaworld_mt10": DatasetSpec("metaworld_mt10", _plain_step(), (True, True, True, False)),
  # BridgeData V2 as published in Open X-Embodiment: 7-D delta EEF (xyz, rpy) + gripper in [0, 1].
  "bridge": DatasetSpec("bridge", _plain_step(), (True,) * 6 + (False,), cameras=BRIDGE_CAMERAS),
  "bridge_relabeled": DatasetSpec(
    "bridge_relabeled", _plain_step(), (True,) * 6 + (False,), _relabel_from_states, cameras=BRIDGE_CAMERAS
  ),
  # RT-1 robot data as published in Open X-Embodiment (fractal20220817_data); relative gripper made
  # absolute (1 = open) per episode. One camera: observation/image (no wrist view in the release).
  "fractal": DatasetSpec("fractal", _fractal_step, (True,) * 6 + (False,), _fractal_episode),
  # DROID 1.0.1 as published in RLDS (gs://gresearch/robotics/droid/1.0.1): Cartesian velocity + gripper (1 =
  # open, not normalized); three cameras (see _droid_step, DROID_CAMERAS).
  "droid": DatasetSpec("droid", _droid_step, (True,) * 6 + (False,), cameras=DROID_CAMERAS),
}

# The names datasets are published under (their TFDS builder name: dataset_info.json's "name", the directory
# of the Open X-Embodiment release) -> the REGISTRY entry that standardizes them. The project's own
# recordings (demo_targets, tabletop, metaworld_mt10) and DROID (droid/1.0.1) are published under their entry's name.
PUBLISHED_NAMES = {
  "bridge_dataset": "bridge",  # BridgeData V2 in OXE: bridge_dataset/1.0.0
  "fractal20220817_data": "fractal",  # RT-1 in OXE: fractal20220817_data/0.1.0
}


GRIPPER_CONVENTIONS = {
  # how a LeRobot dataset's gripper action maps to this project's (absolute, 1 = open, 0 = closed)
  "keep": "kept as the dataset has it",
  "closed_is_1": "1 = closed, 0 = open -> 1 - g",
  "signed_close_positive": "+1 = close, -1 = open (robosuite / LIBERO's env) -> (1 - g) / 2",
  "signed_open_positive": "+1 = open, -1 = close -> (1 + g) / 2",
}


@dataclasses.dataclass(frozen=True)
class LeRobotSpec:
  """Feature mapping of a LeRobot dataset (see the module docstring); None: from meta/info.json."""

  name: str
  cameras: tuple[str, ...] | None = None  # feature keys; None: every video / image feature, in info.json order
  state_key: str | None = None  # None: "observation.state" (or "state")
  action_key: str | None = None  # None: "action" (or "actions")
  instruction_key: str = "task_index"  # an index into the task table, or a string column
  gripper_dims: tuple[int, ...] | None = None  # None: action dims whose info.json name contains "gripper"
  gripper: str = "keep"  # GRIPPER_CONVENTIONS


LEROBOT = {
  # Any LeRobot dataset, everything from its meta/info.json (lerobot.resolve_mapping).
  "lerobot": LeRobotSpec("lerobot"),
  # LIBERO as openpi publishes it (examples/libero/convert_libero_data_to_lerobot.py): agent-view + wrist
  # images, state [8], actions [7] (delta EEF + gripper, -1 = open / +1 = close as the env takes it: kept).
  # The scripted expert's recordings (data/libero_record.py) are written in this same layout: this entry reads both.
  "libero": LeRobotSpec("libero", ("image", "wrist_image"), "state", "actions", "task_index", (6,), "keep"),
  # ALOHA (lerobot/aloha_*): 14 joint positions per step, grippers at 6 and 13 (positions: kept).
  "aloha": LeRobotSpec("aloha", None, "observation.state", "action", "task_index", (6, 13), "keep"),
  # DROID 1.0.1 as LeRobot publishes it (lerobot/droid_1.0.1, v3.0; cadene/droid_1.0.1, v2.1), written by
  # lerobot's examples/port_datasets/droid_rlds/port_droid.py from the RLDS release: cameras
  # observation.images.exterior_1_left / exterior_2_left / wrist_left (the RLDS exterior_image_1_left, ... ; 180 x
  # 320 video), in the RLDS entry's order. Action: LeRobot's own "action" [8] = the commanded joint positions (7,
  # absolute, radians) + gripper position (1, 0 = open / 1 = closed -> 1 - g); state: "observation.state" [8] =
  # joint positions + gripper. Not the RLDS entry's Cartesian velocity: one LeRobot column holds the action and
  # none holds velocity + gripper together (action.cartesian_velocity [6] has no gripper; action.original [7] is
  # the RLDS steps/action, whose meaning the release documents inconsistently), and joint positions are what
  # openpi trains DROID on (src/openpi/training/droid_rlds_dataset.py, JOINT_POSITION by default). Its name is
  # not "droid": that is the RLDS entry.
  "droid_lerobot": LeRobotSpec(
    "droid_lerobot",
    tuple(f"observation.images.{c}" for c in ("exterior_1_left", "exterior_2_left", "wrist_left")),
    "observation.state",
    "action",
    "task_index",
    (7,),
    "closed_is_1",
  ),
}


def known_names() -> str:
  """The accepted names, worded for a message: entries, then published name -> entry, then LeRobot entries."""
  published = ", ".join(f"{p} -> {e}" for p, e in sorted(PUBLISHED_NAMES.items()))
  return f"{', '.join(sorted(REGISTRY))} (published names: {published}; LeRobot entries: {', '.join(LEROBOT)})"


def is_lerobot(name: str) -> bool:
  """True for a LeRobot entry's name (LEROBOT)."""
  return name in LEROBOT


def lerobot(name: str) -> LeRobotSpec:
  """The LeRobot entry `name`; UnknownDatasetError listing them otherwise."""
  if name not in LEROBOT:
    raise UnknownDatasetError(
      f"unknown LeRobot entry {name!r} (--dataset); known: {', '.join(LEROBOT)} (or give the features by flag: "
      "--cameras, --state_key, --action_key, --gripper_dims with --dataset=lerobot); to add one, give it a "
      "LeRobotSpec in LEROBOT in genvla_jax/data/registry.py"
    )
  return LEROBOT[name]


def resolve(name: str, where: str = "") -> str:
  """A dataset name as written in a config, on a command line or in dataset_info.json -> its REGISTRY
  entry's name (a short name is itself; a published name maps through PUBLISHED_NAMES). `where` (e.g.
  "--dataset") names the culprit in the UnknownDatasetError an unknown name raises."""
  entry = PUBLISHED_NAMES.get(name, name)
  if entry not in REGISTRY and entry not in LEROBOT:
    raise UnknownDatasetError(
      f"unknown robot dataset {name!r}{f' ({where})' if where else ''}; known: {known_names()}; to add one, give "
      "it a DatasetSpec in REGISTRY in genvla_jax/data/registry.py (and its published name in PUBLISHED_NAMES)"
    )
  return entry


# A mixture entry's path that is no place under data.rlds_root but the user's finished LeRobot conversion
# (`python -m genvla_jax.data.convert_lerobot --dataset=ENTRY --root=DIR --out=OUT`): mixture(name, robot_dir=OUT)
# writes OUT there, and data/prepare.py reads a finished --out as it is.
ROBOT_DIR = "<robot_dir>"

# Named mixtures: dataset entries for config.data.robot (paths relative to data.rlds_root, as the OXE
# release lays them out, or ROBOT_DIR) with sampling weights.
MIXTURES = {
  "paper": [
    dict(name="fractal", path="fractal20220817_data/0.1.0", split="train", weight=1.0),
    dict(name="bridge", path="bridge_dataset/1.0.0", split="train", weight=1.0),
  ],
  "bridge": [dict(name="bridge", path="bridge_dataset/1.0.0", split="train", weight=1.0)],
  "fractal": [dict(name="fractal", path="fractal20220817_data/0.1.0", split="train", weight=1.0)],
  "droid": [dict(name="droid", path="droid/1.0.1", split="train", weight=1.0)],
  "libero": [dict(name="libero", path=ROBOT_DIR, split="train", weight=1.0)],
  "droid_lerobot": [dict(name="droid_lerobot", path=ROBOT_DIR, split="train", weight=1.0)],
}

# The cameras every example of a mixture carries, in order (config.data.cameras; model.num_cameras = their
# count): names as the converted records call them (an RLDS entry's Camera.name; a LeRobot conversion's feature
# keys without "observation.images."). [] = each dataset's primary camera alone, the batches of one camera.
MIXTURE_CAMERAS = {
  "paper": [],
  "bridge": [],
  "fractal": [],
  "droid": [c.name for c in DROID_CAMERAS],
  "libero": ["image", "wrist_image"],  # agent view, wrist (openpi's LIBERO conversion)
  "droid_lerobot": ["exterior_1_left", "exterior_2_left", "wrist_left"],
}


def lerobot_mixtures() -> list[str]:
  """The mixtures that read a converted LeRobot dataset (an entry whose path is ROBOT_DIR), sorted."""
  return sorted(m for m, entries in MIXTURES.items() if any(e["path"] == ROBOT_DIR for e in entries))


def mixture(name: str, robot_dir: str = "") -> list[dict]:
  """The data.robot entries of mixture `name` (copies). An entry whose path is ROBOT_DIR gets `robot_dir` (a
  finished convert_lerobot --out, made absolute); ValueError when such a mixture is not given one, or one is
  given to a mixture that reads none."""
  if name not in MIXTURES:
    raise KeyError(f"unknown mixture {name!r}; known: {sorted(MIXTURES)}")
  entries = [dict(e) for e in MIXTURES[name]]
  converted = [e for e in entries if e["path"] == ROBOT_DIR]
  if converted and not robot_dir:
    raise ValueError(
      f"mixture={name} reads a LeRobot dataset converted first: give the conversion's directory as robot_dir=OUT "
      f"(python -m genvla_jax.data.convert_lerobot --dataset={converted[0]['name']} --root=DIR --out=OUT)"
    )
  if robot_dir and not converted:
    raise ValueError(
      f"robot_dir={robot_dir} is for the mixtures of converted LeRobot datasets ({', '.join(lerobot_mixtures())}); "
      f"mixture={name} reads its datasets under data.rlds_root"
    )
  for entry in converted:
    entry["path"] = os.path.abspath(os.path.expanduser(robot_dir))
  return entries


def mixture_cameras(name: str) -> list[str]:
  """The cameras mixture `name`'s examples carry, in order (MIXTURE_CAMERAS; []: the primary camera alone)."""
  if name not in MIXTURE_CAMERAS:
    raise KeyError(f"unknown mixture {name!r}; known: {sorted(MIXTURE_CAMERAS)}")
  return list(MIXTURE_CAMERAS[name])


def get(name: str) -> DatasetSpec:
  """The RLDS entry of a short or published name (`resolve`); a LeRobot entry's name is an
  UnknownDatasetError naming the LeRobot converter."""
  entry = resolve(name)
  if entry in LEROBOT:
    raise UnknownDatasetError(
      f"{name!r} is a LeRobot entry, not an RLDS dataset: convert its LeRobot dataset with python -m "
      f"genvla_jax.data.convert_lerobot --root=DIR --dataset={name} --out=OUT and give OUT as the data.robot "
      "entry's path"
    )
  return REGISTRY[entry]
