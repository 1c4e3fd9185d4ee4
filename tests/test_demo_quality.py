"""Slow (`-m slow`, ~12 min on 2 CPU cores): the full demo recipe (tiny π0+, D+S+C) learns the task.

Trains `configs/pi0_plus.py:demo` with its default length on freshly generated demo data and checks
that greedy-decoded actions on held-out episodes beat the mean-action baseline by a wide margin."""

import pytest

from configs import pi0_plus
from genvla_jax import predict, train
from genvla_jax.inference import policy as policy_lib


@pytest.mark.slow
def test_demo_recipe_beats_mean_action_baseline(tmp_path):
  config = pi0_plus.get_config("demo")
  config.data.demo_dir = str(tmp_path / "demo")
  config.data.cache_dir = str(tmp_path / "cache")
  records = train.train(config, str(tmp_path / "run"))
  assert records[-1]["robot_loss"] < 0.5 * records[0]["robot_loss"]
  report = predict.evaluate_split(policy_lib.Policy.from_workdir(str(tmp_path / "run")), "val", 200)
  result = report["demo_targets"]
  print(result)
  assert result["invalid_fraction"] < 0.05
  assert result["mae_normalized"] < 0.2 * result["baseline_mae_normalized"]
