"""Differentiable PyTorch twin of :mod:`memristor.reference` (same equations, batched, any dtype).

State tensors have shape (..., n_devices); all operations are elementwise, so a leading batch
dimension (e.g. a population of synapse arrays during training) is free.  Gradients flow through
the soft-bounded updates; quantisation of g_lt uses a straight-through estimator.
"""
from __future__ import annotations

import math

import numpy as np
import torch

from memristor.params import DeviceParams
from memristor.reference import STATE_VARS, DeviceBatch, Drive, Trace, check_shapes, initial_state


def quantise_lt_ste(p: DeviceParams, g_lt: torch.Tensor) -> torch.Tensor:
    """quantise to n_levels (round half up) in the forward pass, identity gradient backward."""
    if p.n_levels == 0:
        return g_lt
    step = (p.g_max - p.g_min) / (p.n_levels - 1)
    q = p.g_min + torch.floor((g_lt - p.g_min) / step + 0.5) * step
    return g_lt + (q - g_lt).detach()


def relax(p: DeviceParams, state: dict, lam_st: torch.Tensor, dt: float) -> dict:
    """Exact relaxation over ``dt``: g_st *= lam_st (= exp(-dt/tau)), r and q decay."""
    return dict(g_lt=state["g_lt"], g_st=state["g_st"] * lam_st,
                r=state["r"] * math.exp(-dt / p.tau_ppf), q=state["q"] * math.exp(-dt / p.tau_meta))


def apply_pulses(p: DeviceParams, a_st, eta_lt, state: dict, s, lt, noise) -> dict:
    """Pulse update (soft bounds, facilitation, depletion, long-term programming); see reference."""
    g_lt, g_st, r, q = state["g_lt"], state["g_st"], state["r"], state["q"]
    mag = s.abs()
    pos, neg, pulsed = s > 0, s < 0, s != 0
    k = torch.clamp(a_st * mag * (1.0 + p.ppf_gain * r) * (1.0 - q) * noise, 0.0, 1.0)
    g_st = torch.where(pos, g_st + k * (p.g_st_max - g_st), torch.where(neg, g_st - k * g_st, g_st))
    k_lt = torch.where(lt, torch.clamp(eta_lt * mag * noise, 0.0, 1.0), torch.zeros_like(mag))
    g_lt_new = torch.where(pos, g_lt + k_lt * (p.g_max - g_lt), g_lt - k_lt * (g_lt - p.g_min))
    g_lt = torch.where(lt, quantise_lt_ste(p, g_lt_new), g_lt)
    r = torch.where(pulsed, r + 1.0, r)
    q = torch.where(pulsed, q + p.meta_depletion * (1.0 - q), q)
    return dict(g_lt=g_lt, g_st=g_st, r=r, q=q)


def simulate(batch: DeviceBatch, drive: Drive, g_lt0=None, dtype=torch.float64, device="cpu") -> Trace:
    """Run the twin over ``drive``; returns a NumPy :class:`Trace` (same layout as the reference)."""
    check_shapes(batch, drive)
    p = batch.params
    t = lambda a: torch.as_tensor(np.asarray(a), dtype=dtype, device=device)  # noqa: E731
    state = {k: t(v) for k, v in initial_state(batch, g_lt0).items()}
    lam = torch.exp(-drive.dt / t(batch.tau))
    a_st, eta_lt = t(batch.a_st), t(batch.eta_lt)
    s_all, noise_all = t(drive.s), t(drive.noise)
    lt_all = torch.as_tensor(drive.lt, device=device)
    rec = {v: torch.empty((drive.n_steps, batch.n), dtype=dtype, device=device) for v in STATE_VARS}
    with torch.no_grad():
        for k in range(drive.n_steps):
            if k:
                state = relax(p, state, lam, drive.dt)
            state = apply_pulses(p, a_st, eta_lt, state, s_all[k], lt_all[k], noise_all[k])
            for v in STATE_VARS:
                rec[v][k] = state[v]
    return Trace(drive.times, **{v: rec[v].cpu().numpy() for v in STATE_VARS}, backend="torch")
