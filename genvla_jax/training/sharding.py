"""Device mesh, parameter / optimizer-state / batch shardings, and host-local -> global batches.

Mesh axes: ("data", "fsdp"). The batch is split over both axes. Parameters follow `rules` (a list of
(regex on the "/"-joined param path, PartitionSpec tuple)) first; unmatched parameters get the FSDP
default: their largest dimension divisible by the fsdp size is split over "fsdp" (small ones replicate).
Optimizer-state leaves take the sharding of the parameter they mirror (matched by path suffix and
shape); scalars (step counts) are replicated.
"""

import re

import jax
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P
import numpy as np

BATCH_AXES = ("data", "fsdp")


def make_mesh(mesh_config, devices=None) -> Mesh:
  devices = list(devices if devices is not None else jax.devices())
  fsdp = mesh_config.fsdp
  data = mesh_config.data if mesh_config.data != -1 else len(devices) // fsdp
  if data * fsdp != len(devices):
    raise ValueError(f"mesh data={mesh_config.data} x fsdp={fsdp} does not match {len(devices)} devices")
  return Mesh(np.array(devices).reshape(data, fsdp), BATCH_AXES)


def path_str(path) -> str:
  return "/".join(str(getattr(k, "key", getattr(k, "idx", getattr(k, "name", k)))) for k in path)


def _fsdp_spec(shape, fsdp_size, min_size=2**14):
  if fsdp_size == 1 or np.prod(shape) < min_size:
    return P()
  for axis in sorted(range(len(shape)), key=lambda a: -shape[a]):
    if shape[axis] % fsdp_size == 0:
      spec = [None] * len(shape)
      spec[axis] = "fsdp"
      return P(*spec)
  return P()


def param_shardings(abstract_params, mesh: Mesh, rules=()):
  """abstract_params: tree of ShapeDtypeStruct -> tree of NamedSharding."""
  compiled = [(re.compile(pattern), P(*spec)) for pattern, spec in rules]
  def choose(path, leaf):
    name = path_str(path)
    for pattern, spec in compiled:
      if pattern.search(name):
        return NamedSharding(mesh, spec)
    return NamedSharding(mesh, _fsdp_spec(leaf.shape, mesh.shape["fsdp"]))
  return jax.tree_util.tree_map_with_path(choose, abstract_params)


def mirror_shardings(abstract_tree, abstract_params, params_shardings, mesh: Mesh):
  """Shardings for a tree (e.g. optimizer state) whose leaves mirror parameters."""
  by_path = {}
  for (path, leaf), sharding in zip(jax.tree_util.tree_flatten_with_path(abstract_params)[0],
                                    jax.tree.leaves(params_shardings)):
    by_path[tuple(path_str([k]) for k in path)] = (leaf.shape, sharding)
  replicated = NamedSharding(mesh, P())
  def choose(path, leaf):
    keys = tuple(path_str([k]) for k in path)
    for start in range(len(keys)):
      match = by_path.get(keys[start:])
      if match and match[0] == leaf.shape:
        return match[1]
    return replicated
  return jax.tree_util.tree_map_with_path(choose, abstract_tree)


def batch_sharding(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P(BATCH_AXES))


def to_global(local_batch: dict, mesh: Mesh) -> dict:
  """Host-local numpy batch (this process's rows) -> global jax.Arrays split over the batch axes."""
  sharding = batch_sharding(mesh)
  return {k: jax.make_array_from_process_local_data(sharding, np.asarray(v)) for k, v in local_batch.items()}
