"""MetaWorld MT10 through the same harness: its scripted policies recorded as RLDS, replayed exactly,
and evaluated closed-loop with a report."""

import json
import warnings

import numpy as np
import pytest

from genvla_jax.eval.envs import metaworld_env

warnings.filterwarnings("ignore", message="Constant")  # metaworld's own policies warn about their gains


@pytest.fixture(scope="module")
def recorded(tmp_path_factory):
  from genvla_jax.data import sim_record

  out = tmp_path_factory.mktemp("metaworld")
  sim_record.ensure(str(out), "metaworld", train_episodes=1, val_episodes=2, image_size=32)
  return out


def test_demonstrations_recorded_and_replayed(recorded):
  from genvla_jax.data import rlds

  episodes = list(rlds.RLDSDataset(str(recorded / "rlds" / "metaworld_mt10" / "1.0.0"), "val"))
  assert len(episodes) == 2
  done = json.load(open(recorded / "DONE.json"))
  assert done["settings"]["env"] == "metaworld" and isinstance(done["failed_expert_rollouts_left_out"], list)
  env = metaworld_env.MetaWorldEnv(image_size=32)
  try:
    for episode in episodes:
      task = episode["episode_metadata/task"]
      task = task.decode() if isinstance(task, bytes) else str(task)
      env.reset(task, int(episode["episode_metadata/seed"]), "visual_matching")
      for step in episode["steps"]:  # the same float32 actions through the same simulator: bit-identical
        np.testing.assert_array_equal(step["observation/state"], env.state())
        _, success, _ = env.step(step["action"])
      assert success and episode["steps"][-1]["is_terminal"]
      assert step["language_instruction"] in [
        w.encode() if isinstance(step["language_instruction"], bytes) else w
        for w in metaworld_env.INSTRUCTIONS[task][0]
      ]
  finally:
    env.close()


def test_expert_through_the_harness(tmp_path):
  from configs import eval_metaworld
  from genvla_jax.eval.__main__ import evaluate_expert

  config = eval_metaworld.get_config("quick,tasks=reach-v3,protocols=visual_matching+paraphrase")
  config.unlock()
  config.update(episodes_per_task=2, num_envs=2)
  config.env_kwargs.update(image_size=32)
  summary = evaluate_expert(config, str(tmp_path), "metaworld expert", printer=lambda *a, **k: None)
  assert summary["overall"]["episodes"] == 4 and summary["overall"]["success_rate"] == 1.0
  assert (tmp_path / "report.md").exists()
