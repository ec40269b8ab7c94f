"""Backends ``numpy`` and ``numpy-fixed``: the NumPy reference simulator (batch 1) as a runner.

The float64 form is the event-driven oracle of every float backend; the fixed-point form is the
integer specification every fixed-point backend must equal bit for bit (see
:mod:`conversion.backend` for the runner contract).
"""
from __future__ import annotations

import numpy as np

from conversion.backend import StepOut, UnsupportedNetworkError, layer_names, layers_of, logits_node, value_exponent
from conversion.simulator import Simulator
from mstpn_base.errors import ParameterError


class SimRunner:
    """:class:`conversion.simulator.Simulator` with batch 1, one frame per :meth:`step`."""

    def __init__(self, net, fixed: bool = False, synapses: str = "ideal", device=None):
        try:
            self.sim = Simulator(net, batch=1, fixed=fixed, synapses=synapses, device=device)
        except ParameterError as exc:
            raise UnsupportedNetworkError(str(exc)) from None
        self.net, self.fixed, self.synapses = net, fixed, synapses
        self.name = "numpy-fixed" if fixed else "numpy"
        self.layers = layer_names(net)
        self.logits = logits_node(net)
        # events and synops of a layer are those of all its nodes (sigma-delta: layers_of)
        self.groups = ({name: nodes for name, nodes, _ in layers_of(net)} if net.mode == "sigma_delta"
                       else {n: [n] for n in self.layers})
        #: fixed point: the scale 2**e of each layer's integers (value = int * 2**e)
        self.scale = {name: 2.0 ** value_exponent(net, name) for name in self.layers} if fixed else {}

    def reset(self):
        self.sim.reset()

    def _counts(self) -> list:
        """(events, synops) of each layer so far (the sums over its nodes)."""
        groups = self.__dict__.get("_stat_groups")
        if groups is None or groups[0] is not self.sim.stats:     # each layer's counter dicts, bound once
            st = self.sim.stats
            groups = self._stat_groups = (st, [[st[n] for n in self.groups.get(name, [name])] for name in self.layers])
        out = []
        for cs in groups[1]:
            ev = syn = 0
            for c in cs:
                ev += c["events"]
                syn += c["synops"]
            out.append((ev, syn))
        return out

    def step(self, obs) -> StepOut:
        sim = self.sim
        before = self._counts()
        shape = sim.net.nodes[sim.order[0]].shape
        sim.step(np.asarray(obs).reshape((1, *shape)))
        out = StepOut(None)
        for name, (e0, s0), (e1, s1) in zip(self.layers, before, self._counts()):
            v = np.asarray(sim.values[name]).reshape(-1)
            if self.fixed:
                out.raw[name] = v.astype(np.int64)
                out.acts[name] = v * self.scale[name]          # a new float64 array
            else:
                out.acts[name] = v.astype(np.float64)
            out.events[name] = e1 - e0
            out.synops[name] = s1 - s0
        out.logits = out.acts[self.logits].copy()
        return out

    @property
    def device_stats(self) -> dict:
        """Per plastic node the counted device activity since the start (synapses="device")."""
        return self.sim.device_stats

    def close(self):
        pass


def make_runner(net, synapses: str = "ideal", device=None, **_):
    return SimRunner(net, fixed=False, synapses=synapses, device=device)


def make_fixed_runner(net, synapses: str = "ideal", device=None, **_):
    if net.fixed is None:
        raise UnsupportedNetworkError("numpy-fixed needs a network with fixed-point parameters "
                                      "(mstpn convert with calibration)")
    return SimRunner(net, fixed=True, synapses=synapses, device=device)
