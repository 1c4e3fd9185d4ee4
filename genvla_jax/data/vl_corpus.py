r"""A vision-language pretraining corpus the project generates: images of the MuJoCo tabletop
(eval/envs/tabletop.py) under many visual conditions, with short, exactly checkable question/answer
pairs (spatial VQA, pointing, captions) as in a VLM's pretraining or a VLA paper's co-training data.

  python -m genvla_jax.data.vl_corpus --out=DIR --num_train=40000 --num_heldout=4000 [--image_size=64] [--seed=0]

Layout under DIR (the LLaVA JSON that `convert_vl --format=llava_json` reads):
  train.json, heldout.json   [{"id", "image": "images/<split>_NNNNNN.png", "family",
                               "conversations": [{"from": "human", "value": "<image>\n" + question},
                                                 {"from": "gpt", "value": answer}]}, ...]
  images/*.png               one rendered scene per QA_PER_IMAGE consecutive entries (each entry one
                             question; the last image of a split may have fewer)
  images/*.classes.png       each image's class map: uint8 [S,S], pixel -> index into CLASSES
                             ("other", "drawer", "gripper", then every object phrase "red cube" ...)
  train_scenes.json, heldout_scenes.json
                             one entry per image: {"image", "classes", "objects": [{"phrase", "uv",
                             "distance"}], "on_top", "drawer_open", "drawer_visible", "gripper_closed",
                             "gripper_visible", "table"}: the scene the questions were asked about
  meta.json                  settings, examples / images per split, counts per family and split;
                             written LAST: without it the directory is incomplete and a rerun
                             regenerates it; with it, the same settings reuse it and other settings
                             are a CorpusDirError naming the differing fields.

Splits: "train" = tabletop.CONDITION_POOLS["wide"] conditions, the TEMPLATES["train"] wordings and NOUNS,
props in tabletop.WIDE_PROPS; "heldout" = the "held_out" pool (disjoint on every factor), the
TEMPLATES["heldout"] wordings and nouns (no held-out template or noun ever appears in train and vice
versa), props of either pool. Neither uses the robot's held-out instruction paraphrases
(tabletop.INSTRUCTIONS[task][1]); generate() checks every text. Robot demonstrations use the default
appearance, which neither pool draws (see tabletop.CONDITION_POOLS).

Scene: 1-5 objects (the four cubes, props) at non-overlapping places, sometimes one cube stacked on
another, the drawer shut (< 1.5 cm) or open (> 6 cm), the gripper high above the table, open or
closed; then the split's conditions (which add 0-2 distractor props). Every object must show at least
a few pixels in a segmentation render, else the scene is drawn again.

Question families (FAMILIES; each entry's "family"): presence (yes/no), colour (a colour word), count
(a number), left_right and depth (yes/no, or the object's canonical phrase "red cube"), on_top (yes/no,
the phrase, or "nothing"), pointing ("(0.42, 0.61)": the object's centre in normalized image
coordinates, u right, v down, 2 decimals; the pixel there shows the object), drawer and gripper
(yes/no, or open/closed), caption ("a red cube on a blue cube and an orange ball on a checkered table":
objects left to right, canonical nouns). Answers always use the canonical nouns (cube, ball, can,
capsule, plate) and colour words (tabletop.PALETTE), whatever synonym the question used.

Deterministic given (seed, counts, image_size): image j of a split draws from its own generator
(seed, split, j), so a larger corpus starts with the smaller one. `tokenizer_sentences()`: text
covering every template and vocabulary word (for the SentencePiece tokenizer).
"""

import dataclasses
import json
import os
import re
import time

from absl import flags
import numpy as np
from PIL import Image

from genvla_jax import cli
from genvla_jax.data import sim_record
from genvla_jax.eval.envs import tabletop  # first: sets MUJOCO_GL before mujoco is imported
from genvla_jax.tokenizers import text

import mujoco  # after tabletop (see above)

GENERATOR_VERSION = 2  # 2: class maps and scene annotations per image (for the tower stage)
QA_PER_IMAGE = 4  # questions (entries) per rendered scene
# split -> (condition pool, wording: the TEMPLATES / NOUNS / OBJECT_WORDS key)
SPLITS = {"train": ("wide", "train"), "heldout": ("held_out", "heldout")}
# one-factor evaluation splits (one_factor_splits): new scenes with one factor held out at a time, or none
EVAL_SPLITS = {
  "val": ("wide", "train"),
  "heldout_conditions": ("held_out", "train"),
  "heldout_wordings": ("wide", "heldout"),
}
# the robot's own view (robot_view_split): the demonstrations' default appearance and scenes, training wordings
ROBOT_SPLITS = {"robot_view": ("default", "train")}
ALL_SPLITS = SPLITS | EVAL_SPLITS | ROBOT_SPLITS  # the order fixes each split's generator stream: append only
FAMILIES = (
  "presence",
  "colour",
  "count",
  "left_right",
  "depth",
  "on_top",
  "pointing",
  "drawer",
  "gripper",
  "caption",
)
SHAPES = ("cube",) + tuple(tabletop.PROP_SHAPES)
# the words a question may use for a shape: (singular, plural) pairs, per split
NOUNS = {
  "train": {
    "cube": (("cube", "cubes"), ("block", "blocks")),
    "ball": (("ball", "balls"), ("sphere", "spheres")),
    "can": (("can", "cans"), ("cylinder", "cylinders")),
    "capsule": (("capsule", "capsules"),),
    "plate": (("plate", "plates"), ("disk", "disks")),
  },
  "heldout": {
    "cube": (("box", "boxes"),),
    "ball": (("orb", "orbs"),),
    "can": (("tin", "tins"),),
    "capsule": (("pill", "pills"),),
    "plate": (("dish", "dishes"),),
  },
}
OBJECT_WORDS = {"train": ("objects", "things"), "heldout": ("items",)}  # "how many <word> ..."
TABLE_WORDS = {"plain": "plain", "checker": "checkered", "grain": "wooden", "tiles": "tiled", "speckled": "speckled"}
# family -> ((template, kind), ...). Slots: {a}, {b} "<colour> <noun>", {an_a} with its article, {noun}
# (colour: a shape), {nouns} (count). The kind says how the answer is computed (_answer_*).
TEMPLATES = {
  "train": {
    "presence": (
      ("is there {an_a}?", "yes_no"),
      ("is there {an_a} in the image?", "yes_no"),
      ("do you see {an_a}?", "yes_no"),
      ("can you find {an_a} on the table?", "yes_no"),
      ("does the table have {an_a} on it?", "yes_no"),
    ),
    "colour": (
      ("what colour is the {noun}?", "colour"),
      ("what is the colour of the {noun}?", "colour"),
      ("which colour does the {noun} have?", "colour"),
      ("the {noun} has which colour?", "colour"),
    ),
    "count": (
      ("how many {nouns} are on the table?", "shape"),
      ("how many {nouns} are there?", "shape"),
      ("count the {nouns}.", "shape"),
      ("what is the number of {nouns}?", "shape"),
      ("how many {objects} are on the table?", "all"),
      ("count the {objects} on the table.", "all"),
    ),
    "left_right": (
      ("is the {a} to the left of the {b}?", "left"),
      ("is the {a} left of the {b}?", "left"),
      ("is the {a} to the right of the {b}?", "right"),
      ("which is further left, the {a} or the {b}?", "which_left"),
      ("which is further right, the {a} or the {b}?", "which_right"),
    ),
    "depth": (
      ("is the {a} closer to the camera than the {b}?", "nearer"),
      ("is the {a} farther from the camera than the {b}?", "farther"),
      ("which is nearer to the camera, the {a} or the {b}?", "which_nearer"),
      ("which is farther from the camera, the {a} or the {b}?", "which_farther"),
    ),
    "on_top": (
      ("is the {a} on top of the {b}?", "on"),
      ("is the {a} stacked on the {b}?", "on"),
      ("what is on top of the {b}?", "what_on"),
    ),
    "pointing": (
      ("point to the {a}.", "point"),
      ("where is the {a}? answer with a point.", "point"),
      ("give the image coordinates of the {a}.", "point"),
      ("locate the {a} in the image.", "point"),
    ),
    "drawer": (
      ("is the drawer open?", "open"),
      ("is the drawer closed?", "closed"),
      ("is the drawer open or closed?", "state"),
      ("what is the state of the drawer?", "state"),
    ),
    "gripper": (
      ("is the gripper open?", "open"),
      ("is the gripper closed?", "closed"),
      ("is the robot's gripper open or closed?", "state"),
      ("what state is the gripper in?", "state"),
    ),
    "caption": (
      ("describe the scene briefly.", "caption"),
      ("write a short caption for this image.", "caption"),
      ("what do you see on the table?", "caption"),
      ("caption the image.", "caption"),
    ),
  },
  "heldout": {
    "presence": (("does this scene contain {an_a}?", "yes_no"), ("is any {a} visible here?", "yes_no")),
    "colour": (("what color is the {noun}?", "colour"), ("tell me the color of the {noun}.", "colour")),
    "count": (
      ("how many {nouns} can be seen in the scene?", "shape"),
      ("give the count of {nouns}.", "shape"),
      ("how many {objects} lie on the table?", "all"),
    ),
    "left_right": (
      ("from the camera's view, is the {a} on the left side of the {b}?", "left"),
      ("does the {a} appear right of the {b}?", "right"),
      ("which one is more to the left: the {a} or the {b}?", "which_left"),
    ),
    "depth": (
      ("is the {a} in front of the {b}?", "nearer"),
      ("is the {a} behind the {b}?", "farther"),
      ("which of the {a} and the {b} is closer to the viewer?", "which_nearer"),
    ),
    "on_top": (("does the {a} rest on the {b}?", "on"), ("what sits on the {b}?", "what_on")),
    "pointing": (
      ("mark the {a} with an (x, y) point.", "point"),
      ("at which point of the picture is the {a}?", "point"),
    ),
    "drawer": (("has the drawer been pulled out?", "open"), ("is the cabinet drawer shut or open?", "state")),
    "gripper": (("are the fingers of the robot hand apart?", "open"), ("is the robot hand opened or closed?", "state")),
    "caption": (
      ("summarize the picture in a few words.", "caption"),
      ("give a one-line description of the scene.", "caption"),
    ),
  },
}
LEFT_RIGHT_MARGIN = 0.05  # normalized image width: pairs closer than this in u are not asked about
DEPTH_MARGIN = 0.04  # metres of camera distance, likewise
DRAWER_SHUT, DRAWER_OPEN = (0.0, 0.015), (0.06, tabletop.DRAWER_TRAVEL)
GRIPPER_AREA = np.array([[-0.2, -0.2, 0.12], [0.2, 0.1, 0.25]])  # high above the objects
STACK_PROBABILITY = 0.5  # of a scene with two cubes or more
POSITIVE_ON_TOP = 0.6  # of on_top questions about a stacked scene: about the stacked pair
SCENE_TRIES = 50
# robot_view_split: the question families about where each cube is (the grounding a pick needs), and where its
# scenes come from: tabletop episode starts with seeds from here (evaluation uses seeds from 0, the recorded
# demonstrations sim_record.TRAIN_SEED_OFFSET = 100_000 and VAL_SEED_OFFSET = 200_000 up)
ROBOT_VIEW_FAMILIES = ("presence", "colour", "left_right", "depth", "pointing")
ROBOT_VIEW_SEED_OFFSET = 300_000
# per-pixel classes of an image's class map (images/<split>_NNNNNN.classes.png, uint8 index into this):
# what the tower stage (training/tower_stage.py) teaches each patch to recognise
CLASSES = (
  ("other", "drawer", "gripper")
  + tuple(f"{c} cube" for c in tabletop.COLORS)
  + tuple(f"{c} {s}" for s in tabletop.PROP_SHAPES for c in tabletop.PALETTE)
)


class CorpusDirError(cli.UserError, ValueError):
  """--out cannot take this corpus (another corpus's settings, or foreign files): names the fix."""


class CorpusSettingsError(cli.UserError, ValueError):
  """Counts or image size out of range: names the values."""


@dataclasses.dataclass
class SceneObject:
  shape: str
  colour: str
  pos: np.ndarray  # [3] world
  uv: tuple[float, float]  # normalized image coordinates of the centre
  distance: float  # metres from the camera
  geom: int
  pixels: int  # visible pixels in the segmentation render

  @property
  def phrase(self) -> str:  # canonical: what answers say
    return f"{self.colour} {self.shape}"


@dataclasses.dataclass
class Scene:
  objects: list[SceneObject]
  on_top: tuple[int, int] | None  # (top, bottom) indices into objects
  drawer_open: bool
  drawer_visible: bool
  gripper_closed: bool
  gripper_visible: bool
  table: str  # tabletop.TABLE_KINDS entry
  segmentation: np.ndarray  # int32 [S,S] geom ids
  image: np.ndarray  # uint8 [S,S,3]
  classes: np.ndarray  # uint8 [S,S] index into CLASSES

  def annotation(self) -> dict:
    """The scene as JSON (written to <split>_scenes.json): what every question about it is derived from."""
    return dict(
      objects=[
        dict(phrase=o.phrase, uv=[round(float(x), 4) for x in o.uv], distance=round(o.distance, 4))
        for o in self.objects
      ],
      on_top=list(self.on_top) if self.on_top else None,
      drawer_open=self.drawer_open,
      drawer_visible=self.drawer_visible,
      gripper_closed=self.gripper_closed,
      gripper_visible=self.gripper_visible,
      table=self.table,
    )


def _article(words: str) -> str:
  return f"{'an' if words[0] in 'aeiou' else 'a'} {words}"


def _allowed_objects(split: str) -> list[tuple[str, str]]:
  """(shape, colour) of the objects a split's scenes and questions may show or name."""
  props = tabletop.WIDE_PROPS + (tabletop.HELD_OUT_PROPS if ALL_SPLITS[split][0] == "held_out" else ())
  return [("cube", c) for c in tabletop.COLORS] + list(props)


def _pick_objects(rng, split: str) -> list[tuple[str, str]]:
  """1-5 distinct (shape, colour), about half cubes; never more props of a shape than PROPS holds."""
  allowed, chosen = _allowed_objects(split), []
  for _ in range(int(rng.integers(1, 6))):
    free = [
      o
      for o in allowed
      if o not in chosen and (o[0] == "cube" or sum(p[0] == o[0] for p in chosen) < tabletop.PROPS.count(o[0]))
    ]
    cubes = [o for o in free if o[0] == "cube"]
    pool = cubes if cubes and rng.random() < 0.5 else [o for o in free if o[0] != "cube"] or cubes
    chosen.append(pool[int(rng.integers(len(pool)))])
  return chosen


def _min_pixels(image_size: int) -> int:
  return max(1, round(4 * (image_size / 64) ** 2))


def compose_scene(env: tabletop.TabletopEnv, rng: np.random.Generator, split: str) -> Scene | None:
  """One random scene of `split` in `env` (rendered), or None when it does not fit (no room, an object
  hidden): the caller draws again from the same generator."""
  env.clear_scene()
  chosen = _pick_objects(rng, split)
  cubes = [i for i, o in enumerate(chosen) if o[0] == "cube"]
  stack = (cubes[1], cubes[0]) if len(cubes) >= 2 and rng.random() < STACK_PROBABILITY else None
  try:
    for i, (shape, colour) in enumerate(chosen):
      if stack and i == stack[0]:
        continue
      radius = tabletop.CUBE_FOOTPRINT if shape == "cube" else tabletop.PROP_SHAPES[shape][3]
      xy = env.free_spot(rng, radius)
      if shape == "cube":
        env.place_cube(colour, (xy[0], xy[1], tabletop.CUBE))
      else:
        env.place_prop(shape, colour, xy)
    if stack:
      bottom = env.cube(chosen[stack[1]][1])
      env.place_cube(chosen[stack[0]][1], (bottom[0], bottom[1], 3 * tabletop.CUBE))
    drawer_open = bool(rng.random() < 0.5)
    env.set_drawer(rng.uniform(*(DRAWER_OPEN if drawer_open else DRAWER_SHUT)))
    gripper_closed = bool(rng.random() < 0.5)
    env.set_gripper(rng.uniform(GRIPPER_AREA[0], GRIPPER_AREA[1]), gripper_closed)
    conditions = env.apply_conditions(rng, ALL_SPLITS[split][0])
  except tabletop.SceneFullError:
    return None
  on_top = (chosen[stack[0]], chosen[stack[1]]) if stack else None
  return _observe(env, on_top, drawer_open, gripper_closed, conditions["table"]["kind"])


def _observe(env, on_top, drawer_open: bool, gripper_closed: bool, table: str) -> Scene | None:
  """The Scene `env` shows now (rendered, segmented), or None when an object on the table shows fewer than a
  few pixels. on_top: ((shape, colour) on top, (shape, colour) below) of a stack, or None."""
  env.forward()
  seg = env.segmentation()
  least = _min_pixels(env.image_size)
  objects = []
  for o in env.table_objects():
    pixels = int(np.count_nonzero(seg == o["geom"]))
    if pixels < least:
      return None
    objects.append(
      SceneObject(
        o["shape"], o["colour"], o["pos"], env.project(o["pos"]), env.camera_distance(o["pos"]), o["geom"], pixels
      )
    )
  if on_top:
    index = {(o.shape, o.colour): k for k, o in enumerate(objects)}
    on_top = (index[on_top[0]], index[on_top[1]])
  hand, drawer = _geoms_of(env, ("hand", "finger_l", "finger_r")), _geoms_of(env, ("drawer",))
  classes = np.zeros(seg.shape, np.uint8)
  classes[np.isin(seg, drawer)] = CLASSES.index("drawer")
  classes[np.isin(seg, hand)] = CLASSES.index("gripper")
  for o in objects:
    classes[seg == o.geom] = CLASSES.index(o.phrase)
  return Scene(
    objects=objects,
    on_top=on_top,
    drawer_open=drawer_open,
    drawer_visible=int(np.isin(seg, drawer).sum()) >= 4 * least,
    gripper_closed=gripper_closed,
    gripper_visible=int(np.isin(seg, hand).sum()) >= 4 * least,
    table=table,
    segmentation=seg,
    image=env.render(),
    classes=classes,
  )


def _geoms_of(env, bodies) -> np.ndarray:
  ids = [mujoco.mj_name2id(env.model, mujoco.mjtObj.mjOBJ_BODY, b) for b in bodies]
  return np.flatnonzero(np.isin(env.model.geom_bodyid, ids))


# ----- questions ---------------------------------------------------------------------------------------
def _noun(rng, split: str, shape: str, plural: bool = False) -> str:
  forms = NOUNS[ALL_SPLITS[split][1]][shape]
  return forms[int(rng.integers(len(forms)))][int(plural)]


def _named(rng, split: str, obj) -> str:
  """'<colour> <noun>' with one of the split's nouns for the shape; obj = SceneObject or (shape, colour)."""
  shape, colour = (obj.shape, obj.colour) if isinstance(obj, SceneObject) else obj
  return f"{colour} {_noun(rng, split, shape)}"


def _choice(rng, items):
  return items[int(rng.integers(len(items)))]


def _pick_template(rng, split: str, family: str, kinds=None) -> tuple[str, str]:
  options = [t for t in TEMPLATES[ALL_SPLITS[split][1]][family] if kinds is None or t[1] in kinds]
  return _choice(rng, options)


def _yes(flag: bool) -> str:
  return "yes" if flag else "no"


def _pairs(scene: Scene, key, margin: float) -> list[tuple[int, int]]:
  """Ordered pairs of objects whose `key` values differ by more than `margin` (a stacked pair excluded)."""
  n, stacked = len(scene.objects), set(scene.on_top or ())
  return [
    (i, j)
    for i in range(n)
    for j in range(n)
    if i != j and not {i, j} <= stacked and abs(key(scene.objects[i]) - key(scene.objects[j])) > margin
  ]


def _point_pixel(scene: Scene, obj: SceneObject) -> bool:
  """Whether the pixel at obj's rounded point (the answer) shows obj."""
  size = scene.segmentation.shape[0]
  u, v = round(obj.uv[0], 2), round(obj.uv[1], 2)
  if not (0 <= u < 1 and 0 <= v < 1):
    return False
  return scene.segmentation[int(v * size), int(u * size)] == obj.geom


def point_text(uv) -> str:
  return f"({uv[0]:.2f}, {uv[1]:.2f})"


def caption(scene: Scene) -> str:
  """Objects left to right ('a red cube on a blue cube' for a stack), then the table."""
  order = sorted(range(len(scene.objects)), key=lambda k: scene.objects[k].uv[0])
  top, bottom = scene.on_top or (None, None)
  parts = []
  for k in order:
    if k == top:
      continue
    text = _article(scene.objects[k].phrase)
    if k == bottom:
      text = f"{_article(scene.objects[top].phrase)} on {text}"
    parts.append(text)
  things = parts[0] if len(parts) == 1 else f"{', '.join(parts[:-1])} and {parts[-1]}"
  return f"{things} on {_article(TABLE_WORDS[scene.table])} table"


def applicable_families(scene: Scene) -> list[str]:
  """The families with a well-defined question about this scene."""
  objs = scene.objects
  shapes = [o.shape for o in objs]
  ok = {
    "presence": True,
    "colour": any(shapes.count(s) == 1 for s in shapes),
    "count": True,
    "left_right": bool(_pairs(scene, lambda o: o.uv[0], LEFT_RIGHT_MARGIN)),
    "depth": bool(_pairs(scene, lambda o: o.distance, DEPTH_MARGIN)),
    "on_top": shapes.count("cube") >= 2,  # a scene that could hold a stack
    "pointing": any(_point_pixel(scene, o) for o in objs),
    "drawer": scene.drawer_visible,
    "gripper": scene.gripper_visible,
    "caption": True,
  }
  return [f for f in FAMILIES if ok[f]]


def ask(scene: Scene, family: str, rng: np.random.Generator, split: str) -> tuple[str, str]:
  """One (question, answer) of `family` about `scene` in the split's wordings (family applicable)."""
  return _ASK[family](scene, rng, split)


def _ask_presence(scene, rng, split):
  template, _ = _pick_template(rng, split, "presence")
  present = {(o.shape, o.colour) for o in scene.objects}
  if rng.random() < 0.5:
    obj, answer = _choice(rng, scene.objects), "yes"
  else:
    obj, answer = _choice(rng, [o for o in _allowed_objects(split) if o not in present]), "no"
  named = _named(rng, split, obj)
  return template.format(a=named, an_a=_article(named)), answer


def _ask_colour(scene, rng, split):
  template, _ = _pick_template(rng, split, "colour")
  shapes = [o.shape for o in scene.objects]
  obj = _choice(rng, [o for o in scene.objects if shapes.count(o.shape) == 1])
  return template.format(noun=_noun(rng, split, obj.shape)), obj.colour


def _ask_count(scene, rng, split):
  template, kind = _pick_template(rng, split, "count")
  if kind == "all":
    return template.format(objects=_choice(rng, OBJECT_WORDS[ALL_SPLITS[split][1]])), str(len(scene.objects))
  present = [o.shape for o in scene.objects]
  shape = _choice(rng, present) if rng.random() < 0.8 else _choice(rng, SHAPES)  # sometimes zero
  return template.format(nouns=_noun(rng, split, shape, plural=True)), str(present.count(shape))


def _ask_pair(scene, rng, split, family, key, margin, low_kinds):
  """left_right / depth: kinds in low_kinds are true when a's key is the lower (left, nearer)."""
  template, kind = _pick_template(rng, split, family)
  i, j = _choice(rng, _pairs(scene, key, margin))
  a, b = scene.objects[i], scene.objects[j]
  question = template.format(a=_named(rng, split, a), b=_named(rng, split, b))
  a_lower = key(a) < key(b)
  if kind.startswith("which"):
    return question, (a if a_lower == (kind in low_kinds) else b).phrase
  return question, _yes(a_lower == (kind in low_kinds))


def _ask_left_right(scene, rng, split):
  return _ask_pair(scene, rng, split, "left_right", lambda o: o.uv[0], LEFT_RIGHT_MARGIN, ("left", "which_left"))


def _ask_depth(scene, rng, split):
  return _ask_pair(scene, rng, split, "depth", lambda o: o.distance, DEPTH_MARGIN, ("nearer", "which_nearer"))


def _ask_on_top(scene, rng, split):
  template, kind = _pick_template(rng, split, "on_top")
  objs, n = scene.objects, len(scene.objects)
  if kind == "what_on":
    bottom = scene.on_top[1] if scene.on_top and rng.random() < POSITIVE_ON_TOP else int(rng.integers(n))
    answer = objs[scene.on_top[0]].phrase if scene.on_top and scene.on_top[1] == bottom else "nothing"
    return template.format(b=_named(rng, split, objs[bottom])), answer
  pairs = [(i, j) for i in range(n) for j in range(n) if i != j]
  top, bottom = scene.on_top if scene.on_top and rng.random() < POSITIVE_ON_TOP else _choice(rng, pairs)
  question = template.format(a=_named(rng, split, objs[top]), b=_named(rng, split, objs[bottom]))
  return question, _yes((top, bottom) == scene.on_top)


def _ask_pointing(scene, rng, split):
  template, _ = _pick_template(rng, split, "pointing")
  obj = _choice(rng, [o for o in scene.objects if _point_pixel(scene, o)])
  return template.format(a=_named(rng, split, obj)), point_text(obj.uv)


def _ask_state(template_kind, is_open):
  template, kind = template_kind
  if kind == "state":
    return template, "open" if is_open else "closed"
  return template, _yes(is_open == (kind == "open"))


def _ask_drawer(scene, rng, split):
  return _ask_state(_pick_template(rng, split, "drawer"), scene.drawer_open)


def _ask_gripper(scene, rng, split):
  return _ask_state(_pick_template(rng, split, "gripper"), not scene.gripper_closed)


def _ask_caption(scene, rng, split):
  template, _ = _pick_template(rng, split, "caption")
  return template, caption(scene)


_ASK = {f: globals()[f"_ask_{f}"] for f in FAMILIES}


# ----- wordings: matching, forbidden text, tokenizer text ---------------------------------------------
def _slot_patterns() -> dict[str, str]:
  colours = "|".join(tabletop.PALETTE)
  nouns = {form for split in NOUNS.values() for forms in split.values() for pair in forms for form in pair}
  named = rf"(?:{colours}) (?:{'|'.join(sorted(nouns))})"
  objects = "|".join(w for words in OBJECT_WORDS.values() for w in words)
  return {
    "a": named,
    "b": named,
    "an_a": rf"an? {named}",
    "noun": f"(?:{'|'.join(sorted(nouns))})",
    "nouns": f"(?:{'|'.join(sorted(nouns))})",
    "objects": f"(?:{objects})",
  }


def _template_regex(template: str) -> re.Pattern:
  slots, out, last = _slot_patterns(), [], 0
  for m in re.finditer(r"\{(\w+)\}", template):
    out += [re.escape(template[last : m.start()]), slots[m.group(1)]]
    last = m.end()
  return re.compile("".join(out + [re.escape(template[last:])]) + r"\Z")


def matching_templates(question: str) -> list[tuple[str, str, str]]:
  """Every (split, family, template) whose wording `question` fits (any nouns of either split)."""
  return [
    (split, family, template)
    for split, families in TEMPLATES.items()
    for family, templates in families.items()
    for template, _ in templates
    if _template_regex(template).match(question)
  ]


def _forbidden_regex() -> re.Pattern:
  """The robot's held-out instruction paraphrases, any colours: text no split may contain."""
  colours = "|".join(tabletop.PALETTE)
  wordings = [w for _, held_out in tabletop.INSTRUCTIONS.values() for w in held_out]
  return re.compile(
    "|".join(re.escape(w).replace(r"\{a\}", f"(?:{colours})").replace(r"\{b\}", f"(?:{colours})") for w in wordings)
  )


FORBIDDEN = _forbidden_regex()


def tokenizer_sentences(include_held_out: bool = True) -> list[str]:
  """Question and answer text covering every template with every vocabulary word in each slot (not the
  whole product), and every answer form: yes/no, colour words, counts 0-9, coordinates 0.00-1.00,
  phrases, captions. `include_held_out` (default, as a pretrained tokenizer knows the words): held-out
  wordings too -- the tokenizer, never the model, sees them."""
  splits = ("train", "heldout") if include_held_out else ("train",)
  colours, out = list(tabletop.PALETTE), []
  for split in splits:
    nouns = [(s, form) for s, forms in NOUNS[split].items() for form in forms]
    for templates in TEMPLATES[split].values():
      for template, _ in templates:
        for k in range(max(len(colours), len(nouns), len(OBJECT_WORDS[split]))):
          (_, (noun, plural)), colour = nouns[k % len(nouns)], colours[k % len(colours)]
          a = f"{colour} {noun}"
          b = f"{colours[(k + 3) % len(colours)]} {nouns[(k + 1) % len(nouns)][1][0]}"
          objects = OBJECT_WORDS[split][k % len(OBJECT_WORDS[split])]
          out.append(template.format(a=a, b=b, an_a=_article(a), noun=noun, nouns=plural, objects=objects))
  phrases = [f"{c} {s}" for c in colours for s in SHAPES]
  out += ["yes", "no", "open", "closed", "nothing"] + colours + phrases + [str(n) for n in range(10)]
  out += [point_text((i / 100, (100 - i) / 100)) for i in range(101)]
  out += [
    f"{_article(phrases[k % len(phrases)])} and {_article(phrases[(7 * k + 3) % len(phrases)])} on "
    f"{_article(word)} table"
    for k, word in enumerate(list(TABLE_WORDS.values()) * 10)
  ]
  return sorted(set(out))


# ----- writing -----------------------------------------------------------------------------------------
def _scene_for(env, seed: int, split: str, index: int) -> tuple[Scene, np.random.Generator]:
  rng = np.random.default_rng([seed, list(ALL_SPLITS).index(split), index])
  for _ in range(SCENE_TRIES):
    scene = compose_scene(env, rng, split)
    if scene is not None:
      return scene, rng
  raise RuntimeError(f"{split} image {index}: no scene fits after {SCENE_TRIES} draws (seed {seed})")


def _robot_scene_for(env, seed: int, split: str, index: int) -> tuple[Scene, np.random.Generator]:
  """Scene `index` of the robot's own view: the start of tabletop episode ROBOT_VIEW_SEED_OFFSET + index (the
  tasks in turn; default appearance, as the demonstrations and visual matching show it), the gripper left where
  the episode starts it or (half the time) moved to a random place above the table."""
  rng = np.random.default_rng([seed, list(ALL_SPLITS).index(split), index])
  env.reset(tabletop.TASKS[index % len(tabletop.TASKS)], ROBOT_VIEW_SEED_OFFSET + index, "visual_matching")
  for _ in range(SCENE_TRIES):
    if rng.random() < 0.5:
      env.set_gripper(rng.uniform(GRIPPER_AREA[0], GRIPPER_AREA[1]), bool(rng.random() < 0.5))
    scene = _observe(env, None, env.drawer > DRAWER_SHUT[1], env.closed, "plain")
    if scene is not None:
      return scene, rng
  raise RuntimeError(f"{split} image {index}: a cube stays hidden after {SCENE_TRIES} gripper moves (seed {seed})")


def split_entries(
  env, split: str, count: int, seed: int, out_dir: str, progress, scene_for=_scene_for, families=FAMILIES
) -> tuple[list[dict], list[dict]]:
  """`count` entries of `split` (QA_PER_IMAGE per image, of the applicable `families`), images and class maps
  written under out_dir/images; scene_for(env, seed, split, index) -> (Scene, its generator) draws each image's
  scene -> (entries, one annotation per image: Scene.annotation() + "image", "classes" paths)."""
  entries, scenes, image_index = [], [], 0
  while len(entries) < count:
    scene, rng = scene_for(env, seed, split, image_index)
    rel = f"images/{split}_{image_index:06d}.png"
    classes_rel = f"images/{split}_{image_index:06d}.classes.png"
    Image.fromarray(scene.image).save(os.path.join(out_dir, rel))
    Image.fromarray(scene.classes).save(os.path.join(out_dir, classes_rel))
    scenes.append(dict(image=rel, classes=classes_rel, **scene.annotation()))
    asked = [f for f in applicable_families(scene) if f in families]
    chosen = rng.permutation(len(asked))[:QA_PER_IMAGE]
    for k in chosen[: count - len(entries)]:
      question, answer = ask(scene, asked[k], rng, split)
      if FORBIDDEN.search(question) or FORBIDDEN.search(answer):
        raise AssertionError(f"{split} {asked[k]}: {question!r} / {answer!r} holds a robot held-out paraphrase")
      entries.append(
        {
          "id": f"{split}_{len(entries):07d}",
          "image": rel,
          "family": asked[k],
          "conversations": [{"from": "human", "value": f"<image>\n{question}"}, {"from": "gpt", "value": answer}],
        }
      )
    image_index += 1
    progress(image_index, len(entries))
  return entries, scenes


def _settings(num_train, num_heldout, image_size, seed) -> dict:
  return dict(
    generator_version=GENERATOR_VERSION,
    seed=seed,
    image_size=image_size,
    num_train=num_train,
    num_heldout=num_heldout,
    qa_per_image=QA_PER_IMAGE,
  )


def _reusable(out_dir: str, settings: dict) -> dict | None:
  """The complete corpus with these settings in out_dir; None when there is none (or an incomplete
  one of ours); CorpusDirError for another corpus or foreign files."""
  meta_path = os.path.join(out_dir, "meta.json")
  if os.path.exists(meta_path):
    with open(meta_path) as f:
      meta = json.load(f)
    if not isinstance(meta, dict) or "generator_version" not in meta:
      raise CorpusDirError(f"--out {out_dir} holds a meta.json not written by vl_corpus: give another --out")
    diffs = [f"{k} {meta.get(k)!r} (asked {v!r})" for k, v in settings.items() if meta.get(k) != v]
    if diffs:
      raise CorpusDirError(
        f"--out {out_dir} holds a corpus generated with other settings: {'; '.join(diffs)}: "
        "give another --out, or the same settings to reuse it"
      )
    return meta
  if os.path.isdir(out_dir):
    ours = {"images", ROBOT_VIEW_DIR, *TOKENIZER_FILES}
    ours |= {f"{split}{end}" for split in SPLITS for end in (".json", "_scenes.json")}
    foreign = sorted(set(os.listdir(out_dir)) - ours)
    if foreign:
      raise CorpusDirError(f"--out {out_dir} holds other files ({', '.join(foreign[:3])}): give another --out")
  return None


def generate(
  out_dir: str, num_train: int, num_heldout: int, image_size: int = 64, seed: int = 0, printer=print
) -> dict:
  """Writes the corpus (see the module docstring) unless out_dir holds it already; -> meta."""
  if num_train < 0 or num_heldout < 0 or image_size < 16:
    raise CorpusSettingsError(
      f"need num_train, num_heldout >= 0 and image_size >= 16 (got {num_train}, {num_heldout}, {image_size})"
    )
  out_dir = os.path.abspath(os.path.expanduser(out_dir))
  settings = _settings(num_train, num_heldout, image_size, seed)
  done = _reusable(out_dir, settings)
  if done is not None:
    return done
  os.makedirs(os.path.join(out_dir, "images"), exist_ok=True)
  env = tabletop.TabletopEnv(image_size=image_size)
  meta = dict(settings, examples={}, images={}, families={})
  try:
    for split, count in (("train", num_train), ("heldout", num_heldout)):
      entries, scenes = split_entries(env, split, count, seed, out_dir, _progress(printer, split, count))
      with open(os.path.join(out_dir, f"{split}.json"), "w") as f:
        json.dump(entries, f)
      with open(os.path.join(out_dir, f"{split}_scenes.json"), "w") as f:
        json.dump(scenes, f)
      meta["examples"][split] = len(entries)
      meta["images"][split] = len({e["image"] for e in entries})
      meta["families"][split] = {fam: sum(e["family"] == fam for e in entries) for fam in FAMILIES}
  finally:
    env.close()
  with open(os.path.join(out_dir, "meta.json"), "w") as f:  # last: marks the corpus complete
    json.dump(meta, f, indent=1)
  return meta


def _finished(done_path: str, settings: dict, what: str) -> bool:
  """True when `done_path` (a DONE.json, written last) holds these settings; False when absent;
  CorpusDirError when it holds other settings (`what`: what the directory holds, for the message)."""
  if not os.path.exists(done_path):
    return False
  with open(done_path) as f:
    if json.load(f) == settings:
      return True
  raise CorpusDirError(f"{os.path.dirname(done_path)} holds {what} with other settings: give another directory")


def _splits_dir(out_dir, splits, count, image_size, seed, what, printer, **entries_kwargs) -> str:
  """Writes `count` questions of each split in `splits` as the corpus' splits are (<split>.json,
  <split>_scenes.json, images/; split_entries with `entries_kwargs`), then DONE.json with the settings -> out_dir;
  reused when DONE.json holds the same settings, another set there is a CorpusDirError naming `what`."""
  if count < 1 or image_size < 16:
    raise CorpusSettingsError(f"need count >= 1 and image_size >= 16 (got {count}, {image_size})")
  out_dir = os.path.abspath(os.path.expanduser(out_dir))
  settings = dict(_settings(0, 0, image_size, seed), count=count, splits=list(splits))
  done = os.path.join(out_dir, "DONE.json")
  if _finished(done, settings, what):
    return out_dir
  os.makedirs(os.path.join(out_dir, "images"), exist_ok=True)
  env = tabletop.TabletopEnv(image_size=image_size)
  try:
    for split in splits:
      progress = _progress(printer, split, count)
      entries, scenes = split_entries(env, split, count, seed, out_dir, progress, **entries_kwargs)
      for name, rows in ((f"{split}.json", entries), (f"{split}_scenes.json", scenes)):
        with open(os.path.join(out_dir, name), "w") as f:
          json.dump(rows, f)
  finally:
    env.close()
  with open(done, "w") as f:  # last: marks the set complete
    json.dump(settings, f)
  return out_dir


def one_factor_splits(out_dir: str, count: int, image_size: int = 64, seed: int = 0, printer=print) -> str:
  """Evaluation splits that separate the held-out split's two factors (EVAL_SPLITS): "val" (new scenes,
  training conditions and wordings), "heldout_conditions" (held-out pool, training wordings),
  "heldout_wordings" (training pool, held-out wordings); `count` questions each, written as the corpus'
  splits are (<split>.json, <split>_scenes.json, images/). Scenes are new: each split draws from its own
  generator streams, so none repeats a training image. -> out_dir; reused when DONE.json holds the same
  settings, another set there is a CorpusDirError."""
  return _splits_dir(out_dir, EVAL_SPLITS, count, image_size, seed, "evaluation splits", printer)


def robot_view_split(out_dir: str, count: int, image_size: int = 64, seed: int = 0, printer=print) -> str:
  """`count` questions about the robot's own view (split "robot_view"): tabletop episode starts in the default
  appearance (the demonstrations' scenes, never an evaluation episode's: seeds from ROBOT_VIEW_SEED_OFFSET),
  the ROBOT_VIEW_FAMILIES that apply (which cube is where: presence, left/right, nearer, pointing; colour needs a
  unique shape, which a scene of cubes never has) in the training wordings; written as the corpus' splits are
  (robot_view.json, robot_view_scenes.json, images/) for co-training beside the corpus (configs/pi0_plus.py
  option robot_view=N). -> out_dir; reused when DONE.json holds the same settings, another set there is a
  CorpusDirError."""
  return _splits_dir(
    out_dir,
    ROBOT_SPLITS,
    count,
    image_size,
    seed,
    "a robot-view split",
    printer,
    scene_for=_robot_scene_for,
    families=ROBOT_VIEW_FAMILIES,
  )


PROBE_POOLS = ("default", "wide", "held_out")  # probe_set: the robot demos' appearance, or a condition pool


def probe_set(out_dir: str, pool: str, per_class: int, image_size: int = 64, seed: int = 0) -> str:
  """A labelled image folder for linear probes of the towers (eval/representation.py load_folder): one cube
  of each colour class (tabletop.COLORS), 0-2 props of any colour (so the label needs the cube's colour,
  not the image's) at random places, drawer and gripper random, under `pool`'s conditions ("default": the
  robot demonstrations' appearance). -> out_dir, holding <colour>/<i>.png; reused when complete (DONE.json
  with the same settings)."""
  if pool not in PROBE_POOLS:
    raise CorpusSettingsError(f"unknown probe pool {pool!r}; one of {PROBE_POOLS}")
  out_dir = os.path.abspath(os.path.expanduser(out_dir))
  settings = dict(pool=pool, per_class=per_class, image_size=image_size, seed=seed, version=GENERATOR_VERSION)
  done = os.path.join(out_dir, "DONE.json")
  if _finished(done, settings, "a probe set"):
    return out_dir
  env = tabletop.TabletopEnv(image_size=image_size)
  props = list(tabletop.WIDE_PROPS) + (list(tabletop.HELD_OUT_PROPS) if pool == "held_out" else [])
  try:
    for k, colour in enumerate(sorted(tabletop.COLORS)):
      os.makedirs(os.path.join(out_dir, colour), exist_ok=True)
      i = 0
      rng = np.random.default_rng([seed, PROBE_POOLS.index(pool), k])
      while i < per_class:
        env.clear_scene()
        try:
          xy = env.free_spot(rng, tabletop.CUBE_FOOTPRINT)
          env.place_cube(colour, (xy[0], xy[1], tabletop.CUBE))
          for j in rng.permutation(len(props))[: int(rng.integers(0, 3))]:
            shape, prop_colour = props[j]
            env.place_prop(shape, prop_colour, env.free_spot(rng, tabletop.PROP_SHAPES[shape][3]))
          env.set_drawer(rng.uniform(0.0, tabletop.DRAWER_TRAVEL))
          env.set_gripper(rng.uniform(GRIPPER_AREA[0], GRIPPER_AREA[1]), bool(rng.random() < 0.5))
          if pool != "default":
            env.apply_conditions(rng, pool)
        except tabletop.SceneFullError:
          continue
        env.forward()
        Image.fromarray(env.render()).save(os.path.join(out_dir, colour, f"{i:05d}.png"))
        i += 1
  finally:
    env.close()
  with open(done, "w") as f:
    json.dump(settings, f)
  return out_dir


TOKENIZER_FILES = ("tokenizer.model", "tokenizer.json")
ROBOT_VIEW_DIR = "robot_view"  # ensure(robot_view=N): the robot-view split's folder in the corpus


def ensure(
  out_dir: str,
  num_train: int,
  num_heldout: int,
  image_size: int = 64,
  seed: int = 0,
  vocab_size: int = 512,
  robot_view: int = 0,
) -> str:
  """The corpus (generate) plus the SentencePiece tokenizer a VLM pretrained on it uses (out_dir/tokenizer.model,
  `vocab_size` pieces): trained on the corpus' text (tokenizer_sentences) and the tabletop robot's text
  (instructions, prompts, state and action strings: sim_record.tokenizer_corpus), as a released VLM's
  tokenizer knows the words its fine-tuning data uses; and, when robot_view > 0, that many questions about the
  robot's own view in out_dir/robot_view (robot_view_split). Reused when complete with the same settings."""
  out_dir = os.path.abspath(os.path.expanduser(out_dir))
  meta = generate(out_dir, num_train, num_heldout, image_size, seed)
  if robot_view:
    robot_view_split(os.path.join(out_dir, ROBOT_VIEW_DIR), robot_view, image_size, seed)
  settings = dict(vocab_size=vocab_size, corpus_generator_version=meta["generator_version"], robot_env="tabletop")
  marker = os.path.join(out_dir, "tokenizer.json")
  if os.path.exists(marker):
    with open(marker) as f:
      if json.load(f) == settings:
        return out_dir
  sentences = tokenizer_sentences() + sim_record.tokenizer_corpus("tabletop")
  text.train_sentencepiece(sentences, os.path.join(out_dir, "tokenizer.model"), vocab_size)
  with open(marker, "w") as f:  # after the model: marks the tokenizer complete
    json.dump(settings, f, indent=1)
  return out_dir


def _progress(printer, split: str, total: int):
  """A progress(images, examples) callback printing a line at most every 2 s, and at the end."""
  start, last = time.time(), [0.0]

  def progress(images, examples):
    now = time.time()
    if now - last[0] >= 2.0 or examples == total:
      last[0] = now
      rate = examples / max(now - start, 1e-9)
      printer(f"{split}: {examples}/{total} examples, {images} images, {rate:.0f} examples/s", flush=True)

  return progress


FLAGS = flags.FLAGS


def main(argv):
  del argv
  meta = generate(FLAGS.out, FLAGS.num_train, FLAGS.num_heldout, FLAGS.image_size, FLAGS.seed)
  print(json.dumps({k: meta[k] for k in ("examples", "images")}))


if __name__ == "__main__":
  flags.DEFINE_string("out", None, "output directory", required=True)
  flags.DEFINE_integer("num_train", None, "training examples (questions)", required=True)
  flags.DEFINE_integer("num_heldout", None, "held-out examples (questions)", required=True)
  flags.DEFINE_integer("image_size", 64, "rendered image side")
  flags.DEFINE_integer("seed", 0, "generator seed")
  cli.run(main)
