"""The ``mstpn`` command line: one subcommand family per package.

Each package contributes its subcommands through a ``register(subparsers)`` function in its own
``cli`` module; a module that is missing (optional part not installed) is skipped. Errors that a
user can fix (:class:`mstpn_base.errors.MstpnError`, missing files, an output path through a
file) are printed on one line and exit 2.  Ctrl-C and SIGTERM stop every command the same way
(:mod:`mstpn_base.signals`): one line, exit 130 / 143, temporary files removed (all writes are
atomic, so nothing is left half-written).
"""
from __future__ import annotations

import argparse
import importlib
import sys

from mstpn import __version__
from mstpn_base import signals
from mstpn_base.cliargs import style
from mstpn_base.commands import dispatch

#: modules providing ``register(subparsers)``, in the order their commands are listed
COMMAND_MODULES = (
    "memristor.cli",      # mstpn device ...
    "snn_agent.cli",      # mstpn train / evaluate
    "mstpn.convert_cli",  # mstpn convert
    "mstpn.netx_cli",     # mstpn export-netx
    "mstpn.compare_cli",  # mstpn compare
    "mstpn.nir_compare",  # mstpn nir-run
    "mstpn.energy.cli",   # mstpn energy
    "mstpn.report_cli",   # mstpn report / run
    "mstpn.sweep_cli",    # mstpn sweep
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mstpn", description="Memristive STPN on neuromorphic backends: "
                                     "device model, Pong agents, conversion, simulators, energy.")
    parser.add_argument("--version", action="version", version=f"mstpn {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name and name.startswith(exc.name):
                continue  # that part of the platform is not present
            raise
        module.register(sub)
    return style(parser)   # every command's help shows the defaults


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    with signals.handled():
        return dispatch(args)


if __name__ == "__main__":
    sys.exit(main())
