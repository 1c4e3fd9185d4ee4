"""Closed-loop environments behind one protocol (see eval/harness.py):

env.reset(task, seed, protocol) -> observation {"image" uint8 [S,S,3], "state" [state_dim], "instruction"}
env.step(action [action_dim]) -> (observation, success, done)
env.episode   an Episode: what is being run and how it went
env.close()
"""

import dataclasses
import importlib


@dataclasses.dataclass
class Episode:
  task: str
  seed: int
  protocol: str
  instruction: str
  target: str = ""  # the object the task is about, where there is one
  reference: str = ""  # e.g. move_near: the object to put it near
  variant: str = ""  # variant_aggregation: which shift this episode has
  steps: int = 0
  success: bool = False


# name -> (module, environment class): the one registry of environments. A new environment is a module
# with TASKS, PROTOCOLS, ACTION_DIM, Expert (or None) and a class implementing the protocol above, plus a
# line here. Modules are imported on first use (each pulls in its simulator).
ENVS = {
  "tabletop": ("genvla_jax.eval.envs.tabletop", "TabletopEnv"),
  "metaworld": ("genvla_jax.eval.envs.metaworld_env", "MetaWorldEnv"),
  "simpler": ("genvla_jax.eval.envs.simpler", "SimplerEnv"),
  "libero": ("genvla_jax.eval.envs.libero", "LiberoEnv"),
}


def module(name: str):
  """The environment's module (TASKS, PROTOCOLS, ACTION_DIM, Expert)."""
  if name not in ENVS:
    raise ValueError(f"unknown environment {name!r}; known: {', '.join(ENVS)}")
  return importlib.import_module(ENVS[name][0])


def make(name: str, **kwargs):
  """An environment by name (config `env`, `env_kwargs`)."""
  return getattr(module(name), ENVS[name][1])(**kwargs)
