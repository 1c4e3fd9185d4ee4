"""Closed-loop environments behind one protocol (see eval/harness.py):

  env.reset(task, seed, protocol) -> observation {"image" uint8 [S,S,3], "state" [state_dim], "instruction"}
  env.step(action [action_dim]) -> (observation, success, done)
  env.episode   what is being run (task, seed, protocol, instruction, steps, success)
"""


def make(name: str, **kwargs):
  """An environment by name (config `env`, `env_kwargs`)."""
  if name == "tabletop":
    from genvla_jax.eval.envs import tabletop  # pylint: disable=g-import-not-at-top
    return tabletop.TabletopEnv(**kwargs)
  raise ValueError(f"unknown environment {name!r}; known: tabletop")


def module(name: str):
  """The environment's module (TASKS, PROTOCOLS, ACTION_DIM, Expert)."""
  if name == "tabletop":
    from genvla_jax.eval.envs import tabletop  # pylint: disable=g-import-not-at-top
    return tabletop
  raise ValueError(f"unknown environment {name!r}; known: tabletop")
