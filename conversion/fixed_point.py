"""Loihi-style integer arithmetic for the converted network: the primitives, their bit budgets and
the overflow monitor.  All functions work on int64 NumPy arrays; ``>>`` is an arithmetic shift
(floor division by a power of two).  The order of operations here is part of the specification.

Formats (a value x is stored as the integer X with x = X * 2**e; e is the "exponent" or LSB):

===========================  ================================  ===================================
quantity                     integer                           budget
===========================  ================================  ===================================
synaptic weights             8-bit mantissa, per-layer exponent -128..127 (``quantise_weights``)
gamma (plasticity rate)      8-bit mantissa, per-layer exponent -128..127
lambda (retention)           Q12 L = round(4096 l), = 12-bit  |L| <= 8191; for l in [0,1]
                             decay d = 4096 - L               d in 0..4095 (Loihi decay)
neuron states u, y, a, F     24-bit signed                     |X| <= 2**23 - 1 (saturate)
graded-event payloads        24-bit signed                     |X| <= 2**23 - 1 (saturate)
plastic-layer registers      64-bit signed (row sums: sum G^2,  |X| <= 2**62
(uW, sum G^2, G z, products) G z; not Loihi-1 native, see
                             docs/event_driven.md)
===========================  ================================  ===================================

Rounding: ``rshift_round(x, s) = (x + 2**(s-1)) >> s`` (half up); ``round_div(a, n) =
floor((2a + n) / (2n))`` for n > 0 (half up); ``decay(x, d) = sign(x) ((|x| (4096 - d)) >> 12)``
(towards zero, as Loihi's current decay); ``isqrt`` is the exact floor square root.

tanh: a table of tanh at steps of 2**s_exp (s_exp = max(-6, e_a)) over [0, 8], entries rounded to
the output LSB, linear interpolation between entries (floor), odd symmetry, saturation at the
last entry beyond 8.  Error: |h - tanh(a)| <= 1.5 LSB_h + step**2/8 * max|tanh''| (= 2.4e-5 for
step 2**-6) + (1 - tanh(8) = 2.3e-7); ``tanh_lut_error_bound`` returns it.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from mstpn_base.errors import FixedPointOverflowError, ParameterError
from mstpn_base.intmath import (DECAY_BITS, DECAY_ONE, INT, decay, decay_code, isqrt,  # noqa: F401 (re-exported)
                                rshift_round, round_div)

WEIGHT_BITS = 8
STATE_BITS = 24
PAYLOAD_BITS = 24
WIDE_BITS = 63
STATE_MAX = (1 << (STATE_BITS - 1)) - 1     # 8,388,607
WIDE_MAX = 1 << (WIDE_BITS - 1)             # 2**62
LAM_MAX = (1 << 13) - 1                     # signed Q12 retention multiplier, |lambda| < 2
#: tanh table covers |a| in [0, TANH_RANGE]; finest table step 2**TANH_STEP_EXP
TANH_RANGE = 8.0
TANH_STEP_EXP = -6


# -- primitives -------------------------------------------------------------------------------
def lam_code(lam) -> np.ndarray:
    """Retention factor as a signed Q12 multiplier L = round(4096 lam), |L| <= LAM_MAX.  For lam in
    [1/4096, 1] this is exactly the 12-bit decay d = 4096 - L (0..4095) of :func:`decay`; a trained
    plain STPN may have lam < 0 or > 1, which the same multiply-shift handles (not a Loihi decay)."""
    lam = np.asarray(lam, np.float64)
    if np.any(~np.isfinite(lam)):
        raise ParameterError("lambda contains NaN/inf")
    L = np.rint(DECAY_ONE * lam).astype(INT)
    if np.any(np.abs(L) > LAM_MAX):
        i = tuple(int(v) for v in np.argwhere(np.abs(L) > LAM_MAX)[0])
        raise ParameterError(f"lambda {float(lam[i]):.4g} at index {i} is outside the Q12 range "
                             f"(|lambda| < {LAM_MAX / DECAY_ONE:.4g})")
    return L


def mul_q12(x, L) -> np.ndarray:
    """x * L / 4096 rounded towards zero: sign(x L) ((|x| |L|) >> 12); = decay(x, 4096 - L) for L >= 0."""
    x, L = np.asarray(x, INT), np.asarray(L, INT)
    return np.sign(x) * np.sign(L) * ((np.abs(x) * np.abs(L)) >> DECAY_BITS)


def weight_exponent(w, bits: int = WEIGHT_BITS) -> int:
    """Smallest exponent e with round(w / 2**e) inside the signed ``bits`` range (0 for all-zero w)."""
    w = np.asarray(w, np.float64)
    m = float(np.max(np.abs(w))) if w.size else 0.0
    if m == 0.0:
        return 0
    if not math.isfinite(m):
        raise ParameterError("weights contain NaN/inf")
    hi, lo = (1 << (bits - 1)) - 1, -(1 << (bits - 1))
    e = math.floor(math.log2(m / hi)) - 1
    while True:
        q = np.rint(w / 2.0**e)
        if q.max() <= hi and q.min() >= lo:
            return int(e)
        e += 1


def quantise_weights(w, bits: int = WEIGHT_BITS) -> tuple[np.ndarray, int]:
    """(mantissa int64 array, exponent) with w ~= mantissa * 2**exponent, mantissa in the signed
    ``bits`` range, exponent the smallest that fits (max precision); round half to even."""
    e = weight_exponent(w, bits)
    return np.rint(np.asarray(w, np.float64) / 2.0**e).astype(INT), e


def to_int(x, exp: int) -> np.ndarray:
    """round(x / 2**exp) as int64 (values checked by the caller's budget)."""
    return np.rint(np.asarray(x, np.float64) / 2.0**exp).astype(INT)


# -- sigma-delta rules ------------------------------------------------------------------------
#: sigma-delta rules of the fixed-point specification (``quantise(..., sd_rule=...)``): "round"
#: (version 1), "lava" (Lava's SigmaDelta with the smallest state_exp the budgets allow) and
#: "lava-netx" (the same arithmetic with the exponents lava-dl netx loads: exact netx export)
SD_RULES = ("round", "lava", "lava-netx")
#: the arithmetic of a SigmaDelta node, by the integer code stored in its ``net.fixed`` entry
#: (``rule`` key; absent: "round", the rule of version-1 files).  "lava" and "lava-netx" share
#: code 1: they differ only in the stored exponents.
SD_RULE_CODE = {"round": 0, "lava": 1}
#: the rule a network was quantised with, by the code stored in ``_spec["sd_rule"]`` (absent:
#: "round").  Code 1 is what the first version-2 files carry: the netx exponents.
SD_SPEC_CODE = {"round": 0, "lava-netx": 1, "lava": 2}
#: state_exp of the "lava-netx" rule after the first hidden layer (= lava-dl netx's fixed state_exp)
LAVA_STATE_EXP = 6
#: Lava's SigmaDelta state_exp is a 3-bit Var
LAVA_STATE_EXP_MAX = 7
#: lava's SigmaDelta declares a 16-bit bias (the constructor's argument, scaled there by 2**state_exp)
LAVA_BIAS_MAX = (1 << 15) - 1


def _rule_name(codes: dict, code: int, where: str = "") -> str:
    for name, c in codes.items():
        if c == code:
            return name
    raise ParameterError(f"unknown sigma-delta rule code {code}{where} (known: {codes})")


def sd_rule(entry: dict) -> str:
    """The sigma-delta arithmetic of a SigmaDelta node's fixed-point entry ("round" when it has none)."""
    return _rule_name(SD_RULE_CODE, int(entry.get("rule", 0)))


def spec_sd_rule(spec: dict) -> str:
    """The rule (one of :data:`SD_RULES`) a fixed-point block's ``_spec`` names ("round" when none)."""
    return _rule_name(SD_SPEC_CODE, int(spec.get("sd_rule", 0)), " in _spec")


def sigma_delta_lava(act, believed, vth: int, state_exp: int):
    """Lava's fixed-point SigmaDelta/Delta step (lava.proc.sdn, fixed_pt), in the input's u units.

    ``act`` = act(u) (identity or relu of the integrated input u, bias included); ``believed`` =
    the sum of the deltas it has sent (Lava: act_prev - residue)::

        delta = act - believed;  fire = |delta| >= vth;  s = fire ? delta : 0
        believed <- believed + s  (Lava: residue = delta - s, act_prev = act)
        payload = s >> state_exp  (floor: the receivers sum the payloads, not the deltas)

    Returns (payload, new believed, fire)."""
    delta = np.asarray(act, INT) - np.asarray(believed, INT)
    fire = np.abs(delta) >= int(vth)
    s = np.where(fire, delta, 0)
    return s >> int(state_exp), believed + s, fire


def wrap_signed(x, bits: int = STATE_BITS) -> np.ndarray:
    """x wrapped into the signed ``bits`` range, modulo 2**bits (two's complement overflow):
    ((x + 2**(bits-1)) mod 2**bits) - 2**(bits-1).  Lava's Conv fixed_pt model applies this to each
    time step's synaptic output (lava.proc.conv.utils.signed_clamp, 24 bits)."""
    half = 1 << (int(bits) - 1)
    return np.mod(np.asarray(x, INT) + half, 2 * half) - half


# -- tanh -------------------------------------------------------------------------------------
def tanh_table(a_exp: int, h_exp: int) -> tuple[np.ndarray, int]:
    """(table, shift): table[i] = round(tanh(i * 2**s_exp) / 2**h_exp), i = 0..ceil(8 / 2**s_exp),
    s_exp = max(TANH_STEP_EXP, a_exp), shift = s_exp - a_exp (a-LSBs per table step as a power of 2)."""
    s_exp = max(TANH_STEP_EXP, int(a_exp))
    n = int(math.ceil(TANH_RANGE / 2.0**s_exp))
    table = np.rint(np.tanh(np.arange(n + 1) * 2.0**s_exp) / 2.0**h_exp).astype(INT)
    return table, s_exp - int(a_exp)


def tanh_int(a, table: np.ndarray, shift: int) -> np.ndarray:
    """h = sign(a) * (T[i] + (((T[i+1] - T[i]) * f) >> shift)), i = |a| >> shift,
    f = |a| & (2**shift - 1); |a| beyond the table gives T[-1]."""
    a = np.asarray(a, INT)
    mag = np.abs(a)
    last = len(table) - 1
    i = mag >> shift
    inside = i < last
    ic = np.minimum(i, last - 1)
    f = mag & ((1 << shift) - 1)
    h = np.where(inside, table[ic] + (((table[ic + 1] - table[ic]) * f) >> shift), table[last])
    return np.sign(a) * h


def tanh_lut_error_bound(a_exp: int, h_exp: int) -> float:
    """Bound on |tanh_int(a) 2**h_exp - tanh(a 2**a_exp)| (see module docstring)."""
    step = 2.0 ** max(TANH_STEP_EXP, int(a_exp))
    return 1.5 * 2.0**h_exp + step**2 / 8 * 0.7699 + (1 - math.tanh(TANH_RANGE))


# -- overflow monitor -------------------------------------------------------------------------
@dataclass(frozen=True)
class OverflowEvent:
    node: str
    variable: str
    index: tuple      # (batch, unit index...) of the first offending element
    step: int         # simulator step (frame) at which it happened
    value: int
    budget: int
    count: int = 1    # how many elements left the budget in this check

    def __str__(self):
        return (f"fixed-point overflow in node {self.node!r}, variable {self.variable!r}, index "
                f"{self.index}, step {self.step}: |{self.value}| > {self.budget} "
                f"({self.count} element(s) this step)")


@dataclass
class OverflowMonitor:
    """Checks values against their bit budget; saturates and records (or raises if ``strict``).

    Keeps every event up to ``max_events`` (first per (node, variable, step)); ``counts`` holds the
    total number of offending elements per (node, variable)."""

    strict: bool = False
    max_events: int = 1000
    events: list = field(default_factory=list)
    counts: dict = field(default_factory=dict)

    def check(self, node: str, variable: str, x: np.ndarray, budget: int, step: int, saturate: bool = True):
        x = np.asarray(x, INT)
        bad = np.abs(x) > budget
        if not bad.any():
            return x
        idx = tuple(int(i) for i in np.argwhere(bad)[0])
        ev = OverflowEvent(node, variable, idx, int(step), int(x[idx]), int(budget), int(bad.sum()))
        self.counts[(node, variable)] = self.counts.get((node, variable), 0) + ev.count
        if self.strict:
            raise FixedPointOverflowError(str(ev), event=ev)
        if len(self.events) < self.max_events:
            self.events.append(ev)
        return np.clip(x, -budget, budget) if saturate else x

    @property
    def first(self):
        return self.events[0] if self.events else None

    def report(self) -> str:
        if not self.counts:
            return "no fixed-point overflow"
        lines = [f"{n}.{v}: {c} element-steps" for (n, v), c in self.counts.items()]
        return "fixed-point overflows: " + "; ".join(lines) + f"; first: {self.first}"
