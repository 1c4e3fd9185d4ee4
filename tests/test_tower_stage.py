"""Stage 1 of the small VLM (training/tower_stage.py, tools/pretrain_tower.py): patch targets from class maps,
the loss going down on a generated corpus, the HF start it writes (trained tower, fresh rest) and its reuse."""

import json
import os

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from genvla_jax import config_lib
from genvla_jax.data import vl_corpus
from genvla_jax.models import build, surgery
from genvla_jax.pretrained import api
from genvla_jax.tools import pretrain_tower
from genvla_jax.training import tower_stage

SIZE = 32


def test_patch_targets_mark_every_factor_in_each_patch():
  cls = vl_corpus.CLASSES.index
  classes = np.zeros((2, 16, 16), np.uint8)
  classes[:, 1, 1] = cls("red cube")  # top-left patch: one pixel
  classes[:, 0:9, 12] = cls("pink ball")  # top-right patch and (one pixel) bottom-right
  classes[:, 15, 0] = cls("gripper")  # bottom-left
  classes[:, 14, 14] = cls("drawer")  # bottom-right
  drawer_open, gripper_closed = jnp.asarray([True, False]), jnp.asarray([False, True])
  t = np.asarray(tower_stage.patch_targets(jnp.asarray(classes), drawer_open, gripper_closed, 8))
  assert t.shape == (2, 4, len(tower_stage.FACTORS))
  names = [[sorted(tower_stage.FACTORS[f] for f in np.flatnonzero(t[b, p])) for p in range(4)] for b in range(2)]
  assert names[0] == [
    ["cube", "other", "red"],
    ["ball", "other", "pink"],
    ["gripper", "other"],
    ["ball", "drawer", "drawer open", "other", "pink"],
  ]
  assert names[1][2] == ["gripper", "gripper closed", "other"] and names[1][3] == ["ball", "drawer", "other", "pink"]
  cols, shapes = slice(tower_stage.FIRST_COLOUR, tower_stage.FIRST_SHAPE), slice(tower_stage.FIRST_SHAPE, None)
  assert tower_stage._objects(t > 0, cols, shapes)[0] == {("red", "cube"), ("pink", "ball")}


@pytest.fixture(scope="module")
def stage_config(tmp_path_factory):
  root = tmp_path_factory.mktemp("tower")
  model = dict(
    image_size=SIZE,
    img=dict(patch_size=8, width=32, depth=1, mlp_dim=64, num_heads=2),
    llm=dict(width=32, depth=1, mlp_dim=64, num_heads=2, num_kv_heads=1, head_dim=16, vocab_size=320),
  )
  c = ml_collections.ConfigDict()
  c.seed = 0
  c.model = config_lib.base_config("paligemma_224").model.to_dict()
  c.model.update(dual_encoder=False, **model)
  c.corpus_dir = str(root / "corpus")
  c.corpus = dict(num_train=96, num_heldout=16, image_size=SIZE, seed=3, vocab_size=320)
  c.out = str(root / "start")
  c.stage = dict(steps=30, batch_size=8, lr=3e-3, warmup_steps=3, seed=0, eval_images=4, log_every=10)
  return c


def test_stage_learns_writes_an_hf_start_and_is_reused(stage_config):
  lines = []
  done = pretrain_tower.run(stage_config, printer=lambda *a, **k: lines.append(a[0]))
  losses = [float(line.split("dense ")[1].split()[0]) for line in lines if line.startswith("step ")]
  assert len(losses) == 3 and losses[-1] < losses[0], lines
  scores = done["scores"]
  assert set(scores) == {"heldout", "train"} and 0.0 <= scores["train"]["colour_patch_f1"] <= 1.0
  with open(f"{stage_config.out}/DONE.json") as f:
    assert json.load(f) == json.loads(json.dumps(done))
  model = build.from_config(stage_config.model)
  params = api.load("hf", stage_config.out, model, SIZE)
  fresh = surgery.init_params(model, jax.random.PRNGKey(stage_config.seed), SIZE)
  # the tower was trained; the projector and decoder are the fresh initialisation of config.seed
  tower_moved = jax.tree.leaves(
    jax.tree.map(lambda a, b: float(np.abs(np.asarray(a) - b).max()), params["img"], fresh["img"])
  )
  assert max(tower_moved) > 1e-3
  for part in ("projector", "llm"):
    jax.tree.map(
      lambda a, b: np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=1e-6), params[part], fresh[part]
    )
  assert {"tokenizer.model", "tokenizer_config.json"} <= set(os.listdir(stage_config.out))
  # the same config again: reused, nothing trained
  again = []
  pretrain_tower.run(stage_config, printer=lambda *a, **k: again.append(a[0]))
  assert len(again) == 1 and again[0].startswith("tower stage: reusing")


def test_missing_scene_annotations_name_the_fix(tmp_path):
  with pytest.raises(FileNotFoundError, match="predates class maps"):
    tower_stage.load_split(str(tmp_path), "train")
