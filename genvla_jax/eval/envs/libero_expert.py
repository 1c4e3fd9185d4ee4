"""A scripted pick-and-place expert for LIBERO from privileged simulator state: a phase machine, pure numpy.

libero_worker.py reads the scene (the target object's and the destination's positions and extents, the end
effector's pose, the finger axis, the gripper opening) from the simulator after every step and asks `act`
for the next OSC_POSE action; the adapter (libero.py `Expert`) exposes it to the harness. This file imports
only numpy and the standard library: the worker loads it by path inside LIBERO's virtualenv, the project's
tests import it as a module.

Phases (each with a step budget; a budget running out moves on, or back to a regrasp when holding nothing):

  approach  above the grasp point at HOVER_HEIGHT, fingers turned across the object's narrow side
  descend   to the grasp point
  close     gripper closed for CLOSE_STEPS steps
  lift      straight up to the carrying height (the object's bottom CARRY_CLEARANCE above the destination's top,
            at least MIN_LIFT up); the object must come along (else regrasp: open, approach again)
  carry     above the destination at the carrying height
  lower     until the object's reference point reaches the destination's release point
  release   gripper opened for OPEN_STEPS steps
  retreat   up by RETREAT_HEIGHT; then done (holds still, gripper open)

Action: [dx, dy, dz, drx, dry, drz, gripper] as the env takes it (libero.py): the position and rotation
commands are proportional to the error (POSITION_GAIN, ROTATION_GAIN: fraction of the error per step),
divided by the controller's per-step scale (CONTROLLER_SCALE) and clipped to [-MAX_ACTION, MAX_ACTION];
rotation holds the gripper pointing down and, while approaching, turns it about the vertical to the grasp
yaw; the gripper is GRIPPER_CLOSE from `close` to `lower`, GRIPPER_OPEN otherwise.
"""

import dataclasses
import math

import numpy as np

PHASES = ("approach", "descend", "close", "lift", "carry", "lower", "release", "retreat", "done")
GRIPPER_OPEN, GRIPPER_CLOSE = -1.0, 1.0
CONTROLLER_SCALE = np.array([0.05, 0.05, 0.05, 0.5, 0.5, 0.5])  # robosuite 1.4 OSC_POSE output_max per step

POSITION_GAIN = 1.0  # commanded displacement per step = gain * position error (then clipped)
ROTATION_GAIN = 1.0
MAX_ACTION = 1.0
HOVER_HEIGHT = 0.08  # m above the grasp point while approaching
CARRY_CLEARANCE = 0.04  # m between the object's bottom and the destination's top while carrying
MIN_LIFT = 0.08  # m: lifted at least this much (out of a drawer, off a box) before carrying
RETREAT_HEIGHT = 0.10
POSITION_TOLERANCE = 0.01  # m: a waypoint is reached within this distance
XY_TOLERANCE = 0.012  # m: above the grasp point / the destination
YAW_TOLERANCE = 0.08  # rad
CLOSE_STEPS = 12
OPEN_STEPS = 10
LIFTED = 0.02  # m the object's bottom must rise for a grasp to count
MIN_FINGER_GAP = 0.002  # m: fingers closer than this hold nothing (a bowl's rim holds them ~4 mm apart)
MAX_ATTEMPTS = 3
BUDGET = {  # steps per phase before moving on (or regrasping)
  "approach": 60,
  "descend": 30,
  "close": CLOSE_STEPS,
  "lift": 40,
  "carry": 70,
  "lower": 40,
  "release": OPEN_STEPS,
  "retreat": 20,
  "done": 10**9,
}


@dataclasses.dataclass
class Scene:
  """What the expert sees after a step (world frame, metres).

  eef_pos [3], eef_rot [3,3] (columns: the gripper's axes; column 2 points from the wrist to the fingertips),
  finger_axis [3] (unit, along which the fingers close), finger_gap (distance between the finger joints'
  positions, ~0.08 open, ~0 closed on nothing), grasp_pos [3] (where the grip point should be for the grasp),
  grasp_axis [3] (horizontal unit vector the fingers should close along: the object's narrow side),
  object_pos [3] (the object's reference point: the one the success check tests), object_bottom (its lowest
  z), destination_pos [3] (where the reference point should go: x, y and the release height),
  destination_top (z of the destination's highest point: carried objects clear it)."""

  eef_pos: np.ndarray
  eef_rot: np.ndarray
  finger_axis: np.ndarray
  finger_gap: float
  grasp_pos: np.ndarray
  grasp_axis: np.ndarray
  object_pos: np.ndarray
  object_bottom: float
  destination_pos: np.ndarray
  destination_top: float


@dataclasses.dataclass
class Memory:
  """The expert's state between steps."""

  phase: str = "approach"
  steps_in_phase: int = 0
  attempts: int = 1
  grasp_bottom: float = 0.0  # the object's bottom when the gripper closed
  hold_offset: np.ndarray | None = None  # eef_pos - object_pos while holding
  lift_z: float = 0.0  # the eef height to carry at
  retreat_z: float = 0.0


def wrap_half_turn(angle: float) -> float:
  """An angle -> the equivalent one in [-pi/2, pi/2): a parallel gripper is symmetric under half turns."""
  return (angle + math.pi / 2) % math.pi - math.pi / 2


def yaw_error(finger_axis, grasp_axis) -> float:
  """Rotation about world z (rad, in [-pi/2, pi/2)) that turns the finger axis's horizontal part onto the grasp
  axis, either way round."""
  have = math.atan2(finger_axis[1], finger_axis[0])
  want = math.atan2(grasp_axis[1], grasp_axis[0])
  return wrap_half_turn(want - have)


def rotation_command(eef_rot, yaw: float) -> np.ndarray:
  """Axis-angle rotation [3] (world frame, rad) that points the gripper's approach axis (eef_rot[:, 2]) straight
  down and turns it by `yaw` about world z: the tilt error is approach x down (sin of the angle between them)."""
  approach = np.asarray(eef_rot, np.float64)[:, 2]
  tilt = np.cross(approach, [0.0, 0.0, -1.0])
  return tilt + np.array([0.0, 0.0, yaw])


def action_from(position_error, rotation_error, gripper: float) -> np.ndarray:
  """Errors (m [3], rad [3]) -> the 7-D action: gain * error / CONTROLLER_SCALE, clipped to +-MAX_ACTION."""
  delta = np.concatenate([POSITION_GAIN * np.asarray(position_error), ROTATION_GAIN * np.asarray(rotation_error)])
  return np.append(np.clip(delta / CONTROLLER_SCALE, -MAX_ACTION, MAX_ACTION), gripper).astype(np.float32)


def _enter(memory: Memory, phase: str) -> None:
  memory.phase, memory.steps_in_phase = phase, 0


def _near(a, b, tolerance: float) -> bool:
  return float(np.linalg.norm(np.asarray(a) - np.asarray(b))) < tolerance


def _holding(memory: Memory, scene: Scene) -> bool:
  return scene.finger_gap > MIN_FINGER_GAP and scene.object_bottom > memory.grasp_bottom + LIFTED


def advance(memory: Memory, scene: Scene) -> None:
  """The phase transitions (in place) given the scene after the last step."""
  memory.steps_in_phase += 1
  phase, over = memory.phase, memory.steps_in_phase >= BUDGET[memory.phase]
  hover = scene.grasp_pos + [0.0, 0.0, HOVER_HEIGHT]
  if phase == "approach":
    aligned = abs(yaw_error(scene.finger_axis, scene.grasp_axis)) < YAW_TOLERANCE
    if (_near(scene.eef_pos[:2], hover[:2], XY_TOLERANCE) and aligned) or over:
      _enter(memory, "descend")
  elif phase == "descend":
    if _near(scene.eef_pos, scene.grasp_pos, POSITION_TOLERANCE) or over:
      memory.grasp_bottom = scene.object_bottom
      _enter(memory, "close")
  elif phase == "close":
    if over:
      memory.hold_offset = scene.eef_pos - scene.object_pos
      carry_bottom = scene.destination_top + CARRY_CLEARANCE
      memory.lift_z = scene.eef_pos[2] + max(carry_bottom - scene.object_bottom, MIN_LIFT)
      _enter(memory, "lift")
  elif phase == "lift":
    if scene.finger_gap <= MIN_FINGER_GAP or (over and not _holding(memory, scene)):
      _regrasp(memory)
    elif scene.eef_pos[2] > memory.lift_z - POSITION_TOLERANCE or over:
      _enter(memory, "carry")
  elif phase == "carry":
    if not _holding(memory, scene):
      _regrasp(memory)
    elif _near(scene.object_pos[:2], scene.destination_pos[:2], XY_TOLERANCE) or over:
      _enter(memory, "lower")
  elif phase == "lower":
    if scene.object_pos[2] < scene.destination_pos[2] + POSITION_TOLERANCE or over:
      _enter(memory, "release")
  elif phase == "release":
    if over:
      memory.retreat_z = scene.eef_pos[2] + RETREAT_HEIGHT
      _enter(memory, "retreat")
  elif phase == "retreat":
    if scene.eef_pos[2] > memory.retreat_z - POSITION_TOLERANCE or over:
      _enter(memory, "done")


def _regrasp(memory: Memory) -> None:
  if memory.attempts >= MAX_ATTEMPTS:
    _enter(memory, "done")
  else:
    memory.attempts += 1
    _enter(memory, "approach")


def command(memory: Memory, scene: Scene) -> np.ndarray:
  """The action [7] for the current phase."""
  phase, eef = memory.phase, scene.eef_pos
  yaw = yaw_error(scene.finger_axis, scene.grasp_axis) if phase in ("approach", "descend") else 0.0
  rotation = rotation_command(scene.eef_rot, yaw)
  hover = scene.grasp_pos + [0.0, 0.0, HOVER_HEIGHT]
  if phase == "approach":
    # rise first when below the hover height, then over: never sweep through other objects
    target = hover if eef[2] > hover[2] - 2 * POSITION_TOLERANCE else np.array([eef[0], eef[1], hover[2]])
    return action_from(target - eef, rotation, GRIPPER_OPEN)
  if phase == "descend":
    target = scene.grasp_pos.copy()
    if not _near(eef[:2], target[:2], 2 * XY_TOLERANCE):  # off to the side: correct before going lower
      target[2] = eef[2]
    return action_from(target - eef, rotation, GRIPPER_OPEN)
  if phase == "close":
    return action_from(np.zeros(3), rotation, GRIPPER_CLOSE)
  if phase == "lift":
    return action_from([0.0, 0.0, memory.lift_z - eef[2]], rotation, GRIPPER_CLOSE)
  if phase == "carry":
    goal = scene.destination_pos + memory.hold_offset
    return action_from([goal[0] - eef[0], goal[1] - eef[1], memory.lift_z - eef[2]], rotation, GRIPPER_CLOSE)
  if phase == "lower":
    goal = scene.destination_pos + memory.hold_offset
    return action_from(goal - eef, rotation, GRIPPER_CLOSE)
  if phase == "release":
    return action_from(np.zeros(3), rotation, GRIPPER_OPEN)
  if phase == "retreat":
    return action_from([0.0, 0.0, memory.retreat_z - eef[2]], rotation, GRIPPER_OPEN)
  return action_from(np.zeros(3), np.zeros(3), GRIPPER_OPEN)  # done


def act(memory: Memory, scene: Scene) -> np.ndarray:
  """One expert step: the transitions the scene allows, then the action of the phase reached."""
  advance(memory, scene)
  return command(memory, scene)
