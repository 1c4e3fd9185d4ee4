"""Configs: variants, D/S/C switches, errors on unknown variants / options / keys."""

import pytest

from configs import pi0_plus
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
  "arg, message",
  [
    ("tiny", "unknown config variant"),
    ("demo,ablation=DX", "unknown ablation letters"),
    ("demo,colour=red", "unknown config option"),
  ],
)
def test_bad_config_arguments(arg, message):
  with pytest.raises(ValueError, match=message):
    pi0_plus.get_config(arg)


def test_unknown_key_is_an_error():
  c = pi0_plus.get_config("demo")
  with pytest.raises(AttributeError):
    c.model.dual_encoderr = False
  with pytest.raises(AttributeError):
    _ = c.train.num_steps
