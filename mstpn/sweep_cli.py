"""``mstpn sweep SPEC -o OUT [--address ADDR] [--workers N]``: a grid or random search over device
parameters, seeds and protocols, each trial a seeded device-in-the-loop evaluation of a checkpoint,
run on Ray (:mod:`mstpn.sweep`; docs/scale.md)."""
from __future__ import annotations

import argparse
from pathlib import Path


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "sweep", help="sweep device parameters of the m-STPN in the loop on Ray (resumable)",
        description="Grid or random search over device parameters (d2d_sigma, c2c_sigma, n_levels, tau0, "
                    "v_bias_min/v_bias_max, stuck_fraction, lt_drift_tau_s, lt_age_s, ...), seeds and protocols; "
                    "every trial plays greedy capped games of a checkpoint with the devices in the loop (spec backend: "
                    "numpy, the reference, or torch, the compiled device step); with \"trial\": \"train\" every trial first "
                    "trains an m-STPN with its device parameters and seed in OUT/runs/<trial_id>/ (resumed when "
                    "started again). One record "
                    "per trial in OUT/trials/; started again, only the missing trials run. Embedded local Ray "
                    "unless --address or RAY_ADDRESS names a cluster.")
    p.add_argument("spec", type=Path, help="sweep spec (.json, or .yaml/.yml with PyYAML)")
    p.add_argument("-o", "--out", type=Path, required=True, help="output folder (trials/, summary.json/.csv, plots)")
    p.add_argument("--address", help="Ray cluster address (e.g. HEAD:6379); default: $RAY_ADDRESS, else an "
                                     "embedded local Ray")
    p.add_argument("--workers", type=int, help="trials at a time (embedded Ray: its CPUs; default: all cores)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar (default: a progress bar on stderr)")
    p.set_defaults(func=cmd_sweep)


def cmd_sweep(args: argparse.Namespace) -> int:
    from mstpn import sweep

    spec = sweep.read_spec(args.spec)
    summary = sweep.run_sweep(spec, args.out, address=args.address, workers=args.workers,
                              progress=not args.no_progress)
    for r in summary["by_value"]:
        ci = r.get("ci95")
        ci_txt = f"[{ci[0]:+.2f}, {ci[1]:+.2f}]" if ci else "n/a"
        mean = f"{r['mean']:+.2f}" if "mean" in r else "n/a"
        trained = ""
        if "train_frames" in r:
            final = r["train_final_score"]
            trained = f"  (trained {r['train_frames']} frames, final training score " \
                      f"{'n/a' if final is None else format(final, '+.2f')})"
        print(f"{r['protocol']:13s} {r['parameter']} = {r['value']!s:10s} n = {r['n']:3d}  mean {mean}  95 % CI {ci_txt}"
              + trained)
    print(f"wrote {args.out}/summary.json, summary.csv, score_vs_*.png ({summary['trials_done']} of "
          f"{summary['trials_planned']} trials)")
    return 0
