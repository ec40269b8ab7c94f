"""ProcessModels and the recorder process that :class:`lava_procs.network.LavaRunner` adds to
Lava's own:

* :class:`PyLoihiInjectorModelInt`: lava's Injector model with an int32 OutPort, so that the
  host's frames reach Lava's fixed_pt processes (int32 InPorts) as integers;
* :class:`FrameRecorder`: one process reading every layer's OutPort in every time step and sending
  the host one vector per frame (``period`` steps): per Delta/SigmaDelta layer the sum of its
  payloads over the frame, its number of nonzero payloads and, per receiving layer, the sum of
  the receivers' fan-outs over those payloads (the synaptic operations); per plastic layer or head
  the vector it sent at its sub-step.  It replaces one lava Extractor per layer and ``period``
  host reads per layer and frame by one read per frame;
* :class:`PyConvModelSparseFloat` / :class:`PyConvModelSparseFixed`: lava's Conv models that skip
  the convolution in a time step whose input payloads are all zero (its output is then exactly
  zero; a frame's events reach each Conv in one of its ``period`` steps) and compute it otherwise
  as one product (:func:`conv_lava`) instead of one scipy convolve2d per channel pair: fixed
  point to the bit, float the same float64 sums in another order.
"""
from __future__ import annotations

import numpy as np

# importing lava_procs.io_models runs lava_procs/__init__ first: the Python 3.11 hook before lava
from lava.magma.core.decorator import implements, requires, tag
from lava.magma.core.model.py.model import PyLoihiProcessModel
from lava.magma.core.model.py.ports import PyInPort, PyOutPort
from lava.magma.core.model.py.type import LavaPyType
from lava.magma.core.process.ports.ports import InPort, OutPort
from lava.magma.core.process.process import AbstractProcess
from lava.magma.core.resources import CPU
from lava.magma.core.sync.protocols.loihi_protocol import LoihiProtocol
from lava.proc.conv.models import PyConvModelFixed, PyConvModelFloat
from lava.proc.io.injector import PyLoihiInjectorModel

#: the most layers a FrameRecorder reads (its model declares this many InPorts)
MAX_TAPS = 8


class PyLoihiInjectorModelInt(PyLoihiInjectorModel):
    """lava's PyLoihiInjectorModel sending int32 (24-bit) values."""

    out_port: PyOutPort = LavaPyType(PyOutPort.VEC_DENSE, np.int32, precision=24)


def conv_lava(x, weight, stride, padding) -> np.ndarray:
    """Lava Conv's convolution (``lava.proc.conv.utils.conv_scipy``, dilation 1, one group) as one
    product: x (X, Y, C), weight (O, KX, KY, C) -> (X', Y', O) with
    out[i, j, o] = sum_{a, b, c} xp[s_x i + a, s_y j + b, c] * weight[o, KX-1-a, KY-1-b, c] (xp: x
    zero-padded).  Integers: exact int64 (summed in float64 where max|x| * max_o sum|w_o| < 2**53,
    so that every partial sum is an exact integer, as Lava sums them); float: float64, the same sum
    in another order."""
    kx, ky = weight.shape[1:3]
    integer = np.issubdtype(x.dtype, np.integer) and np.issubdtype(weight.dtype, np.integer)
    if integer and float(np.abs(x).max()) * float(np.abs(weight).sum(axis=(1, 2, 3)).max()) < 2.0 ** 53:
        return conv_lava(x.astype(np.float64), weight.astype(np.float64), stride, padding).astype(np.int64)
    xp = np.pad(x, ((padding[0], padding[0]), (padding[1], padding[1]), (0, 0)))
    win = np.lib.stride_tricks.sliding_window_view(xp, (kx, ky), axis=(0, 1))[::stride[0], ::stride[1]]
    w = weight[:, ::-1, ::-1, :]                           # (O, KX, KY, C): correlation with the flipped kernel
    return np.tensordot(win, w, axes=([2, 3, 4], [3, 1, 2]))


class _SparseConv:
    """Lava's Conv step: the convolution skipped when every input payload is zero, else
    :func:`conv_lava` (dilation 1, one group; other settings: Lava's own kernel)."""

    def run_spk(self) -> None:
        self.a_out.send(self.a_buf)
        s_in = self.s_in.recv()
        if not s_in.any():
            self.a_buf = np.zeros_like(self.a_buf)
            return
        if self.num_message_bits.item() <= 0:
            s_in = s_in.astype(bool)
        if np.all(self.dilation == 1) and int(self.groups[0]) == 1:
            t = np.int64 if np.issubdtype(self.weight.dtype, np.integer) else np.float64
            a_out = conv_lava(s_in.astype(t), self.weight.astype(t), self.stride, self.padding).astype(self.weight.dtype)
        else:
            from lava.proc.conv import utils

            a_out = utils.conv(s_in, self.weight, self.kernel_size, self.stride, self.padding, self.dilation,
                               self.groups[0])
        self.a_buf = self.clamp_precision(a_out)


class PyConvModelSparseFloat(_SparseConv, PyConvModelFloat):
    """lava's float Conv model, zero-input steps skipped."""


class PyConvModelSparseFixed(_SparseConv, PyConvModelFixed):
    """lava's fixed_pt Conv model (24-bit clamp), zero-input steps skipped."""


def tap(shape, mode: str, sub: int = 0, fans=()) -> dict:
    """One layer read by a :class:`FrameRecorder`: ``shape`` its OutPort's, ``mode`` "sum" (the
    frame's payload sum, nonzero count and ``fans``: per receiver its fan-out per source unit,
    flat in the port's layout) or "row" (the vector sent at sub-step ``sub``)."""
    if mode not in ("sum", "row"):
        raise ValueError(f"tap mode must be 'sum' or 'row', got {mode!r}")
    return {"shape": tuple(int(s) for s in shape), "mode": mode, "sub": int(sub),
            "fans": [np.asarray(f, np.float64).reshape(-1) for f in fans]}


def tap_size(t: dict) -> int:
    """Entries of a tap in the recorder's frame vector: n (+ 1 + one per fan for "sum")."""
    n = int(np.prod(t["shape"]))
    return n + 1 + len(t["fans"]) if t["mode"] == "sum" else n


class FrameRecorder(AbstractProcess):
    """Reads the layers ``taps`` (:func:`tap`) on ``in_0``, ``in_1``, ... every time step; at the
    last sub-step of every ``period`` steps it sends the frame's vector (the taps' entries one
    after the other, :func:`tap_size`) to the host on ``out_port`` (an external pipe of
    ``buffer_frames`` frames; read with :meth:`receive`)."""

    def __init__(self, *, taps, period: int, buffer_frames: int = 3, name=None):
        taps = list(taps)
        if not 0 < len(taps) <= MAX_TAPS:
            raise ValueError(f"a FrameRecorder reads 1 to {MAX_TAPS} layers, got {len(taps)}")
        size = sum(tap_size(t) for t in taps)
        super().__init__(taps=taps, period=int(period), name=name)
        for i in range(MAX_TAPS):   # the model declares MAX_TAPS ports; those past the taps stay unconnected
            setattr(self, f"in_{i}", InPort(shape=taps[i]["shape"] if i < len(taps) else (1,)))
        self.out_port = OutPort(shape=(size,))
        self.out_port.flag_external_pipe(buffer_size=buffer_frames)

    def receive(self) -> np.ndarray:
        """The next frame's vector (blocks until the graph has run the frame)."""
        return self.out_port.external_pipe_csp_recv_port.recv()


@implements(proc=FrameRecorder, protocol=LoihiProtocol)
@requires(CPU)
@tag("floating_pt", "fixed_pt")
class PyFrameRecorderModel(PyLoihiProcessModel):
    """float64 ports (integer payloads below 2**24 are exact)."""

    out_port: PyOutPort = LavaPyType(PyOutPort.VEC_DENSE, float)
    locals().update({f"in_{i}": LavaPyType(PyInPort.VEC_DENSE, float) for i in range(MAX_TAPS)})
    __annotations__.update({f"in_{i}": PyInPort for i in range(MAX_TAPS)})

    def __init__(self, proc_params):
        super().__init__(proc_params)
        self.taps, self.period = proc_params["taps"], int(proc_params["period"])
        self._acc = [np.zeros(int(np.prod(t["shape"]))) for t in self.taps]
        self._cnt = [np.zeros(1 + len(t["fans"])) for t in self.taps]

    def run_spk(self) -> None:
        sub = (self.time_step - 1) % self.period
        for i, t in enumerate(self.taps):
            x = getattr(self, f"in_{i}").recv().reshape(-1)
            if t["mode"] == "row":
                if sub == t["sub"]:
                    self._acc[i][:] = x
            elif x.any():
                self._acc[i] += x
                nz = x != 0
                self._cnt[i][0] += np.count_nonzero(nz)
                for j, f in enumerate(t["fans"]):
                    self._cnt[i][1 + j] += f[nz].sum()
        if sub == self.period - 1:
            parts = []
            for i, t in enumerate(self.taps):
                parts.append(self._acc[i].copy())
                if t["mode"] == "sum":
                    parts.append(self._cnt[i].copy())
                    self._acc[i][:] = 0
                    self._cnt[i][:] = 0
            self.out_port.csp_ports[-1].send(np.concatenate(parts))
