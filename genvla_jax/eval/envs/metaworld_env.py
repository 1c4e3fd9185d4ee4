"""MetaWorld (pip `metaworld`, assets inside the wheel) behind the harness's environment protocol: the
MT10 tasks with language instructions, MetaWorld's own scripted policies as the expert, offscreen
rendering on CPU (MUJOCO_GL=egl).

Action [4] = (dx, dy, dz, gripper effort) in [-1, 1] (MetaWorld's own; clipped); state [4] = hand xyz +
gripper opening (the first four numbers of MetaWorld's observation). Episode seed s runs task variation
s % 50 of the task's MT1 benchmark (object / goal positions; MT1(task, seed=benchmark_seed), built once
per process and task) with env.reset(seed=s): deterministic. The offscreen images
come out upside down (rows bottom-up): `render` flips them. Render quality (no shadows, no multisampling)
is set before the first render, as it is only read when the render context is made.

Protocols: "visual_matching" (the one appearance) and "paraphrase" (held-out instruction wordings).
"""

import os

os.environ.setdefault("MUJOCO_GL", "egl")

import numpy as np

from genvla_jax.eval.envs import Episode

TASKS = (
  "reach-v3",
  "push-v3",
  "pick-place-v3",
  "door-open-v3",
  "drawer-open-v3",
  "drawer-close-v3",
  "button-press-topdown-v3",
  "peg-insert-side-v3",
  "window-open-v3",
  "window-close-v3",
)
PROTOCOLS = ("visual_matching", "paraphrase")
ACTION_DIM = 4
STATE_DIM = 4
INSTRUCTIONS = {  # task -> (training wordings, held-out paraphrases)
  "reach-v3": (("reach the goal position",), ("move the gripper to the target",)),
  "push-v3": (("push the puck to the goal",), ("slide the puck over to the target",)),
  "pick-place-v3": (("pick up the puck and place it at the goal",), ("grab the puck and put it on the target",)),
  "door-open-v3": (("open the door",), ("swing the door open",)),
  "drawer-open-v3": (("open the drawer",), ("pull the drawer out",)),
  "drawer-close-v3": (("close the drawer",), ("push the drawer shut",)),
  "button-press-topdown-v3": (("press the button from the top",), ("push the button down",)),
  "peg-insert-side-v3": (("insert the peg into the hole from the side",), ("slide the peg into the hole",)),
  "window-open-v3": (("open the window",), ("slide the window open",)),
  "window-close-v3": (("close the window",), ("slide the window shut",)),
}


_BENCHMARKS = {}


def _benchmark(task: str, seed: int):
  """metaworld.MT1(task) (1 s to build; all of MT10 at once takes 8 s), cached per process."""
  import metaworld

  if (task, seed) not in _BENCHMARKS:
    _BENCHMARKS[task, seed] = metaworld.MT1(task, seed=seed)
  return _BENCHMARKS[task, seed]


def _policy_class(task: str):
  from metaworld import policies

  stem = {"peg-insert-side": "peg-insertion-side"}.get(task[:-3], task[:-3])  # metaworld's own naming
  return getattr(policies, "Sawyer" + "".join(p.capitalize() for p in stem.split("-")) + "V3Policy")


class MetaWorldEnv:
  """MT10 tasks. reset(task, seed, protocol) -> obs; step(action) -> (obs, success, done)."""

  def __init__(self, image_size: int = 64, max_steps: int = 150, camera: str = "corner2", benchmark_seed: int = 0):
    self.image_size, self.max_steps, self.camera, self.benchmark_seed = image_size, max_steps, camera, benchmark_seed
    self._envs = {}
    self.env, self.raw_obs, self.episode = None, None, None

  def _env_for(self, task):
    if task not in self._envs:
      env = _benchmark(task, self.benchmark_seed).train_classes[task](
        render_mode="rgb_array", camera_name=self.camera, width=self.image_size, height=self.image_size
      )
      env.model.vis.quality.offsamples = 0
      env.model.vis.quality.shadowsize = 0
      self._envs[task] = env
    return self._envs[task]

  def reset(self, task: str, seed: int, protocol: str = "visual_matching") -> dict:
    if task not in TASKS:
      raise ValueError(f"unknown task {task!r}; MT10 tasks: {TASKS}")
    if protocol not in PROTOCOLS:
      raise ValueError(f"unknown protocol {protocol!r}; choose from {PROTOCOLS}")
    self.env = self._env_for(task)
    variations = _benchmark(task, self.benchmark_seed).train_tasks
    self.env.set_task(variations[seed % len(variations)])
    self.raw_obs, _ = self.env.reset(seed=seed)
    rng = np.random.default_rng([seed, TASKS.index(task)])
    instruction = str(rng.choice(INSTRUCTIONS[task][1 if protocol == "paraphrase" else 0]))
    self.episode = Episode(task, seed, protocol, instruction)
    return self.observation()

  def step(self, action) -> tuple[dict, bool, bool]:
    action = np.asarray(action, np.float64).reshape(-1)
    if action.shape != (ACTION_DIM,) or not np.all(np.isfinite(action)):
      raise ValueError(f"action must be {ACTION_DIM} finite numbers, got {action}")
    self.raw_obs, _, terminated, truncated, info = self.env.step(np.clip(action, -1, 1).astype(np.float32))
    ep = self.episode
    ep.steps += 1
    ep.success = ep.success or bool(info.get("success", 0) > 0)
    done = ep.success or ep.steps >= self.max_steps or bool(terminated or truncated)
    return self.observation(), ep.success, done

  def state(self) -> np.ndarray:
    return np.asarray(self.raw_obs[:STATE_DIM], np.float32)

  def render(self) -> np.ndarray:
    return np.ascontiguousarray(np.flipud(self.env.render()))

  def observation(self) -> dict:
    return {"image": self.render(), "state": self.state(), "instruction": self.episode.instruction}

  def close(self):
    for env in self._envs.values():
      env.close()
    self._envs = {}


class Expert:
  """MetaWorld's scripted policy for the episode's task."""

  def __init__(self, env: MetaWorldEnv):
    self.env, self.policy = env, _policy_class(env.episode.task)()

  def act(self) -> np.ndarray:
    return np.clip(self.policy.get_action(self.env.raw_obs), -1, 1).astype(np.float32)
