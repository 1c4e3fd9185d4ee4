#!/usr/bin/env bash
# One command on a fresh machine: install, generate the embedded demo data, train the tiny pi0+ (D+S+C)
# on CPU, then report the held-out action error against the mean-action baseline.
#   bash launch/demo.sh [WORKDIR] [extra train flags, e.g. --config.train.steps=300]
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
source "$ROOT/launch/setup_env.sh"
WORKDIR="${1:-$ROOT/workdirs/demo}"
shift || true
cd "$ROOT"
python -m genvla_jax.train --config=configs/pi0_plus.py:demo --workdir="$WORKDIR" "$@"
echo "== held-out action error (val split) =="
python -m genvla_jax.predict --workdir="$WORKDIR" --eval_split=val --num_examples=200
echo "== action error on training frames =="
python -m genvla_jax.predict --workdir="$WORKDIR" --eval_split=train --num_examples=200
