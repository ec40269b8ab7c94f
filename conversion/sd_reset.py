"""The reset state of a network whose fixed-point SigmaDelta layers follow Lava's rule ("lava").

A Lava SigmaDelta process computes at every time step, so after a reset (a fresh Lava graph) each
layer already runs before the first frame reaches it.  With one step of synaptic delay per layer
(lava Conv/Dense), the layer at depth d (:func:`conversion.backend.layer_depths`, input layer 1)
receives the first frame at sub-step d - 1 and runs the *pre-phase* sub-steps j = 0 .. d - 2
before it: at sub-step j its input is the synapse of the upstream layer's payloads of sub-step
j - 1 (none at j = 0), so at j = 0 it fires where act(bias) >= vth (relu(bias) for relu layers),
and its receivers integrate what it sent.  None of this depends on the frame, so it is one
constant state, :func:`conversion.simulator.prephase_state` (computed by
:func:`run_prephase`), that the reference simulator takes as its reset state and
that a backend can load into its processes.

Which nodes: every "lava" SigmaDelta layer runs its pre-phase; a layer of another rule (the
plastic layer with its tanh node, the heads) only integrates the events it receives in the
pre-phase (its synapse state: Conv2d/Affine u, the plastic layer's z and W z), it does not fire.
After the pre-phase the layers are idle until their input arrives (an unchanged act with
|residue| < vth sends nothing), so the pre-phase state is also what a Lava graph holds at the
sub-step a layer's first frame arrives.  The float network and "round" networks have no
pre-phase (``prephase_state`` returns {}).  Counters (events, synops) exclude it.
"""
from __future__ import annotations

import numpy as np

from conversion import fixed_point as fx
from conversion import graph as g
from conversion.backend import layer_depths, layers_of


def lava_nodes(net: g.Network) -> list:
    """The SigmaDelta nodes of ``net`` with the "lava" rule in its fixed-point block."""
    if not net.fixed:
        return []
    return [n for n in net.order if isinstance(net.nodes[n], g.SigmaDelta)
            and fx.sd_rule(net.fixed.get(n, {})) == "lava"]


def run_prephase(sim) -> dict:
    """{node: {state key: array of batch 1}}: the states that differ from the zero/bias reset
    after the pre-phase sub-steps (module docstring), computed on ``sim``, a fixed-point
    :class:`conversion.simulator.Simulator` of batch 1 in its zero/bias reset state (not laid over
    with a pre-phase).  The simulator's own node kernels do the arithmetic; this module only
    orders the sub-steps, so it imports nothing of the simulator
    (:func:`conversion.simulator.prephase_state` is the entry point)."""
    net = sim.net
    lava = set(lava_nodes(net))
    if not lava:
        return {}
    fresh = {n: {k: v.copy() for k, v in st.items()} for n, st in sim.state.items()}
    layers = layers_of(net)
    depth = layer_depths(layers)
    sent_before: dict = {}                   # layer -> its payloads of the previous sub-step
    for j in range(max(depth.values()) - 1):
        sent_now = {}
        for name, nodes, src in layers:
            if j > depth[name] - 2:          # its frame has arrived: not the pre-phase
                continue
            ev = sent_before.get(src)
            if name in lava:
                if ev is None:
                    ev = np.zeros_like(sim.state[src]["sent"]) if src in sim.state and "sent" in sim.state[src] \
                        else np.zeros((1, *net.nodes[src].out_shape), np.int64)
                value = sim.state[src]["sent"] if "sent" in sim.state.get(src, {}) else ev
                sim.step_nodes(nodes, {src: (value, ev)})
                sent_now[name] = sim.deltas[name].copy()
            elif ev is not None and np.any(ev):
                _integrate(sim, nodes[:-1], src, ev)
        sent_before = sent_now
    out = {}
    for n, st in sim.state.items():
        diff = {k: v.copy() for k, v in st.items() if k in fresh[n] and not np.array_equal(v, fresh[n][k])}
        if diff:
            out[n] = diff
    return out


def _integrate(sim, nodes, src, events) -> None:
    """Feed ``events`` of ``src`` to the synapse nodes of a layer that does not fire in the
    pre-phase (its state integrates them; its neuron does not run)."""
    sim.values = {src: sim.state[src]["sent"]}
    sim.deltas = {src: events}
    for n in nodes:
        getattr(sim, "_" + type(sim.net.nodes[n]).__name__)(n)
