"""Conversion in parts: parallel == serial, resume keeps finished parts, every step exactly once."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from genvla_jax.data import convert, demo, pipeline, rlds
import tolerances


def _records(out_dir):
  source = pipeline.StepChunkSource(out_dir, horizon=1)
  return [convert.decode_step(source._source[i]) for i in range(len(source))]


@pytest.fixture(scope="module")
def serial(demo_dir, tmp_path_factory):
  out = str(tmp_path_factory.mktemp("serial") / "c")
  meta = convert.convert(demo.demo_paths(str(demo_dir)).rlds_dir, "demo_targets", "train", out, episodes_per_part=5)
  return out, meta


def test_every_step_appears_exactly_once(serial, demo_dir):
  out, meta = serial
  ds = rlds.RLDSDataset(demo.demo_paths(str(demo_dir)).rlds_dir, "train")
  episodes = list(ds)
  assert len(meta["shards"]) == 5  # 24 episodes in parts of 5
  records = _records(out)
  assert len(records) == meta["num_steps"] == sum(len(e["steps"]) for e in episodes)
  assert len({(r["episode"], r["step"]) for r in records}) == len(records)
  index = np.load(os.path.join(out, "episodes.npz"))
  for e, (start, length) in enumerate(zip(index["start"], index["length"])):
    source = episodes[index["source_episode"][e]]
    assert length == len(source["steps"])
    for s in range(length):
      np.testing.assert_array_equal(records[start + s]["action"], source["steps"][s]["action"])


def test_parallel_conversion_equals_serial(serial, demo_dir, tmp_path):
  out, meta = serial
  parallel = str(tmp_path / "p")
  meta_p = convert.convert(
    demo.demo_paths(str(demo_dir)).rlds_dir, "demo_targets", "train", parallel, episodes_per_part=5, num_workers=2
  )
  assert [s["sha256"] for s in meta_p["shards"]] == [s["sha256"] for s in meta["shards"]]
  with open(os.path.join(out, "stats.json")) as f, open(os.path.join(parallel, "stats.json")) as g:
    assert json.load(f) == json.load(g)


def test_interrupted_conversion_resumes_keeping_finished_parts(serial, demo_dir, tmp_path):
  out, meta = serial
  rlds_dir = demo.demo_paths(str(demo_dir)).rlds_dir
  resumed = str(tmp_path / "r")
  os.makedirs(resumed)
  parts = convert.plan(rlds.RLDSDataset(rlds_dir, "train"), 5)
  for part in parts[:2]:  # what an interrupted run left behind
    convert.convert_part(rlds_dir, "train", "demo_targets", part, len(parts), resumed)
  first = os.path.join(resumed, meta["shards"][0]["file"])
  before = os.stat(first).st_mtime_ns
  lines = []
  meta_r = convert.convert(
    rlds_dir, "demo_targets", "train", resumed, episodes_per_part=5, printer=lambda *a, **k: lines.append(a[0])
  )
  assert os.stat(first).st_mtime_ns == before
  assert len(lines) == 3 and lines[-1].startswith("converted 5/5 parts")
  assert meta_r["shards"] == meta["shards"]
  convert.verify(resumed)


def test_inspect_reports_a_converted_dataset_and_a_vl_corpus(serial, demo_dir):
  from genvla_jax.data import inspect

  out, meta = serial
  summary = inspect.inspect(out)
  assert (summary["episodes"], summary["steps"]) == (meta["num_episodes"], meta["num_steps"])
  assert summary["features"]["action"] == {"type": "float32", "shape": [2]}
  assert summary["image"]["shape"] == [32, 32, 3]
  assert summary["instructions"]["sampled_steps"] == meta["num_steps"]
  assert all(isinstance(text, str) and text.strip() for text, _ in summary["instructions"]["most_common"])
  assert summary["skipped"]["total"] == 0 and summary["statistics"]["action"]["count"] == meta["num_steps"]
  text = inspect.format_text(summary)
  assert "episodes: 24" in text and "normalized [True, True]" in text
  vl_summary = inspect.inspect(demo.demo_paths(str(demo_dir)).vl_train_json)
  assert vl_summary["examples"] > 0 and vl_summary["missing_images"] == 0
  with pytest.raises(ValueError, match="neither a converted dataset"):
    inspect.inspect(str(demo_dir))


def test_combined_statistics_pool_the_datasets_exactly(serial, demo_dir, tmp_path):
  out, _ = serial
  val = convert.convert(demo.demo_paths(str(demo_dir)).rlds_dir, "demo_targets", "val", str(tmp_path / "v"))
  a1, _ = convert.actions_and_states(out)
  a2, _ = convert.actions_and_states(str(tmp_path / "v"))
  assert len(a2) == val["num_steps"]
  pooled = convert.combined_stats([out, str(tmp_path / "v")], normalize_mask=(True, True))
  both = np.concatenate([a1, a2])
  np.testing.assert_allclose(pooled["action"]["q01"], np.quantile(both, 0.01, axis=0), rtol=4 * tolerances.EPS32)
  # pooled mean: len(both) terms summed in another order -> absolute, on the actions' scale
  _, atol = tolerances.float_tol(np.float32, len(both), scale=float(np.abs(both).max()))
  np.testing.assert_allclose(pooled["action"]["mean"], both.mean(0), rtol=0, atol=atol)
  assert pooled["action"]["count"] == len(both) and pooled["action"]["normalize_mask"] == [True, True]
  from genvla_jax.data import inspect

  many = inspect.inspect_many([out, str(tmp_path / "v")])
  assert many["statistics"]["action"]["count"] == len(both) and len(many["datasets"]) == 2
  assert "action: q01" in inspect.format_text(many)


def test_cli_without_dataset_takes_the_entry_from_dataset_info(tmp_path):
  """`--dataset` omitted: the published name in the Bridge sample's dataset_info.json picks "bridge" (said
  in the output); an unknown --dataset is one line listing the names, before --out is made."""
  from conftest import BRIDGE_SAMPLE, ROOT

  if not os.path.isdir(BRIDGE_SAMPLE):
    pytest.skip("shared Bridge sample not present")
  env = dict(os.environ, PYTHONPATH=ROOT, JAX_PLATFORMS="cpu")
  command = [sys.executable, "-m", "genvla_jax.data.convert", f"--rlds_dir={BRIDGE_SAMPLE}", "--split=val"]
  result = subprocess.run(
    [*command, f"--out={tmp_path / 'out'}", "--num_workers=0"], env=env, capture_output=True, text=True, timeout=120
  )
  assert result.returncode == 0, result.stderr[-3000:]
  assert result.stdout.splitlines()[0] == (
    f"dataset: registry entry 'bridge' (name 'bridge_dataset' in {BRIDGE_SAMPLE}/dataset_info.json)"
  )
  meta = json.loads((tmp_path / "out" / "meta.json").read_text())
  assert (meta["dataset"], meta["num_episodes"], meta["num_steps"]) == ("bridge", 25, 250)
  result = subprocess.run(
    [*command, f"--out={tmp_path / 'nope'}", "--dataset=brige"], env=env, capture_output=True, text=True, timeout=120
  )
  lines = result.stderr.strip().splitlines()
  assert result.returncode == 2 and len(lines) == 1, result.stderr[-3000:]
  assert lines[0].startswith("error: unknown robot dataset 'brige' (--dataset); known: bridge, bridge_relabeled")
  assert "bridge_dataset -> bridge" in lines[0] and not (tmp_path / "nope").exists()
