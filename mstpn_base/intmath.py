"""Loihi-style integer arithmetic shared by every fixed-point path (device model and network).

All values are int64 NumPy arrays; ``>>`` is an arithmetic right shift (floor division by a
power of two).  A 12-bit decay d in 0..4095 multiplies by (4096 - d) / 4096, as Loihi's current
and voltage decays (lava-nc, lava/proc/lif/models.py).
"""
from __future__ import annotations

import numpy as np

from mstpn_base.errors import ParameterError

INT = np.int64
DECAY_BITS = 12
DECAY_ONE = 1 << DECAY_BITS                 # 4096


def rshift_round(x, s: int) -> np.ndarray:
    """x * 2**-s rounded half up (s > 0); exact left shift for s <= 0."""
    x = np.asarray(x, INT)
    s = int(s)
    if s <= 0:
        return x << -s
    return (x + (1 << (s - 1))) >> s


def round_div(a, n) -> np.ndarray:
    """round(a / n) half up, for integer arrays a and n > 0 (broadcast): floor((2a + n) / (2n))."""
    a, n = np.asarray(a, INT), np.asarray(n, INT)
    return (2 * a + n) // (2 * n)


def isqrt(s) -> np.ndarray:
    """Exact floor(sqrt(s)) for 0 <= s <= 2**62 (float estimate, then +-1 correction)."""
    s = np.asarray(s, INT)
    if np.any(s < 0):
        raise ParameterError("isqrt of a negative number")
    r = np.floor(np.sqrt(s.astype(np.float64))).astype(INT)
    r = np.where(r * r > s, r - 1, r)
    r = np.where((r + 1) * (r + 1) <= s, r + 1, r)
    return r


def decay(x, d, bits: int = DECAY_BITS) -> np.ndarray:
    """Decay towards zero: sign(x) * ((|x| * (2**bits - d)) >> bits), d in 0..2**bits - 1."""
    x, d = np.asarray(x, INT), np.asarray(d, INT)
    return np.sign(x) * ((np.abs(x) * ((1 << bits) - d)) >> bits)


def decay_code(lam, bits: int = DECAY_BITS) -> np.ndarray:
    """Decay of a retention factor lam in [0, 1]: d = clip(round(2**bits (1 - lam)), 0, 2**bits - 1)."""
    lam = np.asarray(lam, np.float64)
    if np.any(~np.isfinite(lam)) or np.any(lam < 0) or np.any(lam > 1):
        raise ParameterError(f"a retention factor must lie in [0, 1] for a {bits}-bit decay")
    one = 1 << bits
    return np.clip(np.rint(one * (1.0 - lam)), 0, one - 1).astype(INT)
