"""Training-time image augmentation (off at evaluation and in the policy): random resized crop and
colour jitter, on uint8 [H,W,3] before `preprocess.prepare_image` resizes. Randomness comes from the
per-example generator grain's random_map hands in, so the data order and its augmentations replay
exactly on resume.

config.data.augment: enabled, crop_scale (area fraction range), crop_ratio (aspect range), brightness,
contrast, saturation (each: maximum relative change, 0 = off).
"""

import numpy as np
from PIL import Image


def crop_box(h: int, w: int, rng: np.random.Generator, scale=(0.9, 1.0), ratio=(0.95, 1.05)):
  """A random box (left, top, right, bottom) covering `scale` of the area with aspect in `ratio`."""
  area = rng.uniform(*scale) * h * w
  aspect = np.exp(rng.uniform(np.log(ratio[0]), np.log(ratio[1])))
  ch = int(round(min(h, np.sqrt(area / aspect))))
  cw = int(round(min(w, np.sqrt(area * aspect))))
  top = int(rng.integers(0, h - ch + 1))
  left = int(rng.integers(0, w - cw + 1))
  return left, top, left + cw, top + ch


def random_resized_crop(image: np.ndarray, rng: np.random.Generator, scale=(0.9, 1.0),
                        ratio=(0.95, 1.05)) -> np.ndarray:
  """uint8 [H,W,3] -> a crop covering `scale` of the area with aspect in `ratio` (not resized)."""
  left, top, right, bottom = crop_box(*image.shape[:2], rng, scale, ratio)
  return image[top:bottom, left:right]


def color_jitter(image: np.ndarray, rng: np.random.Generator, brightness=0.2, contrast=0.2,
                 saturation=0.2) -> np.ndarray:
  """uint8 [H,W,3] -> uint8: brightness (x b), contrast (around the mean grey level, x c) and saturation
  (blend with the greyscale image, x s), factors drawn from [1-x, 1+x]. The three are linear, so they
  are applied as one greyscale blend and one lookup table (PIL, in C): cb (s x + (1-s) grey(x)) +
  (1-c) b mean(grey(x))."""
  b = rng.uniform(1 - brightness, 1 + brightness) if brightness else 1.0
  c = rng.uniform(1 - contrast, 1 + contrast) if contrast else 1.0
  s = rng.uniform(1 - saturation, 1 + saturation) if saturation else 1.0
  pil = Image.fromarray(image)
  grey = pil.convert("L")
  mean = float(np.asarray(grey).mean())
  if s != 1.0:
    pil = Image.blend(Image.merge("RGB", (grey, grey, grey)), pil, s)
  offset = (1 - c) * b * mean
  lut = np.clip(np.round(c * b * np.arange(256) + offset), 0, 255).astype(np.uint8).tolist()
  return np.asarray(pil.point(lut * 3))


def augment_and_resize(image: np.ndarray, size: int, rng: np.random.Generator, cfg) -> np.ndarray:
  """uint8 [H,W,3] -> uint8 [size,size,3]: the random crop is taken by the resize itself (one PIL
  call), then colour jitter on the small image. Without augmentation: the plain resize."""
  from genvla_jax.data import preprocess  # pylint: disable=g-import-not-at-top
  if not cfg or not cfg.get("enabled", False):
    return preprocess.resize_image(image, size)
  box = crop_box(*image.shape[:2], rng, tuple(cfg["crop_scale"]), tuple(cfg["crop_ratio"]))
  resized = preprocess.resize_image(image, size, box)
  return color_jitter(resized, rng, cfg["brightness"], cfg["contrast"], cfg["saturation"])


def augment(image: np.ndarray, rng: np.random.Generator, cfg) -> np.ndarray:
  if not cfg or not cfg.get("enabled", False):
    return image
  image = random_resized_crop(image, rng, tuple(cfg["crop_scale"]), tuple(cfg["crop_ratio"]))
  return color_jitter(image, rng, cfg["brightness"], cfg["contrast"], cfg["saturation"])
