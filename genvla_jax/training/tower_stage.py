"""The tower stage of the small VLM's pretraining: the image tower alone learns what the corpus' questions
ask about, before the prefix-LM stage (configs/pretrain_vlm.py) puts a language model on top.

Why a stage: a tiny VLM trained from random weights on the corpus' questions learns each family's answer
prior and never looks (benchmarks/RESULTS.md, "The project's small VLM, first attempt": the decoder learns
to attend past untrained image tokens, after which ~50x less gradient reaches the tower). Real VLMs start
from a tower that already has features (SigLIP, contrastively pretrained on web captions). Our stand-in
for that pretraining is dense supervision from the generated scenes (data/vl_corpus.py writes a class map
per image): every output token predicts which FACTORS show in its patch (each object's colour and shape,
the drawer and whether it is open, the gripper and whether it is closed, else "other"), and the mean
token predicts the table's kind. Those are the facts the questions need (presence, colour, count,
positions, stacking, states), encoded where the decoder reads them: in the patch tokens.

Heads (thrown away after the stage): `dense` [D, F] on each token, `scene` [D, len(TABLE_KINDS)] on the mean
token. Loss = per-patch sigmoid cross-entropy summed over factors, averaged over patches, + table-kind
softmax cross-entropy.
"""

import json
import os
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
from PIL import Image

from genvla_jax.data import vl_corpus
from genvla_jax.eval.envs import tabletop
from genvla_jax.models import pixels, vit

# What each patch learns to recognise: factors of the class map's classes, so that an object the corpus
# never showed (a held-out prop: a known colour on a known shape) is still two known facts.
COLOURS = tuple(tabletop.PALETTE)
SHAPES = ("cube",) + tuple(tabletop.PROP_SHAPES)
FACTORS = ("other", "drawer", "drawer open", "gripper", "gripper closed") + COLOURS + SHAPES
FIRST_COLOUR, FIRST_SHAPE = FACTORS.index(COLOURS[0]), FACTORS.index(SHAPES[0])
TABLES = tabletop.TABLE_KINDS


def factor_matrix() -> np.ndarray:
  """[len(vl_corpus.CLASSES), len(FACTORS)] 0/1: class -> its factors (states added per image)."""
  m = np.zeros((len(vl_corpus.CLASSES), len(FACTORS)), np.float32)
  for k, name in enumerate(vl_corpus.CLASSES):
    if name in ("other", "drawer", "gripper"):
      m[k, FACTORS.index(name)] = 1
    else:
      colour, shape = name.split(" ")
      m[k, FACTORS.index(colour)] = m[k, FACTORS.index(shape)] = 1
  return m


FACTOR_MATRIX = factor_matrix()


def load_split(corpus_dir: str, split: str, limit: int = 0) -> dict:
  """-> {"images" uint8 [N,S,S,3], "classes" uint8 [N,S,S], "drawer_open", "drawer_visible",
  "gripper_closed", "gripper_visible" bool [N], "table" int [N]} for the corpus split's first `limit`
  images (all with 0)."""
  path = os.path.join(corpus_dir, f"{split}_scenes.json")
  if not os.path.exists(path):
    raise FileNotFoundError(
      f"{path} missing: the corpus at {corpus_dir} predates class maps (generator version < 2); "
      "generate it again (data/vl_corpus.py) into a new directory"
    )
  with open(path) as f:
    scenes = json.load(f)[: limit or None]

  def read(rel):
    return np.asarray(Image.open(os.path.join(corpus_dir, rel)))

  out = dict(
    images=np.stack([read(s["image"]) for s in scenes]),
    classes=np.stack([read(s["classes"]) for s in scenes]),
    table=np.asarray([TABLES.index(s["table"]) for s in scenes], np.int32),
  )
  for key in ("drawer_open", "drawer_visible", "gripper_closed", "gripper_visible"):
    out[key] = np.asarray([s[key] for s in scenes], bool)
  return out


def patch_targets(classes_BxHxW, drawer_open_B, gripper_closed_B, patch: int):
  """Class map + the image's states -> [B, P, F] with 1 where factor f shows in patch p (any pixel),
  patches row-major as the tower orders its tokens. "drawer open" / "gripper closed" mark the drawer's /
  gripper's pixels of an image whose drawer is open / gripper closed."""
  b, h, w = classes_BxHxW.shape
  pixels_BxHxWxF = jnp.asarray(FACTOR_MATRIX)[classes_BxHxW]
  drawer, gripper = FACTORS.index("drawer"), FACTORS.index("gripper")
  states = jnp.stack(
    [
      pixels_BxHxWxF[..., drawer] * drawer_open_B[:, None, None],
      pixels_BxHxWxF[..., gripper] * gripper_closed_B[:, None, None],
    ],
    axis=-1,
  )
  pixels_BxHxWxF = pixels_BxHxWxF.at[..., [drawer + 1, gripper + 1]].set(states)
  grid = pixels_BxHxWxF.reshape(b, h // patch, patch, w // patch, patch, len(FACTORS))
  return grid.max(axis=(2, 4)).reshape(b, (h // patch) * (w // patch), len(FACTORS))


def init_heads(rng, width: int) -> dict:
  k1, k2 = jax.random.split(rng)
  return dict(
    dense=dict(w=jax.random.normal(k1, (width, len(FACTORS))) * 0.01, b=jnp.full((len(FACTORS),), -3.0)),
    scene=dict(w=jax.random.normal(k2, (width, len(TABLES))) * 0.01, b=jnp.zeros((len(TABLES),))),
  )


def outputs(tower: vit.ViT, tower_params, heads, images_BxHxWx3):
  """-> (dense logits [B,P,F], table-kind logits [B,T] from the mean token)."""
  tokens_BxPxD = tower.apply({"params": tower_params}, pixels.to_unit_range(images_BxHxWx3))
  dense = tokens_BxPxD @ heads["dense"]["w"] + heads["dense"]["b"]
  scene = jnp.mean(tokens_BxPxD, axis=1) @ heads["scene"]["w"] + heads["scene"]["b"]
  return dense, scene


def _targets(batch, patch):
  return patch_targets(batch["classes"], batch["drawer_open"], batch["gripper_closed"], patch)


def loss_terms(tower, tower_params, heads, batch, patch: int) -> dict:
  dense, scene = outputs(tower, tower_params, heads, batch["images"])
  bce = optax.sigmoid_binary_cross_entropy(dense, _targets(batch, patch))
  return dict(
    dense=jnp.mean(jnp.sum(bce, axis=-1)),
    table=jnp.mean(optax.softmax_cross_entropy_with_integer_labels(scene, batch["table"])),
  )


def _f1(said, true) -> tuple[float, float, float]:
  return float(np.sum(said & true)), float(np.sum(said & ~true)), float(np.sum(~said & true))


def scores(tower, tower_params, heads, data: dict, patch: int, batch_size: int = 256) -> dict:
  """The tower + heads on `data`: objects per image (an object is said where one patch has both its colour
  and its shape factor on) -> recall, precision, exact object set; patch-level F1 of the colour and of the
  shape factors; drawer open / gripper closed (said where any patch says so) where visible; table kind."""
  predict = jax.jit(lambda p, h, x: outputs(tower, p, h, x))
  targets_of = jax.jit(lambda b: _targets(b, patch))
  n, c = len(data["images"]), dict.fromkeys(("exact", "hit", "true", "said", "drawer", "gripper", "table"), 0.0)
  colour_f1, shape_f1 = np.zeros(3), np.zeros(3)
  cols, shps = slice(FIRST_COLOUR, FIRST_SHAPE), slice(FIRST_SHAPE, None)
  for i in range(0, n, batch_size):
    part = {k: v[i : i + batch_size] for k, v in data.items()}
    dense, table = (np.asarray(a) for a in predict(tower_params, heads, part["images"]))
    on, true = dense > 0.0, np.asarray(targets_of(part)) > 0
    for said_objects, true_objects, said, t in zip(_objects(on, cols, shps), _objects(true, cols, shps), on, true):
      c["exact"] += said_objects == true_objects
      c["hit"] += len(said_objects & true_objects)
      c["true"] += len(true_objects)
      c["said"] += len(said_objects)
      colour_f1 += _f1(said[:, cols], t[:, cols])
      shape_f1 += _f1(said[:, shps], t[:, shps])
    for state in ("drawer", "gripper"):
      k = FACTORS.index(state) + 1
      said_state = on[:, :, k].any(1)
      c[state] += np.sum(
        (said_state == part[f"{state}_{'open' if state == 'drawer' else 'closed'}"]) & part[f"{state}_visible"]
      )
    c["table"] += np.sum(np.argmax(table, -1) == part["table"])

  def f1(tp_fp_fn):
    return float(2 * tp_fp_fn[0] / max(2 * tp_fp_fn[0] + tp_fp_fn[1] + tp_fp_fn[2], 1))

  return dict(
    object_set_exact=c["exact"] / n,
    object_recall=c["hit"] / max(c["true"], 1),
    object_precision=c["hit"] / max(c["said"], 1),
    colour_patch_f1=f1(colour_f1),
    shape_patch_f1=f1(shape_f1),
    drawer_accuracy=c["drawer"] / max(np.sum(data["drawer_visible"]), 1),
    gripper_accuracy=c["gripper"] / max(np.sum(data["gripper_visible"]), 1),
    table_accuracy=c["table"] / n,
  )


def _objects(on_BxPxF, cols, shps) -> list[set]:
  """Per image: {(colour, shape)} with some patch holding both factors."""
  out = []
  for patches in on_BxPxF:
    found = set()
    for p in np.flatnonzero(patches[:, cols].any(1) & patches[:, shps].any(1)):
      for colour in np.flatnonzero(patches[p, cols]):
        for shape in np.flatnonzero(patches[p, shps]):
          found.add((COLOURS[colour], SHAPES[shape]))
    out.append(found)
  return out


def train(tower_params, img_config: dict, stage, corpus_dir: str, printer=print) -> tuple[dict, dict]:
  """Trains `tower_params` (a vit.ViT of `img_config`) on the corpus' train split with the heads above.
  `stage`: steps, batch_size, lr, warmup_steps, seed, eval_images, log_every. -> (tower params, held-out
  scores on the first `eval_images` images of the held-out split and of the train split's last ones)."""
  tower = vit.ViT(**img_config)
  patch = img_config["patch_size"]
  data = load_split(corpus_dir, "train")
  heldout = load_split(corpus_dir, "heldout", stage.eval_images)
  n = len(data["images"])
  if n < stage.batch_size:
    raise ValueError(f"corpus {corpus_dir}: {n} training images, fewer than batch_size {stage.batch_size}")
  printer(f"tower stage: {n} training images, {len(heldout['images'])} held-out, {stage.steps} steps", flush=True)
  heads = init_heads(jax.random.PRNGKey(stage.seed + 1), img_config["width"])
  schedule = optax.warmup_cosine_decay_schedule(0.0, stage.lr, stage.warmup_steps, stage.steps)
  tx = optax.adamw(schedule, weight_decay=1e-4)
  both = (tower_params, heads)
  opt_state = tx.init(both)

  def total(both, batch):
    terms = loss_terms(tower, both[0], both[1], batch, patch)
    return sum(terms.values()), terms

  @jax.jit
  def step(both, opt_state, batch):
    (value, terms), grads = jax.value_and_grad(total, has_aux=True)(both, batch)
    updates, opt_state = tx.update(grads, opt_state, both)
    return optax.apply_updates(both, updates), opt_state, terms

  rng = np.random.default_rng(stage.seed)
  start = time.time()
  for i in range(1, stage.steps + 1):
    idx = rng.integers(0, n, stage.batch_size)
    both, opt_state, terms = step(both, opt_state, {k: v[idx] for k, v in data.items()})
    if i % stage.log_every == 0 or i == stage.steps:
      elapsed = time.time() - start
      rate = i * stage.batch_size / elapsed
      eta = (stage.steps - i) * elapsed / i
      losses = " ".join(f"{k} {float(v):.3f}" for k, v in terms.items())
      printer(f"step {i}/{stage.steps}: {losses} | {rate:.0f} images/s, ETA {eta / 60:.1f} min", flush=True)
  results = dict(
    heldout=scores(tower, both[0], both[1], heldout, patch),
    train=scores(tower, both[0], both[1], {k: v[-stage.eval_images :] for k, v in data.items()}, patch),
  )
  return both[0], results
