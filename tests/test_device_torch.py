"""memristor.torch_model: the PyTorch twin equals the NumPy reference; gradients are right."""
import numpy as np
import pytest
import torch

from memristor import equations as eq
from memristor import reference as ref
from memristor import torch_model as tm
from memristor.params import DeviceParams

P = DeviceParams()


def scenario(p=P, n_steps=400):
    """5 devices at 5 biases, d2d and c2c variability: sub-threshold trains (facilitation and
    depletion), paired pulses, long-term potentiation then depression on the 64 levels, a volatile
    depression, then relaxation."""
    batch = ref.make_devices(p, [0.0, 0.15, 0.3, 0.45, 0.6], seed=4)
    w = p.t_ref
    pulses = [(5 + 6 * i, 0, 0.9, w) for i in range(10)]
    pulses += [(t + 40 * i, 1, 1.0, 2 * w) for i in range(5) for t in (10, 12)]
    pulses += [(20 + 5 * i, 2, 1.3, w / 4) for i in range(15)] + [(100 + 5 * i, 2, -1.3, w / 4) for i in range(15)]
    pulses += [(3 + i, 3, 0.8, w) for i in range(10)] + [(50 + 4 * i, 3, -1.0, w) for i in range(5)]
    pulses += [(7 + 9 * i, 4, 1.25, w / 2) for i in range(8)]
    drive = ref.make_drive(p, n_steps, 5, 0.01, [pl for pl in pulses if pl[0] < n_steps], seed=6)
    return batch, drive, [1e-9, 2e-9, 0.5e-9, 6e-9, 3e-9]


def rel_err(a, b):
    return np.max(np.abs(a - b)) / np.max(np.abs(b))


def test_float64_twin_equals_reference():
    """Same float64 operations: 1e-12 relative (observed: a few ulp)."""
    batch, drive, g0 = scenario()
    assert drive.lt.any() and (drive.s < 0).any() and np.ptp(batch.tau) > 0
    want = ref.simulate(batch, drive, g0)
    got = tm.simulate(batch, drive, g0, dtype=torch.float64)
    assert got.backend == "torch"
    for var in ref.STATE_VARS:
        assert np.max(np.abs(getattr(want, var))) > 0
        assert rel_err(getattr(got, var), getattr(want, var)) <= 1e-12, var


def test_float32_twin_within_rounding_tolerance():
    """float32: eps = 6e-8 per operation; a state passes through <= ~10 roundings per step over 400
    steps, but the multiplicative decays and soft-bounded updates are contractions, so errors do not
    grow beyond ~n eps ~ 2.4e-5.  Tolerance 1e-4 relative.  g_lt is checked to one quantisation level
    too: a float32 rounding may move a value sitting within ~eps of a level boundary to the next
    level (does not happen in this scenario, checked as the same 1e-4)."""
    batch, drive, g0 = scenario()
    want = ref.simulate(batch, drive, g0)
    got = tm.simulate(batch, drive, g0, dtype=torch.float32)
    for var in ref.STATE_VARS:
        assert rel_err(getattr(got, var), getattr(want, var)) <= 1e-4, var
    assert rel_err(got.g_st, want.g_st) > 0  # it really ran in float32


def _final_g_st_torch(batch, drive, a_st):
    """Differentiable run of the twin's step functions; returns the final g_st (tensor)."""
    p = batch.params
    t = lambda x: torch.as_tensor(np.asarray(x), dtype=torch.float64)  # noqa: E731
    state = {k: t(v) for k, v in ref.initial_state(batch, None).items()}
    dec = eq.retention(tm.TORCH, p, t(batch.tau), drive.dt)
    eta = t(batch.eta_lt)
    for k in range(drive.n_steps):
        if k:
            state = eq.relax(state, dec)
        state = tm.apply_pulses(p, a_st, eta, state, t(drive.s[k]), torch.as_tensor(drive.lt[k]), t(drive.noise[k]))
    return state["g_st"]


def test_gradient_wrt_a_st_matches_finite_difference():
    """d g_st(T) / d a_st by autograd vs a central difference of the NumPy reference (h = 1e-6
    relative: truncation ~h^2, rounding ~eps/h ~ 2e-10 relative; tolerance 1e-6)."""
    batch, drive, _ = scenario(n_steps=150)
    tr = ref.simulate(batch, drive)  # no clip(k, 0, 1) kink on this path: k = a |s| f mu n < 1 at every pulse
    r_prev = np.vstack([np.zeros((1, batch.n)), tr.r[:-1] * np.exp(-drive.dt / P.tau_ppf)])
    q_prev = np.vstack([np.zeros((1, batch.n)), tr.q[:-1] * np.exp(-drive.dt / P.tau_meta)])
    kraw = batch.a_st * np.abs(drive.s) * (1 + P.ppf_gain * r_prev) * (1 - q_prev) * drive.noise
    assert 0.05 < kraw.max() < 1
    a = torch.tensor(batch.a_st, dtype=torch.float64, requires_grad=True)
    g = _final_g_st_torch(batch, drive, a)
    grad = torch.autograd.grad(g.sum(), a)[0].numpy()
    # each device's final g_st depends only on its own a_st: compare per device
    fd = np.empty(batch.n)
    for i in range(batch.n):
        h = 1e-6 * batch.a_st[i]
        vals = []
        for sgn in (+1, -1):
            a2 = batch.a_st.copy()
            a2[i] += sgn * h
            b2 = ref.DeviceBatch(batch.params, batch.v_bias, batch.tau, a2, batch.eta_lt)
            vals.append(ref.simulate(b2, drive).g_st[-1, i])
        fd[i] = (vals[0] - vals[1]) / (2 * h)
    assert np.all(np.abs(fd) > 0)
    assert grad == pytest.approx(fd, rel=1e-6)
    assert torch.allclose(g, torch.as_tensor(ref.simulate(batch, drive).g_st[-1]), rtol=1e-12, atol=0)
