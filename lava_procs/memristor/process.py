"""Lava Process of an array of SrTiO3 memristive synapses (equations: memristor.reference).

Ports (one value per device per time step; Lava time step ts carries drive row k = ts - 1):

* ``s_in``     signed pulse efficacy s (0 = no pulse); fixed_pt: Q12 integer (24-bit payload)
* ``lt_in``    1 where the pulse also programs g_lt (|V| >= v_lt_threshold), else 0
* ``noise_in`` cycle-to-cycle factor n (1 without noise); fixed_pt: Q12 integer
* ``g_out``    conductance G = g_lt + g_st after the step [S]; fixed_pt: integer in lsb_g
* ``state_out`` (4, n): rows g_lt, g_st, r, q after the step (for recording; lava's Var.get()
  sends an array element by element, ~18 s for 1000 steps x 256 devices x 4 states, while one
  message per step through an Extractor costs ~1 ms)

Var meaning depends on the model, as for lava's LIF (du: float fraction vs 12-bit integer):
floating_pt holds SI values and retention factors ``decay_* = exp(-dt/tau)``; fixed_pt holds the
integers of :func:`memristor.fixed_point.quantize` and 12-bit decrements ``decay_* = d``.
``overflow`` = [events, variable index in fixed_point.OVERFLOW_ORDER, step, device] of the first
fixed-point overflow (-1: none).
"""
from __future__ import annotations

import numpy as np

import lava_procs  # noqa: F401  (installs the Python 3.11 compatibility hook before lava)
from lava.magma.core.process.ports.ports import InPort, OutPort
from lava.magma.core.process.process import AbstractProcess
from lava.magma.core.process.variable import Var

PER_DEVICE = ("decay_g", "decay_r", "decay_q", "a_st", "eta_lt", "ppf_gain", "meta_depletion",
              "g_min", "g_max", "g_st_max")
STATE = ("g_lt", "g_st", "r", "q")


class MemristorArray(AbstractProcess):
    """``shape=(n,)`` devices; every keyword in PER_DEVICE and STATE is a scalar or (n,) array.

    ``n_levels``: long-term levels (0 = continuous);
    ``spec``: the :class:`memristor.fixed_point.FixedPointSpec` of the fixed_pt model.
    """

    def __init__(self, *, shape: tuple, n_levels: int = 0, spec=None,
                 name: str | None = None, **values) -> None:
        missing = set(PER_DEVICE) - set(values)
        unknown = set(values) - set(PER_DEVICE) - set(STATE)
        if missing or unknown:
            raise TypeError(f"MemristorArray: missing {sorted(missing)}, unknown {sorted(unknown)}")
        if len(shape) != 1:
            raise ValueError(f"MemristorArray shape must be (n,), got {shape}")
        super().__init__(shape=shape, n_levels=n_levels, spec=spec, name=name)
        n = shape[0]
        full = lambda v: np.broadcast_to(np.asarray(v), shape).copy()  # noqa: E731
        for key in STATE:
            setattr(self, key, Var(shape=shape, init=full(values.get(key, 0))))
        for key in PER_DEVICE:
            setattr(self, key, Var(shape=shape, init=full(values[key])))
        self.n_levels = Var(shape=(1,), init=int(n_levels))
        self.overflow = Var(shape=(4,), init=np.array([0, -1, -1, -1]))
        self.s_in = InPort(shape=shape)
        self.lt_in = InPort(shape=shape)
        self.noise_in = InPort(shape=shape)
        self.g_out = OutPort(shape=shape)
        self.state_out = OutPort(shape=(len(STATE), n))
