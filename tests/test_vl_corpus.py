"""The generated vision-language corpus (data/vl_corpus.py) and what it added to the tabletop
(eval/envs/tabletop.py): robot episodes unchanged bit for bit, condition pools disjoint, the
held_out_conditions protocol, camera projection against a segmentation render, answers against the
scene's ground truth, held-out wordings kept out of train, determinism, convert_vl reading the output,
--out provenance."""

import collections
import colorsys
import hashlib
import json
import os
import re
import subprocess
import sys

import numpy as np
from PIL import Image
import pytest

from genvla_jax.data import convert_vl, sim_record, vl_corpus
from genvla_jax.eval.envs import tabletop

import mujoco  # after tabletop (it chooses the EGL backend)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SIZE = 48
NUM_TRAIN, NUM_HELDOUT = 120, 40

# sha256 (first 16 hex digits) of (images, states + actions + instruction + outcome) of expert rollouts at
# 48 px, computed with the code of commit 82c4113757e20093c81379d05cdca55ba281e8cf (before the props,
# condition pools and held_out_conditions were added). States are renderer-independent; images are those
# of MuJoCo 3.3.0 rendering through Mesa's EGL (llvmpipe), as on the project's CPU machines.
ROBOT_ROLLOUTS = {
  ("pick_object", 0, "visual_matching"): ("8bdffd28c728fa97", "8539386993f544bf"),
  ("move_near", 5, "visual_matching"): ("c074ad25cba17636", "0ab8bb55a68510d5"),
  ("move_near", 0, "variant_aggregation"): ("98df1b9b68c06f5b", "93da571517f0b66e"),  # background
  ("pick_object", 2, "variant_aggregation"): ("d1f1a63888eb08d7", "ff0fbdc174a6d821"),  # camera
  ("open_drawer", 1, "variant_aggregation"): ("4cb56d9ddb05f89c", "c6eca1a5001815d2"),  # table
  ("close_drawer", 1, "variant_aggregation"): ("38cca392b2c35dfc", "cedd4dbcb6ea0a6f"),  # lighting
  ("move_near", 1, "variant_aggregation"): ("245f9e0e6eb3fbde", "4bcc1723866f20fe"),  # distractors
  ("open_drawer", 3, "background_masking"): ("a00dc3886ad0caf9", "b1f375d9d9764e9a"),
  ("close_drawer", 2, "paraphrase"): ("d3a62a7e11988d29", "06297fe58e70afc6"),
}


@pytest.fixture(scope="module")
def env():
  e = tabletop.TabletopEnv(image_size=SIZE)
  yield e
  e.close()


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
  out = tmp_path_factory.mktemp("vl_corpus") / "a"
  meta = vl_corpus.generate(str(out), NUM_TRAIN, NUM_HELDOUT, image_size=SIZE, seed=3, printer=lambda *a, **k: None)
  return out, meta


def _entries(corpus, split):
  with open(corpus[0] / f"{split}.json") as f:
    return json.load(f)


def _qa(entry):
  return entry["conversations"][0]["value"].removeprefix("<image>\n"), entry["conversations"][1]["value"]


# ----- the robot environment ---------------------------------------------------------------------------
def _rollout_sha256(env, task, seed, protocol):
  images, states = hashlib.sha256(), hashlib.sha256()
  obs, done = env.reset(task, seed, protocol), False
  expert = tabletop.Expert(env)
  states.update(obs["instruction"].encode())
  while True:
    images.update(obs["image"].tobytes())
    states.update(obs["state"].tobytes())
    if done:
      break
    action = expert.act()
    states.update(action.tobytes())
    obs, _, done = env.step(action)
  states.update(f"{env.episode.success} {env.episode.steps} {env.episode.variant}".encode())
  return images.hexdigest()[:16], states.hexdigest()[:16]


def test_robot_episodes_are_bit_identical_to_before_the_props(env):
  # first leave the env in a corpus scene under held-out conditions: reset must undo all of it
  scene, _ = vl_corpus._scene_for(env, 0, "heldout", 0)
  assert len(scene.objects) >= 2
  env.reset("move_near", 7, "held_out_conditions")
  for (task, seed, protocol), expected in ROBOT_ROLLOUTS.items():
    assert _rollout_sha256(env, task, seed, protocol) == expected, (task, seed, protocol)
  assert env.model.nq == 4 * 7 + 2 * 7 + 1 + 2 and env.data.mocap_pos.shape == (1 + len(tabletop.PROPS), 3)


def test_held_out_conditions_protocol(env):
  assert "held_out_conditions" in tabletop.PROTOCOLS
  base = env.reset("pick_object", 4, "visual_matching")
  cubes = {c: env.cube(c) for c in tabletop.COLORS}
  shifted = env.reset("pick_object", 4, "held_out_conditions")
  assert not np.array_equal(shifted["image"], base["image"]) and shifted["instruction"] == base["instruction"]
  for c in tabletop.COLORS:  # the same scene (1 mm: the 3 settle steps, a physical tolerance)
    np.testing.assert_allclose(env.cube(c)[:2], cubes[c][:2], atol=1e-3)
  again = env.reset("pick_object", 4, "held_out_conditions")
  np.testing.assert_array_equal(again["image"], shifted["image"])
  seen = set()
  for seed in range(30):
    env.reset("move_near", seed, "held_out_conditions")
    assert set(env.conditions) == {env.episode.variant} and env.episode.protocol == "held_out_conditions"
    seen.add(env.episode.variant)
    if env.episode.variant == "distractors":
      props = [(o["shape"], o["colour"]) for o in env.table_objects() if o["shape"] != "cube"]
      assert props and set(props) <= set(tabletop.HELD_OUT_PROPS)
  assert seen == set(tabletop.FACTORS)
  for task in tabletop.TASKS:  # the expert (privileged state) is unaffected by appearance
    for seed in range(2):
      obs, done, expert = env.reset(task, seed, "held_out_conditions"), False, tabletop.Expert(env)
      while not done:
        obs, _, done = env.step(expert.act())
      assert env.episode.success, (task, seed, env.episode.variant)
  with pytest.raises(ValueError, match="unknown protocol"):
    env.reset("pick_object", 0, "held_out")
  with pytest.raises(ValueError, match="unknown condition pool"):
    env.apply_conditions(np.random.default_rng(0), "narrow")


def _signatures(env, pool, n=80):
  """What apply_conditions did, read back from the MuJoCo model: per factor, n samples."""
  m, rng, out = env.model, np.random.default_rng(11), collections.defaultdict(list)
  hue = lambda rgb: colorsys.rgb_to_hsv(*rgb[:3])[0]
  floor, wall, table = (mujoco.mj_name2id(m, mujoco.mjtObj.mjOBJ_GEOM, g) for g in ("floor", "wall", "table"))
  for _ in range(n):
    env.clear_scene()
    env.apply_conditions(rng, pool)
    out["background"] += [hue(m.geom_rgba[floor]), hue(m.geom_rgba[wall])]
    matid = m.geom_matid[table]
    material = mujoco.mj_id2name(m, mujoco.mjtObj.mjOBJ_MATERIAL, matid)
    out["table"].append((material, hue(m.mat_rgba[matid]) if material == "table_plain" else None))
    out["tint"].append(colorsys.rgb_to_hsv(*m.light_diffuse[0])[1])
    out["offset"].append(np.linalg.norm(m.cam_pos[0] - tabletop.CAMERA["pos"]))
    out["fovy"].append(float(m.cam_fovy[0]))
    out["props"].append({(o["shape"], o["colour"]) for o in env.table_objects()})
  return out


def test_condition_pools_are_disjoint_on_every_factor(env):
  wide, held = _signatures(env, "wide"), _signatures(env, "held_out")
  assert max(wide["background"]) < min(held["background"])
  plain = lambda sig: [h for material, h in sig["table"] if material == "table_plain"]
  assert plain(wide) and plain(held) and max(plain(wide)) < min(plain(held))
  wide_materials, held_materials = {t[0] for t in wide["table"]}, {t[0] for t in held["table"]}
  assert wide_materials == {"table_plain", "table_checker", "table_grain", "table_tiles"}
  assert held_materials == {"table_plain", "table_speckled"}
  assert max(wide["tint"]) < 1e-6 and min(held["tint"]) >= 0.3 - 1e-6  # white light vs tinted light
  assert max(wide["offset"]) <= 0.05 < 0.07 <= min(held["offset"])
  assert max(wide["fovy"]) < min(held["fovy"])
  wide_props, held_props = set().union(*wide["props"]), set().union(*held["props"])
  assert len(wide_props) > 10 and not wide_props & held_props and all(held["props"])
  env.clear_scene()


def test_project_lands_on_the_object_in_a_segmentation_render(env):
  rng = np.random.default_rng(5)
  objects = [("cube", c) for c in tabletop.COLORS] + list(tabletop.PROP_SHAPES.items())
  for k in range(24):
    env.clear_scene()
    shape, _ = objects[k % len(objects)]
    xy = env.free_spot(rng, 0.05)
    if shape == "cube":
      env.place_cube(objects[k % len(objects)][1], (xy[0], xy[1], tabletop.CUBE))
    else:
      env.place_prop(shape, "orange", xy)
    env.apply_conditions(rng, ("wide", "held_out")[k % 2], ("camera",))
    env.forward()
    (obj,) = env.table_objects()
    u, v = env.project(obj["pos"])
    seg = env.segmentation()
    rows, cols = np.nonzero(seg == obj["geom"])
    assert seg[int(v * SIZE), int(u * SIZE)] == obj["geom"], (shape, u, v)
    # the centre of a convex object projects inside its silhouette, near the middle of its pixels
    assert abs(u * SIZE - (cols.mean() + 0.5)) < 1.5 and abs(v * SIZE - (rows.mean() + 0.5)) < 1.5
  with pytest.raises(ValueError, match="behind the camera"):
    env.project((0.0, -2.0, 0.5))
  env.clear_scene()


# ----- the corpus ----------------------------------------------------------------------------------------
def test_deterministic_and_reusable(corpus, tmp_path):
  out, meta = corpus
  again = vl_corpus.generate(
    str(tmp_path / "b"), NUM_TRAIN, NUM_HELDOUT, image_size=SIZE, seed=3, printer=lambda *a, **k: None
  )
  assert again == meta
  files = sorted(os.listdir(out / "images"))
  assert files == sorted(os.listdir(tmp_path / "b" / "images"))
  assert len(files) == 2 * (meta["images"]["train"] + meta["images"]["heldout"])  # image + class map
  splits = ["train.json", "heldout.json", "train_scenes.json", "heldout_scenes.json"]
  for name in splits + [f"images/{f}" for f in files]:
    assert (out / name).read_bytes() == (tmp_path / "b" / name).read_bytes(), name
  other = vl_corpus.generate(str(tmp_path / "c"), 8, 0, image_size=SIZE, seed=4, printer=lambda *a, **k: None)
  assert other["examples"] == {"train": 8, "heldout": 0}
  assert (tmp_path / "c" / "train.json").read_bytes() != (out / "train.json").read_bytes()
  assert meta["examples"] == {"train": NUM_TRAIN, "heldout": NUM_HELDOUT}
  assert meta["images"] == {
    "train": NUM_TRAIN // vl_corpus.QA_PER_IMAGE,
    "heldout": NUM_HELDOUT // vl_corpus.QA_PER_IMAGE,
  }
  for split in ("train", "heldout"):
    counts = collections.Counter(e["family"] for e in _entries(corpus, split))
    assert (
      meta["families"][split] == {f: counts[f] for f in vl_corpus.FAMILIES}
      and sum(counts.values()) == meta["examples"][split]
    )
    assert split == "heldout" or set(counts) == set(vl_corpus.FAMILIES), counts
  # an incomplete directory (no meta.json) is generated again, to the same bytes
  os.remove(tmp_path / "b" / "meta.json")
  vl_corpus.generate(str(tmp_path / "b"), NUM_TRAIN, NUM_HELDOUT, image_size=SIZE, seed=3, printer=lambda *a, **k: None)
  assert (tmp_path / "b" / "heldout.json").read_bytes() == (out / "heldout.json").read_bytes()


def test_other_settings_in_out_are_an_error(corpus, tmp_path):
  out, _ = corpus
  before = (out / "meta.json").stat().st_mtime_ns
  with pytest.raises(vl_corpus.CorpusDirError, match=r"seed 3 \(asked 0\); num_train 120 \(asked 121\)"):
    vl_corpus.generate(str(out), NUM_TRAIN + 1, NUM_HELDOUT, image_size=SIZE, seed=0)
  with pytest.raises(vl_corpus.CorpusDirError, match=r"image_size 48 \(asked 64\)"):
    vl_corpus.generate(str(out), NUM_TRAIN, NUM_HELDOUT, seed=3)
  assert (out / "meta.json").stat().st_mtime_ns == before
  (tmp_path / "notes.txt").write_text("mine")
  with pytest.raises(vl_corpus.CorpusDirError, match="other files"):
    vl_corpus.generate(str(tmp_path), 4, 0, image_size=SIZE)
  # the CLI: one-line error, exit status 2
  cmd = [sys.executable, "-m", "genvla_jax.data.vl_corpus", f"--out={out}", "--num_train=120", "--num_heldout=40"]
  result = subprocess.run(
    cmd + ["--image_size=48"], capture_output=True, text=True, cwd=ROOT, env=dict(os.environ, PYTHONPATH=ROOT)
  )
  assert result.returncode == 2 and result.stderr.strip().splitlines()[-1].startswith("error: --out"), result.stderr
  assert "seed 3 (asked 0)" in result.stderr


def test_convert_vl_reads_the_corpus(corpus, tmp_path):
  out, meta = corpus
  for split in ("train", "heldout"):
    rows = list(convert_vl.iter_llava_json(str(out / f"{split}.json")))
    assert len(rows) == meta["examples"][split]
    for source, image, pairs in rows:
      assert isinstance(image, bytes) and image[:4] == b"\x89PNG", source
      assert len(pairs) == 1 and "<image>" not in pairs[0][0] and pairs[0][1]
  converted = convert_vl.convert_vl(str(out / "train.json"), "llava_json", str(tmp_path / "converted"), on_bad="fail")
  assert converted["num_examples"] == NUM_TRAIN and not converted["skipped"]


def _words(texts):
  return {w for t in texts for w in re.findall(r"[a-z']+", t.lower())}


def test_held_out_wordings_never_in_train_and_back(corpus):
  for split in ("train", "heldout"):
    for entry in _entries(corpus, split):
      question, _ = _qa(entry)
      matches = vl_corpus.matching_templates(question)
      assert [(s, f) for s, f, _ in matches] == [(split, entry["family"])], (question, matches)
  train_q = _words(_qa(e)[0] for e in _entries(corpus, "train"))
  held_q = _words(_qa(e)[0] for e in _entries(corpus, "heldout"))
  held_only = {"box", "boxes", "orb", "tin", "pill", "dish", "items", "color"}
  assert not train_q & held_only and held_q & held_only
  # ("can" is also a verb in held-out wordings)
  assert not held_q & {"cube", "block", "ball", "sphere", "cylinder", "capsule", "plate", "disk", "colour"}
  train_templates = {t for ts in vl_corpus.TEMPLATES["train"].values() for t, _ in ts}
  held_templates = {t for ts in vl_corpus.TEMPLATES["heldout"].values() for t, _ in ts}
  assert not train_templates & held_templates
  for template in held_templates:  # no held-out wording (filled) fits a training template
    filled = template.format(a="red box", b="blue orb", an_a="a red box", noun="box", nouns="boxes", objects="items")
    assert [s for s, _, _ in vl_corpus.matching_templates(filled)] == ["heldout"], filled


def test_no_robot_held_out_paraphrase_anywhere(corpus):
  paraphrases = [
    w.format(a=a, b=b)
    for _, held in tabletop.INSTRUCTIONS.values()
    for w in held
    for a in tabletop.COLORS
    for b in tabletop.COLORS
  ]
  texts = [t for split in ("train", "heldout") for e in _entries(corpus, split) for t in _qa(e)]
  texts += vl_corpus.tokenizer_sentences()
  assert not [(t, p) for t in texts for p in paraphrases if p in t]
  assert vl_corpus.FORBIDDEN.search("please slide the drawer in") and vl_corpus.FORBIDDEN.search("lift the pink block")


def test_tokenizer_sentences_cover_the_corpus(corpus):
  sentences = vl_corpus.tokenizer_sentences()
  vocab = _words(sentences)
  used = _words(t for split in ("train", "heldout") for e in _entries(corpus, split) for t in _qa(e))
  assert used <= vocab, used - vocab
  for split in ("train", "heldout"):
    for templates in vl_corpus.TEMPLATES[split].values():
      for template, _ in templates:
        assert any(vl_corpus._template_regex(template).match(s) for s in sentences), template
  train_only = vl_corpus.tokenizer_sentences(include_held_out=False)
  assert "orb" not in _words(train_only) and len(train_only) < len(sentences)


# ----- answers against the scene's ground truth ----------------------------------------------------------
NOUN_SHAPE = {w: s for nouns in vl_corpus.NOUNS.values() for s, forms in nouns.items() for pair in forms for w in pair}
KIND = {t: k for families in vl_corpus.TEMPLATES.values() for ts in families.values() for t, k in ts}


def _slots(template, question):
  pattern = re.escape(template)
  for name in ("an_a", "a", "b", "noun", "nouns", "objects"):
    pattern = pattern.replace(re.escape("{" + name + "}"), f"(?P<{name}>.+?)")
  return re.fullmatch(pattern, question).groupdict()


def _object(truth, phrase):
  colour, noun = phrase.removeprefix("an ").removeprefix("a ").split(" ")
  hits = [o for o in truth if (o["shape"], o["colour"]) == (NOUN_SHAPE[noun], colour)]
  return hits[0] if hits else None


def _stacked_on(truth):
  """(top, bottom) names from positions alone: a cube resting on another's top face."""
  for top in truth:
    for bottom in truth:
      if (
        top is not bottom
        and np.linalg.norm(top["pos"][:2] - bottom["pos"][:2]) < 1e-6
        and top["pos"][2] > bottom["pos"][2]
      ):
        return top["name"], bottom["name"]
  return None


def _phrase(o):
  return f"{o['colour']} {o['shape']}"


def _check(env, family, kind, slots, answer, truth, seg):
  if family == "presence":
    assert answer == ("yes" if _object(truth, slots.get("an_a") or slots["a"]) else "no")
  elif family == "colour":
    (obj,) = [o for o in truth if o["shape"] == NOUN_SHAPE[slots["noun"]]]
    assert answer == obj["colour"]
  elif family == "count":
    shape = NOUN_SHAPE.get(slots.get("nouns"))
    assert answer == str(sum(shape in (None, o["shape"]) for o in truth))
  elif family in ("left_right", "depth"):
    a, b = _object(truth, slots["a"]), _object(truth, slots["b"])
    key = (lambda o: env.project(o["pos"])[0]) if family == "left_right" else (lambda o: env.camera_distance(o["pos"]))
    low = key(a) < key(b)  # a is left of / nearer than b
    if kind.startswith("which"):
      assert answer == _phrase(a if low == (kind in ("which_left", "which_nearer")) else b)
    else:
      assert answer == ("yes" if low == (kind in ("left", "nearer")) else "no")
  elif family == "on_top":
    stack, b = _stacked_on(truth), _object(truth, slots["b"])
    if kind == "what_on":
      top = [o for o in truth if stack == (o["name"], b["name"])]
      assert answer == (_phrase(top[0]) if top else "nothing")
    else:
      assert answer == ("yes" if stack == (_object(truth, slots["a"])["name"], b["name"]) else "no")
  elif family == "pointing":
    obj = _object(truth, slots["a"])
    u, v = (float(x) for x in re.fullmatch(r"\((\d\.\d\d), (\d\.\d\d)\)", answer).groups())
    assert seg[int(v * SIZE), int(u * SIZE)] == obj["geom"]
    assert np.allclose((u, v), env.project(obj["pos"]), atol=0.005 + 1e-9)
  elif family in ("drawer", "gripper"):
    is_open = env.drawer > 0.05 if family == "drawer" else not env.closed
    assert answer == (
      ("open" if is_open else "closed") if kind == "state" else ("yes" if is_open == (kind == "open") else "no")
    )
  else:
    *objects, table = re.findall(r"\ban? (\w+ \w+)", answer)  # "a red cube, an orange ball ... on a tiled table"
    assert collections.Counter(objects) == collections.Counter(_phrase(o) for o in truth)
    assert table == f"{vl_corpus.TABLE_WORDS[env.conditions['table']['kind']]} table"
    stack = _stacked_on(truth)
    if stack:
      top, bottom = (_phrase(o) for name in stack for o in truth if o["name"] == name)
      assert re.search(rf"\ban? {top} on an? {bottom}\b", answer), answer


def test_answers_match_the_scene(corpus):
  env = tabletop.TabletopEnv(image_size=SIZE)  # a fresh one: a scene depends on (seed, split, index) only
  checked = collections.Counter()
  try:
    for split in ("train", "heldout"):
      by_image = collections.defaultdict(list)
      for entry in _entries(corpus, split):
        by_image[entry["image"]].append(entry)
      for image, entries in by_image.items():
        index = int(image.rsplit("_", 1)[1].split(".")[0])
        scene, _ = vl_corpus._scene_for(env, 3, split, index)
        np.testing.assert_array_equal(np.asarray(Image.open(corpus[0] / image)), scene.image)
        truth, seg = env.table_objects(), env.segmentation()
        _check_scene_annotation(corpus[0], split, index, image, truth, seg)
        for entry in entries:
          question, answer = _qa(entry)
          ((_, family, template),) = vl_corpus.matching_templates(question)
          _check(env, family, KIND[template], _slots(template, question), answer, truth, seg)
          checked[family] += 1
  finally:
    env.close()
  assert set(checked) == set(vl_corpus.FAMILIES) and sum(checked.values()) == NUM_TRAIN + NUM_HELDOUT


def _check_scene_annotation(out, split, index, image, truth, seg):
  """<split>_scenes.json[index] and the class map agree with the re-rendered scene's ground truth."""
  with open(out / f"{split}_scenes.json") as f:
    annotation = json.load(f)[index]
  assert annotation["image"] == image and annotation["classes"] == image.replace(".png", ".classes.png")
  classes = np.asarray(Image.open(out / annotation["classes"]))
  assert classes.shape == seg.shape and classes.dtype == np.uint8
  assert sorted(o["phrase"] for o in annotation["objects"]) == sorted(f"{o['colour']} {o['shape']}" for o in truth)
  for o in truth:  # every object's pixels carry its class, and no other pixel does
    np.testing.assert_array_equal(classes == vl_corpus.CLASSES.index(f"{o['colour']} {o['shape']}"), seg == o["geom"])
  others = ~np.isin(seg, [o["geom"] for o in truth])
  assert set(np.unique(classes[others])) <= {0, 1, 2}  # other, drawer, gripper
  assert annotation["table"] in tabletop.TABLE_KINDS


def test_ensure_adds_the_tokenizer_of_corpus_and_robot_text(corpus, tmp_path):
  """ensure() = the corpus + a SentencePiece model that encodes corpus and robot text losslessly; reused."""
  from genvla_jax.tokenizers import text

  out = tmp_path / "ensured"
  args = dict(num_train=12, num_heldout=4, image_size=32, seed=3, vocab_size=320)
  vl_corpus.ensure(str(out), **args)
  tok = text.TextTokenizer(str(out / "tokenizer.model"))
  assert tok.sp.get_piece_size() == 320 and (tok.pad_id, tok.eos_id, tok.bos_id) == (0, 1, 2)
  question, answer = _qa(_entries((out,), "train")[0])
  for s in (question, answer, "pick up the red cube", "State: +0.12 -0.50", "+0.0312 -1.0000 | +0.5000 +0.0000"):
    assert tok.decode(tok.encode(s)) == s
  stamp = os.path.getmtime(out / "tokenizer.model")
  vl_corpus.ensure(str(out), **args)  # complete with the same settings: nothing rewritten
  assert os.path.getmtime(out / "tokenizer.model") == stamp


def test_probe_set_is_balanced_deterministic_and_reused(tmp_path):
  from genvla_jax.eval import representation

  a = vl_corpus.probe_set(str(tmp_path / "a"), "held_out", per_class=5, image_size=32, seed=1)
  b = vl_corpus.probe_set(str(tmp_path / "b"), "held_out", per_class=5, image_size=32, seed=1)
  images, labels, names = representation.load_folder(a, "train", size=32)
  assert names == sorted(tabletop.COLORS) and np.bincount(labels).tolist() == [4] * 4  # 80% of 5 per class
  for colour in names:
    for f in sorted(os.listdir(os.path.join(a, colour))):
      assert open(os.path.join(a, colour, f), "rb").read() == open(os.path.join(b, colour, f), "rb").read()
  stamp = os.path.getmtime(os.path.join(a, "red", "00000.png"))
  vl_corpus.probe_set(a, "held_out", per_class=5, image_size=32, seed=1)
  assert os.path.getmtime(os.path.join(a, "red", "00000.png")) == stamp
  default = vl_corpus.probe_set(str(tmp_path / "c"), "default", per_class=5, image_size=32, seed=1)
  assert not np.array_equal(representation.load_folder(default, "train", size=32)[0], images)
  with pytest.raises(vl_corpus.CorpusDirError, match="other settings"):
    vl_corpus.probe_set(a, "wide", per_class=5, image_size=32, seed=1)
  with pytest.raises(vl_corpus.CorpusSettingsError, match="probe pool"):
    vl_corpus.probe_set(str(tmp_path / "d"), "sunset", per_class=5)


def test_one_factor_splits_hold_out_one_factor_each(corpus, tmp_path):
  out = tmp_path / "eval"
  quiet = lambda *a, **k: None
  vl_corpus.one_factor_splits(str(out), 12, image_size=SIZE, seed=3, printer=quiet)
  train_images = {(corpus[0] / e["image"]).read_bytes() for e in _entries(corpus, "train")}
  for split, (pool, wording) in vl_corpus.EVAL_SPLITS.items():
    entries = _entries((out,), split)
    assert len(entries) == 12 and all(e["id"].startswith(split) for e in entries)
    for entry in entries:  # the wording factor: every question fits its wording's templates only
      question, _ = _qa(entry)
      assert {w for w, _, _ in vl_corpus.matching_templates(question)} == {wording}, (split, question)
      assert (out / entry["image"]).read_bytes() not in train_images  # new scenes
    with open(out / f"{split}_scenes.json") as f:
      scenes = json.load(f)
    assert [s["image"] for s in scenes] == sorted({e["image"] for e in entries})
    held_out_props = {f"{c} {shape}" for shape, c in tabletop.HELD_OUT_PROPS}
    for scene in scenes:  # the condition factor: the held-out pool always adds 1-2 held-out props
      assert scene["table"] in tabletop.CONDITION_POOLS[pool]["table_kinds"]
      assert any(o["phrase"] in held_out_props for o in scene["objects"]) == (pool == "held_out"), (split, scene)
  # deterministic: the scenes re-composed from their generators
  env = tabletop.TabletopEnv(image_size=SIZE)
  try:
    for split in vl_corpus.EVAL_SPLITS:
      scene, _ = vl_corpus._scene_for(env, 3, split, 0)
      np.testing.assert_array_equal(np.asarray(Image.open(out / "images" / f"{split}_000000.png")), scene.image)
  finally:
    env.close()
  stamp = os.path.getmtime(out / "val.json")
  vl_corpus.one_factor_splits(str(out), 12, image_size=SIZE, seed=3, printer=quiet)  # reused
  assert os.path.getmtime(out / "val.json") == stamp
  with pytest.raises(vl_corpus.CorpusDirError, match="other settings"):
    vl_corpus.one_factor_splits(str(out), 13, image_size=SIZE, seed=3, printer=quiet)


def test_robot_view_split_asks_where_each_cube_is_in_the_demonstrations_scenes(tmp_path):
  """robot_view_split: episode starts in the default appearance (never an evaluation seed), only the grounding
  families, answers true of the re-composed scene, reused when complete."""
  out, quiet = tmp_path / "robot_view", (lambda *a, **k: None)
  vl_corpus.robot_view_split(str(out), 16, image_size=SIZE, seed=3, printer=quiet)
  entries = _entries((out,), "robot_view")
  assert len(entries) == 16 and {e["family"] for e in entries} <= set(vl_corpus.ROBOT_VIEW_FAMILIES)
  by_image = collections.defaultdict(list)
  for entry in entries:
    by_image[entry["image"]].append(entry)
  env, episode = tabletop.TabletopEnv(image_size=SIZE), tabletop.TabletopEnv(image_size=SIZE)
  try:
    for image, image_entries in by_image.items():
      index = int(image.rsplit("_", 1)[1].split(".")[0])
      scene, _ = vl_corpus._robot_scene_for(env, 3, "robot_view", index)
      np.testing.assert_array_equal(np.asarray(Image.open(out / image)), scene.image)
      truth, seg = env.table_objects(), env.segmentation()
      assert truth and all(o["shape"] == "cube" for o in truth)  # the robot's scenes: cubes, no props
      episode.reset(
        tabletop.TASKS[index % len(tabletop.TASKS)], vl_corpus.ROBOT_VIEW_SEED_OFFSET + index, "visual_matching"
      )
      for o in truth:  # the cubes where that episode starts them
        np.testing.assert_allclose(o["pos"], episode.cube(o["colour"]), atol=1e-9)
      _check_scene_annotation(out, "robot_view", index, image, truth, seg)
      for entry in image_entries:
        question, answer = _qa(entry)
        ((wording, family, template),) = vl_corpus.matching_templates(question)
        assert wording == "train" and family == entry["family"]
        _check(env, family, KIND[template], _slots(template, question), answer, truth, seg)
  finally:
    env.close()
    episode.close()
  assert vl_corpus.ROBOT_VIEW_SEED_OFFSET > sim_record.VAL_SEED_OFFSET + 10_000  # never a demo's or eval's seed
  stamp = os.path.getmtime(out / "robot_view.json")
  vl_corpus.robot_view_split(str(out), 16, image_size=SIZE, seed=3, printer=quiet)  # reused
  assert os.path.getmtime(out / "robot_view.json") == stamp
  with pytest.raises(vl_corpus.CorpusDirError, match="other settings"):
    vl_corpus.robot_view_split(str(out), 17, image_size=SIZE, seed=3, printer=quiet)
  # the config's entry (configs/pi0_plus.py robot_view=N): ensure() writes it in the corpus folder
  ensured = tmp_path / "ensured"
  vl_corpus.ensure(str(ensured), num_train=8, num_heldout=0, image_size=32, seed=3, vocab_size=320, robot_view=8)
  assert len(_entries((ensured / vl_corpus.ROBOT_VIEW_DIR,), "robot_view")) == 8
