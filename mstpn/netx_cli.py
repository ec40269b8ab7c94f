"""``mstpn export-netx NET -o OUT.net``: the static layers of a converted network as lava-dl netx
files (registered by mstpn.cli; the export itself is :mod:`conversion.netx_export`).

Writes, each atomically: ``OUT.net`` (netx graph 1: input -> conv1 -> conv2), ``OUT_heads.net``
(netx graph 2: h -> policy and value heads) and ``OUT.json`` (where the network is cut, the
load arguments, the scale of every layer's integers).  The plastic STPN layer between the two
graphs stays on the host (docs/deploy.md).
"""
from __future__ import annotations

import argparse

from conversion.netx_export import DEFAULT_HEADROOM, EXACT_HOW, NOT_EXACT, paths, write_netx
from mstpn_base.checks import check_output_file
from mstpn_base.cliargs import add_out
from mstpn_base.errors import ParameterError


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "export-netx", help="write the static layers of a converted network as lava-dl netx files",
        description="Export a converted, quantised network (`mstpn convert`) for Lava's deployment "
                    "tooling: netx graph 1 (input -> conv1 -> conv2), graph 2 (the heads) and a JSON "
                    "naming the cut at the plastic STPN layer and the scales (docs/deploy.md).")
    p.add_argument("network", help="network file written by `mstpn convert` (with fixed point)")
    add_out(p, required=True, metavar="OUT.net",
            help="netx file of graph 1; OUT_heads.net and OUT.json are written beside it")
    p.add_argument("--spike-exp", type=int,
                   help="netx spike_exp of graph 1 (default: the network's own for the 'lava-netx' sigma-delta rule, "
                        "with which netx reproduces its integers; else the largest in 0..6 that keeps the bit budgets)")
    p.add_argument("--headroom", type=float, default=DEFAULT_HEADROOM,
                   help="factor over the calibrated maxima that the netx bit budgets must hold")
    p.set_defaults(func=cmd_export_netx)


def cmd_export_netx(args: argparse.Namespace) -> int:
    from conversion.nirfile import read_network

    files = paths(args.out)
    for f in files.values():
        check_output_file(f, "--out")
    if args.spike_exp is not None and not 0 <= args.spike_exp <= 7:
        raise ParameterError(f"--spike-exp must lie in 0..7, got {args.spike_exp}")
    net = read_network(args.network)
    info = write_netx(args.out, net, spike_exp=args.spike_exp, headroom=args.headroom)
    se = info["graphs"]["static"]["load"]["spike_exp"]
    print(f"wrote {files['static']} (input -> {len(info['graphs']['static']['layers']) - 1} conv layers, "
          f"spike_exp {se}), {files['heads']} (heads) and {files['json']}")
    if info["graphs"]["static"]["layers"][1].get("exact"):
        print("the conv layers reproduce the reference integers exactly")
    else:
        print(f"{NOT_EXACT} (see the JSON's differences); {EXACT_HOW}")
    for note in info["notes"]:
        if not note.startswith(NOT_EXACT):
            print(f"note: {note}")
    return 0
