"""The one preprocessing path shared by the training pipeline and the policy: images, prompts and
robot state.

Training and acting call these same functions, so they cannot disagree on resizing, value range,
prompt wording or state padding. Imports nothing of the conversion stack (the policy and the server
import this module).
"""

import cv2
import numpy as np

from genvla_jax.models import pixels

cv2.setNumThreads(1)  # the pipeline parallelises over examples (threads, worker processes), not inside one


class BadImageError(ValueError):
  pass


def decode_image(data: bytes) -> np.ndarray:
  """Encoded JPEG/PNG bytes -> uint8 [H,W,3] RGB (OpenCV, libjpeg-turbo; grey / RGBA / 16-bit inputs
  become 8-bit RGB; EXIF orientation ignored, as tf.io.decode_jpeg does)."""
  try:
    image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR_RGB | cv2.IMREAD_IGNORE_ORIENTATION)
  except cv2.error as e:
    image, why = None, str(e).strip().splitlines()[-1]
  else:
    why = "not a JPEG/PNG (or truncated)"
  if image is None:
    raise BadImageError(f"undecodable image ({len(data)} bytes): {why}")
  return image


def resize_image(image, size: int, box=None) -> np.ndarray:
  """uint8 [H,W,3] (any H, W) -> uint8 [size,size,3]: the whole image, or its integer
  (left, top, right, bottom) `box`, resized (see `_resized`). What the training pipeline ships; the
  model maps it to [-1,1] with `to_unit_range` on the accelerator."""
  if box is None:
    return _resized(image, size)
  _check(image)
  left, top, right, bottom = box
  return _resized(image[top:bottom, left:right], size)


to_unit_range = pixels.to_unit_range  # the model's own pixel range (models/pixels.py)


def prepare_image(image, size: int) -> np.ndarray:
  """uint8 [H,W,3] (any H, W) -> float32 [size,size,3] in [-1,1] (bilinear resize, no crop)."""
  return to_unit_range(_resized(image, size))


def _check(image):
  if image.ndim != 3 or image.shape[-1] != 3:
    raise BadImageError(f"expected an RGB image [H,W,3], got shape {image.shape}")
  if image.dtype != np.uint8:
    raise BadImageError(f"expected uint8 pixels, got {image.dtype}")


def _resized(image, size: int) -> np.ndarray:
  """Bilinear with half-pixel centres (as tf.image.resize / big_vision's pp, no antialiasing) when
  shrinking by less than 2x; area averaging (anti-aliased) when shrinking by 2x or more."""
  image = np.asarray(image)
  _check(image)
  h, w = image.shape[:2]
  if (h, w) == (size, size):
    return image
  shrink = max(h, w) / size
  return cv2.resize(image, (size, size), interpolation=cv2.INTER_AREA if shrink >= 2 else cv2.INTER_LINEAR)


STATE_DECIMALS = 2


def prompt_uses_state(template: str) -> bool:
  """True when the prompt template writes the robot state as text (a "{state}" field)."""
  return "{state}" in template


def state_text(state) -> str:
  """Normalized state [S] -> "+0.12 -0.50 +1.00" (STATE_DECIMALS decimals; values outside [-1, 1], the
  1% tails of the normalization, are written as the nearest end)."""
  state = np.clip(np.asarray(state, np.float64).reshape(-1), -1.0, 1.0)
  if not np.all(np.isfinite(state)):
    raise ValueError(f"non-finite robot state {state}")
  return " ".join(f"{v:+.{STATE_DECIMALS}f}" for v in state).replace("-0.00", "+0.00")


def robot_prompt(template: str, instruction: str, state=None) -> str:
  """The policy prompt (prefix) for an instruction, e.g. 'What action should the robot take to {...}?'.
  A template with a "{state}" field also writes the normalized robot state [S] (state_text): such
  prompts need `state`."""
  instruction = instruction.strip().rstrip(".").lower()
  if not instruction:
    raise ValueError("empty instruction")
  if prompt_uses_state(template):
    if state is None:
      raise ValueError(f"the prompt {template!r} writes the robot state, but no state was given")
    return template.format(instruction=instruction, state=state_text(state))
  return template.format(instruction=instruction)


def pad_state(state, state_dim: int) -> np.ndarray:
  """[..., S] -> [..., state_dim] with zeros after the dataset's own S values."""
  state = np.asarray(state, np.float32)
  if state.shape[-1] > state_dim:
    raise ValueError(f"state of {state.shape[-1]} values but the model takes {state_dim}")
  return np.pad(state, [(0, 0)] * (state.ndim - 1) + [(0, state_dim - state.shape[-1])])
