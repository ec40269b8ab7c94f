"""Lava Process of an array of SrTiO3 memristive synapses (equations: memristor.reference).

Ports (one value per device per time step; Lava time step ts carries drive row k = ts - 1):

* ``s_in``     signed pulse efficacy s (0 = no pulse); fixed_pt: Q12 integer (24-bit payload)
* ``lt_in``    1 where the pulse also programs g_lt (|V| >= v_lt_threshold), else 0
* ``noise_in`` cycle-to-cycle factor n (1 without noise); fixed_pt: Q12 integer
* ``g_out``    conductance G = g_lt + g_st after the step [S]; fixed_pt: integer in lsb_g
* ``state_out`` (4, n): rows g_lt, g_st, r, q after the step (for recording; lava's Var.get()
  sends an array element by element, ~18 s for 1000 steps x 256 devices x 4 states, while one
  message per step through an Extractor costs ~1 ms)

Vars: the state ``g_lt``, ``g_st``, ``r``, ``q`` (n,) and the per-device constants ``consts``
(rows x n).  Their meaning depends on the model, as for lava's LIF (du: float fraction vs 12-bit
integer): floating_pt holds SI values, and ``consts`` rows are :data:`FLOAT_CONSTS` (the exact
retention factors exp(-dt/tau) of g_st, r, q and the efficacies a_st, eta_lt), while the
device-wide parameters come with the process (``params``, a DeviceParams) and enter the equations
of :mod:`memristor.equations` directly; fixed_pt holds the integers of
:func:`memristor.fixed_point.integer_problem` (``consts`` rows in the order of :data:`FIXED_CONSTS`).
``overflow`` = [events, variable index in fixed_point.OVERFLOW_ORDER, step, device] of the first
fixed-point overflow (-1: none).
"""
from __future__ import annotations

import numpy as np

import lava_procs  # noqa: F401  (installs the Python 3.11 compatibility hook before lava)
from lava.magma.core.process.ports.ports import InPort, OutPort
from lava.magma.core.process.process import AbstractProcess
from lava.magma.core.process.variable import Var

from memristor import equations as eq

STATE = eq.STATE_VARS
#: rows of ``consts`` in the floating_pt model: retention factors, then efficacies
FLOAT_CONSTS = tuple(f"decay_{v}" for v in eq.TIME_CONSTANTS) + ("a_st", "eta_lt")


class MemristorArray(AbstractProcess):
    """``shape=(n,)`` devices.

    ``consts``: (rows, n) per-device constants (see module docstring); ``state``: dict of initial
    (n,) arrays (default 0); ``params``: the DeviceParams (floating_pt); ``n_levels``: long-term
    levels (0 = continuous); ``spec``: the :class:`memristor.fixed_point.FixedPointSpec` (fixed_pt).
    """

    def __init__(self, *, shape: tuple, consts, state: dict | None = None, params=None, n_levels: int = 0,
                 spec=None, name: str | None = None) -> None:
        if len(shape) != 1:
            raise ValueError(f"MemristorArray shape must be (n,), got {shape}")
        consts = np.asarray(consts)
        if consts.ndim != 2 or consts.shape[1] != shape[0]:
            raise ValueError(f"MemristorArray consts must be (rows, {shape[0]}), got {consts.shape}")
        state = state or {}
        unknown = set(state) - set(STATE)
        if unknown:
            raise TypeError(f"MemristorArray: unknown state {sorted(unknown)}")
        super().__init__(shape=shape, params=params, n_levels=n_levels, spec=spec, name=name)
        n = shape[0]
        for key in STATE:
            setattr(self, key, Var(shape=shape, init=np.broadcast_to(np.asarray(state.get(key, 0)), shape).copy()))
        self.consts = Var(shape=consts.shape, init=consts.copy())
        self.n_levels = Var(shape=(1,), init=int(n_levels))
        self.overflow = Var(shape=(4,), init=np.array([0, -1, -1, -1]))
        self.s_in = InPort(shape=shape)
        self.lt_in = InPort(shape=shape)
        self.noise_in = InPort(shape=shape)
        self.g_out = OutPort(shape=shape)
        self.state_out = OutPort(shape=(len(STATE), n))
