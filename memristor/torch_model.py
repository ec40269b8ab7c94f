"""Differentiable PyTorch twin of :mod:`memristor.reference`: the equations of
:mod:`memristor.equations` evaluated on tensors (batched, any dtype).

State tensors have shape (..., n_devices); all operations are elementwise, so a leading batch
dimension (e.g. a population of synapse arrays during training) is free.  Gradients flow through
the soft-bounded updates; quantisation of g_lt uses a straight-through estimator.
"""
from __future__ import annotations

import numpy as np
import torch

from memristor import equations as eq
from mstpn_base.ops import torch_ops
from memristor.params import DeviceParams
from memristor.reference import STATE_VARS, DeviceBatch, Drive, Trace, check_shapes, initial_state


#: the operations of :mod:`memristor.equations` on tensors (straight-through quantisation)
TORCH = torch_ops()


def apply_pulses(p: DeviceParams, a_st, eta_lt, state: dict, s, lt, noise) -> dict:
    """Pulse update (:func:`memristor.equations.pulse`) on tensors."""
    return eq.pulse(TORCH, p, a_st, eta_lt, state, s, lt, noise)


def simulate(batch: DeviceBatch, drive: Drive, g_lt0=None, dtype=torch.float64, device="cpu") -> Trace:
    """Run the twin over ``drive``; returns a NumPy :class:`Trace` (same layout as the reference)."""
    check_shapes(batch, drive)
    p = batch.params
    t = lambda a: torch.as_tensor(np.asarray(a), dtype=dtype, device=device)  # noqa: E731
    state = {k: t(v) for k, v in initial_state(batch, g_lt0).items()}
    dec = eq.retention(TORCH, p, t(batch.tau), drive.dt)
    a_st, eta_lt = t(batch.a_st), t(batch.eta_lt)
    s_all, noise_all = t(drive.s), t(drive.noise)
    lt_all = torch.as_tensor(drive.lt, device=device)
    rec = {v: torch.empty((drive.n_steps, batch.n), dtype=dtype, device=device) for v in STATE_VARS}
    with torch.no_grad():
        for k in range(drive.n_steps):
            if k:
                state = eq.relax(state, dec)
            state = apply_pulses(p, a_st, eta_lt, state, s_all[k], lt_all[k], noise_all[k])
            for v in STATE_VARS:
                rec[v][k] = state[v]
    return Trace(drive.times, **{v: rec[v].cpu().numpy() for v in STATE_VARS}, backend="torch")
