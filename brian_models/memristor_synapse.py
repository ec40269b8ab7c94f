"""The SrTiO3 memristor of :mod:`memristor.reference` as a Brian2 ``Synapses`` model.

One synapse per device.  Its state is ``g_lt`` [S], ``g_st`` [S], ``r``, ``q``; between events the
volatile parts relax *exactly* (event-driven linear equations, which Brian2 solves in closed form
at each presynaptic event: x <- x * exp(-(t - lastupdate) / tau_x))::

    dg_st/dt = -g_st / tau        (tau per device: tau0 * d2d * exp(-V_bias / v_tau))
    dr/dt    = -r / tau_ppf
    dq/dt    = -q / tau_meta

Each presynaptic event is one pulse; ``on_pre`` applies step 2 of the reference in its order
(facilitation f = 1 + ppf_gain r, depletion mu = 1 - q, k = clip(a_st |s| f mu n, 0, 1), soft-bounded
g_st update, long-term programming with quantisation floor(x + 0.5) on n_levels, r += 1,
q += c (1 - q)).  The relaxed state at any time t is read through the subexpressions ``g_st_now``,
``r_now``, ``q_now`` and ``g_now = g_lt + g_st_now`` (the conductance a synapse multiplies with).

:func:`synapse_equations` returns these equations as data (strings + a namespace of constants
with units), so that a larger Brian2 network can build the same plastic synapse; :func:`simulate`
runs them on a :class:`memristor.reference.Drive` and returns a :class:`memristor.reference.Trace`.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from memristor.params import DeviceParams
from memristor.reference import STATE_VARS, DeviceBatch, Drive, Trace, check_shapes, initial_state
from mstpn_base.errors import BackendUnavailableError, MstpnError

#: Brian2 code-generation targets this module supports -> backend name in the Trace.
TARGETS = {"numpy": "brian2", "cython": "brian2-cython"}

#: Default pulse payload: 2-D TimedArrays indexed by (time, presynaptic device index).
DEFAULT_PAYLOAD = dict(s="mem_s_drive(t, i)", lt="mem_lt_drive(t, i)", noise="mem_noise_drive(t, i)")


@dataclass(frozen=True)
class SynapseEquations:
    """A memristive synapse as Brian2 data.

    ``model`` and ``on_pre`` go to ``Synapses(..., model=, on_pre=, namespace=)``; ``namespace``
    holds the device constants (Brian2 quantities, names prefixed ``mem_`` so they do not collide
    with neuron variables); ``per_synapse`` names the per-device parameters to set after creation
    (``tau`` [s], ``a_st``, ``eta_lt``, initial ``g_lt`` [S]).
    """

    model: str
    on_pre: str
    namespace: dict = field(default_factory=dict)
    per_synapse: tuple = ("tau", "a_st", "eta_lt", "g_lt")


def _require_brian2():
    try:
        import brian2
    except ImportError as exc:
        raise BackendUnavailableError(f"the brian2 backend needs brian2 ({exc}); pip install brian2") from None
    return brian2


def synapse_equations(params: DeviceParams, s: str = DEFAULT_PAYLOAD["s"],
                      lt: str = DEFAULT_PAYLOAD["lt"], noise: str = DEFAULT_PAYLOAD["noise"]) -> SynapseEquations:
    """Brian2 equation strings of the device for ``params``.

    The pulse payload of each presynaptic event is given as Brian2 expressions evaluated in
    ``on_pre``: ``s`` (signed efficacy, dimensionless, 0 = no pulse: nothing changes), ``lt``
    (1 if the pulse also programs g_lt, else 0) and ``noise`` (cycle-to-cycle factor).  By default
    they are TimedArray lookups ``mem_*_drive(t, i)`` (supply them in the namespace, see
    :func:`simulate`); in a converted network pass e.g. ``s="s_pre"`` for a presynaptic variable
    carrying a graded spike, or the name of a synaptic parameter, and ``noise="1"`` for none.
    """
    b2 = _require_brian2()
    ns = dict(
        mem_g_min=params.g_min * b2.siemens, mem_g_max=params.g_max * b2.siemens,
        mem_g_st_max=params.g_st_max * b2.siemens, mem_ppf_gain=params.ppf_gain,
        mem_meta_depletion=params.meta_depletion, mem_tau_ppf=params.tau_ppf * b2.second,
        mem_tau_meta=params.tau_meta * b2.second,
    )
    model = "\n".join([
        "dg_st/dt = -g_st / tau : siemens (event-driven)",
        "dr/dt = -r / mem_tau_ppf : 1 (event-driven)",
        "dq/dt = -q / mem_tau_meta : 1 (event-driven)",
        "g_lt : siemens",
        "tau : second (constant)",
        "a_st : 1 (constant)",
        "eta_lt : 1 (constant)",
        "g_st_now = g_st * exp(-(t - lastupdate) / tau) : siemens",
        "r_now = r * exp(-(t - lastupdate) / mem_tau_ppf) : 1",
        "q_now = q * exp(-(t - lastupdate) / mem_tau_meta) : 1",
        "g_now = g_lt + g_st_now : siemens",
    ])
    # Selections are written as sums of 0/1 masks times candidates: exactly one term is non-zero,
    # so the chosen value is bit-identical to the candidate (x*1 + 0 == x), as np.where gives.
    if params.n_levels:
        ns["mem_lt_step"] = (params.g_max - params.g_min) / (params.n_levels - 1) * b2.siemens
        quant = "mem_g_min + floor((g_lt_new - mem_g_min) / mem_lt_step + 0.5) * mem_lt_step"
    else:
        quant = "g_lt_new"
    on_pre = "\n".join([
        f"s_ev = {s}",
        f"lt_ev = int(({lt}) != 0) * int(s_ev != 0)",
        f"n_ev = {noise}",
        "pos = int(s_ev > 0)",
        "neg = int(s_ev < 0)",
        "pulsed = pos + neg",
        "k = clip(a_st * abs(s_ev) * (1 + mem_ppf_gain * r) * (1 - q) * n_ev, 0, 1)",
        "g_st = pos * (g_st + k * (mem_g_st_max - g_st)) + neg * (g_st - k * g_st) + (1 - pulsed) * g_st",
        "k_lt = clip(eta_lt * abs(s_ev) * n_ev, 0, 1)",
        "g_lt_new = pos * (g_lt + k_lt * (mem_g_max - g_lt)) + (1 - pos) * (g_lt - k_lt * (g_lt - mem_g_min))",
        f"g_lt = lt_ev * ({quant}) + (1 - lt_ev) * g_lt",
        "r = pulsed * (r + 1) + (1 - pulsed) * r",
        "q = pulsed * (q + mem_meta_depletion * (1 - q)) + (1 - pulsed) * q",
    ])
    return SynapseEquations(model, on_pre, ns)


def simulate(batch: DeviceBatch, drive: Drive, g_lt0=None, target: str = "numpy") -> Trace:
    """Run the devices of ``batch`` under ``drive`` in Brian2 (code-generation ``target``:
    "numpy" or "cython"); returns the state at each t_k = k dt after that step's pulses.

    Device i is presynaptic neuron i of a SpikeGeneratorGroup that fires at the steps where
    drive.s[:, i] != 0; the payload is read from TimedArrays at (t, i).  The monitor records in the
    ``end`` slot of every step, i.e. after the ``synapses`` slot where the pulses are applied.
    """
    if target not in TARGETS:
        raise MstpnError(f"unknown Brian2 code-generation target {target!r}; choose one of {', '.join(TARGETS)}")
    b2 = _require_brian2()
    check_shapes(batch, drive)
    init = initial_state(batch, g_lt0)
    n, n_steps, dt = batch.n, drive.n_steps, drive.dt * b2.second

    steps, devs = np.nonzero(drive.s)                      # sorted by step, then device
    eqs = synapse_equations(batch.params)
    ns = dict(eqs.namespace,
              mem_s_drive=b2.TimedArray(drive.s.astype(float), dt=dt),
              mem_lt_drive=b2.TimedArray(drive.lt.astype(float), dt=dt),
              mem_noise_drive=b2.TimedArray(drive.noise.astype(float), dt=dt))

    old_target = b2.prefs.codegen.target
    b2.prefs.codegen.target = target
    try:
        clock = b2.Clock(dt=dt)
        pre = b2.SpikeGeneratorGroup(n, devs, steps * dt, clock=clock)
        post = b2.NeuronGroup(n, "", clock=clock)
        syn = b2.Synapses(pre, post, model=eqs.model, on_pre=eqs.on_pre, namespace=ns, clock=clock)
        syn.connect(j="i")
        syn.tau = batch.tau * b2.second
        syn.a_st = batch.a_st
        syn.eta_lt = batch.eta_lt
        syn.g_lt = init["g_lt"] * b2.siemens
        mon = b2.StateMonitor(syn, ["g_lt", "g_st_now", "r_now", "q_now"], record=True,
                              when="end", clock=clock)
        net = b2.Network(pre, post, syn, mon)
        net.run(n_steps * dt, namespace={})
    finally:
        b2.prefs.codegen.target = old_target

    order = np.argsort(np.asarray(syn.i[:]))               # synapse -> device index
    got = dict(g_lt=np.asarray(mon.g_lt_), g_st=np.asarray(mon.g_st_now_),
               r=np.asarray(mon.r_now_), q=np.asarray(mon.q_now_))
    if got["g_lt"].shape[1] != n_steps:
        raise MstpnError(f"Brian2 recorded {got['g_lt'].shape[1]} steps, expected {n_steps}")
    rec = {v: got[v][order].T.copy() for v in STATE_VARS}
    return Trace(drive.times, **rec, backend=TARGETS[target], meta=dict(target=target))
