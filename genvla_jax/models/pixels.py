"""The pixel value range the image towers take: uint8 [0, 255] -> float32 [-1, 1].

The model applies it on the accelerator (batches ship uint8: a quarter of the bytes); the policy's
host-side preprocessing (data/preprocess.py) applies the same function, so both agree exactly.
"""

import numpy as np


def to_unit_range(images):
  """uint8 pixels -> float32 in [-1,1]; float input is returned as is (works on numpy and jax arrays)."""
  if images.dtype == np.uint8:
    return images.astype(np.float32) / 127.5 - 1.0
  return images
