#!/usr/bin/env bash
# Single node, several GPUs: one process drives all visible GPUs (the mesh spans them; no
# jax.distributed needed). On first use installs genvla_jax[gpu] (jax[cuda12], no test extra) into .venv-gpu.
#   bash launch/multi_gpu.sh CONFIG WORKDIR [train flags]
#   e.g. bash launch/multi_gpu.sh configs/pi0_plus.py /data/runs/pi0plus --config.mesh.fsdp=8
# Environment: CUDA_VISIBLE_DEVICES (which GPUs), GENVLA_VENV (default .venv-gpu), GENVLA_EXTRAS (default
# gpu), GENVLA_EXTRA_PIP (more requirements, e.g. wandb),
# XLA_PYTHON_CLIENT_MEM_FRACTION (default 0.95: share of GPU memory JAX may take).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CONFIG="${1:?usage: multi_gpu.sh CONFIG WORKDIR [train flags]}"
WORKDIR="${2:?usage: multi_gpu.sh CONFIG WORKDIR [train flags]}"
shift 2
export GENVLA_VENV="${GENVLA_VENV:-$ROOT/.venv-gpu}" GENVLA_EXTRAS="${GENVLA_EXTRAS:-gpu}"
export XLA_PYTHON_CLIENT_MEM_FRACTION="${XLA_PYTHON_CLIENT_MEM_FRACTION:-0.95}"
# shellcheck source=launch/setup_env.sh
source "$ROOT/launch/setup_env.sh"
cd "$ROOT"
exec python -m genvla_jax.train --config="$CONFIG" --workdir="$WORKDIR" "$@"
