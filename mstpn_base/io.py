"""Atomic file writes: a reader never sees a half-written file, Ctrl-C leaves the old file intact.

Write to a temporary file in the target's folder, flush + fsync, then ``os.replace`` (atomic on
POSIX and Windows within one filesystem).
"""
from __future__ import annotations

import contextlib
import json
import os
import tempfile
from pathlib import Path
from typing import IO, Iterator

from mstpn_base.errors import DataFormatError, ParameterError


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


#: permissions of written files: what open() would give (mkstemp alone gives 0600)
FILE_MODE = 0o666 & ~_umask()


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike, mode: str = "w", **kwargs) -> Iterator[IO]:
    """Open a temporary sibling of ``path`` for writing; move it over ``path`` only on success."""
    if not any(m in mode for m in "wx"):
        raise ValueError(f"atomic_open is for writing, got mode {mode!r}")
    with atomic_path(path) as tmp:
        with open(tmp, mode.replace("x", "w"), **kwargs) as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    with atomic_open(path, "w", encoding="utf-8") as fh:
        fh.write(text)


def atomic_write_json(path: str | os.PathLike, obj) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False, allow_nan=False) + "\n")


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path for libraries that insist on writing by file name (savefig, h5py,
    safetensors); it replaces ``path`` only if the block succeeds. The suffix is kept so that
    libraries choosing a format by extension still work.

    The temporary file is ``.<name>.<pid>.<random>.tmp<suffix>`` beside the target.  An exception,
    Ctrl-C or SIGTERM (see :mod:`mstpn_base.signals`; both are held until the block ends) deletes
    it.  A writer killed outright (SIGKILL, power loss) cannot clean up: the next write of the same
    target deletes the temporary files of writers whose process no longer exists.
    """
    from mstpn_base import signals

    path = Path(path)
    ensure_dir(path.parent)
    if path.is_dir():
        raise ParameterError(f"cannot write {path}: it is a folder; give a file path")
    sweep_stale_temp_files(path)
    tmp = None
    try:
        with signals.deferred():  # from creating the temporary file until the block is done
            fd, tmp = tempfile.mkstemp(prefix=f"{_temp_prefix(path)}{os.getpid()}.", suffix=_temp_suffix(path),
                                       dir=path.parent)
            os.close(fd)
            yield Path(tmp)
        os.chmod(tmp, FILE_MODE)
        os.replace(tmp, path)
    except BaseException:
        if tmp is not None:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
        raise


def _temp_prefix(path: Path) -> str:
    return f".{path.name}."


def _temp_suffix(path: Path) -> str:
    return f".tmp{path.suffix}"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def sweep_stale_temp_files(path: str | os.PathLike) -> list[Path]:
    """Delete the temporary files of ``path`` (``.<name>.<pid>.<random>.tmp<suffix>``) left by
    writers that no longer run; returns the deleted paths.  Files of running writers are kept."""
    path = Path(path)
    prefix, suffix = _temp_prefix(path), _temp_suffix(path)
    removed = []
    try:
        names = os.listdir(path.parent)
    except OSError:
        return removed
    for name in names:
        if not (name.startswith(prefix) and name.endswith(suffix)):
            continue
        pid = name[len(prefix):].split(".", 1)[0]
        if not pid.isdigit() or int(pid) == os.getpid() or _pid_alive(int(pid)):
            continue
        with contextlib.suppress(FileNotFoundError, IsADirectoryError, PermissionError):
            os.unlink(path.parent / name)
            removed.append(path.parent / name)
    return removed


def ensure_dir(folder: str | os.PathLike) -> Path:
    """Create ``folder`` (and its parents); a path component that is a file raises ParameterError."""
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        blocker = next((p for p in [folder, *folder.parents] if p.exists() and not p.is_dir()), folder)
        raise ParameterError(f"cannot create folder {folder}: {blocker} is a file, not a folder; "
                             "choose another output path") from None
    return folder


def read_json(path: str | os.PathLike):
    """Parse a JSON file; a file that is not valid UTF-8 JSON raises DataFormatError naming it."""
    path = Path(path)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise DataFormatError(f"{path}: not valid JSON ({exc})") from None
