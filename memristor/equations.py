"""The device equations of the SrTiO3 compact model, written once.

Every implementation evaluates these functions: the NumPy reference and the Lava floating_pt
model on NumPy arrays, the PyTorch twin on tensors, and Brian2 on symbols, which turns them into
its ``on_pre`` code (:mod:`brian_models.memristor_synapse`).  A change here reaches all of them.
The operations they need are those of an ops object (:mod:`mstpn_base.ops`).

State per device: ``g_lt`` [S] (non-volatile), ``g_st`` [S] (volatile), ``r`` (paired-pulse
facilitation trace), ``q`` (metaplastic depletion).  Per step, in this order:

1. relaxation (:data:`TIME_CONSTANTS`): dx/dt = -x / tau_x, exact over dt: x <- x exp(-dt / tau_x);
2. a pulse of signed efficacy s (:func:`pulse`)::

       f    = 1 + ppf_gain r                     facilitation (:func:`facilitation`)
       mu   = 1 - q                              history (:func:`availability`)
       k    = clip(a_st |s| f mu n, 0, 1)        n: cycle-to-cycle factor
       g_st <- g_st + k (g_st_max - g_st)  if s > 0;   g_st - k g_st  if s < 0     (soft bounds)
       if the pulse programs g_lt:  k_lt = clip(eta_lt |s| n, 0, 1)
           g_lt <- g_lt + k_lt (g_max - g_lt)  if s > 0;   g_lt - k_lt (g_lt - g_min)  if s < 0
           g_lt <- quantise_lt(g_lt)             n_levels evenly spaced, round half up
       r <- r + 1;   q <- q + meta_depletion (1 - q)

The conductance a synapse multiplies with is G = g_lt + g_st.
"""
from __future__ import annotations

import math

from mstpn_base.ops import NUMPY  # noqa: F401  (the reference ops, re-exported)

STATE_VARS = ("g_lt", "g_st", "r", "q")
#: units of the state variables (as in DeviceParams metadata)
STATE_UNITS = {"g_lt": "S", "g_st": "S", "r": "1", "q": "1"}

#: volatile variables and their relaxation time constant: "tau" is the time constant of each device,
#: tau0 * d2d * exp(-V_bias / v_tau) (:meth:`memristor.params.DeviceParams.tau`), any other name
#: a DeviceParams field [s].  g_lt does not relax (its slow retention drift is :func:`lt_drift`).
TIME_CONSTANTS = {"g_st": "tau", "r": "tau_ppf", "q": "tau_meta"}




def retention(ops, p, tau, dt) -> dict:
    """Retention factors exp(-dt / tau_x) of the volatile variables over ``dt`` [s] (a number, or
    an array of per-device intervals); ``tau`` is the per-device g_st time constant [s] (array or
    tensor), the others are DeviceParams fields."""
    def exp(x):
        return math.exp(x) if isinstance(x, (int, float)) else ops.exp(x)

    return {v: exp(-dt / (tau if name == "tau" else getattr(p, name))) for v, name in TIME_CONSTANTS.items()}


def relax(state: dict, factors: dict) -> dict:
    """Relaxation over one step: every volatile variable times its retention factor."""
    return {v: state[v] * factors[v] if v in factors else state[v] for v in STATE_VARS}


def facilitation(p, r):
    """Paired-pulse facilitation: f = 1 + ppf_gain r (a pulse soon after another acts more)."""
    return 1.0 + p.ppf_gain * r


def availability(p, q):
    """History dependence: mu = 1 - q (recent pulses deplete the efficacy)."""
    return 1.0 - q


def lt_drift(ops, p, g_lt, t, tau):
    """Retention drift of the long-term conductance over ``t`` [s] of physical time: a slow
    exponential decay towards g_min, g_lt(t) = g_min + (g_lt - g_min) exp(-t / tau), with the
    drift time constant ``tau`` [s] (inf or t = 0: no drift).  Analog: not snapped to the levels."""
    if t == 0 or tau == math.inf:
        return g_lt
    return p.g_min + (g_lt - p.g_min) * math.exp(-t / tau)


def quantise_lt(ops, p, g_lt):
    """g_lt snapped to ``n_levels`` evenly spaced levels in [g_min, g_max], round half up
    (n_levels = 0: continuous)."""
    if p.n_levels == 0:
        return g_lt
    step = (p.g_max - p.g_min) / (p.n_levels - 1)
    return ops.straight_through(g_lt, p.g_min + ops.floor((g_lt - p.g_min) / step + 0.5) * step)


def pulse(ops, p, a_st, eta_lt, state: dict, s, lt, noise) -> dict:
    """Step 2 (see module docstring): the new state after pulses of signed efficacy ``s`` (0: no
    pulse, nothing changes), ``lt`` (the pulse also programs g_lt) and cycle-to-cycle factor
    ``noise``; ``a_st``, ``eta_lt`` are the per-device efficacies."""
    g_lt, g_st, r, q = state["g_lt"], state["g_st"], state["r"], state["q"]
    pos, neg, pulsed = s > 0, s < 0, s != 0
    mag = ops.let("mag", ops.abs(s))
    k = ops.let("k", ops.clip(a_st * mag * facilitation(p, r) * availability(p, q) * noise, 0.0, 1.0))
    g_st_new = ops.where(pos, g_st + k * (p.g_st_max - g_st), ops.where(neg, g_st - k * g_st, g_st))
    if lt is False:     # sub-threshold pulses only (a plain False, not an array): g_lt unchanged
        g_lt_new = g_lt
    else:
        k_lt = ops.let("k_lt", ops.clip(eta_lt * mag * noise, 0.0, 1.0))
        programmed = ops.where(pos, g_lt + k_lt * (p.g_max - g_lt), g_lt - k_lt * (g_lt - p.g_min))
        g_lt_new = ops.where(lt & pulsed, quantise_lt(ops, p, programmed), g_lt)
    r_new = ops.where(pulsed, r + 1.0, r)
    q_new = ops.where(pulsed, q + p.meta_depletion * (1.0 - q), q)
    return dict(g_lt=g_lt_new, g_st=g_st_new, r=r_new, q=q_new)


def soft_bound_fraction(ops, p, g_st, dg):
    """Inverse of the soft-bounded volatile update of :func:`pulse`: the fraction k in [0, 1] of a
    pulse that changes ``g_st`` by ``dg`` [S] (dg > 0: k = dg / (g_st_max - g_st), potentiation;
    dg < 0: k = -dg / g_st, depression; dg = 0: k = 0).  Closed form, exact: a pulse of that k
    moves g_st by exactly dg; a change beyond the bound gives k = 1 (saturation)."""
    room = ops.where(dg > 0, p.g_st_max - g_st, g_st)
    safe = ops.where(room > 0, room, 1.0)
    return ops.clip(ops.where(room > 0, ops.abs(dg) / safe, ops.where(dg != 0, 1.0, 0.0)), 0.0, 1.0)


def width_for_efficacy(p, mag, s_at_ref):
    """Inverse of the width dependence s ~ (t_p / t_ref)^beta_t: the width [s] of a pulse of
    efficacy magnitude ``mag`` whose amplitude gives efficacy ``s_at_ref`` at width t_ref
    (beta_t > 0)."""
    return p.t_ref * (mag / s_at_ref) ** (1.0 / p.beta_t)


def pulse_energy(v, g, width):
    """Energy [J] of a pulse of amplitude ``v`` [V] and ``width`` [s] on a device of conductance
    ``g`` [S] (G = g_lt + g_st just before the pulse): E = V^2 G t_p."""
    return v * v * g * width


def bias_energy(p, v_bias, g_lt, g_st, tau, dt: float, retention):
    """Bias (idle) energy [J] of a device over one step ``dt`` [s] that starts at g_lt, g_st and
    relaxes exactly with time constant ``tau`` (``retention`` = exp(-dt / tau)):
    E = V_b^2 (g_lt dt + g_st tau (1 - exp(-dt/tau)) + g_leak dt)."""
    return v_bias * v_bias * (g_lt * dt + g_st * tau * (1.0 - retention) + p.g_leak * dt)
