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

:func:`pair_equations` does the same for the plastic layer of the converted network on device
pairs (:mod:`conversion.device_layer`): one Brian2 synapse per weight, carrying both devices, and
the whole device step of the layer (relaxation, target, split of the change, exact inversion,
width, cap, pulse, pulse and energy tallies) generated from
:func:`conversion.device_layer.plasticity` (used by :mod:`brian_models.network`).
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import numpy as np

from brian_models import require_brian2
from brian_models.codegen import Brian2Ops, Constants, Sym, code_of, common_subexpressions
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


# -- the plastic layer's synapses as device pairs (conversion.device_layer) -------------------------
#: device_stats counters accumulated per synapse by the generated code -> Brian2 variable
PAIR_COUNTERS = {"potentiating": "n_pot", "depressing": "n_dep", "pulse_energy_J": "e_pulse",
                 "bias_energy_J": "e_bias"}


@dataclass(frozen=True)
class PairEquations:
    """The plastic layer's synapses as differential device pairs, Brian2 data generated from
    :func:`conversion.device_layer.plasticity` (:func:`pair_equations`).

    ``model``: per-synapse variables -- the volatile state of both devices (``g_st_p``, ``r_p``,
    ``q_p``, ``g_st_m``, ...), their frozen draws (``constants``), the cycle-to-cycle factors
    ``noise`` the host writes before each step, the accumulators of :data:`PAIR_COUNTERS` and the
    read-back ``F = (g_st_p - g_st_m) / g_unit`` (a subexpression) that the forward pass uses.
    ``code``: one plasticity step (relaxation, target, split, inversion, width, cap, pulse,
    tallies), for a pathway run once per agent step.  ``namespace``: the scalar constants
    (mapping ``map_*``, device parameters ``dev_*``, scalar retention factors).  ``constants``:
    per-synapse constant name -> (H, K) array of :class:`conversion.device_layer.Devices`.
    ``state``: the names of the volatile state variables; ``noise``: side -> the variable of its
    cycle-to-cycle factor (empty without noise); ``counters``: DEVICE_COUNTERS key -> accumulator.
    All values are SI numbers (S, s, V, J), dimensionless in Brian2.
    """

    model: str
    code: str
    namespace: dict
    constants: dict
    state: tuple
    noise: dict
    counters: dict = field(default_factory=lambda: dict(PAIR_COUNTERS))


def pair_state_name(var: str, side: str) -> str:
    """Brian2 name of device state ``var`` (g_st, r, q) of ``side`` (p, m)."""
    return f"{var}_{side}"


def pair_equations(devices, norm: str = "rownorm_post", h: str = "y_post", z: str = "sent_pre",
                   gamma: str = "gamma") -> PairEquations:
    """Brian2 code of the device layer for ``devices`` (:func:`conversion.device_layer.build`):
    :func:`conversion.device_layer.plasticity`, :func:`~conversion.device_layer.pulse_tally` and
    :func:`~conversion.device_layer.bias_energy` evaluated on symbols (:class:`Brian2Ops` with
    bound temporaries), the read-back F from :func:`~conversion.device_layer.read_weight`.

    ``norm``, ``h``, ``z``, ``gamma``: the Brian2 expressions of the row norm N, the post
    activation h, the presynaptic z and gamma, as seen from the synapse.  The retention factors
    are those of ``devices`` (exp(-dt / tau) of each device, computed once, as the NumPy reference
    multiplies with them): the code relaxes the state over the one agent step since the previous
    run of the code.
    """
    from conversion import device_layer as dl

    m = devices.mapping
    ns: dict = {}
    msym = Constants(m, "map_", nested={"params": "dev_"}, namespace=ns)
    consts: dict = {}

    def leaf(name, value):
        if isinstance(value, np.ndarray):
            consts[name] = value
        else:
            ns[name] = float(value)
        return Sym(name)

    dev = {}
    for side, d in devices.arrays().items():
        dev[side] = {k: ({kk: leaf(f"{k}_{kk}_{side}", vv) for kk, vv in v.items()} if isinstance(v, dict)
                         else leaf(f"{k}_{side}", v)) for k, v in d.items()}
    state = {side: {v: Sym(pair_state_name(v, side)) for v in dl.DEVICE_STATE} for side in dl.SIDES}
    noise = None if dl.c2c_noise(m, 0, (1,)) is None else {side: Sym(f"c2c_{side}") for side in dl.SIDES}

    ops = Brian2Ops(bind=True)
    bias = ops.let("e_bias_step", dl.bias_energy(msym, dev, state))      # from the state before the step
    new, _, pulses = dl.plasticity(ops, msym, dev, state, Sym(norm), Sym(h), Sym(z), Sym(gamma), noise)
    tally = dl.pulse_tally(msym, pulses)
    out = {PAIR_COUNTERS[k]: ops.let(f"{PAIR_COUNTERS[k]}_step", tally[k]) for k in ("potentiating", "depressing")}
    out[PAIR_COUNTERS["pulse_energy_J"]] = ops.let("e_pulse_step", tally["energy_J"])
    out[PAIR_COUNTERS["bias_energy_J"]] = bias
    names = [pair_state_name(v, side) for side in dl.SIDES for v in dl.DEVICE_STATE]
    final = {pair_state_name(v, side): ops.let(f"{pair_state_name(v, side)}_new", new[side][v])
             for side in dl.SIDES for v in dl.DEVICE_STATE}      # everything from the old state ...
    lines = common_subexpressions(ops.lines) + [f"{k} += {code_of(v)}" for k, v in out.items()]
    lines += [f"{k} = {code_of(v)}" for k, v in final.items()]   # ... then assigned
    F = dl.read_weight(msym, state["p"]["g_st"], state["m"]["g_st"])
    model = [f"{n} : 1" for n in names] + [f"{n} : 1 (constant)" for n in consts]
    model += [f"{code_of(s)} : 1" for s in (noise or {}).values()]
    model += [f"{v} : 1" for v in PAIR_COUNTERS.values()]
    model.append(f"F = {code_of(F)} : 1")
    return PairEquations("\n".join(model), "\n".join(lines), ns, consts, tuple(names),
                         {} if noise is None else {side: code_of(s) for side, s in noise.items()})
