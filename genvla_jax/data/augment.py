"""Training-time image augmentation (off at evaluation and in the policy): random resized crop and
colour jitter, on uint8 [H,W,3] before `preprocess.prepare_image` resizes. Randomness comes from the
per-example generator grain's random_map hands in, so the data order and its augmentations replay
exactly on resume.

config.data.augment: enabled, crop_scale (area fraction range), crop_ratio (aspect range), brightness,
contrast, saturation (each: maximum relative change, 0 = off).
"""

import numpy as np


def random_resized_crop(image: np.ndarray, rng: np.random.Generator, scale=(0.9, 1.0),
                        ratio=(0.95, 1.05)) -> np.ndarray:
  """uint8 [H,W,3] -> a crop covering `scale` of the area with aspect in `ratio` (not resized)."""
  h, w = image.shape[:2]
  area = rng.uniform(*scale) * h * w
  aspect = np.exp(rng.uniform(np.log(ratio[0]), np.log(ratio[1])))
  ch = int(round(min(h, np.sqrt(area / aspect))))
  cw = int(round(min(w, np.sqrt(area * aspect))))
  top = int(rng.integers(0, h - ch + 1))
  left = int(rng.integers(0, w - cw + 1))
  return image[top:top + ch, left:left + cw]


def color_jitter(image: np.ndarray, rng: np.random.Generator, brightness=0.2, contrast=0.2,
                 saturation=0.2) -> np.ndarray:
  """uint8 [H,W,3] -> uint8, brightness / contrast / saturation each scaled by a factor in [1-x, 1+x]."""
  x = image.astype(np.float32)
  if brightness:
    x = x * rng.uniform(1 - brightness, 1 + brightness)
  if contrast:
    mean = x.mean()
    x = (x - mean) * rng.uniform(1 - contrast, 1 + contrast) + mean
  if saturation:
    grey = x @ np.array([0.299, 0.587, 0.114], np.float32)
    x = (x - grey[..., None]) * rng.uniform(1 - saturation, 1 + saturation) + grey[..., None]
  return np.clip(np.round(x), 0, 255).astype(np.uint8)


def augment(image: np.ndarray, rng: np.random.Generator, cfg) -> np.ndarray:
  if not cfg or not cfg.get("enabled", False):
    return image
  image = random_resized_crop(image, rng, tuple(cfg["crop_scale"]), tuple(cfg["crop_ratio"]))
  return color_jitter(image, rng, cfg["brightness"], cfg["contrast"], cfg["saturation"])
