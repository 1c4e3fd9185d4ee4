#!/usr/bin/env bash
# One command on a fresh machine: install and run the default test suite (CPU, ~10 minutes).
#   bash launch/test.sh [pytest args]        e.g. bash launch/test.sh -m slow   (the long tests)
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
source "$ROOT/launch/setup_env.sh"
cd "$ROOT"
exec python -m pytest -q "$@"
