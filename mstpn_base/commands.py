"""Running one parsed command the way every command runs: user errors (MstpnError, missing or
unwritable files) -> one line on stderr and exit 2; SIGINT / SIGTERM -> one line and exit
128 + signal number (:mod:`mstpn_base.signals`).  Used by ``mstpn`` and by the stand-alone
``python -m snn_agent.cli``."""
from __future__ import annotations

import sys

from mstpn_base import signals
from mstpn_base.errors import MstpnError


def dispatch(args, prog: str = "mstpn") -> int:
    """Run a parsed command: user errors -> one line on stderr + exit 2; SIGINT / SIGTERM -> one
    line + exit 128 + signal number (130 / 143)."""
    try:
        status = int(args.func(args) or 0)
    except KeyboardInterrupt as exc:
        return _interrupted(prog, getattr(exc, "signum", None) or signals.received() or 2)
    except (MstpnError, FileNotFoundError, IsADirectoryError, NotADirectoryError, FileExistsError,
            PermissionError) as exc:
        print(f"{prog} {args.command}: error: {exc}", file=sys.stderr)
        return 2
    if signals.received():  # a library swallowed the interrupt's exception
        return _interrupted(prog, signals.received())
    return status


def _interrupted(prog: str, signum: int) -> int:
    print(f"{prog}: interrupted by {signals.signal_name(signum)} (files are written atomically: none is "
          "half-written; a training run saved its resume checkpoint)", file=sys.stderr)
    return signals.exit_status(signum)
