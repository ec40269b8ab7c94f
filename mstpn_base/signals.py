"""One stop path for every command: SIGINT (Ctrl-C) and SIGTERM end a command cleanly.

:func:`handled` (installed by the CLI's ``main``) turns both signals into :class:`Interrupted`, a
``KeyboardInterrupt`` carrying the signal number, so that every ``finally`` / ``except
BaseException`` on the way runs: atomic writes (:mod:`mstpn_base.io`) delete their temporary
file and leave the target untouched, training saves its resume checkpoint.  The CLI then prints
one line and exits ``128 + signal number`` (130 for Ctrl-C, 143 for SIGTERM).

Some libraries run Python code in places that swallow exceptions (h5py frees its objects in weakref
callbacks, where an exception is printed and dropped).  Two guards make sure a signal is never lost:

* inside :func:`deferred` (every atomic write uses it) the handler only records the signal, and
  it is raised when the block ends, before the file would be published;
* :func:`received` tells the CLI that a signal arrived even if its exception was swallowed, so
  the command still ends with the interrupted exit status.
"""
from __future__ import annotations

import contextlib
import signal
from typing import Iterator

SIGNALS = (signal.SIGINT, signal.SIGTERM)


class Interrupted(KeyboardInterrupt):
    """SIGINT or SIGTERM arrived; ``signum`` says which."""

    def __init__(self, signum: int = signal.SIGINT):
        super().__init__(signal.Signals(signum).name)
        self.signum = int(signum)


class _State:
    count = 0          # signals received since handled() was entered
    last = signal.SIGINT
    depth = 0          # nesting of deferred() blocks


def _handler(signum, frame):
    _State.count += 1
    _State.last = signum
    if _State.depth == 0:
        raise Interrupted(signum)


@contextlib.contextmanager
def handled() -> Iterator[None]:
    """Install the handler for SIGINT and SIGTERM for the duration of the block (main thread only;
    elsewhere it does nothing) and restore the previous handlers afterwards."""
    _State.count, _State.depth = 0, 0
    try:
        old = {s: signal.signal(s, _handler) for s in SIGNALS}
    except ValueError:  # not the main thread: signals go to the main thread anyway
        old = {}
    try:
        yield
    finally:
        for s, h in old.items():
            signal.signal(s, h)


@contextlib.contextmanager
def deferred() -> Iterator[None]:
    """Hold SIGINT/SIGTERM while the block runs; if one arrived, raise :class:`Interrupted` when
    the block ends (so a write is abandoned as a whole, never half done or silently kept).

    A process forked inside the block inherits the held state for good: it leaves both signals
    to this process, which stops it (a simulator's worker processes)."""
    start = _State.count
    _State.depth += 1
    try:
        yield
    finally:
        _State.depth -= 1
    if _State.count > start:  # also in a nested block: each block end is a point of publishing
        raise Interrupted(_State.last)


def received() -> int | None:
    """The last signal received since :func:`handled` was entered (None if none)."""
    return int(_State.last) if _State.count else None


def exit_status(signum: int) -> int:
    """The shell convention for a command ended by a signal: 128 + signal number."""
    return 128 + int(signum)


def signal_name(signum: int) -> str:
    return signal.Signals(signum).name
