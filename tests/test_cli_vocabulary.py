"""One CLI vocabulary: a run directory is --workdir on every command line (--checkpoint, the older spelling,
is an alias), and a mistyped one is one line on stderr (exit 2) that names it and creates nothing."""

import os
import subprocess
import sys

from absl import flags
import pytest

from genvla_jax import cli

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
POLICY_MESSAGE = "error: run directory {run} does not exist (give a run directory that genvla_jax.train wrote)"
FLAG_MESSAGE = "error: --{flag}={run}: no such run directory"

# name -> (module, arguments besides the run directory (paths under the CLI's own folder), expected line)
CLIS = {
  "predict": ("genvla_jax.predict", ["--eval_split=val"], POLICY_MESSAGE),
  "eval": ("genvla_jax.eval", [f"--config={ROOT}/configs/eval_tabletop.py:quick"], FLAG_MESSAGE),
  "serve": ("genvla_jax.serve", [], FLAG_MESSAGE),
  "vqa": ("genvla_jax.eval.vqa", ["--benchmark=pope", "--annotations={here}/questions.jsonl"], FLAG_MESSAGE),
  "representation": ("genvla_jax.eval.representation", ["--data={here}/images"], FLAG_MESSAGE),
  "export": ("genvla_jax.tools.export_hf", ["--out={here}/exported"], FLAG_MESSAGE),
}
# (CLI, spelling of the run-directory flag): every CLI with --workdir, a few with the old --checkpoint
CASES = [(name, "workdir") for name in CLIS] + [("eval", "checkpoint"), ("export", "checkpoint")]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
  """Every case run at once (each costs seconds of imports): (name, flag) -> (folder, run, result)."""
  env = dict(os.environ, PYTHONPATH=ROOT, JAX_PLATFORMS="cpu")
  env.pop("GENVLA_API_KEY", None)
  started = {}
  for name, flag in CASES:
    here = tmp_path_factory.mktemp(f"{name}_{flag}")
    run = here / "nonexistent" / "run"
    module, args, _ = CLIS[name]
    command = [sys.executable, "-m", module, f"--{flag}={run}", *(a.format(here=here) for a in args)]
    process = subprocess.Popen(command, cwd=here, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    started[name, flag] = here, run, process
  out = {}
  for key, (here, run, process) in started.items():
    stdout, stderr = process.communicate(timeout=120)
    out[key] = here, run, (process.returncode, stdout, stderr)
  return out


@pytest.mark.parametrize("name, flag", CASES)
def test_a_mistyped_run_directory_is_one_line_and_creates_nothing(runs, name, flag):
  here, run, (returncode, stdout, stderr) = runs[name, flag]
  assert returncode == 2, stderr[-3000:]
  assert stderr.strip().splitlines() == [CLIS[name][2].format(flag=flag, run=run)], stderr[-3000:]
  assert stdout == ""
  assert os.listdir(here) == []  # neither the run directory nor any output (--out, eval/, ...)


def test_the_run_directory_flag_is_workdir_with_checkpoint_as_its_alias(tmp_path):
  for spelled in ("workdir", "checkpoint"):
    values = flags.FlagValues()
    cli.define_run_dir_flag("run directory", flag_values=values)
    values(["prog", f"--{spelled}={tmp_path}"])
    assert values.workdir == str(tmp_path) and cli.run_dir(values) == str(tmp_path)
    assert "canonical name; --checkpoint is an alias" in values["workdir"].help
    assert values["checkpoint"].help == "Alias for --workdir."
    values.unparse_flags()
    values(["prog", f"--{spelled}={tmp_path}/mistyped"])
    with pytest.raises(cli.UserError) as error:
      cli.run_dir(values)
    assert str(error.value) == f"--{spelled}={tmp_path}/mistyped: no such run directory"
  assert not (tmp_path / "mistyped").exists()


def test_the_run_directory_flag_is_required_in_either_spelling():
  values = flags.FlagValues()
  cli.define_run_dir_flag("run directory", flag_values=values)
  with pytest.raises(flags.IllegalFlagValueError, match="workdir"):
    values(["prog"])
