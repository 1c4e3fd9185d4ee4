"""Builds our parameter tree from a checkpoint reader, one parameter at a time.

For every Rule (mapping.py) the reader's tensors are fetched, transformed to our layout, checked against
the target shape, cast to the target dtype and placed directly with the target sharding
(`jax.make_array_from_callback`, which also works across hosts). Only one parameter (a layer-stacked
one at most) is on the host at a time, so peak host memory is about one parameter, not the model.
Anything missing, mis-shaped or unreadable raises CheckpointError naming the tensor: a parameter is
never left randomly initialised.
"""

import jax
import ml_dtypes
import numpy as np

from genvla_jax.training import sharding as sharding_lib


class CheckpointError(ValueError):
  pass


def leaves(abstract_params) -> dict:
  return {sharding_lib.path_str(p): leaf for p, leaf in jax.tree_util.tree_flatten_with_path(abstract_params)[0]}


def head_counts(abstract_params) -> dict[str, dict]:
  """Attention head counts the layout transforms need, read off the target shapes, per top-level part
  (parts without attention get none)."""
  targets = leaves(abstract_params)
  dims = {}
  for name, target in targets.items():  # every image tower: img, img_fused, img_frozen, ...
    part, _, rest = name.partition("/")
    if rest == "blocks/MultiHeadDotProductAttention_0/query/kernel":
      dims[part] = dict(heads=target.shape[2])  # [L,D,heads,hd]
  if "llm/layers/attn/q_einsum" in targets:
    q = targets["llm/layers/attn/q_einsum"].shape  # [L,N,D,H]
    kv = targets["llm/layers/attn/kv_einsum"].shape  # [L,2,K,D,H]
    dims["llm"] = dict(heads=q[1], kv_heads=kv[2])
  return dims


def _is_float(dtype) -> bool:
  return np.issubdtype(dtype, np.floating) or dtype == ml_dtypes.bfloat16


def check_finite(array: np.ndarray, name: str):
  if _is_float(array.dtype) and not np.all(np.isfinite(array)):
    raise CheckpointError(
      f"{name}: checkpoint tensor has {np.size(array) - np.isfinite(array).sum()} non-finite values"
    )


def place(array: np.ndarray, target, name: str):
  """Host array -> jax.Array with the target's shape check, dtype and sharding."""
  if tuple(array.shape) != tuple(target.shape):
    raise CheckpointError(
      f"{name}: checkpoint gives shape {tuple(array.shape)}, the model expects {tuple(target.shape)}"
    )
  array = np.asarray(array).astype(target.dtype, copy=False)
  sharding = getattr(target, "sharding", None) or jax.sharding.SingleDeviceSharding(jax.devices()[0])
  return jax.make_array_from_callback(array.shape, sharding, lambda index: array[index])


def assemble(abstract_params, rules, fetch, source=lambda rule, layer: rule.ours) -> dict:
  """abstract_params: single-tower tree of ShapeDtypeStruct (with shardings); fetch(rule, layer, dims)
  -> our-layout array for one layer (layer=None for unstacked rules); source(rule, layer) -> the
  checkpoint tensor name(s), for error messages. Returns the placed tree."""
  targets = leaves(abstract_params)
  uncovered = set(targets) - {r.ours for r in rules}
  if uncovered:
    raise CheckpointError(f"no import rule for model parameters {sorted(uncovered)}")
  dims = head_counts(abstract_params)
  placed = {}
  for rule in rules:
    target = targets[rule.ours]
    part = dims.get(rule.ours.split("/")[0], {})
    if rule.stacked:
      host = np.empty(target.shape, np.float32 if target.dtype == np.float32 else target.dtype)
      for i in range(target.shape[0]):
        layer = np.asarray(fetch(rule, i, part))
        if layer.shape != target.shape[1:]:
          raise CheckpointError(
            f"{source(rule, i)} -> {rule.ours} (layer {i}): checkpoint gives shape "
            f"{layer.shape}, the model expects {tuple(target.shape[1:])}"
          )
        check_finite(layer, f"{source(rule, i)} -> {rule.ours} (layer {i})")
        host[i] = layer
    else:
      host = fetch(rule, None, part)
      check_finite(host, f"{source(rule, None)} -> {rule.ours}")
    placed[rule.ours] = place(host, target, f"{source(rule, None)} -> {rule.ours}")
    del host
  return _unflatten(abstract_params, placed)


def _unflatten(abstract_params, placed: dict):
  paths = [sharding_lib.path_str(p) for p, _ in jax.tree_util.tree_flatten_with_path(abstract_params)[0]]
  return jax.tree_util.tree_unflatten(jax.tree.structure(abstract_params), [placed[p] for p in paths])
