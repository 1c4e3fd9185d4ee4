"""Every config file x variant x option the configs document: the cases whose resolved values
tests/fixtures/resolved_configs.json pins (tests/test_config.py). Regenerate the fixture only for an
intended change of a config's values:

  python -m tests.config_cases > tests/fixtures/resolved_configs.json
"""

import importlib
import json
import os

import genvla_jax

_TRAIN_VARIANTS = ("full", "demo", "tabletop", "metaworld")
_BACKBONES = ("paligemma_224", "paligemma_448", "paligemma2_224", "paligemma2_448")
_MIXTURES = ("paper", "bridge", "fractal")
_LETTERS = ("", "D", "S", "C", "DS", "SC", "DC", "DSC")
# mixtures of several cameras (data/registry.py MIXTURE_CAMERAS); a LeRobot one reads robot_dir, a finished conversion
_CAMERA_MIXTURES = (
  "droid",
  "libero,robot_dir=/data/libero_converted",
  "droid_lerobot,robot_dir=/data/droid_lerobot_converted",
)

CASES = (
  [("pi0_plus", v) for v in _TRAIN_VARIANTS]
  + [("pi0_plus", f"{v},ablation={a}") for v in _TRAIN_VARIANTS for a in _LETTERS]
  + [("pi0_plus", f"full,backbone={b}") for b in _BACKBONES]
  + [("pi0_plus", f"full,mixture={m}") for m in _MIXTURES]
  + [("pi0_baseline", v) for v in _TRAIN_VARIANTS]
  + [("pi0_baseline", f"full,backbone={b}") for b in _BACKBONES]
  + [("pi0_baseline", f"full,mixture={m}") for m in _MIXTURES]
  + [("pi0_baseline", f"{v},horizon=8") for v in _TRAIN_VARIANTS]
  + [("openvla", v) for v in ("full", "demo")]
  + [("openvla", f"{v},ablation={a}") for v in ("full", "demo") for a in _LETTERS]
  + [("openvla", f"{v},dual=copy") for v in ("full", "demo")]
  + [("openvla", f"full,mixture={m}") for m in _MIXTURES]
  + [("openvla_plus", v) for v in ("full", "demo", "demo,dual=copy", "full,dual=copy")]
  + [("eval_tabletop", v) for v in ("full", "quick", "quick,protocols=paraphrase,tasks=pick_object+move_near")]
  + [("eval_metaworld", v) for v in ("full", "quick")]
  + [("eval_simpler", v) for v in ("google_robot", "widowx", "google_robot,episodes=3")]
  + [
    ("eval_libero", v)
    for v in ("full", "quick", "full,suite=spatial+object+goal+10", "quick,suite=90,tasks=0+1,trials=3")
  ]
  + [("pretrain_vlm", "tabletop")]
  + [(f, f"tabletop,vlm={v}") for f in ("pi0_plus", "pi0_baseline") for v in ("pretrained", "scratch")]
  + [("pi0_plus", f"tabletop,vlm=pretrained,ablation={a}") for a in _LETTERS]
  + [(f, "tabletop,vlm=pretrained,cameras=image+wrist_image") for f in ("pi0_plus", "pi0_baseline")]
  + [(f, f"full,mixture={m}") for f in ("pi0_plus", "pi0_baseline", "openvla") for m in _CAMERA_MIXTURES]
  + [("openvla_plus", "full,mixture=droid")]
  + [(f, "demo,mixture=libero,robot_dir=/data/libero_converted") for f in ("pi0_plus", "pi0_baseline", "openvla")]
  + [("demo_tabletop", v) for v in ("", "ablation=DS")]
)


def resolved(config_file: str, arg: str) -> dict:
  """configs/<config_file>.py:<arg> as the JSON a run saves (FieldReferences resolved), with the installed
  package's folder written as <genvla_jax> (paths into the package, e.g. config_lib.VLM_DIR, depend on where
  the checkout is)."""
  text = importlib.import_module(f"configs.{config_file}").get_config(arg).to_json()
  package = os.path.dirname(os.path.abspath(genvla_jax.__file__))
  return json.loads(text.replace(package, "<genvla_jax>"))


def all_resolved() -> dict:
  return {f"{name}:{arg}": resolved(name, arg) for name, arg in CASES}


if __name__ == "__main__":
  print(json.dumps(all_resolved(), indent=1, sort_keys=True))
