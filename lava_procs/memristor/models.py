"""ProcessModels of MemristorArray: float64 (``floating_pt``) and bit-accurate (``fixed_pt``).

Step order per Lava time step ts (drive row k = ts - 1), as in memristor.reference.simulate:
receive the three inputs; if k >= 1 decay; if any s != 0 apply pulses; send G and the state.
Neither model restates an equation: floating_pt evaluates :mod:`memristor.equations` on its Vars,
fixed_pt steps the integer specification :func:`memristor.fixed_point.step_int` (the NumPy oracle
runs the same function).
"""
from __future__ import annotations

import numpy as np

import lava_procs  # noqa: F401
from lava.magma.core.decorator import implements, requires, tag
from lava.magma.core.model.py.model import PyLoihiProcessModel
from lava.magma.core.model.py.ports import PyInPort, PyOutPort
from lava.magma.core.model.py.type import LavaPyType
from lava.magma.core.resources import CPU
from lava.magma.core.sync.protocols.loihi_protocol import LoihiProtocol

from lava_procs.memristor.process import FLOAT_CONSTS, STATE, MemristorArray
from memristor import equations as eq
from memristor import fixed_point as fp


class _Sending(PyLoihiProcessModel):
    def _send(self) -> None:
        self.g_out.send(self.g_lt + self.g_st)
        self.state_out.send(np.stack([self.g_lt, self.g_st, self.r, self.q]))


@implements(proc=MemristorArray, protocol=LoihiProtocol)
@requires(CPU)
@tag("floating_pt")
class PyMemristorModelFloat(_Sending):
    """float64; ``consts`` rows are FLOAT_CONSTS (retention factors exp(-dt/tau), a_st, eta_lt)."""

    s_in: PyInPort = LavaPyType(PyInPort.VEC_DENSE, float)
    lt_in: PyInPort = LavaPyType(PyInPort.VEC_DENSE, float)
    noise_in: PyInPort = LavaPyType(PyInPort.VEC_DENSE, float)
    g_out: PyOutPort = LavaPyType(PyOutPort.VEC_DENSE, float)
    state_out: PyOutPort = LavaPyType(PyOutPort.VEC_DENSE, float)
    g_lt: np.ndarray = LavaPyType(np.ndarray, float)
    g_st: np.ndarray = LavaPyType(np.ndarray, float)
    r: np.ndarray = LavaPyType(np.ndarray, float)
    q: np.ndarray = LavaPyType(np.ndarray, float)
    consts: np.ndarray = LavaPyType(np.ndarray, float)
    n_levels: int = LavaPyType(int, int)
    overflow: np.ndarray = LavaPyType(np.ndarray, int)

    def __init__(self, proc_params) -> None:
        super().__init__(proc_params)
        self.params = proc_params["params"]

    def run_spk(self) -> None:
        s, lt, noise = self.s_in.recv(), self.lt_in.recv() != 0, self.noise_in.recv()
        c = dict(zip(FLOAT_CONSTS, self.consts))
        state = {v: getattr(self, v) for v in STATE}
        if self.time_step > 1:
            state = eq.relax(state, {v: c[f"decay_{v}"] for v in eq.TIME_CONSTANTS})
        if np.any(s):
            state = eq.pulse(eq.NUMPY, self.params, c["a_st"], c["eta_lt"], state, s, lt, noise)
        for v in STATE:
            getattr(self, v)[:] = state[v]
        self._send()


_I24 = dict(precision=24)


@implements(proc=MemristorArray, protocol=LoihiProtocol)
@requires(CPU)
@tag("fixed_pt")
class PyMemristorModelBitAcc(_Sending):
    """Bit-accurate integers; ``consts`` rows are fixed_point.CONST_ORDER (12-bit decrements, Q16
    efficacies, conductances in LSB)."""

    s_in: PyInPort = LavaPyType(PyInPort.VEC_DENSE, np.int32, **_I24)
    lt_in: PyInPort = LavaPyType(PyInPort.VEC_DENSE, np.int32, precision=1)
    noise_in: PyInPort = LavaPyType(PyInPort.VEC_DENSE, np.int32, precision=16)
    g_out: PyOutPort = LavaPyType(PyOutPort.VEC_DENSE, np.int32, precision=25)
    state_out: PyOutPort = LavaPyType(PyOutPort.VEC_DENSE, np.int32, **_I24)
    g_lt: np.ndarray = LavaPyType(np.ndarray, np.int32, **_I24)
    g_st: np.ndarray = LavaPyType(np.ndarray, np.int32, **_I24)
    r: np.ndarray = LavaPyType(np.ndarray, np.int32, **_I24)
    q: np.ndarray = LavaPyType(np.ndarray, np.int32, **_I24)
    consts: np.ndarray = LavaPyType(np.ndarray, np.int32, **_I24)
    n_levels: int = LavaPyType(int, int)
    overflow: np.ndarray = LavaPyType(np.ndarray, np.int32)

    def __init__(self, proc_params) -> None:
        super().__init__(proc_params)
        self.spec = proc_params.get("spec") or fp.DEFAULT_SPEC

    def run_spk(self) -> None:
        s = self.s_in.recv().astype(fp.INT)
        lt = self.lt_in.recv() != 0
        noise = self.noise_in.recv().astype(fp.INT)
        k = self.time_step - 1
        c = {key: np.asarray(v, fp.INT) for key, v in zip(fp.CONST_ORDER, self.consts)}
        state = {key: getattr(self, key) for key in STATE}
        new, ovf = fp.step_int(state, c, k, s, lt, noise, int(self.n_levels), self.spec)
        for key in STATE:
            getattr(self, key)[:] = new[key]
        if ovf is not None:
            self._note_overflow(ovf, k)
        self._send()

    def _note_overflow(self, ovf: dict, k: int) -> None:
        count = int(sum(int(np.count_nonzero(m)) for m in ovf.values()))
        if count and self.overflow[0] == 0:
            var, dev = fp.first_overflow(ovf)
            self.overflow[1:] = (fp.OVERFLOW_ORDER.index(var), k, dev)
        self.overflow[0] += count
