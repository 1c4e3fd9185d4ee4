#!/usr/bin/env bash
# The virtualenv the other scripts run in; sourced by them. Re-installs only when what it installs changed.
#   default (dev, tests, CI, demo): .venv with requirements/ci-cpu.lock + ci-cpu-torch.lock, i.e.
#     genvla_jax[sim,test] pinned (CPU jaxlib, CPU torch); the package itself is this checkout (PYTHONPATH)
#   GENVLA_EXTRAS=gpu|tpu (multi_gpu.sh, slurm.sbatch, tpu_pod.sh set it): `pip install -e ".[EXTRAS]"`, the
#     package with that extra only (no test extra: no torch next to jax[cuda12]), the lock as constraints
# Environment: GENVLA_VENV (the venv, default .venv), GENVLA_EXTRAS, GENVLA_EXTRA_PIP (more requirements,
# e.g. "wandb"), PYTHON (interpreter for a new venv: python3).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PYTHON="${PYTHON:-python3}"
VENV="${GENVLA_VENV:-$ROOT/.venv}"
EXTRAS="${GENVLA_EXTRAS:-}"
EXTRA_PIP="${GENVLA_EXTRA_PIP:-}"
LOCK="$ROOT/requirements/ci-cpu.lock"
TORCH_LOCK="$ROOT/requirements/ci-cpu-torch.lock"
if [ ! -x "$VENV/bin/python" ]; then
  "$PYTHON" -m venv "$VENV"
fi
STAMP="$VENV/.requirements.sha256"
WANT="$( (cat "$LOCK" "$TORCH_LOCK"; echo "extras=$EXTRAS pip=$EXTRA_PIP"; if [ -n "$EXTRAS" ]; then cat "$ROOT/pyproject.toml"; fi) \
  | sha256sum | cut -d' ' -f1)"
if [ ! -f "$STAMP" ] || [ "$(cat "$STAMP")" != "$WANT" ]; then
  pip=("$VENV/bin/python" -m pip install -q)
  "${pip[@]}" --upgrade pip
  extra=()
  if [ -n "$EXTRA_PIP" ]; then read -r -a extra <<< "$EXTRA_PIP"; fi
  if [ -z "$EXTRAS" ]; then
    "${pip[@]}" -r "$LOCK" "${extra[@]}"
    "${pip[@]}" --no-deps -r "$TORCH_LOCK"  # its dependencies are in the lock above
  else
    "${pip[@]}" -c "$LOCK" -e "${ROOT}[${EXTRAS}]" "${extra[@]}"
  fi
  echo "$WANT" > "$STAMP"
fi
export PATH="$VENV/bin:$PATH"
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"
