#!/usr/bin/env bash
# Evaluate shipped policies on CPU, greedy, under the standard protocol (sticky actions 0.25, EPISODES=30
# games, game i seeded 1,500,000,000 + i, never used in training: DIR/eval_sticky.json) and on the
# deterministic emulator beside it (sticky 0, the same seeds: DIR/eval.json).
# Usage: bash scripts/evaluate_artifacts.sh [DIR ...]   (default: every artifacts/*/ with a policy)
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "$#" -eq 0 ]; then set -- $(dirname artifacts/*/policy.safetensors); fi
for dir in "$@"; do
  [ -f "$dir/policy.safetensors" ] || { echo "no policy.safetensors in $dir" >&2; exit 2; }
  for sticky in 0.25 0; do
    [ "$sticky" = 0 ] && out=eval.json || out=eval_sticky.json
    OMP_NUM_THREADS=1 .venv/bin/mstpn evaluate "$dir/policy.safetensors" --episodes "${EPISODES:-30}" \
      --sticky "$sticky" --out "$dir/$out" --no-progress
  done
done
