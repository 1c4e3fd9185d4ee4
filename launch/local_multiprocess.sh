#!/usr/bin/env bash
# Multi-host training rehearsed on one machine: N processes on localhost, each with its own simulated
# CPU devices, talking through jax.distributed (explicit coordinator) and gloo collectives. The same
# code path as a pod or a SLURM job; tests/test_multiprocess.py runs it and checks it against one process.
#   NUM_PROCESSES=2 DEVICES_PER_PROCESS=4 bash launch/local_multiprocess.sh CONFIG WORKDIR [train flags]
# Environment: NUM_PROCESSES (2), DEVICES_PER_PROCESS (4), PORT (coordinator port, 12355),
# PYTHON (interpreter with the requirements installed; default: .venv/bin/python, else python3).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CONFIG="${1:?usage: local_multiprocess.sh CONFIG WORKDIR [train flags]}"
WORKDIR="${2:?usage: local_multiprocess.sh CONFIG WORKDIR [train flags]}"
shift 2
NUM_PROCESSES="${NUM_PROCESSES:-2}"
DEVICES_PER_PROCESS="${DEVICES_PER_PROCESS:-4}"
PORT="${PORT:-12355}"
if [ -z "${PYTHON:-}" ]; then
  if [ -x "$ROOT/.venv/bin/python" ]; then PYTHON="$ROOT/.venv/bin/python"; else PYTHON=python3; fi
fi
cd "$ROOT"
pids=()
for ((i = 0; i < NUM_PROCESSES; i++)); do
  JAX_PLATFORMS=cpu XLA_FLAGS="--xla_force_host_platform_device_count=$DEVICES_PER_PROCESS" \
    PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}" \
    "$PYTHON" -m genvla_jax.train --config="$CONFIG" --workdir="$WORKDIR" \
    --config.distributed.coordinator_address="localhost:$PORT" \
    --config.distributed.num_processes="$NUM_PROCESSES" --config.distributed.process_id="$i" "$@" &
  pids+=("$!")
done
trap 'kill -TERM "${pids[@]}" 2>/dev/null || true' TERM INT  # preemption reaches every process
status=0
for pid in "${pids[@]}"; do
  wait "$pid" || status=$?
done
exit "$status"
