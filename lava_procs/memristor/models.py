"""ProcessModels of MemristorArray: float64 (``floating_pt``) and bit-accurate (``fixed_pt``).

Step order per Lava time step ts (drive row k = ts - 1), as in memristor.reference.simulate:
receive the three inputs; if k >= 1 decay; if any s != 0 apply pulses; send G and the state.
The fixed_pt model runs the integer kernel of :mod:`memristor.fixed_point` (the specification
and its oracle share one implementation; this model moves Var values through it).
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

from lava_procs.memristor.process import MemristorArray
from memristor import fixed_point as fp


class _Sending(PyLoihiProcessModel):
    def _send(self) -> None:
        self.g_out.send(self.g_lt + self.g_st)
        self.state_out.send(np.stack([self.g_lt, self.g_st, self.r, self.q]))


@implements(proc=MemristorArray, protocol=LoihiProtocol)
@requires(CPU)
@tag("floating_pt")
class PyMemristorModelFloat(_Sending):
    """float64; decay_* are the exact retention factors exp(-dt/tau)."""

    s_in: PyInPort = LavaPyType(PyInPort.VEC_DENSE, float)
    lt_in: PyInPort = LavaPyType(PyInPort.VEC_DENSE, float)
    noise_in: PyInPort = LavaPyType(PyInPort.VEC_DENSE, float)
    g_out: PyOutPort = LavaPyType(PyOutPort.VEC_DENSE, float)
    state_out: PyOutPort = LavaPyType(PyOutPort.VEC_DENSE, float)
    g_lt: np.ndarray = LavaPyType(np.ndarray, float)
    g_st: np.ndarray = LavaPyType(np.ndarray, float)
    r: np.ndarray = LavaPyType(np.ndarray, float)
    q: np.ndarray = LavaPyType(np.ndarray, float)
    decay_g: np.ndarray = LavaPyType(np.ndarray, float)
    decay_r: np.ndarray = LavaPyType(np.ndarray, float)
    decay_q: np.ndarray = LavaPyType(np.ndarray, float)
    a_st: np.ndarray = LavaPyType(np.ndarray, float)
    eta_lt: np.ndarray = LavaPyType(np.ndarray, float)
    ppf_gain: np.ndarray = LavaPyType(np.ndarray, float)
    meta_depletion: np.ndarray = LavaPyType(np.ndarray, float)
    g_min: np.ndarray = LavaPyType(np.ndarray, float)
    g_max: np.ndarray = LavaPyType(np.ndarray, float)
    g_st_max: np.ndarray = LavaPyType(np.ndarray, float)
    n_levels: int = LavaPyType(int, int)
    overflow: np.ndarray = LavaPyType(np.ndarray, int)

    def run_spk(self) -> None:
        s, lt, noise = self.s_in.recv(), self.lt_in.recv() != 0, self.noise_in.recv()
        k = self.time_step - 1
        if k:
            self.g_st[:] = self.g_st * self.decay_g
            self.r[:] = self.r * self.decay_r
            self.q[:] = self.q * self.decay_q
        if np.any(s):
            self._pulse(s, lt, noise)
        self._send()

    def _pulse(self, s, lt, noise) -> None:
        """Soft-bounded pulse update (memristor.reference, step 2)."""
        g_lt, g_st, r, q = self.g_lt.copy(), self.g_st.copy(), self.r.copy(), self.q.copy()
        pulsed, mag = s != 0, np.abs(s)
        k = np.clip(self.a_st * mag * (1.0 + self.ppf_gain * r) * (1.0 - q) * noise, 0.0, 1.0)
        self.g_st[:] = np.where(s > 0, g_st + k * (self.g_st_max - g_st), np.where(s < 0, g_st - k * g_st, g_st))
        k_lt = np.clip(self.eta_lt * mag * noise, 0.0, 1.0)
        g_new = np.where(s > 0, g_lt + k_lt * (self.g_max - g_lt), g_lt - k_lt * (g_lt - self.g_min))
        if self.n_levels:
            step = (self.g_max - self.g_min) / (self.n_levels - 1)
            g_new = self.g_min + np.floor((g_new - self.g_min) / step + 0.5) * step
        self.g_lt[:] = np.where(lt & pulsed, g_new, g_lt)
        self.r[:] = np.where(pulsed, r + 1.0, r)
        self.q[:] = np.where(pulsed, q + self.meta_depletion * (1.0 - q), q)


_I24 = dict(precision=24)


@implements(proc=MemristorArray, protocol=LoihiProtocol)
@requires(CPU)
@tag("fixed_pt")
class PyMemristorModelBitAcc(_Sending):
    """Bit-accurate integers (memristor.fixed_point); decay_* are 12-bit decrements d."""

    s_in: PyInPort = LavaPyType(PyInPort.VEC_DENSE, np.int32, **_I24)
    lt_in: PyInPort = LavaPyType(PyInPort.VEC_DENSE, np.int32, precision=1)
    noise_in: PyInPort = LavaPyType(PyInPort.VEC_DENSE, np.int32, precision=16)
    g_out: PyOutPort = LavaPyType(PyOutPort.VEC_DENSE, np.int32, precision=25)
    state_out: PyOutPort = LavaPyType(PyOutPort.VEC_DENSE, np.int32, **_I24)
    g_lt: np.ndarray = LavaPyType(np.ndarray, np.int32, **_I24)
    g_st: np.ndarray = LavaPyType(np.ndarray, np.int32, **_I24)
    r: np.ndarray = LavaPyType(np.ndarray, np.int32, **_I24)
    q: np.ndarray = LavaPyType(np.ndarray, np.int32, **_I24)
    decay_g: np.ndarray = LavaPyType(np.ndarray, np.int32, precision=12)
    decay_r: np.ndarray = LavaPyType(np.ndarray, np.int32, precision=12)
    decay_q: np.ndarray = LavaPyType(np.ndarray, np.int32, precision=12)
    a_st: np.ndarray = LavaPyType(np.ndarray, np.int32, **_I24)
    eta_lt: np.ndarray = LavaPyType(np.ndarray, np.int32, **_I24)
    ppf_gain: np.ndarray = LavaPyType(np.ndarray, np.int32, **_I24)
    meta_depletion: np.ndarray = LavaPyType(np.ndarray, np.int32, **_I24)
    g_min: np.ndarray = LavaPyType(np.ndarray, np.int32, **_I24)
    g_max: np.ndarray = LavaPyType(np.ndarray, np.int32, **_I24)
    g_st_max: np.ndarray = LavaPyType(np.ndarray, np.int32, **_I24)
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
        if k:
            for key, d in (("g_st", self.decay_g), ("r", self.decay_r), ("q", self.decay_q)):
                getattr(self, key)[:] = fp.decay_int(getattr(self, key), d, self.spec)
        if np.any(s):
            c = dict(d_g=self.decay_g, a=self.a_st, eta=self.eta_lt, ppf=self.ppf_gain,
                     md=self.meta_depletion, g_min=self.g_min, g_max=self.g_max, g_st_max=self.g_st_max)
            c = {key: np.asarray(v, fp.INT) for key, v in c.items()}
            state = {key: getattr(self, key) for key in ("g_lt", "g_st", "r", "q")}
            new, ovf = fp.pulse_int(state, c, s, lt, noise, int(self.n_levels), self.spec)
            for key, v in new.items():
                getattr(self, key)[:] = v
            self._note_overflow(ovf, k)
        self._send()

    def _note_overflow(self, ovf: dict, k: int) -> None:
        count = int(sum(int(np.count_nonzero(m)) for m in ovf.values()))
        if count and self.overflow[0] == 0:
            var, dev = fp.first_overflow(ovf)
            self.overflow[1:] = (fp.OVERFLOW_ORDER.index(var), k, dev)
        self.overflow[0] += count
