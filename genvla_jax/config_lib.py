"""Shared building blocks for config files (`configs/*.py`, each with `get_config(arg)`).

A config is one ml_collections.ConfigDict holding model, tokenizer, data, optimizer, training and mesh
settings; its fields and defaults are config_schema.defaults(). It is locked (an unknown key is an
error, never silently ignored) and saved with every checkpoint, so predict/eval/serve need only the run
directory; they read it back through `upgrade` (config_schema.upgrade, re-exported here).

Config arguments (`--config=configs/pi0_plus.py:ARG`): comma-separated, the first item optionally a
variant name, then key=value options, e.g. `demo`, `demo,ablation=DS`, `ablation=S` (parse_arg).
Fields the `--config.KEY=VALUE` flags cannot set (lists: data.robot, data.vl, mesh.rules) are set with
`--set=KEY=VALUE` (set_fields).
"""

import ast
import difflib
import json
import os
from typing import Sequence

import ml_collections

from genvla_jax import cli, config_schema
from genvla_jax.config_schema import upgrade  # noqa: F401  (re-exported: config_lib.upgrade)
from genvla_jax.models import gemma, vit

# PaliGemma backbones by name: (vision tower, language model, image size); the sizes are the models' own
# tables (models/vit.py, models/gemma.py, models/action_expert.py VARIANTS).
BACKBONES = {
  "paligemma_224": (vit.VARIANTS["So400m/14"], gemma.VARIANTS["gemma_2b"], 224),
  "paligemma_448": (vit.VARIANTS["So400m/14"], gemma.VARIANTS["gemma_2b"], 448),
  "paligemma2_224": (vit.VARIANTS["So400m/14"], gemma.VARIANTS["gemma2_2b"], 224),
  "paligemma2_448": (vit.VARIANTS["So400m/14"], gemma.VARIANTS["gemma2_2b"], 448),
}
# Tiny sizes under the names tests and benchmarks use.
SIGLIP_TINY = vit.VARIANTS["tiny"]
GEMMA_TINY = gemma.VARIANTS["tiny"]
LLAMA2_TINY = gemma.VARIANTS["llama2_tiny"]
# config.model.scan_unroll of the tiny CPU models: their few layers unrolled (>= every tiny depth) step ~20% faster
# on a CPU than a scanned stack and compile no slower (benchmarks/RESULTS.md "Unrolled layers")
TINY_SCAN_UNROLL = 8

DEMO_DIR = "~/.cache/genvla_jax/demo_v7"  # where the embedded demo data is generated (data/demo.py)
CORPUS_DIR = "~/.cache/genvla_jax/vl_corpus_v2"  # the generated VL pretraining corpus (data/vl_corpus.py)
TOWER_START = "~/.cache/genvla_jax/vlm_tower_start_v1"  # the small VLM's tower stage output (tools/pretrain_tower.py)
SIM_DIR = "~/.cache/genvla_jax/{env}_v3"  # where a simulator's demos are recorded (data/sim_record.py RECORDER_VERSION)
ABLATION_LETTERS = "DSC"  # D: dual encoder, S: string actions (else bins), C: co-training with VL data

# The project's own small VLM (configs/pretrain_vlm.py): its architecture, tokenizer size and corpus. Tabletop
# policies with `vlm=pretrained` start from its export, shipped in the package at VLM_DIR (tools/export_hf).
TABLETOP_VLM = dict(
  image_size=64,
  img=dict(vit.VARIANTS["tiny"]),
  llm=dict(gemma.VARIANTS["tiny"], vocab_size=768),  # 512 tokenizer pieces + 256 ids for bin actions
)
TABLETOP_CORPUS = dict(num_train=40_000, num_heldout=2_000, image_size=64, seed=0, vocab_size=512)
VLM_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "assets", "vlm_tabletop")
VLM_STARTS = ("none", "pretrained", "scratch")


def parse_arg(arg: str | None, variants: tuple[str, ...], **defaults) -> ml_collections.ConfigDict:
  """'demo,ablation=DS' -> {variant: 'demo', ablation: 'DS'}; unknown variants or keys raise."""
  opts = ml_collections.ConfigDict(dict(variant=variants[0], **defaults))
  items = [s.strip() for s in (arg or "").split(",") if s.strip()]
  for i, item in enumerate(items):
    if "=" not in item:
      if i != 0 or item not in variants:
        raise ValueError(f"unknown config variant {item!r}; variants: {variants}")
      opts.variant = item
      continue
    key, value = item.split("=", 1)
    if key not in defaults:
      raise ValueError(f"unknown config option {key!r}; options: {sorted(defaults)}")
    opts[key] = type(defaults[key])(value)
  return opts


class ConfigOverrideError(cli.UserError, ValueError):
  """A `--set KEY=VALUE` override that gives a value the field cannot take."""


class ConfigKeyError(ConfigOverrideError, KeyError):
  """A `--set KEY=VALUE` override whose KEY names no field of the config."""

  def __str__(self):  # the message as is (KeyError would quote it)
    return str(self.args[0])


def set_fields(config: ml_collections.ConfigDict, overrides: Sequence[str], flag: str = "--set") -> None:
  """Applies `KEY=VALUE` overrides (the repeatable `--set` of the train CLI and tools/ablate.py) to the
  locked config, in order; in the train CLI after the `--config.KEY=VALUE` flags. For what those cannot
  set: the list-valued fields (data.robot, data.vl, mesh.rules: ml_collections refuses list overrides)
  and whole keyword-argument dicts (model.img, model.llm, model.fused_img, data.sim_record).

  KEY names an existing field (dotted). VALUE is JSON (or a Python literal: None, True, tuples, single
  quotes); a string field takes the text as it is when it is no quoted string (`data.rlds_root=/data`).
  The value replaces the field whole and must be of its kind (a list for a list, a number for a number,
  ...); list entries are checked like the config's own (config_schema.entry_problems: exact keys, rules
  [regex, [axes]]). A group of fields (e.g. data.augment) is set field by field. Every error is one
  ConfigOverrideError (a cli.UserError) naming the key, e.g.

    --set='data.vl=[{"name": "llava", "path": "llava/chat.json", "format": "llava_json", "weight": 1.0}]'
    --set='mesh.rules=[["llm/.*/mlp/linear$", [null, "model", "fsdp"]]]'
  """
  for item in overrides:
    key, sep, text = item.partition("=")
    key = key.strip()
    if not sep or not key:
      raise ConfigOverrideError(f"{flag} {item!r}: give KEY=VALUE, e.g. {flag}=data.robot_fraction=1.0")
    parent, name = _field(config, key, flag)
    current = parent[name]
    value = _parse(text, current, f"{flag} {key}")
    if isinstance(current, ml_collections.ConfigDict) and len(current) and not _open_dict(key):
      raise ConfigOverrideError(
        f"{flag} {key}: {key} is a group of fields ({', '.join(sorted(current))}); set them one by one, "
        f"e.g. {flag}={key}.{sorted(current)[0]}=..."
      )
    if current is not None and _kind(current) != _kind(value):
      raise ConfigOverrideError(f"{flag} {key}: needs {_kind(current)}, got {_kind(value)}: {text}")
    problems = config_schema.entry_problems(key, value)
    if problems:
      raise ConfigOverrideError(f"{flag} {key}: " + "; ".join(problems))
    try:
      parent[name] = value
    except (TypeError, ValueError) as err:
      raise ConfigOverrideError(f"{flag} {key}: {err}") from err


def _parse(text: str, current, where: str):
  """VALUE text -> JSON / Python-literal value; the text itself for a string field."""
  try:
    value = json.loads(text)
  except json.JSONDecodeError as err:
    try:
      value = ast.literal_eval(text)
    except (ValueError, SyntaxError):
      if isinstance(current, str):
        return text
      raise ConfigOverrideError(
        f"{where}: the value is neither JSON nor a Python literal ({err.msg} at character {err.pos}): {text!r}"
      ) from err
  if isinstance(current, str) and not isinstance(value, str):
    return text  # data.prompt=123 means the text "123"
  return value


def _open_dict(key: str) -> bool:
  """Fields whose value is a dict of keyword arguments (schema default {}), set whole."""
  schema = config_schema.defaults()
  for part in key.split("."):
    if not isinstance(schema, ml_collections.ConfigDict) or part not in schema:
      return False
    schema = schema[part]
  return isinstance(schema, ml_collections.ConfigDict) and not len(schema)


def _kind(value) -> str:
  if isinstance(value, (list, tuple)):
    return "a JSON list"
  if isinstance(value, (dict, ml_collections.ConfigDict)):
    return "a JSON object"
  if isinstance(value, bool):
    return "true or false"
  if isinstance(value, (int, float)):
    return "a number"
  if isinstance(value, str):
    return "a JSON string"
  return "null" if value is None else type(value).__name__


def _field(config, key: str, flag: str):
  """'data.vl' -> (config.data, 'vl'); an unknown name raises, naming the near misses."""
  parent, parts = config, key.split(".")
  for i, part in enumerate(parts):
    where = ".".join(parts[:i]) or "the config"
    if not isinstance(parent, ml_collections.ConfigDict):
      raise ConfigOverrideError(f"{flag} {key}: {where} has no fields (a {type(parent).__name__}); set it whole")
    if part not in parent:
      known = sorted(parent)
      near = difflib.get_close_matches(part, known, n=1)
      hint = f"; did you mean {'.'.join(parts[:i] + near)}?" if near else (f"; {where} has {', '.join(known)}")
      raise ConfigKeyError(f"{flag} {key}: no key {part!r} in {where}{hint}")
    if i < len(parts) - 1:
      parent = parent[part]
  return parent, parts[-1]


def base_config(backbone: str | None = "paligemma_224") -> ml_collections.ConfigDict:
  """config_schema.defaults() (every field with its default, unlocked) with a PaliGemma backbone by name
  (BACKBONES: model.image_size, img, llm), or with none (None: the config file sets the architecture).
  The robot datasets (data.robot) are the config file's."""
  c = config_schema.defaults()
  if backbone is None:
    return c
  if backbone not in BACKBONES:
    raise ValueError(f"unknown backbone {backbone!r}; choose one of {sorted(BACKBONES)}")
  img, llm, image_size = BACKBONES[backbone]
  c.model.image_size = image_size
  c.model.img = dict(img)
  c.model.llm = dict(llm)
  return c


def prismatic_tower(variant: str) -> dict:
  """A released tower (models/vit.py VARIANTS) as Prismatic / OpenVLA feed it to the LLM: the penultimate
  block's patch tokens, no final norm (depth one less than released)."""
  tower = vit.VARIANTS[variant]
  return dict(tower, depth=tower["depth"] - 1, final_norm=False)


def demo_data(root) -> dict:
  """The embedded demo task's files (data/demo.py layout) under `root`: {config field: value} for
  `config.update_from_flattened_dict`. `root`: a FieldReference to data.demo_dir, so that
  `--config.data.demo_dir=DIR` moves every path (or a plain path)."""
  return {
    "model.image_size": 32,  # the demo renders 32 px frames (a grid cell = one patch of the tiny tower)
    "tokenizer.path": root + "/tokenizer.model",
    "tokenizer.bins_overwrite_text_ids": False,  # 384 pieces: the tiny model's 640 ids leave 256 spare ones
    "data.rlds_root": root + "/rlds",
    "data.robot": [dict(name="demo_targets", path="demo_targets/1.0.0", split="train", weight=1.0)],
    "data.vl_root": root + "/vl",
    "data.vl": [dict(name="demo_vqa", path="train.json", format="llava_json", weight=1.0)],
  }


DEFAULT_MIXTURE = "paper"  # the configs' `mixture=` default: fractal (RT-1) + bridge
# the tiny `demo` variant on a converted LeRobot dataset (`demo,mixture=libero,robot_dir=OUT`): its frames at
# 64 px (the demo's own are 32), room for its longer instructions (LIBERO's ~53 tokens of the demo's tokenizer
# + 7 action values as text ~50)
TINY_LEROBOT = {"model.image_size": 64, "tokenizer.max_text_len": 128}


def robot_mixture(name: str, robot_dir: str = "", variant: str = "full") -> dict:
  """The config options `mixture=NAME` (+ `robot_dir=OUT`) -> {config field: value}: data.robot = the mixture's
  entries (data/registry.py MIXTURES; a LeRobot dataset's entry reads `robot_dir`, a finished convert_lerobot
  --out) and, for a mixture whose examples carry several cameras (registry.MIXTURE_CAMERAS: droid's three,
  libero's two), data.cameras = those cameras in order and model.num_cameras = their count. Mixtures of one
  camera (paper, bridge, fractal) set data.robot alone. Applied after a variant's own data (configs/*.py).
  The tiny variants bring their own data: {} for the default mixture; the `demo` variant alone also takes a
  converted LeRobot mixture (+ TINY_LEROBOT: the tiny model on a user's LeRobot data, e.g. LIBERO on a CPU);
  ValueError for anything else."""
  from genvla_jax.data import registry

  if variant != "full":
    if name == DEFAULT_MIXTURE and not robot_dir:
      return {}
    lerobot = registry.lerobot_mixtures()
    if variant != "demo" or name not in lerobot:
      raise ValueError(
        f"mixture={name} is for the full variant, not {variant!r} (the tiny demo variant takes a converted LeRobot "
        f"mixture: {', '.join(lerobot)}, with robot_dir=OUT)"
      )
  fragment = {"data.robot": registry.mixture(name, robot_dir)}
  cameras = registry.mixture_cameras(name)
  if cameras:
    fragment.update({"data.cameras": cameras, "model.num_cameras": len(cameras)})
  if variant == "demo":
    fragment.update(TINY_LEROBOT)
  return fragment


def sim_cameras(option: str) -> tuple[str, ...]:
  """The config option `cameras=image+wrist_image` -> the observation's cameras ("image": the front one)."""
  return tuple(c.strip() for c in option.split("+") if c.strip())


def sim_dir(env: str, cameras=("image",)) -> str:
  """Where `env`'s demonstrations with `cameras` are recorded on first use (SIM_DIR; a camera set of its own
  has a directory of its own)."""
  from genvla_jax.data import sim_record  # (imported here: only the simulator variants need it)

  return SIM_DIR.format(env=env if tuple(cameras) == ("image",) else sim_record.dataset_name(env, cameras))


def sim_data(env: str, root, cameras=("image",)) -> dict:
  """A simulated benchmark's expert demonstrations (data/sim_record.py layout, recorded into `root` on first
  use): "tabletop" (MuJoCo, ours; with a VL set about the same scenes) or "metaworld" (MT10; no VL set, so
  robot data only). {config field: value} as demo_data; `root`: a FieldReference to data.sim_dir. `cameras`
  (more than the front "image": e.g. the tabletop's ("image", "wrist_image")): the recording of those cameras,
  every example carrying them all (data.cameras, model.num_cameras)."""
  from genvla_jax.data import sim_record

  name = sim_record.dataset_name(env, cameras)
  fragment = {
    "tokenizer.path": root + "/tokenizer.model",
    "tokenizer.bins_overwrite_text_ids": False,  # 384 pieces, as the demo's
    "data.rlds_root": root + "/rlds",
    "data.robot": [dict(name=name, path=f"{name}/1.0.0", split="train", weight=1.0)],
    "data.vl_root": root + "/vl",
    "data.vl": [dict(name="tabletop_vqa", path="train.json", format="llava_json", weight=1.0)]
    if env == "tabletop"
    else [],
  }
  if tuple(cameras) != ("image",):
    fragment.update({"data.cameras": list(cameras), "model.num_cameras": len(cameras)})
  if env != "tabletop":
    fragment["data.robot_fraction"] = 1.0  # no VL data: robot only
  return fragment


def sim_record_cameras(cameras=("image",)) -> dict:
  """data.sim_record's camera setting: {} for the front camera alone (the recordings made before cameras
  existed), else {"cameras": [...]} (data/sim_record.ensure)."""
  return {} if tuple(cameras) == ("image",) else {"cameras": list(cameras)}


def vl_corpus_options() -> dict[str, str]:
  """The config options of the paper's VL co-training corpora, one per corpus of data/convert_vl.py PUBLISHED
  (llava, vqasynth, onevision, robopoint), each "" (left out) by default: keyword arguments of parse_arg."""
  from genvla_jax.data import convert_vl  # (imported here: config files need it only for these options)

  return {name: "" for name in convert_vl.PUBLISHED}


def published_vl(roots: dict[str, str]) -> dict:
  """The paper's VL corpora at their download folders ({option: ROOT}, an option of vl_corpus_options; ""
  leaves that corpus out) -> {config field: value} for `config.update_from_flattened_dict`: data.vl entries
  {name: the option, path: ROOT/<its published file or parquet glob> (absolute: data.vl_root plays no part),
  format, weight 1.0} -- the VL share of every batch split evenly among the corpora given; {} for none.
  Whether ROOT holds its layout is checked with the run's other checks (data/prepare.source_problems names
  the option and the layout)."""
  from genvla_jax.data import convert_vl

  unknown = sorted(set(roots) - set(convert_vl.PUBLISHED))
  if unknown:
    raise ValueError(f"unknown VL corpora {unknown}; the paper's: {', '.join(convert_vl.PUBLISHED)}")
  entries = []
  for name, spec in convert_vl.PUBLISHED.items():
    if roots.get(name):
      path = os.path.join(os.path.abspath(os.path.expanduser(roots[name])), spec.path)
      entries.append(dict(name=name, path=path, format=spec.format, weight=1.0))
  return {"data.vl": entries} if entries else {}


def vlm_start(start: str, variant: str, corpus_root, robot_view: int = 0) -> dict:
  """The start of a tabletop policy (option `vlm=`): "none" = the tiny model and the simulator recording's own
  tokenizer and VL set (nothing to change); "pretrained" = the project's VLM exported at VLM_DIR (its
  architecture, tokenizer and weights: config.pretrained, as a user starts from released PaliGemma weights),
  co-training on its corpus' train split; "scratch" = the same architecture, tokenizer and corpus from random
  weights (the contrast). Only for the `tabletop` variant (the VLM was pretrained on its world).
  `robot_view` > 0 (option `robot_view=N`): N questions about the robot's own view (which cube is where, in the
  demonstrations' scenes and appearance: vl_corpus.robot_view_split) co-trained beside the corpus, half the VL
  rows each. `corpus_root`: a FieldReference to data.corpus_dir (or a path)."""
  if start not in VLM_STARTS:
    raise ValueError(f"unknown vlm start {start!r}; one of {VLM_STARTS}")
  if start == "none":
    if robot_view:
      raise ValueError("robot_view=N co-trains beside the VLM's corpus: give vlm=pretrained or vlm=scratch")
    return {}
  if variant != "tabletop":
    raise ValueError(f"vlm={start} is for the tabletop variant (the VLM was pretrained on its world)")
  vl = [dict(name="tabletop_corpus", path="train.json", format="llava_json", weight=1.0)]
  if robot_view:
    path = "robot_view/robot_view.json"  # vl_corpus.ensure's folder for it (vl_corpus.ROBOT_VIEW_DIR)
    vl.append(dict(name="tabletop_robot_view", path=path, format="llava_json", weight=1.0))
  fragment = {
    "model.image_size": TABLETOP_VLM["image_size"],
    "model.img": dict(TABLETOP_VLM["img"]),
    "model.llm": dict(TABLETOP_VLM["llm"]),
    "tokenizer.bins_overwrite_text_ids": False,
    "tokenizer.max_text_len": 80,  # robot rows <= 74 tokens with the VLM tokenizer, corpus captions <= 63
    "data.corpus": dict(TABLETOP_CORPUS, **({"robot_view": robot_view} if robot_view else {})),
    "data.vl_root": corpus_root,
    "data.vl": vl,
  }
  if start == "pretrained":
    fragment.update(
      {
        "tokenizer.path": os.path.join(VLM_DIR, "tokenizer.model"),
        "pretrained.format": "hf",
        "pretrained.path": VLM_DIR,
      }
    )
  else:
    fragment["tokenizer.path"] = corpus_root + "/tokenizer.model"
  return fragment


def ablation(letters: str) -> dict:
  """letters: the subset of 'DSC' switched on (e.g. 'DS'; the others off) -> {config field: value}.
  D: dual encoder, S: string actions (else 256 bins), C: co-training (without it robot data only)."""
  unknown = set(letters) - set(ABLATION_LETTERS)
  if unknown:
    raise ValueError(f"unknown ablation letters {sorted(unknown)}; use a subset of {ABLATION_LETTERS!r}")
  fragment = {"model.dual_encoder": "D" in letters, "tokenizer.action": "string" if "S" in letters else "bins"}
  if "C" not in letters:
    fragment["data.robot_fraction"] = 1.0
  return fragment


def eval_config(
  env: str, env_kwargs: dict, tasks, protocols, episodes_per_task: int, num_envs: int, video_episodes: int
) -> ml_collections.ConfigDict:
  """Closed-loop evaluation settings (configs/eval_*.py; read by genvla_jax/eval/__main__.py)."""
  c = ml_collections.ConfigDict()
  c.env = env
  c.env_kwargs = dict(env_kwargs)
  c.tasks = list(tasks)
  c.protocols = list(protocols)
  c.episodes_per_task = episodes_per_task
  c.num_envs = num_envs  # environments stepped together (one batched policy call per re-plan)
  c.execute_steps = 1  # actions of each predicted chunk executed before re-planning
  c.seed = 0  # episode seeds seed, seed+1, ... (recorded demos use seeds >= 100000)
  c.video_episodes = video_episodes  # per (protocol, task): the first episodes are saved as videos
  c.video_format = "mp4"  # mp4 | gif
  c.lock()
  return c
