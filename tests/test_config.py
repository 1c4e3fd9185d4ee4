"""Configs: variants, D/S/C switches, errors on unknown variants / options / keys."""

import copy
import importlib
import json
import os
import subprocess
import sys
import time

import pytest

from conftest import ROOT
from configs import pi0_plus
from genvla_jax import config_lib, config_schema
from genvla_jax.data import demo


def test_full_config_names_the_real_sizes():
  c = pi0_plus.get_config()
  assert c.model.img.to_dict() == dict(patch_size=14, width=1152, depth=27, mlp_dim=4304, num_heads=16, posemb_std=None)
  assert (
    c.model.llm.vocab_size,
    c.model.llm.width,
    c.model.llm.depth,
    c.model.llm.num_kv_heads,
    c.model.llm.head_dim,
  ) == (257152, 2048, 18, 1, 256)
  assert c.model.dual_encoder and c.tokenizer.action == "string" and c.data.robot_fraction == 0.5
  assert c.model.llm.sliding_window is None and c.model.image_size == 224


def test_paligemma2_backbone_sizes():
  c = pi0_plus.get_config("full,backbone=paligemma2_448")
  llm = c.model.llm
  assert (llm.width, llm.depth, llm.mlp_dim, llm.num_heads, llm.num_kv_heads, llm.head_dim) == (
    2304,
    26,
    9216,
    8,
    4,
    256,
  )
  assert (llm.attn_logits_softcap, llm.final_logits_softcap, llm.post_norms) == (50.0, 30.0, True)
  assert llm.sliding_window == 4096 and c.model.image_size == 448
  with pytest.raises(ValueError, match="backbone"):
    pi0_plus.get_config("full,backbone=paligemma3")


@pytest.mark.parametrize("letters", ["", "D", "S", "C", "DS", "SC", "DC", "DSC"])
def test_ablation_switches(letters):
  c = pi0_plus.get_config(f"demo,ablation={letters}")
  assert c.model.dual_encoder == ("D" in letters)
  assert c.tokenizer.action == ("string" if "S" in letters else "bins")
  assert c.data.robot_fraction == (0.5 if "C" in letters else 1.0)


def test_demo_paths_follow_demo_dir():
  c = pi0_plus.get_config("demo")
  c.data.demo_dir = "/somewhere/else"
  paths = demo.demo_paths("/somewhere/else")
  assert c.tokenizer.path == paths.tokenizer
  assert f"{c.data.rlds_root}/{c.data.robot[0]['path']}" == paths.rlds_dir
  assert f"{c.data.vl_root}/{c.data.vl[0]['path']}" == paths.vl_train_json


@pytest.mark.parametrize(
  "config_file, arg, root, derived",
  [
    ("pi0_plus", "tabletop", "sim_dir", ["tokenizer.path", "data.rlds_root", "data.vl_root"]),
    ("pi0_baseline", "demo", "demo_dir", ["tokenizer.path", "data.rlds_root", "data.instruction_aug.path"]),
    ("pi0_baseline", "tabletop", "sim_dir", ["tokenizer.path", "data.rlds_root", "data.instruction_aug.path"]),
    ("openvla", "demo", "demo_dir", ["tokenizer.path", "data.rlds_root", "data.vl_root"]),
  ],
)
def test_data_paths_follow_their_root(config_file, arg, root, derived):
  """One flag (--config.data.demo_dir / sim_dir) moves every path derived from it."""
  import importlib

  import functools

  c = importlib.import_module(f"configs.{config_file}").get_config(arg)
  setattr(c.data, root, "/moved")
  for k in derived:
    assert functools.reduce(getattr, k.split("."), c).startswith("/moved/"), k


@pytest.mark.parametrize(
  "arg, message",
  [
    ("tiny", "unknown config variant"),
    ("demo,ablation=DX", "unknown ablation letters"),
    ("demo,colour=red", "unknown config option"),
    ("full,mixture=libero", r"reads a LeRobot dataset converted first: give .* robot_dir=OUT .*--dataset=libero"),
    ("full,mixture=bridge,robot_dir=/out", "robot_dir=/out is for the mixtures of converted LeRobot datasets"),
    ("demo,mixture=droid", r"mixture=droid is for the full variant, not 'demo' \(.*: droid_lerobot, libero, with"),
    ("demo,mixture=bridge", r"mixture=bridge is for the full variant, not 'demo'"),
    ("tabletop,mixture=libero,robot_dir=/out", r"mixture=libero is for the full variant, not 'tabletop'"),
    ("demo,mixture=libero", r"reads a LeRobot dataset converted first: give .* robot_dir=OUT"),
  ],
)
def test_bad_config_arguments(arg, message):
  with pytest.raises(ValueError, match=message):
    pi0_plus.get_config(arg)


@pytest.mark.parametrize("config_file", ["pi0_plus", "pi0_baseline", "openvla", "openvla_plus"])
def test_mixtures_of_several_cameras_set_the_cameras_and_their_count(config_file):
  """`mixture=droid`: DROID's three cameras (RLDS); `mixture=libero,robot_dir=OUT`: LIBERO's two, read from the
  finished conversion OUT as it is (an absolute path, so data.rlds_root plays no part); the one-camera mixtures
  keep the defaults (data.cameras [], model.num_cameras 1)."""
  from genvla_jax.data import registry
  from genvla_jax.models import build
  from genvla_jax.training import preflight

  get_config = importlib.import_module(f"configs.{config_file}").get_config
  droid = get_config("full,mixture=droid")
  assert droid.data.robot == [dict(name="droid", path="droid/1.0.1", split="train", weight=1.0)]
  assert list(droid.data.cameras) == ["exterior_image_1_left", "exterior_image_2_left", "wrist_image_left"]
  assert droid.model.num_cameras == 3 and build.num_image_tokens(droid.model) == 3 * 256
  assert preflight.camera_problems(droid) == []
  libero = get_config("full,mixture=libero,robot_dir=~/libero_out")
  assert libero.data.robot == [dict(name="libero", path=os.path.expanduser("~/libero_out"), split="train", weight=1.0)]
  assert list(libero.data.cameras) == ["image", "wrist_image"] and libero.model.num_cameras == 2
  for name in ("paper", "bridge", "fractal"):
    one = get_config(f"full,mixture={name}")
    assert (list(one.data.cameras), one.model.num_cameras) == ([], 1) and registry.mixture_cameras(name) == []
  assert set(registry.MIXTURE_CAMERAS) == set(registry.MIXTURES)


@pytest.mark.parametrize("config_file", ["pi0_plus", "pi0_baseline", "openvla"])
def test_the_tiny_demo_on_a_converted_lerobot_dataset(config_file):
  """`demo,mixture=libero,robot_dir=OUT`: the tiny demo model, its tokenizer and VL data, with the conversion's robot
  data and its two cameras at 64 px (the README's LIBERO-on-a-CPU command); the rest is the plain demo's."""
  get_config = importlib.import_module(f"configs.{config_file}").get_config
  plain, libero = get_config("demo"), get_config("demo,mixture=libero,robot_dir=/data/lo_steps")
  assert libero.data.robot == [dict(name="libero", path="/data/lo_steps", split="train", weight=1.0)]
  assert list(libero.data.cameras) == ["image", "wrist_image"] and libero.model.num_cameras == 2
  assert (libero.model.image_size, libero.tokenizer.max_text_len) == (64, 128)
  assert (plain.model.image_size, plain.tokenizer.max_text_len) == (32, 40)
  changed = {"data.robot", "data.cameras", "model.num_cameras", "model.image_size", "tokenizer.max_text_len"}
  for part in ("data", "model", "tokenizer", "optimizer", "train"):
    a, b = plain.to_dict()[part], libero.to_dict()[part]
    assert {f"{part}.{k}" for k in a if a[k] != b[k]} <= changed, part


def test_unknown_key_is_an_error():
  c = pi0_plus.get_config("demo")
  with pytest.raises(AttributeError):
    c.model.dual_encoderr = False
  with pytest.raises(AttributeError):
    _ = c.train.num_steps


def test_resolved_values_of_every_config_are_pinned():
  """Every config file x variant x option resolves to the values pinned in
  tests/fixtures/resolved_configs.json (generated from the code before the config refactor; see
  tests/config_cases.py): moving size tables and helpers around changes no experiment."""
  from tests import config_cases

  with open(os.path.join(os.path.dirname(__file__), "fixtures", "resolved_configs.json")) as f:
    pinned = json.load(f)
  now = config_cases.all_resolved()
  assert sorted(now) == sorted(pinned)
  changed = [case for case in pinned if now[case] != pinned[case]]
  assert not changed, f"resolved values changed for {changed}"


# ---- upgrade(): configs saved by older runs ----


def _saved(arg="demo") -> dict:
  return json.loads(pi0_plus.get_config(arg).to_json())


def test_upgrade_fills_fields_an_older_run_lacks():
  full = _saved()
  older = copy.deepcopy(full)
  del older["inference"]  # whole sections added later
  del older["flow"]
  del older["tokenizer"]["prompt_separator"]  # single fields, at every depth
  del older["model"]["action_expert"]["use_state"]
  del older["data"]["augment"]["saturation"]
  del older["train"]["drift"]
  upgraded = config_lib.upgrade(older)
  assert json.loads(upgraded.to_json()) == full
  with pytest.raises(AttributeError):  # locked, read by attribute
    upgraded.tokenizer.prompt_separatr = "\n"
  assert config_lib.upgrade(upgraded).to_dict() == upgraded.to_dict()  # idempotent; a ConfigDict is fine


def test_upgrade_keeps_every_saved_value():
  saved = _saved()
  saved["tokenizer"]["max_text_len"] = 7  # differs from the default (128): kept
  del saved["model"]["img"]["posemb_std"]  # architecture dicts are values: not filled from any table
  saved["model"]["llm"]["norm_eps"] = 1e-5  # options beyond the size table stay
  saved["data"]["robot"] = [dict(name="bridge", path="bridge/1.0.0", split="train", weight=2.0)]
  saved["data"]["sim_record"] = dict(env="tabletop")
  upgraded = config_lib.upgrade(saved)
  assert upgraded.tokenizer.max_text_len == 7
  assert upgraded.model.img.to_dict() == saved["model"]["img"] and "posemb_std" not in upgraded.model.img
  assert upgraded.model.llm.norm_eps == 1e-5
  assert upgraded.data.robot == saved["data"]["robot"] and upgraded.data.sim_record.to_dict() == {"env": "tabletop"}


def test_upgrade_keeps_unknown_keys_and_rewrites_the_first_vl_form():
  saved = _saved()
  saved["tokenizer"]["retired_option"] = 3  # a field this code no longer has: kept, never read
  saved["data"]["vl"] = [dict(name="llava", json="llava/chat.json", weight=0.5)]  # the first VL entry form
  upgraded = config_lib.upgrade(saved)
  assert upgraded.tokenizer.retired_option == 3
  assert upgraded.data.vl == [dict(name="llava", path="llava/chat.json", format="llava_json", weight=0.5)]


def test_resume_of_a_run_saved_before_a_field_existed(tmp_path, demo_dir, cache_dir):
  """run_dir.check_config reads config.json through upgrade(): a field the run's config lacks compares
  as its default (resumes), a changed value or a key this code does not know is still named."""
  from conftest import tiny_config
  from genvla_jax.training import run_dir

  requested = json.loads(tiny_config(demo_dir, cache_dir).to_json())
  (tmp_path / "checkpoints" / "3").mkdir(parents=True)
  older = copy.deepcopy(requested)
  del older["inference"], older["tokenizer"]["prompt_separator"], older["data"]["augment"]["saturation"]
  (tmp_path / "config.json").write_text(json.dumps(older))
  assert run_dir.check_config(str(tmp_path), requested, printer=lambda *a, **k: None)
  older["tokenizer"]["retired_option"] = 3
  (tmp_path / "config.json").write_text(json.dumps(older))
  with pytest.raises(run_dir.RunDirError, match=r"tokenizer.retired_option: 3 -> \"<absent>\""):
    run_dir.check_config(str(tmp_path), requested)
  del older["tokenizer"]["retired_option"]
  requested["tokenizer"]["prompt_separator"] = " "  # the run had the default "\n"
  (tmp_path / "config.json").write_text(json.dumps(older))
  with pytest.raises(run_dir.RunDirError, match=r"tokenizer.prompt_separator: \"\\n\" -> \" \""):
    run_dir.check_config(str(tmp_path), requested)


def test_schema_mesh_axes_are_the_mesh_axes():
  from genvla_jax.training import sharding

  assert config_schema.MESH_AXES == sharding.MESH_AXES


def test_old_vl_entry_form_in_a_config_is_named():
  from genvla_jax.data import prepare

  config = pi0_plus.get_config("demo")
  config.data.vl = [dict(name="llava", json="llava/chat.json", weight=1.0)]
  with pytest.raises(prepare.DataConfigError, match=r"data.vl\[0\] has unknown key 'json'.*lacks path, format"):
    prepare.prepare(config.data)


# ---- list-valued fields from the command line (--set KEY=JSON) ----


@pytest.mark.parametrize(
  "override, message",
  [
    ("data.vll=[]", "--set data.vll: no key 'vll' in data; did you mean data.vl?"),
    ('data.vl=[{"name": "a", "pth": "x.json", "format": "llava_json", "weight": 1}]', "unknown key 'pth'"),
    ('data.vl={"name": "a"}', "--set data.vl: needs a JSON list, got a JSON object"),
    ("data.vl=[x.json]", "--set data.vl: the value is neither JSON nor a Python literal"),
    ('data.robot=[{"name": "bridge"}]', r"data.robot\[0\] \('bridge'\) lacks path, split, weight"),
    ('mesh.rules=[["llm/.*", ["tensor"]]]', "unknown mesh axis 'tensor'"),
    ('mesh.rules=[["llm/(", [null]]]', "bad regex"),
    ('data.augment={"enabled": false}', "data.augment is a group of fields"),
    ('data.batch_size="8"', "needs a number, got a JSON string"),
    ("data.vl", "give KEY=VALUE"),
    ("data.prompt.text=x", "data.prompt has no fields"),
  ],
)
def test_set_errors_name_the_key(override, message):
  with pytest.raises(config_lib.ConfigOverrideError, match=message):
    config_lib.set_fields(pi0_plus.get_config("demo"), [override])


def test_set_list_fields_and_architecture_dicts():
  config = pi0_plus.get_config("demo")
  vl = [
    dict(name="a", path="a.json", format="llava_json", weight=1.0),
    dict(name="b", path="b/*.parquet", format="parquet", weight=3.0),
  ]
  config_lib.set_fields(
    config,
    [
      f"data.vl={json.dumps(vl)}",
      'mesh.rules=[["llm/layers/mlp/linear$", [null, "model", ["data", "fsdp"]]]]',
      'model.fused_img={"patch_size": 8, "width": 64, "depth": 2, "mlp_dim": 256, "num_heads": 4}',
      "data.robot_fraction=0.25",
    ],
  )
  assert config.data.vl == vl and config.data.robot_fraction == 0.25
  assert config.mesh.rules == [["llm/layers/mlp/linear$", [None, "model", ["data", "fsdp"]]]]
  assert config.model.fused_img.width == 64
  # a Python literal, and plain text for a string field (as tools/ablate.py's --set always took them)
  config_lib.set_fields(
    config, ["mesh.rules=[('img/.*', (None, 'fsdp'))]", "data.rlds_root=/data/oxe", "data.prompt=7"]
  )
  assert config.mesh.rules == [("img/.*", (None, "fsdp"))]
  assert (config.data.rlds_root, config.data.prompt) == ("/data/oxe", "7")


def _train_cli(workdir, demo_dir, cache_dir, *extra):
  env = dict(
    os.environ,
    PYTHONPATH=ROOT,
    JAX_PLATFORMS="cpu",
    XLA_FLAGS="--xla_force_host_platform_device_count=1",
    JAX_COMPILATION_CACHE_DIR=os.environ.get("GENVLA_TEST_XLA_CACHE", "/tmp/genvla_xla_cache"),
  )
  args = [
    sys.executable,
    "-m",
    "genvla_jax.train",
    "--config=configs/pi0_plus.py:demo",
    f"--workdir={workdir}",
    "--config.train.steps=1",
    "--config.data.batch_size=8",
    f"--config.data.demo_dir={demo_dir}",
    f"--config.data.cache_dir={cache_dir}",
    *extra,
  ]
  return subprocess.run(args, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600, check=False)


def test_list_fields_set_on_the_train_command_line(tmp_path, demo_dir, cache_dir):
  """VL corpora, the robot mixture and partition rules given as --set KEY=JSON reach the run (its
  config.json, the converted corpora); a mistyped key fails in seconds with one line, creating nothing."""
  vl = [
    dict(name="cli_vqa_a", path="train.json", format="llava_json", weight=1.0),
    dict(name="cli_vqa_b", path="train.json", format="llava_json", weight=2.0),
  ]
  robot = [dict(name="demo_targets", path="demo_targets/1.0.0", split="train", weight=3.0)]
  rules = [["llm/embedder/input_embedding$", [None, "fsdp"]]]
  workdir = tmp_path / "run"
  result = _train_cli(
    workdir,
    demo_dir,
    cache_dir,
    f"--set=data.vl={json.dumps(vl)}",
    f"--set=data.robot={json.dumps(robot)}",
    "--set",
    f"mesh.rules={json.dumps(rules)}",
  )
  assert result.returncode == 0, result.stderr[-3000:]
  saved = json.loads((workdir / "config.json").read_text())
  assert (saved["data"]["vl"], saved["data"]["robot"], saved["mesh"]["rules"]) == (vl, robot, rules)
  converted = os.listdir(cache_dir / "converted_vl")
  assert all(any(n.startswith(f"{v['name']}-") for n in converted) for v in vl), converted

  missing = tmp_path / "mistyped"
  started = time.perf_counter()
  result = _train_cli(missing, demo_dir, cache_dir, f"--set=data.vl={json.dumps(vl)}", "--set=data.vll=[]")
  assert result.returncode == 2
  assert result.stderr.strip().splitlines() == ["error: --set data.vll: no key 'vll' in data; did you mean data.vl?"]
  bad_entry = [dict(vl[0], wieght=1.0)]
  result = _train_cli(missing, demo_dir, cache_dir, f"--set=data.vl={json.dumps(bad_entry)}")
  assert result.returncode == 2
  assert result.stderr.strip().splitlines() == [
    "error: --set data.vl: data.vl[0] has unknown key 'wieght' (did you mean 'weight'?)"
  ]
  assert time.perf_counter() - started < 60  # two interpreter starts, no data, no compile
  assert not missing.exists()


def test_policies_with_vlm_start_share_the_pretrained_architecture():
  """vlm=pretrained|scratch: the architecture, tokenizer and corpus of configs/pretrain_vlm.py; pretrained also
  its export's weights; the default (vlm=none) configs are the pinned ones above."""
  from configs import pi0_baseline, pretrain_vlm

  vlm = pretrain_vlm.get_config()
  for config_file in (pi0_plus, pi0_baseline):
    for start in ("pretrained", "scratch"):
      c = config_file.get_config(f"tabletop,vlm={start}")
      assert (c.model.img, c.model.llm, c.model.image_size) == (vlm.model.img, vlm.model.llm, vlm.model.image_size)
      assert c.data.corpus == vlm.data.corpus and c.data.corpus_dir == vlm.data.corpus_dir
      assert c.pretrained.path == (config_lib.VLM_DIR if start == "pretrained" else "")
      assert c.tokenizer.path.endswith("/tokenizer.model")
  assert pi0_plus.get_config("tabletop,vlm=pretrained,ablation=C").data.vl[0]["name"] == "tabletop_corpus"
  with pytest.raises(ValueError, match="tabletop"):
    pi0_plus.get_config("demo,vlm=pretrained")


def test_robot_view_option_co_trains_its_questions_beside_the_corpus():
  """robot_view=N: a second VL entry (the corpus folder's robot_view split) at the corpus' weight, N questions
  asked of vl_corpus.ensure; without a VLM start it is an error; the default adds nothing."""
  from genvla_jax.data import vl_corpus

  c = pi0_plus.get_config("tabletop,vlm=pretrained,robot_view=8000")
  assert [e["name"] for e in c.data.vl] == ["tabletop_corpus", "tabletop_robot_view"]
  assert c.data.vl[1]["path"] == f"{vl_corpus.ROBOT_VIEW_DIR}/robot_view.json" and c.data.vl[1]["weight"] == 1.0
  assert c.data.corpus.robot_view == 8000 and c.data.robot_fraction == 0.5
  assert "robot_view" not in pi0_plus.get_config("tabletop,vlm=pretrained").data.corpus
  with pytest.raises(ValueError, match="robot_view"):
    pi0_plus.get_config("tabletop,robot_view=8000")
