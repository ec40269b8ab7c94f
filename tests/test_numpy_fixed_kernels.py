"""The fused fixed-point kernels of the reference simulator (conversion.plastic_kernels: the
"lava" sigma-delta rule, the event-driven conv synapse with the 24-bit wrap, the plastic layer's
forward phase and its next-frame row norms) against the NumPy forms built from
conversion.fixed_point, integer for integer; and the simulator with the kernels against the
simulator without them: every value, event, state integer, counter and overflow event equal,
batch 2 with a partial reset, and inputs that overflow a budget (the kernels hand over to the
NumPy forms, whose monitor records)."""
from __future__ import annotations

import numpy as np
import pytest

from conversion import fixed_point as fx
from conversion import plastic_kernels as pk
from conversion.ops import EventConv2d
from conversion.simulator import Simulator, conv_event_tables, narrow_int
from mstpn_base.intmath import isqrt, round_div

needs_numba = pytest.mark.skipif(not pk.AVAILABLE, reason="numba is not installed")
INT = np.int64


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


def test_narrow_int_keeps_values():
    for lo, hi, dt in ((-128, 127, np.int8), (-129, 5, np.int16), (0, 40000, np.int32), (0, 2**40, np.int64)):
        a = np.array([lo, hi, 0], INT)
        n = narrow_int(a)
        assert n.dtype == dt and n.flags.c_contiguous and np.array_equal(n.astype(INT), a)


@needs_numba
def test_sigma_delta_lava_kernel_equals_the_rule():
    rng = np.random.default_rng(0)
    n = 500
    for relu in (True, False):
        for S, vth in ((0, 1), (6, 300), (3, 5)):
            u = rng.integers(-2**20, 2**20, n)
            act0 = rng.integers(-2**20, 2**20, n)
            res0 = rng.integers(-vth, vth + 1, n)
            sent0 = rng.integers(-2**14, 2**14, n)
            act0[:50] = np.maximum(u[:50], 0) if relu else u[:50]   # unchanged inputs: |d| < vth
            outs = [np.empty(n, INT) for _ in range(5)]
            active = np.empty(n, INT)
            a_over, p_over, fired, na = pk.sigma_delta_lava_int(u, relu, act0, res0, sent0, vth, S, fx.STATE_MAX,
                                                                *outs, active)
            act = np.maximum(u, 0) if relu else u
            pay, believed, fire = fx.sigma_delta_lava(act, act0 - res0, vth, S)
            ref = [act, act - believed, act >> S, sent0 + pay, pay]
            for got, want in zip(outs, ref):
                assert np.array_equal(got, want)
            assert (a_over, p_over, fired) == (0, 0, int(fire.sum()))
            assert np.array_equal(active[:na], np.flatnonzero(pay))
    u = np.array([fx.STATE_MAX + 1, -fx.STATE_MAX - 2, 3])
    z = np.zeros(3, INT)
    outs = [np.empty(3, INT) for _ in range(5)]
    a_over, p_over, _, _ = pk.sigma_delta_lava_int(u, False, z, z, z, 1, 0, fx.STATE_MAX, *outs, np.empty(3, INT))
    assert (a_over, p_over) == (2, 2)


@needs_numba
@pytest.mark.parametrize("geom", [((3, 11, 9), (4, 3, 3, 3), (2, 2), (1, 1)),
                                  ((1, 20, 20), (5, 1, 8, 8), (4, 4), (0, 0)),
                                  ((2, 7, 7), (3, 2, 2, 2), (1, 1), (0, 1))])
def test_conv_events_kernel_equals_the_scatter(geom):
    """Integers of the position-major event conv = EventConv2d's scatter (exact), then the 24-bit
    wrap and u + du; budgets counted before the wrap."""
    in_shape, w_shape, stride, padding = geom
    rng = np.random.default_rng(1)
    w = rng.integers(-128, 128, w_shape)
    ref_conv = EventConv2d(w, in_shape, stride, padding)
    pos, kk, wt = conv_event_tables(w, in_shape, stride, padding)
    fan = np.asarray([np.count_nonzero(ref_conv.idx[i] < ref_conv.n_out) for i in range(ref_conv.n_in)], INT)
    B, shape = 2, ref_conv.out_shape
    n_pos, O = shape[1] * shape[2], shape[0]
    for wrap, scale in ((0, 2**10), (fx.STATE_BITS, 2**10), (fx.STATE_BITS, 2**19)):
        x = rng.integers(-scale, scale, (B, ref_conv.n_in)) * (rng.random((B, ref_conv.n_in)) < 0.3)
        active = np.flatnonzero(x)
        u = rng.integers(-2**22, 2**22, (B, ref_conv.n_out))
        acc = np.empty((B, n_pos + 1, O), INT)
        du, unew = np.empty((B, ref_conv.n_out), INT), np.empty((B, ref_conv.n_out), INT)
        du_over, u_over, syn = pk.conv_events_int(x.reshape(-1), active, ref_conv.n_in, pos, kk, wt, fan, u, wrap,
                                                  fx.STATE_MAX, acc, du, unew)
        ref = ref_conv.scatter(x.astype(INT), active).astype(INT)
        assert du_over == np.count_nonzero(np.abs(ref) > fx.STATE_MAX) * (wrap > 0)
        if wrap:
            ref = fx.wrap_signed(ref, wrap)
        assert np.array_equal(du, ref)
        assert np.array_equal(unew, u + ref)
        assert u_over == np.count_nonzero(np.abs(u + ref) > fx.STATE_MAX)
        assert syn == fan[active % ref_conv.n_in].sum()
    assert scale == 2**19 and du_over > 0                   # the large events did leave the budget


@needs_numba
def test_stpn_forward_kernel_equals_the_integer_forms():
    rng = np.random.default_rng(2)
    B, H, sG = 3, 40, 14
    S = rng.integers(0, 2**50, (B, H))
    S[0, :4] = [0, 1, 2**50, (2**25 + 1)**2 - 1]             # roots at 0, 1 and next to a square
    uW = rng.integers(-2**40, 2**40, (B, H))
    Fz = rng.integers(-2**50, 2**50, (B, H))
    bias = rng.integers(-2**20, 2**20, H)
    N, a = np.empty((B, H), INT), np.empty((B, H), INT)
    assert pk.stpn_forward_int(S, uW, Fz, sG, bias, fx.WIDE_MAX, fx.STATE_MAX, N, a) == \
        np.count_nonzero(np.abs(round_div((uW << sG) + Fz, np.maximum(isqrt(S), 1)) + bias) > fx.STATE_MAX)
    Nr = np.maximum(isqrt(S), 1)
    assert np.array_equal(N, Nr)
    assert np.array_equal(a, round_div((uW << sG) + Fz, Nr) + bias)
    # exact halves round up: dot / N = k + 1/2
    S2 = np.full((1, 4), 16)                                 # N = 4
    dot = np.array([[2, -2, 6, -6]])
    pk.stpn_forward_int(S2, np.zeros((1, 4), INT), dot, 0, np.zeros(4, INT), fx.WIDE_MAX, fx.STATE_MAX,
                        N[:1, :4].copy(), out := np.empty((1, 4), INT))
    assert out.tolist() == [[1, 0, 2, -1]] == round_div(dot, 4).tolist()
    over = pk.stpn_forward_int(np.array([[-1, fx.WIDE_MAX + 1]]), np.zeros((1, 2), INT), np.zeros((1, 2), INT), 0,
                               np.zeros(2, INT), fx.WIDE_MAX, fx.STATE_MAX, np.empty((1, 2), INT), np.empty((1, 2), INT))
    assert over == 2


@needs_numba
def test_plasticity_row_sums_and_dot():
    """S of the plasticity pass is the row sums of G^2 on the new F; dot_int is F z."""
    rng = np.random.default_rng(3)
    B, H, K, sG = 2, 6, 150, 14
    F = rng.integers(-2**20, 2**20, (B, H, K))
    N = rng.integers(2**20, 2**24, (B, H))
    L, G = rng.integers(0, 4096, (H, K)), rng.integers(-128, 128, (H, K))
    W = rng.integers(-127, 128, (H, K))
    h, z = rng.integers(-2**12, 2**12, (B, H)), rng.integers(0, 2**19, (B, K)) * (rng.random((B, K)) < 0.7)
    out, S, ref = np.empty_like(F), np.empty((B, H), INT), np.empty_like(F)
    bad = pk.plasticity_norm_int(F, N, narrow_int(L), narrow_int(G), h, z, narrow_int(W), sG, 21, 17, -1,
                                 fx.WIDE_MAX, fx.STATE_MAX, out, S)
    assert bad == (0, 0, 0)
    # the new F with narrow lam / gamma equals the int64 pass without row norms
    assert pk.plasticity_int(F, N, L, G, h, z, 21, 17, -1, fx.WIDE_MAX, fx.STATE_MAX, ref) == (0, 0, 0)
    assert np.array_equal(out, ref)
    Gi = (W << sG) + out
    assert np.array_equal(S, np.einsum("bhk,bhk->bh", Gi, Gi))
    Fz = np.empty((B, H), INT)
    pk.dot_int(out, z, Fz)
    assert np.array_equal(Fz, np.einsum("bhk,bk->bh", out, z))


def _run(net, frames, B, enabled, monkeypatch, reset_at=None):
    monkeypatch.setattr(pk, "ENABLED", enabled)
    sim = Simulator(net, B, fixed=True)
    rec = []
    for t, f in enumerate(frames):
        if reset_at is not None and t == reset_at:
            sim.reset(np.arange(B) % 2 == 0)
        r = sim.step(f)
        rec.append(({n: np.array(v) for n, v in sim.values.items()},
                    {n: None if v is None else np.array(v) for n, v in sim.deltas.items()},
                    {n: {k: np.array(v) for k, v in st.items()} for n, st in sim.state.items()},
                    r.logits_int.copy()))
    return rec, sim


def _assert_same(ref, out):
    for (v0, d0, s0, l0), (v1, d1, s1, l1) in zip(ref, out):
        assert np.array_equal(l0, l1)
        assert v0.keys() == v1.keys() and d0.keys() == d1.keys()
        for n in v0:
            assert v0[n].dtype == v1[n].dtype and np.array_equal(v0[n], v1[n]), n
            assert (d0[n] is None) == (d1[n] is None) and (d0[n] is None or np.array_equal(d0[n], d1[n])), n
        for n in s0:
            for k in s0[n]:
                assert s0[n][k].dtype == s1[n][k].dtype and np.array_equal(s0[n][k], s1[n][k]), (n, k)


@needs_numba
def test_simulator_with_kernels_equals_numpy_forms_batch_and_reset(monkeypatch):
    from conversion.synthetic import pong_like_frames

    net = small_net()
    B = 2
    frames = pong_like_frames(16, seed=4)
    frames = np.stack([frames, np.roll(frames, 3, axis=0)], axis=1)[:, :, 0][:, :, None]   # (T, B, 1, 84, 84)
    ref, s0 = _run(net, frames, B, False, monkeypatch, reset_at=9)
    out, s1 = _run(net, frames, B, True, monkeypatch, reset_at=9)
    _assert_same(ref, out)
    assert s0.stats == s1.stats
    assert s0.monitor.counts == s1.monitor.counts and s0.monitor.events == s1.monitor.events


@needs_numba
def test_overflowing_input_recorded_alike(monkeypatch):
    """Pixel values far beyond 0..255 push the input layer's act past 24 bits: the kernels hand
    over to the NumPy forms, which saturate and record the same overflow events."""
    from conversion.synthetic import pong_like_frames

    net = small_net()
    frames = pong_like_frames(6, seed=5).astype(INT)[:, None]
    frames[2:] *= 2**17
    ref, s0 = _run(net, frames, 1, False, monkeypatch)
    out, s1 = _run(net, frames, 1, True, monkeypatch)
    assert s0.monitor.counts, "the test input must overflow a budget"
    _assert_same(ref, out)
    assert s0.monitor.counts == s1.monitor.counts and s0.monitor.events == s1.monitor.events
    assert s0.stats == s1.stats
