"""The package as a user installs it (issue 21, item 1): the wheel ships every module, the config files
(as genvla_jax/configs) and the assets, declares a console command for every CLI, and its commands find
the shipped configs from any directory. Slow (`-m slow`, needs a package index): the wheel installed into a
fresh virtualenv outside the repository trains the tiny demo config for 2 steps and dry-runs the full-size
π0+ (3B) config."""

import configparser
import glob
import json
import os
import re
import shutil
import subprocess
import sys
import time
import zipfile

import pytest

from conftest import ROOT

# what setuptools reads to build the wheel (pyproject.toml); the build runs on a copy, so nothing
# (build/, *.egg-info) is written into the checkout
BUILD_INPUTS = ["pyproject.toml", "README.md", "genvla_jax", "configs"]


def _clean_env(**extra) -> dict:
  """The environment of a user's shell: no checkout on PYTHONPATH, no test-only XLA flags."""
  env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "XLA_FLAGS")}
  return dict(env, JAX_PLATFORMS="cpu", **extra)


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> str:
  src = tmp_path_factory.mktemp("src")
  for name in BUILD_INPUTS:
    path = os.path.join(ROOT, name)
    if os.path.isdir(path):
      shutil.copytree(path, src / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    else:
      shutil.copy(path, src / name)
  out = tmp_path_factory.mktemp("wheel")
  # --no-build-isolation: the venv's setuptools (in the lock), so the build needs no network
  result = subprocess.run(
    [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", str(src), "-w", str(out)],
    capture_output=True,
    text=True,
    timeout=300,
  )
  assert result.returncode == 0, result.stdout + result.stderr
  [path] = glob.glob(str(out / "genvla_jax-*.whl"))
  return path


def _entry_points(wheel) -> dict[str, str]:
  with zipfile.ZipFile(wheel) as z:
    [name] = [n for n in z.namelist() if n.endswith(".dist-info/entry_points.txt")]
    parser = configparser.ConfigParser()
    parser.read_string(z.read(name).decode())
  return dict(parser["console_scripts"])


def _cli_modules() -> set[str]:
  """Every module of the package with a command line (`cli.run(main)`)."""
  found = set()
  for path in glob.glob(os.path.join(ROOT, "genvla_jax", "**", "*.py"), recursive=True):
    if os.path.basename(path) != "cli.py" and re.search(r"^\s+cli\.run\(main\)", open(path).read(), re.M):
      parts = os.path.relpath(path, ROOT)[: -len(".py")].split(os.sep)
      found.add(".".join(parts[:-1] if parts[-1] == "__main__" else parts))
  return found


def test_wheel_ships_every_module_the_configs_and_the_assets(wheel):
  with zipfile.ZipFile(wheel) as z:
    names = set(z.namelist())
    [metadata] = [n for n in names if n.endswith(".dist-info/METADATA")]
    metadata = z.read(metadata).decode()
  package = glob.glob(os.path.join(ROOT, "genvla_jax", "**", "*.py"), recursive=True)
  package += glob.glob(os.path.join(ROOT, "genvla_jax", "assets", "**", "*"), recursive=True)
  package = {os.path.relpath(p, ROOT) for p in package if os.path.isfile(p)}
  missing = package - names
  assert not missing, f"pyproject.toml [tool.setuptools] packages / package-data miss {sorted(missing)}"
  configs = {f"genvla_jax/configs/{os.path.basename(p)}" for p in glob.glob(os.path.join(ROOT, "configs", "*.py"))}
  assert configs and configs <= names, configs - names
  assert {n for n in names if n.startswith("genvla_jax/assets/vlm_tabletop/")}, "the shipped VLM is missing"
  base = [line for line in metadata.splitlines() if line.startswith("Requires-Dist:") and "extra ==" not in line]
  extras = set(re.findall(r"^Provides-Extra: (\S+)", metadata, re.M))
  assert {"sim", "test", "gpu", "tpu"} <= extras, extras
  assert any(" jax" in line for line in base) and not any("torch" in line or "pytest" in line for line in base)


def test_every_cli_has_a_console_command_that_runs_it(wheel):
  """entry_points.txt -> genvla_jax.console functions (imported from the wheel itself), each running one
  module as `python -m` does; every module with a command line has one."""
  scripts = _entry_points(wheel)
  assert scripts["genvla-train"] == "genvla_jax.console:train"
  code = (
    "import importlib.util, json, sys\nfrom genvla_jax import console\n"
    "out = {}\nfor script, target in json.loads(sys.argv[1]).items():\n"
    "  module, attr = target.split(':')\n  assert module == 'genvla_jax.console', target\n"
    "  fn = getattr(console, attr)\n  assert callable(fn) and importlib.util.find_spec(fn.module), target\n"
    "  out[script] = fn.module\nprint(json.dumps([console.__file__, out]))\n"
  )
  result = subprocess.run(
    [sys.executable, "-c", code, json.dumps(scripts)],
    cwd=os.path.dirname(wheel),
    env=_clean_env(PYTHONPATH=wheel),  # a wheel is a zip: importable as it is
    capture_output=True,
    text=True,
    timeout=120,
  )
  assert result.returncode == 0, result.stderr
  where, modules = json.loads(result.stdout)
  assert where.startswith(wheel)
  assert _cli_modules() - set(modules.values()) == set(), "add these to genvla_jax/console.py and pyproject.toml"
  assert modules["genvla-train"] == "genvla_jax.train" and modules["genvla-eval"] == "genvla_jax.eval"


def test_installed_configs_are_found_by_name_outside_the_repository(wheel, tmp_path):
  """The wheel unpacked as site-packages would hold it, the command run from an unrelated directory: the
  config resolver finds the shipped file by name or by its repository path, the config loads through the
  --config flag, and the console command's error for an unknown file lists the shipped ones."""
  site, elsewhere = tmp_path / "site", tmp_path / "elsewhere"
  elsewhere.mkdir()
  with zipfile.ZipFile(wheel) as z:
    z.extractall(site)
  code = (
    "import json, sys\nfrom absl import flags\nfrom ml_collections import config_flags\n"
    "import genvla_jax\nfrom genvla_jax import config_files\n"
    "config_flags.DEFINE_config_file('config', None, 'config', lock_config=True)\n"
    "config_files.resolve_config_flags()\n"
    "sys.argv = ['x', '--config=pi0_plus.py:demo', '--config.train.steps=7']  # overrides are read from here\n"
    "flags.FLAGS(sys.argv)\n"
    "print(json.dumps([genvla_jax.__file__, config_files.config_dir(), config_files.resolve('configs/pi0_plus.py'),"
    " config_files.resolve('eval_tabletop:quick'), flags.FLAGS.config.train.steps,"
    " flags.FLAGS.config.model.image_size]))\n"
  )
  env = _clean_env(PYTHONPATH=str(site))
  result = subprocess.run(
    [sys.executable, "-c", code], cwd=elsewhere, env=env, capture_output=True, text=True, timeout=300
  )
  assert result.returncode == 0, result.stderr
  package, config_dir, by_path, by_name, steps, image_size = json.loads(result.stdout)
  assert package.startswith(str(site)) and config_dir == str(site / "genvla_jax" / "configs")
  assert by_path == os.path.join(config_dir, "pi0_plus.py")
  assert by_name == os.path.join(config_dir, "eval_tabletop.py") + ":quick"
  assert (steps, image_size) == (7, 32)  # the demo variant, with the override applied

  code = "import sys\nsys.argv = ['genvla-train', '--config=no_such.py', '--workdir=run']\n"
  code += "from genvla_jax import console\nconsole.train()\n"
  result = subprocess.run(
    [sys.executable, "-c", code], cwd=elsewhere, env=env, capture_output=True, text=True, timeout=300
  )
  assert result.returncode == 2, result.stderr
  assert "error: config file not found: no_such.py" in result.stderr and "pi0_plus.py" in result.stderr
  assert "Traceback" not in result.stderr and not (elsewhere / "run").exists()


# ---------------------------------------------------------------------------------------------------------
# slow: a real install


def _index_reachable(pip, pins, tmp_path) -> bool:
  [absl] = [line for line in open(pins).read().splitlines() if line.lower().startswith("absl-py==")]
  args = [*pip, "download", "--no-deps", "--no-cache-dir", "-q", "-d", str(tmp_path / "probe"), absl]
  try:
    return subprocess.run(args, capture_output=True, timeout=120).returncode == 0
  except subprocess.TimeoutExpired:
    return False


def _du_mib(path) -> int:
  return int(subprocess.run(["du", "-sm", str(path)], capture_output=True, text=True).stdout.split()[0])


@pytest.mark.slow
def test_fresh_install_trains_the_demo_and_dry_runs_the_full_size_config(wheel, tmp_path):
  """~2-4 minutes: venv + `pip install genvla_jax-*.whl` (no extras), then from a directory outside the
  repository `genvla-train` (a) 2 steps of the tiny demo config on a small generated demo set, (b)
  `--dry_run` of the full-size π0+ (PaliGemma 3B) config on that data: every check, one real batch at
  224 px, the plan, nothing written."""
  venv, work = tmp_path / "venv", tmp_path / "work"
  work.mkdir()
  subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300)
  # CI's versions (the lock has no index options: from whatever index pip is configured with)
  pip, pins = [str(venv / "bin" / "python"), "-m", "pip"], os.path.join(ROOT, "requirements", "ci-cpu.lock")
  if not _index_reachable(pip, pins, tmp_path):
    pytest.skip("pip cannot reach a package index (PyPI or a configured mirror): the install needs one")
  t = time.perf_counter()
  result = subprocess.run(
    [*pip, "install", "-q", "--no-cache-dir", "-c", pins, wheel], capture_output=True, text=True, timeout=1800
  )
  assert result.returncode == 0, result.stdout + result.stderr
  print(f"fresh install: {time.perf_counter() - t:.0f} s, venv {_du_mib(venv)} MiB")  # -s shows it
  env = _clean_env(PATH=f"{venv / 'bin'}:{os.environ['PATH']}")
  demo, cache = work / "demo", work / "cache"

  def run(*args, timeout=900):
    result = subprocess.run(args, cwd=work, env=env, capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result.stdout

  run(
    str(venv / "bin" / "python"),
    "-c",
    f"from genvla_jax.data import demo; demo.ensure({str(demo)!r}, train_episodes=24, val_episodes=6, "
    "vl_train=40, vl_val=8)",
  )
  out = run(
    "genvla-train",
    "--config=pi0_plus.py:demo",
    f"--workdir={work / 'run'}",
    f"--config.data.demo_dir={demo}",
    f"--config.data.cache_dir={cache}",
    "--config.data.batch_size=8",
    "--config.train.steps=2",
    "--config.train.log_every=1",
    "--config.train.checkpoint_every=2",
    "--config.optimizer.warmup_steps=1",
  )
  assert "step      2/2" in out, out
  assert (work / "run" / "metrics.jsonl").exists() and (work / "run" / "checkpoints").is_dir()

  out = run(
    "genvla-train",
    "--config=configs/pi0_plus.py",  # the README's spelling: no configs/ here, the shipped file is used
    f"--workdir={work / 'full'}",
    "--dry_run",
    f"--config.tokenizer.path={demo / 'tokenizer.model'}",
    f"--config.data.rlds_root={demo / 'rlds'}",
    f"--config.data.vl_root={demo / 'vl'}",
    f"--config.data.cache_dir={cache}",
    '--set=data.robot=[{"name": "demo_targets", "path": "demo_targets/1.0.0", "split": "train", "weight": 1.0}]',
    '--set=data.vl=[{"name": "demo_vqa", "path": "train.json", "format": "llava_json", "weight": 1.0}]',
  )
  assert "every check passed" in out and re.search(r"parameters: 3\.\d+ B total", out), out
  assert "one real batch" in out and "image [256, 224, 224, 3]" in out, out
  assert not (work / "full").exists()
