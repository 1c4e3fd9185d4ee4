#!/usr/bin/env bash
# Creates .venv (if missing) and installs requirements.txt into it (plus GENVLA_EXTRA_PIP, e.g.
# "jax[cuda12]==0.10.2" or "jax[tpu]==0.10.2" for accelerators). Sourced by the other scripts; re-installs
# only when requirements.txt or GENVLA_EXTRA_PIP changed. PYTHON: interpreter for the venv (python3).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PYTHON="${PYTHON:-python3}"
if [ ! -x "$ROOT/.venv/bin/python" ]; then
  "$PYTHON" -m venv "$ROOT/.venv"
fi
EXTRA_PIP="${GENVLA_EXTRA_PIP:-}"
STAMP="$ROOT/.venv/.requirements.sha256"
WANT="$( (cat "$ROOT/requirements.txt"; echo "$EXTRA_PIP") | sha256sum | cut -d' ' -f1)"
if [ ! -f "$STAMP" ] || [ "$(cat "$STAMP")" != "$WANT" ]; then
  "$ROOT/.venv/bin/python" -m pip install -q --upgrade pip
  "$ROOT/.venv/bin/python" -m pip install -q -r "$ROOT/requirements.txt"
  if [ -n "$EXTRA_PIP" ]; then
    read -r -a extra <<< "$EXTRA_PIP"
    "$ROOT/.venv/bin/python" -m pip install -q "${extra[@]}"
  fi
  echo "$WANT" > "$STAMP"
fi
export PATH="$ROOT/.venv/bin:$PATH"
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"
