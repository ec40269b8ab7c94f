"""The reference simulator's fast kernels against the plain definitions: the event-driven and
im2col Conv2d against conversion.ops.conv2d, and the fixed-point plasticity computed in float64 on
exact integers against the int64 form, bit for bit (including half-way roundings, negative values,
saturation and the int64 fallback where the float bounds do not hold)."""
from __future__ import annotations

import numpy as np
import pytest

from conversion import fixed_point as fx
from conversion.ops import EventConv2d, conv2d
from conversion.simulator import Simulator

SHAPES = [(1, 84, 84, 16, 8, 4, 0), (16, 20, 20, 32, 4, 2, 0), (3, 9, 7, 5, 3, 2, 1), (2, 6, 6, 4, 3, 1, 2)]


@pytest.mark.parametrize("C,H,W,O,k,s,p", SHAPES)
@pytest.mark.parametrize("integer", [False, True])
def test_event_conv_equals_conv2d(C, H, W, O, k, s, p, integer):
    rng = np.random.default_rng(C * 100 + H)
    w = rng.integers(-128, 128, (O, C, k, k)) if integer else rng.normal(size=(O, C, k, k))
    kern = EventConv2d(w, (C, H, W), (s, s), (p, p))
    for density in (0.0, 0.02, 0.5, 1.0):
        x = rng.normal(size=(3, C, H, W)) * (rng.random((3, C, H, W)) < density)
        if integer:
            x = np.rint(x * 2**20).astype(np.int64)
        ref = conv2d(x, w, (s, s), (p, p)).reshape(3, -1)
        for f in (kern.dense, kern.scatter, kern):
            out = f(x.reshape(3, -1))
            assert out.dtype == ref.dtype
            if integer:
                assert np.array_equal(out, ref)
            else:
                assert np.max(np.abs(out - ref), initial=0) < 1e-12
        if integer:   # partial sums beyond 2**52: the int64 kernels
            big = x << 33
            ref = conv2d(big, w, (s, s), (p, p)).reshape(3, -1)
            assert np.array_equal(kern.dense(big.reshape(3, -1)), ref)
            assert np.array_equal(kern.scatter(big.reshape(3, -1)), ref)


def quantised_net():
    from conversion.calibrate import calibrate
    from conversion.convert import convert_policy
    from conversion.quantise import quantise
    from conversion.synthetic import pong_like_frames
    from snn_agent.checkpoint import build_policy
    from snn_agent.config import ModelConfig

    net = convert_policy(build_policy(ModelConfig(hidden=8, n_actions=3), seed=0))
    net.fixed = quantise(net, calibrate(net, pong_like_frames(6)))
    return net


def test_fixed_plasticity_float_kernel_is_bit_exact():
    sim = Simulator(quantised_net(), batch=2, fixed=True)
    n = "stpn"
    H, K = sim.net.nodes[n].W.shape
    s = sim.plastic[n]["f_shift"]
    rng = np.random.default_rng(1)
    checked = 0
    for trial in range(40):
        F = rng.integers(-fx.STATE_MAX, fx.STATE_MAX + 1, (2, H, K)) >> int(rng.integers(0, 12))
        N = rng.integers(1, 2 ** int(rng.integers(2, 23)), (2, H))
        h = rng.integers(-2**11, 2**11, (2, H))
        z = rng.integers(-2**20, 2**20, (2, K)) * (rng.random((2, K)) < 0.4)
        sim.monitor = fx.OverflowMonitor()
        ref = sim._plasticity_int(n, F.copy(), N, h, z)
        counts_ref, events_ref = dict(sim.monitor.counts), list(sim.monitor.events)
        sim.monitor = fx.OverflowMonitor()
        sim._mirror.pop(n, None)
        out = sim._plasticity_exact(n, F.copy(), N, h, z)
        if out is None:
            continue
        checked += 1
        assert out.dtype == np.int64 and np.array_equal(out, ref)
        assert sim.monitor.counts == counts_ref and sim.monitor.events == events_ref   # saturation recorded alike
    assert checked >= 30


def test_fixed_plasticity_half_way_rounding():
    """round_div(F << s, N) at exact halves (x + 1/2 an integer), positive and negative."""
    sim = Simulator(quantised_net(), fixed=True)
    n = "stpn"
    H, K = sim.net.nodes[n].W.shape
    s = sim.plastic[n]["f_shift"]
    N = np.full((1, H), 2 ** (s + 1) * 3)           # x = F 2**s / N = F / 6: halves at F = 3 (mod 6)
    F = (np.arange(H * K).reshape(1, H, K) % 40 - 20) * 3
    zeros_h, zeros_z = np.zeros((1, H), np.int64), np.zeros((1, K), np.int64)
    ref = sim._plasticity_int(n, F.copy(), N, zeros_h, zeros_z)
    sim._mirror.pop(n, None)
    out = sim._plasticity_exact(n, F.copy(), N, zeros_h, zeros_z)
    assert out is not None and np.array_equal(out, ref)


def test_fixed_plasticity_falls_back_beyond_float_bounds():
    sim = Simulator(quantised_net(), fixed=True)
    n = "stpn"
    H, K = sim.net.nodes[n].W.shape
    F = np.full((1, H, K), fx.STATE_MAX)
    h = np.full((1, H), 2**40)
    z = np.full((1, K), 2**20)
    sim._mirror.pop(n, None)
    assert sim._plasticity_exact(n, F, np.ones((1, H), np.int64), h, z) is None
