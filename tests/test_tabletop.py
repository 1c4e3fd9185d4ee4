"""The MuJoCo tabletop benchmark: determinism, the scripted expert in every protocol, what each protocol
changes, expert demonstrations written as RLDS and read back, and the closed-loop harness end to end on a
trained checkpoint (report produced)."""

import io
import json
import os

import numpy as np
import pytest

from genvla_jax import intervals
from genvla_jax.eval import harness, report
from genvla_jax.eval.envs import tabletop
from genvla_jax.inference import protocol as policy_protocol


@pytest.fixture(scope="module")
def env():
  e = tabletop.TabletopEnv(image_size=48)
  yield e
  e.close()


def _expert_rollout(env, task, seed, protocol):
  obs = env.reset(task, seed, protocol)
  expert, frames, states, done = tabletop.Expert(env), [obs["image"]], [obs["state"]], False
  while not done:
    obs, _, done = env.step(expert.act())
    frames.append(obs["image"])
    states.append(obs["state"])
  return np.stack(frames), np.stack(states), env.episode.success


def test_deterministic_given_task_seed_protocol(env):
  other = tabletop.TabletopEnv(image_size=48)
  try:
    for task in tabletop.TASKS:
      a, b = (
        _expert_rollout(env, task, 3, "variant_aggregation"),
        _expert_rollout(other, task, 3, "variant_aggregation"),
      )
      np.testing.assert_array_equal(a[0], b[0])
      np.testing.assert_array_equal(a[1], b[1])
  finally:
    other.close()
  first = env.reset("pick_object", 1, "visual_matching")["image"]
  assert not np.array_equal(first, env.reset("pick_object", 2, "visual_matching")["image"])


def test_expert_solves_every_task_in_every_protocol(env):
  for protocol in tabletop.PROTOCOLS:
    for task in tabletop.TASKS:
      successes = [_expert_rollout(env, task, seed, protocol)[2] for seed in range(6)]
      assert np.mean(successes) >= 0.95, (protocol, task, successes)


def test_protocols_change_what_they_say(env):
  base = env.reset("move_near", 5, "visual_matching")
  cubes = {c: env.cube(c) for c in tabletop.COLORS}
  train_wordings = {
    w.format(a=env.episode.target, b=env.episode.reference) for w in tabletop.INSTRUCTIONS["move_near"][0]
  }
  assert base["instruction"] in train_wordings
  masked = env.reset("move_near", 5, "background_masking")
  black = (masked["image"] == 0).all(-1)
  assert 0.05 < black.mean() < 0.9 and not (base["image"] == 0).all(-1).any()
  np.testing.assert_array_equal(masked["image"][~black], base["image"][~black])  # only the background
  para = env.reset("move_near", 5, "paraphrase")
  assert para["instruction"] not in train_wordings and env.episode.target in para["instruction"]
  seen = set()
  for seed in range(40):
    shifted = env.reset("move_near", seed, "variant_aggregation")
    seen.add(env.episode.variant)
    plain = shifted["image"]
    if seed == 5:
      for c in tabletop.COLORS:  # same scene, other appearance
        # 1 mm: a physical tolerance (3 settle steps with other objects in the scene), not a float one
        np.testing.assert_allclose(env.cube(c)[:2], cubes[c][:2], atol=1e-3)
      assert not np.array_equal(plain, base["image"])
  assert seen == set(tabletop.VARIANTS)


def test_bad_action_is_named(env):
  env.reset("pick_object", 0)
  with pytest.raises(ValueError, match="4 finite numbers"):
    env.step([0.0, np.nan, 0.0, 1.0])
  with pytest.raises(ValueError, match="unknown task"):
    env.reset("juggle", 0)


def test_wilson_interval_reference_values():
  low, high = intervals.wilson_interval(6, 6)  # reference values to 4 decimals: within half the last digit
  assert abs(low - 0.6097) <= 0.5e-4 and high == 1.0
  low, high = intervals.wilson_interval(5, 10)
  assert abs(low - 0.2366) <= 0.5e-4 and abs(high - 0.7634) <= 0.5e-4
  low, high = intervals.wilson_interval(8, 10)
  assert abs(low - 0.4902) <= 0.5e-4 and abs(high - 0.9433) <= 0.5e-4 and intervals.wilson_interval(0, 0) == (0.0, 1.0)
  low, high = intervals.wilson_interval(5, 5)
  assert abs(low - 0.5655) <= 1e-4 and high == 1.0


def test_recorded_demonstrations_read_back_as_rlds(recorded):
  from genvla_jax.data import rlds
  from genvla_jax.data import sim_record

  episodes = list(rlds.RLDSDataset(str(recorded / "rlds" / "tabletop" / "1.0.0"), "val"))
  assert len(episodes) == 4
  env = tabletop.TabletopEnv(image_size=48)
  try:  # replaying the recorded actions reproduces the recorded observations and succeeds
    for episode in episodes:  # (TFDS stores episodes in hashed order; the metadata says which is which)
      e = int(episode["episode_metadata/episode_id"])
      task = episode["episode_metadata/task"]
      task = task.decode() if isinstance(task, bytes) else str(task)
      assert task == tabletop.TASKS[e % 4] and int(episode["episode_metadata/seed"]) == sim_record.VAL_SEED_OFFSET + e
      env.reset(task, sim_record.VAL_SEED_OFFSET + e, "visual_matching")
      steps = episode["steps"]
      for i, step in enumerate(steps):  # the same float32 actions through the same simulator: bit-identical
        np.testing.assert_array_equal(step["observation/state"], env.state())
        _, success, done = env.step(step["action"])
        assert done == (i == len(steps) - 1)
      assert success and steps[-1]["is_terminal"]
  finally:
    env.close()
  vl = json.load(open(recorded / "vl" / "train.json"))
  assert len(vl) == 12 and {e["conversations"][1]["value"] for e in vl} & {"yes", "no"}


def test_noisy_training_demonstrations_record_the_experts_command(recorded):
  """Training episodes are executed with noise (execution_noise=1 in the fixture) but labelled with the
  expert's command at the perturbed state: replaying label + the recorder's seeded noise reproduces
  every recorded state, and the expert, asked at each state, gives the recorded label."""
  from genvla_jax.data import rlds

  episodes = list(rlds.RLDSDataset(str(recorded / "rlds" / "tabletop" / "1.0.0"), "train"))
  assert len(episodes) == 8
  std = np.asarray(tabletop.EXECUTION_NOISE_STD, np.float32)
  env, perturbed = tabletop.TabletopEnv(image_size=48), 0
  try:
    for episode in episodes:
      task = episode["episode_metadata/task"]
      task = task.decode() if isinstance(task, bytes) else str(task)
      seed = int(episode["episode_metadata/seed"])
      env.reset(task, seed, "visual_matching")
      expert, rng = tabletop.Expert(env), np.random.default_rng([seed, 7])
      for step in episode["steps"]:  # the recorder's float32 arithmetic replayed on the same simulator: exact
        np.testing.assert_array_equal(step["observation/state"], env.state())
        np.testing.assert_array_equal(step["action"], expert.act())
        noise = rng.normal(0.0, 1.0, tabletop.ACTION_DIM).astype(np.float32) * std
        perturbed += int(np.abs(noise).max() > 1e-3)
        env.step(step["action"] + noise)
      assert env.episode.success
  finally:
    env.close()
  assert perturbed > 20


def test_harness_end_to_end_on_a_trained_checkpoint(recorded, tmp_path, cache_dir):
  from configs import eval_tabletop, pi0_plus
  from genvla_jax import train
  from genvla_jax.eval.__main__ import evaluate, evaluate_expert
  from genvla_jax.inference import policy as policy_lib
  from conftest import use_recording

  config = pi0_plus.get_config("tabletop")
  use_recording(config, recorded, cache_dir)
  config.train.update(steps=2, log_every=1, checkpoint_every=2)
  workdir = tmp_path / "run"
  train.train(config, str(workdir), printer=lambda *a, **k: None)
  policy = policy_lib.Policy.from_workdir(str(workdir))
  assert policy.action_dim == tabletop.ACTION_DIM
  assert policy.uses_state  # the tabletop prompt writes the robot state; the harness passes it
  image = np.zeros((48, 48, 3), np.uint8)
  with pytest.raises(ValueError, match="takes the robot state"):
    policy.act(image, "open the drawer")
  tokens_at = lambda s: policy.prepare_inputs([image], ["open the drawer"], states=[s])[1]
  assert not np.array_equal(tokens_at(np.full(4, -0.5)), tokens_at(np.full(4, 0.5)))
  eval_config = eval_tabletop.get_config("quick,protocols=visual_matching+paraphrase")
  eval_config.unlock()
  eval_config.update(episodes_per_task=2, num_envs=2, video_episodes=1)
  eval_config.env_kwargs.update(image_size=48, max_steps=3)
  out = tmp_path / "eval"
  summary = evaluate(eval_config, policy, str(out), "test", printer=lambda *a, **k: None)
  saved = json.load(open(out / "results.json"))
  assert len(saved["episodes"]) == 2 * 4 * 2 and saved["summary"] == json.loads(json.dumps(summary))
  assert summary["protocols"]["paraphrase"]["overall"]["episodes"] == 8
  assert all(e["steps"] <= 3 for e in saved["episodes"])
  assert "| pick_object |" in open(out / "report.md").read() and os.path.getsize(out / "success.png") > 1000
  assert len(os.listdir(out / "videos")) == 2 * 4  # first episode of each (protocol, task)
  # the expert through the same harness and report: every episode succeeds
  eval_config.env_kwargs.update(max_steps=60)
  expert = evaluate_expert(eval_config, str(tmp_path / "expert"), "expert", printer=lambda *a, **k: None)
  assert expert["overall"]["success_rate"] == 1.0


def test_harness_rejects_a_policy_of_the_wrong_shape():
  class Wrong:  # the policy protocol, with actions of the wrong batch size
    metadata = policy_protocol.PolicyMetadata(horizon=1, action_dim=4)

    def reset(self):
      pass

    def prompt_spec(self):
      return None

    def act(self, images, instructions, *, states=None, full_width=False):
      return np.zeros((len(images) + 1, 1, 4)), np.ones((len(images) + 1, 1, 4), bool)

  with pytest.raises(ValueError, match="expected"):
    harness.run(
      Wrong(),
      lambda: tabletop.TabletopEnv(32),
      tasks=["pick_object"],
      protocols=["visual_matching"],
      episodes_per_task=1,
      num_envs=1,
      printer=lambda *a, **k: None,
    )


def test_rollout_videos_mp4_and_gif(tmp_path):
  import cv2
  from PIL import Image

  frames = [np.full((8, 8, 3), 40 * i, np.uint8) for i in range(5)]
  results = [harness.EpisodeResult("visual_matching", "pick_object", 3, "pick up the red cube", True, 4, frames=frames)]
  for fmt in ("mp4", "gif"):
    report.write(results, str(tmp_path / fmt), "t", video_format=fmt)
    assert os.listdir(tmp_path / fmt / "videos") == [f"visual_matching-pick_object-seed3-success.{fmt}"]
  capture = cv2.VideoCapture(str(tmp_path / "mp4" / "videos" / "visual_matching-pick_object-seed3-success.mp4"))
  decoded = []
  while True:
    ok, frame = capture.read()
    if not ok:
      break
    decoded.append(frame)
  assert len(decoded) == 5 and decoded[0].shape == (24, 24, 3)  # scaled 3x
  assert [abs(float(f.mean()) - 40 * i) < 8 for i, f in enumerate(decoded)] == [True] * 5
  gif = Image.open(tmp_path / "gif" / "videos" / "visual_matching-pick_object-seed3-success.gif")
  assert gif.n_frames == 5 and gif.size == (24, 24)
  with pytest.raises(ValueError, match="video_format"):
    report.write(results, str(tmp_path / "x"), "t", video_format="avi")


def test_a_missing_gl_stack_names_the_system_libraries(monkeypatch):
  def broken(*args, **kwargs):
    raise ImportError("libEGL.so.1: cannot open shared object file")

  monkeypatch.setattr(tabletop.mujoco, "Renderer", broken)
  with pytest.raises(RuntimeError, match=r"libEGL\.so\.1.*apt-get install libegl1 libgl1-mesa-dri"):
    tabletop.TabletopEnv(image_size=32)


def test_wilson_interval_ends_are_exact_and_the_plot_takes_them(tmp_path):
  # 0 of 69 and 69 of 69: the formula's ends land 1e-18 past 0 and 1 (matplotlib refuses negative error bars)
  assert intervals.wilson_interval(0, 69)[0] == 0.0 and intervals.wilson_interval(69, 69)[1] == 1.0
  cell = {"success_rate": 0.0, "ci95": [3.5e-18, 0.05]}  # a results.json written before the fix
  summary = {"protocols": {"visual_matching": {"tasks": {"pick_object": cell}}}}
  report.plot(summary, str(tmp_path / "success.png"))
  assert (tmp_path / "success.png").stat().st_size > 0


def test_wrist_camera_observation_recording_and_evaluation(tmp_path):
  """A tabletop with the gripper camera: the front view stays bit for bit the one-camera env's, the wrist view
  follows the hand; recorded as RLDS with both cameras (dataset tabletop_wrist, replayable); a policy that
  names the cameras gets [B,2,S,S,3] from the harness and videos show both views side by side."""
  from PIL import Image

  from genvla_jax.data import rlds, sim_record
  from genvla_jax.eval.__main__ import evaluate

  with pytest.raises(ValueError, match="unknown tabletop cameras"):
    tabletop.TabletopEnv(32, cameras=("image", "gripper"))
  one, two = tabletop.TabletopEnv(32), tabletop.TabletopEnv(32, cameras=("image", "wrist_image"))
  try:
    for protocol in ("visual_matching", "background_masking"):
      a, b = one.reset("pick_object", 3, protocol), two.reset("pick_object", 3, protocol)
      expert, wrist = tabletop.Expert(two), [b["image"][1]]
      assert b["image"].shape == (2, 32, 32, 3) and b["image"].dtype == np.uint8
      for _ in range(5):
        action = expert.act()
        a, b = one.step(action)[0], two.step(action)[0]
        np.testing.assert_array_equal(a["image"], b["image"][0])  # the front camera: unchanged
        wrist.append(b["image"][1])
      assert len({w.tobytes() for w in wrist}) >= 4  # the wrist view moves with the hand
      assert not np.array_equal(b["image"][0], b["image"][1])
  finally:
    one.close()
  with pytest.raises(ValueError, match="records no camera set"):
    sim_record.dataset_name("metaworld", ("image", "wrist_image"))
  out = tmp_path / "rec"
  sim_record.ensure(
    str(out),
    "tabletop",
    train_episodes=1,
    val_episodes=2,
    vl_train=2,
    vl_val=1,
    image_size=32,
    cameras=("image", "wrist_image"),
  )
  assert json.load(open(out / "DONE.json"))["settings"]["cameras"] == ["image", "wrist_image"]
  # the same directory asked for other settings: refused, naming each difference
  with pytest.raises(
    ValueError,
    match=r"other settings: cameras \['image', 'wrist_image'\] \(asked None\); "
    r"image_size 32 \(asked 64\); use another directory",
  ):
    sim_record.ensure(str(out), "tabletop", train_episodes=1, val_episodes=2, vl_train=2, vl_val=1, image_size=64)
  episodes = list(rlds.RLDSDataset(str(out / "rlds" / "tabletop_wrist" / "1.0.0"), "val"))
  assert len(episodes) == 2
  try:  # the recorded frames of both cameras are what the env renders when the actions are replayed
    for episode in episodes:
      task = episode["episode_metadata/task"]
      task = task.decode() if isinstance(task, bytes) else str(task)
      obs = two.reset(task, int(episode["episode_metadata/seed"]), "visual_matching")
      for step in episode["steps"]:
        for c, name in enumerate(("image", "wrist_image")):
          frame = np.asarray(Image.open(io.BytesIO(step[f"observation/{name}"])))  # stored as PNG bytes
          np.testing.assert_array_equal(frame, obs["image"][c])
        obs = two.step(step["action"])[0]
  finally:
    two.close()

  seen = []

  class TwoCameras:  # the policy protocol, naming two cameras
    metadata = policy_protocol.PolicyMetadata(horizon=1, action_dim=4, cameras=("image", "wrist_image"))

    def reset(self):
      pass

    def prompt_spec(self):
      return None

    def act(self, images, instructions, *, states=None, full_width=False):
      seen.append(np.shape(images))
      return np.zeros((len(images), 1, 4)), np.ones((len(images), 1, 4), bool)

  from configs import eval_tabletop

  eval_config = eval_tabletop.get_config("quick,protocols=visual_matching,tasks=open_drawer")
  eval_config.unlock()
  eval_config.update(episodes_per_task=1, num_envs=1, video_episodes=1, video_format="gif")
  eval_config.env_kwargs.update(image_size=32, max_steps=2)
  evaluate(eval_config, TwoCameras(), str(tmp_path / "eval"), "two cameras", printer=lambda *a, **k: None)
  assert seen and all(s == (1, 2, 32, 32, 3) for s in seen)
  (video,) = os.listdir(tmp_path / "eval" / "videos")
  assert Image.open(tmp_path / "eval" / "videos" / video).size == (2 * 32 * 3, 32 * 3)  # side by side, x3
