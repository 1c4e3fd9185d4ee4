"""LIBERO behind the harness (genvla_jax/eval/envs/libero.py): the observation / action conventions of openpi's
protocol against hand-computed values (no simulator), the worker's wire format and its failures, and, where
LIBERO's virtualenv exists (`bash launch/setup_libero.sh`), the simulator itself: the task lists, deterministic
resets from the fixed initial states (openpi's episode order, whichever process runs an episode), the
conventions in the running simulator, and a harness run writing its report (`-m slow`)."""

import dataclasses
import io
import json
import math
import os
import stat
import types

import numpy as np
import pytest

from genvla_jax.eval.envs import libero, libero_expert as lx, libero_worker

needs_libero = pytest.mark.skipif(
  not libero.available(),
  reason=f"LIBERO's virtualenv is absent (no {libero.worker_python()}): run `bash launch/setup_libero.sh`",
)


# ----- conventions, by hand -------------------------------------------------------------------------------------
def test_rotate_180_is_both_axes_reversed():
  image = np.arange(2 * 3 * 3, dtype=np.uint8).reshape(2, 3, 3)
  rotated = libero.rotate_180(image)
  # pixel (r, c) goes to (H-1-r, W-1-c); the channels stay in order
  np.testing.assert_array_equal(rotated[:, :, 0], [[15, 12, 9], [6, 3, 0]])
  np.testing.assert_array_equal(rotated[0, 0], image[1, 2])
  np.testing.assert_array_equal(libero.rotate_180(rotated), image)
  assert rotated.flags["C_CONTIGUOUS"]


def test_resize_with_pad_shapes_and_padding():
  square = np.full((256, 256, 3), 7, np.uint8)
  out = libero.resize_with_pad(square, 224)  # openpi's 256 -> 224: ratio 8/7, exactly 224 x 224, no border
  assert out.shape == (224, 224, 3) and out.dtype == np.uint8 and (out == 7).all()
  same = np.zeros((128, 128, 3), np.uint8)
  assert libero.resize_with_pad(same, 128) is same  # already the size: returned as it is
  wide = np.full((128, 256, 3), 200, np.uint8)  # H 128, W 256 -> 112 x 224 in the middle, 56 zero rows each side
  out = libero.resize_with_pad(wide, 224)
  assert out.shape == (224, 224, 3)
  assert (out[:56] == 0).all() and (out[168:] == 0).all() and (out[56:168] == 200).all()
  tall = np.full((100, 50, 3), 90, np.uint8)  # ratio 100/64: 64 x 32, columns 16..47
  out = libero.resize_with_pad(tall, 64)
  assert (out[:, :16] == 0).all() and (out[:, 48:] == 0).all() and (out[:, 16:48] == 90).all()
  small = np.zeros((64, 64, 3), np.uint8)
  small[:32] = 255  # upscaling keeps the top half bright (bilinear: one blended row at the boundary)
  out = libero.resize_with_pad(small, 128)
  assert out.shape == (128, 128, 3) and (out[:63] == 255).all() and (out[65:] == 0).all()


def test_quat2axisangle_known_rotations():
  s = math.sqrt(0.5)
  np.testing.assert_array_equal(libero.quat2axisangle([0, 0, 0, 1]), np.zeros(3))  # identity, (x, y, z, w)
  np.testing.assert_array_equal(libero.quat2axisangle([0, 0, 0, 1 + 1e-12]), np.zeros(3))  # w clipped to 1
  np.testing.assert_allclose(libero.quat2axisangle([0, 0, s, s]), [0, 0, math.pi / 2], atol=1e-12)  # 90 deg about z
  np.testing.assert_allclose(libero.quat2axisangle([1, 0, 0, 0]), [math.pi, 0, 0], atol=1e-12)  # 180 deg about x
  # 120 degrees about (1, 1, 1) / sqrt(3): q = (sin 60 / sqrt(3) * (1, 1, 1), cos 60)
  q = [math.sin(math.pi / 3) / math.sqrt(3)] * 3 + [0.5]
  np.testing.assert_allclose(libero.quat2axisangle(q), np.full(3, 2 * math.pi / 3 / math.sqrt(3)), atol=1e-12)
  # LIBERO's gripper pointing down (robosuite's robot0_eef_quat after a reset) and robosuite 1.4's own
  # transform_utils.quat2axisangle of it, printed by that function
  quat = [9.99601848e-01, 3.83918332e-04, -2.82130880e-02, -1.41543176e-04]
  np.testing.assert_allclose(libero.quat2axisangle(quat), [3.14062483e00, 1.20622371e-03, -8.86420175e-02], rtol=1e-7)


def test_state_is_position_axis_angle_fingers():
  state = libero.libero_state([0.1, -0.2, 1.1], [1.0, 0.0, 0.0, 0.0], [0.039, -0.039])
  assert state.dtype == np.float32 and state.shape == (libero.STATE_DIM,)
  np.testing.assert_allclose(state, [0.1, -0.2, 1.1, math.pi, 0, 0, 0.039, -0.039], rtol=1e-6)


def test_action_scaling_and_gripper_sign():
  # OSC_POSE: clip to [-1, 1], x 0.05 m (position) / 0.5 rad (axis-angle) per step; the gripper is passed on
  np.testing.assert_allclose(
    libero.controller_delta([1.0, -0.5, 2.0, 0.2, 0.0, -3.0, 1.0]), [0.05, -0.025, 0.05, 0.1, 0.0, -0.5]
  )
  assert libero.GRIPPER_OPEN == -1.0 and libero.GRIPPER_CLOSE == 1.0
  assert libero.DUMMY_ACTION == [0.0] * 6 + [libero.GRIPPER_OPEN]  # openpi's settling action keeps it open
  from genvla_jax.data import registry

  spec = registry.LEROBOT["libero"]  # openpi's LIBERO data: the env's convention kept, its cameras by these names
  assert spec.gripper == "keep" and spec.gripper_dims == (6,)
  assert list(libero.CAMERA_VIEWS) == registry.MIXTURE_CAMERAS["libero"] == list(spec.cameras)


def test_observation_from_raw_rotates_pads_and_stacks():
  rng = np.random.default_rng(0)
  agent, wrist = (rng.integers(0, 256, (256, 256, 3), dtype=np.uint8) for _ in range(2))
  raw = {
    "images": {"agentview": agent, "robot0_eye_in_hand": wrist},
    "eef_pos": np.array([0.0, 0.1, 1.0]),
    "eef_quat": np.array([0.0, 0.0, 0.0, 1.0]),
    "gripper_qpos": np.array([0.02, -0.02]),
  }
  image, state = libero.observation_from_raw(raw, ("image", "wrist_image"), 224)
  assert image.shape == (2, 224, 224, 3) and image.dtype == np.uint8
  np.testing.assert_array_equal(image[1], libero.resize_with_pad(wrist[::-1, ::-1], 224))
  np.testing.assert_allclose(state, [0, 0.1, 1, 0, 0, 0, 0.02, -0.02], rtol=1e-6)
  image, _ = libero.observation_from_raw(raw, ("image",), 256)  # one camera: [S,S,3], no resize at 256
  np.testing.assert_array_equal(image, agent[::-1, ::-1])


def test_task_ids_suites_and_protocol_numbers():
  assert len(libero.TASKS) == len(set(libero.TASKS)) == 130
  assert {s: len(n) for s, n in libero.SUITES.items()} == {
    "libero_spatial": 10,
    "libero_object": 10,
    "libero_goal": 10,
    "libero_10": 10,
    "libero_90": 90,
  }
  # openpi examples/libero/main.py
  assert libero.MAX_STEPS == {
    "libero_spatial": 220,
    "libero_object": 280,
    "libero_goal": 300,
    "libero_10": 520,
    "libero_90": 400,
  }
  assert (libero.SEED, libero.NUM_STEPS_WAIT, libero.REPLAN_STEPS, libero.RENDER_SIZE, libero.IMAGE_SIZE) == (
    7,
    10,
    5,
    256,
    224,
  )
  task = libero.suite_tasks("object")[7]
  assert task == "libero_object:pick_up_the_milk_and_place_it_in_the_basket"
  assert libero.split_task(task) == ("libero_object", "pick_up_the_milk_and_place_it_in_the_basket")
  assert libero.suite_tasks("libero_10") == libero.suite_tasks("10")
  with pytest.raises(ValueError, match="unknown LIBERO task"):
    libero.split_task("pick_up_the_milk_and_place_it_in_the_basket")
  with pytest.raises(ValueError, match="unknown LIBERO suite"):
    libero.suite_tasks("libero_100")


def test_eval_configs_follow_openpi():
  from configs import eval_libero
  from genvla_jax.eval import envs

  assert envs.module("libero") is libero and libero.ACTION_DIM == 7 and libero.Expert is not None
  full = eval_libero.get_config("full,suite=spatial")
  assert full.tasks == list(libero.suite_tasks("spatial")) and full.protocols == ["standard"]
  assert (full.episodes_per_task, full.execute_steps, full.seed) == (50, libero.REPLAN_STEPS, 0)
  assert full.env_kwargs.to_dict() == dict(image_size=224, render_size=256, max_steps=0, seed=7, num_steps_wait=10)
  quick = eval_libero.get_config("quick")
  assert quick.tasks == list(libero.suite_tasks("object")) and quick.episodes_per_task == 2
  assert (quick.env_kwargs.render_size, quick.env_kwargs.image_size, quick.execute_steps) == (128, 128, 5)
  four = eval_libero.get_config("full,suite=spatial+object+goal+10,tasks=0+9")
  assert len(four.tasks) == 8 and four.tasks[2] == libero.suite_tasks("object")[0]
  with pytest.raises(ValueError, match="50 initial states"):
    eval_libero.get_config("quick,trials=60")
  with pytest.raises(ValueError, match="has tasks 0..9"):
    eval_libero.get_config("quick,tasks=10")


def test_protocols_map_to_the_perturbed_suites():
  assert libero.PROTOCOLS == ("standard", "object", "position", "language", "task", "environment")
  assert libero.protocol_suite("libero_object", "standard") == "libero_object"
  assert libero.protocol_suite("libero_object", "object") == "libero_object_object"
  assert libero.protocol_suite("libero_spatial", "position") == "libero_spatial_swap"
  assert libero.protocol_suite("libero_goal", "language") == "libero_goal_lan"
  assert libero.protocol_suite("libero_10", "task") == "libero_10_task"
  with pytest.raises(ValueError, match=r"no environment perturbation .*libero_object_env.* ships object, position"):
    libero.protocol_suite("libero_object", "environment")
  with pytest.raises(ValueError, match="no language perturbation .* ships none for libero_90"):
    libero.protocol_suite("libero_90", "language")
  with pytest.raises(ValueError, match="unknown LIBERO protocol 'semantic'"):
    libero.protocol_suite("libero_object", "semantic")
  libero.check_protocols(libero.suite_tasks("goal")[:2], libero.PROTOCOLS[:5])
  with pytest.raises(ValueError, match="libero_90"):
    libero.check_protocols(libero.suite_tasks("object")[:1] + libero.suite_tasks("90")[:1], ["standard", "task"])


def test_bddl_language_is_the_language_clause():
  text = "(define (problem LIBERO_Floor_Manipulation)\n  (:domain robosuite)\n"
  text += "  (:language grab  alphabet soup\n  and put it)\n"
  assert libero_worker.bddl_language(text) == "grab alphabet soup and put it"
  with pytest.raises(ValueError, match="no \\(:language"):
    libero_worker.bddl_language("(define (problem P))")


def test_eval_config_protocols():
  from configs import eval_libero

  config = eval_libero.get_config("quick,suite=object+goal,tasks=0,protocols=standard+object+position+language+task")
  assert config.protocols == ["standard", "object", "position", "language", "task"] and len(config.tasks) == 2
  assert eval_libero.get_config("quick").protocols == ["standard"]
  with pytest.raises(ValueError, match="no environment perturbation"):
    eval_libero.get_config("quick,protocols=standard+environment")
  with pytest.raises(ValueError, match="ships none for libero_90"):
    eval_libero.get_config("quick,suite=90,tasks=0,protocols=position")


# ----- the scripted expert's phase machine (pure: hand-made scenes) ---------------------------------------------
DOWN = np.diag([1.0, -1.0, -1.0])  # gripper pointing down: its approach axis (column 2) is world -z


def _scene(**changes) -> lx.Scene:
  """A can at the origin (bottom 0, grasp point 4.5 cm up), a basket region centred at (0, 0.3, 0.1), top 0.14."""
  values = dict(
    eef_pos=np.array([0.0, 0.0, 0.125]),  # above the grasp point at the hover height
    eef_rot=DOWN,
    finger_axis=np.array([0.0, 1.0, 0.0]),
    finger_gap=0.08,
    grasp_pos=np.array([0.0, 0.0, 0.045]),
    grasp_axis=np.array([0.0, -1.0, 0.0]),  # the opposite direction: the same for a parallel gripper
    object_pos=np.array([0.0, 0.0, 0.038]),
    object_bottom=0.0,
    destination_pos=np.array([0.0, 0.3, 0.1]),
    destination_top=0.14,
  )
  values.update(changes)
  return lx.Scene(**values)


def test_expert_action_is_proportional_scaled_and_clipped():
  # position error / 0.05 m, rotation error / 0.5 rad (gains 1), clipped to [-1, 1]; the gripper passed on
  action = lx.action_from([0.01, -0.2, 0.0], [0.1, 0.0, -0.05], lx.GRIPPER_CLOSE)
  np.testing.assert_allclose(action, [0.2, -1.0, 0.0, 0.2, 0.0, -0.1, 1.0], rtol=1e-6)
  assert action.dtype == np.float32 and action.shape == (7,)
  np.testing.assert_allclose(libero.controller_delta(action)[:3], [0.01, -0.05, 0.0], rtol=1e-6)  # what moves


def test_expert_yaw_and_tilt_commands():
  assert lx.wrap_half_turn(math.pi) == pytest.approx(0.0, abs=1e-12)
  assert lx.wrap_half_turn(0.3) == pytest.approx(0.3)
  assert lx.wrap_half_turn(math.pi + 0.3) == pytest.approx(0.3)  # a half turn changes nothing
  assert lx.wrap_half_turn(-math.pi / 2 - 0.1) == pytest.approx(math.pi / 2 - 0.1)
  assert lx.yaw_error([0, 1, 0], [0, -1, 0]) == pytest.approx(0.0)
  assert lx.yaw_error([1, 0, 0], [0, 1, 0]) == pytest.approx(-math.pi / 2)  # +-90 degrees: the wrap's edge
  assert lx.yaw_error([1, 0, 0], [1, 1, 0]) == pytest.approx(math.pi / 4)
  np.testing.assert_allclose(lx.rotation_command(DOWN, 0.2), [0, 0, 0.2], atol=1e-12)  # pointing down: no tilt
  # tilted 0.1 rad about world x: approach = (0, sin 0.1, -cos 0.1); approach x (0, 0, -1) = (-sin 0.1, 0, 0)
  c, s = math.cos(0.1), math.sin(0.1)
  tilted = np.array([[1, 0, 0], [0, c, -s], [0, s, c]]) @ DOWN
  np.testing.assert_allclose(lx.rotation_command(tilted, 0.0), [-s, 0, 0], atol=1e-12)


def test_expert_phases_through_a_pick_and_place():
  m = lx.Memory()
  action = lx.act(m, _scene(eef_pos=np.array([0.1, 0.0, 0.2])))  # away: approach, moving towards -x, open
  assert m.phase == "approach" and action[0] == -1.0 and action[6] == lx.GRIPPER_OPEN
  assert lx.act(m, _scene(finger_axis=np.array([1.0, 0.0, 0.0])))[5] == pytest.approx(-1.0)  # turning, still
  assert m.phase == "approach"
  action = lx.act(m, _scene())  # above it and aligned: descend, straight down 8 cm (clipped)
  assert m.phase == "descend" and action[2] == -1.0
  lx.act(m, _scene(eef_pos=np.array([0.0, 0.0, 0.05])))
  assert m.phase == "close" and m.grasp_bottom == 0.0
  for _ in range(lx.CLOSE_STEPS - 1):
    assert lx.act(m, _scene(eef_pos=np.array([0.0, 0.0, 0.05])))[6] == lx.GRIPPER_CLOSE
  assert m.phase == "close"
  held = dict(eef_pos=np.array([0.0, 0.0, 0.05]), finger_gap=0.06)
  action = lx.act(m, _scene(**held))
  # lift until the object's bottom clears the basket's top by CARRY_CLEARANCE: eef z + (0.14 + 0.04 - 0)
  assert m.phase == "lift" and m.lift_z == pytest.approx(0.05 + 0.18) and action[2] == 1.0
  np.testing.assert_allclose(m.hold_offset, [0, 0, 0.012])
  up = dict(eef_pos=np.array([0.0, 0.0, 0.225]), object_pos=np.array([0.0, 0.0, 0.213]), object_bottom=0.175)
  lx.act(m, _scene(finger_gap=0.06, **up))
  assert m.phase == "carry"
  action = lx.act(m, _scene(finger_gap=0.06, **up))  # over to the basket: +y at full speed, holding
  assert m.phase == "carry" and action[1] == 1.0 and action[6] == lx.GRIPPER_CLOSE
  over = dict(eef_pos=np.array([0.0, 0.3, 0.225]), object_pos=np.array([0.0, 0.3, 0.213]), object_bottom=0.175)
  action = lx.act(m, _scene(finger_gap=0.06, **over))
  # lower: the object's reference point to the region's centre (0.1): eef to 0.1 + 0.012
  assert m.phase == "lower" and action[2] == -1.0 and action[1] == 0.0
  inside = dict(eef_pos=np.array([0.0, 0.3, 0.115]), object_pos=np.array([0.0, 0.3, 0.103]), object_bottom=0.065)
  lx.act(m, _scene(finger_gap=0.06, **inside))
  assert m.phase == "release"
  for _ in range(lx.OPEN_STEPS):
    action = lx.act(m, _scene(**inside))
  assert m.phase == "retreat" and m.retreat_z == pytest.approx(0.115 + lx.RETREAT_HEIGHT)
  assert action[6] == lx.GRIPPER_OPEN and action[2] == 1.0
  lx.act(m, _scene(eef_pos=np.array([0.0, 0.3, 0.22])))
  assert m.phase == "done"
  np.testing.assert_array_equal(lx.act(m, _scene()), [0, 0, 0, 0, 0, 0, lx.GRIPPER_OPEN])


def test_expert_regrasps_when_the_object_stays_behind():
  m = lx.Memory(phase="lift", lift_z=0.3, grasp_bottom=0.0)
  lx.act(m, _scene(finger_gap=0.0))  # fingers shut on nothing: approach again, second attempt
  assert (m.phase, m.attempts) == ("approach", 2)
  m = lx.Memory(phase="lift", lift_z=0.3, grasp_bottom=0.0, steps_in_phase=lx.BUDGET["lift"] - 1)
  lx.act(m, _scene(finger_gap=0.05, object_bottom=0.005))  # time is up and it rose 5 mm only: regrasp
  assert (m.phase, m.attempts) == ("approach", 2)
  m = lx.Memory(phase="carry", lift_z=0.3, attempts=lx.MAX_ATTEMPTS, hold_offset=np.zeros(3))
  lx.act(m, _scene(finger_gap=0.05, object_bottom=0.0))  # dropped on the way, attempts used up: give up
  assert m.phase == "done"
  m = lx.Memory(phase="approach", steps_in_phase=lx.BUDGET["approach"] - 1)
  lx.act(m, _scene(eef_pos=np.array([0.3, 0.3, 0.3])))  # a phase's budget runs out: on to the next
  assert m.phase == "descend"


def test_expert_covers_object_and_spatial_only():
  libero.check_expert_tasks(libero.suite_tasks("object") + libero.suite_tasks("spatial"))
  with pytest.raises(ValueError, match="not libero_10, libero_goal"):
    libero.check_expert_tasks([libero.suite_tasks("goal")[0], libero.suite_tasks("10")[3]])
  from configs import eval_libero
  from genvla_jax import cli
  from genvla_jax.eval.__main__ import evaluate_expert

  with pytest.raises(
    cli.UserError, match="pick-and-place tasks of libero_object, libero_spatial only; not libero_goal"
  ):
    evaluate_expert(eval_libero.get_config("quick,suite=goal"), "/nonexistent", "x")  # before any simulator


def test_recordings_files_resume_and_summary(tmp_path):
  from genvla_jax.data import libero_record as rec
  from genvla_jax import intervals

  tasks = libero.suite_tasks("object")
  assert rec.episode_stem(tasks[3], 7) == "t03_e007"
  rng = np.random.default_rng(0)
  ok = rec.Recording(
    tasks[3], 7, "pick up the bbq sauce and place it in the basket", True,
    rng.integers(0, 256, (4, 8, 8, 3), dtype=np.uint8), rng.integers(0, 256, (4, 8, 8, 3), dtype=np.uint8),
    rng.normal(size=(4, 8)).astype(np.float32), rng.normal(size=(4, 7)).astype(np.float32), ["approach"] * 4,
  )  # fmt: skip
  failed = dataclasses.replace(ok, episode=8, success=False, phases=["lift"])
  assert rec.finished(str(tmp_path), tasks[3], 7) is None
  path = rec.save_recording(ok, str(tmp_path))
  assert rec.save_recording(failed, str(tmp_path)).endswith("t03_e008.failed.json")
  assert rec.finished(str(tmp_path), tasks[3], 7) == path and sorted(os.listdir(tmp_path)) == [
    "t03_e007.npz",
    "t03_e008.failed.json",
  ]
  back = rec.load_recording(path)
  for key in ("image", "wrist_image", "state", "actions"):
    np.testing.assert_array_equal(back[key], getattr(ok, key))
  assert back["meta"] == {
    "task": tasks[3], "episode": 7, "instruction": ok.instruction, "steps": 4, "success": True,
    "final_phase": "approach", "scene": "fixed", "sim_seed": 0, "seconds": 0.0, "nearest_fixed": {},
  }  # fmt: skip
  summary = rec.summarize(str(tmp_path), [(tasks[3], 7), (tasks[3], 8), (tasks[3], 9)])  # 9: not run yet
  assert (summary["episodes"], summary["successes"]) == (2, 1)
  assert summary["seconds_per_episode"] is None and summary["min_distance_to_fixed_m"] is None  # not recorded
  entry = summary["tasks"][tasks[3]]
  assert entry["failed"] == [8] and entry["mean_steps"] == 4.0 and entry["wilson95"] == intervals.wilson_interval(1, 2)


def test_recorder_run_counts_resumed_and_new_episodes(tmp_path, monkeypatch):
  """run() with the simulator and lerobot stubbed: one episode already on disk, two recorded (one fails); the
  progress lines count both kinds without re-reading the files, and the summary agrees."""
  from genvla_jax.data import libero_record as rec

  tasks = libero.suite_tasks("object")
  rng = np.random.default_rng(1)
  frames = lambda: rng.integers(0, 256, (3, 8, 8, 3), dtype=np.uint8)  # noqa: E731
  make = lambda task, ep, ok: rec.Recording(  # noqa: E731
    task, ep, "x", ok, frames(), frames(), np.zeros((3, 8), np.float32), np.zeros((3, 7), np.float32), ["lift"] * 3,
    nearest_fixed={"state": ep, "max_object_m": 0.0},
  )  # fmt: skip
  episodes = tmp_path / "episodes"
  episodes.mkdir()
  rec.save_recording(make(tasks[0], 0, True), str(episodes))  # recorded by an earlier run
  monkeypatch.setattr(rec, "lerobot_python", lambda python="": "python")
  monkeypatch.setattr(rec, "make_env", lambda size: types.SimpleNamespace(close=lambda: None))
  monkeypatch.setattr(rec, "record_episodes", lambda envs, todo, scene: (make(t, e, t == tasks[1]) for t, e in todo))
  monkeypatch.setattr(rec, "write_lerobot", lambda files, root, python, repo: os.makedirs(root, exist_ok=True))
  printed = []
  summary = rec.run("object", 1, str(tmp_path), printer=lambda line, **kw: printed.append(line), tasks=[0, 1, 2])
  progress = [line.split(" | ") for line in printed if " episodes | t0" in line]
  assert [p[0] for p in progress] == ["[record] 2/3 episodes", "[record] 3/3 episodes"]
  assert [p[2] for p in progress] == ["success 2/2", "success 2/3"]  # task 1 solved, task 2 failed
  assert (summary["episodes"], summary["successes"]) == (3, 2)


# ----- the wire and the worker's failures -------------------------------------------------------------------------
def test_wire_round_trip_and_truncation():
  value = {
    "images": {"agentview": np.arange(12, dtype=np.uint8).reshape(2, 2, 3)},
    "state": np.array([1.5, -2.0], np.float64),
    "tape": [(3, {"keys": np.arange(4, dtype=np.uint32), "pos": 7})],
    "flag": np.bool_(True),
    "text": "pick up",
  }
  stream = io.BytesIO()
  libero_worker.write_message(stream, value)
  libero_worker.write_message(stream, {"cmd": "close"})
  data = stream.getvalue()
  reader = io.BytesIO(data)
  got = libero_worker.read_message(reader.read)
  np.testing.assert_array_equal(got["images"]["agentview"], value["images"]["agentview"])
  assert got["images"]["agentview"].dtype == np.uint8 and got["state"].dtype == np.float64
  assert got["tape"][0][0] == 3 and got["tape"][0][1]["keys"].dtype == np.uint32
  assert got["flag"] is True and got["text"] == "pick up"
  assert libero_worker.read_message(reader.read) == {"cmd": "close"}
  assert libero_worker.read_message(reader.read) is None  # a clean end of the stream
  with pytest.raises(EOFError):
    libero_worker.read_message(io.BytesIO(data[:20]).read)


def _fake_venv(tmp_path, script: str) -> str:
  """A 'virtualenv' whose python runs `script` (bash) instead: for the worker's failure paths."""
  python = tmp_path / "venv" / "bin" / "python"
  python.parent.mkdir(parents=True)
  python.write_text("#!/usr/bin/env bash\n" + script + "\n")
  python.chmod(python.stat().st_mode | stat.S_IXUSR)
  return str(tmp_path / "venv")


def test_missing_virtualenv_names_the_setup_script(monkeypatch, tmp_path):
  monkeypatch.setenv("GENVLA_LIBERO_VENV", str(tmp_path / "nowhere"))
  assert not libero.available()
  with pytest.raises(libero.LiberoSetupError, match="bash launch/setup_libero.sh"):
    libero.LiberoEnv()


def test_worker_that_dies_or_lacks_libero_is_a_clear_error(monkeypatch, tmp_path):
  import sys

  monkeypatch.setenv("GENVLA_LIBERO_VENV", _fake_venv(tmp_path / "a", 'echo "EGL: no display" >&2; exit 3'))
  with pytest.raises(libero.LiberoSetupError, match=r"(?s)exit code 3.*EGL: no display.*setup_libero\.sh"):
    libero.LiberoEnv()
  # the project's own python: the worker starts, but robosuite / LIBERO are not installed there
  monkeypatch.setenv("GENVLA_LIBERO_VENV", _fake_venv(tmp_path / "b", f'exec "{sys.executable}" "$@"'))
  with pytest.raises(libero.LiberoSetupError, match="worker start-up: PackageNotFoundError"):
    libero.LiberoEnv()


def test_unknown_cameras_and_bad_actions_are_refused():
  with pytest.raises(ValueError, match="unknown LIBERO cameras"):
    libero.LiberoEnv(cameras=("front",))
  env = libero.LiberoEnv.__new__(libero.LiberoEnv)  # no worker: the checks come first
  env.episode = None
  with pytest.raises(ValueError, match="7 finite numbers"):
    env.step_async([0.0] * 6 + [float("nan")])
  with pytest.raises(RuntimeError, match="before reset"):
    env.step_async([0.0] * 7)


# ----- the simulator (LIBERO's virtualenv) ------------------------------------------------------------------------
SPATIAL_0 = libero.suite_tasks("spatial")[0]  # LIBERO-Spatial places fixtures (cabinet, stove) at every reset


@pytest.fixture(scope="module")
def env():
  e = libero.LiberoEnv(image_size=64, render_size=64, cameras=("image", "wrist_image"))
  yield e
  e.close()


@needs_libero
@pytest.mark.slow
def test_task_lists_match_the_package(env):
  reply = env._worker.request("tasks", {"suites": list(libero.SUITES)}, "task lists")
  for suite, entries in reply["tasks"].items():
    assert tuple(name for name, _, _ in entries) == libero.SUITES[suite], suite
    assert all(n == 50 for _, _, n in entries), suite
  assert env.versions["robosuite"] == "1.4.0" and env.versions["mujoco"] == "3.2.3"


@needs_libero
@pytest.mark.slow
def test_perturbed_suites_match_the_package(env):
  """Each shipped perturbation: the base suite's task names in its order, 50 initial states each; the
  environment perturbation is registered but its files are missing, as SHIPPED_PERTURBATIONS says."""
  suites = [libero.protocol_suite(s, p) for s, shipped in libero.SHIPPED_PERTURBATIONS.items() for p in shipped]
  reply = env._worker.request("tasks", {"suites": suites}, "perturbed task lists")
  assert sorted(reply["tasks"]) == sorted(suites)
  for suite, entries in reply["tasks"].items():
    base = suite.rsplit("_", 1)[0]
    assert tuple(name for name, _, _ in entries) == libero.SUITES[base], suite
    assert all(n == 50 for _, _, n in entries), suite
  with pytest.raises(libero.LiberoWorkerError, match="libero_object_env"):
    env._worker.request("tasks", {"suites": ["libero_object_env"]}, "libero_object_env")


@needs_libero
@pytest.mark.slow
def test_perturbed_tasks_reset_and_differ_as_their_perturbation_says(env):
  task = libero.suite_tasks("object")[0]  # pick up the alphabet soup and place it in the basket
  standard = env.reset(task, 0, "standard")
  objects = {k: np.asarray(v) for k, v in env.info["objects"].items()}
  soup = objects["alphabet_soup_1"]
  language = env.reset(task, 0, "language")
  assert env.episode.protocol == "language" and env.episode.task == task
  assert language["instruction"] == "grab alphabet soup and put it into basket" != standard["instruction"]
  moved = {k: float(np.linalg.norm(np.asarray(v) - objects[k])) for k, v in env.info["objects"].items()}
  assert moved.keys() == objects.keys() and moved["alphabet_soup_1"] < 0.01  # the package's own initial states:
  assert max(moved.values()) < 0.05  # the same regions, re-sampled within a few cm
  again = env.reset(task, 0, "language")  # a fixed initial state: the same scene every time
  np.testing.assert_array_equal(again["image"], language["image"])
  np.testing.assert_array_equal(again["state"], language["state"])
  position = env.reset(task, 0, "position")
  assert position["instruction"] == standard["instruction"] and env.info["objects"].keys() == objects.keys()
  assert np.linalg.norm(np.asarray(env.info["objects"]["alphabet_soup_1"]) - soup) > 0.1  # the target moved
  env.reset(task, 0, "object")
  assert env.episode.instruction == standard["instruction"]
  assert {"bigger_alphabet_soup_1", "red_basket_1"} <= set(env.info["objects"])  # other assets, other names
  assert "alphabet_soup_1" not in env.info["objects"] and "basket_1" not in env.info["objects"]
  env.reset(task, 0, "task")
  assert env.episode.instruction == "Pick the cream cheese and place it in the basket"
  with pytest.raises(ValueError, match="no environment perturbation"):
    env.reset(task, 0, "environment")


@needs_libero
@pytest.mark.slow
def test_reset_from_a_fixed_initial_state_is_deterministic(env):
  """Episode k is openpi's k-th reset after seeding, whichever worker runs it and whatever it ran before."""
  libero._RNG_TAPE.clear()
  first = env.reset(SPATIAL_0, 0)
  fixtures_0 = env.info["fixtures"]
  second = env.reset(SPATIAL_0, 1)
  fixtures_1 = env.info["fixtures"]
  assert env.info["fast_forwarded"] == 0
  assert not np.allclose(fixtures_0["wooden_cabinet_1"], fixtures_1["wooden_cabinet_1"])  # the stream matters
  assert second["instruction"] == "pick up the black bowl between the plate and the ramekin and place it on the plate"
  libero._RNG_TAPE.clear()
  other = libero.LiberoEnv(image_size=64, render_size=64, cameras=("image", "wrist_image"))
  try:
    again = other.reset(SPATIAL_0, 1)  # a fresh process: replays episode 0's reset first
    assert other.info["fast_forwarded"] == 1
    for name, pos in fixtures_1.items():
      np.testing.assert_array_equal(other.info["fixtures"][name], pos)
    np.testing.assert_array_equal(again["image"], second["image"])
    np.testing.assert_array_equal(again["state"], second["state"])
  finally:
    other.close()
  back = env.reset(SPATIAL_0, 0)  # the same process going back: seeded again
  np.testing.assert_array_equal(back["image"], first["image"])
  np.testing.assert_array_equal(back["state"], first["state"])
  assert env.episode.steps == 0 and not env.episode.success


@needs_libero
@pytest.mark.slow
def test_conventions_in_the_simulator(env):
  obs = env.reset(libero.suite_tasks("object")[0], 0)
  controller = env.info["controller"]
  assert controller["name"] == "OperationalSpaceController"
  np.testing.assert_array_equal(controller["input_max"], np.ones(6))
  np.testing.assert_array_equal(controller["output_max"], libero.CONTROLLER_SCALE)
  np.testing.assert_array_equal(controller["output_min"], -libero.CONTROLLER_SCALE)
  assert obs["image"].shape == (2, 64, 64, 3) and obs["state"].shape == (8,)
  assert obs["state"][6] > 0.03 and obs["state"][7] < -0.03  # settled with the gripper open: fingers +-0.04
  np.testing.assert_allclose(np.abs(obs["state"][3:6]), [math.pi, 0, 0], atol=0.25)  # pointing down: ~pi about x
  for _ in range(15):  # +1 closes
    obs, _, _ = env.step([0, 0, 0, 0, 0, 0, libero.GRIPPER_CLOSE])
  assert obs["state"][6] - obs["state"][7] < 0.01
  x = obs["state"][0]
  for _ in range(5):  # +x at full scale: the end effector moves along world +x, and -1 opens again
    obs, success, done = env.step([1, 0, 0, 0, 0, 0, libero.GRIPPER_OPEN])
  assert obs["state"][0] - x > 0.02 and not success and not done
  for _ in range(10):
    obs, _, _ = env.step([0, 0, 0, 0, 0, 0, libero.GRIPPER_OPEN])
  assert obs["state"][6] - obs["state"][7] > 0.06
  assert env.episode.steps == 30


class _ZeroPolicy:
  """Holds still with the gripper open; records what the harness hands it."""

  def __init__(self):
    from genvla_jax.inference import protocol

    self.metadata = protocol.PolicyMetadata(horizon=8, action_dim=7, state_dim=8, cameras=("image", "wrist_image"))
    self.calls = []

  def reset(self):
    pass

  def prompt_spec(self):
    return None

  def act(self, images, instructions, *, states=None, full_width=False):
    self.calls.append((np.shape(images), np.shape(states), list(instructions)))
    actions = np.zeros((len(images), 8, 7), np.float32)
    actions[..., 6] = libero.GRIPPER_OPEN
    return actions, np.ones(actions.shape, bool)


@needs_libero
@pytest.mark.slow
def test_harness_runs_a_policy_and_writes_the_report(tmp_path):
  from configs import eval_libero
  from genvla_jax.eval.__main__ import evaluate

  config = eval_libero.get_config("quick,tasks=0,trials=1")
  config.unlock()
  config.num_envs = 1
  config.env_kwargs.update(image_size=64, render_size=64, max_steps=7)
  policy = _ZeroPolicy()
  summary = evaluate(config, policy, str(tmp_path), "libero zeros", printer=lambda *a, **k: None)
  # re-planning every 5 steps: a chunk at steps 0 and 5, the episode cut at 7 steps
  assert [c[0] for c in policy.calls] == [(1, 2, 64, 64, 3)] * 2 and policy.calls[0][1] == (1, 8)
  assert policy.calls[0][2] == ["pick up the alphabet soup and place it in the basket"]
  assert summary["overall"]["episodes"] == 1 and summary["overall"]["success_rate"] == 0.0
  results = json.load(open(tmp_path / "results.json"))
  [episode] = results["episodes"]
  assert episode["steps"] == 7 and episode["task"] == libero.suite_tasks("object")[0] and episode["seed"] == 0
  assert os.path.exists(tmp_path / "report.md") and os.listdir(tmp_path / "videos")


# ----- the scripted expert and its recorded demonstrations in the simulator ---------------------------------------
@needs_libero
@pytest.mark.slow
def test_expert_solves_fixed_initial_states(tmp_path):
  """Through the harness (`--expert`): LIBERO-Object's soup can and butter box (turned to grasp across its
  narrow side), LIBERO-Spatial's bowl by the rim onto the plate; initial state 0 of each, openpi's protocol."""
  from configs import eval_libero
  from genvla_jax.eval.__main__ import evaluate_expert

  for suite, tasks in (("object", "0+6"), ("spatial", "0")):
    config = eval_libero.get_config(f"quick,suite={suite},tasks={tasks},trials=1")
    config.unlock()
    config.env_kwargs.update(image_size=64, render_size=64)
    config.video_episodes = 0
    summary = evaluate_expert(config, str(tmp_path / suite), f"{suite} expert", printer=lambda *a, **k: None)
    episodes = json.load(open(tmp_path / suite / "results.json"))["episodes"]
    assert summary["overall"]["success_rate"] == 1.0, episodes
    assert all(e["steps"] < libero.MAX_STEPS[f"libero_{suite}"] for e in episodes)


@pytest.fixture(scope="module")
def recorded(tmp_path_factory):
  """One expert episode of LIBERO-Object (alphabet soup, initial state 1) recorded at 64 px, saved and loaded."""
  from genvla_jax.data import libero_record

  out = tmp_path_factory.mktemp("libero_record")
  task = libero.suite_tasks("object")[0]
  env = libero_record.make_env(64)
  try:
    [recording] = list(libero_record.record_episodes([env], [(task, 1)]))
  finally:
    env.close()
  path = libero_record.save_recording(recording, str(out))
  return task, recording, path


@needs_libero
@pytest.mark.slow
def test_recorded_demonstrations_replay_to_the_same_success(recorded):
  from genvla_jax.data import libero_record

  task, recording, path = recorded
  assert recording.success and path.endswith("t00_e001.npz")
  data = libero_record.load_recording(path)
  steps = len(data["actions"])
  assert data["image"].shape == data["wrist_image"].shape == (steps, 64, 64, 3) and data["state"].shape == (steps, 8)
  assert data["meta"]["instruction"] == "pick up the alphabet soup and place it in the basket"
  np.testing.assert_array_equal(data["actions"], recording.actions)
  env = libero_record.make_env(64)
  try:
    obs = env.reset(task, 1)  # the same fixed initial state, the same protocol: the same start
    np.testing.assert_array_equal(obs["state"], data["state"][0])
    np.testing.assert_array_equal(obs["image"][1], data["wrist_image"][0])
    for t, action in enumerate(data["actions"]):
      obs, success, done = env.step(action)  # the recorded actions alone, no expert
      if t + 1 < steps:
        assert not done, t
        np.testing.assert_allclose(obs["state"], data["state"][t + 1], atol=1e-5)
    assert success and done and env.episode.steps == steps
  finally:
    env.close()


@needs_libero
@pytest.mark.slow
def test_recorded_demonstrations_write_convert_and_train(recorded, tmp_path, demo_dir):
  """record -> LeRobot (by lerobot itself) -> convert_lerobot with the `libero` entry -> two cameras + state train."""
  from conftest import tiny_config
  from genvla_jax import train
  from genvla_jax.data import convert_lerobot, libero_record, pipeline, preprocess

  task, recording, path = recorded
  try:
    python = libero_record.lerobot_python()
  except Exception as e:  # noqa: BLE001
    pytest.skip(str(e))
  root = str(tmp_path / "lerobot")
  libero_record.write_lerobot([path, path], root, python, "genvla_jax/test_libero")  # two episodes
  info = json.load(open(os.path.join(root, "meta", "info.json")))
  assert info["total_episodes"] == 2 and info["total_frames"] == 2 * len(recording.actions)
  assert info["features"]["image"]["shape"] == [64, 64, 3] and info["features"]["actions"]["shape"] == [7]
  out = tmp_path / "converted"
  convert_lerobot.convert_lerobot(root, str(out), dataset="libero", image_format="png", printer=lambda *a, **k: None)
  meta = json.load(open(out / "meta.json"))
  assert meta["cameras"] == ["image", "wrist_image"] and (meta["action_dim"], meta["state_dim"]) == (7, 8)
  source = pipeline.StepChunkSource(str(out), horizon=1, camera="wrist_image")
  assert len(source) == 2 * len(recording.actions)
  for i in range(0, len(source), 7):
    record = source[i]
    step = int(record["step"])
    np.testing.assert_array_equal(record["action"], recording.actions[step])
    np.testing.assert_array_equal(record["state"], recording.state[step])
    np.testing.assert_array_equal(preprocess.decode_image(record["image"]), recording.wrist_image[step])
    assert record["instruction"] == recording.instruction
  config = tiny_config(demo_dir, tmp_path / "cache")
  config.data.robot = [{"name": "libero", "path": str(out), "split": "train", "weight": 1.0}]
  config.data.cameras = ["image", "wrist_image"]
  config.model.update(image_size=16, num_cameras=2)
  config.train.steps, config.train.checkpoint_every = 2, 2
  config.tokenizer.max_text_len = 128  # the instruction (~53 tokens), then 7 action values as text (~50)
  records = train.train(config, str(tmp_path / "run"), printer=lambda *a, **k: None)
  assert records and records[-1]["step"] == 2 and np.isfinite(records[-1]["loss"])
