"""LIBERO demonstrations from freshly sampled scenes (issue 23, item 4's preparation): `reset(..., scene="fresh")`
of genvla_jax/eval/envs/libero.py and `libero_record --scenes=fresh`. Without a simulator: file names, seeds,
the nearest-fixed-state measure, the recorder's refusal to mix fixed and fresh episodes in one directory. Where
LIBERO's virtualenv exists (`-m slow`): a fresh scene is reproducible, differs from every fixed initial state of
its task, leaves the fixed episodes' generator tape as it was, and records through the recorder."""

import json
import os

import numpy as np
import pytest

from genvla_jax import cli
from genvla_jax.data import libero_record
from genvla_jax.eval.envs import libero

needs_libero = pytest.mark.skipif(
  not libero.available(),
  reason=f"LIBERO's virtualenv is absent (no {libero.worker_python()}): run `bash launch/setup_libero.sh`",
)
OBJECT_0 = libero.suite_tasks("object")[0]  # pick up the alphabet soup and place it in the basket
SPATIAL_0 = libero.suite_tasks("spatial")[0]  # its fixtures (cabinet, stove) come from the generator stream


# ----- no simulator ------------------------------------------------------------------------------------------------
def test_fresh_seeds_never_meet_the_evaluation_seed():
  assert libero.SCENES == ("fixed", "fresh")
  assert [libero.fresh_seed(k) for k in (0, 1, 49)] == [100_000, 100_001, 100_049]
  assert libero.SEED not in {libero.fresh_seed(k) for k in range(1000)}
  for bad in (-1, 1.5):
    with pytest.raises(ValueError, match="fresh-scene episodes are numbered"):
      libero.fresh_seed(bad)


def test_episode_files_of_fixed_and_fresh_scenes_have_different_names():
  assert libero_record.episode_stem(OBJECT_0, 7) == "t00_e007"  # as before: existing directories still resume
  assert libero_record.episode_stem(OBJECT_0, 7, "fresh") == "t00_fresh007"
  assert libero_record.episode_stem(libero.suite_tasks("object")[3], 12, "fresh") == "t03_fresh012"
  with pytest.raises(ValueError, match="unknown scene 'random'"):
    libero_record.episode_stem(OBJECT_0, 0, "random")
  for name, kind in (("t00_e007.npz", "fixed"), ("t03_e012.failed.json", "fixed"), ("t00_fresh007.npz", "fresh")):
    assert [k for k, p in libero_record.STEM_PATTERNS.items() if p.match(name)] == [kind], name


def test_nearest_fixed_state_is_the_smallest_largest_displacement():
  to_fixed = {
    "objects": ["soup", "basket"],
    "object_m": np.array([[0.001, 0.030], [0.004, 0.005], [0.020, 0.001]]),  # [states, objects]
    "robot_joints_rad": np.array([0.1, 0.2, 0.3]),
  }
  # per state the largest object displacement: 0.030, 0.005, 0.020 -> state 1
  assert libero.nearest_fixed_state(to_fixed) == {"state": 1, "max_object_m": 0.005, "robot_joints_rad": 0.2}
  with pytest.raises(ValueError, match=r"\[states, objects\]"):
    libero.nearest_fixed_state({"object_m": np.zeros(3), "robot_joints_rad": np.zeros(3)})


def _touch(path):
  os.makedirs(os.path.dirname(path), exist_ok=True)
  open(path, "w").close()


def test_recorder_refuses_to_mix_fixed_and_fresh_episodes(tmp_path):
  """Before any simulator or lerobot virtualenv is needed: the run fails naming a file of the other kind."""
  fixed_dir, fresh_dir = tmp_path / "fixed", tmp_path / "fresh"
  _touch(str(fixed_dir / "episodes" / "t00_e000.npz"))
  _touch(str(fresh_dir / "episodes" / "t01_fresh003.failed.json"))
  with pytest.raises(cli.UserError, match=r"holds 1 fixed-scene episode file\(s\) \(t00_e000\.npz.*records fresh"):
    libero_record.run("object", 1, str(fixed_dir), scenes="fresh", tasks=[0])
  with pytest.raises(cli.UserError, match=r"t01_fresh003\.failed\.json.*records fixed scenes"):
    libero_record.run("object", 1, str(fresh_dir), scenes="fixed", tasks=[0])
  libero_record.check_scenes(str(fixed_dir / "episodes"), "fixed")  # the same kind: fine
  libero_record.check_scenes(str(tmp_path / "nothing_yet"), "fresh")


def test_recorder_checks_its_arguments(tmp_path):
  out = str(tmp_path / "out")
  with pytest.raises(cli.UserError, match="suite object has tasks 0..9"):
    libero_record.run("object", 1, out, scenes="fresh", tasks=[0, 10])
  with pytest.raises(cli.UserError, match="initial states 0..49"):
    libero_record.run("object", 2, out, first_episode=49, scenes="fixed")
  with pytest.raises(cli.UserError, match="--scenes=random"):
    libero_record.run("object", 1, out, scenes="random")
  with pytest.raises(cli.UserError, match="--tasks=0,x"):
    libero_record.task_indices(["0", "x"])
  assert libero_record.select_tasks("object", [5, 0, 5]) == (libero.suite_tasks("object")[5], OBJECT_0)
  assert libero_record.select_tasks("spatial", []) == libero.suite_tasks("spatial")


# ----- the simulator (LIBERO's virtualenv) ------------------------------------------------------------------------
@pytest.fixture(scope="module")
def env():
  e = libero.LiberoEnv(image_size=64, render_size=64, cameras=("image", "wrist_image"), max_steps=4)
  yield e
  e.close()


def _objects(info):
  return {k: np.asarray(v) for k, v in info["objects"].items()}


@needs_libero
@pytest.mark.slow
def test_fresh_scene_is_reproducible_and_none_of_the_fixed_states(env):
  first = env.reset(OBJECT_0, 0, scene="fresh")
  info = env.info
  assert (info["scene"], info["sim_seed"], env.episode.seed, env.episode.steps) == ("fresh", 100_000, 0, 0)
  assert first["instruction"] == "pick up the alphabet soup and place it in the basket"
  object_m = np.asarray(info["to_fixed_states"]["object_m"])
  assert object_m.shape == (50, len(info["objects"]))
  nearest = libero.nearest_fixed_state(info["to_fixed_states"])
  # no fixed initial state holds this scene: some object is >= 1 mm away in the nearest one (measured: ~5 mm;
  # LIBERO-Object's own layouts vary by only ~1-3 cm)
  assert nearest["max_object_m"] > 1e-3, nearest
  env.reset(OBJECT_0, 3)  # a fixed state in between; the measure is exactly 0 at its own index
  assert libero.nearest_fixed_state(env.info["to_fixed_states"]) == {
    "state": 3,
    "max_object_m": 0.0,
    "robot_joints_rad": 0.0,
  }
  again = env.reset(OBJECT_0, 0, scene="fresh")  # the same seed: the same scene, pixel for pixel
  np.testing.assert_array_equal(again["image"], first["image"])
  np.testing.assert_array_equal(again["state"], first["state"])
  for name, pos in _objects(info).items():
    np.testing.assert_array_equal(env.info["objects"][name], pos)
  other = env.reset(OBJECT_0, 1, scene="fresh")  # another seed: another scene
  assert env.info["sim_seed"] == 100_001
  moved = max(np.linalg.norm(env.info["objects"][k] - p) for k, p in _objects(info).items())
  assert moved > 1e-3 and not np.array_equal(other["image"], first["image"])
  # the arm starts with the fixed states' joint noise (0.02 rad), so its end effector differs too (by mm)
  assert np.abs(other["state"][:3] - first["state"][:3]).max() > 1e-4
  with pytest.raises(ValueError, match="unknown LIBERO scene"):
    env.reset(OBJECT_0, 0, scene="random")


@needs_libero
@pytest.mark.slow
def test_fresh_resets_leave_the_fixed_episodes_as_they_were(env):
  """LIBERO-Spatial's fixtures come from the generator stream: fixed episode 1 is the same scene, and the tape the
  same, whether or not fresh scenes were reset in between."""
  libero._RNG_TAPE.clear()
  plain = env.reset(SPATIAL_0, 1)
  fixtures = {k: np.asarray(v) for k, v in env.info["fixtures"].items()}
  key = ("libero_spatial", libero.split_task(SPATIAL_0)[1], libero.SEED)
  tape = {k: dict(v) for k, v in libero._RNG_TAPE[key].items()}
  assert sorted(tape) == [1, 2]
  env.reset(SPATIAL_0, 0, scene="fresh")
  fresh_fixtures = env.info["fixtures"]
  assert not all(np.array_equal(fresh_fixtures[k], v) for k, v in fixtures.items())  # sampled anew, too
  assert sorted(libero._RNG_TAPE[key]) == [1, 2]  # a fresh reset writes nothing to the tape
  again = env.reset(SPATIAL_0, 1)
  np.testing.assert_array_equal(again["image"], plain["image"])
  np.testing.assert_array_equal(again["state"], plain["state"])
  for name, pos in fixtures.items():
    np.testing.assert_array_equal(env.info["fixtures"][name], pos)
  for k, state in libero._RNG_TAPE[key].items():
    np.testing.assert_array_equal(state["keys"], tape[k]["keys"])
    assert (state["pos"], state["has_gauss"], state["cached"]) == (
      tape[k]["pos"],
      tape[k]["has_gauss"],
      tape[k]["cached"],
    )


@needs_libero
@pytest.mark.slow
def test_recorder_records_a_fresh_episode(env, tmp_path):
  """A few steps (max_steps=4: the expert cannot finish): the episode file is named and described as fresh."""
  [recording] = list(libero_record.record_episodes([env], [(OBJECT_0, 2)], scene="fresh"))
  assert (recording.scene, recording.sim_seed, recording.episode, len(recording.actions)) == ("fresh", 100_002, 2, 4)
  assert recording.image.shape == recording.wrist_image.shape == (4, 64, 64, 3) and not recording.success
  assert recording.nearest_fixed["max_object_m"] > 1e-3 and recording.seconds > 0
  path = libero_record.save_recording(recording, str(tmp_path))
  assert os.path.basename(path) == "t00_fresh002.failed.json"
  meta = json.load(open(path))
  assert (meta["scene"], meta["sim_seed"], meta["steps"]) == ("fresh", 100_002, 4)
  assert libero_record.finished(str(tmp_path), OBJECT_0, 2, "fresh") == path
  assert libero_record.finished(str(tmp_path), OBJECT_0, 2) is None  # not a fixed episode 2
  summary = libero_record.summarize(str(tmp_path), [(OBJECT_0, 2)], "fresh")
  assert summary["episodes"] == 1 and summary["successes"] == 0
  assert summary["min_distance_to_fixed_m"] == meta["nearest_fixed"]["max_object_m"]
  with pytest.raises(cli.UserError, match="fresh-scene episode"):
    libero_record.check_scenes(str(tmp_path), "fixed")
