"""What NIR's neuron primitives mean in discrete time, written once.

NIR (nir 1.0) defines its neurons in continuous time; a simulator steps them with a time step
``dt``.  These plain functions of an ops object (:mod:`mstpn_base.ops`) are that discretisation:
the NumPy executor (:mod:`conversion.nir_graph`) evaluates them on arrays and the Brian2 backend
(:mod:`brian_models.nir_brian2`) generates its code from them with
:class:`brian_models.codegen.Brian2Ops`.  Each function is elementwise.

Conventions (docs/nir.md):

* Inputs are held constant over a step (zero-order hold); a spike is the value 1 for one step.
* ``integration="exact"``: the exact solution of ``tau dx/dt = (x_leak - x) + u`` for u constant over
  the step, ``x <- x_leak + (x - x_leak) a + u (1 - a)`` with ``a = exp(-dt / tau)`` (exponential
  Euler).  ``integration="euler"``: forward Euler, ``a = 1 - dt / tau``, gain ``dt / tau``.
  The integrators (I, IF: ``dv/dt = r I``) are ``v <- v + dt r I`` in both (exact for held input).
* CubaLIF / CubaLI: the synaptic current is stepped first and the membrane integrates the updated
  current.
* Spiking: after the membrane update ``z = v > v_threshold``; ``reset="zero"`` (NIR's definition)
  sets ``v <- v_reset`` where z, ``reset="subtract"`` sets ``v <- v - (v_threshold - v_reset)``.
  The recorded voltage is the one after the reset.
"""
from __future__ import annotations

INTEGRATIONS = ("exact", "euler")
RESETS = ("zero", "subtract")


def decay(ops, dt, tau, integration: str):
    """(a, g): per-step decay and input gain of ``tau dx/dt = -x + u`` (``x <- a x + g u``)."""
    if integration == "exact":
        a = ops.exp(-dt / tau)
        return a, 1.0 - a
    return 1.0 - dt / tau, dt / tau


def leaky(x, a, g, x_leak, u):
    """One step of ``tau dx/dt = (x_leak - x) + u`` given (a, g) from :func:`decay`."""
    return x_leak + (x - x_leak) * a + u * g


def integrate(v, dt, r, current):
    """One step of ``dv/dt = r I`` (I held over the step)."""
    return v + dt * (r * current)


def fire(v, v_threshold):
    """z = v > v_threshold (NIR's strict inequality)."""
    return v > v_threshold


def reset(ops, v, z, v_threshold, v_reset, mode: str):
    """The voltage after a spike z: ``zero`` -> v_reset, ``subtract`` -> v - (v_threshold - v_reset)."""
    if mode == "subtract":
        return ops.where(z, v - (v_threshold - v_reset), v)
    return ops.where(z, v_reset, v)


# -- the primitives, one step each ----------------------------------------------------------------
# ``p`` holds a node's parameters and its precomputed factors (a, g, a_syn, g_syn, a_mem, g_mem from
# :func:`decay`); the returned dict is the new state and ``out`` (what the node sends).

def lif_step(ops, state, current, p, mode):
    """LIF: tau dv/dt = (v_leak - v) + r I; spike and reset."""
    v = ops.let("v_new", leaky(state["v"], p["a"], p["g"], p["v_leak"], p["r"] * current))
    z = ops.let("z", fire(v, p["v_threshold"]))
    return {"v": reset(ops, v, z, p["v_threshold"], p["v_reset"], mode), "out": z}


def cubalif_step(ops, state, current, p, mode):
    """CubaLIF: tau_syn dI/dt = -I + w_in S, tau_mem dv/dt = (v_leak - v) + r I; spike and reset."""
    i = ops.let("i_new", leaky(state["i"], p["a_syn"], p["g_syn"], 0.0, p["w_in"] * current))
    v = ops.let("v_new", leaky(state["v"], p["a_mem"], p["g_mem"], p["v_leak"], p["r"] * i))
    z = ops.let("z", fire(v, p["v_threshold"]))
    return {"i": i, "v": reset(ops, v, z, p["v_threshold"], p["v_reset"], mode), "out": z}


def if_step(ops, state, current, p, mode):
    """IF: dv/dt = r I; spike and reset."""
    v = ops.let("v_new", integrate(state["v"], p["dt"], p["r"], current))
    z = ops.let("z", fire(v, p["v_threshold"]))
    return {"v": reset(ops, v, z, p["v_threshold"], p["v_reset"], mode), "out": z}


def li_step(ops, state, current, p, mode):
    """LI: tau dv/dt = (v_leak - v) + r I; sends v."""
    v = ops.let("v_new", leaky(state["v"], p["a"], p["g"], p["v_leak"], p["r"] * current))
    return {"v": v, "out": v}


def cubali_step(ops, state, current, p, mode):
    """CubaLI: tau_syn dI/dt = -I + w_in S, tau_mem dv/dt = (v_leak - v) + r I; sends v."""
    i = ops.let("i_new", leaky(state["i"], p["a_syn"], p["g_syn"], 0.0, p["w_in"] * current))
    v = ops.let("v_new", leaky(state["v"], p["a_mem"], p["g_mem"], p["v_leak"], p["r"] * i))
    return {"i": i, "v": v, "out": v}


def i_step(ops, state, current, p, mode):
    """I (integrator): dv/dt = r I; sends v."""
    v = ops.let("v_new", integrate(state["v"], p["dt"], p["r"], current))
    return {"v": v, "out": v}


def threshold_step(ops, state, current, p, mode):
    """Threshold: z = x > threshold (Heaviside), no state."""
    return {"out": fire(current, p["threshold"])}


#: NIR type name -> (step function, state variables, which time constants it discretises)
NEURONS = {
    "LIF": (lif_step, ("v",), {"a": "tau"}),
    "CubaLIF": (cubalif_step, ("i", "v"), {"a_syn": "tau_syn", "a_mem": "tau_mem"}),
    "IF": (if_step, ("v",), {}),
    "LI": (li_step, ("v",), {"a": "tau"}),
    "CubaLI": (cubali_step, ("i", "v"), {"a_syn": "tau_syn", "a_mem": "tau_mem"}),
    "I": (i_step, ("v",), {}),
    "Threshold": (threshold_step, (), {}),
}
#: the neuron kinds whose output is a spike (0/1)
SPIKING = ("LIF", "CubaLIF", "IF", "Threshold")


def neuron_factors(ops, kind: str, params: dict, dt: float, integration: str) -> dict:
    """A neuron node's parameters plus its per-step factors (a, g per time constant) and dt."""
    p = dict(params, dt=dt)
    for a_name, tau_name in NEURONS[kind][2].items():
        a, g = decay(ops, dt, params[tau_name], integration)
        p[a_name], p["g" + a_name[1:]] = a, g
    return p
