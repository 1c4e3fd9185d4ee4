"""LIBERO behind the harness (genvla_jax/eval/envs/libero.py): the observation / action conventions of openpi's
protocol against hand-computed values (no simulator), the worker's wire format and its failures, and, where
LIBERO's virtualenv exists (`bash launch/setup_libero.sh`), the simulator itself: the task lists, deterministic
resets from the fixed initial states (openpi's episode order, whichever process runs an episode), the
conventions in the running simulator, and a harness run writing its report (`-m slow`)."""

import io
import json
import math
import os
import stat

import numpy as np
import pytest

from genvla_jax.eval.envs import libero, libero_worker

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

  assert envs.module("libero") is libero and libero.ACTION_DIM == 7 and libero.Expert is None
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
