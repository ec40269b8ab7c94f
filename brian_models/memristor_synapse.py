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

import dataclasses
from dataclasses import dataclass, field

import numpy as np

from brian_models import require_brian2
from brian_models.codegen import Brian2Ops, Sym, code_of
from memristor import equations as eq
from memristor.params import DeviceParams
from memristor.reference import STATE_VARS, DeviceBatch, Drive, Trace, check_shapes, initial_state
from mstpn_base.errors import MstpnError

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


#: DeviceParams units -> Brian2 unit names (dimensionless: no unit)
_UNITS = {"S": "siemens", "s": "second", "V": "volt", "W": "watt", "1": None}


class _ParamSymbols:
    """DeviceParams as Brian2 constants ``mem_<name>`` (recorded, for the namespace); integer
    parameters (n_levels) stay numbers: they shape the code, as they shape the NumPy branches."""

    def __init__(self, params: DeviceParams):
        self._params, self.used = params, set()

    def __getattr__(self, name):
        value = getattr(self._params, name)
        if isinstance(value, int):
            return value
        self.used.add(name)
        return Sym(f"mem_{name}")

    def namespace(self, b2) -> dict:
        units = {f.name: f.metadata.get("unit") for f in dataclasses.fields(self._params)}
        ns = {}
        for name in sorted(self.used):
            unit = _UNITS[units[name]]
            ns[f"mem_{name}"] = getattr(self._params, name) * (getattr(b2, unit) if unit else 1)
        return ns


def synapse_equations(params: DeviceParams, s: str = DEFAULT_PAYLOAD["s"],
                      lt: str = DEFAULT_PAYLOAD["lt"], noise: str = DEFAULT_PAYLOAD["noise"]) -> SynapseEquations:
    """Brian2 equation strings of the device for ``params``, generated from
    :mod:`memristor.equations` (relaxation as event-driven linear ODEs, solved exactly by Brian2
    at each event; the pulse rule evaluated on symbols as ``on_pre`` code).

    The pulse payload of each presynaptic event is given as Brian2 expressions evaluated in
    ``on_pre``: ``s`` (signed efficacy, dimensionless, 0 = no pulse: nothing changes), ``lt``
    (1 if the pulse also programs g_lt, else 0) and ``noise`` (cycle-to-cycle factor).  By default
    they are TimedArray lookups ``mem_*_drive(t, i)`` (supply them in the namespace, see
    :func:`simulate`); in a converted network pass e.g. ``s="s_pre"`` for a presynaptic variable
    carrying a graded spike, or the name of a synaptic parameter, and ``noise="1"`` for none.
    """
    b2 = require_brian2()
    p = _ParamSymbols(params)
    unit = {v: _UNITS[u] or "1" for v, u in eq.STATE_UNITS.items()}
    model = []
    for v in eq.STATE_VARS:            # volatile variables relax; the others are plain state
        tau = eq.TIME_CONSTANTS.get(v)
        if tau is None:
            model.append(f"{v} : {unit[v]}")
        else:
            tau = "tau" if tau == "tau" else str(getattr(p, tau))
            model.append(f"d{v}/dt = -{v} / {tau} : {unit[v]} (event-driven)")
    model += ["tau : second (constant)", "a_st : 1 (constant)", "eta_lt : 1 (constant)"]
    for v in eq.STATE_VARS:            # the relaxed value at any time t (read-out)
        tau = eq.TIME_CONSTANTS.get(v)
        if tau is not None:
            tau = "tau" if tau == "tau" else str(getattr(p, tau))
            model.append(f"{v}_now = {v} * exp(-(t - lastupdate) / {tau}) : {unit[v]}")
    model.append("g_now = g_lt + g_st_now : siemens")
    ops = Brian2Ops()
    ops.lines += [f"s_ev = {s}", f"n_ev = {noise}", f"lt_ev = int(({lt}) != 0)"]
    new = eq.pulse(ops, p, Sym("a_st"), Sym("eta_lt"), {v: Sym(v) for v in eq.STATE_VARS},
                   Sym("s_ev"), Sym("lt_ev"), Sym("n_ev"))
    ops.lines += [f"{v}_new = {code_of(x)}" for v, x in new.items()]   # all from the old state ...
    ops.lines += [f"{v} = {v}_new" for v in new]                      # ... then assigned
    return SynapseEquations("\n".join(model), "\n".join(ops.lines), p.namespace(b2))


def simulate(batch: DeviceBatch, drive: Drive, g_lt0=None, target: str = "numpy") -> Trace:
    """Run the devices of ``batch`` under ``drive`` in Brian2 (code-generation ``target``:
    "numpy" or "cython"); returns the state at each t_k = k dt after that step's pulses.

    Device i is presynaptic neuron i of a SpikeGeneratorGroup that fires at the steps where
    drive.s[:, i] != 0; the payload is read from TimedArrays at (t, i).  The monitor records in the
    ``end`` slot of every step, i.e. after the ``synapses`` slot where the pulses are applied.
    """
    if target not in TARGETS:
        raise MstpnError(f"unknown Brian2 code-generation target {target!r}; choose one of {', '.join(TARGETS)}")
    b2 = require_brian2()
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
