"""One writer per output folder: an advisory lock (``fcntl.flock``) on ``<folder>/.mstpn.lock``.

A second process (or a second writer in the same process) that asks for the lock of a folder in
use gets a :class:`mstpn_base.errors.MstpnError` at once instead of mixing its files with the
first run's.  The lock is released when the holder closes it, exits or is killed (the kernel
drops it); the empty lock file itself stays in the folder and is harmless.
"""
from __future__ import annotations

import os
from pathlib import Path

from mstpn_base.errors import MstpnError
from mstpn_base.io import ensure_dir

LOCK_NAME = ".mstpn.lock"


class FolderLock:
    """Holds the lock of ``folder`` until :meth:`release` (or until the object is collected)."""

    def __init__(self, folder: str | os.PathLike, what: str = "run"):
        import fcntl

        self.folder = ensure_dir(folder)
        self.path = self.folder / LOCK_NAME
        self._fh = open(self.path, "a+", encoding="utf-8")
        try:
            fcntl.flock(self._fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self._fh.seek(0)
            holder = self._fh.read().strip() or "?"
            self._fh.close()
            raise MstpnError(f"{self.folder} is in use by another {what} (pid {holder}); wait for it to "
                             "finish or choose another output folder") from None
        self._fh.seek(0)
        self._fh.truncate()
        self._fh.write(f"{os.getpid()}\n")
        self._fh.flush()

    def release(self) -> None:
        if not self._fh.closed:
            self._fh.close()  # closing the file drops the flock

    def __enter__(self) -> "FolderLock":
        return self

    def __exit__(self, *exc) -> None:
        self.release()

    def __del__(self):
        fh = getattr(self, "_fh", None)
        if fh is not None and not fh.closed:
            fh.close()


def lock_folder(folder: str | os.PathLike, what: str = "run") -> FolderLock:
    """Take the lock of ``folder`` (created if needed); raises MstpnError if another holder has it."""
    return FolderLock(folder, what)
