#!/usr/bin/env bash
# One command on a fresh machine: install, record the tabletop benchmark's expert demonstrations (MuJoCo,
# CPU; front and wrist cameras, RLDS written by TFDS) and generate the VL corpus, fine-tune pi0+ (D+S+C) from
# the project's small pretrained VLM (shipped in the package) on CPU (configs/demo_tabletop.py), then report
# the held-out action error against the mean-action baseline and the closed-loop success per task and
# protocol (visual matching, variant aggregation, background masking, paraphrases;
# 5 episodes each).
#   bash launch/demo.sh [WORKDIR] [extra train flags, e.g. --config.train.steps=300]
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
source "$ROOT/launch/setup_env.sh"
WORKDIR="${1:-$ROOT/workdirs/demo}"
shift || true
cd "$ROOT"
python -m genvla_jax.train --config=configs/demo_tabletop.py --workdir="$WORKDIR" "$@"
echo "== held-out action error (val split: expert episodes with unseen seeds) =="
python -m genvla_jax.predict --workdir="$WORKDIR" --eval_split=val --num_examples=200
echo "== closed-loop success (report: $WORKDIR/eval/tabletop/report.md) =="
python -m genvla_jax.eval --config=configs/eval_tabletop.py:quick --workdir="$WORKDIR" 2>&1 | grep -v "^[IW][0-9]"
