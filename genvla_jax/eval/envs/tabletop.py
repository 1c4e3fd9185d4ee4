"""A CPU tabletop benchmark on MuJoCo with SimplerEnv-style tasks and protocols.

Scene: a table with four coloured cubes (two or three per episode), a cabinet with a drawer at the back,
and a top-down gripper (a mocap body: end-effector delta position control + open/close). A fixed camera
looks at the table from the front. Tasks mirror SimplerEnv's four:

  pick_object   "pick up the red cube"                 success: the cube held 4 cm above the table
  move_near     "move the red cube near the blue cube"  success: released, resting < 8 cm from the other
  open_drawer   "open the drawer"                       success: drawer out > 9 of its 12 cm
  close_drawer  "close the drawer" (starts open)        success: drawer in < 2 cm from closed

Action [4] float32: (dx, dy, dz) end-effector displacement in metres (clipped to +-MAX_DELTA per step)
and gripper (> 0.5 = closed). Observation: image uint8 [S,S,3] (the front camera), or [C,S,S,3] for the
cameras given (`cameras=("image", "wrist_image")`: CAMERA_VIEWS; the wrist camera rides on the gripper and
looks down between the fingers), state [4] = (x, y, z, gripper closed).
Closing the gripper within GRASP_RADIUS of a cube or the drawer handle grasps it: the cube then follows
the gripper (kinematically, exactly) until it opens, after which MuJoCo's physics lets it fall and rest;
the drawer slides with the gripper along its rail. Everything is deterministic given (task, seed,
protocol).

Protocols (`reset(protocol=...)`):
  visual_matching       the training appearance
  variant_aggregation   per episode one random shift: background colour, table texture, lighting,
                        distractor objects, or camera pose (SimplerEnv's variant aggregation)
  background_masking    training appearance, background pixels (floor, wall) painted black
  paraphrase            training appearance, held-out instruction wordings
  held_out_conditions   per episode one factor (FACTORS) drawn from the "held_out" condition pool
                        (Episode.variant = the factor; `env.conditions` = what was applied); never
                        seen in training (robot demos: the default appearance; VL corpus: "wide" pool)
Scripted expert: `Expert(env).act()` (privileged state) solves every task; demonstrations recorded
with it are what data/sim_record.py writes as RLDS.

Visual conditions for the generated vision-language corpus (data/vl_corpus.py): `apply_conditions(rng,
pool)` after `reset` (or `clear_scene`) draws one condition per factor from CONDITION_POOLS["wide"]
(pretraining) or ["held_out"] (evaluation only; disjoint from "wide" on every factor, see CONDITION_POOLS).
Visual-only props (PROPS: balls, cans, capsules, plates; mocap bodies whose geoms never collide) wait off
view like the unused cubes; robot episodes never move them (so their images and states are those of the
scene without props, tested bit for bit). `project(xyz)` -> normalized image coordinates (pointing answers).
"""

import os

os.environ.setdefault("MUJOCO_GL", "egl")  # offscreen rendering without a display (Mesa on CPU machines)


import colorsys

import mujoco
import numpy as np

from genvla_jax.eval.envs import Episode

SYSTEM_GL_HINT = (
  "the simulator renders offscreen through EGL (MUJOCO_GL=egl; Mesa's software renderer on a CPU machine): "
  "install libegl1 and libgl1-mesa-dri (Debian/Ubuntu: apt-get install libegl1 libgl1-mesa-dri), or set "
  "MUJOCO_GL=osmesa (libosmesa6) or MUJOCO_GL=glfw (a display)"
)


def _renderer(model, image_size: int):
  """mujoco.Renderer, or a RuntimeError naming the system libraries it needs."""
  try:
    return mujoco.Renderer(model, image_size, image_size)
  except Exception as e:  # noqa: BLE001 (the GL stack fails with many types)
    raise RuntimeError(f"MuJoCo rendering failed ({type(e).__name__}: {e}); {SYSTEM_GL_HINT}") from e


TASKS = ("pick_object", "move_near", "open_drawer", "close_drawer")
PROTOCOLS = ("visual_matching", "variant_aggregation", "background_masking", "paraphrase", "held_out_conditions")
VARIANTS = ("background", "table", "lighting", "distractors", "camera")
COLORS = {"red": (0.85, 0.15, 0.15), "green": (0.15, 0.7, 0.25), "blue": (0.2, 0.35, 0.9), "yellow": (0.9, 0.8, 0.15)}
DISTRACTOR_COLORS = ((0.6, 0.2, 0.7), (0.95, 0.5, 0.1))
INSTRUCTIONS = {  # task -> (training wordings, held-out paraphrases)
  "pick_object": (
    ("pick up the {a} cube", "grasp the {a} cube and lift it"),
    ("lift the {a} block", "take the {a} block off the table"),
  ),
  "move_near": (
    ("move the {a} cube near the {b} cube", "put the {a} cube next to the {b} cube"),
    ("place the {a} block close to the {b} block", "bring the {a} block beside the {b} block"),
  ),
  "open_drawer": (("open the drawer", "pull the drawer open"), ("slide the drawer out", "get the drawer open")),
  "close_drawer": (("close the drawer", "push the drawer shut"), ("slide the drawer in", "shut the drawer")),
}
# training-time instruction augmentation (data/instruction_aug.py; data/sim_record.py writes the table):
# wordings that are neither the training ones nor the held-out evaluation paraphrases above
TRAIN_PARAPHRASES = {
  "pick_object": ["grab the {a} cube", "pick the {a} cube up", "raise the {a} cube"],
  "move_near": [
    "push the {a} cube towards the {b} cube",
    "set the {a} cube by the {b} cube",
    "move the {a} cube to the {b} cube",
  ],
  "open_drawer": ["draw the drawer open", "open up the drawer"],
  "close_drawer": ["push the drawer closed", "close up the drawer"],
}
ACTION_DIM = 4
STATE_DIM = 4
MAX_DELTA = 0.04  # metres per control step
GRASP_RADIUS = 0.03
GRASP_TOLERANCE = 0.015  # the expert closes the gripper this close to the grasp point
GRASP_CLEARANCE = 0.06  # the expert's approach height above the grasp point while far from it
# Gaussian noise (std per action dimension) added to the executed action when recording noisy expert
# demonstrations (data/sim_record.py `execution_noise`; the recorded label stays the expert's command): the
# data then shows how to recover from the small errors a learned policy makes (DART, Laskey et al. 2017)
EXECUTION_NOISE_STD = (0.008, 0.008, 0.008, 0.0)
CUBE = 0.02  # cube half size; resting centre height
DRAWER_TRAVEL = 0.12
WORKSPACE = np.array([[-0.25, -0.25, 0.02], [0.25, 0.18, 0.30]])
HOME = np.array([0.0, -0.15, 0.18])
CAMERA = dict(pos=(0.0, -0.62, 0.5), fovy=45.0)
# observation camera name (as the recorded RLDS steps and config.data.cameras call it) -> MuJoCo camera
CAMERA_VIEWS = {"image": "front", "wrist_image": "wrist"}
WRIST_CAMERA = dict(pos=(0.0, -0.025, 0.05), fovy=90.0)  # in the hand's frame (beside the palm), looking down
# the wrist camera's near clipping plane (m): MuJoCo's default (1% of the scene's extent, ~14 cm here) would cut
# away the cube under the gripper; set for the wrist view only, so the front camera's frames stay bit for bit
WRIST_ZNEAR = 0.003
HANDLE_OFFSET = np.array([0.0, -0.075, 0.05])  # handle centre relative to the drawer body

# ----- visual-only props and condition pools (data/vl_corpus.py; protocol held_out_conditions) -----------
FACTORS = VARIANTS  # the factors a visual condition sets, in the order apply_conditions draws them
# colour words of everything a scene may show: the cubes' COLORS and more (props only)
PALETTE = COLORS | {
  "purple": (0.55, 0.2, 0.75),
  "orange": (0.95, 0.5, 0.1),
  "white": (0.92, 0.92, 0.92),
  "black": (0.08, 0.08, 0.08),
  "pink": (0.95, 0.45, 0.7),
  "cyan": (0.1, 0.8, 0.85),
}
# prop shape -> (MuJoCo geom type, size, centre height when resting on the table, footprint radius)
PROP_SHAPES = {
  "ball": ("sphere", "0.022", 0.022, 0.022),
  "can": ("cylinder", "0.02 0.03", 0.03, 0.02),
  "capsule": ("capsule", "0.013 0.02", 0.033, 0.013),
  "plate": ("cylinder", "0.042 0.004", 0.004, 0.042),
}
PROPS = ("ball", "ball", "ball", "can", "can", "can", "capsule", "capsule", "plate", "plate")  # prop_<i>'s shape
CUBE_FOOTPRINT = CUBE * 1.42  # half diagonal
PROP_PARK = np.array([6.0, 5.0, 0.03])  # prop_<i> waits at PROP_PARK + (0.1 i, 0, 0): off view, in the cubes' row
# (shape, colour) of props that only the held-out pool shows; every other combination is "wide"
HELD_OUT_PROPS = (
  ("ball", "pink"),
  ("ball", "cyan"),
  ("can", "orange"),
  ("can", "green"),
  ("capsule", "white"),
  ("capsule", "red"),
  ("plate", "black"),
  ("plate", "blue"),
)
WIDE_PROPS = tuple((s, c) for s in PROP_SHAPES for c in PALETTE if (s, c) not in HELD_OUT_PROPS)
TABLE_KINDS = ("plain", "checker", "grain", "tiles", "speckled")  # table_<kind> materials
# Visual-condition pools; a held-out condition can never be drawn from "wide" on any factor:
#
#   factor       wide (pretraining corpus)                     held_out (evaluation only)
#   background   floor, wall hue in [0, 0.55)                  hue in [0.62, 0.95)
#                (red, orange, yellow, green, cyan)            (blue, purple, magenta, pink)
#   table        plain (hue [0, 0.55)), checker, grain, tiles  plain (hue [0.62, 0.95)), speckled
#   lighting     white light, intensity 0.35-1, ambient        tinted light (saturation 0.3-0.6), same
#                0.15-0.45, direction (x, y, -1)               intensity / ambient / direction ranges
#   camera       position offset 0-5 cm, fovy 40-50 deg,       offset 7-10 cm, fovy 51-55 deg
#                looking at the table centre (+-2 cm)
#   distractors  0-2 props, (shape, colour) in WIDE_PROPS      1-2 props, (shape, colour) in HELD_OUT_PROPS
#
# Colours are HSV: saturation / value ranges are shared; hue alone separates the pools. Intervals are
# [low, high) as numpy draws them. The default appearance (robot demonstrations) is in neither pool's
# background hues (its floor and wall have hue 0.58), table plain hue 0.09 is "wide".
CONDITION_POOLS = {
  "wide": dict(
    hue=(0.0, 0.55),
    table_kinds=("plain", "checker", "grain", "tiles"),
    tint_saturation=(0.0, 0.0),
    camera_offset=(0.0, 0.05),
    camera_fovy=(40.0, 50.0),
    distractor_count=(0, 2),
    distractor_props=WIDE_PROPS,
  ),
  "held_out": dict(
    hue=(0.62, 0.95),
    table_kinds=("plain", "speckled"),
    tint_saturation=(0.3, 0.6),
    camera_offset=(0.07, 0.10),
    camera_fovy=(51.0, 55.0),
    distractor_count=(1, 2),
    distractor_props=HELD_OUT_PROPS,
  ),
}
SATURATION, VALUE = (0.25, 0.8), (0.25, 0.9)  # background and plain-table colours (both pools)
LIGHT_INTENSITY, LIGHT_AMBIENT = (0.35, 1.0), (0.15, 0.45)
CAMERA_TARGET_JITTER = 0.02
TABLE_AREA = np.array([[-0.22, -0.2], [0.22, 0.0]])  # where apply_conditions and the corpus put objects (x, y)


class SceneFullError(RuntimeError):
  """No room on the table, or no free prop, for another object (data/vl_corpus.py then draws another scene)."""


def _scene_xml() -> str:
  cubes = "\n".join(
    f'<body name="cube_{c}" pos="{5 + i} 5 {CUBE}"><freejoint name="cube_{c}"/>'
    f'<geom name="cube_{c}" type="box" size="{CUBE} {CUBE} {CUBE}" rgba="{r} {g} {b} 1" mass="0.05"/></body>'
    for i, (c, (r, g, b)) in enumerate(COLORS.items())
  )
  distractors = "\n".join(
    f'<body name="distractor_{i}" pos="{-5 - i} 5 0.025"><freejoint/>'
    f'<geom name="distractor_{i}" type="cylinder" size="0.018 0.025" rgba="{r} {g} {b} 1" mass="0.05"/></body>'
    for i, (r, g, b) in enumerate(DISTRACTOR_COLORS)
  )
  props = "\n".join(
    f'<body name="prop_{i}" mocap="true" pos="{PROP_PARK[0] + 0.1 * i:.1f} {PROP_PARK[1]} {PROP_PARK[2]}">'
    f'<geom name="prop_{i}" type="{PROP_SHAPES[shape][0]}" size="{PROP_SHAPES[shape][1]}" '
    f'rgba="{r} {g} {b} 1" contype="0" conaffinity="0"/></body>'
    for i, (shape, (r, g, b)) in enumerate(zip(PROPS, [v for k, v in PALETTE.items() if k not in COLORS] * 2))
  )
  return f"""
<mujoco model="genvla_tabletop">
  <option timestep="0.002" gravity="0 0 -9.81"/>
  <visual><quality shadowsize="0" offsamples="0"/><global offwidth="512" offheight="512"/></visual>
  <asset>
    <texture name="checker" type="2d" builtin="checker" rgb1=".75 .7 .6" rgb2=".45 .4 .35" width="64" height="64"/>
    <texture name="grain" type="2d" builtin="gradient" rgb1=".7 .55 .35" rgb2=".45 .3 .15" width="64" height="64"/>
    <material name="table_plain" rgba=".62 .55 .45 1"/>
    <material name="table_checker" texture="checker" texrepeat="6 6"/>
    <material name="table_grain" texture="grain" texrepeat="3 1"/>
    <texture name="tiles" type="2d" builtin="flat" mark="edge" rgb1=".8 .78 .74" markrgb=".3 .3 .3" width="64" height="64"/>
    <texture name="speckled" type="2d" builtin="flat" mark="random" random="0.25" rgb1=".7 .7 .68" markrgb=".25 .22 .2" width="128" height="128"/>
    <material name="table_tiles" texture="tiles" texrepeat="5 5"/>
    <material name="table_speckled" texture="speckled" texrepeat="2 2"/>
  </asset>
  <worldbody>
    <light name="key" pos="0 -0.3 1.2" dir="0 0.3 -1" diffuse=".8 .8 .8" ambient=".3 .3 .3" directional="true"/>
    <camera name="front" pos="{CAMERA['pos'][0]} {CAMERA['pos'][1]} {CAMERA['pos'][2]}"
            xyaxes="1 0 0 0 0.625 0.781" fovy="{CAMERA['fovy']}"/>
    <geom name="floor" type="plane" pos="0 0 -0.4" size="3 3 .1" rgba=".35 .38 .42 1"/>
    <geom name="wall" type="box" pos="0 0.9 0.2" size="3 .02 1.2" rgba=".55 .6 .65 1" contype="0" conaffinity="0"/>
    <geom name="table" type="box" pos="0 0 -0.02" size="0.3 0.3 0.02" material="table_plain"/>
    <geom name="cabinet_top" type="box" pos="0 0.24 0.105" size="0.14 0.07 0.005" rgba=".4 .3 .2 1" contype="0" conaffinity="0"/>
    <geom name="cabinet_left" type="box" pos="-0.135 0.24 0.05" size="0.005 0.07 0.05" rgba=".4 .3 .2 1" contype="0" conaffinity="0"/>
    <geom name="cabinet_right" type="box" pos="0.135 0.24 0.05" size="0.005 0.07 0.05" rgba=".4 .3 .2 1" contype="0" conaffinity="0"/>
    <body name="drawer" pos="0 0.24 0.0">
      <joint name="drawer" type="slide" axis="0 -1 0" range="0 {DRAWER_TRAVEL}" damping="5"/>
      <geom name="drawer_front" type="box" pos="0 -0.068 0.05" size="0.13 0.005 0.045" rgba=".55 .4 .25 1" contype="0" conaffinity="0"/>
      <geom name="drawer_bottom" type="box" pos="0 0 0.008" size="0.125 0.065 0.005" rgba=".5 .38 .25 1" contype="0" conaffinity="0"/>
      <geom name="handle" type="box" pos="{HANDLE_OFFSET[0]} {HANDLE_OFFSET[1]} {HANDLE_OFFSET[2]}" size="0.03 0.006 0.006" rgba=".85 .85 .85 1" contype="0" conaffinity="0"/>
    </body>
    {cubes}
    {distractors}
    <body name="hand" mocap="true" pos="{HOME[0]} {HOME[1]} {HOME[2]}">
      <camera name="wrist" pos="{WRIST_CAMERA['pos'][0]} {WRIST_CAMERA['pos'][1]} {WRIST_CAMERA['pos'][2]}" fovy="{WRIST_CAMERA['fovy']}"/>
      <geom name="palm" type="box" pos="0 0 0.035" size="0.035 0.01 0.008" rgba=".2 .2 .2 1" contype="0" conaffinity="0"/>
      <geom name="wrist" type="cylinder" pos="0 0 0.08" size="0.008 0.04" rgba=".25 .25 .25 1" contype="0" conaffinity="0"/>
      <body name="finger_l" pos="-0.03 0 0.012"><joint name="finger_l" type="slide" axis="1 0 0" range="0 0.02"/>
        <geom type="box" size="0.004 0.008 0.02" rgba=".9 .9 .9 1" contype="0" conaffinity="0" mass="0.01"/></body>
      <body name="finger_r" pos="0.03 0 0.012"><joint name="finger_r" type="slide" axis="-1 0 0" range="0 0.02"/>
        <geom type="box" size="0.004 0.008 0.02" rgba=".9 .9 .9 1" contype="0" conaffinity="0" mass="0.01"/></body>
    </body>
    {props}
  </worldbody>
  <actuator>
    <position name="finger_l" joint="finger_l" kp="50" ctrlrange="0 0.02"/>
    <position name="finger_r" joint="finger_r" kp="50" ctrlrange="0 0.02"/>
  </actuator>
</mujoco>"""


class TabletopEnv:
  """One environment. reset(task, seed, protocol) -> obs; step(action) -> (obs, success, done)."""

  def __init__(self, image_size: int = 64, max_steps: int = 60, control_substeps: int = 20, cameras=("image",)):
    unknown = [c for c in cameras if c not in CAMERA_VIEWS]
    if not cameras or unknown:
      raise ValueError(f"unknown tabletop cameras {unknown or list(cameras)}; choose from {list(CAMERA_VIEWS)}")
    self.model = mujoco.MjModel.from_xml_string(_scene_xml())
    self.data = mujoco.MjData(self.model)
    self.image_size, self.max_steps, self.substeps = image_size, max_steps, control_substeps
    self.cameras = tuple(cameras)  # the observation's cameras, in order ("image": [S,S,3]; more: [C,S,S,3])
    self._renderer = _renderer(self.model, image_size)
    self._seg_renderer = None
    m = self.model
    self._ids = {
      name: mujoco.mj_name2id(m, mujoco.mjtObj.mjOBJ_GEOM, name) for name in ("floor", "wall", "table", "handle")
    }
    self._cube_qpos = {c: m.jnt_qposadr[mujoco.mj_name2id(m, mujoco.mjtObj.mjOBJ_JOINT, f"cube_{c}")] for c in COLORS}
    self._cube_dof = {c: m.jnt_dofadr[mujoco.mj_name2id(m, mujoco.mjtObj.mjOBJ_JOINT, f"cube_{c}")] for c in COLORS}
    self._distractor_qpos = [
      m.jnt_qposadr[m.body_jntadr[mujoco.mj_name2id(m, mujoco.mjtObj.mjOBJ_BODY, f"distractor_{i}")]]
      for i in range(len(DISTRACTOR_COLORS))
    ]
    drawer_joint = mujoco.mj_name2id(m, mujoco.mjtObj.mjOBJ_JOINT, "drawer")
    self._drawer_qpos, self._drawer_dof = m.jnt_qposadr[drawer_joint], m.jnt_dofadr[drawer_joint]
    self._finger_qpos = [
      m.jnt_qposadr[mujoco.mj_name2id(m, mujoco.mjtObj.mjOBJ_JOINT, f)] for f in ("finger_l", "finger_r")
    ]
    self._cube_geom = {c: mujoco.mj_name2id(m, mujoco.mjtObj.mjOBJ_GEOM, f"cube_{c}") for c in COLORS}
    self._prop_geom = [mujoco.mj_name2id(m, mujoco.mjtObj.mjOBJ_GEOM, f"prop_{i}") for i in range(len(PROPS))]
    self._prop_mocap = [
      m.body_mocapid[mujoco.mj_name2id(m, mujoco.mjtObj.mjOBJ_BODY, f"prop_{i}")] for i in range(len(PROPS))
    ]
    self._table_materials = {k: mujoco.mj_name2id(m, mujoco.mjtObj.mjOBJ_MATERIAL, f"table_{k}") for k in TABLE_KINDS}
    self._camera = mujoco.mj_name2id(m, mujoco.mjtObj.mjOBJ_CAMERA, "front")
    self._defaults = dict(
      geom_rgba=m.geom_rgba.copy(),
      geom_matid=m.geom_matid.copy(),
      light_diffuse=m.light_diffuse.copy(),
      light_dir=m.light_dir.copy(),
      cam_pos=m.cam_pos.copy(),
      cam_fovy=m.cam_fovy.copy(),
      mat_rgba=m.mat_rgba.copy(),
      light_ambient=m.light_ambient.copy(),
      cam_quat=m.cam_quat.copy(),
    )
    self._defaults_vis = dict(znear=float(m.vis.map.znear))
    self.episode: Episode | None = None
    self.grasped: str | None = None  # a cube colour, "drawer" or None
    self._grasp_from = None
    self.closed = False
    self.prop_colours: list[str | None] = [None] * len(PROPS)  # colour words of the props on the table
    self.conditions: dict = {}  # what apply_conditions applied since the last reset / clear_scene

  # ----- state -------------------------------------------------------------------------------------
  @property
  def hand(self) -> np.ndarray:
    return self.data.mocap_pos[0].copy()

  def cube(self, colour: str) -> np.ndarray:
    return self.data.qpos[self._cube_qpos[colour] : self._cube_qpos[colour] + 3].copy()

  @property
  def drawer(self) -> float:
    return float(self.data.qpos[self._drawer_qpos])

  def handle(self) -> np.ndarray:
    return np.array([0.0, 0.24, 0.0]) + HANDLE_OFFSET + np.array([0.0, -self.drawer, 0.0])

  def state(self) -> np.ndarray:
    return np.concatenate([self.hand, [float(self.closed)]]).astype(np.float32)

  # ----- episode -----------------------------------------------------------------------------------
  def reset(self, task: str, seed: int, protocol: str = "visual_matching") -> dict:
    if task not in TASKS:
      raise ValueError(f"unknown task {task!r}; choose from {TASKS}")
    if protocol not in PROTOCOLS:
      raise ValueError(f"unknown protocol {protocol!r}; choose from {PROTOCOLS}")
    rng = np.random.default_rng([seed, TASKS.index(task)])
    m, d = self.model, self.data
    self.clear_scene()
    colours = list(rng.permutation(sorted(COLORS))[: int(rng.integers(2, 4))])
    positions = self._place(rng, len(colours), [])
    for c in COLORS:  # cubes not in this episode wait off the table
      self._set_cube(c, positions[colours.index(c)] if c in colours else np.array([5.0, 5.0 + len(c), CUBE]))
    target = reference = ""
    if task in ("pick_object", "move_near"):
      target = str(colours[0])
    if task == "move_near":
      reference = str(colours[1])
      while np.linalg.norm(self.cube(target)[:2] - self.cube(reference)[:2]) < 0.14:  # not already near
        self._set_cube(target, self._place(rng, 1, [self.cube(c)[:2] for c in colours if c != target])[0])
    d.qpos[self._drawer_qpos] = 0.1 if task == "close_drawer" else 0.0
    variant = ""
    if protocol == "variant_aggregation":
      variant = str(rng.choice(VARIANTS))
      self._apply_variant(variant, rng, [self.cube(c)[:2] for c in colours])
    elif protocol == "held_out_conditions":
      variant = str(rng.choice(FACTORS))
      self.apply_conditions(rng, "held_out", (variant,))
    d.mocap_pos[0] = HOME + np.append(rng.uniform(-0.05, 0.05, 2), 0.0)
    self.grasped, self._grasp_from, self.closed = None, None, False
    wordings = INSTRUCTIONS[task][1 if protocol == "paraphrase" else 0]
    instruction = str(rng.choice(wordings)).format(a=target, b=reference)
    self.episode = Episode(task, seed, protocol, instruction, target, reference, variant)
    mujoco.mj_forward(m, d)
    for _ in range(3):  # let the cubes settle
      self._physics(np.zeros(3))
    return self.observation()

  def clear_scene(self):
    """The default appearance, MuJoCo's initial state (cubes and props parked off view, drawer shut,
    gripper open at its initial pose), no episode state (grasp, conditions)."""
    for key, value in self._defaults.items():
      getattr(self.model, key)[:] = value
    mujoco.mj_resetData(self.model, self.data)
    self.prop_colours = [None] * len(PROPS)
    self.conditions = {}
    self.grasped, self._grasp_from, self.closed = None, None, False

  def _place(self, rng, n, taken):
    out = []
    while len(out) < n:
      p = np.array([rng.uniform(-0.18, 0.18), rng.uniform(-0.16, 0.02)])
      if all(np.linalg.norm(p - q) > 0.09 for q in list(taken) + [o[:2] for o in out]):
        out.append(np.array([p[0], p[1], CUBE]))
    return out

  def _set_cube(self, colour, pos):
    a = self._cube_qpos[colour]
    self.data.qpos[a : a + 3] = pos
    self.data.qpos[a + 3 : a + 7] = (1, 0, 0, 0)
    self.data.qvel[self._cube_dof[colour] : self._cube_dof[colour] + 6] = 0

  def _apply_variant(self, variant, rng, taken):
    m = self.model
    if variant == "background":
      for name in ("floor", "wall"):
        m.geom_rgba[self._ids[name], :3] = rng.uniform(0.05, 0.95, 3)
    elif variant == "table":
      m.geom_matid[self._ids["table"]] = mujoco.mj_name2id(
        m, mujoco.mjtObj.mjOBJ_MATERIAL, str(rng.choice(["table_checker", "table_grain"]))
      )
    elif variant == "lighting":
      m.light_diffuse[0] = rng.uniform(0.35, 1.0) * np.ones(3)
      m.light_dir[0] = np.array([rng.uniform(-0.5, 0.5), rng.uniform(-0.2, 0.6), -1.0])
    elif variant == "distractors":
      for i, pos in enumerate(self._place(rng, int(rng.integers(1, len(DISTRACTOR_COLORS) + 1)), taken)):
        a = self._distractor_qpos[i]
        self.data.qpos[a : a + 3] = (pos[0], pos[1], 0.025)
    elif variant == "camera":
      m.cam_pos[0] = np.asarray(CAMERA["pos"]) + rng.uniform(-0.05, 0.05, 3)
      m.cam_fovy[0] = CAMERA["fovy"] + rng.uniform(-5, 5)

  # ----- visual conditions, props, scene composition (data/vl_corpus.py) --------------------------
  def apply_conditions(self, rng: np.random.Generator, pool: str, factors=FACTORS) -> dict:
    """Draws one condition per factor in `factors` from CONDITION_POOLS[pool] and applies it (after reset
    or clear_scene; objects already placed stay). -> {factor: description} (also merged into
    self.conditions); descriptions are JSON-able: background {"floor", "wall": rgb}, table {"kind",
    "rgb"}, lighting {"diffuse", "ambient", "direction"}, camera {"offset", "fovy", "target"},
    distractors {"props": [[shape, colour], ...]}."""
    if pool not in CONDITION_POOLS:
      raise ValueError(f"unknown condition pool {pool!r}; choose from {sorted(CONDITION_POOLS)}")
    unknown = set(factors) - set(FACTORS)
    if unknown:
      raise ValueError(f"unknown condition factors {sorted(unknown)}; choose from {FACTORS}")
    spec, applied = CONDITION_POOLS[pool], {}
    for factor in FACTORS:  # a fixed order: the draws do not depend on how `factors` is ordered
      if factor in factors:
        applied[factor] = getattr(self, f"_condition_{factor}")(rng, spec)
    mujoco.mj_forward(self.model, self.data)
    self.conditions.update(applied)
    return applied

  def _condition_background(self, rng, spec) -> dict:
    out = {}
    for name in ("floor", "wall"):
      rgb = _hsv(rng.uniform(*spec["hue"]), rng.uniform(*SATURATION), rng.uniform(*VALUE))
      self.model.geom_rgba[self._ids[name], :3] = rgb
      out[name] = rgb
    return out

  def _condition_table(self, rng, spec) -> dict:
    m, kind = self.model, str(rng.choice(spec["table_kinds"]))
    if kind == "plain":
      rgb = _hsv(rng.uniform(*spec["hue"]), rng.uniform(*SATURATION), rng.uniform(0.35, 0.85))
    else:  # a texture, its brightness varied
      rgb = [float(rng.uniform(0.7, 1.0))] * 3
    m.geom_matid[self._ids["table"]] = self._table_materials[kind]
    m.mat_rgba[self._table_materials[kind], :3] = rgb
    return {"kind": kind, "rgb": rgb}

  def _condition_lighting(self, rng, spec) -> dict:
    m = self.model
    tint = np.array(_hsv(rng.uniform(0.0, 1.0), rng.uniform(*spec["tint_saturation"]), 1.0))
    m.light_diffuse[0] = rng.uniform(*LIGHT_INTENSITY) * tint
    m.light_ambient[0] = rng.uniform(*LIGHT_AMBIENT) * tint
    m.light_dir[0] = np.array([rng.uniform(-0.6, 0.6), rng.uniform(-0.3, 0.7), -1.0])
    return {
      "diffuse": m.light_diffuse[0].tolist(),
      "ambient": m.light_ambient[0].tolist(),
      "direction": m.light_dir[0].tolist(),
    }

  def _condition_camera(self, rng, spec) -> dict:
    m = self.model
    direction = rng.normal(size=3)
    offset = rng.uniform(*spec["camera_offset"]) * direction / np.linalg.norm(direction)
    target = np.append(rng.uniform(-CAMERA_TARGET_JITTER, CAMERA_TARGET_JITTER, 2), 0.0)
    m.cam_pos[self._camera] = np.asarray(CAMERA["pos"]) + offset
    m.cam_quat[self._camera] = look_at_quat(m.cam_pos[self._camera], target)
    m.cam_fovy[self._camera] = rng.uniform(*spec["camera_fovy"])
    return {"offset": offset.tolist(), "fovy": float(m.cam_fovy[self._camera]), "target": target.tolist()}

  def _condition_distractors(self, rng, spec) -> dict:
    low, high = spec["distractor_count"]
    placed = []
    for _ in range(int(rng.integers(low, high + 1))):
      taken = {(o["shape"], o["colour"]) for o in self.table_objects()}
      free = {PROPS[i] for i in range(len(PROPS)) if self.prop_colours[i] is None}
      choices = [p for p in spec["distractor_props"] if p not in taken and p[0] in free]
      if not choices:
        raise SceneFullError(f"no free prop for a distractor (on the table: {sorted(taken)})")
      shape, colour = choices[int(rng.integers(len(choices)))]
      xy = self.free_spot(rng, PROP_SHAPES[shape][3])
      self.place_prop(shape, colour, xy)
      placed.append([shape, colour])
    return {"props": placed}

  def table_objects(self) -> list[dict]:
    """The cubes and props on the table: {"name", "shape", "colour", "pos" [3], "geom", "radius"}
    (cubes first, in COLORS order; then props by index)."""
    out = [
      {
        "name": f"cube_{c}",
        "shape": "cube",
        "colour": c,
        "pos": self.cube(c),
        "geom": self._cube_geom[c],
        "radius": CUBE_FOOTPRINT,
      }
      for c in COLORS
      if abs(self.cube(c)[0]) < 1
    ]
    for i, colour in enumerate(self.prop_colours):
      if colour is not None:
        pos = self.data.mocap_pos[self._prop_mocap[i]].copy()
        out.append(
          {
            "name": f"prop_{i}",
            "shape": PROPS[i],
            "colour": colour,
            "pos": pos,
            "geom": self._prop_geom[i],
            "radius": PROP_SHAPES[PROPS[i]][3],
          }
        )
    return out

  def free_spot(self, rng: np.random.Generator, radius: float, tries: int = 200) -> np.ndarray:
    """(x, y) in TABLE_AREA where a footprint of `radius` keeps 1.5 cm from every object on the table;
    SceneFullError after `tries` draws."""
    taken = [(o["pos"][:2], o["radius"]) for o in self.table_objects()]
    for _ in range(tries):
      xy = rng.uniform(TABLE_AREA[0], TABLE_AREA[1])
      if all(np.linalg.norm(xy - q) > radius + r + 0.015 for q, r in taken):
        return xy
    raise SceneFullError(f"no free spot of radius {radius} on the table after {tries} tries ({len(taken)} objects)")

  def place_cube(self, colour: str, pos) -> None:
    """Puts a cube at `pos` [3] (at rest; call forward() before rendering)."""
    self._set_cube(colour, np.asarray(pos, np.float64))

  def place_prop(self, shape: str, colour: str, xy) -> int:
    """Puts a free prop of `shape`, recoloured `colour` (a PALETTE word), resting on the table at `xy`;
    -> its index. ValueError when every prop of that shape is in use."""
    free = [i for i in range(len(PROPS)) if PROPS[i] == shape and self.prop_colours[i] is None]
    if not free:
      raise ValueError(f"every {shape} prop is in use ({PROPS.count(shape)} in PROPS)")
    i = free[0]
    self.data.mocap_pos[self._prop_mocap[i]] = (xy[0], xy[1], PROP_SHAPES[shape][2])
    self.model.geom_rgba[self._prop_geom[i], :3] = PALETTE[colour]
    self.prop_colours[i] = colour
    return i

  def set_gripper(self, pos, closed: bool) -> None:
    """The gripper at `pos` [3], its fingers open or closed (as the closed position controller holds them)."""
    self.data.mocap_pos[0] = pos
    self.data.qpos[self._finger_qpos] = 0.018 if closed else 0.0
    self.closed = bool(closed)

  def set_drawer(self, opening: float) -> None:
    """The drawer `opening` metres out (0 = shut, DRAWER_TRAVEL = fully out)."""
    self.data.qpos[self._drawer_qpos] = float(np.clip(opening, 0.0, DRAWER_TRAVEL))

  def forward(self) -> None:
    """Positions (geoms, camera) from the current state, for render / project / segmentation."""
    mujoco.mj_forward(self.model, self.data)

  def project(self, point_xyz) -> tuple[float, float]:
    """A world point -> (u, v), normalized image coordinates of the front camera (u right, v down; the
    image is [0,1]^2, pixel column floor(u S), row floor(v S)); ValueError behind the camera. Reads the
    camera pose of the last forward()."""
    rel = np.asarray(point_xyz, np.float64) - self.data.cam_xpos[self._camera]
    x, y, z = self.data.cam_xmat[self._camera].reshape(3, 3).T @ rel  # camera frame: x right, y up, -z forward
    if z >= 0:
      raise ValueError(f"{point_xyz} is behind the camera")
    focal = 0.5 / np.tan(np.deg2rad(self.model.cam_fovy[self._camera]) / 2)  # square image: one fovy
    return float(0.5 + focal * x / -z), float(0.5 - focal * y / -z)

  def camera_distance(self, point_xyz) -> float:
    """Metres from the front camera (pose of the last forward()) to a world point."""
    return float(np.linalg.norm(np.asarray(point_xyz, np.float64) - self.data.cam_xpos[self._camera]))

  def segmentation(self) -> np.ndarray:
    """int32 [S,S]: the geom id seen at each pixel, -1 where there is none."""
    if self._seg_renderer is None:
      self._seg_renderer = mujoco.Renderer(self.model, self.image_size, self.image_size)
      self._seg_renderer.enable_segmentation_rendering()
    self._seg_renderer.update_scene(self.data, camera="front")
    seg = self._seg_renderer.render()
    return np.where(seg[..., 1] == int(mujoco.mjtObj.mjOBJ_GEOM), seg[..., 0], -1).astype(np.int32)

  # ----- stepping ----------------------------------------------------------------------------------
  def step(self, action) -> tuple[dict, bool, bool]:
    """action [4] -> (observation, success, done). NaN/inf actions are an error."""
    action = np.asarray(action, np.float64).reshape(-1)
    if action.shape != (ACTION_DIM,) or not np.all(np.isfinite(action)):
      raise ValueError(f"action must be {ACTION_DIM} finite numbers, got {action}")
    delta = np.clip(action[:3], -MAX_DELTA, MAX_DELTA)
    close = bool(action[3] > 0.5)
    if close and not self.closed:
      self._try_grasp()
    if not close:
      self.grasped, self._grasp_from = None, None
    self.closed = close
    self._physics(delta)
    ep = self.episode
    ep.steps += 1
    ep.success = ep.success or self._succeeded()
    return self.observation(), ep.success, ep.success or ep.steps >= self.max_steps

  def _try_grasp(self):
    hand = self.hand
    candidates = {c: self.cube(c) for c in COLORS}
    candidates["drawer"] = self.handle()
    name, pos = min(candidates.items(), key=lambda kv: np.linalg.norm(kv[1] - hand))
    if np.linalg.norm(pos - hand) <= GRASP_RADIUS:
      self.grasped = name
      self._grasp_from = (hand.copy(), self.cube(name) if name in COLORS else self.drawer)

  def _physics(self, delta):
    m, d = self.model, self.data
    d.mocap_pos[0] = np.clip(d.mocap_pos[0] + delta, WORKSPACE[0], WORKSPACE[1])
    d.ctrl[:] = 0.018 if self.closed else 0.0
    for _ in range(self.substeps):
      if self.grasped in COLORS:  # the held cube follows the gripper exactly
        hand0, cube0 = self._grasp_from
        self._set_cube(self.grasped, cube0 + (d.mocap_pos[0] - hand0))
      elif self.grasped == "drawer":  # the drawer slides with the gripper along its rail (-y)
        hand0, q0 = self._grasp_from
        d.qpos[self._drawer_qpos] = np.clip(q0 - (d.mocap_pos[0][1] - hand0[1]), 0.0, DRAWER_TRAVEL)
        d.qvel[self._drawer_dof] = 0.0
      mujoco.mj_step(m, d)

  def _succeeded(self) -> bool:
    ep = self.episode
    if ep.task == "pick_object":
      return self.grasped == ep.target and self.cube(ep.target)[2] > CUBE + 0.04
    if ep.task == "move_near":
      cube = self.cube(ep.target)
      return (
        self.grasped != ep.target
        and cube[2] < CUBE + 0.005
        and np.linalg.norm(cube[:2] - self.cube(ep.reference)[:2]) < 0.08
      )
    if ep.task == "open_drawer":
      return self.drawer > 0.09
    return self.drawer < 0.02

  # ----- observation -------------------------------------------------------------------------------
  def render(self, camera: str = "image") -> np.ndarray:
    """One camera's frame uint8 [S,S,3] (`camera`: a CAMERA_VIEWS name); background masking paints the floor
    and wall black."""
    view = CAMERA_VIEWS[camera]
    vis_map = self.model.vis.map
    vis_map.znear = WRIST_ZNEAR / self.model.stat.extent if view == "wrist" else self._defaults_vis["znear"]
    self._renderer.update_scene(self.data, camera=view)
    image = self._renderer.render().copy()
    if self.episode is not None and self.episode.protocol == "background_masking":
      if self._seg_renderer is None:
        self._seg_renderer = mujoco.Renderer(self.model, self.image_size, self.image_size)
        self._seg_renderer.enable_segmentation_rendering()
      self._seg_renderer.update_scene(self.data, camera=view)
      seg = self._seg_renderer.render()
      background = (seg[..., 0] == -1) | np.isin(seg[..., 0], [self._ids["floor"], self._ids["wall"]])
      image[background] = 0
    return image

  def observation(self) -> dict:
    if self.cameras == ("image",):
      image = self.render()
    else:
      image = np.stack([self.render(c) for c in self.cameras])
    return {"image": image, "state": self.state(), "instruction": self.episode.instruction}

  def close(self):
    self._renderer.close()
    if self._seg_renderer is not None:
      self._seg_renderer.close()


def _hsv(h: float, s: float, v: float) -> list[float]:
  return [float(x) for x in colorsys.hsv_to_rgb(h, s, v)]


def look_at_quat(pos, target) -> np.ndarray:
  """[4] MuJoCo quaternion of a camera at `pos` looking at `target` (image x axis horizontal, +z up)."""
  back = np.asarray(pos, np.float64) - np.asarray(target, np.float64)
  back /= np.linalg.norm(back)
  right = np.cross([0.0, 0.0, 1.0], back)
  right /= np.linalg.norm(right)
  quat = np.zeros(4)
  mujoco.mju_mat2Quat(quat, np.stack([right, np.cross(back, right), back], axis=1).reshape(-1))
  return quat


QUESTION_CORPUS = tuple(f"is there a {c} cube on the table?" for c in COLORS) + (
  "how many cubes are on the table?",
  "is the drawer open?",
  "yes",
  "no",
  "2",
  "3",
)


def scene_question(env: TabletopEnv, rng: np.random.Generator, i: int) -> tuple[str, str]:
  """A VL (question, answer) about the current scene (co-training data, data/sim_record.py): whether a
  colour is there, how many cubes, whether the drawer is open."""
  present = [c for c in COLORS if abs(env.cube(c)[0]) < 1]
  if i % 3 == 0:
    colour = str(rng.choice(sorted(COLORS)))
    return f"is there a {colour} cube on the table?", "yes" if colour in present else "no"
  if i % 3 == 1:
    return "how many cubes are on the table?", str(len(present))
  return "is the drawer open?", "yes" if env.drawer > 0.05 else "no"


class Expert:
  """Scripted expert with privileged state, a feedback law of the current state only (so it recovers
  from any perturbation, which is what noise-injected demonstrations need): move toward the grasp
  point while descending as the horizontal error shrinks (the hand stays GRASP_CLEARANCE above it until
  it is close), close when within GRASP_TOLERANCE, re-open after a missed grasp; MAX_DELTA per step."""

  def __init__(self, env: TabletopEnv):
    self.env = env
    ep = env.episode
    self.place = None
    if ep.task == "move_near":  # put the cube 5 cm from the reference, on the side it comes from
      ref, start = env.cube(ep.reference)[:2], env.cube(ep.target)[:2]
      self.place = ref + 0.05 * (start - ref) / np.linalg.norm(start - ref)
    self.released = False

  def _toward(self, goal, grip: float) -> np.ndarray:
    delta = np.clip(np.asarray(goal) - self.env.hand, -MAX_DELTA, MAX_DELTA)
    return np.append(delta, grip).astype(np.float32)

  def _descend_to(self, pos, grip: float) -> np.ndarray:
    """Toward `pos`, the height above it proportional to the horizontal error (capped)."""
    error = np.linalg.norm(self.env.hand[:2] - pos[:2])
    return self._toward((pos[0], pos[1], pos[2] + min(GRASP_CLEARANCE, 1.5 * error)), grip)

  def _grasp(self, pos, name: str) -> np.ndarray:
    """Approach, descend, close; a closed gripper that holds something else (a missed grasp) opens."""
    env = self.env
    if env.closed and env.grasped != name:
      return np.array([0, 0, 0, 0], np.float32)
    if np.linalg.norm(env.hand - pos) > GRASP_TOLERANCE:
      return self._descend_to(pos, 0.0)
    return np.array([0, 0, 0, 1], np.float32)

  def act(self) -> np.ndarray:
    env, ep = self.env, self.env.episode
    hand = env.hand
    if ep.task == "pick_object":
      if env.grasped == ep.target:
        return self._toward((hand[0], hand[1], 0.15), 1.0)
      return self._grasp(env.cube(ep.target), ep.target)
    if ep.task == "move_near":
      if self.released:
        return self._toward((hand[0], hand[1], 0.15), 0.0)
      if env.grasped != ep.target:
        return self._grasp(env.cube(ep.target), ep.target)
      goal = np.array([self.place[0], self.place[1], CUBE + 0.002])
      if np.linalg.norm(hand - goal) > GRASP_TOLERANCE:
        return self._descend_to(goal, 1.0)
      self.released = True
      return np.array([0, 0, 0, 0], np.float32)
    if env.grasped != "drawer":
      return self._grasp(env.handle(), "drawer")
    goal_y = env.handle()[1] + (env.drawer - (DRAWER_TRAVEL if ep.task == "open_drawer" else 0.0))
    return self._toward((hand[0], goal_y, hand[2]), 1.0)
