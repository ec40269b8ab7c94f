"""What the agent's step (frameskip 4, this project's setting, or 1, the STPN reference's RLlib
reading) changes: the lambda range the device's bias range gives, and the energy of one game.

    python scripts/frameskip_effect.py [--frames 8272] [--params PARAMS.json]

Inputs: the device parameters (default: the published preset), a game of ``--frames`` emulator
frames at 60 Hz (default 8,272: the shipped STPN's deterministic game, 2,068 agent steps at
frameskip 4), the dense STPN layer (169,984 synapses, one update pulse per plastic synapse per
agent step: the energy model's assumption). Prints a Markdown table (docs/energy.md shows it).
"""
from __future__ import annotations

import argparse

from memristor.params import DeviceParams
from mstpn.energy.counts import RunCounts, stpn_layer_counts
from mstpn.energy.report import energy_report


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frames", type=int, default=8272, help="game length in emulator frames (default: 8272)")
    ap.add_argument("--params", help="device parameter JSON (default: the published preset)")
    args = ap.parse_args(argv)
    p = DeviceParams.load(args.params) if args.params else DeviceParams()
    print("| frameskip | dt per agent step | lambda range (bias 0..0.6 V) | agent steps per game | "
          "memristive bias | memristive pulses | A100 fp16 optimal |")
    print("|---|---|---|---|---|---|---|")
    for fs in (4, 1):
        dt = fs / 60.0
        lo, hi = p.lambda_range(dt)
        steps = -(-args.frames // fs)
        counts = RunCounts((stpn_layer_counts(2592, 64, steps),), steps=steps, frames=args.frames, frameskip=fs,
                           source=f"dense STPN layer, frameskip {fs}")
        e = {}
        for r in energy_report(counts, params=p).rows:
            e[(r.backend, r.component)] = e.get((r.backend, r.component), 0.0) + r.energy_j
        gpu = sum(v for (b, _), v in e.items() if b == "gpu-a100-fp16-optimal")
        print(f"| {fs} | {dt * 1e3:.2f} ms | {lo:.4f} .. {hi:.4f} | {steps:,} | "
              f"{e[('memristive', 'bias')] * 1e3:.1f} mJ | {e[('memristive', 'pulse')] * 1e3:.2f} mJ | "
              f"{gpu * 1e3:,.0f} mJ |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
