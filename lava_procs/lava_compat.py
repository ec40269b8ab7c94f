"""Make lava-nc 0.10.0 importable on Python >= 3.11, without touching site-packages.

lava-nc 0.10.0 supports Python 3.10 only.  On 3.11 the stricter dataclass check
(``dataclasses._get_field``: a default whose class is unhashable counts as mutable) rejects three
dataclasses in ``lava/magma/compiler/var_model.py`` (CoreEncoder, ChipEncoder, AxonEncoder) whose
fields default to a shared ``ByteEncoder()`` instance::

    ValueError: mutable default <class '...ByteEncoder'> for field x is not allowed: use default_factory

:func:`install` puts an import hook in front of ``sys.meta_path`` that loads *that one module*
from its unchanged source with each ``= ByteEncoder()`` default rewritten to
``= field(default_factory=ByteEncoder)`` (a fresh encoder per instance, which is what the
upstream code meant).  Nothing on disk is modified, no bytecode cache is written for the rewritten
module, and on Python < 3.11 the hook is not installed at all.  It must run before the first
``import lava``; :mod:`lava_procs` does this on import.

A second incompatibility is not about the Python version: lava's
``message_infrastructure/multiprocessing.py`` calls ``multiprocessing.set_start_method('fork')`` at
import, which raises ``RuntimeError: context has already been set`` when anything in the process
has fixed the start method before (tqdm's progress bars do, through their multiprocessing lock).
:func:`import_message_infrastructure` imports that module first: if the start method is already
'fork', the call is redundant and is skipped for that import; any other method is a clear error
(Lava's runtime needs 'fork').
"""
from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import multiprocessing
import re
import sys

TARGET = "lava.magma.compiler.var_model"
MESSAGING = "lava.magma.runtime.message_infrastructure.multiprocessing"
_IMPORT_LINE = "from dataclasses import dataclass, InitVar"
_DEFAULT = re.compile(r"=\s*ByteEncoder\(\)")


def patch_source(src: str) -> str:
    """The rewrite applied to var_model.py (exposed for tests)."""
    if _IMPORT_LINE not in src:
        raise ImportError(f"{TARGET}: unexpected source (import line not found); lava_compat supports lava-nc 0.10.0")
    src = src.replace(_IMPORT_LINE, _IMPORT_LINE + ", field as _lava_compat_field", 1)
    return _DEFAULT.sub("= _lava_compat_field(default_factory=ByteEncoder)", src)


class _PatchedLoader(importlib.machinery.SourceFileLoader):
    def get_code(self, fullname):  # always compile from (patched) source, never a stale .pyc
        return self.source_to_code(self.get_data(self.path), self.path)

    def source_to_code(self, data, path, *, _optimize=-1):
        src = data.decode("utf-8") if isinstance(data, bytes) else data
        return compile(patch_source(src), path, "exec", dont_inherit=True, optimize=_optimize)


class _Finder(importlib.abc.MetaPathFinder):
    def find_spec(self, fullname, path, target=None):
        if fullname != TARGET:
            return None
        spec = importlib.machinery.PathFinder.find_spec(fullname, path)
        if spec is not None and spec.origin and spec.origin.endswith(".py"):
            spec.loader = _PatchedLoader(fullname, spec.origin)
        return spec


def needed() -> bool:
    return sys.version_info >= (3, 11)


def install() -> bool:
    """Install the hook once (Python >= 3.11 only). Returns True if the hook is active."""
    if not needed():
        return False
    if not any(isinstance(f, _Finder) for f in sys.meta_path):
        if TARGET in sys.modules:
            raise ImportError(f"{TARGET} was imported before lava_procs.lava_compat.install()")
        sys.meta_path.insert(0, _Finder())
    return True


def import_message_infrastructure() -> None:
    """Import lava's multiprocessing message infrastructure whether or not the process's start
    method is already fixed (see the module docstring)."""
    if MESSAGING in sys.modules:
        return
    current = multiprocessing.get_start_method(allow_none=True)
    if current is None:
        importlib.import_module(MESSAGING)
        return
    if current != "fork":
        raise RuntimeError(f"Lava's runtime needs the 'fork' multiprocessing start method; this process "
                           f"already uses {current!r}")
    original = multiprocessing.set_start_method

    def keep_fork(method, force=False):
        if method != "fork" or force:
            return original(method, force)

    multiprocessing.set_start_method = keep_fork
    try:
        importlib.import_module(MESSAGING)
    finally:
        multiprocessing.set_start_method = original
