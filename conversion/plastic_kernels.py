"""Fused per-frame kernels of the plastic STPN layer of the reference simulator (numba).

The plastic layer is dense by definition: every frame each of its H x K synapses enters the row
norms, the products (W + F) z and the plasticity update.  Evaluated with NumPy that is about ten
passes over F per frame; the kernels here do one pass per phase.  They evaluate, and do not
define, these equations:

- the row norms N = sqrt(sum_k (W + F)^2) + eps (:func:`conversion.semantics.stpn_norm`) and the
  pre-activation a = ((W + F) z) / N + b (:func:`conversion.semantics.stpn_preactivation`): the
  forward kernels return the row sums only (sum_k G^2 as |W|^2 + 2 W.F + |F|^2, and F z); the
  simulator applies the two functions of :mod:`conversion.semantics` to them;
- the plasticity F <- clip(lam F / N + gamma h z^T, +-f_max)
  (:func:`conversion.semantics.stpn_plasticity`), element by element in the same operation order
  ((F / N) lam + (h z) gamma, then the clip) and with ``fastmath=False``: the float kernel is
  IEEE-identical to the NumPy evaluation;
- fixed point, the integer specification of :mod:`conversion.fixed_point`: the row sums of G^2
  (G = W << sG + F) and F z in int64, and the plasticity q = round_div(F << s, N),
  mul_q12(q, L) + rshift_round(gamma h z, k), clipped to +-f_max, all in int64 (bit for bit the
  NumPy int64 form).  round_div by a float estimate of the quotient and one integer correction;
  every element's remainder is verified afterwards, so the result is the exact floor or the
  kernel says it is not (then the caller runs the NumPy form).

Overflow: the fixed-point plasticity kernel counts the Hebbian products beyond the 64-bit
register budget (``fixed_point.WIDE_MAX``) and the new F beyond the state budget
(``fixed_point.STATE_MAX``) without saturating; where either count is non-zero the caller runs
the NumPy form, whose :class:`~conversion.fixed_point.OverflowMonitor` checks record the events.

:data:`AVAILABLE` is False where numba cannot be imported; :data:`ENABLED` (module flag, default
:data:`AVAILABLE`) selects these kernels in :class:`conversion.simulator.Simulator`, which
otherwise runs its NumPy forms.
"""
from __future__ import annotations

import numpy as np

from conversion.fixed_point import DECAY_BITS

try:
    from numba import njit
    AVAILABLE = True
except ImportError:          # pragma: no cover - exercised by the fallback tests via ENABLED
    AVAILABLE = False

#: use the kernels (the simulator reads this at every call; False: the NumPy forms)
ENABLED = AVAILABLE


def _jit(f):
    return njit(cache=True, fastmath=False, nogil=True)(f) if AVAILABLE else f


@(njit(cache=True, fastmath={"reassoc"}, nogil=True) if AVAILABLE else (lambda f: f))
def norm_dot_float(W, Wsq, F, z, S, Fz):
    """S[b, h] = Wsq[h] + 2 sum_k W[h, k] F[b, h, k] + sum_k F[b, h, k]^2 and
    Fz[b, h] = sum_k F[b, h, k] z[b, k] (float64).  The sums may be reassociated (vector partial
    sums; no other fast-math flag, no fused multiply-add): a fixed order per build, not NumPy's
    (BLAS's) order, equal to it within rounding (relative 1e-12 tested)."""
    B, H, K = F.shape
    for b in range(B):
        for h in range(H):
            wf = 0.0
            ff = 0.0
            fz = 0.0
            for k in range(K):
                f = F[b, h, k]
                wf += W[h, k] * f
                ff += f * f
                fz += f * z[b, k]
            S[b, h] = Wsq[h] + 2.0 * wf + ff
            Fz[b, h] = fz


@_jit
def plasticity_float(F, N, lam, gamma, hp, z, f_max, out):
    """out = clip((F / N) lam + (h z) gamma, +-f_max) (no clip for f_max = inf), element by element."""
    B, H, K = F.shape
    clip = f_max < np.inf
    for b in range(B):
        for h in range(H):
            nb = N[b, h]
            hb = hp[b, h]
            for k in range(K):
                v = (F[b, h, k] / nb) * lam[h, k] + (hb * z[b, k]) * gamma[h, k]
                if clip:
                    v = min(max(v, -f_max), f_max)
                out[b, h, k] = v


@_jit
def norm_dot_int(Wsh, Wsq, F, z, S, Fz):
    """S[b, h] = sum_k (Wsh[h, k] + F[b, h, k])^2 and Fz[b, h] = sum_k F[b, h, k] z[b, k], int64
    (``Wsq`` unused: the int64 sum of G^2 needs no split)."""
    B, H, K = F.shape
    for b in range(B):
        for h in range(H):
            s = np.int64(0)
            fz = np.int64(0)
            for k in range(K):
                f = F[b, h, k]
                g = Wsh[h, k] + f
                s += g * g
                fz += f * z[b, k]
            S[b, h] = s
            Fz[b, h] = fz


@_jit
def plasticity_int(F, N, lam, gamma, hp, z, s, k, f_max, wide_max, state_max, out):
    """out = clip(mul_q12(round_div(F << s, N), L) + rshift_round(gamma h z, k), +-f_max)
    (f_max < 0: no clip), int64.  Returns (inexact, hebb_over, f_over): the number of elements
    whose quotient estimate the correction did not make exact, of Hebbian products above
    ``wide_max`` and of new values above ``state_max`` in magnitude (out is then not the
    specification's value: the caller runs the NumPy form).  Branch-free inner loop: the shifts
    as (p << kl + half) >> kr (kl = max(-k, 0), kr = max(k, 0)), mul_q12's sign by xor."""
    B, H, K = F.shape
    kl = max(-k, 0)
    kr = max(k, 0)
    half = (np.int64(1) << (kr - 1)) if kr > 0 else np.int64(0)
    hi = f_max if f_max >= 0 else np.int64(0x7FFFFFFFFFFFFFFF)
    inexact = 0
    hebb_over = 0
    f_over = 0
    for b in range(B):
        for h in range(H):
            n = N[b, h]
            den = 2 * n
            rinv = 1.0 / np.float64(den)
            hb = hp[b, h]
            for j in range(K):
                num = 2 * (F[b, h, j] << s) + n
                x = np.float64(num) * rinv
                q = np.int64(x)                                    # towards zero, then floor(x)
                q -= np.int64(np.float64(q) > x)
                r = num - q * den
                q += np.int64(r >= den) - np.int64(r < 0)          # one correction step
                r = num - q * den
                inexact += np.int64(r < 0) + np.int64(r >= den)    # q = floor(num / den) iff 0 <= r < den
                L = lam[h, j]
                sg = (q ^ L) >> 63                                 # -1 where the signs differ
                m = (((abs(q) * abs(L)) >> DECAY_BITS) ^ sg) - sg  # mul_q12: towards zero
                p = gamma[h, j] * hb * z[b, j]
                hebb_over += np.int64(abs(p) > wide_max)
                v = m + (((p << kl) + half) >> kr)                 # rshift_round(p, k)
                v = min(max(v, -hi), hi)
                f_over += np.int64(abs(v) > state_max)
                out[b, h, j] = v
    return inexact, hebb_over, f_over


@_jit
def add_events_int(dz, WT, uW):
    """uW[b, :] += sum over k with dz[b, k] != 0 of dz[b, k] WT[k, :] (int64, in place): the
    event-driven W z of the plastic layer (``WT`` = W^T, rows = presynaptic units)."""
    B, K = dz.shape
    H = WT.shape[1]
    for b in range(B):
        for k in range(K):
            d = dz[b, k]
            if d != 0:
                for h in range(H):
                    uW[b, h] += d * WT[k, h]
