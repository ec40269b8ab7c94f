"""NumPy reference of the SrTiO3 compact model: devices, drives, the simulation loop, energy.

The equations themselves (relaxation, pulse response, quantisation) are defined once in
:mod:`memristor.equations`; this module evaluates them on NumPy arrays, in float64, on a uniform
time grid t_k = k dt (s).  At each step k, in this order: (1) relaxation (k >= 1, exact over dt),
(2) the pulses of the devices whose drive s_k,i != 0 (s = signed pulse efficacy, see
:func:`pulse_efficacy`; n = cycle-to-cycle factor, 1 without noise), (3) record g_lt, g_st, r, q.

The conductance read by a synapse is G = g_lt + g_st (weight multiplication I = V_read G).
Energy (exact integrals of the same trajectory) is in :func:`energy`.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from memristor import equations as eq
from memristor.equations import STATE_VARS  # noqa: F401  (re-exported: the state of a device)
from memristor.params import DeviceParams
from mstpn_base.errors import ParameterError


def pulse_efficacy(p: DeviceParams, v, width):
    """Signed efficacy s of a pulse of amplitude ``v`` [V] and width ``width`` [s] (s=0: no pulse)::

        s = sign(V) * (exp(|V|/v0) - 1) / (exp(v_ref/v0) - 1) * (width / t_ref) ** beta_t
    """
    v = np.asarray(v, dtype=float)
    width = np.asarray(width, dtype=float)
    if np.any(~np.isfinite(v)) or np.any(~np.isfinite(width)):
        raise ParameterError("pulse amplitude and width must be finite")
    if np.any(width < 0):
        raise ParameterError("pulse width must be >= 0 s")
    mag = np.expm1(np.abs(v) / p.v0) / math.expm1(p.v_ref / p.v0)
    return np.sign(v) * mag * (width / p.t_ref) ** p.beta_t


@dataclass
class DeviceBatch:
    """``n`` devices under fixed biases, with their device-to-device draws applied.

    Per-device arrays (shape (n,)): ``v_bias`` [V], ``tau`` [s] (relaxation time constant at that
    bias), ``a_st`` and ``eta_lt`` (dimensionless efficacies).
    """

    params: DeviceParams
    v_bias: np.ndarray
    tau: np.ndarray
    a_st: np.ndarray
    eta_lt: np.ndarray

    @property
    def n(self) -> int:
        return len(self.v_bias)


def make_devices(p: DeviceParams, v_bias, seed: int | None = 0, variability: bool = True) -> DeviceBatch:
    """Devices at biases ``v_bias`` [V] (one per device). With ``variability``, tau0, a_st and
    eta_lt get independent lognormal factors exp(d2d_sigma * N(0,1) - d2d_sigma^2/2) (mean 1),
    drawn from ``seed``."""
    v_bias = np.atleast_1d(np.asarray(v_bias, dtype=float))
    tau = p.tau(v_bias)
    n = len(v_bias)
    if variability and p.d2d_sigma > 0:
        rng = np.random.default_rng(seed)
        s = p.d2d_sigma
        fac = np.exp(s * rng.standard_normal((3, n)) - 0.5 * s * s)
    else:
        fac = np.ones((3, n))
    return DeviceBatch(p, v_bias, tau * fac[0], np.minimum(p.a_st * fac[1], 1.0),
                       np.minimum(p.eta_lt * fac[2], 1.0))


@dataclass
class Drive:
    """Pulses on a time grid: arrays of shape (n_steps, n_devices).

    ``v`` [V] and ``width`` [s] are the pulse as applied (0 = no pulse), ``s`` its efficacy,
    ``lt`` whether it also programs the long-term conductance, ``noise`` the cycle-to-cycle factor.
    """

    dt: float
    v: np.ndarray
    width: np.ndarray
    s: np.ndarray
    lt: np.ndarray
    noise: np.ndarray

    @property
    def n_steps(self) -> int:
        return self.v.shape[0]

    @property
    def times(self) -> np.ndarray:
        return np.arange(self.n_steps) * self.dt


def make_drive(p: DeviceParams, n_steps: int, n_devices: int, dt: float, pulses, seed: int | None = 0,
               noise: bool = True) -> Drive:
    """Build a :class:`Drive` from ``pulses``: iterable of (step, device, V, width).

    One pulse per device per step at most.  The cycle-to-cycle factors
    max(0, 1 + c2c_sigma N(0,1)) are drawn here, once, from ``seed`` so that every backend sees the
    same noise.
    """
    if not (math.isfinite(dt) and dt > 0):
        raise ParameterError(f"dt must be a positive number of seconds, got {dt!r}")
    v = np.zeros((n_steps, n_devices))
    width = np.zeros((n_steps, n_devices))
    for step, dev, amp, w in pulses:
        if not (0 <= step < n_steps and 0 <= dev < n_devices):
            raise ParameterError(f"pulse at step {step} on device {dev} is outside {n_steps} steps x {n_devices} devices")
        if v[step, dev] != 0:
            raise ParameterError(f"two pulses on device {dev} in step {step}")
        v[step, dev], width[step, dev] = amp, w
    s = pulse_efficacy(p, v, width)
    lt = (np.abs(v) >= p.v_lt_threshold) & (s != 0)
    if noise and p.c2c_sigma > 0:
        nf = c2c_factors(p, np.random.default_rng(None if seed is None else seed + 7919), v.shape)
    else:
        nf = np.ones_like(v)
    nf = np.where(s != 0, nf, 1.0)
    return Drive(dt, v, width, s, lt, nf)


def c2c_factors(p: DeviceParams, rng: np.random.Generator, shape) -> np.ndarray:
    """Cycle-to-cycle factors of pulse efficacy, max(0, 1 + c2c_sigma N(0,1)), drawn from ``rng``."""
    return np.maximum(0.0, 1.0 + p.c2c_sigma * rng.standard_normal(shape))


@dataclass
class Trace:
    """Recorded state, arrays of shape (n_steps, n_devices); ``t`` [s] of shape (n_steps,)."""

    t: np.ndarray
    g_lt: np.ndarray
    g_st: np.ndarray
    r: np.ndarray
    q: np.ndarray
    backend: str = "numpy"
    meta: dict = field(default_factory=dict)

    @property
    def g(self) -> np.ndarray:
        """Total conductance G = g_lt + g_st [S]."""
        return self.g_lt + self.g_st


def initial_state(batch: DeviceBatch, g_lt0=None) -> dict:
    """Fresh devices: g_lt = g_lt0 (default g_min), g_st = r = q = 0."""
    p, n = batch.params, batch.n
    g_lt = np.full(n, p.g_min) if g_lt0 is None else np.broadcast_to(np.asarray(g_lt0, float), (n,)).copy()
    if np.any(g_lt < p.g_min) or np.any(g_lt > p.g_max) or np.any(~np.isfinite(g_lt)):
        raise ParameterError(f"initial g_lt must lie in [g_min, g_max] = [{p.g_min}, {p.g_max}] S")
    return dict(g_lt=g_lt, g_st=np.zeros(n), r=np.zeros(n), q=np.zeros(n))


def decay_factors(batch: DeviceBatch, dt: float) -> dict:
    """Exact one-step retention factors exp(-dt/tau) of g_st (per device), r and q."""
    return eq.retention(eq.NUMPY, batch.params, batch.tau, dt)


def apply_pulses(batch: DeviceBatch, state: dict, s, lt, noise) -> dict:
    """Step 2 (:func:`memristor.equations.pulse`) on one step's drive vectors; returns new state."""
    return eq.pulse(eq.NUMPY, batch.params, batch.a_st, batch.eta_lt, state, s, lt, noise)


def simulate(batch: DeviceBatch, drive: Drive, g_lt0=None) -> Trace:
    """Run the model over ``drive`` (NumPy float64 reference)."""
    check_shapes(batch, drive)
    state = initial_state(batch, g_lt0)
    dec = decay_factors(batch, drive.dt)
    rec = {v: np.empty((drive.n_steps, batch.n)) for v in STATE_VARS}
    for k in range(drive.n_steps):
        if k:
            state = eq.relax(state, dec)
        if np.any(drive.s[k]):
            state = apply_pulses(batch, state, drive.s[k], drive.lt[k], drive.noise[k])
        for v in STATE_VARS:
            rec[v][k] = state[v]
    return Trace(drive.times, **rec, backend="numpy")


def check_shapes(batch: DeviceBatch, drive: Drive) -> None:
    for name in ("v", "width", "s", "lt", "noise"):
        a = getattr(drive, name)
        if a.ndim != 2 or a.shape[1] != batch.n:
            raise ParameterError(f"drive.{name} has shape {a.shape}, expected (n_steps, {batch.n})")
        if not np.all(np.isfinite(a)):
            raise ParameterError(f"drive.{name} contains NaN or inf")


def energy(batch: DeviceBatch, drive: Drive, trace: Trace, g_lt0=None) -> dict:
    """Energy [J] per device of a recorded run, exact for the piecewise-exponential trajectory.

    * bias (idle) energy over each step (k-1 -> k), with G relaxing exactly in between::

          E_bias = V_b^2 * (g_lt dt + g_st tau (1 - exp(-dt/tau)) + g_leak dt)

      where g_leak = p_leak_ref / v_bias_max^2 (ohmic leakage floor; 4.3 nW at 0.6 V, G = 0);
    * pulse energy, with G just before the pulse: E_pulse = V_p^2 (g_lt + g_st) t_p.

    Returns ``{"bias": (n,), "pulse": (n,), "total": (n,), "duration_s": float}``.
    """
    p, dt = batch.params, drive.dt
    lam = np.exp(-dt / batch.tau)
    g_lt_prev, g_st_prev = trace.g_lt[:-1], trace.g_st[:-1]
    e_bias = eq.bias_energy(p, batch.v_bias, g_lt_prev, g_st_prev, batch.tau, dt, lam)
    # conductance right before each pulse: the previous step's state relaxed over dt (step 0: the
    # initial state, ``g_lt0`` as given to simulate)
    init = initial_state(batch, g_lt0)
    g_before = np.vstack([(init["g_lt"] + init["g_st"])[None], g_lt_prev + g_st_prev * lam])
    e_pulse = eq.pulse_energy(drive.v, g_before, drive.width)
    bias = e_bias.sum(axis=0)
    pulse = e_pulse.sum(axis=0)
    return dict(bias=bias, pulse=pulse, total=bias + pulse, duration_s=dt * (drive.n_steps - 1))
