"""The package's layering, enforced (WORKSPACE.md, "Layers"):

  cli | envs < models < tokenizers < heads < data < sharding < pretrained < training < inference
    < eval | serving < entry points

Every internal import (module level and inside functions, `import x`, `from x import y`, relative, and
module names handed to importlib as strings) must go down this stack or stay inside its own layer;
`|` separates siblings that must not import each other. On top of that the robot side takes only what
acting needs from below: inference and serving read data's shared preprocessing and observation
transform (never the conversion stack or the grain pipeline) and restore runs through training's
checkpoint/state (never the training loop). A fresh interpreter that imports the policy or the server
must load no converter, tensorflow_datasets, array_record or grain.
"""

import ast
import json
import os
import pathlib
import re
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "genvla_jax"

# Lowest first; each entry is one rank: {layer name: module prefixes}. Layers of one rank are siblings.
# A module belongs to the layer of its longest matching prefix.
LAYERS = [
  {
    "cli": ["genvla_jax", "genvla_jax.cli"],
    "envs": ["genvla_jax.eval.envs"],
  },  # the simulators: imported by eval and by data (recording)
  {"models": ["genvla_jax.models"]},
  {"tokenizers": ["genvla_jax.tokenizers"]},
  # action heads (loss + prediction); the decoders and the flow sampler they predict with live in inference/
  {"heads": ["genvla_jax.heads", "genvla_jax.inference.decode", "genvla_jax.inference.flow_sampler"]},
  {"data": ["genvla_jax.data"]},
  {"sharding": ["genvla_jax.training.sharding"]},  # mesh + parameter layout (jax, models only)
  {"pretrained": ["genvla_jax.pretrained"]},
  {"training": ["genvla_jax.training"]},
  {"inference": ["genvla_jax.inference"]},
  {"eval": ["genvla_jax.eval"], "serving": ["genvla_jax.serving"]},
  {
    "entry points": [
      "genvla_jax.train",
      "genvla_jax.predict",
      "genvla_jax.serve",
      "genvla_jax.tools",
      "genvla_jax.config_lib",
      "genvla_jax.console",  # the installed console commands: each runs one of the CLIs above
    ]
  },
]
LAYERS_LINE = " < ".join(" | ".join(rank) for rank in LAYERS)

# (importing layer, imported layer) -> the only modules it may take from there.
RESTORE = {"genvla_jax.training.checkpoint", "genvla_jax.training.state", "genvla_jax.training.run_dir"}
SHARED_PREPROCESSING = {"genvla_jax.data.preprocess", "genvla_jax.data.stats", "genvla_jax.data.transforms"}
ONLY = {
  ("inference", "data"): SHARED_PREPROCESSING,
  ("serving", "data"): SHARED_PREPROCESSING,
  ("inference", "training"): RESTORE,
  ("serving", "training"): RESTORE,
}

# What `import genvla_jax.inference.policy` / `genvla_jax.serving.server` must not load.
CONVERTERS = [
  "convert",
  "convert_vl",
  "rlds",
  "rlds_writer",
  "inspect",
  "prepare",
  "instruction_aug",
  "demo",
  "sim_record",
  "vl",
  "pipeline",
]
NOT_LOADED = (
  ["tensorflow_datasets", "array_record", "grain", "tensorflow"]
  + [f"genvla_jax.data.{m}" for m in CONVERTERS]
  + [
    "genvla_jax.train",
    "genvla_jax.training.trainer",
    "genvla_jax.training.step",
    "genvla_jax.training.loop",
    "genvla_jax.training.optimizer",
  ]
)

_MODULE_NAME = re.compile(r"genvla_jax(\.\w+)+")


def _modules() -> dict[str, pathlib.Path]:
  """Every module of the package: dotted name -> file."""
  out = {}
  for path in sorted(PACKAGE.rglob("*.py")):
    parts = path.relative_to(ROOT).with_suffix("").parts
    out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
  return out


def _layer(module: str) -> tuple[str, int] | None:
  """(layer name, rank) of a module: its longest matching prefix."""
  best = None
  for rank, layers in enumerate(LAYERS):
    for name, prefixes in layers.items():
      for prefix in prefixes:
        if (module == prefix or module.startswith(prefix + ".")) and (best is None or len(prefix) > best[0]):
          best = (len(prefix), name, rank)
  return best and best[1:]


def _imports(module: str, path: pathlib.Path, modules) -> list[tuple[int, str]]:
  """(line, internal module) for every import in the file, wherever it sits, and every string that names
  an internal module (importlib registries)."""
  is_package = path.name == "__init__.py"
  out = []
  for node in ast.walk(ast.parse(path.read_text(), str(path))):
    if isinstance(node, ast.Import):
      out += [(node.lineno, alias.name) for alias in node.names]
    elif isinstance(node, ast.ImportFrom):
      base = node.module or ""
      if node.level:
        package = module.split(".") if is_package else module.split(".")[:-1]
        package = package[: len(package) - node.level + 1]
        base = ".".join(package + ([node.module] if node.module else []))
      for alias in node.names:  # `from pkg import mod` imports pkg.mod; `from mod import name` imports mod
        out.append((node.lineno, f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base))
    elif isinstance(node, ast.Constant) and isinstance(node.value, str) and _MODULE_NAME.fullmatch(node.value):
      out.append((node.lineno, node.value))
  return [(line, name) for line, name in out if name in modules]


def _violations() -> list[str]:
  modules = _modules()
  problems = []
  for module, path in modules.items():
    where = path.relative_to(ROOT)
    src = _layer(module)
    if src is None:
      problems.append(
        f"{where}: {module} belongs to no layer; add it to LAYERS (tests/test_layering.py) "
        "and to WORKSPACE.md's Layers line"
      )
      continue
    for line, target in _imports(module, path, modules):
      dst = _layer(target)
      if dst is None or dst[0] == src[0]:
        continue
      if dst[1] >= src[1]:
        relation = "a sibling of" if dst[1] == src[1] else "above"
        problems.append(
          f"{where}:{line}: {module} ({src[0]}) imports {target}, but {dst[0]} is {relation} {src[0]} ({LAYERS_LINE})"
        )
      elif (src[0], dst[0]) in ONLY and target not in ONLY[src[0], dst[0]]:
        problems.append(
          f"{where}:{line}: {module} ({src[0]}) imports {target}; from {dst[0]}, {src[0]} may "
          f"import only {sorted(ONLY[src[0], dst[0]])}"
        )
  return problems


def test_every_import_goes_down_the_layers():
  problems = _violations()
  assert not problems, "layering violations:\n" + "\n".join(problems)


def test_the_checker_sees_function_level_and_relative_imports(tmp_path, monkeypatch):
  """The check itself: a back-edge hidden inside a function, as a relative import, or as an importlib
  string, is reported with its file and line."""
  package = tmp_path / "genvla_jax"
  (package / "models").mkdir(parents=True)
  (package / "data").mkdir()
  for init in ("__init__.py", "models/__init__.py", "data/__init__.py"):
    (package / init).write_text("")
  (package / "data" / "stats.py").write_text("")
  (package / "models" / "vlm.py").write_text(
    "import os\n\n\ndef f():\n  from genvla_jax.data import stats\n  from ..data import stats as s\n"
    "  return 'genvla_jax.data.stats'\n"
  )
  monkeypatch.setattr(sys.modules[__name__], "ROOT", tmp_path)
  monkeypatch.setattr(sys.modules[__name__], "PACKAGE", package)
  problems = _violations()
  assert [p.split(": ")[0] for p in problems] == [
    os.path.join("genvla_jax", "models", "vlm.py") + f":{n}" for n in (5, 6, 7)
  ], problems
  assert "genvla_jax.models.vlm (models) imports genvla_jax.data.stats, but data is above models" in problems[0]


def test_layers_line_is_the_one_in_workspace():
  stated = LAYERS_LINE in " ".join((ROOT / "WORKSPACE.md").read_text().split())
  assert stated, f"WORKSPACE.md does not state the layering that tests/test_layering.py checks: {LAYERS_LINE}"


def test_policy_and_server_load_no_conversion_stack():
  """Fresh interpreter: the server first (alone), then the policy on top; what either loaded is checked."""
  code = (
    "import json, sys\nimport genvla_jax.serving.server\nserver = sorted(sys.modules)\n"
    "import genvla_jax.inference.policy\nprint(json.dumps([server, sorted(sys.modules)]))\n"
  )
  env = dict(os.environ, PYTHONPATH=str(ROOT), JAX_PLATFORMS="cpu")
  result = subprocess.run(
    [sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, env=env, timeout=120, check=False
  )
  assert result.returncode == 0, result.stderr[-3000:]
  server, policy = json.loads(result.stdout.strip().splitlines()[-1])
  for entry, loaded in (("genvla_jax.serving.server", server), ("genvla_jax.inference.policy", policy)):
    bad = [name for name in NOT_LOADED if any(m == name or m.startswith(name + ".") for m in loaded)]
    assert not bad, f"import {entry} loads {bad} (with their submodules)"
  assert "genvla_jax.inference.policy" in policy and "genvla_jax.training.checkpoint" in policy
