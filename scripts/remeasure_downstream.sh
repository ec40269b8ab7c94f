#!/usr/bin/env bash
# Re-measure everything downstream of the shipped policies (artifacts/stpn, artifacts/mstpn,
# artifacts/lstm) after they change, in the order a reader needs it, one stage after another:
#
#   eval       greedy scores: sticky actions 0.25, 30 games on seeds 1.5e9+i (never used in training),
#              the deterministic emulator beside (artifacts/*/eval_sticky.json, eval.json)
#   ablations  plasticity ablations (gamma = 0, lambda = 0) of the STPN and m-STPN, both protocols
#              (results/plasticity_ablations)
#   convert    conversion agreement and sparsity of the STPN (results/bench_conversion_stpn.txt)
#   backends   one full game of the converted STPN on every backend (results/backends_full_game/stpn),
#              and of the m-STPN with its synapses as memristor devices and as the ideal rule, under
#              sticky actions with the same seeded stream on every backend (results/device_game_every_backend)
#   energy     energy of one STPN game, memristive vs GPU vs Loihi-style (results/energy_stpn_dense)
#   run        the main job and its report on the shipped STPN (results/run_stpn)
#
# Usage: bash scripts/remeasure_downstream.sh [STAGE ...]       (default: every stage, in the order above)
# Sizes (environment): EPISODES=30 games per evaluation; FRAMES=20000: the recorded frames every backend
# replays for its agreement with PyTorch, and the agent-step cap of each device game (the STPN's full
# games run to the game's end); BACKENDS, DEVICE_BACKENDS: the backends of the two full-game stages;
# OUT=results.  Small values give a quick smoke run, e.g.
#   OUT=/tmp/rm EPISODES=1 FRAMES=200 bash scripts/remeasure_downstream.sh ablations backends
# (eval always writes into artifacts/).  Every stage is one process on one core (OMP_NUM_THREADS=1);
# on the 2-core CPU machine the whole list takes several hours, most of it the Brian2 full games.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=.venv/bin/python
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1
OUT=${OUT:-results}
EPISODES=${EPISODES:-30}
FRAMES=${FRAMES:-20000}
BACKENDS=${BACKENDS:-torch numpy numpy-fixed lava lava-fixed brian2-standalone snntorch brian2}
DEVICE_BACKENDS=${DEVICE_BACKENDS:-numpy torch brian2 numpy-fixed lava lava-fixed}
ALL=(eval ablations convert backends energy run)
[ "$#" -eq 0 ] && set -- "${ALL[@]}"
for stage in "$@"; do
  case " ${ALL[*]} " in *" $stage "*) ;; *) echo "unknown stage '$stage' (stages: ${ALL[*]})" >&2; exit 2 ;; esac
done
for p in stpn mstpn; do
  [ -f "artifacts/$p/policy.safetensors" ] || { echo "no artifacts/$p/policy.safetensors" >&2; exit 2; }
done
mkdir -p "$OUT"

for stage in "$@"; do
  echo "== $stage ($(date -u +%H:%M:%S) UTC)"
  case $stage in
  eval)
    EPISODES=$EPISODES bash scripts/evaluate_artifacts.sh artifacts/stpn artifacts/mstpn artifacts/lstm ;;
  ablations)
    $PY scripts/plasticity_ablations.py --episodes "$EPISODES" --out "$OUT/plasticity_ablations" ;;
  convert)
    $PY benchmarks/bench_conversion.py --checkpoint artifacts/stpn/policy.safetensors --seed 1500000000 --max-frames "$FRAMES" \
      --json "$OUT/bench_conversion_stpn.json" | tee "$OUT/bench_conversion_stpn.txt" ;;
  backends)
    # $BACKENDS is a word list on purpose
    # shellcheck disable=SC2086
    $PY benchmarks/bench_backends.py --checkpoint artifacts/stpn/policy.safetensors --frames "$FRAMES" --games \
      --seed 1500000000 --backends $BACKENDS --out "$OUT/backends_full_game/stpn"
    # shellcheck disable=SC2086
    $PY scripts/device_game_every_backend.py --checkpoint artifacts/mstpn/policy.safetensors \
      --out "$OUT/device_game_every_backend" --backends $DEVICE_BACKENDS --seed 1500000000 --sticky 0.25 \
      --max-steps "$FRAMES" ;;
  energy)
    .venv/bin/mstpn energy artifacts/stpn/policy.safetensors --game -o "$OUT/energy_stpn_dense" ;;
  run)
    .venv/bin/mstpn run --out "$OUT/run_stpn" --no-progress ;;
  esac
done
echo "== done ($(date -u +%H:%M:%S) UTC)"
