"""Closed-loop environments behind one protocol (see eval/harness.py):

  env.reset(task, seed, protocol) -> observation {"image" uint8 [S,S,3], "state" [state_dim], "instruction"}
  env.step(action [action_dim]) -> (observation, success, done)
  env.episode   an Episode: what is being run and how it went
  env.close()
"""

import dataclasses


@dataclasses.dataclass
class Episode:
  task: str
  seed: int
  protocol: str
  instruction: str
  target: str = ""            # the object the task is about, where there is one
  reference: str = ""         # e.g. move_near: the object to put it near
  variant: str = ""           # variant_aggregation: which shift this episode has
  steps: int = 0
  success: bool = False


def make(name: str, **kwargs):
  """An environment by name (config `env`, `env_kwargs`)."""
  if name == "tabletop":
    from genvla_jax.eval.envs import tabletop  # pylint: disable=g-import-not-at-top
    return tabletop.TabletopEnv(**kwargs)
  if name == "metaworld":
    from genvla_jax.eval.envs import metaworld_env  # pylint: disable=g-import-not-at-top
    return metaworld_env.MetaWorldEnv(**kwargs)
  if name == "simpler":
    from genvla_jax.eval.envs import simpler  # pylint: disable=g-import-not-at-top
    return simpler.SimplerEnv(**kwargs)
  raise ValueError(f"unknown environment {name!r}; known: tabletop, metaworld, simpler")


def module(name: str):
  """The environment's module (TASKS, PROTOCOLS, ACTION_DIM, Expert)."""
  if name == "tabletop":
    from genvla_jax.eval.envs import tabletop  # pylint: disable=g-import-not-at-top
    return tabletop
  if name == "metaworld":
    from genvla_jax.eval.envs import metaworld_env  # pylint: disable=g-import-not-at-top
    return metaworld_env
  if name == "simpler":
    from genvla_jax.eval.envs import simpler  # pylint: disable=g-import-not-at-top
    return simpler
  raise ValueError(f"unknown environment {name!r}; known: tabletop, metaworld, simpler")
