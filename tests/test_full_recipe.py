"""The paper's full-size experiment as a config (issue 21, item 4): configs/pi0_plus.py:full with the four VL
corpora of the paper given by their download folders as config options (llava=, vqasynth=, onevision=,
robopoint=; each in its published layout), trained a few steps on CPU from a small random HF PaliGemma
checkpoint whose architecture the run takes (pretrained.architecture=checkpoint), on the real Bridge sample;
a corpus folder without its layout, or co-training without any corpus, fails before any work naming the
option; directories written by `data.convert` / `convert_vl` are read as they are, never converted again."""

import io
import json
import os
import shutil
import subprocess
import sys
import time

import numpy as np
from PIL import Image
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from conftest import BRIDGE_SAMPLE, ROOT, tiny_config
from configs import pi0_plus
from genvla_jax import train
from genvla_jax.data import convert, convert_vl, prepare
from genvla_jax.training import preflight
from test_pretrained_init import _tiny_hf_checkpoint

QUIET = lambda *a, **k: None
CORPORA = ("llava", "vqasynth", "onevision", "robopoint")


def _image(seed: int, fmt: str, size: int = 24) -> bytes:
  buffer = io.BytesIO()
  pixels = np.random.default_rng(seed).integers(0, 255, (size, size, 3), dtype=np.uint8)
  Image.fromarray(pixels).save(buffer, format=fmt)
  return buffer.getvalue()


# Parquet columns as the published files have them: datasets' Image feature is a struct of bytes and path.
IMAGE = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
PART = pa.struct([("index", pa.int64()), ("text", pa.string()), ("type", pa.string())])  # VQASynth content part
MESSAGES = pa.list_(pa.struct([("content", pa.list_(PART)), ("role", pa.string())]))
TURNS = pa.list_(pa.struct([("from", pa.string()), ("value", pa.string())]))  # LLaVA conversations


def write_corpora(root) -> dict[str, str]:
  """Small corpora in the four published layouts (convert_vl.PUBLISHED) -> {option: download folder}."""
  roots = {name: root / name for name in CORPORA}
  # LLaVA-CC3M-Pretrain-595K: chat.json + images.zip unpacked into images/ (image names relative to it)
  (roots["llava"] / "images").mkdir(parents=True)
  chat = []
  for i in range(4):
    name = f"GCC_train_{i:09d}.jpg"
    (roots["llava"] / "images" / name).write_bytes(_image(i, "JPEG"))
    chat.append(
      {
        "id": f"GCC_train_{i:09d}",
        "image": name,
        "conversations": [
          {"from": "human", "value": "Give a brief description of the image.\n<image>"},
          {"from": "gpt", "value": ["a red cup", "the blue bowl", "a white plate", "the green marker"][i]},
        ],
      }
    )
  (roots["llava"] / "chat.json").write_text(json.dumps(chat))
  # a VQASynth dataset as pushed to the hub: data/train-*.parquet, columns image + messages (typed parts)
  (roots["vqasynth"] / "data").mkdir(parents=True)

  def turn(role, text, image=False):
    parts = [{"index": 0, "text": None, "type": "image"}] if image else []
    return {"content": parts + [{"index": None, "text": text, "type": "text"}], "role": role}

  messages = [
    [
      turn("user", "How far is the cup from the bowl?", image=True),
      turn("assistant", "About 0.4 meters."),
      turn("user", "Is the cup left of the bowl?"),
      turn("assistant", "Yes."),
    ]
    for _ in range(3)
  ]
  images = [{"bytes": _image(10 + i, "PNG"), "path": None} for i in range(3)]
  table = pa.table({"image": pa.array(images, IMAGE), "messages": pa.array(messages, MESSAGES)})
  pq.write_table(table, roots["vqasynth"] / "data" / "train-00000-of-00001.parquet")
  # LLaVA-OneVision-Data: one folder per subset of train-*.parquet (id, image, conversations, data_source)
  for s, subset in enumerate(("CLEVR-Math(MathV360K)", "VQA-RAD")):
    (roots["onevision"] / subset).mkdir(parents=True)
    table = pa.table(
      {
        "id": [f"{subset}-{i}" for i in range(3)],
        "image": pa.array([{"bytes": _image(20 + 3 * s + i, "PNG"), "path": f"{i}.png"} for i in range(3)], IMAGE),
        "conversations": pa.array(
          [
            [{"from": "human", "value": "<image>\nHow many cubes?"}, {"from": "gpt", "value": str(i)}] for i in range(3)
          ],
          TURNS,
        ),
        "data_source": [subset] * 3,
      }
    )
    pq.write_table(table, roots["onevision"] / subset / "train-00000-of-00001.parquet")
  # robopoint-data: robopoint_1432k.json + images/*.tar.gz unpacked into images/ (paths relative to it)
  entries = []
  for i, part in enumerate(("region_ref", "object_ref", "region_ref")):
    (roots["robopoint"] / "images" / part).mkdir(parents=True, exist_ok=True)
    (roots["robopoint"] / "images" / part / f"{i}.png").write_bytes(_image(30 + i, "PNG"))
    entries.append(
      {
        "id": f"{part}/{i}_left",
        "image": f"{part}/{i}.png",
        "conversations": [
          {"from": "human", "value": "<image>\nPoint to the free space left of the cup."},
          {"from": "gpt", "value": "[(0.46, 0.53), (0.5, 0.52)]"},
        ],
      }
    )
  (roots["robopoint"] / "robopoint_1432k.json").write_text(json.dumps(entries))
  return {name: str(path) for name, path in roots.items()}


EXAMPLES = {"llava": 4, "vqasynth": 6, "onevision": 6, "robopoint": 3}  # (question, answer) pairs per corpus


@pytest.fixture(scope="module")
def corpora(tmp_path_factory):
  return write_corpora(tmp_path_factory.mktemp("corpora"))


@pytest.fixture(scope="module")
def oxe(tmp_path_factory):
  """The real Bridge sample (read-only) copied to an OXE-style root: <root>/bridge_dataset/1.0.0."""
  root = tmp_path_factory.mktemp("oxe")
  shutil.copytree(BRIDGE_SAMPLE, root / "bridge_dataset" / "1.0.0")
  return root


@pytest.fixture(scope="module")
def checkpoint(demo_dir, cache_dir, tmp_path_factory):
  """A small random PaliGemma checkpoint in HF format (48 px, 704-id vocabulary) and its architecture."""
  out = tmp_path_factory.mktemp("hf")
  arch = _tiny_hf_checkpoint(tiny_config(demo_dir, cache_dir), out)
  return str(out), arch


def full_recipe(arg: str, oxe, demo_dir, checkpoint, cache):
  """configs/pi0_plus.py:<arg> as the README's full-size command gives it, at test size: the Bridge sample
  as the OXE root, the small HF checkpoint (architecture from it), the demo tokenizer, batch 8, 2 steps."""
  config = pi0_plus.get_config(arg)
  config.data.rlds_root = str(oxe)
  config.data.cache_dir = str(cache)
  config.tokenizer.path = str(demo_dir / "tokenizer.model")
  config.pretrained.format, config.pretrained.path = "hf", checkpoint[0]
  config.pretrained.architecture = "checkpoint"
  config.data.batch_size = 8
  config.train.update(steps=2, log_every=1, checkpoint_every=2)
  config.optimizer.warmup_steps = 1
  return config


def _option_arg(roots: dict[str, str]) -> str:
  return "full,mixture=bridge," + ",".join(f"{name}={root}" for name, root in roots.items())


def test_the_options_give_the_papers_corpora_in_their_published_layouts(corpora):
  config = pi0_plus.get_config(_option_arg(corpora))
  assert [e["name"] for e in config.data.vl] == list(CORPORA)
  layouts = {e["name"]: (e["path"], e["format"]) for e in config.data.vl}
  assert layouts == {
    "llava": (f"{corpora['llava']}/chat.json", "llava_json"),
    "vqasynth": (f"{corpora['vqasynth']}/data/train-*.parquet", "parquet"),
    "onevision": (f"{corpora['onevision']}/*/train-*.parquet", "parquet"),
    "robopoint": (f"{corpora['robopoint']}/robopoint_1432k.json", "llava_json"),
  }
  assert {e["weight"] for e in config.data.vl} == {1.0} and config.data.robot_fraction == 0.5  # 50/50, VL even
  assert config.model.dual_encoder and config.tokenizer.action == "string"  # D + S + C
  assert [e["name"] for e in pi0_plus.get_config(f"full,robopoint={corpora['robopoint']}").data.vl] == ["robopoint"]
  assert pi0_plus.get_config("full").data.vl == []  # none given: none (and the run's checks say so)
  with pytest.raises(ValueError, match="VL corpus options .* are for the full variant"):
    pi0_plus.get_config(f"demo,llava={corpora['llava']}")


def test_full_recipe_trains_from_an_hf_checkpoint_on_bridge_and_the_four_corpora(
  corpora, oxe, demo_dir, checkpoint, tmp_path, capsys
):
  config = full_recipe(_option_arg(corpora), oxe, demo_dir, checkpoint, tmp_path / "cache")
  records = train.train(config, str(tmp_path / "run"), printer=QUIET)
  losses = [r["loss"] for r in records if "loss" in r]
  assert [r["step"] for r in records if "loss" in r] == [1, 2] and np.all(np.isfinite(losses))
  saved = json.load(open(tmp_path / "run" / "config.json"))
  assert saved["model"]["image_size"] == 48 and saved["model"]["llm"] == dict(checkpoint[1].llm)
  assert [e["name"] for e in saved["data"]["vl"]] == list(CORPORA)

  # training's own conversions: each printed where it went (the cache) and what it holds
  out = capsys.readouterr().out
  cache = tmp_path / "cache"
  (robot_dir,) = (cache / "converted").iterdir()
  assert f"converting robot dataset 'bridge' ({oxe}/bridge_dataset/1.0.0, split train) -> {robot_dir}" in out
  assert "robot dataset 'bridge': 25 episodes" in out
  for name, examples in EXAMPLES.items():
    (vl_dir,) = (cache / "converted_vl").glob(f"{name}-*")
    assert f"converting VL corpus {name!r}" in out and f"-> {vl_dir}" in out
    assert f"{examples} examples from" in out
    assert convert_vl.finished(str(vl_dir))["num_examples"] == examples
    assert convert_vl.finished(str(vl_dir))["skipped"] == []


def test_a_corpus_folder_without_its_layout_fails_before_any_work(corpora, oxe, demo_dir, checkpoint, tmp_path):
  roots = dict(corpora, vqasynth=str(tmp_path / "empty"), robopoint=corpora["llava"])
  (tmp_path / "empty").mkdir()
  config = full_recipe(_option_arg(roots), oxe, demo_dir, checkpoint, tmp_path / "cache")
  t = time.perf_counter()
  with pytest.raises(preflight.SetupError) as error:
    train.train(config, str(tmp_path / "run"), printer=QUIET, dry_run=True)
  assert time.perf_counter() - t < 30
  vqasynth, robopoint = error.value.problems
  assert vqasynth.startswith(
    f"option vqasynth={tmp_path / 'empty'}: {tmp_path / 'empty'} holds no data/train-*.parquet"
  )
  assert "VQASynth" in vqasynth and "columns image, messages" in vqasynth and "vqasynth=DIR" in vqasynth
  assert robopoint.startswith(f"option robopoint={corpora['llava']}: ") and "robopoint_1432k.json" in robopoint
  assert not (tmp_path / "cache").exists() and not (tmp_path / "run").exists()


def test_co_training_without_corpora_names_the_options(oxe, demo_dir, checkpoint, tmp_path):
  config = full_recipe("full,mixture=bridge", oxe, demo_dir, checkpoint, tmp_path / "cache")
  t = time.perf_counter()
  with pytest.raises(prepare.DataConfigError) as error:
    train.train(config, str(tmp_path / "run"), printer=QUIET, dry_run=True)
  assert time.perf_counter() - t < 30
  message = str(error.value)
  assert message.startswith("data.robot_fraction=0.5 < 1 (co-training) but config.data.vl is empty")
  assert "--config=configs/pi0_plus.py:full,llava=DIR,vqasynth=DIR,onevision=DIR,robopoint=DIR" in message
  assert "--config.data.robot_fraction=1" in message
  assert not (tmp_path / "cache").exists()


def test_the_readme_command_parses_the_corpus_options(corpora, tmp_path):
  """The options on the command line (ml_collections' `path:arg`), one folder lacking its layout: exit 2 in
  seconds, one line naming the option, nothing written."""
  roots = dict(corpora, onevision=str(tmp_path))
  result = subprocess.run(
    [
      sys.executable,
      "-m",
      "genvla_jax.train",
      f"--config=configs/pi0_plus.py:{_option_arg(roots)}",
      f"--workdir={tmp_path / 'run'}",
      f"--config.data.rlds_root={os.path.dirname(os.path.dirname(BRIDGE_SAMPLE))}",
      f"--config.data.cache_dir={tmp_path / 'cache'}",
      f"--config.tokenizer.path={tmp_path / 'no_tokenizer.model'}",
      "--dry_run",
    ],
    cwd=ROOT,
    env=dict(os.environ, PYTHONPATH=ROOT, JAX_PLATFORMS="cpu"),
    capture_output=True,
    text=True,
    timeout=120,
    check=False,
  )
  assert result.returncode == 2, result.stderr
  assert f"option onevision={tmp_path}: {tmp_path} holds no */train-*.parquet" in result.stderr
  assert "tokenizer not found" in result.stderr and "Traceback" not in result.stderr
  assert not (tmp_path / "run").exists() and not (tmp_path / "cache").exists()


def test_converted_directories_are_read_as_they_are(corpora, oxe, demo_dir, checkpoint, tmp_path):
  """`data.convert --out=DIR` as a robot entry's path and `convert_vl --out=DIR` as a VL entry's: the dry run
  and the data preparation read them, and nothing is converted into the cache."""
  robot_dir, vl_dir = tmp_path / "bridge_steps", tmp_path / "llava_vl"
  convert.convert(str(oxe / "bridge_dataset" / "1.0.0"), "bridge_dataset", "train", str(robot_dir))
  convert_vl.convert_vl(f"{corpora['llava']}/chat.json", "llava_json", str(vl_dir))
  config = full_recipe("full,mixture=bridge", oxe, demo_dir, checkpoint, tmp_path / "cache")
  config.data.robot = [dict(name="bridge_dataset", path=str(robot_dir), split="train", weight=1.0)]
  config.data.vl = [dict(name="llava", path=str(vl_dir), format="llava_json", weight=1.0)]
  (plan,) = train.train(config, str(tmp_path / "run"), printer=QUIET, dry_run=True)
  assert plan["batch"] is not None  # one real batch, read from the converted directories
  assert [(d["name"], d["converted"]) for d in plan["data"]["datasets"]] == [("bridge_dataset", True), ("llava", True)]
  assert not (tmp_path / "cache" / "converted").exists() and not (tmp_path / "cache" / "converted_vl").exists()

  lines = []
  prepared = prepare.prepare(config.data, printer=lambda line, **_: lines.append(line))
  assert [r.converted_dir for r in prepared.robot] == [str(robot_dir)] and prepared.action_dim == 7
  assert [v.converted_dir for v in prepared.vl] == [str(vl_dir)] and prepared.vl[0].meta["num_examples"] == 4
  assert lines == [
    f"robot dataset 'bridge_dataset': 25 episodes, {prepared.robot[0].meta['num_steps']} steps in {robot_dir} "
    "(converted before: read as it is)",
    f"VL corpus 'llava': 4 examples in {vl_dir} (converted before: read as it is)",
  ]
  assert not (tmp_path / "cache" / "converted").exists() and not (tmp_path / "cache" / "converted_vl").exists()

  config.data.robot = [dict(name="bridge", path=str(robot_dir), split="val", weight=1.0)]  # not this split
  (problem,) = prepare.source_problems(config.data)
  assert problem.startswith(f"config.data.robot entry 'bridge': path={robot_dir} is a conversion of 'bridge' split")
  assert "--split=val" in problem


def test_large_corpora_convert_side_by_side(corpora, tmp_path, monkeypatch):
  """VL corpora of PARALLEL_MIN_BYTES or more convert in processes, one per corpus, each printing where."""
  monkeypatch.setattr(prepare, "PARALLEL_MIN_BYTES", 0)
  config = pi0_plus.get_config(f"full,llava={corpora['llava']},robopoint={corpora['robopoint']}")
  config.data.cache_dir = str(tmp_path / "cache")
  lines = []
  vl_sets = prepare.prepare_vls(config.data, printer=lambda line, **_: lines.append(line))
  assert [v.meta["num_examples"] for v in vl_sets] == [EXAMPLES["llava"], EXAMPLES["robopoint"]]
  assert "converting 2 VL corpora in 2 processes" in lines
  assert [line.split(" (")[0] for line in lines if line.startswith("VL corpus")] == [
    "VL corpus 'llava': 4 examples in " + vl_sets[0].converted_dir,
    "VL corpus 'robopoint': 3 examples in " + vl_sets[1].converted_dir,
  ]
