"""Fused per-frame kernels of the reference simulator (numba): the plastic STPN layer, and the
static layers of the fixed-point network.

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
  NumPy int64 form).  round_div as the floor of one correctly rounded float64 division, exact
  while the operands stay below 2**53 (checked per element: beyond, the kernel says it is not
  exact and the caller runs the NumPy form).  The plasticity pass also sums,
  on the new F, the next frame's S = sum_k G^2 (G does not depend on z); the next forward phase
  needs one pass for F z (:func:`dot_int`), then N = isqrt(S) and a = round_div((uW << sG) + F z,
  N) + b (:func:`stpn_forward_int`).  Integer sums are the same in any order (int64, modulo
  2**64), so these are the NumPy form's integers.
- fixed point, the static layers: the "lava" sigma-delta rule
  (:func:`conversion.fixed_point.sigma_delta_lava`, :func:`sigma_delta_lava_int`) and the
  event-driven Conv2d synapse with the 24-bit wrap of a Lava Conv
  (:func:`conversion.fixed_point.wrap_signed`, :func:`conv_events_int`), each in one pass.

Overflow: the fixed-point kernels count the values beyond their budgets (Hebbian products beyond
the 64-bit register budget ``fixed_point.WIDE_MAX``, states and payloads beyond
``fixed_point.STATE_MAX``) without saturating; where a count is non-zero the caller discards the
kernel's output and runs the NumPy form, whose :class:`~conversion.fixed_point.OverflowMonitor`
checks saturate and record the events.

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


def _inline(f):
    return njit(cache=True, fastmath=False, nogil=True, inline="always")(f) if AVAILABLE else f


#: float64 holds every integer below 2**53 exactly: round_div by one float division is exact for
#: |num| + den below it (see :func:`_plastic_int_entry`)
EXACT_DIV = 1 << 53


@_inline
def _plastic_int_entry(f, n, den, fden, lim, L, gm, hb, zj, s, kl, kr, half, hi):
    """One synapse of :func:`plasticity_int`: (new F, inexact quotient (0/1), |gamma h z| (the
    Hebbian product, for the budget check)).

    round_div(F << s, N) = floor(num / den) with num = 2 (F << s) + N, den = 2 N, as the floor of
    the correctly rounded float64 quotient: with |num| + den < 2**53 (``lim`` = 2**53 - den) num
    and den are exact in float64, and fl(num / den) cannot reach an integer num / den is not (its
    distance to one, at least 1 / den, exceeds the rounding error, below (|num| / den + 1) 2**-53),
    so the floor is exact; elsewhere the entry reports an inexact quotient.  mul_q12(q, L) =
    trunc(q L / 4096) as (t + (4095 where t < 0)) >> 12 on t = q L; the shift of the product as
    (p << kl + half) >> kr; the clip to +-hi."""
    num = 2 * (f << s) + n
    bad = np.int64(num >= lim) + np.int64(num <= -lim)
    q = np.int64(np.floor(np.float64(num) / fden))
    t = q * np.int64(L)
    m = (t + ((t >> 63) & ((np.int64(1) << DECAY_BITS) - 1))) >> DECAY_BITS   # mul_q12: towards zero
    p = np.int64(gm) * hb * zj
    v = m + (((p << kl) + half) >> kr)                 # rshift_round(p, k)
    return min(max(v, -hi), hi), bad, abs(p)


def plasticity_int(F, N, lam, gamma, hp, z, s, k, f_max, wide_max, state_max, out):
    """out = clip(mul_q12(round_div(F << s, N), L) + rshift_round(gamma h z, k), +-f_max)
    (f_max < 0: no clip), int64.  Returns (inexact, hebb_over, f_over): the number of elements
    whose quotient estimate the correction did not make exact, of Hebbian products above
    ``wide_max`` and of new values above ``state_max`` in magnitude (out is then not the
    specification's value: the caller runs the NumPy form).  Branch-free inner loop
    (:func:`_plastic_int_entry`; an inexact quotient is one with |2 (F << s) + N| + 2 N >= 2**53):
    :func:`plasticity_norm_int` without the row norms."""
    B, H, K = F.shape
    return plasticity_norm_int(F, N, lam, gamma, hp, z, np.zeros((H, K), np.int8), 0, s, k, f_max, wide_max,
                               state_max, out, np.empty((B, H), np.int64))


@_jit
def plasticity_norm_int(F, N, lam, gamma, hp, z, W, sG, s, k, f_max, wide_max, state_max, out, S):
    """:func:`plasticity_int` (same arguments, same counts returned) and, in the same pass, the
    next frame's squared row norms on the new F: S[b, h] = sum_k ((W[h, k] << sG) + out[b, h, k])^2
    (G = W << sG + F; int64, modulo 2**64 as the sum of :func:`norm_dot_int`).  W, lam and gamma
    may be any integer dtype (narrow copies read less memory)."""
    B, H, K = F.shape
    kl, kr = max(-k, 0), max(k, 0)
    half = (np.int64(1) << (kr - 1)) if kr > 0 else np.int64(0)
    hi = f_max if f_max >= 0 else np.int64(0x7FFFFFFFFFFFFFFF)
    inexact = 0
    hebb_over = 0
    f_over = 0
    for b in range(B):
        for h in range(H):
            n = N[b, h]
            den = 2 * n
            fden = np.float64(den)
            lim = EXACT_DIV - den
            hb = hp[b, h]
            s2 = np.int64(0)
            for j in range(K):
                v, bad, p = _plastic_int_entry(F[b, h, j], n, den, fden, lim, lam[h, j], gamma[h, j], hb, z[b, j],
                                               s, kl, kr, half, hi)
                inexact += bad
                hebb_over += np.int64(p > wide_max)
                f_over += np.int64(abs(v) > state_max)
                out[b, h, j] = v
                g = (np.int64(W[h, j]) << sG) + v
                s2 += g * g
            S[b, h] = s2
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


# -- the static layers of the fixed-point network ------------------------------------------------
@_jit
def sigma_delta_lava_int(u, relu, act0, res0, sent0, vth, S, state_max, act, res, y, sent, pay, active):
    """Rule "lava" of a SigmaDelta node on flat int64 arrays, as
    :func:`conversion.fixed_point.sigma_delta_lava` with the node's state update of the simulator::

        a = relu ? max(u, 0) : u;  believed = act0 - res0;  d = a - believed
        fire = |d| >= vth;  s = fire ? d : 0;  pay = s >> S
        res = a - (believed + s);  act = a;  y = a >> S;  sent = sent0 + pay

    Writes the outputs and ``active[:n_active]`` (the indices with pay != 0).  Returns
    (act_over, pay_over, fired, n_active): the elements beyond ``state_max`` of a and of pay (the
    outputs are then not the specification's: the caller runs the NumPy form, whose monitor
    saturates and records), the firing units and the non-zero payloads."""
    act_over = 0
    pay_over = 0
    fired = 0
    na = 0
    for i in range(u.size):
        a = u[i]
        if relu and a < 0:
            a = np.int64(0)
        act_over += np.int64(abs(a) > state_max)
        believed = act0[i] - res0[i]
        d = a - believed
        fire = abs(d) >= vth
        s = d if fire else np.int64(0)
        p = s >> S
        pay_over += np.int64(abs(p) > state_max)
        fired += np.int64(fire)
        res[i] = a - (believed + s)
        act[i] = a
        y[i] = a >> S
        sent[i] = sent0[i] + p
        pay[i] = p
        if p != 0:
            active[na] = i
            na += 1
    return act_over, pay_over, fired, na


@_inline
def _scatter_events(x, active, n_in, pos, kk, wt, fan, acc):
    """The event loop of the Conv2d kernels: acc[b, p, :] += x[a] wt[kk[unit, i], :] for each
    event a of ``active`` (in that order) and each output position p = pos[unit, i] its window
    covers; returns the events' fan-out sum.  int64 x and acc: exact integer sums (int32 weights
    promote to int64); float64: the NumPy scatter's order of addition."""
    P = pos.shape[1]
    O = acc.shape[2]
    synops = 0
    for i in range(active.size):
        a = active[i]
        b = a // n_in
        unit = a - b * n_in
        e = x[a]
        synops += fan[unit]
        for t in range(P):
            p = pos[unit, t]
            r = kk[unit, t]
            for o in range(O):
                acc[b, p, o] += wt[r, o] * e
    return synops


@_jit
def conv_events_int(x, active, n_in, pos, kk, wt, fan, u, wrap_bits, state_max, acc, du, unew):
    """The event-driven integer synapse of a Conv2d node, position-major: for each event a =
    ``active`` (flat index into x (B n_in), unit = a mod n_in) and each output position p =
    pos[unit, i] whose window covers it (the sink n_pos where none), acc[b, p, :] += x[a]
    wt[kk[unit, i], :] (``wt`` (C kh kw, O): the weights of one kernel entry for every output
    channel, contiguous); then du[b, o n_pos + p] = acc[b, p, o], ``wrap_bits`` > 0: wrapped into
    that signed range (two's complement, :func:`conversion.fixed_point.wrap_signed`); unew = u +
    du.  int64 throughout (``acc`` (B, n_pos + 1, O) work space).  Returns (du_over, u_over,
    synops): the elements of du (before the wrap) and of unew beyond ``state_max`` and the events'
    fan-out sum, sum fan[unit]."""
    B, n1, O = acc.shape
    n_pos = n1 - 1
    acc[:] = 0
    synops = _scatter_events(x, active, n_in, pos, kk, wt, fan, acc)
    du_over = 0
    u_over = 0
    half = (np.int64(1) << (wrap_bits - 1)) if wrap_bits > 0 else np.int64(0)
    mask = 2 * half - 1
    for b in range(B):
        for o in range(O):
            for p in range(n_pos):
                d = acc[b, p, o]
                if wrap_bits > 0:
                    du_over += np.int64(abs(d) > state_max)
                    d = ((d + half) & mask) - half
                j = o * n_pos + p
                du[b, j] = d
                v = u[b, j] + d
                u_over += np.int64(abs(v) > state_max)
                unew[b, j] = v
    return du_over, u_over, synops


@_jit
def stpn_forward_int(S, uW, Fz, sG, bias, wide_max, state_max, N, a):
    """The fixed-point forward phase of the plastic layer after its row sums (int64, (B, H)):
    N = max(isqrt(S), 1), a = round_div((uW << sG) + Fz, N) + bias (round_div(x, n) =
    floor((2x + n) / (2n)); isqrt exact: the float root and a +-1 correction, as
    :func:`mstpn_base.intmath.isqrt`).  Returns the number of elements outside a budget: S < 0 or
    S > wide_max, |uW| > wide_max >> sG, |dot| > wide_max, |a| > state_max (the outputs are then
    not the specification's: the caller runs the NumPy form, whose monitor records)."""
    B, H = S.shape
    over = 0
    ulim = wide_max >> sG
    for b in range(B):
        for h in range(H):
            s = S[b, h]
            over += np.int64(s < 0) + np.int64(s > wide_max)
            r = np.int64(np.floor(np.sqrt(np.float64(max(s, np.int64(0))))))
            if r * r > s:
                r -= 1
            if (r + 1) * (r + 1) <= s:
                r += 1
            n = max(r, np.int64(1))
            N[b, h] = n
            u = uW[b, h]
            over += np.int64(abs(u) > ulim)
            dot = (u << sG) + Fz[b, h]
            over += np.int64(abs(dot) > wide_max)
            v = (2 * dot + n) // (2 * n) + bias[h]
            over += np.int64(abs(v) > state_max)
            a[b, h] = v
    return over


@_jit
def dot_int(F, z, Fz):
    """Fz[b, h] = sum_k F[b, h, k] z[b, k] (int64): one sequential pass over F."""
    B, H, K = F.shape
    for b in range(B):
        for h in range(H):
            acc = np.int64(0)
            for k in range(K):
                acc += F[b, h, k] * z[b, k]
            Fz[b, h] = acc


# -- the plastic layer's input phase (events into z and W z, then the row sums) -------------------
@_jit
def stpn_input_float(dx, dh, z0, uW0, WT, W, Wsq, F, z, uW, S, Fz):
    """The float forward sums of the plastic layer from its input events, one call: dz = [dx ; dh],
    z = z0 + dz, uW = uW0 + sum over k with dz[b, k] != 0 of dz[b, k] WT[k, :] (the event-driven
    W z, ``WT`` = W^T; the sum in increasing k, then added to uW0), and the row sums of
    :func:`norm_dot_float` on the new z.  Returns (non-zero dz, non-zero z) over the batch."""
    B, I = dx.shape
    H = dh.shape[1]
    nd = 0
    nz = 0
    acc = np.empty(H)
    for b in range(B):
        acc[:] = 0.0
        for k in range(I + H):
            d = dx[b, k] if k < I else dh[b, k - I]
            v = z0[b, k] + d
            z[b, k] = v
            nz += np.int64(v != 0)
            if d != 0:
                nd += 1
                for j in range(H):
                    acc[j] += d * WT[k, j]
        for j in range(H):
            uW[b, j] = uW0[b, j] + acc[j]
    norm_dot_float(W, Wsq, F, z, S, Fz)
    return nd, nz


@_jit
def stpn_input_int(dx, dh, sx, sh, z0, uW0, WT, Wsh, F, with_norm, z, uW, S, Fz):
    """Fixed point, the input phase of the plastic layer in int64: dz = [dx << sx ; dh << sh], z =
    z0 + dz, uW = uW0 + sum over the events of dz[b, k] WT[k, :], and Fz = F z on the new z
    (``with_norm``: also S = sum_k (Wsh + F)^2, as :func:`norm_dot_int`; else S is left alone, the
    last plasticity pass computed it).  Integer sums in any order: the NumPy form's integers.
    Returns (non-zero dz, non-zero z)."""
    B, I = dx.shape
    H = dh.shape[1]
    nd = 0
    nz = 0
    for b in range(B):
        for j in range(H):
            uW[b, j] = uW0[b, j]
        for k in range(I + H):
            d = (dx[b, k] << sx) if k < I else (dh[b, k - I] << sh)
            v = z0[b, k] + d
            z[b, k] = v
            nz += np.int64(v != 0)
            if d != 0:
                nd += 1
                for j in range(H):
                    uW[b, j] += d * WT[k, j]
    if with_norm:
        norm_dot_int(Wsh, Wsh[0, :1], F, z, S, Fz)
    else:
        dot_int(F, z, Fz)
    return nd, nz


# -- the static layers of the float network ------------------------------------------------------
@_jit
def sigma_delta_float(y, sent0, thr, sent, e, active):
    """The sigma-delta sender of :func:`conversion.semantics.sigma_delta` on flat float64 arrays
    (``thr`` per unit, index i mod its size; y.size a multiple of it): e = y - sent0 where |y - sent0| > thr, else 0;
    sent = sent0 + e.  Writes ``active[:n]`` (the firing indices); returns n (the events)."""
    na = 0
    n_thr = thr.size
    for b in range(y.size // n_thr):
        for j in range(n_thr):
            i = b * n_thr + j
            d = y[i] - sent0[i]
            fire = abs(d) > thr[j]
            v = d if fire else 0.0
            e[i] = v
            sent[i] = sent0[i] + v
            if fire:
                active[na] = i
                na += 1
    return na


@_jit
def conv_events_float(x, active, n_in, pos, kk, wt, fan, u, acc, du, unew):
    """The event-driven float64 synapse of a Conv2d node, the loop of :func:`conv_events_int`
    without the wrap: each output sums x[a] wt[kk, o] over the events a in the order of
    ``active`` (as :meth:`conversion.ops.EventConv2d.scatter`'s bincount, the same sums); du in
    (B, O n_pos) order, unew = u + du.  Returns the events' fan-out sum (synops)."""
    B, n1, O = acc.shape
    n_pos = n1 - 1
    acc[:] = 0.0
    synops = _scatter_events(x, active, n_in, pos, kk, wt, fan, acc)
    for b in range(B):
        for o in range(O):
            for p in range(n_pos):
                j = o * n_pos + p
                d = acc[b, p, o]
                du[b, j] = d
                unew[b, j] = u[b, j] + d
    return synops


@_jit
def sigma_delta_round_int(u, mode, shift, table, tshift, sent0, thr, state_max, y, sent, pay, active):
    """Fixed point, rule "round" of a SigmaDelta node on flat int64 arrays: y = tanh_int(u) (mode
    2, :func:`conversion.fixed_point.tanh_int` with ``table``, ``tshift``) or rshift_round(u,
    shift) (mode 0, identity; mode 1, then max(., 0)); then the sender of
    :func:`conversion.semantics.sigma_delta` (fire where |y - sent0| > thr).  Returns (y_over,
    pay_over, n_active): the elements beyond ``state_max`` of y and of the payload (the caller
    then runs the NumPy form) and the firing units, ``active[:n_active]``."""
    y_over = 0
    pay_over = 0
    na = 0
    last = table.size - 1
    n_thr = thr.size
    kl, kr = max(-shift, 0), max(shift, 0)
    half = (np.int64(1) << (kr - 1)) if kr > 0 else np.int64(0)
    fmask = (np.int64(1) << tshift) - 1
    for i in range(u.size):
        j = i % n_thr if i >= n_thr else i
        a = u[i]
        if mode == 2:
            mag = abs(a)
            k = mag >> tshift
            if k < last:
                v = table[k] + (((table[k + 1] - table[k]) * (mag & fmask)) >> tshift)
            else:
                v = table[last]
            v = v if a > 0 else (-v if a < 0 else np.int64(0))
        else:
            v = ((a << kl) + half) >> kr
            if mode == 1 and v < 0:
                v = np.int64(0)
        y_over += np.int64(abs(v) > state_max)
        y[i] = v
        d = v - sent0[i]
        fire = abs(d) > thr[j]
        p = d if fire else np.int64(0)
        pay_over += np.int64(abs(p) > state_max)
        pay[i] = p
        sent[i] = sent0[i] + p
        if fire:
            active[na] = i
            na += 1
    return y_over, pay_over, na
