#!/usr/bin/env bash
# One unattended job for a GPU machine (sized for 1 GPU and 16 cores): train STPN, m-STPN and the
# LSTM baseline side by side on the GPU, measure GPU energy, and pack everything as tarballs.
#
# Tested on CPU with DEVICE=cpu and a tiny TIME_LIMIT (docs/training.md, "Training on a GPU
# machine").  For a GPU machine without a package registry, first download the wheels its Python
# lacks (gymnasium, ale-py, farama-notifications: scripts/fetch_gpu_wheels.sh) into .whl/ and copy
# that folder next to the checkout; then run:
#
#     bash scripts/gpu_session.sh
#
# Each run stops after TIME_LIMIT seconds (default 420) and leaves a resume checkpoint, so a CPU
# machine can carry it on:  mstpn train --out runs/<model>_gpu --resume --env-threads 1
#
# Each model trains from scratch with recurrent PPO under sticky actions 0.25 (the training env's default;
# ALGO=a2c: A2C with 5-step rollouts), or with FROM_ARTIFACTS=1 from its shipped policy
# (artifacts/<model>/policy.safetensors: weights and frame count, fresh optimiser).
# Environment: DEVICE (cuda), ALGO (ppo), TIME_LIMIT (420 s), NUM_ENVS (64), ENV_THREADS (5 per run),
# MODELS ("stpn mstpn lstm"), SEED (0), FRAMES (50M: the end of the lr schedule), FROM_ARTIFACTS (0),
# OUT (output folder; default out/gpu_session).
set -uo pipefail
cd "$(dirname "$0")/.."
DEVICE=${DEVICE:-cuda}
TIME_LIMIT=${TIME_LIMIT:-420}
NUM_ENVS=${NUM_ENVS:-64}
ENV_THREADS=${ENV_THREADS:-5}
MODELS=${MODELS:-stpn mstpn lstm}
ALGO=${ALGO:-ppo}
ALGO_ARGS=(--algo "$ALGO")
[ "$ALGO" = a2c ] && ALGO_ARGS+=(--n-steps 5)   # PPO keeps its own rollout length (128) and epochs
SEED=${SEED:-0}
OUT=${OUT:-out/gpu_session}
mkdir -p "$OUT" runs
export PYTHONUNBUFFERED=1 OMP_NUM_THREADS=1 MKL_NUM_THREADS=1

PY=${PY:-python3}
[ -x .venv/bin/python ] && [ "$DEVICE" = cpu ] && PY=.venv/bin/python
# the carried wheels, only where the packages are missing (the device image lacks ale-py, gymnasium)
if ! "$PY" -c "import ale_py, gymnasium" 2>/dev/null && compgen -G ".whl/*.whl" > /dev/null; then
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target /tmp/site .whl/*.whl || exit 1
    export PYTHONPATH="/tmp/site:${PYTHONPATH:-}"
fi
export PYTHONPATH="$PWD:${PYTHONPATH:-}"
"$PY" -c "import torch, ale_py, gymnasium, safetensors; print('torch', torch.__version__, 'cuda', torch.cuda.is_available(), 'ale-py', ale_py.__version__)" \
    2>&1 | tee "$OUT/session.log" || exit 1

pids=()
for m in $MODELS; do
    run=runs/${m}_gpu
    # continue this GPU run if it exists, else start from scratch (FROM_ARTIFACTS=1: from the shipped weights)
    resume=""
    if [ -f "$run/checkpoint_latest.safetensors" ]; then
        resume="--resume"
    elif [ -f "artifacts/$m/policy.safetensors" ] && [ "${FROM_ARTIFACTS:-0}" = 1 ]; then
        resume="--init-from artifacts/$m/policy.safetensors"
    fi
    mkdir -p "$run"
    "$PY" -m snn_agent.cli train --model "$m" --action-set updown --num-envs "$NUM_ENVS" "${ALGO_ARGS[@]}" \
        --frames "${FRAMES:-50000000}" --seed "$SEED" --threads 1 --env-threads "$ENV_THREADS" --device "$DEVICE" \
        --checkpoint-every 60 --snapshot-every 1000000 --time-limit "$TIME_LIMIT" --out "$run" \
        --no-progress $resume > "$run/train.log" 2>&1 &
    pids+=($!)
done
for p in "${pids[@]}"; do wait "$p"; done

if [ "$DEVICE" = cuda ]; then
    "$PY" benchmarks/gpu_energy.py --out "$OUT/gpu_energy.json" >> "$OUT/session.log" 2>&1
fi
for m in $MODELS; do
    run=runs/${m}_gpu
    tail -n 3 "$run/train.log" >> "$OUT/session.log"
    # snapshots stay behind (size); the resume point, best checkpoint, curve and log travel
    tar -czf "$OUT/${m}_gpu.tar.gz" --exclude=snapshots "$run"
done
ls -l "$OUT" | tee -a "$OUT/session.log"
