"""The fast paths of the reference simulator and of the snnTorch rate form equal the plain ones
exactly: the fixed-point plasticity by the reciprocal (ties included), the row norms as
|W|^2 + 2 W.F + |F|^2, and the integrate-and-fire sub-steps as plain tensor operations."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from conversion import fixed_point as fx
from conversion.simulator import Simulator
from test_simulator_kernels import quantised_net


@pytest.fixture(scope="module")
def sim():
    return Simulator(quantised_net(), fixed=True)


def _recip_used(sim, n, F, N, h, z) -> bool:
    """Run the float-exact plasticity; True when it took the reciprocal (not the division)."""
    used = []
    orig = np.einsum

    def spy(*a, **k):
        used.append(a[0])
        return orig(*a, **k)
    np.einsum = spy
    try:
        out = sim._plasticity_exact(n, F, N, h, z)
    finally:
        np.einsum = orig
    return out, "bhk,bh->bhk" in used


def test_reciprocal_plasticity_equals_int64_at_halves(sim):
    """x = F 2**s / N exactly half-way (N = 2**(s+1) d, F = d m, m odd) and next to it, for
    row divisors d that are not powers of two: the reciprocal 2**s / N is inexact there."""
    n = "stpn"
    H, K = sim.net.nodes[n].W.shape
    s = sim.plastic[n]["f_shift"]
    rng = np.random.default_rng(3)
    for trial in range(6):
        d = rng.integers(3, 40, (1, H)) | 1                   # odd: 2**s / N has no exact binary form
        N = (d << (s + 1)).astype(np.int64)
        m = rng.integers(-200, 200, (1, H, K)) * 2 + 1        # odd multiples: exact halves
        F = (m * d[:, :, None] + rng.integers(-1, 2, (1, H, K)) * (trial % 2)).astype(np.int64)
        h = rng.integers(-2**10, 2**10, (1, H))
        z = rng.integers(-2**12, 2**12, (1, K)) * (rng.random((1, K)) < 0.5)
        sim.monitor = fx.OverflowMonitor()
        ref = sim._plasticity_int(n, F.copy(), N, h, z)
        sim._mirror.pop(n, None)
        out, recip = _recip_used(sim, n, F.copy(), N, h, z)
        assert recip and out is not None
        assert np.array_equal(out, ref)


def test_carried_bound_covers_max_F(sim):
    """After a float-exact step the mirror's max |F| is a bound of the true maximum."""
    n = "stpn"
    H, K = sim.net.nodes[n].W.shape
    rng = np.random.default_rng(4)
    F = rng.integers(-2**18, 2**18, (1, H, K))
    N = rng.integers(2**26, 2**28, (1, H))
    h, z = rng.integers(-2**10, 2**10, (1, H)), rng.integers(-2**12, 2**12, (1, K))
    sim._mirror.pop(n, None)
    out = sim._plasticity_exact(n, F, N, h, z)
    bound = sim._mirror[n][2]
    assert out is not None and np.abs(out).max() <= bound


@pytest.mark.parametrize("scale", [0, 10, 18])
def test_norm_expansion_equals_G_squared(sim, scale):
    n = "stpn"
    pp = sim.plastic[n]
    H, K = sim.net.nodes[n].W.shape
    rng = np.random.default_rng(scale)
    F = rng.integers(-2**scale, 2**scale + 1, (2, H, K))
    z = rng.integers(-2**16, 2**16, (2, K))
    sim._mirror.pop(n, None)
    S, Fz = sim._norm_and_dot_exact(n, F, z)
    G = pp["Wsh"] + F
    assert S.dtype == np.int64 and np.array_equal(S, np.einsum("bhk,bhk->bh", G, G))
    assert np.array_equal(Fz, np.einsum("bhk,bk->bh", F, z))


def test_float_norm_expansion_close_to_G_squared():
    """Float: |W|^2 + 2 W.F + |F|^2 equals sum (W + F)^2 to rounding (relative 1e-12)."""
    sim = Simulator(quantised_net(), fixed=False)
    n = "stpn"
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 256, (5, 1, 1, 84, 84))
    for f in frames:
        sim.step(f)
    st, W = sim.state[n], sim.plastic[n]["W"]
    G = W + st["F"]
    sim.step(frames[0])
    N_ref = np.sqrt(np.einsum("bhk,bhk->bh", G, G)) + sim.net.nodes[n].norm_eps
    assert np.allclose(st["N"], N_ref, rtol=1e-12, atol=0)


# -- snnTorch rate form -----------------------------------------------------------------------------
snn = pytest.importorskip("snntorch")


def test_if_steps_equal_snntorch_leaky():
    from snntorch import surrogate

    from snn_agent.snntorch_backend import _leaky_steps, if_steps

    torch.manual_seed(0)
    th = torch.rand(4, 1, 1, dtype=torch.float64) + 0.25
    neuron = snn.Leaky(beta=1.0, threshold=th, reset_mechanism="subtract", spike_grad=surrogate.fast_sigmoid())
    T = 64
    cur = torch.rand(2, 4, 5, 5, dtype=torch.float64) * 1.2 - 0.1
    cur[0, 0, 0, :] = th[0, 0, 0] * 0.5         # membrane lands exactly on the threshold
    per = torch.rand(T, 2, 4, 5, 5, dtype=torch.float64) - 0.3
    for c, per_step in ((cur, False), (per, True)):
        ref = torch.stack(_leaky_steps(neuron, c, th, 0.5, T, per_step))
        out = if_steps(c, th, 0.5, T, per_step)
        assert out.dtype == ref.dtype and torch.equal(out, ref)
        assert ref.sum() > 0


def test_rate_policy_fast_steps_equal_snntorch_steps():
    from conversion.convert import convert_policy
    from snn_agent.checkpoint import build_policy
    from snn_agent.config import ModelConfig
    from snn_agent.snntorch_backend import RateSTPNPolicy

    net = convert_policy(build_policy(ModelConfig(hidden=8, n_actions=3), seed=0), mode="rate", rate_steps=16)
    mod = RateSTPNPolicy(net).eval()
    obs = torch.as_tensor(np.random.default_rng(0).integers(0, 256, (2, 1, 84, 84)), dtype=torch.float64)
    with torch.no_grad():
        fast = mod(obs)
    slow = mod(obs)                                            # grad enabled: the snn.Leaky neurons
    assert torch.equal(fast[0], slow[0].detach()) and torch.equal(fast[3]["spikes2"], slow[3]["spikes2"].detach())
    assert slow[3]["spikes1"].sum() > 0
