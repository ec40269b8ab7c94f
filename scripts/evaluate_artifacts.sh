#!/usr/bin/env bash
# Evaluate every shipped policy in artifacts/ on CPU: 20 greedy games with fixed seeds (game i is
# seeded 1000 + i), writing artifacts/<name>/eval.json. Usage: bash scripts/evaluate_artifacts.sh [EPISODES]
set -euo pipefail
cd "$(dirname "$0")/.."
EPISODES=${1:-20}
for ckpt in artifacts/*/policy.safetensors; do
  dir=$(dirname "$ckpt")
  .venv/bin/mstpn evaluate "$ckpt" --episodes "$EPISODES" --seed 1000 --json "$dir/eval.json" --no-progress
done
