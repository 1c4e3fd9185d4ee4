"""The train state {"step", "params", "opt_state"}: its shardings and its sharded initialisation."""

import jax
import jax.numpy as jnp
from jax.sharding import NamedSharding, PartitionSpec as P

from genvla_jax.models import surgery
from genvla_jax.training import sharding


def state_from_params(params, tx):
  """The optimizer state lives in float32 whatever the parameters' storage dtype."""
  return {
    "step": jnp.zeros((), jnp.int32),
    "params": params,
    "opt_state": tx.init(jax.tree.map(lambda x: x.astype(jnp.float32), params)),
  }


def make_init_fn(model, tx, image_size: int):
  def init_state(rng):
    return state_from_params(surgery.init_params(model, rng, image_size), tx)

  return init_state


def state_shardings(abstract_state, mesh, rules=()):
  p_sh = sharding.param_shardings(abstract_state["params"], mesh, rules)
  return {
    "step": NamedSharding(mesh, P()),
    "params": p_sh,
    "opt_state": sharding.mirror_shardings(abstract_state["opt_state"], abstract_state["params"], p_sh, mesh),
  }


def with_shardings(abstract_tree, shardings):
  return jax.tree.map(lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s), abstract_tree, shardings)


def create(model, tx, image_size: int, mesh, rng, rules=(), params=None):
  """-> (state placed with its shardings, shardings, abstract state with shardings). `params`
  (e.g. imported pretrained weights, already placed) replace the random initialisation."""
  abstract_state, shardings = abstract(model, tx, image_size, mesh, rules)
  if params is None:
    state = jax.jit(make_init_fn(model, tx, image_size), out_shardings=shardings)(rng)
  else:
    state = jax.jit(lambda p: state_from_params(p, tx), out_shardings=shardings, donate_argnums=0)(params)
  return state, shardings, abstract_state


def abstract(model, tx, image_size: int, mesh, rules=()):
  """-> (abstract state with shardings, shardings) without allocating anything (for restore)."""
  abstract_state = jax.eval_shape(make_init_fn(model, tx, image_size), jax.random.PRNGKey(0))
  shardings = state_shardings(abstract_state, mesh, rules)
  return with_shardings(abstract_state, shardings), shardings


def abstract_params(model, image_size: int, device):
  """Abstract parameter tree placed on one device (params-only restore for predict / serve)."""
  shapes = jax.eval_shape(lambda: surgery.init_params(model, jax.random.PRNGKey(0), image_size))
  return jax.tree.map(
    lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=jax.sharding.SingleDeviceSharding(device)), shapes
  )
