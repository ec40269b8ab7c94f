"""Lava Process of one layer of the converted network (synapses + sigma-delta neurons) and its
floating_pt / fixed_pt ProcessModels.

One :class:`SDLayer` = one layer of :class:`mstpn.netspec.NetSpec` (input encoder, conv, dense or
the plastic STPN layer) together with the sigma-delta neurons that send its output:

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

The layer state (sigma, y_sent, x_hat, h, F) lives in a kernel object inside the model (float64:
:class:`mstpn.sd_kernels.LayerKernel`; fixed point: the integer kernel of ``conversion``'s
fixed-point simulator, shared with the NumPy oracle as for the memristor process).
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
    """``layer``: a :class:`mstpn.netspec.Layer`; ``n_in``: size of the incoming event vector;
    ``phase``/``period``: the sub-step (0-based) of each frame at which the layer computes;
    ``fixed``: fixed-point parameters for the fixed_pt model (None for float)."""

    def __init__(self, *, layer, in_shape, n_in: int, phase: int, period: int, fixed=None, name=None):
        super().__init__(layer=layer, in_shape=in_shape, phase=phase, period=period, fixed=fixed,
                         name=name or layer.name)
        n = layer.size
        self.a_in = InPort(shape=(n_in,))
        self.s_out = OutPort(shape=(n,))
        self.rec_out = OutPort(shape=(n + 2,))
        self.frames = Var(shape=(1,), init=0)   # frames computed so far


class _SDModelBase(PyLoihiProcessModel):
    def __init__(self, proc_params):
        super().__init__(proc_params)
        self.layer = proc_params["layer"]
        self.phase, self.period = int(proc_params["phase"]), int(proc_params["period"])
        self.kernel = self._make_kernel(proc_params)
        self._buf = np.zeros(self.layer.size)
        self._zeros = np.zeros(self.layer.size)
        self._rec_idle = np.zeros(self.layer.size + 2)

    def run_spk(self) -> None:
        self.s_out.send(self._buf)             # events computed in the previous step (one-step delay)
        inp = self.a_in.recv()
        if (self.time_step - 1) % self.period != self.phase:
            self._buf = self._zeros
            self.rec_out.send(self._rec_idle)   # an Extractor receives every step
            return
        act, delta, synops, events = self._compute(inp)
        self._buf = delta
        self.frames[0] += 1
        self.rec_out.send(np.concatenate([act, [events, synops]]))


@implements(proc=SDLayer, protocol=LoihiProtocol)
@requires(CPU)
@tag("floating_pt")
class PySDLayerFloat(_SDModelBase):
    """float64 sigma-delta layer (kernels of :mod:`mstpn.sd_kernels`)."""

    a_in: PyInPort = LavaPyType(PyInPort.VEC_DENSE, float)
    s_out: PyOutPort = LavaPyType(PyOutPort.VEC_DENSE, float)
    rec_out: PyOutPort = LavaPyType(PyOutPort.VEC_DENSE, float)
    frames: np.ndarray = LavaPyType(np.ndarray, int)

    def _make_kernel(self, proc_params):
        from mstpn.sd_kernels import LayerKernel

        return LayerKernel(self.layer, proc_params["in_shape"])

    def _compute(self, inp):
        act, delta, synops = self.kernel.step(inp)
        return act, delta, synops, int(np.count_nonzero(delta))


@implements(proc=SDLayer, protocol=LoihiProtocol)
@requires(CPU)
@tag("fixed_pt")
class PySDLayerFixed(_SDModelBase):
    """Bit-accurate integer layer: the integer kernel of conversion's fixed-point simulator.
    Events travel as integers (graded payloads, exact in the float64 channel below 2**53)."""

    a_in: PyInPort = LavaPyType(PyInPort.VEC_DENSE, float)
    s_out: PyOutPort = LavaPyType(PyOutPort.VEC_DENSE, float)
    rec_out: PyOutPort = LavaPyType(PyOutPort.VEC_DENSE, float)
    frames: np.ndarray = LavaPyType(np.ndarray, int)

    def _make_kernel(self, proc_params):
        from lava_procs.network import make_fixed_kernel

        return make_fixed_kernel(self.layer, proc_params["in_shape"], proc_params["fixed"])

    def _compute(self, inp):
        act, delta, synops = self.kernel.step(np.rint(inp).astype(np.int64) if self.layer.kind != "input" else inp)
        return (np.asarray(act, np.float64), np.asarray(delta, np.float64), synops,
                int(np.count_nonzero(delta)))
