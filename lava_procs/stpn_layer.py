"""Lava Process of one layer of the converted network (synapses + sigma-delta neurons) and its
floating_pt / fixed_pt ProcessModels.

One :class:`SDLayer` = one layer of :func:`lava_procs.network.layers_of` (input encoder, conv,
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

The layer state (u, y, y_sent, z, F, N) lives in a :class:`lava_procs.network.LayerKernel` inside
the model, which applies conversion's simulator arithmetic (float64, or the integer specification)
to the layer's nodes: specification and oracle share one implementation.
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


class SDLayer(AbstractProcess):
    """``net``: the converted Network; ``nodes``: this layer's nodes; ``src``: the node whose events
    arrive on ``a_in`` (None: the frame); ``n``/``n_in``: output / input sizes;
    ``phase``/``period``: the sub-step (0-based) of each frame at which the layer computes."""

    def __init__(self, *, net, nodes, src, n: int, n_in: int, phase: int, period: int, name=None):
        super().__init__(net=net, nodes=list(nodes), src=src, phase=phase, period=period, n=n, name=name)
        self.a_in = InPort(shape=(n_in,))
        self.s_out = OutPort(shape=(n,))
        self.rec_out = OutPort(shape=(n + 2,))
        self.frames = Var(shape=(1,), init=0)   # frames computed so far


class _SDModelBase(PyLoihiProcessModel):
    def __init__(self, proc_params):
        super().__init__(proc_params)
        self.n = int(proc_params["n"])
        self.my_phase, self.my_period = int(proc_params["phase"]), int(proc_params["period"])  # "phase" is taken by PyLoihiProcessModel
        from lava_procs.network import LayerKernel

        self.kernel = LayerKernel(proc_params["net"], proc_params["nodes"], proc_params["src"], self.FIXED)
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
        self._buf = self._zeros if delta is None else delta.astype(np.float64)
        self.frames[0] += 1
        self.rec_out.send(np.concatenate([np.asarray(val, np.float64), [events, synops]]))


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
