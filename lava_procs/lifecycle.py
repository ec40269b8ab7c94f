"""Starting and stopping a Lava runtime so that none of its worker processes outlives it.

Creating a runtime forks one worker process per ProcessModel plus a shared-memory manager
(``multiprocessing`` with the fork start method).  :class:`LavaRuntime` keeps them in step with
this process:

* the workers are forked inside :func:`mstpn_base.signals.deferred`.  A SIGINT / SIGTERM that
  arrives meanwhile is raised when the runtime is complete (not lost in an at-fork hook, where
  an exception is printed and dropped), and each worker inherits the held state, so a signal sent
  to the whole process group (Ctrl-C in a terminal) does not kill workers in the middle of a time
  step, which would leave this process waiting for their answer forever: this process stops them;
* :meth:`LavaRuntime.stop` stops the runtime in order (Lava's ``stop``: STOP to every worker,
  join, shared memory released; a runtime that was created but never ran has its workers killed
  first, as they wait for a first command and Lava's ``stop`` would join them forever), then kills
  whatever the runtime started that is still alive.  It is meant for a ``finally``.
"""
from __future__ import annotations

import multiprocessing as mp
from multiprocessing.connection import wait

from mstpn_base import signals

#: seconds to wait for killed workers to exit
KILL_WAIT_S = 5.0


class LavaRuntime:
    """The runtime of the Lava process graph of ``proc`` (any process of the graph)."""

    def __init__(self, proc):
        self.proc = proc
        self.workers: list = []   # multiprocessing children started with the runtime
        self.active = False

    def start(self, run_cfg, condition=None) -> None:
        """Create the runtime (and, with ``condition``, start running it: ``proc.run``)."""
        before = set(mp.active_children())
        self.active = True   # from here on stop() ends whatever was started
        try:
            with signals.deferred():
                if condition is None:
                    self.proc.create_runtime(run_cfg=run_cfg)
                else:
                    self.proc.run(condition=condition, run_cfg=run_cfg)
        finally:
            self.workers = [p for p in mp.active_children() if p not in before]

    def stop(self) -> None:
        """Stop the runtime and its workers; safe to call twice or after a failed start."""
        if not self.active:
            return
        self.active = False
        runtime = self.proc.runtime
        try:
            with signals.deferred():   # a second signal does not cut the shutdown in half
                if runtime is not None and not getattr(runtime, "_is_started", True):
                    _kill(getattr(getattr(runtime, "_messaging_infrastructure", None), "actors", ()))
                self.proc.stop()
        except Exception:  # noqa: BLE001 - a runtime that failed may complain; its workers go below
            pass
        finally:
            _kill(self.workers)


def _alive(p) -> bool:
    try:
        return p.is_alive()   # also reaps an exited child
    except ValueError:        # closed by Lava after joining it: it has exited
        return False


def _kill(procs) -> None:
    """SIGKILL (the workers hold SIGTERM, see the module doc) and reap ``procs`` still alive."""
    live = [p for p in procs if _alive(p)]
    for p in live:
        p.kill()
    if live:
        wait([p.sentinel for p in live], timeout=KILL_WAIT_S)
        for p in live:
            _alive(p)
