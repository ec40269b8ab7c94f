"""Lava Process of the plastic STPN layer (flatten -> PlasticSTPN -> its tanh sigma-delta node h)
and its floating_pt / fixed_pt ProcessModels: the one layer of the converted network that Lava has
no process for (the static layers are Lava's own Conv, Dense, Delta, SigmaDelta and Sigma, see
:mod:`lava_procs.network`).

Ports: ``a_in`` (the source SigmaDelta's payloads, in Lava's (X, Y, C) layout), ``s_out`` (H,) the
events of h, ``rec_out`` (H + 2,) h's sent value, its event count and the layer's synaptic
operations (every step; meaningful at the layer's sub-step).

State, all in Lava Vars (batch 1): ``F`` (H, K) short-term weights, ``z`` (K,) = [x ; h_sent],
``uW`` (H,) = W z (event-driven), ``N`` (H,) row norms, ``a`` (H,) pre-activation, ``dh`` (H,) h's
events of the previous frame, ``h_y``/``h_sent`` (H,) the tanh node's activation and sent value,
``x`` (I,) the integrated input (sum of the received payloads) and ``x_new`` (I,) the payloads
received since the layer last computed.

Timing (Lava's synapse convention: a synapse delivers one step later): in every time step the
model accumulates what arrives; at sub-step ``phase`` of every ``period`` steps (one step after
its input's layer) it steps the layer once, on everything received since the last time (a
pre-phase transient of the layers below arrives before the frame and is part of it), and sends
h's events in that step, as Lava's SigmaDelta does (zeros in the other steps).

Arithmetic: the node kernels of :class:`conversion.simulator.Simulator` (float, or its integer
specification for fixed_pt) applied to arrays read from the Vars and written back to them, so the
equations have one definition.  With ``weights`` (synapses="device") the plastic synapses live in
a :class:`lava_procs.memristor.layer.DeviceLayer`: the layer sends h, z and N on
``h_out``/``z_out``/``norm_out`` and receives the read-back F on ``f_in`` in the same time step
(floating_pt: float64; fixed_pt: int64, h and z the integers at their fixed exponents, N the integer
row norm max(isqrt(sum G^2), 1), F at f_exp, with ``weights`` the devices' 8-bit read-back W
mantissas, ``conversion.device_layer_fixed.FixedDevices.w_mant``).
"""
from __future__ import annotations

from types import SimpleNamespace

import numpy as np

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

#: Var name -> (node role, Simulator state key): "stpn" = the PlasticSTPN node, "h" = its post node
STATE_VARS = {"F": ("stpn", "F"), "z": ("stpn", "z"), "uW": ("stpn", "uW"), "N": ("stpn", "N"),
              "a": ("stpn", "a"), "dh": ("stpn", "dh"), "h_y": ("h", "y"), "h_sent": ("h", "sent")}


class LayerSim(Simulator):
    """The reference simulator (batch 1) started from the zero state (the pre-phase events of
    the layers below arrive as events); ``weights`` (node -> read-back W of device pairs held by
    another process): that node's plasticity only records ``pending[node] = (N, h, z)``."""

    prephase = False

    def __init__(self, net, fixed: bool, weights: dict | None = None):
        self._read_back = {n: np.asarray(W, np.int64 if fixed else np.float64) for n, W in (weights or {}).items()}
        self.pending: dict = {}
        super().__init__(net, batch=1, fixed=fixed)

    def _plastic_params(self, n) -> dict:
        if self.fixed and n in self._read_back:   # the simulator's own device read-back path (w_mant)
            self._dev_fixed[n] = SimpleNamespace(w_mant=self._read_back[n])
            return super()._plastic_params(n)
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


#: prepared LayerSims by (network, fixed, read-back weights): (net, weights, sim), the newest last
_SIMS: dict = {}
_SIMS_KEPT = 4


def layer_sim(net, fixed: bool, weights: dict | None) -> LayerSim:
    """The :class:`LayerSim` of ``net`` (its node tables take about a second to prepare in fixed
    point), prepared once per network on the host: the workers Lava forks at every runtime start
    inherit it (each mutates its own copy) instead of preparing it again."""
    key = (id(net), bool(fixed), tuple(sorted((n, id(w)) for n, w in (weights or {}).items())))
    if key not in _SIMS:
        while len(_SIMS) >= _SIMS_KEPT:
            _SIMS.pop(next(iter(_SIMS)))
        _SIMS[key] = (net, weights, LayerSim(net, fixed, weights))
    return _SIMS[key][2]


class PlasticLayer(AbstractProcess):
    """``net``: the converted Network; ``nodes``: [flatten?, stpn, h]; ``src``: the SigmaDelta
    node whose payloads arrive on ``a_in`` (``in_shape``: its Lava (X, Y, C) shape);
    ``phase``/``period``: the sub-step of each frame at which the layer computes; ``weights``:
    the read-back W of device pairs in a DeviceLayer (None: the ideal rule inside); ``fixed``:
    the models it will run with (True: fixed_pt, False: floating_pt), to prepare their simulator on
    the host (:func:`layer_sim`; None: each worker prepares its own)."""

    def __init__(self, *, net, nodes, src, in_shape, phase: int, period: int, weights=None, name=None,
                 fixed: bool | None = None):
        plastic = next(n for n in nodes if type(net.nodes[n]).__name__ == "PlasticSTPN")
        H, K = net.nodes[plastic].W.shape
        I = K - H
        super().__init__(net=net, nodes=list(nodes), src=src, plastic=plastic, post=net.nodes[plastic].post,
                         phase=int(phase), period=int(period), name=name,
                         weights=None if weights is None else {plastic: np.asarray(weights)})
        self.a_in = InPort(shape=tuple(in_shape))
        self.s_out = OutPort(shape=(H,))
        self.rec_out = OutPort(shape=(H + 2,))
        shapes = {"F": (H, K), "z": (K,), "uW": (H,), "N": (H,), "a": (H,), "dh": (H,), "h_y": (H,), "h_sent": (H,)}
        for v, shape in shapes.items():
            setattr(self, v, Var(shape=shape, init=np.zeros(shape)))
        self.x = Var(shape=(I,), init=np.zeros(I))
        self.x_new = Var(shape=(I,), init=np.zeros(I))
        self.frames = Var(shape=(1,), init=0)
        if fixed is not None:
            layer_sim(net, fixed, self.proc_params["weights"])


class DevicePlasticLayer(PlasticLayer):
    """A :class:`PlasticLayer` whose synapses are device pairs in a DeviceLayer (``weights``: their
    read-back W; fixed_pt: its int64 mantissas ``w_mant``): ``h_out`` (H,), ``z_out`` (K,),
    ``norm_out`` (H,) out, ``f_in`` (H, K) in."""

    def __init__(self, *, weights, **kwargs):
        super().__init__(weights=weights, **kwargs)
        H, K = np.shape(weights)
        self.h_out = OutPort(shape=(H,))
        self.z_out = OutPort(shape=(K,))
        self.norm_out = OutPort(shape=(H,))
        self.f_in = InPort(shape=(H, K))


class _PlasticModel(PyLoihiProcessModel):
    FIXED = False

    def __init__(self, proc_params):
        super().__init__(proc_params)
        p = proc_params
        self.nodes, self.src, self.plastic, self.post = p["nodes"], p["src"], p["plastic"], p["post"]
        self.my_phase, self.my_period = int(p["phase"]), int(p["period"])   # "phase" is PyLoihiProcessModel's
        self.sim = layer_sim(p["net"], self.FIXED, p["weights"])   # this worker's copy
        self.src_shape = (1, *p["net"].nodes[self.src].out_shape)         # (1, C, H, W) of the source
        self.dtype = np.int64 if self.FIXED else np.float64
        H = p["net"].nodes[self.plastic].W.shape[0]
        self._zeros = np.zeros(H)
        self._rec_idle = np.zeros(H + 2)

    def _load(self) -> None:
        """The simulator's state of the layer's nodes = the Vars (batch 1)."""
        st = self.sim.state
        for v, (role, key) in STATE_VARS.items():
            node = self.plastic if role == "stpn" else self.post
            st[node][key] = np.asarray(getattr(self, v), self.dtype)[None].copy()

    def _store(self) -> None:
        st = self.sim.state
        for v, (role, key) in STATE_VARS.items():
            node = self.plastic if role == "stpn" else self.post
            getattr(self, v)[:] = np.asarray(st[node][key]).reshape(getattr(self, v).shape)

    def run_spk(self) -> None:
        got = np.asarray(self.a_in.recv())
        if np.any(got):                         # Lava (X, Y, C) -> the project's flat (C, H, W)
            self.x_new[:] = self.x_new + got.transpose(*reversed(range(got.ndim))).reshape(-1)
        if (self.time_step - 1) % self.my_period != self.my_phase:
            self.s_out.send(self._zeros)
            self.rec_out.send(self._rec_idle)
            return
        sim = self.sim
        e = np.array(self.x_new, self.dtype).reshape(self.src_shape)   # a copy: x_new is cleared below
        self.x[:] = self.x + self.x_new
        self.x_new[:] = 0
        self._load()
        ev0, syn0 = sim.stats[self.post]["events"], sum(sim.stats[n]["synops"] for n in self.nodes)
        sim.step_nodes(self.nodes, {self.src: (np.asarray(self.x, self.dtype).reshape(self.src_shape), e)})
        self._synapses()
        self._store()
        events = sim.stats[self.post]["events"] - ev0
        synops = sum(sim.stats[n]["synops"] for n in self.nodes) - syn0
        self.s_out.send(np.asarray(sim.deltas[self.post], np.float64).reshape(-1))   # h's events, this step
        self.frames[0] += 1
        self.rec_out.send(np.concatenate([np.asarray(self.h_sent, np.float64), [events, synops]]))

    def _synapses(self) -> None:
        """The plasticity phase in a DeviceLayer (device synapses); none here."""


_FV = LavaPyType(np.ndarray, float)
_IV = LavaPyType(np.ndarray, np.int64, precision=64)


class _PlasticFloat(_PlasticModel):
    """float64 Var and port types."""

    a_in: PyInPort = LavaPyType(PyInPort.VEC_DENSE, float)
    s_out: PyOutPort = LavaPyType(PyOutPort.VEC_DENSE, float)
    rec_out: PyOutPort = LavaPyType(PyOutPort.VEC_DENSE, float)
    F: np.ndarray = _FV
    z: np.ndarray = _FV
    uW: np.ndarray = _FV
    N: np.ndarray = _FV
    a: np.ndarray = _FV
    dh: np.ndarray = _FV
    h_y: np.ndarray = _FV
    h_sent: np.ndarray = _FV
    x: np.ndarray = _FV
    x_new: np.ndarray = _FV
    frames: np.ndarray = LavaPyType(np.ndarray, int)


class _DeviceSynapses:
    """The plasticity phase in the DeviceLayer: h, z, N out; the read-back F in, same time step."""

    def _synapses(self) -> None:
        norm, h, z = self.sim.pending.pop(self.plastic)
        t = self.PORT_DTYPE
        self.h_out.send(np.asarray(h, t).reshape(-1))
        self.z_out.send(np.asarray(z, t).reshape(-1))
        self.norm_out.send(np.asarray(norm, t).reshape(-1))
        st = self.sim.state[self.plastic]
        st["F"] = np.array(self.f_in.recv(), self.dtype).reshape(st["F"].shape)


@implements(proc=PlasticLayer, protocol=LoihiProtocol)
@requires(CPU)
@tag("floating_pt")
class PyPlasticLayerFloat(_PlasticFloat):
    """float64: conversion's float simulator kernels on the Vars."""


@implements(proc=DevicePlasticLayer, protocol=LoihiProtocol)
@requires(CPU)
@tag("floating_pt")
class PyDevicePlasticLayerFloat(_DeviceSynapses, _PlasticFloat):
    """float64 with device synapses: the plasticity phase is the DeviceLayer's (h, z, N out; F in,
    same time step)."""

    h_out: PyOutPort = LavaPyType(PyOutPort.VEC_DENSE, float)
    z_out: PyOutPort = LavaPyType(PyOutPort.VEC_DENSE, float)
    norm_out: PyOutPort = LavaPyType(PyOutPort.VEC_DENSE, float)
    f_in: PyInPort = LavaPyType(PyInPort.VEC_DENSE, float)
    PORT_DTYPE = np.float64


class _PlasticFixed(_PlasticModel):
    """int64 Vars; int32 (24-bit) payload ports."""

    a_in: PyInPort = LavaPyType(PyInPort.VEC_DENSE, np.int32, precision=24)
    s_out: PyOutPort = LavaPyType(PyOutPort.VEC_DENSE, np.int32, precision=24)
    rec_out: PyOutPort = LavaPyType(PyOutPort.VEC_DENSE, float)
    F: np.ndarray = _IV
    z: np.ndarray = _IV
    uW: np.ndarray = _IV
    N: np.ndarray = _IV
    a: np.ndarray = _IV
    dh: np.ndarray = _IV
    h_y: np.ndarray = _IV
    h_sent: np.ndarray = _IV
    x: np.ndarray = _IV
    x_new: np.ndarray = _IV
    frames: np.ndarray = LavaPyType(np.ndarray, int)

    FIXED = True


@implements(proc=PlasticLayer, protocol=LoihiProtocol)
@requires(CPU)
@tag("fixed_pt")
class PyPlasticLayerFixed(_PlasticFixed):
    """Bit-accurate: the integer specification of conversion's fixed-point simulator on int64
    Vars; payloads in and events out are integers (int32 ports, 24-bit payloads)."""


@implements(proc=DevicePlasticLayer, protocol=LoihiProtocol)
@requires(CPU)
@tag("fixed_pt")
class PyDevicePlasticLayerFixed(_DeviceSynapses, _PlasticFixed):
    """Bit-accurate with device synapses: h, z (integers at h_exp, z_exp) and the integer row
    norm N out, F (at f_exp) in, int64, to the DeviceLayer's fixed_pt model."""

    h_out: PyOutPort = LavaPyType(PyOutPort.VEC_DENSE, np.int64)
    z_out: PyOutPort = LavaPyType(PyOutPort.VEC_DENSE, np.int64)
    norm_out: PyOutPort = LavaPyType(PyOutPort.VEC_DENSE, np.int64)
    f_in: PyInPort = LavaPyType(PyInPort.VEC_DENSE, np.int64)
    PORT_DTYPE = np.int64
