"""SimplerEnv action conversions against hand-computed values (the simulator itself cannot run here)."""

import importlib.util

import numpy as np
import pytest

from genvla_jax.eval.envs import simpler


def test_euler_to_axis_angle_hand_computed():
  np.testing.assert_allclose(simpler.euler_to_axis_angle([0.1, 0, 0]), [0.1, 0, 0], atol=1e-12)
  np.testing.assert_allclose(simpler.euler_to_axis_angle([0, 0, -0.3]), [0, 0, -0.3], atol=1e-12)
  np.testing.assert_allclose(simpler.euler_to_axis_angle([0, np.pi / 2, 0]), [0, np.pi / 2, 0], atol=1e-12)
  np.testing.assert_array_equal(simpler.euler_to_axis_angle([0, 0, 0]), [0, 0, 0])
  # Rz(90) Rx(90) = [[0,0,1],[1,0,0],[0,1,0]]: the cyclic permutation, 120 degrees about (1,1,1)/sqrt(3)
  np.testing.assert_allclose(
    simpler.euler_to_axis_angle([np.pi / 2, 0, np.pi / 2]), np.full(3, 2 * np.pi / 3 / np.sqrt(3)), atol=1e-9
  )
  np.testing.assert_allclose(np.abs(simpler.euler_to_axis_angle([np.pi, 0, 0])), [np.pi, 0, 0], atol=1e-6)


def test_google_robot_sticky_relative_gripper():
  convert = simpler.GoogleRobotActions()
  opens = [1, 1] + [0] * 20 + [1] * 20  # open, then close at step 2, open again at step 22
  out = np.array([convert([0.01, -0.02, 0.03, 0.1, 0, 0, o]) for o in opens])
  np.testing.assert_allclose(out[0, :6], [0.01, -0.02, 0.03, 0.1, 0, 0], atol=1e-12)
  gripper = out[:, 6]
  want = [0, 0] + [1] * 15 + [0] * 5 + [-1] * 15 + [0] * 5  # +1 = close, held for 15 steps
  np.testing.assert_array_equal(gripper, want)
  convert.reset()
  assert convert([0, 0, 0, 0, 0, 0, 0])[6] == 0  # no previous action after reset
  with pytest.raises(ValueError, match="7-D"):
    convert([0, 0, 0, 0, 0, 1])


def test_widowx_absolute_gripper_and_rotation():
  convert = simpler.WidowXActions()
  out = convert([0.0, 0.0, -0.01, np.pi / 2, 0, np.pi / 2, 0.7])
  np.testing.assert_allclose(out, [0, 0, -0.01, *np.full(3, 2 * np.pi / 3 / np.sqrt(3)), 1.0], atol=1e-9)
  assert convert([0, 0, 0, 0, 0, 0, 0.2])[6] == -1.0
  with pytest.raises(ValueError, match="finite"):
    convert([0, 0, 0, 0, np.nan, 0, 1])


def test_simpler_env_says_what_is_missing():
  if importlib.util.find_spec("simpler_env") is not None:
    pytest.skip("SimplerEnv is installed here")
  with pytest.raises(ImportError, match="SIMPLER.md"):
    simpler.SimplerEnv()
