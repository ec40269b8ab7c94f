"""The fused kernels of the reference simulator's float path and of the fixed-point "round"
sigma-delta rule and plastic input phase (conversion.plastic_kernels) against the NumPy forms:
the float sigma-delta sender IEEE-identical to conversion.semantics.sigma_delta, the float event
conv identical to EventConv2d.scatter (the same sums in the same order), the plastic layer's
input phase (z exactly, W z and the row sums within 1e-12), the integer kernels integer for
integer; and the float simulator with the kernels against the one without them."""
from __future__ import annotations

import numpy as np
import pytest

from conversion import fixed_point as fx
from conversion import plastic_kernels as pk
from conversion import semantics as sem
from conversion.ops import EventConv2d, conv_fanout
from conversion.simulator import Simulator, conv_event_tables
from mstpn_base.ops import NUMPY

needs_numba = pytest.mark.skipif(not pk.AVAILABLE, reason="numba is not installed")
INT = np.int64
FLOAT_REL = 1e-12


@needs_numba
@pytest.mark.parametrize("B", [1, 3])
def test_sigma_delta_float_is_ieee_identical(B):
    rng = np.random.default_rng(B)
    shape = (4, 5, 6)
    thr = rng.random(shape) * 0.3
    for trial in range(5):
        y = rng.normal(size=(B, *shape))
        sent0 = y + rng.normal(size=y.shape) * 0.3 * (rng.random(y.shape) < 0.5)
        sent0[0, 0, 0, :2] = y[0, 0, 0, :2]                # no change: no event
        e_ref, sent_ref, fire = sem.sigma_delta(NUMPY, y, sent0, thr)
        e, sent, active = np.empty(y.size), np.empty(y.size), np.empty(y.size, INT)
        na = pk.sigma_delta_float(y.reshape(-1), sent0.reshape(-1), np.ascontiguousarray(thr).reshape(-1), sent, e,
                                  active)
        assert na == int(fire.sum()) and 0 < na < y.size
        assert np.array_equal(active[:na], np.flatnonzero(fire))
        assert np.array_equal(e, e_ref.reshape(-1)) and np.array_equal(sent, sent_ref.reshape(-1))


@needs_numba
@pytest.mark.parametrize("C,H,W,O,k,s,p", [(1, 84, 84, 16, 8, 4, 0), (16, 20, 20, 32, 4, 2, 0), (3, 9, 7, 5, 3, 2, 1)])
def test_conv_events_float_equals_the_numpy_scatter(C, H, W, O, k, s, p):
    rng = np.random.default_rng(C + H)
    w = rng.normal(size=(O, C, k, k))
    kern = EventConv2d(w, (C, H, W), (s, s), (p, p))
    pos, kk, wt = conv_event_tables(w, (C, H, W), (s, s), (p, p))
    assert wt.dtype == np.float64
    fan = conv_fanout((C, H, W), w.shape, (s, s), (p, p)).reshape(-1)
    B, n_out = 2, kern.n_out
    n_pos = n_out // O
    for density in (0.0, 0.03, 0.3):
        x = rng.normal(size=(B, C * H * W)) * (rng.random((B, C * H * W)) < density)
        active = np.flatnonzero(x)
        u = rng.normal(size=(B, n_out))
        du, unew, acc = np.empty((B, n_out)), np.empty((B, n_out)), np.empty((B, n_pos + 1, O))
        syn = pk.conv_events_float(x.reshape(-1), active, C * H * W, pos, kk, wt, fan, u, acc, du, unew)
        ref = kern.scatter(x, active)
        assert np.array_equal(du, ref)                     # the same sums, in the same order
        assert np.array_equal(unew, u + ref)
        assert syn == int(fan[active % fan.size].sum())


@needs_numba
def test_stpn_input_float_and_int():
    rng = np.random.default_rng(7)
    B, H, I = 2, 6, 30
    K = I + H
    W, F = rng.normal(size=(H, K)), rng.normal(size=(B, H, K)) * 0.1
    dx = rng.normal(size=(B, I)) * (rng.random((B, I)) < 0.3)
    dh = rng.normal(size=(B, H)) * (rng.random((B, H)) < 0.5)
    z0, uW0 = rng.normal(size=(B, K)) * (rng.random((B, K)) < 0.6), rng.normal(size=(B, H))
    z, uW, S, Fz = np.empty((B, K)), np.empty((B, H)), np.empty((B, H)), np.empty((B, H))
    nd, nz = pk.stpn_input_float(dx, dh, z0, uW0, np.ascontiguousarray(W.T), W, np.einsum("hk,hk->h", W, W), F,
                                 z, uW, S, Fz)
    dz = np.concatenate([dx, dh], axis=1)
    assert np.array_equal(z, z0 + dz) and nd == np.count_nonzero(dz) and nz == np.count_nonzero(z0 + dz)
    np.testing.assert_allclose(uW, uW0 + dz @ W.T, rtol=FLOAT_REL, atol=FLOAT_REL * np.abs(dz @ np.abs(W.T)).max())
    G = W + F
    np.testing.assert_allclose(S, np.einsum("bhk,bhk->bh", G, G), rtol=FLOAT_REL, atol=0)
    np.testing.assert_allclose(Fz, np.einsum("bhk,bk->bh", F, z), rtol=0, atol=FLOAT_REL * np.abs(F * z[:, None]).sum())
    # fixed point: int64, the shifts of x and h to z's LSB
    Wi = rng.integers(-128, 128, (H, K))
    Wsh = Wi << 3
    Fi = rng.integers(-2**20, 2**20, (B, H, K))
    dxi = rng.integers(-2**10, 2**10, (B, I)) * (rng.random((B, I)) < 0.3)
    dhi = rng.integers(-2**10, 2**10, (B, H)) * (rng.random((B, H)) < 0.5)
    z0i, uW0i = rng.integers(-2**15, 2**15, (B, K)), rng.integers(-2**30, 2**30, (B, H))
    for with_norm in (True, False):
        z, uW, S, Fz = (np.full(sh, -1, INT) for sh in ((B, K), (B, H), (B, H), (B, H)))
        nd, nz = pk.stpn_input_int(dxi, dhi, 0, 7, z0i, uW0i, np.ascontiguousarray(Wi.T), Wsh, Fi, with_norm,
                                   z, uW, S, Fz)
        dzi = np.concatenate([dxi, dhi << 7], axis=1)
        assert np.array_equal(z, z0i + dzi) and nd == np.count_nonzero(dzi) and nz == np.count_nonzero(z)
        assert np.array_equal(uW, uW0i + dzi @ Wi.T)
        assert np.array_equal(Fz, np.einsum("bhk,bk->bh", Fi, z))
        Gi = Wsh + Fi
        assert np.array_equal(S, np.einsum("bhk,bhk->bh", Gi, Gi)) if with_norm else (S == -1).all()


@needs_numba
@pytest.mark.parametrize("activation", ["tanh", "relu", "identity"])
def test_sigma_delta_round_int_equals_the_rule(activation):
    rng = np.random.default_rng(len(activation))
    table, tshift = fx.tanh_table(-19, -12)
    n = 400
    thr = rng.integers(0, 50, n)
    for shift in (5, 0, -2):
        u = rng.integers(-2**22, 2**22, 2 * n)
        u[:20] = 0
        sent0 = rng.integers(-2**12, 2**12, 2 * n)
        if activation == "tanh":
            mode, y_ref = 2, fx.tanh_int(u, table, tshift)
        else:
            mode, y_ref = int(activation == "relu"), fx.rshift_round(u, shift)
            y_ref = np.maximum(y_ref, 0) if activation == "relu" else y_ref
        e_ref, sent_ref, fire = sem.sigma_delta(NUMPY, y_ref, sent0, np.tile(thr, 2))
        y, sent, pay, active = (np.empty(2 * n, INT) for _ in range(4))
        y_over, p_over, na = pk.sigma_delta_round_int(u, mode, shift, table, tshift, sent0, thr, fx.STATE_MAX,
                                                      y, sent, pay, active)
        assert np.array_equal(y, y_ref) and np.array_equal(pay, e_ref) and np.array_equal(sent, sent_ref)
        assert na == int(fire.sum()) and np.array_equal(active[:na], np.flatnonzero(fire))
        assert (y_over, p_over) == (np.count_nonzero(np.abs(y_ref) > fx.STATE_MAX),
                                    np.count_nonzero(np.abs(e_ref) > fx.STATE_MAX))


def small_net():
    from conversion.convert import convert_policy
    from snn_agent.checkpoint import build_policy
    from snn_agent.config import ModelConfig

    return convert_policy(build_policy(ModelConfig(hidden=8, n_actions=3), seed=0))


@needs_numba
def test_float_simulator_with_and_without_kernels(monkeypatch):
    from conversion.synthetic import pong_like_frames

    net = small_net()
    frames = pong_like_frames(30, seed=2)
    runs = {}
    for on in (False, True):
        monkeypatch.setattr(pk, "ENABLED", on)
        sim = Simulator(net, 2)
        states, logits = [], []
        for t, f in enumerate(frames):
            if t == 12:
                sim.reset(np.array([True, False]))
            logits.append(sim.step(np.stack([f, frames[-1 - t]])).logits)
            states.append({n: {k: np.array(v) for k, v in st.items()} for n, st in sim.state.items()})
        runs[on] = states, np.stack(logits), sim.stats
    (ref, lo_ref, st_ref), (out, lo, st) = runs[False], runs[True]
    for a, b in zip(ref, out):
        for n in a:
            for k in a[n]:
                scale = float(np.max(np.abs(a[n][k]), initial=0))
                assert np.max(np.abs(a[n][k] - b[n][k]), initial=0) <= FLOAT_REL * scale, (n, k)
    assert np.max(np.abs(lo - lo_ref)) <= FLOAT_REL * np.max(np.abs(lo_ref))
    assert st == st_ref                                     # the same events and synaptic operations
