"""Entry points: read a checkpoint's architecture, and load its weights into a (possibly dual-encoder)
model with the target shardings and storage dtypes.

  format "hf":         a transformers PaliGemmaForConditionalGeneration directory (or .safetensors file)
  format "big_vision": the official PaliGemma .npz
  format "openvla":    OpenVLA's released HF directory (PrismaticForConditionalGeneration: timm DINOv2 +
                       SigLIP featurizers, projector fc1-3, Llama 2), for configs/openvla*.py
For π0+ the imported tower initialises both the trained and the frozen copy (surgery.finish_params); for
OpenVLA+ with dual_mode "split" the imported SigLIP becomes the frozen tower.
"""

import dataclasses

import jax
from jax.sharding import Mesh

from genvla_jax.models import gemma, prefix_lm, surgery, vit
from genvla_jax.pretrained import big_vision, hf, mapping
from genvla_jax.training import sharding


def _hf_architecture(path):
  return hf.model_config(hf.HFCheckpoint(path).config())


def _openvla_load(path, abstract, model):
  return hf.load_with_rules(
    path,
    abstract,
    mapping.openvla_rules(*(t.vit for t in model.encoder.towers), *[{}] * (2 - len(model.encoder.towers))),
  )


# format -> (architecture(path) -> {image_size, img, llm, ...}, load(path, abstract params, model) -> params):
# the one registry of checkpoint formats; a new format is two functions and a line here.
READERS = {
  "hf": (_hf_architecture, lambda path, abstract, _: hf.load(path, abstract)),
  "big_vision": (big_vision.model_config, lambda path, abstract, _: big_vision.load(path, abstract)),
  "openvla": (hf.openvla_model_config, _openvla_load),
}
FORMATS = tuple(READERS)


def _reader(fmt: str):
  if fmt not in READERS:
    raise ValueError(f"unknown checkpoint format {fmt!r}; choose one of {FORMATS}")
  return READERS[fmt]


def architecture(fmt: str, path: str) -> dict:
  """-> {image_size, img, llm} as the checkpoint describes itself (config.json or tensor shapes)."""
  return _reader(fmt)[0](path)


def mismatches(fmt: str, path: str, model_config) -> list[str]:
  """Architecture fields where the config and the checkpoint disagree (empty: compatible).
  `model_config`: config.model, or any mapping with its architecture fields image_size, img, llm and
  (Prismatic) fused_img -- e.g. another checkpoint's `architecture()`, which has no fused_img when it
  has no second tower. Options a tower / decoder config leaves out count at the model's defaults."""
  theirs = architecture(fmt, path)
  fused = model_config["fused_img"] if "fused_img" in model_config else None
  ours = {
    "image_size": model_config.image_size,
    "img": vit.options(model_config.img),
    "llm": gemma.options(model_config.llm),
    "fused_img": vit.options(fused) if fused else {},
  }
  out = []
  if theirs["image_size"] != ours["image_size"]:
    out.append(f"model.image_size: config {ours['image_size']}, checkpoint {theirs['image_size']}")
  for part in ("img", "fused_img", "llm"):
    for key, value in theirs.get(part, {}).items():
      if key == "posemb_std":  # initialisation only
        continue
      if key == "max_depth":  # towers cut before their last blocks (Prismatic) read a prefix of them
        if ours[part] and ours[part]["depth"] > value:
          out.append(f"model.{part}.depth: config {ours[part]['depth']}, checkpoint has {value} blocks")
        continue
      mine = ours[part].get(key)  # None: the config has no such tower
      if mine != value:
        out.append(f"model.{part}.{key}: config {mine!r}, checkpoint {value!r}")
  return out


ARCHITECTURE_SOURCES = ("config", "checkpoint")  # config.pretrained.architecture
INIT_ONLY = ("posemb_std",)  # architecture options that only set the initialisation: kept from the config


def from_checkpoint(fmt: str, path: str, model_config) -> dict:
  """The architecture fields of config.model taken from the checkpoint (config.pretrained.architecture =
  "checkpoint"): {"image_size": int, "img": {...}, "llm": {...}[, "fused_img": {...}]}, each tower /
  decoder dict the config's own with every option the checkpoint describes replaced by the checkpoint's
  value (vocabulary size included: HF pads PaliGemma's to 257216). Options it does not describe (and
  INIT_ONLY ones) stay the config's. A Prismatic tower (openvla format: `max_depth` blocks stored) keeps the
  config's depth when the checkpoint has that many blocks, else reads its penultimate block (Prismatic's
  feature layer); one the config lacks is not added (the checkpoint does not describe all of it). Reads the
  checkpoint's config / tensor headers only. What still disagrees after this is what `mismatches` reports."""
  theirs = architecture(fmt, path)
  out = {"image_size": int(theirs["image_size"])}
  for part in ("img", "fused_img", "llm"):
    if part not in theirs:
      continue
    mine = dict(model_config[part]) if part in model_config else {}
    if not mine and "max_depth" in theirs[part]:  # a Prismatic tower is described in part only: the config's
      continue
    given = {k: v for k, v in theirs[part].items() if k not in INIT_ONLY and k != "max_depth"}
    if "max_depth" in theirs[part]:
      blocks = theirs[part]["max_depth"]
      given["depth"] = mine["depth"] if 0 < mine.get("depth", 0) <= blocks else blocks - 1
    out[part] = {**mine, **given}
  return out


# Parts of our models that no VLM checkpoint holds: initialised fresh (π0's action expert, as openpi starts
# π0 from PaliGemma weights and a random expert).
FRESH_PARTS = ("expert",)


def load(fmt: str, path: str, model: prefix_lm.PrefixLM, image_size: int, mesh: Mesh | None = None, rules=(), rng=None):
  """Checkpoint -> params of `model` (dual split and storage dtypes applied), placed on `mesh` with the
  parameter shardings (FSDP default / rules), or on the first device without a mesh. Tensors are cast
  to `model.param_dtype` on the host, one at a time, before they are placed. FRESH_PARTS the model has are
  initialised from `rng` (default PRNGKey(0)), computed on their own (only those parts are materialised)."""
  read = _reader(fmt)[1]
  single = dataclasses.replace(model, encoder=model.encoder.single(), parent=None)
  shapes = jax.eval_shape(lambda: surgery.init_params(single, jax.random.PRNGKey(0), image_size))
  shapes = jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, model.param_dtype), shapes)
  if mesh is None:
    device = jax.sharding.SingleDeviceSharding(jax.devices()[0])
    shardings = jax.tree.map(lambda _: device, shapes)
  else:
    shardings = sharding.param_shardings(shapes, mesh, rules)
  abstract = jax.tree.map(lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s), shapes, shardings)
  fresh = [k for k in FRESH_PARTS if k in abstract]
  params = dict(read(path, {k: v for k, v in abstract.items() if k not in fresh}, model))
  if fresh:
    rng = jax.random.PRNGKey(0) if rng is None else rng
    init = jax.jit(
      lambda r: {k: surgery.init_params(single, r, image_size)[k] for k in fresh},
      out_shardings={k: shardings[k] for k in fresh},
    )
    params.update(init(rng))
  return surgery.finish_params(model, params)
