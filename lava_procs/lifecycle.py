"""Starting and stopping a Lava runtime so that none of its worker processes outlives it.

Creating a runtime forks one worker process per ProcessModel plus a shared-memory manager
(``multiprocessing`` with the fork start method).  :class:`LavaRuntime` keeps them in step with
this process:

* the workers are forked inside :func:`mstpn_base.signals.deferred`.  A SIGINT / SIGTERM that
  arrives meanwhile is raised when the runtime is complete (not lost in an at-fork hook, where
  an exception is printed and dropped), and each worker inherits the held state, so a signal sent
  to the whole process group (Ctrl-C in a terminal) does not kill workers in the middle of a time
  step, which would leave this process waiting for their answer forever: this process stops them;
* host calls into the runtime (runs, ``Var.get``/``set``, Injector and Extractor I/O) go inside
  :meth:`LavaRuntime.host_calls`; one that ends by an exception (an interrupt) may have cut a
  message exchange in half, and a running graph may wait on host I/O this process will never do
  (a frame not injected, a full Extractor);
* :meth:`LavaRuntime.stop` stops a runtime at rest in order (Lava's ``stop``: STOP to every
  worker, join, shared memory released).  A runtime that never ran, or whose host calls were cut
  short, has its workers killed first, as Lava's ``stop`` would wait for their answer forever.
  Whatever the runtime started and is still alive is killed last.  It is meant for a ``finally``.
"""
from __future__ import annotations

import contextlib
import multiprocessing as mp
import warnings
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
        self.at_rest = True       # no host call into the runtime was cut short

    def start(self, run_cfg, condition=None) -> None:
        """Create the runtime (and, with ``condition``, start running it: ``proc.run``)."""
        before = set(mp.active_children())
        self.active = True   # from here on stop() ends whatever was started
        try:
            # Lava's ProcessModel search also imports each module of lava_procs as a top-level one,
            # which fails and warns; the models are found in the package's own import
            with signals.deferred(), warnings.catch_warnings():
                warnings.filterwarnings("ignore", message="Cannot import module")
                if condition is None:
                    self.proc.create_runtime(run_cfg=run_cfg)
                else:
                    self.proc.run(condition=condition, run_cfg=run_cfg)
        finally:
            self.workers = [p for p in mp.active_children() if p not in before]

    @contextlib.contextmanager
    def host_calls(self):
        """A block of calls into the runtime; if it ends by an exception, :meth:`stop` kills the
        workers instead of asking them to stop."""
        self.at_rest = False
        yield
        self.at_rest = True

    def stop(self) -> None:
        """Stop the runtime and its workers; safe to call twice or after a failed start."""
        if not self.active:
            return
        self.active = False
        runtime = self.proc.runtime
        try:
            with signals.deferred():   # a second signal does not cut the shutdown in half
                if runtime is not None and (not self.at_rest or not getattr(runtime, "_is_started", True)):
                    _kill(getattr(getattr(runtime, "_messaging_infrastructure", None), "actors", ()))
                    runtime._is_started = False   # Lava's stop then only releases the shared memory
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
