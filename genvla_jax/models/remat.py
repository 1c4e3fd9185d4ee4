"""Activation rematerialisation policies, chosen by name in the config (`model.remat_policy`)."""

import flax.linen as nn
import jax

POLICIES = {
  "full": None,  # recompute everything in the backward pass
  "dots": jax.checkpoint_policies.checkpoint_dots,
  "dots_no_batch": jax.checkpoint_policies.checkpoint_dots_with_no_batch_dims,
  "nothing_saveable": jax.checkpoint_policies.nothing_saveable,
}


def wrap(module_cls, policy: str):
  """Returns `module_cls` wrapped in nn.remat with the named policy ('none' returns it unchanged)."""
  if policy == "none":
    return module_cls
  if policy not in POLICIES:
    raise ValueError(f"unknown remat policy {policy!r}; choose one of {['none', *POLICIES]}")
  return nn.remat(module_cls, policy=POLICIES[policy], prevent_cse=False)
