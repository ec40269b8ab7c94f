"""Checks of command-line values shared by several commands (raise ParameterError naming the flag)."""
from __future__ import annotations

from mstpn_base.errors import ParameterError

#: seeds feed NumPy, PyTorch and ale-py generators, which take 32-bit unsigned seeds
SEED_MAX = 2**32


def check_seed(seed, flag: str = "--seed") -> int:
    """``seed`` if it is an integer in [0, 2^32), else ParameterError."""
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < SEED_MAX:
        raise ParameterError(f"{flag} must be an integer in [0, 2^32), got {seed!r}")
    return seed
