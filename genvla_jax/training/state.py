"""The train state {"step", "params", "opt_state"}: its shardings and its sharded initialisation. With LoRA
(`lora`: a models/lora.Spec that is on) the params hold the adapters too, as the part `lora/` (fresh: B = 0)."""

import jax
import jax.numpy as jnp
from jax.sharding import NamedSharding, PartitionSpec as P

from genvla_jax.models import lora as lora_lib, surgery
from genvla_jax.training import sharding


def state_from_params(params, tx):
  """The optimizer state lives in float32 whatever the parameters' storage dtype."""
  return {
    "step": jnp.zeros((), jnp.int32),
    "params": params,
    "opt_state": tx.init(jax.tree.map(lambda x: x.astype(jnp.float32), params)),
  }


def make_init_fn(model, tx, image_size: int, lora=None):
  def init_state(rng):
    return state_from_params(lora_lib.with_adapters(surgery.init_params(model, rng, image_size), lora, rng), tx)

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


def create(model, tx, image_size: int, mesh, rng, rules=(), params=None, lora=None):
  """-> (state placed with its shardings, shardings, abstract state with shardings). `params`
  (e.g. imported pretrained weights, already placed) replace the random initialisation; `lora` (a
  lora.Spec) adds fresh adapters to either."""
  abstract_state, shardings = abstract(model, tx, image_size, mesh, rules, lora)
  if params is None:
    state = jax.jit(make_init_fn(model, tx, image_size, lora), out_shardings=shardings)(rng)
  else:
    state = jax.jit(
      lambda p, r: state_from_params(lora_lib.with_adapters(p, lora, r), tx), out_shardings=shardings, donate_argnums=0
    )(params, rng)
  return state, shardings, abstract_state


def abstract(model, tx, image_size: int, mesh, rules=(), lora=None):
  """-> (abstract state with shardings, shardings) without allocating anything (for restore)."""
  abstract_state = jax.eval_shape(make_init_fn(model, tx, image_size, lora), jax.random.PRNGKey(0))
  shardings = state_shardings(abstract_state, mesh, rules)
  return with_shardings(abstract_state, shardings), shardings


def abstract_params(model, image_size: int, device, lora=None):
  """Abstract parameter tree placed on one device (params-only restore for predict / serve); with `lora`, the
  adapters too (lora.merged turns the restored tree into the model's)."""
  rng = jax.random.PRNGKey(0)
  shapes = jax.eval_shape(lambda: lora_lib.with_adapters(surgery.init_params(model, rng, image_size), lora, rng))
  return jax.tree.map(
    lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=jax.sharding.SingleDeviceSharding(device)), shapes
  )
