"""The fused plastic-layer kernels (conversion.plastic_kernels) against the NumPy forms of the
reference simulator and the definitions (conversion.semantics, conversion.fixed_point):
fixed point bit for bit (the shipped STPN over 50 frames, every state integer; hand-made cases
with negative values, exact halves, saturation at f_max, negative and zero Hebbian shifts;
overflow events recorded alike), float plasticity IEEE-identical, float forward sums within
1e-12 of the largest magnitude of each state array, and the NumPy fallback (module flag)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from conversion import fixed_point as fx
from conversion import plastic_kernels as pk
from conversion import semantics as sem
from conversion.simulator import Simulator
from mstpn_base.ops import NUMPY

needs_numba = pytest.mark.skipif(not pk.AVAILABLE, reason="numba is not installed")
ROOT = Path(__file__).resolve().parents[1]
CKPT = ROOT / "artifacts" / "stpn" / "policy.safetensors"
FRAMES = 50
FLOAT_REL = 1e-12


@pytest.fixture
def kernels(monkeypatch):
    """Set the module flag for one test (restored afterwards)."""
    def use(on: bool):
        monkeypatch.setattr(pk, "ENABLED", bool(on) and pk.AVAILABLE)
    return use


def small_net():
    from conversion.calibrate import calibrate
    from conversion.convert import convert_policy
    from conversion.quantise import quantise
    from conversion.synthetic import pong_like_frames
    from snn_agent.checkpoint import build_policy
    from snn_agent.config import ModelConfig

    net = convert_policy(build_policy(ModelConfig(hidden=8, n_actions=3), seed=0))
    net.fixed = quantise(net, calibrate(net, pong_like_frames(6)))
    return net


@pytest.fixture(scope="module")
def shipped():
    if not CKPT.exists():
        pytest.skip("shipped checkpoint artifacts/stpn/policy.safetensors is missing")
    import torch

    from conversion.synthetic import pong_like_frames
    from snn_agent.checkpoint import load_policy
    from snn_agent.export import convert_with_calibration

    torch.set_num_threads(1)
    policy, meta = load_policy(CKPT)
    net = convert_with_calibration(policy, meta["config"].env, calib_frames=60, seed=0, log=lambda *_: None)
    assert net.fixed is not None
    return net, pong_like_frames(FRAMES, seed=3)


def _run_states(net, frames, fixed, monkeypatch, enabled):
    monkeypatch.setattr(pk, "ENABLED", enabled)
    sim = Simulator(net, 1, fixed=fixed)
    out = []
    for f in frames:
        sim.step(f[None])
        out.append({n: {k: np.array(v) for k, v in st.items()} for n, st in sim.state.items()})
    return out, sim


@needs_numba
def test_shipped_fixed_point_every_state_integer_equal(shipped, monkeypatch):
    net, frames = shipped
    ref, sr = _run_states(net, frames, True, monkeypatch, False)
    out, so = _run_states(net, frames, True, monkeypatch, True)
    assert len(ref) == len(out) == FRAMES
    n_int = 0
    for t, (a, b) in enumerate(zip(ref, out)):
        assert a.keys() == b.keys()
        for n in a:
            assert a[n].keys() == b[n].keys()
            for k in a[n]:
                assert a[n][k].dtype == b[n][k].dtype == np.int64, (t, n, k)
                assert np.array_equal(a[n][k], b[n][k]), (t, n, k)
                n_int += a[n][k].size
    assert n_int > 170_000 * FRAMES                        # F of the plastic layer included
    assert so.monitor.counts == sr.monitor.counts and so.monitor.events == sr.monitor.events
    assert so.stats == sr.stats


@needs_numba
def test_shipped_float_within_tolerance(shipped, monkeypatch):
    net, frames = shipped
    ref, _ = _run_states(net, frames, False, monkeypatch, False)
    out, _ = _run_states(net, frames, False, monkeypatch, True)
    for t, (a, b) in enumerate(zip(ref, out)):
        for n in a:
            for k in a[n]:
                x, y = a[n][k], b[n][k]
                scale = float(np.max(np.abs(x), initial=0))
                assert np.max(np.abs(x - y), initial=0) <= FLOAT_REL * scale, (t, n, k)


def _ref_plasticity_int(F, N, L, G, h, z, s, k, f_max):
    """The fixed-point plasticity from conversion.fixed_point's primitives."""
    q = fx.mul_q12(fx.round_div(F << s, N[:, :, None]), L)
    F = q + fx.rshift_round(G * h[:, :, None] * z[:, None, :], k)
    return np.clip(F, -f_max, f_max) if f_max >= 0 else F


@needs_numba
@pytest.mark.parametrize("k", [16, 5, 1, 0, -3])
@pytest.mark.parametrize("f_max", [-1, 3000])
def test_plasticity_int_hand_cases(k, f_max):
    rng = np.random.default_rng(k + 100)
    B, H, K = 2, 5, 37
    for trial in range(20):
        s = int(rng.integers(0, 12))
        F = rng.integers(-2**20, 2**20, (B, H, K)) >> int(rng.integers(0, 15))
        N = rng.integers(1, 2 ** int(rng.integers(1, 20)), (B, H))
        L = rng.integers(-fx.LAM_MAX, fx.LAM_MAX + 1, (H, K))
        G = rng.integers(-128, 128, (H, K))
        h = rng.integers(-2**10, 2**10, (B, H))
        z = rng.integers(-2**12, 2**12, (B, K)) * (rng.random((B, K)) < 0.5)
        if trial % 4 == 0:                                  # exact halves of round_div: F 2**s / N = odd / 2
            N[:] = 2 ** (s + 1)
            F = (2 * rng.integers(-500, 500, (B, H, K)) + 1)
        out = np.empty_like(F)
        bad = pk.plasticity_int(F, N, L, G, h, z, s, k, f_max, fx.WIDE_MAX, fx.STATE_MAX, out)
        ref = _ref_plasticity_int(F, N, L, G, h, z, s, k, f_max)
        assert bad == (0, 0, np.count_nonzero(np.abs(ref) > fx.STATE_MAX))   # before the monitor's saturation
        assert np.array_equal(out, ref)
        if f_max >= 0:
            assert np.abs(out).max() <= f_max
    # halves hit, both signs: round half up
    F = np.array([[[1, -1, 3, -3]]]) ; N = np.array([[2]]); L = np.full((1, 4), 4096); z0 = np.zeros((1, 4), np.int64)
    out = np.empty_like(F)
    pk.plasticity_int(F, N, L, np.zeros((1, 4), np.int64), np.zeros((1, 1), np.int64), z0, 0, k, -1,
                      fx.WIDE_MAX, fx.STATE_MAX, out)
    assert out.tolist() == [[[1, 0, 2, -1]]] == _ref_plasticity_int(F, N, L, 0 * L, np.zeros((1, 1), np.int64),
                                                                  z0, 0, k, -1).tolist()


@needs_numba
def test_plasticity_int_reports_what_it_cannot_do_exactly():
    H, K = 2, 3
    L, G = np.full((H, K), 4000), np.full((H, K), 90)
    one = np.ones((1, H), np.int64)
    out = np.empty((1, H, K), np.int64)
    # quotients beyond 2**51: the float estimate is off by more than one; counted, not returned as exact
    F = np.full((1, H, K), 2**40 + 12345) + 7 * np.arange(K)
    inexact, _, _ = pk.plasticity_int(F, 3 * one, L, G, 0 * one, np.zeros((1, K), np.int64), 20, 16, -1,
                                      fx.WIDE_MAX, fx.STATE_MAX, out)
    assert inexact > 0
    # Hebbian products beyond 2**62 and new F beyond the state budget
    _, hebb, f_over = pk.plasticity_int(np.zeros((1, H, K), np.int64), one, L, G, one * 2**40,
                                        np.full((1, K), 2**20), 0, 16, -1, fx.WIDE_MAX, fx.STATE_MAX, out)
    assert hebb == H * K and f_over == H * K


@needs_numba
def test_norm_dot_kernels():
    rng = np.random.default_rng(3)
    B, H, K = 2, 7, 301
    W = rng.integers(-2**19, 2**19, (H, K))
    F = rng.integers(-fx.STATE_MAX, fx.STATE_MAX + 1, (B, H, K))
    z = rng.integers(-2**20, 2**20, (B, K))
    S, Fz = np.empty((B, H), np.int64), np.empty((B, H), np.int64)
    pk.norm_dot_int(W, np.einsum("hk,hk->h", W, W), F, z, S, Fz)
    G = W + F
    assert np.array_equal(S, np.einsum("bhk,bhk->bh", G, G)) and np.array_equal(Fz, np.einsum("bhk,bk->bh", F, z))
    Wf, Ff, zf = rng.normal(size=(H, K)), rng.normal(size=(B, H, K)), rng.normal(size=(B, K))
    S, Fz = np.empty((B, H)), np.empty((B, H))
    pk.norm_dot_float(Wf, np.einsum("hk,hk->h", Wf, Wf), Ff, zf, S, Fz)
    Gf = Wf + Ff
    np.testing.assert_allclose(S, np.einsum("bhk,bhk->bh", Gf, Gf), rtol=FLOAT_REL, atol=0)
    np.testing.assert_allclose(Fz, np.einsum("bhk,bk->bh", Ff, zf), rtol=0, atol=FLOAT_REL * np.abs(Ff * zf[:, None]).sum())


@needs_numba
@pytest.mark.parametrize("f_max", [np.inf, 0.05])
def test_plasticity_float_is_ieee_identical(f_max):
    rng = np.random.default_rng(4)
    B, H, K = 3, 6, 50
    F, N = rng.normal(size=(B, H, K)) * 0.1, rng.random((B, H)) + 0.5
    lam, gamma = rng.random((H, K)), rng.normal(size=(H, K)) * 0.1
    h, z = rng.normal(size=(B, H)), rng.normal(size=(B, K)) * (rng.random((B, K)) < 0.5)
    out = np.empty_like(F)
    pk.plasticity_float(F, N, lam, gamma, h, z, float(f_max), out)
    ref = sem.stpn_plasticity(NUMPY, F, N[:, :, None], lam, gamma, h[:, :, None], z[:, None, :],
                              None if np.isinf(f_max) else f_max)
    assert np.array_equal(out, ref)


@pytest.mark.parametrize("enabled", [True, False])
def test_overflow_events_alike_on_both_paths(kernels, enabled):
    """F beyond the state budget (no f_max) and Hebbian products beyond the 64-bit budget are
    saturated and recorded as the int64 form does, with the kernels and without."""
    kernels(enabled)
    net = small_net()
    n = "stpn"
    H, K = net.nodes[n].W.shape
    rng = np.random.default_rng(5)
    for case in ("state", "hebb"):
        sim = Simulator(net, 2, fixed=True)
        sim.fp[n] = dict(sim.fp[n], f_max=np.int64(-1))
        F = rng.integers(-fx.STATE_MAX, fx.STATE_MAX + 1, (2, H, K))
        N = np.ones((2, H), np.int64)
        h = rng.integers(-2**11, 2**11, (2, H)) * (2**30 if case == "hebb" else 1)
        z = rng.integers(-2**20, 2**20, (2, K))
        ref_mon = fx.OverflowMonitor()
        sim.monitor = ref_mon
        ref = sim._plasticity_int(n, F.copy(), N, h, z)
        assert ref_mon.counts.get((n, "F"), 0) > 0
        assert (ref_mon.counts.get((n, "hebb_product"), 0) > 0) == (case == "hebb")
        sim.monitor = fx.OverflowMonitor()
        sim._mirror.pop(n, None)
        post = net.nodes[n].post
        sim.state[n].update(F=F.copy(), N=N, z=z)
        sim.state[post]["y"] = h
        sim.deltas = {post: np.zeros_like(h)}
        sim._plasticity(n)                                  # the plasticity phase: kernel, else the NumPy forms
        out = sim.state[n]["F"]
        assert np.array_equal(out, ref)
        assert sim.monitor.counts == ref_mon.counts and sim.monitor.events == ref_mon.events


@pytest.mark.parametrize("enabled", [True, False])
def test_small_network_paths_agree(kernels, enabled, monkeypatch):
    """The module flag selects the kernels or the NumPy forms; both give the same fixed-point
    states and float states within tolerance (the fallback where numba is missing)."""
    from conversion.synthetic import pong_like_frames

    net, frames = small_net(), pong_like_frames(12, seed=2)
    for fixed in (True, False):
        ref, _ = _run_states(net, frames, fixed, monkeypatch, False)
        kernels(enabled)
        out, _ = _run_states(net, frames, fixed, monkeypatch, pk.ENABLED)
        for a, b in zip(ref, out):
            for n in a:
                for k in a[n]:
                    if fixed:
                        assert np.array_equal(a[n][k], b[n][k]), (n, k)
                    else:
                        scale = float(np.max(np.abs(a[n][k]), initial=0))
                        assert np.max(np.abs(a[n][k] - b[n][k]), initial=0) <= FLOAT_REL * scale, (n, k)


@needs_numba
def test_add_events_int_equals_the_rows_of_the_events():
    rng = np.random.default_rng(6)
    B, K, H = 3, 200, 9
    WT = rng.integers(-2**27, 2**27, (K, H))
    dz = rng.integers(-2**20, 2**20, (B, K)) * (rng.random((B, K)) < 0.1)
    uW = rng.integers(-2**40, 2**40, (B, H))
    active = np.flatnonzero(np.any(dz != 0, axis=0))
    ref = uW + dz[:, active] @ WT[active]
    pk.add_events_int(dz, WT, uW)
    assert np.array_equal(uW, ref)
