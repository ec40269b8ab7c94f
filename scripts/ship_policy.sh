#!/usr/bin/env bash
# Ship a trained checkpoint as artifacts/<name>/: the policy, its run's config and training curve,
# and its greedy evaluation on CPU under the standard protocol with the deterministic emulator beside
# (scripts/evaluate_artifacts.sh: eval_sticky.json and eval.json).  The artifacts README rows (command, seed,
# frames, wall time) are written by hand from the run's train.log and config.json.
# Usage: bash scripts/ship_policy.sh NAME CHECKPOINT   e.g. stpn runs/stpn3/checkpoint_best.safetensors
# PREV=DIR (optional): a run started with --init-from; its curve is prefixed with DIR/curve.csv's rows
# before the run's first frame, so the shipped curve shows the whole training history.
set -euo pipefail
cd "$(dirname "$0")/.."
NAME=$1
CKPT=$2
RUN=$(dirname "$CKPT")
[ "$(basename "$RUN")" = snapshots ] && RUN=$(dirname "$RUN")   # a kept snapshot: its run folder
DEST=artifacts/$NAME
mkdir -p "$DEST"
cp "$CKPT" "$DEST/policy.safetensors.tmp" && mv "$DEST/policy.safetensors.tmp" "$DEST/policy.safetensors"
for f in config.json curve.csv curve.png; do
  [ -f "$RUN/$f" ] && cp "$RUN/$f" "$DEST/$f"
done
if [ -n "${PREV:-}" ]; then
  .venv/bin/python - "$PREV" "$DEST" <<'PY'
import sys
from pathlib import Path
from snn_agent.train import read_curve, write_curve
prev, dest = Path(sys.argv[1]), Path(sys.argv[2])
rows = read_curve(dest)
start = rows[0]["frames"] if rows else float("inf")
write_curve(dest, [r for r in read_curve(prev) if r["frames"] < start] + rows)
PY
fi
bash scripts/evaluate_artifacts.sh "$DEST"
