"""Lava Process of one layer of the converted network (synapses + sigma-delta neurons) and its
floating_pt / fixed_pt ProcessModels.

One :class:`SDLayer` = one layer of :func:`conversion.backend.layers_of` (input encoder, conv,
dense head or the plastic STPN layer with its tanh neurons), ending in the node that sends events:

* ``a_in``  (n_in,)  graded events from the layer below (the input layer: the frame's pixels)
* ``s_out`` (n,)     graded events of this layer (0 where nothing is sent)
* ``rec_out`` (n + 2,) the layer's activation, its event count and its synaptic operations, for
  recording (sent every step, as an Extractor receives every step; meaningful in the step the
  layer computes, zeros otherwise)

Timing (the Loihi convention of lava.proc.dense: a synapse delivers one step later): in every time
step the model first sends the events it computed in the previous step, then receives.  A layer at
depth d (input layer d = 1) therefore sees a frame's events at sub-step d - 1 of that frame, and
computes only then (``phase``); a frame takes ``period`` = (depth of the deepest layer) time steps.
Between its phases a layer sends zeros and changes nothing, so the result equals the
NumPy reference step for step.

The layer state (u, y, y_sent, z, F, N) lives in a :class:`LayerKernel` inside
the model, which applies conversion's simulator arithmetic (float64, or the integer specification)
to the layer's nodes: specification and oracle share one implementation.

:class:`SDPlasticLayer` is the plastic layer whose synapses are memristor device pairs in a
separate process (:class:`lava_procs.memristor.layer.DeviceLayer`, floating_pt): its kernel
(:class:`NeuronSide`) keeps the neuron side (N, pre-activation, tanh, with the pairs' read-back W),
and at the layer's sub-step sends h, z and N through ``h_out``, ``z_out``, ``norm_out`` and
receives the new F on ``f_in`` in the same time step.
"""
from __future__ import annotations

import numpy as np

import lava_procs  # noqa: F401  (Python 3.11 compatibility hook before lava)
from lava.magma.core.decorator import implements, requires, tag
from lava.magma.core.model.py.model import PyLoihiProcessModel
from lava.magma.core.model.py.ports import PyInPort, PyOutPort
from lava.magma.core.model.py.type import LavaPyType
from lava.magma.core.process.ports.ports import InPort, OutPort
from lava.magma.core.process.process import AbstractProcess
from lava.magma.core.process.variable import Var
from lava.magma.core.resources import CPU
from lava.magma.core.sync.protocols.loihi_protocol import LoihiProtocol

from conversion.simulator import Simulator


class NeuronSide(Simulator):
    """The reference simulator (float64, batch 1) for a layer whose plastic nodes' synapses are
    device pairs held by another process (``weights``: node -> the pairs' read-back long-term
    weights W).  The forward pass of such a node uses that W and its current F; its plasticity
    phase only records what the synapses need, ``pending[node] = (N, h, z)`` (each (1, n)), and
    forwards the post neurons' events; the caller then sets the new F (:meth:`set_F`)."""

    def __init__(self, net, weights: dict):
        self._read_back = {n: np.asarray(W, np.float64) for n, W in weights.items()}
        self.pending: dict = {}
        super().__init__(net, batch=1)

    def _plastic_params(self, n) -> dict:
        p = super()._plastic_params(n)
        if n in self._read_back:
            p["W"] = self._read_back[n]
            p["WT"] = np.ascontiguousarray(p["W"].T)
        return p

    def _plasticity(self, n):
        if n not in self._read_back:
            return super()._plasticity(n)
        node, st = self.net.nodes[n], self.state[n]
        self.pending[n] = (st["N"], self.state[node.post]["y"], st["z"])
        st["dh"] = self.deltas[node.post]

    def set_F(self, n, F) -> None:
        """The read-back short-term weights F (H, K) of node ``n`` after its synapses' step."""
        st = self.state[n]
        st["F"] = np.array(F, np.float64).reshape(st["F"].shape)


class LayerKernel:
    """The nodes ``nodes`` of ``net``, stepped with conversion's simulator arithmetic.

    ``step(payload)``: payload = the frame (first layer) or the events of the source layer's last
    node (flat); returns (values of the last node, its events (None for an Output), events, synops).
    """

    def __init__(self, net, nodes, src, fixed: bool, weights: dict | None = None):
        self.weights = dict(weights or {})
        self.sim = NeuronSide(net, self.weights) if self.weights else Simulator(net, batch=1, fixed=fixed)
        self.nodes, self.src, self.fixed = list(nodes), src, fixed
        if src is not None:
            self.src_shape = (1, *net.nodes[src].out_shape)
            self.sent = np.zeros(self.src_shape, np.int64 if fixed else np.float64)
        self.reset()

    def reset(self):
        self.sim.reset()
        if self.src is not None:
            self.sent[:] = 0

    def _counters(self):
        st = self.sim.stats
        return sum(st[n]["events"] for n in self.nodes), sum(st[n]["synops"] for n in self.nodes)

    def step(self, payload):
        sim = self.sim
        ev0, syn0 = self._counters()
        if self.src is None:   # the Input node: the frame
            inp = self.nodes[0]
            given = {inp: (np.asarray(payload).reshape((1, *sim.net.nodes[inp].shape)), None)}
            todo = self.nodes[1:]
        else:                  # events of the source layer; its y_sent is their running sum
            e = np.asarray(payload).reshape(self.src_shape)
            e = np.rint(e).astype(np.int64) if self.fixed else e.astype(np.float64)
            self.sent = self.sent + e
            given = {self.src: (self.sent, e)}
            todo = self.nodes
        sim.step_nodes(todo, given)
        last = self.nodes[-1]
        ev1, syn1 = self._counters()
        delta = sim.deltas.get(last)
        return (np.asarray(sim.values[last]).reshape(-1), None if delta is None else np.asarray(delta).reshape(-1),
                ev1 - ev0, syn1 - syn0)


class SDLayer(AbstractProcess):
    """``net``: the converted Network; ``nodes``: this layer's nodes; ``src``: the node whose events
    arrive on ``a_in`` (None: the frame); ``n``/``n_in``: output / input sizes;
    ``phase``/``period``: the sub-step (0-based) of each frame at which the layer computes."""

    def __init__(self, *, net, nodes, src, n: int, n_in: int, phase: int, period: int, name=None, **params):
        super().__init__(net=net, nodes=list(nodes), src=src, phase=phase, period=period, n=n, name=name, **params)
        self.a_in = InPort(shape=(n_in,))
        self.s_out = OutPort(shape=(n,))
        self.rec_out = OutPort(shape=(n + 2,))
        self.frames = Var(shape=(1,), init=0)   # frames computed so far


class SDPlasticLayer(SDLayer):
    """An :class:`SDLayer` whose plastic node ``plastic`` (H, K) has its synapses in a separate
    process (:class:`lava_procs.memristor.layer.DeviceLayer`): ``weights`` is their read-back
    long-term weight W.  Extra ports, used at the layer's sub-step only: ``h_out`` (H,), ``z_out``
    (K,), ``norm_out`` (H,) send the step's post activation, presynaptic vector and row norm to
    the synapses, ``f_in`` (H, K) receives the read-back F after their step, in the same time
    step; the neurons' next forward pass uses it."""

    def __init__(self, *, plastic: str, weights, **kwargs):
        H, K = np.shape(weights)
        super().__init__(plastic=plastic, weights={plastic: np.asarray(weights, np.float64)}, **kwargs)
        self.h_out = OutPort(shape=(H,))
        self.z_out = OutPort(shape=(K,))
        self.norm_out = OutPort(shape=(H,))
        self.f_in = InPort(shape=(H, K))


class _SDModelBase(PyLoihiProcessModel):
    def __init__(self, proc_params):
        super().__init__(proc_params)
        self.n = int(proc_params["n"])
        self.my_phase, self.my_period = int(proc_params["phase"]), int(proc_params["period"])  # "phase" is taken by PyLoihiProcessModel
        self.kernel = LayerKernel(proc_params["net"], proc_params["nodes"], proc_params["src"], self.FIXED,
                                  proc_params.get("weights"))
        self._buf = np.zeros(self.n)
        self._zeros = np.zeros(self.n)
        self._rec_idle = np.zeros(self.n + 2)

    def run_spk(self) -> None:
        self.s_out.send(self._buf)             # events computed in the previous step (one-step delay)
        inp = self.a_in.recv()
        if (self.time_step - 1) % self.my_period != self.my_phase:
            self._buf = self._zeros
            self.rec_out.send(self._rec_idle)   # an Extractor receives every step
            return
        val, delta, events, synops = self.kernel.step(inp)
        self._synapses()
        self._buf = self._zeros if delta is None else delta.astype(np.float64)
        self.frames[0] += 1
        self.rec_out.send(np.concatenate([np.asarray(val, np.float64), [events, synops]]))

    def _synapses(self) -> None:
        """The plasticity phase outside the layer (SDPlasticLayer); none here."""


@implements(proc=SDLayer, protocol=LoihiProtocol)
@requires(CPU)
@tag("floating_pt")
class PySDLayerFloat(_SDModelBase):
    """float64 layer (conversion's float simulator arithmetic)."""

    a_in: PyInPort = LavaPyType(PyInPort.VEC_DENSE, float)
    s_out: PyOutPort = LavaPyType(PyOutPort.VEC_DENSE, float)
    rec_out: PyOutPort = LavaPyType(PyOutPort.VEC_DENSE, float)
    frames: np.ndarray = LavaPyType(np.ndarray, int)

    FIXED = False


@implements(proc=SDLayer, protocol=LoihiProtocol)
@requires(CPU)
@tag("fixed_pt")
class PySDLayerFixed(_SDModelBase):
    """Bit-accurate integer layer: the integer specification of conversion's fixed-point simulator.
    Events travel as integers in a float64 channel (exact: payloads fit 24 bits)."""

    a_in: PyInPort = LavaPyType(PyInPort.VEC_DENSE, float)
    s_out: PyOutPort = LavaPyType(PyOutPort.VEC_DENSE, float)
    rec_out: PyOutPort = LavaPyType(PyOutPort.VEC_DENSE, float)
    frames: np.ndarray = LavaPyType(np.ndarray, int)

    FIXED = True


@implements(proc=SDPlasticLayer, protocol=LoihiProtocol)
@requires(CPU)
@tag("floating_pt")
class PySDPlasticLayerFloat(_SDModelBase):
    """float64 layer whose plastic synapses step in a DeviceLayer: after the neuron phase it sends
    h, z and N and receives the new F (same time step)."""

    a_in: PyInPort = LavaPyType(PyInPort.VEC_DENSE, float)
    s_out: PyOutPort = LavaPyType(PyOutPort.VEC_DENSE, float)
    rec_out: PyOutPort = LavaPyType(PyOutPort.VEC_DENSE, float)
    h_out: PyOutPort = LavaPyType(PyOutPort.VEC_DENSE, float)
    z_out: PyOutPort = LavaPyType(PyOutPort.VEC_DENSE, float)
    norm_out: PyOutPort = LavaPyType(PyOutPort.VEC_DENSE, float)
    f_in: PyInPort = LavaPyType(PyInPort.VEC_DENSE, float)
    frames: np.ndarray = LavaPyType(np.ndarray, int)

    FIXED = False

    def __init__(self, proc_params):
        super().__init__(proc_params)
        self.plastic = proc_params["plastic"]

    def _synapses(self) -> None:
        sim = self.kernel.sim
        norm, h, z = sim.pending.pop(self.plastic)
        self.h_out.send(np.asarray(h, np.float64).reshape(-1))
        self.z_out.send(np.asarray(z, np.float64).reshape(-1))
        self.norm_out.send(np.asarray(norm, np.float64).reshape(-1))
        sim.set_F(self.plastic, self.f_in.recv())
