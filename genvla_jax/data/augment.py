"""Training-time image augmentation (off at evaluation and in the policy): random resized crop (a box
the resize reads from) and colour jitter on the resized uint8 [size,size,3]. Randomness comes from the
per-example generator grain's random_map hands in, so the data order and its augmentations replay
exactly on resume.

config.data.augment: enabled, crop_scale (area fraction range), crop_ratio (aspect range), brightness,
contrast, saturation (each: maximum relative change, 0 = off).
"""

import cv2
import numpy as np


def crop_box(h: int, w: int, rng: np.random.Generator, scale=(0.9, 1.0), ratio=(0.95, 1.05)):
  """A random box (left, top, right, bottom) covering `scale` of the area with aspect in `ratio`."""
  area = rng.uniform(*scale) * h * w
  aspect = np.exp(rng.uniform(np.log(ratio[0]), np.log(ratio[1])))
  ch = int(round(min(h, np.sqrt(area / aspect))))
  cw = int(round(min(w, np.sqrt(area * aspect))))
  top = int(rng.integers(0, h - ch + 1))
  left = int(rng.integers(0, w - cw + 1))
  return left, top, left + cw, top + ch


def color_jitter(
  image: np.ndarray, rng: np.random.Generator, brightness=0.2, contrast=0.2, saturation=0.2
) -> np.ndarray:
  """uint8 [H,W,3] -> uint8: brightness (x b), contrast (around the mean grey level, x c) and saturation
  (blend with the greyscale image, x s), factors drawn from [1-x, 1+x]. The three are linear, so they
  are one weighted sum (OpenCV, in C, rounded and saturated to uint8 once):
  cbs x + cb(1-s) grey(x) + (1-c) b mean(grey(x))."""
  b = rng.uniform(1 - brightness, 1 + brightness) if brightness else 1.0
  c = rng.uniform(1 - contrast, 1 + contrast) if contrast else 1.0
  s = rng.uniform(1 - saturation, 1 + saturation) if saturation else 1.0
  grey = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)  # ITU-R 601 luma, as PIL's "L"
  offset = (1 - c) * b * cv2.mean(grey)[0]
  return cv2.addWeighted(image, c * b * s, cv2.cvtColor(grey, cv2.COLOR_GRAY2RGB), c * b * (1 - s), offset)


def augment_and_resize(image: np.ndarray, size: int, rng: np.random.Generator, cfg) -> np.ndarray:
  """uint8 [H,W,3] -> uint8 [size,size,3]: the resize reads the random crop box (a view, no copy), then
  colour jitter on the small image. `cfg`: config.data.augment (enabled, crop_scale, crop_ratio, brightness,
  contrast, saturation), or None; off: the plain resize (`preprocess.resize_image`)."""
  from genvla_jax.data import preprocess

  if not cfg or not cfg["enabled"]:
    return preprocess.resize_image(image, size)
  box = crop_box(*image.shape[:2], rng, tuple(cfg["crop_scale"]), tuple(cfg["crop_ratio"]))
  resized = preprocess.resize_image(image, size, box)
  return color_jitter(resized, rng, cfg["brightness"], cfg["contrast"], cfg["saturation"])
