"""The one preprocessing path shared by the training pipeline and the policy: images and prompts.

Training and acting call these same functions, so they cannot disagree on resizing, value range or
prompt wording.
"""

import io

import numpy as np
from PIL import Image


class BadImageError(ValueError):
  pass


def decode_image(data: bytes) -> np.ndarray:
  """Encoded JPEG/PNG bytes -> uint8 [H,W,3]."""
  try:
    with Image.open(io.BytesIO(data)) as im:
      return np.asarray(im.convert("RGB"))
  except Exception as e:  # PIL raises several exception types for bad data
    raise BadImageError(f"undecodable image ({len(data)} bytes): {e}") from e


def resize_image(image, size: int, box=None) -> np.ndarray:
  """uint8 [H,W,3] (any H, W) -> uint8 [size,size,3] (bilinear resize of the whole image, or of the
  (left, top, right, bottom) `box`): what the training pipeline ships; the model maps it to [-1,1]
  with `to_unit_range` on the accelerator."""
  if box is None:
    return _resized(image, size)
  _check(image)
  return np.asarray(Image.fromarray(image).resize((size, size), Image.BILINEAR, box=box))


def to_unit_range(images):
  """uint8 pixels -> float32 in [-1,1]; float input is returned as is (works on numpy and jax arrays)."""
  if images.dtype == np.uint8:
    return images.astype(np.float32) / 127.5 - 1.0
  return images


def prepare_image(image, size: int) -> np.ndarray:
  """uint8 [H,W,3] (any H, W) -> float32 [size,size,3] in [-1,1] (bilinear resize, no crop)."""
  return to_unit_range(_resized(image, size))


def _check(image):
  if image.ndim != 3 or image.shape[-1] != 3:
    raise BadImageError(f"expected an RGB image [H,W,3], got shape {image.shape}")
  if image.dtype != np.uint8:
    raise BadImageError(f"expected uint8 pixels, got {image.dtype}")


def _resized(image, size: int) -> np.ndarray:
  image = np.asarray(image)
  _check(image)
  if image.shape[:2] != (size, size):
    image = np.asarray(Image.fromarray(image).resize((size, size), Image.BILINEAR))
  return image


def robot_prompt(template: str, instruction: str) -> str:
  """The policy prompt (prefix) for an instruction, e.g. 'What action should the robot take to {...}?'."""
  instruction = instruction.strip().rstrip(".").lower()
  if not instruction:
    raise ValueError("empty instruction")
  return template.format(instruction=instruction)
