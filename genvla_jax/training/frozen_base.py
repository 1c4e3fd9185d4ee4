"""The frozen base of a run whose checkpoints hold only its trainable parameters (LoRA, optimizer.frozen).

A run never changes its frozen parameters (training/freezing.py: LoRA's base kernels, what optimizer.frozen
names, the dual encoder's frozen towers get no gradient and no optimizer state): they stay, bit for bit, what
the run's start made them -- config.pretrained's import (π0's fresh expert drawn from config.seed), or the
deterministic initialisation from config.seed. Saving them in every checkpoint repeats the base (with LoRA
almost all of a checkpoint's bytes), so with LoRA or optimizer.frozen (`trainable_only`; config
train.checkpoint_frozen=True keeps whole checkpoints) a checkpoint holds the trainable leaves and their
optimizer state, and its meta a reference to the base (`reference`):

  {"kind": "pretrained" | "init", "format", "path" (absolute; "" for init), "seed",
   "leaves": {path: "shape dtype checksum"} (the frozen leaves the checkpoint does not hold), "fingerprint"}

Restoring rebuilds the base as the start did (the trainer by its own start-up path; readers by `rebuild`) and
`check`s it against the reference: a different base (the pretrained files replaced, another initialisation)
is a BaseError naming both and the leaves that differ, never a silent mix of two models.

A leaf's checksum is two 32-bit sums of its bit patterns, plain and weighted by the element's position, modulo
2**32 (`_sums`): integer sums are exact in any order, so it depends neither on the mesh nor on how XLA splits
the reduction, and a change of any bit changes the plain sum.
"""

import hashlib
import os

import jax
import jax.numpy as jnp
from jax.sharding import NamedSharding, PartitionSpec as P
import numpy as np

from genvla_jax import cli
from genvla_jax.models import build, lora as lora_lib, surgery


class BaseError(cli.UserError):
  """An adapters-only checkpoint's base cannot be rebuilt, or is not the one the run was trained on."""


def trainable_only(config) -> bool:
  """Whether the run's checkpoints hold only its trainable parameters (+ a reference to the base): with LoRA
  (lora.rank > 0) or optimizer.frozen, unless train.checkpoint_frozen."""
  return not config.train.checkpoint_frozen and (config.lora.rank > 0 or bool(config.optimizer.frozen))


def frozen_leaves(params, frozen_patterns) -> dict:
  """{path: leaf} of the frozen leaves of a train state's params (freezing.trainable_mask)."""
  from genvla_jax.training import freezing

  mask = freezing.trainable_mask(params, frozen_patterns)
  flat = jax.tree_util.tree_flatten_with_path(params)[0]
  return {lora_lib.path_str(p): x for (p, x), trains in zip(flat, jax.tree.leaves(mask)) if not trains}


_UINT = {1: jnp.uint8, 2: jnp.uint16, 4: jnp.uint32}


def _sums(x):
  """[2] uint32: the sum of x's bit patterns and their sum weighted by (2654435761 * position + 1), mod 2**32."""
  bits = jax.lax.bitcast_convert_type(x, _UINT[x.dtype.itemsize]).astype(jnp.uint32)
  position = jnp.zeros(x.shape, jnp.uint32)
  stride = 1
  for axis in reversed(range(x.ndim)):  # the row-major position, without reshaping a sharded array
    position = position + jax.lax.broadcasted_iota(jnp.uint32, x.shape, axis) * jnp.uint32(stride % 2**32)
    stride *= x.shape[axis]
  weight = position * jnp.uint32(2654435761) + jnp.uint32(1)
  return jnp.stack([jnp.sum(bits, dtype=jnp.uint32), jnp.sum(bits * weight, dtype=jnp.uint32)])


def checksums(leaves: dict) -> dict[str, str]:
  """{path: leaf} -> {path: "shape dtype checksum"} (one jitted pass over the leaves)."""
  paths = sorted(leaves)
  if not paths:
    return {}
  placement = getattr(leaves[paths[0]], "sharding", None)  # replicated out of a mesh: every process reads it
  out = jax.sharding.NamedSharding(placement.mesh, P()) if isinstance(placement, NamedSharding) else None
  fn = jax.jit(lambda xs: jnp.stack([_sums(x) for x in xs]), out_shardings=out)
  sums = np.asarray(jax.device_get(fn([leaves[p] for p in paths])))
  return {
    p: f"{'x'.join(map(str, leaves[p].shape)) or 'scalar'} {np.dtype(leaves[p].dtype).name} {int(a):08x}{int(b):08x}"
    for p, (a, b) in zip(paths, sums)
  }


def fingerprint(leaf_checksums: dict[str, str]) -> str:
  text = "\n".join(f"{p}={leaf_checksums[p]}" for p in sorted(leaf_checksums))
  return hashlib.sha256(text.encode()).hexdigest()[:16]


def reference(config, params) -> dict:
  """The reference an adapters-only checkpoint of this run carries: where its base comes from and the
  checksums of the frozen leaves of `params` (a train state's params, as the start made them)."""
  leaves = checksums(frozen_leaves(params, config.optimizer.frozen))
  path = config.pretrained.path
  return {
    "kind": "pretrained" if path else "init",
    "format": config.pretrained.format if path else "",
    "path": os.path.abspath(os.path.expanduser(path)) if path else "",
    "seed": int(config.seed),
    "leaves": leaves,
    "fingerprint": fingerprint(leaves),
  }


def describe(ref: dict) -> str:
  if ref["kind"] == "pretrained":
    return f"the {ref['format']} checkpoint {ref['path']} (fresh parts from seed {ref['seed']})"
  return f"the initialisation from seed {ref['seed']}"


def check(ref: dict, params, where: str):
  """`params` (the base rebuilt now: a full param tree, adapters or not) holds the reference's frozen leaves,
  bit for bit; else BaseError naming both bases and the leaves that differ."""
  flat = {lora_lib.path_str(p): x for p, x in jax.tree_util.tree_flatten_with_path(params)[0]}
  missing = sorted(set(ref["leaves"]) - set(flat))
  if missing:
    raise BaseError(
      f"{where} holds only the trainable parameters; its base, {describe(ref)}, had frozen leaves the model "
      f"built now lacks: {missing[:5]}{' ...' if len(missing) > 5 else ''}"
    )
  now = checksums({p: flat[p] for p in ref["leaves"]})
  if fingerprint(now) == ref["fingerprint"] and now == ref["leaves"]:
    return
  differ = [p for p in sorted(now) if now[p] != ref["leaves"][p]]
  raise BaseError(
    f"{where} holds only the trainable parameters, trained on {describe(ref)} with fingerprint "
    f"{ref['fingerprint']}; the base rebuilt now from {describe(ref)} has fingerprint {fingerprint(now)} "
    f"({len(differ)} of {len(now)} frozen leaves differ: "
    + ", ".join(f"{p} {ref['leaves'][p]} -> {now[p]}" for p in differ[:3])
    + (" ..." if len(differ) > 3 else "")
    + "). Restore it against the base it was trained on (put those files back), or train with "
    "train.checkpoint_frozen=True for checkpoints that hold every parameter"
  )


def rebuild(config, ref: dict, mesh=None, rules=()):
  """The base params (no adapters) as the run's start made them, from its saved config and reference: the
  pretrained import, or the initialisation from the seed; on `mesh` with the parameter shardings (FSDP default /
  `rules`), or on the first device without one. A pretrained base that is gone is a BaseError naming it."""
  if ref["kind"] == "pretrained" and not os.path.exists(ref["path"]):
    raise BaseError(
      f"this checkpoint holds only the trainable parameters; its base, {describe(ref)}, is missing: put it "
      "back at that path (restoring rebuilds the frozen parameters from it)"
    )
  model = build.from_config(config.model)
  rng = jax.random.PRNGKey(ref["seed"])
  if ref["kind"] == "pretrained":
    from genvla_jax.pretrained import api as pretrained_api

    try:
      return pretrained_api.load(ref["format"], ref["path"], model, config.model.image_size, mesh, rules, rng=rng)
    except Exception as e:  # (any failure here is the base's, not the checkpoint's: no fallback to older steps)
      raise BaseError(f"the base of this checkpoint, {describe(ref)}, cannot be read: {e}") from e
  init = lambda r: surgery.init_params(model, r, config.model.image_size)  # noqa: E731
  if mesh is None:
    return jax.jit(init)(rng)
  from genvla_jax.training import sharding

  shapes = jax.eval_shape(init, rng)
  return jax.jit(init, out_shardings=sharding.param_shardings(shapes, mesh, rules))(rng)
