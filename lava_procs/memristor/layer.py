"""Lava Process of a plastic layer's synapses as memristor device pairs, and its floating_pt model.

:class:`DeviceLayer` holds the devices of one PlasticSTPN node (:mod:`conversion.device_layer`:
a differential pair ``p`` / ``m`` per synapse, shape (H, K)) in Lava Vars:

* the volatile state, per side: ``g_st_p``, ``r_p``, ``q_p``, ``g_st_m``, ``r_m``, ``q_m``
* the frozen devices, per side: ``g_lt_*``, ``a_st_*``, ``eta_lt_*``, ``tau_*`` (time constant
  of g_st [s]), ``ret_*`` (its retention factor exp(-dt / tau) over one step) and ``live_*`` (1:
  takes pulses, 0: stuck; all 1 without faults); ``v_bias`` [V] of each synapse (both sides);
  ``gamma`` (H, K), the Hebbian gain of the rule
* ``step``: the agent step that indexes the cycle-to-cycle draws (:func:`conversion.device_layer.c2c_noise`)
* ``counts``: the counted device activity, in the order of :data:`conversion.simulator.DEVICE_COUNTERS`

Ports: ``h_in`` (H,), ``z_in`` (K,), ``norm_in`` (H,): the post activation h, the presynaptic
vector z and the row norm N of the step, from the neurons; ``f_out`` (H, K): the read-back
short-term weight F = (g_st,p - g_st,m) / g_unit after the step's pulses.

With ``fixed`` (a :class:`conversion.device_layer_fixed.FixedDevices`) the process also runs the
``fixed_pt`` model :class:`PyDeviceLayerFixed`: the state Vars hold the integer codes (G in
lsb_g, r and q in Q16), ``d_g_*`` the 12-bit decays and ``a_q_*`` the Q16 a_st of each device,
``gamma_mant`` the 8-bit gamma mantissas, ``overflow`` the number of budget events; the ports carry
integers (h, z at their fixed exponents, N the integer row norm, F in the layer's F format), and
the model steps :func:`conversion.device_layer_fixed.plasticity_int`, bit for bit the NumPy
``numpy-fixed`` device run.

The layer steps once per frame, at sub-step ``phase`` of ``period`` Lava time steps (the
sub-step at which its neurons compute): receive h, z, N; evaluate
:func:`conversion.device_layer.plasticity` on the Vars (relaxation, pulse inversion, the devices'
response, with :func:`conversion.device_layer.c2c_noise` of ``step``); count the pulses
(:func:`conversion.device_layer.pulse_tally`) and the bias energy
(:func:`conversion.device_layer.bias_energy`); send F in the same time step (a direct connection
delivers it then).  The model restates no equation.
"""
from __future__ import annotations

import numpy as np

import lava_procs  # noqa: F401  (installs the Python 3.11 compatibility hook before lava)
from lava.magma.core.decorator import implements, requires, tag
from lava.magma.core.model.py.model import PyLoihiProcessModel
from lava.magma.core.model.py.ports import PyInPort, PyOutPort
from lava.magma.core.model.py.type import LavaPyType
from lava.magma.core.process.ports.ports import InPort, OutPort
from lava.magma.core.process.process import AbstractProcess
from lava.magma.core.process.variable import Var
from lava.magma.core.resources import CPU
from lava.magma.core.sync.protocols.loihi_protocol import LoihiProtocol

from conversion import device_layer as dl
from conversion import device_layer_fixed as dlf
from conversion import fixed_point as fx
from conversion.simulator import DEVICE_COUNTERS
from mstpn_base.errors import ParameterError
from mstpn_base.ops import NUMPY

#: the frozen per-device arrays, per side (Var ``{name}_{side}``); ``ret`` is the g_st retention
FROZEN = ("g_lt", "a_st", "eta_lt", "tau", "ret", "live")
#: the counters that are whole numbers
INTEGER_COUNTERS = ("pulses", "potentiating", "depressing", "device_steps")


def var_name(v: str, side: str) -> str:
    return f"{v}_{side}"


class DeviceLayer(AbstractProcess):
    """The device pairs of a plastic layer (module docstring).

    ``devices``: the :class:`conversion.device_layer.Devices` of the layer (from
    :func:`conversion.device_layer.build`); ``gamma``: (H, K) Hebbian gain; ``phase``/``period``:
    the sub-step of each frame at which the layer steps; ``step0``: the agent step of the first
    frame (the index of its cycle-to-cycle draws); ``counts0``: the counters to continue from;
    ``fixed``: the integer devices (:func:`conversion.device_layer_fixed.build_fixed`) and
    ``gamma_mant`` (H, K) the integer gamma, for the ``fixed_pt`` model.
    """

    def __init__(self, *, devices: dl.Devices, gamma, phase: int, period: int, step0: int = 0,
                 counts0=None, name: str | None = None, fixed: dlf.FixedDevices | None = None,
                 gamma_mant=None) -> None:
        H, K = devices.W.shape
        gamma = np.broadcast_to(np.asarray(gamma, np.float64), (H, K)).copy()
        scalars = {}
        for side, d in devices.sides.items():
            if not isinstance(d["ret"]["g_st"], np.ndarray):
                raise ParameterError("DeviceLayer: the g_st retention must be a per-device array")
            scalars[side] = {v: f for v, f in d["ret"].items() if v != "g_st"}
            if any(isinstance(f, np.ndarray) for f in scalars[side].values()):
                raise ParameterError("DeviceLayer: the r and q retentions must be device-wide numbers")
        stuck = any("live" in d for d in devices.sides.values())
        super().__init__(mapping=devices.mapping, shape=(H, K), ret_scalars=scalars, stuck=stuck, phase=int(phase),
                         period=int(period), name=name, fixed=fixed)
        if fixed is not None and fixed.devices is not devices:
            raise ParameterError("DeviceLayer: fixed must be built from the same devices")
        state0 = np.zeros((H, K), np.int64) if fixed is not None else np.zeros((H, K))
        for side, d in devices.sides.items():
            init = {"g_lt": d["g_lt"], "a_st": d["a_st"], "eta_lt": d["eta_lt"], "tau": d["tau"],
                    "ret": d["ret"]["g_st"], "live": d.get("live", np.ones((H, K)))}
            for v in FROZEN:
                setattr(self, var_name(v, side), Var(shape=(H, K), init=np.array(init[v], np.float64)))
            for v in dl.DEVICE_STATE:
                setattr(self, var_name(v, side), Var(shape=(H, K), init=state0.copy()))
            c = None if fixed is None else fixed.consts[side]
            for v, key in (("d_g", "d_g"), ("a_q", "a")):
                setattr(self, var_name(v, side), Var(shape=(H, K), init=np.zeros((H, K), np.int64) if c is None
                                                     else np.array(c[key], np.int64)))
        gm = np.zeros((H, K), np.int64) if gamma_mant is None else np.broadcast_to(np.asarray(gamma_mant, np.int64), (H, K))
        self.gamma_mant = Var(shape=(H, K), init=np.array(gm))
        self.overflow = Var(shape=(1,), init=0)
        self.v_bias = Var(shape=(H, K), init=np.array(devices.v_bias, np.float64))
        self.gamma = Var(shape=(H, K), init=gamma)
        self.step = Var(shape=(1,), init=int(step0))
        counts = np.zeros(len(DEVICE_COUNTERS)) if counts0 is None else np.asarray(
            [counts0[k] for k in DEVICE_COUNTERS], np.float64)
        self.counts = Var(shape=(len(DEVICE_COUNTERS),), init=counts)
        self.h_in = InPort(shape=(H,))
        self.z_in = InPort(shape=(K,))
        self.norm_in = InPort(shape=(H,))
        self.f_out = OutPort(shape=(H, K))


def counters(values) -> dict:
    """The ``counts`` Var as the dict of :data:`conversion.simulator.DEVICE_COUNTERS` (whole
    numbers as int, energies and duration as float)."""
    v = np.asarray(values, np.float64).reshape(-1)
    return {k: (int(round(x)) if k in INTEGER_COUNTERS else float(x)) for k, x in zip(DEVICE_COUNTERS, v)}


_F = LavaPyType(np.ndarray, float)


class _DeviceLayerModel(PyLoihiProcessModel):
    """What the floating_pt and fixed_pt models share: the layer's sub-step, the device state read
    from and written back to the Vars, the counters, the F sent back."""

    def _in_phase(self) -> bool:
        return (self.time_step - 1) % self.my_period == self.my_phase

    def _state(self, dtype) -> dict:
        """{side: {variable: (1, H, K) array}} of the volatile device state Vars."""
        return {side: {v: np.asarray(getattr(self, var_name(v, side)), dtype)[None] for v in dl.DEVICE_STATE}
                for side in dl.SIDES}

    def _finish(self, new: dict, F, tally: dict, bias_energy_J, dt: float) -> None:
        """Store the step's device state and counters in the Vars, advance the step, send F."""
        c = dict(zip(DEVICE_COUNTERS, self.counts))
        dl.add_step_counts(c, tally, bias_energy_J, dt)
        self.counts[:] = [c[k] for k in DEVICE_COUNTERS]
        for side, d in new.items():
            for v, a in d.items():
                getattr(self, var_name(v, side))[:] = a[0]
        self.step[0] += 1
        self.f_out.send(F[0])


@implements(proc=DeviceLayer, protocol=LoihiProtocol)
@requires(CPU)
@tag("floating_pt")
class PyDeviceLayerFloat(_DeviceLayerModel):
    """float64: :func:`conversion.device_layer.plasticity` (NumPy ops) on the Vars, batch 1."""

    h_in: PyInPort = LavaPyType(PyInPort.VEC_DENSE, float)
    z_in: PyInPort = LavaPyType(PyInPort.VEC_DENSE, float)
    norm_in: PyInPort = LavaPyType(PyInPort.VEC_DENSE, float)
    f_out: PyOutPort = LavaPyType(PyOutPort.VEC_DENSE, float)
    g_st_p: np.ndarray = _F
    r_p: np.ndarray = _F
    q_p: np.ndarray = _F
    g_st_m: np.ndarray = _F
    r_m: np.ndarray = _F
    q_m: np.ndarray = _F
    g_lt_p: np.ndarray = _F
    a_st_p: np.ndarray = _F
    eta_lt_p: np.ndarray = _F
    tau_p: np.ndarray = _F
    ret_p: np.ndarray = _F
    live_p: np.ndarray = _F
    g_lt_m: np.ndarray = _F
    a_st_m: np.ndarray = _F
    eta_lt_m: np.ndarray = _F
    tau_m: np.ndarray = _F
    ret_m: np.ndarray = _F
    live_m: np.ndarray = _F
    v_bias: np.ndarray = _F
    gamma: np.ndarray = _F
    step: np.ndarray = LavaPyType(np.ndarray, int)
    counts: np.ndarray = _F
    d_g_p: np.ndarray = LavaPyType(np.ndarray, np.int64)     # the fixed_pt model's Vars (unused here)
    a_q_p: np.ndarray = LavaPyType(np.ndarray, np.int64)
    d_g_m: np.ndarray = LavaPyType(np.ndarray, np.int64)
    a_q_m: np.ndarray = LavaPyType(np.ndarray, np.int64)
    gamma_mant: np.ndarray = LavaPyType(np.ndarray, np.int64)
    overflow: np.ndarray = LavaPyType(np.ndarray, int)

    def __init__(self, proc_params) -> None:
        super().__init__(proc_params)
        self.mapping = proc_params["mapping"]
        self.my_phase, self.my_period = int(proc_params["phase"]), int(proc_params["period"])
        self.ret_scalars, self.stuck = proc_params["ret_scalars"], bool(proc_params["stuck"])
        self.shape = (1, *proc_params["shape"])   # batch 1, as the reference simulator's (B, H, K)

    def _devices(self) -> dict:
        """:meth:`conversion.device_layer.Devices.arrays` of the Vars."""
        out = {}
        for side in dl.SIDES:
            g = lambda v: getattr(self, var_name(v, side))  # noqa: E731
            out[side] = {"g_lt": g("g_lt"), "a_st": g("a_st"), "eta_lt": g("eta_lt"), "tau": g("tau"),
                         "v_bias": self.v_bias, "ret": {"g_st": g("ret"), **self.ret_scalars[side]}}
            if self.stuck:
                out[side]["live"] = g("live")
        return out

    def run_spk(self) -> None:
        if not self._in_phase():
            return
        h, z, norm = self.h_in.recv(), self.z_in.recv(), self.norm_in.recv()
        m, dev = self.mapping, self._devices()
        state = self._state(np.float64)
        bias = dl.bias_energy(m, dev, state)
        new, F, pulses = dl.plasticity(NUMPY, m, dev, state, np.asarray(norm, np.float64)[None, :, None],
                                       np.asarray(h, np.float64)[None, :, None], np.asarray(z, np.float64)[None, None, :],
                                       self.gamma, dl.c2c_noise(m, int(self.step[0]), self.shape))
        self._finish(new, F, dl.pulse_tally(m, pulses), bias, m.dt)


_I = LavaPyType(np.ndarray, np.int64)


@implements(proc=DeviceLayer, protocol=LoihiProtocol)
@requires(CPU)
@tag("fixed_pt")
class PyDeviceLayerFixed(_DeviceLayerModel):
    """Integers: :func:`conversion.device_layer_fixed.plasticity_int` on the Vars, batch 1."""

    h_in: PyInPort = LavaPyType(PyInPort.VEC_DENSE, np.int64)
    z_in: PyInPort = LavaPyType(PyInPort.VEC_DENSE, np.int64)
    norm_in: PyInPort = LavaPyType(PyInPort.VEC_DENSE, np.int64)
    f_out: PyOutPort = LavaPyType(PyOutPort.VEC_DENSE, np.int64)
    g_st_p: np.ndarray = _I
    r_p: np.ndarray = _I
    q_p: np.ndarray = _I
    g_st_m: np.ndarray = _I
    r_m: np.ndarray = _I
    q_m: np.ndarray = _I
    d_g_p: np.ndarray = _I
    a_q_p: np.ndarray = _I
    d_g_m: np.ndarray = _I
    a_q_m: np.ndarray = _I
    gamma_mant: np.ndarray = _I
    g_lt_p: np.ndarray = _F
    a_st_p: np.ndarray = _F
    eta_lt_p: np.ndarray = _F
    tau_p: np.ndarray = _F
    ret_p: np.ndarray = _F
    live_p: np.ndarray = _F
    g_lt_m: np.ndarray = _F
    a_st_m: np.ndarray = _F
    eta_lt_m: np.ndarray = _F
    tau_m: np.ndarray = _F
    ret_m: np.ndarray = _F
    live_m: np.ndarray = _F
    v_bias: np.ndarray = _F
    gamma: np.ndarray = _F
    step: np.ndarray = LavaPyType(np.ndarray, int)
    counts: np.ndarray = _F
    overflow: np.ndarray = LavaPyType(np.ndarray, int)

    def __init__(self, proc_params) -> None:
        super().__init__(proc_params)
        self.fixed = proc_params["fixed"]
        if self.fixed is None:
            raise ParameterError("DeviceLayer: the fixed_pt model needs fixed=build_fixed(...)")
        self.my_phase, self.my_period = int(proc_params["phase"]), int(proc_params["period"])
        self.shape = (1, *proc_params["shape"])

    def _devices(self) -> dlf.FixedDevices:
        """The integer devices with the Vars' decays, efficacies and stuck devices."""
        import dataclasses

        fd, consts, live = self.fixed, {}, {}
        for side in dl.SIDES:
            consts[side] = dict(fd.consts[side], d_g=getattr(self, var_name("d_g", side)),
                                a=getattr(self, var_name("a_q", side)))
            live[side] = None if fd.live[side] is None else getattr(self, var_name("live", side)) != 0
        return dataclasses.replace(fd, consts=consts, live=live)

    def run_spk(self) -> None:
        if not self._in_phase():
            return
        h, z, norm = (np.asarray(p.recv(), np.int64) for p in (self.h_in, self.z_in, self.norm_in))
        fd, k = self._devices(), int(self.step[0])
        state = self._state(np.int64)
        bias = dlf.bias_energy_int(fd, state)
        monitor = fx.OverflowMonitor()
        new, F, pulses = dlf.plasticity_int(fd, state, norm[None, :, None], h[None, :, None], z[None, None, :],
                                            self.gamma_mant, dlf.c2c_noise_int(fd.mapping, k, self.shape),
                                            monitor, "stpn", k)
        self.overflow[0] += sum(monitor.counts.values())
        self._finish(new, F, dlf.pulse_tally_int(fd, pulses), bias, fd.mapping.dt)
