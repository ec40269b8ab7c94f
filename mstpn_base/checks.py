"""Checks of command-line values shared by several commands (raise ParameterError naming the flag),
and of numbers read from JSON."""
from __future__ import annotations

import math

from mstpn_base.errors import ParameterError

#: seeds feed NumPy, PyTorch and ale-py generators, which take 32-bit unsigned seeds
SEED_MAX = 2**32


def check_seed(seed, flag: str = "--seed") -> int:
    """``seed`` if it is an integer in [0, 2^32), else ParameterError."""
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < SEED_MAX:
        raise ParameterError(f"{flag} must be an integer in [0, 2^32), got {seed!r}")
    return seed


def check_output_file(path, flag: str):
    """Check before any work that ``path`` can become a file: not a folder, and its folder can be
    created (no path component is a file).  Creates the folder; returns ``path`` as a Path."""
    from pathlib import Path

    from mstpn_base.io import ensure_dir

    path = Path(path)
    if path.is_dir():
        raise ParameterError(f"{flag} {path} is a folder; give a file path")
    ensure_dir(path.parent)
    return path


def check_device(device: str, flag: str = "--device") -> str:
    """'cpu', 'cuda' or 'cuda:N'."""
    kind, _, index = str(device).partition(":")
    if kind == "cpu" and not index or kind == "cuda" and (not index or index.isdigit()):
        return device
    raise ParameterError(f"{flag} must be cpu, cuda or cuda:N, got {device!r}")


def is_number(v) -> bool:
    """True for a finite int or float that is not a bool (a number read from JSON)."""
    return not isinstance(v, bool) and isinstance(v, (int, float)) and math.isfinite(v)
