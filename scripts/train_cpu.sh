#!/usr/bin/env bash
# The CPU training runs of the Pong agents from scratch: recurrent PPO under sticky actions 0.25
# (16 envs x 128 steps, 4 epochs x 4 minibatches, lr 2.5e-4 decaying to 0 at 40M frames), one torch
# thread on one core at nice 10, in the background, carried on across machines.
#
#   bash scripts/train_cpu.sh MODEL start   resume runs/MODEL_ppo_sSEED; if it has no checkpoint, first copy
#                                           in the carried resume point (artifacts/training/MODEL_ppo_sSEED);
#                                           else start from scratch
#   bash scripts/train_cpu.sh MODEL save    copy the run's latest resume point (weights + optimiser/RNG state,
#                                           config, curve, tensorboard events) to artifacts/training/...,
#                                           for a commit; the run keeps going.  The snapshots stay in runs/:
#                                           each committed resume point, in the git history, is a candidate
#                                           checkpoint of its own
#   bash scripts/train_cpu.sh MODEL stop    SIGTERM (the run saves a resume checkpoint) and wait for it to exit
#   bash scripts/train_cpu.sh MODEL status  the last logged line (frames, score_mean20, steps/s)
#
# MODEL is stpn, mstpn or lstm.  SEED (default 1) and CORE (default: 1 for stpn, 0 otherwise) come from the
# environment.  Log: runs/MODEL_ppo_sSEED/train.log; the exact command is in the carried folder's COMMAND.txt.
set -euo pipefail
cd "$(dirname "$0")/.."
usage() { echo "usage: bash scripts/train_cpu.sh {stpn|mstpn|lstm} {start|save|stop|status}" >&2; exit 2; }
MODEL=${1:-}
case "$MODEL" in stpn|mstpn|lstm) ;; *) usage ;; esac
SEED=${SEED:-1}
case "$SEED" in ''|*[!0-9]*) echo "SEED must be a non-negative integer, got '$SEED'" >&2; exit 2 ;; esac
[ "$MODEL" = stpn ] && CORE=${CORE:-1} || CORE=${CORE:-0}
RUN=runs/${MODEL}_ppo_s$SEED
CARRY=${CARRY:-artifacts/training/${MODEL}_ppo_s$SEED}
PY=.venv/bin/python
ARGS=(-m snn_agent.cli train --algo ppo --model "$MODEL" --action-set updown --num-envs 16 --n-steps 128
      --frames 40000000 --seed "$SEED" --threads 1 --checkpoint-every 300 --snapshot-every 2000000 --out "$RUN"
      --no-progress)

running() { [ -f "$RUN/train.pid" ] && kill -0 "$(cat "$RUN/train.pid")" 2>/dev/null; }

case "${2:-status}" in
start)
    if running; then echo "already running (PID $(cat "$RUN/train.pid"))"; exit 0; fi
    mkdir -p "$RUN"
    if [ ! -f "$RUN/checkpoint_latest.safetensors" ] && [ -f "$CARRY/checkpoint_latest.safetensors" ]; then
        cp -r "$CARRY"/. "$RUN"/
        echo "copied the carried resume point from $CARRY"
    fi
    RESUME=()
    [ -f "$RUN/checkpoint_latest.safetensors" ] && RESUME=(--resume)
    export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1
    setsid nohup nice -n 10 taskset -c "$CORE" "$PY" "${ARGS[@]}" "${RESUME[@]}" >> "$RUN/train.log" 2>&1 < /dev/null &
    echo $! > "$RUN/train.pid"
    echo "started PID $(cat "$RUN/train.pid") ${RESUME[*]}, log $RUN/train.log"
    ;;
save)
    [ -f "$RUN/checkpoint_latest.safetensors" ] || { echo "no resume point in $RUN yet" >&2; exit 2; }
    mkdir -p "$CARRY"
    # the checkpoint and its optimiser state are written one after the other: copy until the pair matches
    for _ in 1 2 3 4 5; do
        cp "$RUN/checkpoint_latest.resume.pt" "$CARRY/" && cp "$RUN/checkpoint_latest.safetensors" "$CARRY/"
        if "$PY" -c "import sys; from snn_agent.checkpoint import load_resume_state; load_resume_state(sys.argv[1])" \
            "$CARRY/checkpoint_latest.safetensors" 2>/dev/null; then
            cp "$RUN/config.json" "$RUN/curve.csv" "$RUN/curve.png" "$CARRY/"
            rm -rf "$CARRY/tb" && cp -r "$RUN/tb" "$CARRY/tb"
            # one line per save in COMMAND.txt: date, frames, the last logged training score and speed
            "$PY" - "$CARRY" "$MODEL" "$SEED" "$CORE" "$RUN" "${ARGS[*]}" <<'PYEOF'
import csv, datetime, sys
from pathlib import Path
from snn_agent.checkpoint import read_metadata
carry, model, seed, core, run, args = Path(sys.argv[1]), *sys.argv[2:]
command = carry / "COMMAND.txt"
if not command.exists():  # the header of a new carried run: the exact command
    command.write_text(
        f"# {model.upper()} from scratch, recurrent PPO, sticky actions 0.25, seed {seed}: a run carried on "
        f"across machines.\n# Started {datetime.date.today()} on the 2-core CPU machine (core {core}, nice 10, "
        f"one torch thread), with\n#   bash scripts/train_cpu.sh {model} start\n# which runs\n"
        f"OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 nice -n 10 taskset -c {core} .venv/bin/python {args}\n"
        f"# and, when {run} (or this folder, copied there first) holds a checkpoint, the same with --resume.\n"
        "# This folder holds the latest resume point (checkpoint_latest.safetensors + .resume.pt: weights, Adam "
        "and RNG\n# state), the curve and the tensorboard events, saved with "
        f"`bash scripts/train_cpu.sh {model} save`.\n"
        "# Progress per sitting (frames at the end, the last logged training score and agent steps/s):\n")
frames = read_metadata(carry / "checkpoint_latest.safetensors")["progress"]["frames"]
rows = [r for r in csv.DictReader(open(carry / "curve.csv")) if int(float(r["frames"])) <= frames]
last = rows[-1] if rows else {}
line = (f"# {datetime.date.today()}: saved at {frames} frames, score_mean20 {last.get('score_mean20', '-')}, "
        f"{last.get('steps_per_s', '-')} agent steps/s")
with open(command, "a") as fh:
    fh.write(line + "\n")
print(f"saved the resume point at {frames} frames to {carry}")
PYEOF
            exit 0
        fi
        sleep 5
    done
    echo "the checkpoint kept changing while it was copied; try again" >&2; exit 1
    ;;
stop)
    if ! running; then echo "not running"; exit 0; fi
    pid=$(cat "$RUN/train.pid"); kill -TERM "$pid"
    while kill -0 "$pid" 2>/dev/null; do sleep 1; done
    tail -n 1 "$RUN/train.log"
    ;;
status)
    running && echo "running (PID $(cat "$RUN/train.pid"))" || echo "not running"
    [ -f "$RUN/train.log" ] && grep '^{' "$RUN/train.log" | tail -n 1 | cut -c1-160 || true
    ;;
*)
    usage ;;
esac
