"""SimplerEnv adapter: our de-normalized RT-1 (fractal) / Bridge actions -> SimplerEnv's Google-robot and
WidowX controllers, and SimplerEnv observations -> (image, instruction), behind the harness's
environment protocol.

SimplerEnv needs SAPIEN with a Vulkan renderer (a GPU machine) and its scene/asset files; nothing here
imports it until `SimplerEnv(...)` is constructed, and the tests exercise only the action conversions
(this project's CPU machines cannot run the simulator; no result here claims it ran). Setup, step by
step: `eval/envs/SIMPLER.md`.

Action conventions (SimplerEnv's controllers, as its own RT-1 / Octo / OpenVLA wrappers drive them):
  policy action [7] = (dx, dy, dz, droll, dpitch, dyaw, gripper), de-normalized with the dataset's
  statistics (fractal for the Google robot, bridge for WidowX); gripper in our datasets is absolute,
  1 = open (data/registry.py makes fractal's relative gripper absolute).
  SimplerEnv action [7] = (world_vector [3] metres, rot_axangle [3] = axis * angle of the rotation
  whose static-frame x-y-z Euler angles are (droll, dpitch, dyaw), gripper [1]).
  Google robot gripper: relative, +1 = close, -1 = open: prev_open - open, and once a change of more
  than 0.5 appears it is repeated for 15 control steps ("sticky" gripper, as the RT-1 policy behaves).
  WidowX gripper: absolute, +1 = open, -1 = close: 2 * (open > 0.5) - 1.
"""

import numpy as np

from genvla_jax.eval.envs import Episode

# simpler_env.make(...) names: the visual-matching task lists of the SimplerEnv paper.
GOOGLE_ROBOT_TASKS = (
  "google_robot_pick_coke_can",
  "google_robot_move_near",
  "google_robot_open_drawer",
  "google_robot_close_drawer",
)
WIDOWX_TASKS = ("widowx_spoon_on_towel", "widowx_carrot_on_plate", "widowx_stack_cube", "widowx_put_eggplant_in_basket")
TASKS = GOOGLE_ROBOT_TASKS + WIDOWX_TASKS
PROTOCOLS = ("visual_matching", "variant_aggregation")
ACTION_DIM = 7
Expert = None  # no scripted expert: SimplerEnv evaluates policies only

# Variant aggregation for the drawer tasks (from SimplerEnv's scripts/*drawer_variant_agg.sh): ManiSkill2
# env ids and build kwargs; every other task's variants are read from a JSON file of the same shape
# (`SimplerEnv(variants=...)`) copied from that repository's scripts.
DRAWER_ENV_IDS = (
  "OpenTopDrawerCustomInScene-v0",
  "OpenMiddleDrawerCustomInScene-v0",
  "OpenBottomDrawerCustomInScene-v0",
  "CloseTopDrawerCustomInScene-v0",
  "CloseMiddleDrawerCustomInScene-v0",
  "CloseBottomDrawerCustomInScene-v0",
)
DRAWER_VARIANTS = (
  dict(scene_name="frl_apartment_stage_simple", kwargs=dict(shader_dir="rt")),
  dict(scene_name="frl_apartment_stage_simple", kwargs=dict(shader_dir="rt", light_mode="brighter")),
  dict(scene_name="frl_apartment_stage_simple", kwargs=dict(shader_dir="rt", light_mode="darker")),
  dict(scene_name="frl_apartment_stage_simple", kwargs=dict(shader_dir="rt", station_name="mk_station2")),
  dict(scene_name="frl_apartment_stage_simple", kwargs=dict(shader_dir="rt", station_name="mk_station3")),
)


def euler_to_axis_angle(rpy) -> np.ndarray:
  """Static-frame x-y-z Euler angles (roll, pitch, yaw), R = Rz(yaw) Ry(pitch) Rx(roll) -> axis * angle [3]
  (what transforms3d.euler.euler2axangle(r, p, y) gives, multiplied out)."""
  r, p, y = (float(v) for v in rpy)
  cr, sr, cp, sp, cy, sy = np.cos(r), np.sin(r), np.cos(p), np.sin(p), np.cos(y), np.sin(y)
  rot = np.array(
    [
      [cy * cp, cy * sp * sr - sy * cr, cy * sp * cr + sy * sr],
      [sy * cp, sy * sp * sr + cy * cr, sy * sp * cr - cy * sr],
      [-sp, cp * sr, cp * cr],
    ]
  )
  angle = float(np.arccos(np.clip((np.trace(rot) - 1) / 2, -1.0, 1.0)))
  if angle < 1e-9:
    return np.zeros(3)
  if np.pi - angle < 1e-6:  # 180 degrees: the axis from the symmetric part
    axis = np.sqrt(np.clip((np.diag(rot) + 1) / 2, 0, None))
    k = int(np.argmax(axis))
    axis = rot[:, k] + np.eye(3)[k]
    return axis / np.linalg.norm(axis) * angle
  axis = np.array([rot[2, 1] - rot[1, 2], rot[0, 2] - rot[2, 0], rot[1, 0] - rot[0, 1]]) / (2 * np.sin(angle))
  return axis * angle


class GoogleRobotActions:
  """Our fractal action [7] -> SimplerEnv Google-robot action [7]; stateful (sticky gripper): reset()
  per episode."""

  sticky_repeat = 15

  def __init__(self, scale: float = 1.0):
    self.scale = scale
    self.reset()

  def reset(self):
    self._previous_open = None
    self._sticky, self._repeats = 0.0, 0

  def __call__(self, action) -> np.ndarray:
    action = np.asarray(action, np.float64)
    if action.shape != (7,) or not np.all(np.isfinite(action)):
      raise ValueError(f"expected a finite 7-D action (xyz, rpy, gripper), got {action}")
    open_now = float(action[6])
    relative = 0.0 if self._previous_open is None else self._previous_open - open_now
    self._previous_open = open_now
    if abs(relative) > 0.5 and self._sticky == 0.0:
      self._sticky = relative
    if self._sticky != 0.0:
      relative = self._sticky
      self._repeats += 1
      if self._repeats == self.sticky_repeat:
        self._sticky, self._repeats = 0.0, 0
    return np.concatenate([action[:3] * self.scale, euler_to_axis_angle(action[3:6]) * self.scale, [relative]])


class WidowXActions:
  """Our bridge action [7] -> SimplerEnv WidowX action [7] (stateless)."""

  def __init__(self, scale: float = 1.0):
    self.scale = scale

  def reset(self):
    pass

  def __call__(self, action) -> np.ndarray:
    action = np.asarray(action, np.float64)
    if action.shape != (7,) or not np.all(np.isfinite(action)):
      raise ValueError(f"expected a finite 7-D action (xyz, rpy, gripper), got {action}")
    gripper = 1.0 if action[6] > 0.5 else -1.0
    return np.concatenate([action[:3] * self.scale, euler_to_axis_angle(action[3:6]) * self.scale, [gripper]])


class SimplerEnv:
  """A SimplerEnv task behind the harness protocol (reset(task, seed, protocol) / step / episode).
  Runs only where `simpler_env` (SimplerEnv + ManiSkill2_real2sim + SAPIEN with Vulkan) is installed.
  protocol "visual_matching": `simpler_env.make(task)`; "variant_aggregation": the task's variant
  setups (`variants`: {task: [{"env_id", "scene_name", "kwargs"}]}; drawers built in)."""

  def __init__(self, robot: str = "google_robot", max_steps: int = 80, variants: dict | None = None):
    try:
      import simpler_env
      from simpler_env.utils.env.observation_utils import get_image_from_maniskill2_obs_dict
    except ImportError as e:
      raise ImportError(
        "SimplerEnv is not installed (it needs SAPIEN with a Vulkan GPU renderer); see genvla_jax/eval/envs/SIMPLER.md"
      ) from e
    self._simpler, self._image_of = simpler_env, get_image_from_maniskill2_obs_dict
    self.robot, self.max_steps, self.variants = robot, max_steps, variants or {}
    self.convert = GoogleRobotActions() if robot == "google_robot" else WidowXActions()
    self.env, self.episode = None, None

  def _make(self, task, protocol, seed):
    if protocol == "visual_matching":
      return self._simpler.make(task)
    import gymnasium as gym

    setups = self.variants.get(task)
    if setups is None and "drawer" in task:
      setups = [
        dict(env_id=e, **v) for e in DRAWER_ENV_IDS if ("Open" in e) == ("open" in task) for v in DRAWER_VARIANTS
      ]
    if not setups:
      raise ValueError(f"no variant-aggregation setups for {task}: pass variants={{task: [...]}} (see SIMPLER.md)")
    setup = setups[seed % len(setups)]
    return gym.make(
      setup["env_id"],
      obs_mode="rgbd",
      robot=f"{self.robot}_static" if self.robot == "google_robot" else "widowx",
      scene_name=setup["scene_name"],
      **setup.get("kwargs", {}),
    )

  def reset(self, task, seed, protocol="visual_matching") -> dict:
    if self.env is not None:
      self.env.close()
    self.env = self._make(task, protocol, seed)
    obs, _ = self.env.reset(seed=seed)
    self.convert.reset()
    instruction = self.env.unwrapped.get_language_instruction()
    self.episode = Episode(task, seed, protocol, instruction)
    return self._observation(obs)

  def _observation(self, obs) -> dict:
    return {
      "image": np.asarray(self._image_of(self.env, obs)),
      "state": np.zeros(0, np.float32),
      "instruction": self.episode.instruction,
    }

  def step(self, action):
    obs, _, terminated, truncated, info = self.env.step(self.convert(action))
    self.episode.steps += 1
    self.episode.success = self.episode.success or bool(info.get("success", False))
    done = bool(terminated or truncated) or self.episode.steps >= self.max_steps
    return self._observation(obs), self.episode.success, done

  def close(self):
    if self.env is not None:
      self.env.close()
