"""Activation sharding constraints inside the model.

The train step is traced under `jax.set_mesh(mesh)` (training/step.py), so the model can say how its
activations are laid out over the mesh axes ("data", "fsdp", "model"): batch rows over BATCH_AXES,
attention heads and MLP hidden units over "model". Axes the mesh lacks, or that do not divide the
dimension, are left out; outside a mesh (initialisation, the policy's decoding) `constrain` returns its
input unchanged.
"""

import jax
from jax.sharding import PartitionSpec as P
import numpy as np

BATCH_AXES = ("data", "fsdp")
BATCH = BATCH_AXES  # spec entry for a batch dimension
MODEL = "model"  # spec entry for heads / hidden units


def _fit(axes, dim: int, sizes: dict):
  if axes is None:
    return None
  axes = tuple(a for a in (axes if isinstance(axes, tuple) else (axes,)) if sizes.get(a, 1) > 1)
  if not axes or dim % int(np.prod([sizes[a] for a in axes])):
    return None
  return axes if len(axes) > 1 else axes[0]


def constrain(x, *spec):
  """x [...] with one spec entry per dimension (None, an axis name or a tuple of names)."""
  mesh = jax.sharding.get_abstract_mesh()
  if mesh.empty:
    return x
  sizes = dict(mesh.shape)
  if mesh.size == 1:
    return x
  return jax.lax.with_sharding_constraint(x, P(*[_fit(a, d, sizes) for a, d in zip(spec, x.shape)]))
