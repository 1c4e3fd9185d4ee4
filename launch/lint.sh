#!/usr/bin/env bash
# Style check (what CI runs before the tests): ruff's formatter and linter, configured in pyproject.toml.
#   bash launch/lint.sh          check only
#   bash launch/lint.sh --fix    reformat and apply the safe fixes
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
source "$ROOT/launch/setup_env.sh"
cd "$ROOT"
if [ "${1:-}" = "--fix" ]; then
  ruff format .
  ruff check --fix .
else
  ruff format --check .
  ruff check .
fi
