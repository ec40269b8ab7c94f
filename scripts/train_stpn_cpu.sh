#!/usr/bin/env bash
# CPU training run of the STPN Pong agent (A2C, 16 envs x 5 steps, 1 torch thread), in the background,
# resumable.  Usage: bash scripts/train_stpn_cpu.sh        (starts, or resumes if runs/stpn_cpu has a run)
# Log: runs/stpn_cpu/train.log   PID: runs/stpn_cpu/train.pid   Stop: kill $(cat runs/stpn_cpu/train.pid)
# (SIGTERM saves a resume checkpoint first.)
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=runs/stpn_cpu
mkdir -p "$OUT"
RESUME=""
[ -f "$OUT/checkpoint_latest.safetensors" ] && RESUME="--resume"
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1
setsid nohup .venv/bin/python -m snn_agent.cli train --model stpn --action-set updown \
    --num-envs 16 --n-steps 5 --frames 25000000 --seed 0 --threads 1 \
    --checkpoint-every 180 --snapshot-every 500000 --device cpu --out "$OUT" --no-progress $RESUME \
    >> "$OUT/train.log" 2>&1 < /dev/null &
echo $! > "$OUT/train.pid"
echo "started PID $(cat "$OUT/train.pid"), log $OUT/train.log"
