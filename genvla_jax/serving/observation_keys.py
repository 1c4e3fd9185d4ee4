"""Where a client's request holds each camera, the robot state and the prompt: the key styles of existing
robot runtimes, so that they can point at this server unchanged (serve.py --obs_style).

Styles (request keys as openpi's example runtimes send them; openpi examples/*/main.py and env.py):
- genvla: {"image", "prompt", "state"}; a policy's further cameras by their own names (config.data.cameras).
  Also accepts "observation/image", "instruction", "observation/state" (what this server always took).
- libero (examples/libero/main.py): "observation/image" (agent view), "observation/wrist_image",
  "observation/state" (eef position, axis-angle, gripper: 8 numbers), "prompt".
- droid (examples/droid/main.py): "observation/exterior_image_1_left", "observation/wrist_image_left"
  (and "observation/exterior_image_2_left" for a policy that sees the second exterior view), the state as
  "observation/joint_position" (7) + "observation/gripper_position" (1), concatenated in that order, "prompt".
- aloha (examples/aloha_real/env.py, aloha_sim/env.py): a nested map "images": {"cam_high", "cam_left_wrist",
  "cam_right_wrist", "cam_low"} of [3,H,W] frames (channels first), "state" (14 joint positions); the runtime
  sends no prompt: give the server --default_prompt.

A key with "/" is looked up as written first ("observation/image" is one flat key in openpi's requests),
then as a path through nested maps ("images/cam_high" is obs["images"]["cam_high"]).

Which request key feeds which of the policy's cameras (`resolve`): the policy's cameras are named by its
config (config.data.cameras, in order). A camera named like one of the style's takes that camera's key; a
policy whose cameras are unnamed ([]) takes the style's cameras in the style's order (its primary camera
first); a one-camera policy whose camera the style does not name takes the style's primary camera.
`overrides` ({camera name: request key}, serve.py --camera_keys) map any camera to any key.
"""

import dataclasses
from collections.abc import Mapping, Sequence

DEFAULT_STYLE = "genvla"
GENVLA_PRIMARY = ("image", "observation/image")


@dataclasses.dataclass(frozen=True)
class Style:
  """One runtime's request layout. `cameras`: (camera name, request key), its primary camera first;
  `state`: the request keys whose values, concatenated in this order, are the robot state (each with its
  accepted alternatives); `prompt`: keys that may hold the instruction, in order of preference."""

  name: str
  cameras: tuple[tuple[str, str], ...]
  state: tuple[tuple[str, ...], ...]
  prompt: tuple[str, ...] = ("prompt",)
  source: str = ""


STYLES = {
  "genvla": Style(
    "genvla", (("image", "image"),), (("state", "observation/state"),), ("prompt", "instruction"), "this server"
  ),
  "libero": Style(
    "libero",
    (("image", "observation/image"), ("wrist_image", "observation/wrist_image")),
    (("observation/state",),),
    source="openpi examples/libero/main.py",
  ),
  "droid": Style(
    "droid",
    (
      ("exterior_image_1_left", "observation/exterior_image_1_left"),
      ("wrist_image_left", "observation/wrist_image_left"),
      ("exterior_image_2_left", "observation/exterior_image_2_left"),
    ),
    (("observation/joint_position",), ("observation/gripper_position",)),
    source="openpi examples/droid/main.py",
  ),
  "aloha": Style(
    "aloha",
    (
      ("cam_high", "images/cam_high"),
      ("cam_left_wrist", "images/cam_left_wrist"),
      ("cam_right_wrist", "images/cam_right_wrist"),
      ("cam_low", "images/cam_low"),
    ),
    (("state",),),
    source="openpi examples/aloha_real/env.py",
  ),
}


@dataclasses.dataclass(frozen=True)
class KeyMap:
  """A style resolved for one policy: per policy camera (in the order act() takes them) its name and the
  request keys that may hold its frame (the first is the one to send); the state's parts; the prompt keys;
  the prompt used when a request has none (None: a request must carry one)."""

  style: str
  cameras: tuple[str, ...]
  camera_keys: tuple[tuple[str, ...], ...]
  state_keys: tuple[tuple[str, ...], ...]
  prompt_keys: tuple[str, ...]
  default_prompt: str | None = None

  @property
  def num_cameras(self) -> int:
    return len(self.cameras)

  def describe(self, state_dim: int) -> dict:
    """The request layout, for the metadata a client gets on connect: {request key: what it holds}."""
    several = self.num_cameras > 1
    out = {}
    for name, keys in zip(self.cameras, self.camera_keys):
      optional = " (optional: a missing camera is masked out)" if several else ""
      out[keys[0]] = f"uint8 [H,W,3] or [3,H,W]: camera {name!r}{optional}"
    prompt = "str" + (f" (default {self.default_prompt!r})" if self.default_prompt else "")
    out[self.prompt_keys[0]] = prompt
    if state_dim:
      if len(self.state_keys) == 1:
        out[self.state_keys[0][0]] = f"float32 [{state_dim}] in the robot's units"
      else:
        parts = " + ".join(k[0] for k in self.state_keys)
        for keys in self.state_keys:
          out[keys[0]] = f"float32 [...]: concatenated {parts} = [{state_dim}] in the robot's units"
    return out


def style(name: str) -> Style:
  if name not in STYLES:
    raise ValueError(f"unknown observation style {name!r}; styles: {', '.join(STYLES)}")
  return STYLES[name]


def parse_overrides(text: str | None) -> dict[str, str]:
  """'wrist=observation/wrist_image,front=observation/image' -> {camera name: request key}."""
  out = {}
  for item in (text or "").split(","):
    if not item.strip():
      continue
    name, sep, key = item.partition("=")
    if not sep or not name.strip() or not key.strip():
      raise ValueError(f"camera key {item.strip()!r}: write CAMERA=REQUEST_KEY (e.g. wrist=observation/wrist_image)")
    out[name.strip()] = key.strip()
  return out


def resolve(
  style_name: str,
  cameras: Sequence[str],
  overrides: Mapping[str, str] | None = None,
  default_prompt: str | None = None,
) -> KeyMap:
  """The key map of style `style_name` for a policy whose cameras are `cameras` (its names in act()'s
  order, "" where unnamed; at least one). ValueError names what does not map (see the module docstring)."""
  s = style(style_name)
  cameras = [str(c) for c in cameras] or [""]
  overrides = dict(overrides or {})
  by_name = dict(s.cameras)
  names, keys = [], []
  for i, name in enumerate(cameras):
    if s.name == DEFAULT_STYLE:  # cameras by their own names; the primary one as "image"
      names.append(name or ("image" if i == 0 else f"image_{i}"))
      own = GENVLA_PRIMARY if i == 0 else (names[-1],)
      keys.append((*own, name) if i == 0 and name and name not in GENVLA_PRIMARY else own)
    elif name in by_name:
      names.append(name)
      keys.append((by_name[name],))
    elif not name and i < len(s.cameras):  # unnamed: the style's cameras in order
      names.append(s.cameras[i][0])
      keys.append((s.cameras[i][1],))
    elif len(cameras) == 1:  # one camera the style does not name: its primary camera
      names.append(name or s.cameras[0][0])
      keys.append((s.cameras[0][1],))
    elif name in overrides:
      names.append(name)
      keys.append(())
    else:
      raise ValueError(
        f"the policy's camera {name or i!r} has no key in the {s.name!r} style (its cameras: "
        f"{[c for c, _ in s.cameras]}): name one with --camera_keys={name or 'CAMERA'}=REQUEST_KEY"
      )
  unknown = sorted(set(overrides) - set(names))
  if unknown:
    raise ValueError(f"camera keys for {unknown}: the policy has no such camera (its cameras: {names})")
  keys = [(overrides[n],) if n in overrides else k for n, k in zip(names, keys)]
  taken = [k[0] for k in keys]
  if len(set(taken)) < len(taken):
    raise ValueError(f"two of the policy's cameras {names} read the same request key: {taken}")
  return KeyMap(s.name, tuple(names), tuple(keys), s.state, s.prompt, default_prompt or None)
