"""Device mesh, parameter / optimizer-state / batch shardings, and host-local -> global batches.

Mesh axes: ("data", "fsdp", "model"). The batch is split over "data" and "fsdp". Parameters follow
`rules` (a list of (regex on the "/"-joined param path, PartitionSpec tuple)) first; then, when the
"model" axis has more than one device, the tensor-parallel defaults in `TENSOR_PARALLEL` (Megatron
style: attention heads and MLP hidden units split over "model", the model width over "fsdp"); every
other parameter gets the FSDP default: its largest dimension divisible by the fsdp size is split over
"fsdp" (small ones replicate). An axis that does not divide its dimension is dropped (replicated).
Optimizer-state leaves take the sharding of the parameter they mirror (matched by path suffix and
shape); scalars (step counts) are replicated. Activations inside the model are constrained with
`models/partitioning.constrain` (batch over BATCH_AXES, heads / hidden units over "model").
"""

import re

import jax
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P
import numpy as np

from genvla_jax.models.partitioning import BATCH_AXES

MESH_AXES = ("data", "fsdp", "model")

# Tensor-parallel defaults (used when mesh.model > 1): param path regex -> axis per dimension.
# Layer-stacked weights have the layer axis first. Shapes: models/gemma.py, models/vit.py.
TENSOR_PARALLEL = [
  (r"llm/layers/mlp/gating_einsum$", (None, None, "fsdp", "model")),  # [L,2,D,F]
  (r"llm/layers/mlp/linear$", (None, "model", "fsdp")),  # [L,F,D]
  (r"llm/layers/attn/q_einsum$", (None, "model", "fsdp", None)),  # [L,N,D,Hd]
  (r"llm/layers/attn/kv_einsum$", (None, None, "model", "fsdp", None)),  # [L,2,K,D,Hd]
  (r"llm/layers/attn/attn_vec_einsum$", (None, "model", None, "fsdp")),  # [L,N,Hd,D]
  (r"img\w*/blocks/MlpBlock_0/Dense_0/kernel$", (None, "fsdp", "model")),  # [L,D,F]
  (r"img\w*/blocks/MlpBlock_0/Dense_0/bias$", (None, "model")),  # [L,F]
  (r"img\w*/blocks/MlpBlock_0/Dense_1/kernel$", (None, "model", "fsdp")),  # [L,F,D]
  (
    r"img\w*/blocks/MultiHeadDotProductAttention_0/(query|key|value)/kernel$",
    (None, "fsdp", "model", None),
  ),  # [L,D,N,Hd]
  (r"img\w*/blocks/MultiHeadDotProductAttention_0/(query|key|value)/bias$", (None, "model", None)),
  (r"img\w*/blocks/MultiHeadDotProductAttention_0/out/kernel$", (None, "model", None, "fsdp")),
]


def make_mesh(mesh_config, devices=None) -> Mesh:
  """config.mesh {data, fsdp (either -1: the rest), model} -> Mesh over all (global) devices."""
  devices = list(devices if devices is not None else jax.devices())
  data, fsdp, model = mesh_config.data, mesh_config.fsdp, mesh_config.model
  if data == -1 and fsdp == -1:
    raise ValueError("mesh: only one of data and fsdp may be -1 (all remaining devices)")
  if fsdp == -1:
    fsdp = len(devices) // (data * model)
  if data == -1:
    data = len(devices) // (fsdp * model)
  if data * fsdp * model != len(devices):
    raise ValueError(
      f"mesh data={mesh_config.data} x fsdp={fsdp} x model={model} does not match {len(devices)} devices"
    )
  return Mesh(np.array(devices).reshape(data, fsdp, model), MESH_AXES)


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


def _fitted(spec, shape, mesh: Mesh) -> P:
  """A rule's spec with every axis that does not divide its dimension replaced by None."""
  spec = tuple(spec) + (None,) * (len(shape) - len(spec))

  def fits(axes, dim):
    axes = axes if isinstance(axes, tuple) else (axes,)
    return dim % int(np.prod([mesh.shape[a] for a in axes])) == 0

  return P(*[a if a is None or fits(a, d) else None for a, d in zip(spec, shape)])


def _as_spec(spec) -> tuple:
  """A rule's spec as config JSON gives it (lists; [axes] for several axes on one dimension) -> the
  tuple of axis names / None / tuples that PartitionSpec takes."""
  return tuple(tuple(a) if isinstance(a, list) else a for a in spec)


def param_shardings(abstract_params, mesh: Mesh, rules=()):
  """abstract_params: tree of ShapeDtypeStruct -> tree of NamedSharding."""
  rules = list(rules) + (TENSOR_PARALLEL if mesh.shape.get("model", 1) > 1 else [])
  compiled = [(re.compile(pattern), _as_spec(spec)) for pattern, spec in rules]

  def choose(path, leaf):
    name = path_str(path)
    for pattern, spec in compiled:
      if pattern.search(name):
        return NamedSharding(mesh, _fitted(spec, leaf.shape, mesh))
    return NamedSharding(mesh, _fsdp_spec(leaf.shape, mesh.shape["fsdp"]))

  return jax.tree_util.tree_map_with_path(choose, abstract_params)


def mirror_shardings(abstract_tree, abstract_params, params_shardings, mesh: Mesh):
  """Shardings for a tree (e.g. optimizer state) whose leaves mirror parameters."""
  by_path = {}
  for (path, leaf), sharding in zip(
    jax.tree_util.tree_flatten_with_path(abstract_params)[0], jax.tree.leaves(params_shardings)
  ):
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
  """Host-local numpy batch (this process's rows) -> global jax.Arrays split over the batch axes: every field
  along its first (row) axis only, whatever follows (image [B,S,S,3] or [B,C,S,S,3], image_mask [B,C])."""
  sharding = batch_sharding(mesh)
  return {k: jax.make_array_from_process_local_data(sharding, np.asarray(v)) for k, v in local_batch.items()}
