#!/usr/bin/env bash
# Every GPU measurement of issue 25 on one H100/H200 in under 8 minutes (benchmarks/gpu_suite.py's docstring has
# the plan). Results (tables, raw JSON, profiles, summary.md) go to GPU_SUITE_DIR (default /tmp/gpu_suite). With
# OUT set (the device machine's returned folder, which gives back at most 8 files of 16 MiB) they are also packed
# there: gpu_suite_summary.md, gpu_suite_tables.tgz (tables, JSON, logs) and gpu_suite_profiles.tgz (the traces;
# left out with a note when over 15 MiB). Extra arguments go to the suite:
#   bash benchmarks/gpu_suite.sh --budget_s=420 --only=train_step,decode
#   bash benchmarks/gpu_suite.sh --tiny            # the CPU rehearsal
# PYTHON picks the interpreter (default: the checkout's .venv when it has one, else python3).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
if [ -z "${PYTHON:-}" ]; then
  if [ -x "$ROOT/.venv/bin/python" ]; then PYTHON="$ROOT/.venv/bin/python"; else PYTHON=python3; fi
fi
DIR="${GPU_SUITE_DIR:-/tmp/gpu_suite}"
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
status=0
"$PYTHON" benchmarks/gpu_suite.py --out="$DIR" "$@" || status=$?
if [ -n "${OUT:-}" ] && [ -d "$DIR" ]; then
  cp "$DIR/summary.md" "$OUT/gpu_suite_summary.md" 2>/dev/null || true
  tar -czf "$OUT/gpu_suite_tables.tgz" -C "$DIR" --exclude=./profiles --exclude=./assets .
  tar -czf "$OUT/gpu_suite_profiles.tgz" -C "$DIR" profiles
  if [ "$(stat -c %s "$OUT/gpu_suite_profiles.tgz")" -gt $((15 * 1024 * 1024)) ]; then
    rm "$OUT/gpu_suite_profiles.tgz"
    echo "profiles over 15 MiB: left in $DIR/profiles, not packed into \$OUT"
  fi
fi
exit "$status"
