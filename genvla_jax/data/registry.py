"""Per-dataset standardization: how one RLDS step of a published dataset becomes our step record.

A standardized step is {"image": encoded JPEG/PNG bytes, "state": float32 [S], "action": float32 [D],
"instruction": str}. Step dicts come from `rlds.read_episodes` with flattened keys ("observation/image_0").
`normalize_mask[d]` is False for dimensions kept as they are (gripper open/close), True for dimensions
mapped to [-1,1] with the dataset's q01/q99 statistics. Add a dataset by adding a DatasetSpec here.
"""

import dataclasses
from typing import Callable

import numpy as np


@dataclasses.dataclass(frozen=True)
class DatasetSpec:
  name: str
  standardize: Callable[[dict], dict]
  normalize_mask: tuple[bool, ...]


def _text(x) -> str:
  return x.decode("utf-8") if isinstance(x, bytes) else str(x)


def _plain_step(image_key: str):
  def standardize(step):
    return {"image": step[image_key],
            "state": np.asarray(step["observation/state"], np.float32),
            "action": np.asarray(step["action"], np.float32),
            "instruction": _text(step["language_instruction"])}
  return standardize


REGISTRY = {
    # The project's own demo task (data/demo.py): 2-D offset of the named target from the agent.
    "demo_targets": DatasetSpec("demo_targets", _plain_step("observation/image"), (True, True)),
    # BridgeData V2 as published in Open X-Embodiment: 7-D delta EEF (xyz, rpy) + gripper in [0, 1].
    "bridge": DatasetSpec("bridge", _plain_step("observation/image_0"), (True,) * 6 + (False,)),
}


def get(name: str) -> DatasetSpec:
  if name not in REGISTRY:
    raise KeyError(f"unknown robot dataset {name!r}; registered: {sorted(REGISTRY)}")
  return REGISTRY[name]
