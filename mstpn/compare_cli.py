"""``mstpn compare NET``: run one converted policy on every backend and compare them.

    mstpn compare NET [--frames 100] [--backends B ...] [--game] [--max-game-steps N]
                      [--seed S] [--out DIR]

NET is a converted network file (``mstpn convert``).  The same recorded observation sequence
(``--frames`` Pong frames played by the PyTorch policy, or ``--obs FILE.npy``) is run on each
backend; ``--game`` also plays full games frame by frame on each.  Writes ``DIR/report.md``,
``DIR/results.json`` and PNG plots (all atomically).
"""
from __future__ import annotations

import argparse
from pathlib import Path


def register(subparsers) -> None:
    from mstpn_base import registry

    p = subparsers.add_parser("compare", help="run a converted policy on every backend, compare and report",
                              description=__doc__.splitlines()[0])
    p.add_argument("net", type=Path, help="converted network file (mstpn convert)")
    p.add_argument("--frames", type=int, default=100, help="length of the recorded sequence (default 100)")
    p.add_argument("--backends", nargs="+", default=None, metavar="B",
                   help=f"subset of {', '.join(registry.network_backends())} "
                        f"(default: {' '.join(registry.default_backends())})")
    p.add_argument("--obs", type=Path, help="recorded observations (.npy, uint8 (T, 84, 84)) instead of recording")
    p.add_argument("--game", action="store_true", help="also play one full Pong game on each backend")
    p.add_argument("--max-game-steps", type=int, default=None,
                   help="stop a game after this many agent steps (default: until the game ends)")
    p.add_argument("--seed", type=int, default=0, help="environment seed (default 0)")
    p.add_argument("--out", type=Path, default=Path("compare_out"), help="output folder (default compare_out)")
    p.set_defaults(func=cmd_compare)


def cmd_compare(args: argparse.Namespace) -> int:
    from mstpn.compare_report import run_comparison

    summary = run_comparison(args.net, frames=args.frames, backends=args.backends, obs_path=args.obs,
                             game=args.game, max_game_steps=args.max_game_steps, seed=args.seed,
                             out_dir=args.out, progress=print)
    print(summary.table())
    print(f"report: {args.out / 'report.md'}")
    return 0 if summary.ok else 1
