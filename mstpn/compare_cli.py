"""``mstpn compare NET``: run one converted policy on every backend and compare them.

    mstpn compare NET [--frames 100] [--backends B ...] [--game] [--max-game-steps N]
                      [--seed S] [-o DIR] [--json]

NET is a converted network file (``mstpn convert``).  The same recorded observation sequence
(``--frames`` Pong frames played by the PyTorch policy, or ``--obs FILE.npy``) is run on each
backend; ``--game`` also plays full games frame by frame on each.  Writes ``DIR/report.md``,
``DIR/results.json`` and PNG plots (all atomically).
"""
from __future__ import annotations

import argparse
from pathlib import Path

from mstpn_base.cliargs import add_json, add_list, add_out, is_safetensors, json_output, print_json
from mstpn_base.errors import DataFormatError, ParameterError


def register(subparsers) -> None:
    from mstpn_base import registry

    p = subparsers.add_parser("compare", help="run a converted policy on every backend, compare and report",
                              description=__doc__.splitlines()[0])
    p.add_argument("net", type=Path, help="converted network file (mstpn convert)")
    p.add_argument("--frames", type=int, default=100, help="length of the recorded sequence")
    add_list(p, "--backends", metavar="B",
             help=f"subset of {', '.join(registry.network_backends())} "
                  f"(default: {' '.join(registry.default_backends())})")
    p.add_argument("--obs", type=Path, help="recorded observations (.npy, uint8 (T, 84, 84)) instead of recording "
                                            "(default: record --frames frames of the PyTorch policy playing)")
    p.add_argument("--game", action="store_true",
                   help="also play one full Pong game on each backend (default: the recorded sequence only)")
    p.add_argument("--max-game-steps", type=int, default=None,
                   help="stop a game after this many agent steps (default: until the game ends)")
    p.add_argument("--seed", type=int, default=0, help="environment seed")
    add_synapse_args(p, "on every backend that runs it (the others are reported not run)")
    add_out(p, default=Path("compare_out"), metavar="DIR", help="output folder (report.md, results.json, plots)")
    add_json(p, "the comparison (one record per backend, as results.json, and the overall status)")
    from mstpn.nir_compare import add_graph_options

    add_graph_options(p)   # NET may be a plain NIR graph
    p.set_defaults(func=cmd_compare)


def cmd_compare(args: argparse.Namespace) -> int:
    from mstpn.compare_report import run_comparison
    from mstpn.nir_compare import cmd_compare_graph, is_plain_graph

    check_network_file(args.net)
    if is_plain_graph(args.net):   # a plain NIR graph: the comparison of mstpn nir-run
        if args.synapses != "ideal" or args.device_seed is not None:
            raise ParameterError(f"{args.net} is a plain NIR graph without a device block: --synapses device "
                                 "and --device-seed need a converted m-STPN file (mstpn convert)")
        return cmd_compare_graph(args)
    with json_output(args.json):
        summary = run_comparison(args.net, frames=args.frames, backends=args.backends, obs_path=args.obs,
                                 game=args.game, max_game_steps=args.max_game_steps, seed=args.seed,
                                 out_dir=args.out, progress=print, synapses=args.synapses,
                                 device_seed=args.device_seed)
        if not args.json:
            print(summary.table())
        print(f"report: {args.out / 'report.md'}")
    if args.json:
        from mstpn.compare import jsonable

        print_json({"net": str(args.net), "ok": summary.ok, "report": str(args.out / "report.md"),
                    "synapses": summary.synapses, "device_mapping": summary.device_mapping,
                    "comparisons": jsonable([dict(c.__dict__) for c in summary.comparisons])})
    return 0 if summary.ok else 1


def add_synapse_args(p, where: str) -> None:
    """``--synapses {ideal,device}`` and ``--device-seed N`` (run, compare, energy)."""
    from mstpn_base.registry import SYNAPSE_MODELS

    p.add_argument("--synapses", choices=SYNAPSE_MODELS, default="ideal",
                   help="the plastic layer's synapse model: ideal (the STPN rule) or device (memristor device "
                        f"pairs from the network's device block, an m-STPN), {where}")
    p.add_argument("--device-seed", type=int, default=None, metavar="N",
                   help="seed of the device draws with --synapses device (default: the device block's seed)")


def check_network_file(path) -> None:
    """A policy checkpoint given where a converted network is expected: say how to convert it."""
    if Path(path).is_file() and is_safetensors(path):
        raise DataFormatError(f"{path} is a policy checkpoint; convert it first: mstpn convert {path} -o NET.nir")
