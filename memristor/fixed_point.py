"""Loihi-style integer specification of the device model, and its NumPy bit-accurate oracle.

The equations are those of :mod:`memristor.reference`, in the same order (decay, pulse, record),
carried out on non-negative integers.  ``>>`` is an arithmetic right shift (floor division by a
power of two); every product is formed in int64 and the order of operations below is part of the
specification (the Lava ``fixed_pt`` model calls the same kernel functions).

Formats (default :class:`FixedPointSpec`; ``Qf`` = f fractional bits):

=====================  ===========================  =========================================
quantity               integer                      range / budget
=====================  ===========================  =========================================
g_lt, g_st             G / lsb_g                     24-bit signed state, used 0 .. 2**23-1;
                       lsb_g = max(g_max, g_st_max)  max(g_max, g_st_max) -> 2**22
                       / 2**22 [S]
r, q, f = 1 + ppf r    Q16 (``trace_frac``)          24-bit state: r, f < 128; q in [0, 2**16]
decays d_g, d_r, d_q   round(4096 (1 - lambda))      12 bit, 1 .. 4095
a_st, eta_lt, meta_d.  Q16 (``eff_frac``)            0 .. 2**16 (values <= 1)
ppf_gain               Q16                           0 .. 2**23-1 (< 128)
|s| (pulse efficacy)   Q12 (``drive_frac``), signed  24-bit signed payload, |s| < 2048
noise (c2c factor)     Q12 (``noise_frac``)          16 bit, noise < 16
k, k_lt                Q24 (``k_frac``)              clipped to [0, 2**24] (= [0, 1])
=====================  ===========================  =========================================

Per step k (arrays over devices)::

    decay (k >= 1):  x <- (x * (4096 - d_x)) >> 12            for x in g_st, r, q
    pulse (s != 0):  f   = 2**16 + ((ppf * r) >> 16)           Q16, checked against 24 bits
                     mu  = 2**16 - q                           Q16
                     x   = (a * |s|) >> 4                      Q16*Q12 -> Q24
                     x   = (x * noise) >> 12
                     x   = (x * mu) >> 16
                     x   = (x * f) >> 16                       < 2**62 by the budgets above
                     k   = min(x, 2**24)
                     s>0: g_st += (k * (g_st_max - g_st)) >> 24
                     s<0: g_st -= (k * g_st) >> 24
                     lt:  k_lt = min((((eta * |s|) >> 4) * noise) >> 12, 2**24)
                          s>0: g_lt += (k_lt * (g_max - g_lt)) >> 24
                          s<0: g_lt -= (k_lt * (g_lt - g_min)) >> 24
                          n_levels > 0: L = ((g_lt - g_min)(n_levels-1) 2 + span) // (2 span)
                                        g_lt = g_min + (L span) // (n_levels - 1)   (span = g_max - g_min)
                     r  += 2**16                               saturates at 2**23-1
                     q  += (md * (2**16 - q)) >> 16

Saturation: every state is clipped to 0 .. 2**23-1; each clip (and f above its budget) is an
overflow event (variable, step, device).  With ``spec.strict`` the first event raises
:class:`FixedPointOverflowError`; otherwise the run continues saturated and the events are listed
in ``trace.meta["overflows"]``.  Inputs that do not fit their budget are rejected by
:func:`integer_problem` with the same error.

Error bound (:func:`error_bound`): a first-order forward error analysis evaluated along the float
trajectory.  Each floor costs < 1 LSB; a decay with lambda_q = 1 - d/4096 in place of lambda adds
|lambda_q - lambda| x per step, and earlier errors shrink by lambda_q, so a pure relaxation has
|x_hat_n - x_n| <= x_0 |lambda_q^n - lambda^n| + min(n, 1/(1 - lambda_q)) LSB.  At dt = 10 ms and
tau = 10 s, d = round(4.096) = 4: the decay *rate* is 2.3 % too slow, i.e. up to ~0.9 % of the
initial g_st (at t = tau; relative to the current value 2.3 % t/tau) and 1024 LSB of floor loss.  Against the float model run with the
quantised parameters (:func:`quantised_model`) only the floor terms remain: a few LSB per op.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from memristor import reference as ref
from memristor.reference import DeviceBatch, Drive, Trace
from mstpn_base.errors import FixedPointOverflowError, ParameterError
from mstpn_base.intmath import INT, decay, decay_code

OVERFLOW_ORDER = ("f", "r", "q", "g_st", "g_lt")  # the order in which overflow events are reported


def overflow_error(variable: str, step: int, device: int, value: int | None = None,
                   budget: int | None = None) -> FixedPointOverflowError:
    """The overflow of a device variable at a step, naming all three."""
    extra = "" if value is None else f" (value {value} > {budget})"
    return FixedPointOverflowError(f"fixed-point overflow of {variable} at step {int(step)}, device {int(device)}{extra}",
                                   variable=variable, step=int(step), device=int(device))


@dataclass(frozen=True)
class FixedPointSpec:
    """Bit widths and fractional bits of the integer device model (see the module table)."""

    state_bits: int = 24     # signed width of g_lt, g_st, r, q, f (values >= 0)
    decay_bits: int = 12     # d in 0 .. 2**12 - 1, x <- x (2**12 - d) >> 12
    g_full_scale: int = 2**22  # integer code of max(g_max, g_st_max)
    trace_frac: int = 16     # r, q, f, mu (12 bits let the floor losses of q's slow decay reach 3 %)
    eff_frac: int = 16       # a_st, eta_lt, ppf_gain, meta_depletion
    drive_frac: int = 12     # |s|
    noise_frac: int = 12
    noise_bits: int = 16
    k_frac: int = 24
    strict: bool = True      # raise on the first overflow (else saturate and record)

    def __post_init__(self):
        if self.g_full_scale > self.state_max:
            raise ParameterError(f"g_full_scale {self.g_full_scale} exceeds the state range {self.state_max}")
        if self.eff_frac + self.drive_frac < self.k_frac:
            raise ParameterError("eff_frac + drive_frac must be >= k_frac")
        if self.worst_product_bits() > 63:
            raise ParameterError(f"spec allows int64 products of {self.worst_product_bits()} bits (> 63)")

    @property
    def state_max(self) -> int:
        """Largest state value: 2**(state_bits-1) - 1."""
        return (1 << (self.state_bits - 1)) - 1

    @property
    def one_t(self) -> int:
        return 1 << self.trace_frac

    @property
    def one_d(self) -> int:
        return 1 << self.decay_bits

    @property
    def one_k(self) -> int:
        return 1 << self.k_frac

    @property
    def noise_max(self) -> int:
        return (1 << self.noise_bits) - 1

    def worst_product_bits(self) -> int:
        """n such that every int64 product of the kernel is < 2**n, given the input budgets
        (a, eta, md <= 1; |s|, ppf, r, f, g < 2**(state_bits-1); noise < 2**noise_bits; mu <= 1)."""
        sb, one = self.state_bits - 1, self.eff_frac
        x = sb + self.k_frac - self.drive_frac            # (a |s|) >> (eff + drive - k)
        chain = [one + sb, x + self.noise_bits]            # a |s| ; x noise
        x = x + self.noise_bits - self.noise_frac          # >> noise_frac
        chain += [x + self.trace_frac, x + sb]             # x mu (then >> trace_frac) ; x f
        return max(chain + [sb + sb, self.k_frac + sb, one + self.trace_frac])  # ppf r ; k g ; md (1-q)


DEFAULT_SPEC = FixedPointSpec()


@dataclass
class FixedProblem:
    """A device batch and drive in integer form (:func:`integer_problem`).

    Per-device int64 arrays of shape (n,): ``d_g``, ``d_r``, ``d_q`` (12-bit decays), ``a``, ``eta``,
    ``ppf``, ``md`` (Q16), ``g_min``, ``g_max``, ``g_st_max`` (units of ``lsb_g``); ``n_levels`` int.
    Drive (n_steps, n): ``s`` (signed Q12), ``lt`` (bool), ``noise`` (Q12).  ``init``: the integer
    initial state.
    """

    spec: FixedPointSpec
    dt: float
    lsb_g: float
    consts: dict
    s: np.ndarray
    lt: np.ndarray
    noise: np.ndarray
    init: dict
    n_levels: int

    @property
    def lsb_t(self) -> float:
        return 2.0 ** -self.spec.trace_frac


def _decay_code(lam, name: str, spec: FixedPointSpec) -> np.ndarray:
    d = decay_code(lam, spec.decay_bits)
    if np.any((d == 0) & (np.asarray(lam) < 1.0)):
        raise ParameterError(
            f"decay of {name} rounds to 0 in {spec.decay_bits} bits (1 - lambda = {float(np.max(1 - np.asarray(lam))):.3g}"
            f" < {0.5 / spec.one_d:.3g}): the relaxation would be lost; use a longer step dt")
    return d


def _fit(x, bits_max: int, name: str, frac: int) -> np.ndarray:
    v = np.rint(np.asarray(x, float) * (1 << frac)).astype(INT)
    if np.any(np.abs(v) > bits_max):
        raise ParameterError(f"{name} = {float(np.max(np.abs(x)))} does not fit its fixed-point budget "
                             f"({bits_max / (1 << frac):.6g})")
    return v


#: the per-device integer constants of a FixedProblem, in a fixed order (rows of the Lava Var)
CONST_ORDER = ("d_g", "d_r", "d_q", "a", "eta", "ppf", "md", "g_min", "g_max", "g_st_max")


def integer_problem(batch: DeviceBatch, drive: Drive, spec: FixedPointSpec = DEFAULT_SPEC, g_lt0=None) -> FixedProblem:
    """Integer form of ``batch`` and ``drive`` (round to nearest).  Raises
    :class:`FixedPointOverflowError` naming (variable, step, device) for a drive value outside its
    budget, :class:`ParameterError` for a parameter that does not fit."""
    ref.check_shapes(batch, drive)
    p, n = batch.params, batch.n
    lsb = max(p.g_max, p.g_st_max) / spec.g_full_scale
    lam = ref.decay_factors(batch, drive.dt)
    full = lambda x: np.broadcast_to(np.asarray(x), (n,)).copy()  # noqa: E731
    smax, one = spec.state_max, 1 << spec.eff_frac
    consts = dict(
        d_g=_decay_code(lam["g_st"], "g_st", spec), d_r=full(_decay_code(lam["r"], "r", spec)),
        d_q=full(_decay_code(lam["q"], "q", spec)),
        a=_fit(batch.a_st, one, "a_st", spec.eff_frac), eta=_fit(batch.eta_lt, one, "eta_lt", spec.eff_frac),
        ppf=full(_fit(p.ppf_gain, smax, "ppf_gain", spec.eff_frac)),
        md=full(_fit(p.meta_depletion, one, "meta_depletion", spec.eff_frac)),
        g_min=full(round(p.g_min / lsb)), g_max=full(round(p.g_max / lsb)), g_st_max=full(round(p.g_st_max / lsb)),
    )
    consts = {k: np.asarray(consts[k], INT) for k in CONST_ORDER}
    mag = np.rint(np.abs(drive.s) * (1 << spec.drive_frac)).astype(INT)
    mag = np.where(drive.s != 0, np.maximum(mag, 1), 0)  # a pulse stays a pulse (r, q count it)
    _check_budget(mag, smax, "s")
    s = np.sign(drive.s).astype(INT) * mag
    noise = np.rint(drive.noise * (1 << spec.noise_frac)).astype(INT)
    _check_budget(noise, spec.noise_max, "noise")
    st = ref.initial_state(batch, g_lt0)
    init = dict(g_lt=np.rint(st["g_lt"] / lsb).astype(INT), g_st=np.zeros(n, INT), r=np.zeros(n, INT),
                q=np.zeros(n, INT))
    return FixedProblem(spec, drive.dt, lsb, consts, s, drive.lt.astype(bool), noise, init, int(p.n_levels))


def _check_budget(a: np.ndarray, budget: int, name: str) -> None:
    bad = np.argwhere(a > budget)
    if len(bad):
        step, dev = bad[0]
        raise overflow_error(name, step, dev, int(a[step, dev]), budget)


# -- the integer kernel (shared with the Lava fixed_pt model) -----------------------------------------
def decay_int(x: np.ndarray, d: np.ndarray, spec: FixedPointSpec = DEFAULT_SPEC) -> np.ndarray:
    """Loihi decay of a (non-negative) state: (x * (2**12 - d)) >> 12 (int64)."""
    return decay(x, d, spec.decay_bits)


def snap_levels_int(g, g_min, g_max, n_levels: int) -> np.ndarray:
    """Snap integer g_lt to n_levels levels of the integer grid g_min + floor(L span / (n_levels-1)),
    L = round-half-up((g - g_min)(n_levels - 1) / span)."""
    g = np.asarray(g, INT)
    if n_levels == 0:
        return g
    span, m = np.asarray(g_max, INT) - g_min, n_levels - 1
    lev = ((g - g_min) * m * 2 + span) // (2 * span)
    return g_min + (lev * span) // m


def pulse_int(state: dict, c: dict, s, lt, noise, n_levels: int, spec: FixedPointSpec = DEFAULT_SPEC):
    """Integer pulse step (module docstring) on one step's vectors.

    Returns (new state dict, overflow dict variable -> bool mask over devices).  States and f are
    saturated to 0 .. 2**23-1; the masks mark where that clipped something.
    """
    g_lt, g_st, r, q = (np.asarray(state[v], INT) for v in ref.STATE_VARS)
    s, noise, lt = np.asarray(s, INT), np.asarray(noise, INT), np.asarray(lt, bool)
    smax, tf, kf = spec.state_max, spec.trace_frac, spec.k_frac
    pulsed, mag = s != 0, np.abs(s)
    f = spec.one_t + ((c["ppf"] * r) >> spec.eff_frac)
    ovf = {"f": pulsed & (f > smax)}
    f = np.minimum(f, smax)
    mu = spec.one_t - q
    shift_as = spec.eff_frac + spec.drive_frac - kf
    x = (c["a"] * mag) >> shift_as
    x = (x * noise) >> spec.noise_frac
    x = (x * mu) >> tf
    x = (x * f) >> tf
    k = np.minimum(x, spec.one_k)
    up = (k * (c["g_st_max"] - g_st)) >> kf
    down = (k * g_st) >> kf
    g_st = np.where(s > 0, g_st + up, np.where(s < 0, g_st - down, g_st))
    k_lt = np.minimum((((c["eta"] * mag) >> shift_as) * noise) >> spec.noise_frac, spec.one_k)
    g_new = np.where(s > 0, g_lt + ((k_lt * (c["g_max"] - g_lt)) >> kf),
                     g_lt - ((k_lt * (g_lt - c["g_min"])) >> kf))
    g_lt = np.where(lt & pulsed, snap_levels_int(g_new, c["g_min"], c["g_max"], n_levels), g_lt)
    r = np.where(pulsed, r + spec.one_t, r)
    q = np.where(pulsed, q + ((c["md"] * (spec.one_t - q)) >> spec.eff_frac), q)
    out = dict(g_lt=g_lt, g_st=g_st, r=r, q=q)
    for v in ("r", "q", "g_st", "g_lt"):
        ovf[v] = (out[v] > smax) | (out[v] < 0)
        out[v] = np.clip(out[v], 0, smax)
    return out, ovf


def first_overflow(ovf: dict):
    """(variable, device) of the first event in OVERFLOW_ORDER, or None."""
    for v in OVERFLOW_ORDER:
        idx = np.flatnonzero(ovf.get(v, ()))
        if len(idx):
            return v, int(idx[0])
    return None


def step_int(state: dict, c: dict, k: int, s, lt, noise, n_levels: int, spec: FixedPointSpec = DEFAULT_SPEC):
    """One integer time step k: decay (k >= 1, of the volatile variables), then the pulses
    (where s != 0).  Returns (new state, overflow masks of the pulse step or None).  The NumPy
    oracle (:func:`run_int`) and the Lava fixed_pt model both step with this function."""
    state = dict(state)
    if k:
        for v, d in (("g_st", "d_g"), ("r", "d_r"), ("q", "d_q")):
            state[v] = decay_int(state[v], c[d], spec)
    if not np.any(s):
        return state, None
    return pulse_int(state, c, s, lt, noise, n_levels, spec)


def run_int(prob: FixedProblem) -> tuple[dict, list]:
    """Integer simulation of a :class:`FixedProblem`: raw (n_steps, n) int64 arrays per state and the
    overflow events [(variable, step, device), ...]."""
    spec, c = prob.spec, prob.consts
    n_steps, n = prob.s.shape
    state = {v: prob.init[v].copy() for v in ref.STATE_VARS}
    raw = {v: np.empty((n_steps, n), INT) for v in ref.STATE_VARS}
    events = []
    for k in range(n_steps):
        state, ovf = step_int(state, c, k, prob.s[k], prob.lt[k], prob.noise[k], prob.n_levels, spec)
        for v in OVERFLOW_ORDER if ovf else ():
            for dev in np.flatnonzero(ovf[v]):
                if spec.strict:
                    raise overflow_error(v, k, dev)
                events.append((v, k, int(dev)))
        for v in ref.STATE_VARS:
            raw[v][k] = state[v]
    return raw, events


def to_trace(prob: FixedProblem, raw: dict, times, backend: str, events=()) -> Trace:
    """SI trace from raw integers: g = int * lsb_g [S], r, q = int / 2**trace_frac."""
    lt = prob.lsb_t
    return Trace(np.asarray(times), raw["g_lt"] * prob.lsb_g, raw["g_st"] * prob.lsb_g, raw["r"] * lt,
                 raw["q"] * lt, backend=backend,
                 meta=dict(raw=raw, lsb_g=prob.lsb_g, lsb_t=lt, spec=prob.spec, overflows=list(events)))


def simulate_fixed(batch: DeviceBatch, drive: Drive, g_lt0=None, spec: FixedPointSpec = DEFAULT_SPEC) -> Trace:
    """Bit-accurate integer run; SI trace with the raw integers in ``trace.meta["raw"]``."""
    prob = integer_problem(batch, drive, spec, g_lt0)
    raw, events = run_int(prob)
    return to_trace(prob, raw, drive.times, "fixed-point", events)


# -- the float model with the quantised parameters, and the error bound ------------------------------
def quantised_model(batch: DeviceBatch, drive: Drive, g_lt0=None, spec: FixedPointSpec = DEFAULT_SPEC):
    """(batch, drive, g_lt0) for :func:`memristor.reference.simulate` whose parameters are exactly the
    integers of :func:`integer_problem` (lambda = 1 - d/4096, a_st = a / 2**16, |s| = int / 2**12, ...)."""
    pr = integer_problem(batch, drive, spec, g_lt0)
    c, lsb, dt = pr.consts, pr.lsb_g, drive.dt
    tau_of = lambda d: -dt / np.log1p(-d / spec.one_d)  # noqa: E731
    e16 = float(1 << spec.eff_frac)
    p = batch.params.replace(g_min=float(c["g_min"][0] * lsb), g_max=float(c["g_max"][0] * lsb),
                             g_st_max=float(c["g_st_max"][0] * lsb), ppf_gain=float(c["ppf"][0] / e16),
                             meta_depletion=float(c["md"][0] / e16), tau_ppf=float(tau_of(c["d_r"][0])),
                             tau_meta=float(tau_of(c["d_q"][0])))
    qb = DeviceBatch(p, batch.v_bias, tau_of(c["d_g"]), c["a"] / e16, c["eta"] / e16)
    qd = Drive(dt, drive.v, drive.width, pr.s / float(1 << spec.drive_frac), drive.lt,
               pr.noise / float(1 << spec.noise_frac))
    return qb, qd, pr.init["g_lt"] * lsb


def error_bound(batch: DeviceBatch, drive: Drive, g_lt0=None, spec: FixedPointSpec = DEFAULT_SPEC,
                against: str = "reference") -> dict:
    """Bound on |fixed - float| per step and device for ``g_lt``, ``g_st`` [S], ``r``, ``q`` [1].

    ``against="reference"``: vs :func:`memristor.reference.simulate` on (batch, drive);
    ``against="quantised"``: vs the same on :func:`quantised_model` (only floor errors remain).

    First-order forward analysis along the float trajectory x (e = bound on |x_hat - x|, u = LSB,
    dp = |p_q - p| for each parameter, products bounded by prod(x_i + e_i) - prod(x_i))::

        decay   e <- lambda_q e + |lambda_q - lambda| x + u
        f       e_f = (ppf + dppf) e_r + dppf r + u_t;   e_mu = e_q
        k       e_k = min(1, prod-bound(a, |s|, n, mu, f) + 2**-24 (n mu f + mu f + f + 1))
        g up    e <- min(1, 1-k+e_k) e + e_k (M - g) + min(1, k+e_k) dM + u_g
        g down  e <- min(1, 1-k+e_k) e + e_k (g - m) + min(1, k+e_k) dm + u_g   (m = 0 for g_st)
        levels  e <- (#level boundaries within +-e of the float level coordinate) step + grid error
        q       e <- (1 - c + dc) e + dc (1 - q) + u_t;   r + 1 is exact

    plus 16 float64 epsilons of full scale per step for the float run's own rounding.
    """
    if against not in ("reference", "quantised"):
        raise ParameterError(f"against must be 'reference' or 'quantised', got {against!r}")
    pr = integer_problem(batch, drive, spec, g_lt0)
    if against == "quantised":
        batch, drive, g_lt0 = quantised_model(batch, drive, g_lt0, spec)
    p, c, n = batch.params, pr.consts, batch.n
    ug, ut = pr.lsb_g, pr.lsb_t
    e16, uk = float(1 << spec.eff_frac), 2.0 ** -spec.k_frac
    lam = ref.decay_factors(batch, drive.dt)
    lamq = {"g_st": 1 - c["d_g"] / spec.one_d, "r": 1 - c["d_r"] / spec.one_d, "q": 1 - c["d_q"] / spec.one_d}
    da, deta = np.abs(c["a"] / e16 - batch.a_st), np.abs(c["eta"] / e16 - batch.eta_lt)
    dppf, dmd = abs(c["ppf"][0] / e16 - p.ppf_gain), abs(c["md"][0] / e16 - p.meta_depletion)
    ds = np.abs(np.abs(pr.s) / float(1 << spec.drive_frac) - np.abs(drive.s))
    dn = np.abs(pr.noise / float(1 << spec.noise_frac) - drive.noise)
    dM, dMst, dm = (abs(c[k][0] * ug - getattr(p, k)) for k in ("g_max", "g_st_max", "g_min"))
    full = max(p.g_max, p.g_st_max)
    rnd = 16 * np.finfo(float).eps
    x = ref.initial_state(batch, g_lt0)
    e = {"g_lt": np.abs(pr.init["g_lt"] * ug - x["g_lt"]), "g_st": np.zeros(n), "r": np.zeros(n), "q": np.zeros(n)}
    unit = {"g_st": ug, "r": ut, "q": ut}
    out = {v: np.empty((drive.n_steps, n)) for v in ref.STATE_VARS}
    for k in range(drive.n_steps):
        if k:
            for v in ("g_st", "r", "q"):
                e[v] = lamq[v] * e[v] + np.abs(lamq[v] - lam[v]) * x[v] + unit[v] + rnd * (full if v == "g_st" else np.maximum(x[v], 1))
                x[v] = x[v] * lam[v]
        if np.any(drive.s[k]):
            e = _pulse_bound(batch, x, e, drive.s[k], drive.lt[k], drive.noise[k], ds[k], dn[k], da, deta, dppf, dmd,
                             dM, dMst, dm, ug, ut, uk)
            x = ref.apply_pulses(batch, x, drive.s[k], drive.lt[k], drive.noise[k])
        for v in ref.STATE_VARS:
            out[v][k] = e[v] + rnd * (full if v.startswith("g") else np.maximum(x[v], 1))
    return out


def _prod_bound(pairs):
    hi = lo = 1.0
    for val, err in pairs:
        hi, lo = hi * (val + err), lo * val
    return hi - lo


def _pulse_bound(batch, x, e, s, lt, noise, ds, dn, da, deta, dppf, dmd, dM, dMst, dm, ug, ut, uk):
    p = batch.params
    mag = np.abs(s)
    pulsed = s != 0
    f = 1 + p.ppf_gain * x["r"]
    e_f = (p.ppf_gain + dppf) * e["r"] + dppf * x["r"] + ut
    mu = 1 - x["q"]
    kraw = batch.a_st * mag * f * mu * noise
    kk = np.clip(kraw, 0, 1)
    nh, muh, fh = noise + dn, np.minimum(mu + e["q"], 1), f + e_f
    e_k = _prod_bound([(batch.a_st, da), (mag, ds), (noise, dn), (mu, e["q"]), (f, e_f)])
    e_k = np.minimum(e_k + uk * (nh * muh * fh + muh * fh + fh + 1), 1)
    keep, kh = np.minimum(1, 1 - kk + e_k), np.minimum(1, kk + e_k)
    g = x["g_st"]
    e_up = keep * e["g_st"] + e_k * (p.g_st_max - g) + kh * dMst + ug
    e_dn = keep * e["g_st"] + e_k * g + ug
    new = dict(e)
    new["g_st"] = np.where(s > 0, e_up, np.where(s < 0, e_dn, e["g_st"]))
    # long-term
    klt = np.clip(batch.eta_lt * mag * noise, 0, 1)
    e_kl = np.minimum(_prod_bound([(batch.eta_lt, deta), (mag, ds), (noise, dn)]) + uk * (nh + 1), 1)
    keep, kh = np.minimum(1, 1 - klt + e_kl), np.minimum(1, klt + e_kl)
    g = x["g_lt"]
    e_up = keep * e["g_lt"] + e_kl * (p.g_max - g) + kh * dM + ug
    e_dn = keep * e["g_lt"] + e_kl * (g - p.g_min) + kh * dm + ug
    e_lt = np.where(s > 0, e_up, e_dn)
    if p.n_levels:
        g_new = np.where(s > 0, g + klt * (p.g_max - g), g - klt * (g - p.g_min))
        step = (p.g_max - p.g_min) / (p.n_levels - 1)
        span_err = dM + dm
        grid = dm + span_err + ug  # |integer grid level - float grid level| (L <= n_levels - 1)
        v = (g_new - p.g_min) / step
        e_v = (e_lt + dm) / step + v * span_err / (p.g_max - p.g_min) + 1e-9
        jumps = np.floor(v + 0.5 + e_v) - np.floor(v + 0.5 - e_v)
        e_lt = jumps * step + grid
    new["g_lt"] = np.where(lt & pulsed, e_lt, e["g_lt"])
    e_q = (1 - p.meta_depletion + dmd) * e["q"] + dmd * (1 - x["q"]) + ut
    new["q"] = np.where(pulsed, e_q, e["q"])
    return new
