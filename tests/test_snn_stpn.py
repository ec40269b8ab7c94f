"""STPN layer: equations vs hand computation, batching, float64, state reset/detach, policy shapes."""
import math

import numpy as np
import pytest
import torch

from snn_agent.config import ModelConfig
from snn_agent.policy import Policy, reset_state
from snn_agent.stpn import STPN, STPNState, detach_state, stpn_step

torch.set_num_threads(1)


def test_hand_computed_two_steps():
    """I = 1, H = 1 (z = [x; h]); numbers worked out by hand."""
    d = torch.float64
    W = torch.tensor([[3.0, 4.0]], dtype=d)
    b = torch.tensor([0.0], dtype=d)
    lam = torch.tensor([[0.5, 0.25]], dtype=d)
    gamma = torch.tensor([[0.1, 0.2]], dtype=d)
    h0 = torch.zeros(1, 1, dtype=d)
    F0 = torch.zeros(1, 1, 2, dtype=d)
    # step 1: x = 1: G = [3, 4], N = 5, a = 3/5 = 0.6, h1 = tanh(0.6); F1 = gamma * h1 * [1, 0]
    h1, F1, ex = stpn_step(W, b, lam, gamma, torch.tensor([[1.0]], dtype=d), h0, F0)
    assert ex["norm"].item() == pytest.approx(5.0, abs=1e-15)
    assert ex["pre"].item() == pytest.approx(0.6, abs=1e-15)
    t1 = math.tanh(0.6)
    assert h1.item() == pytest.approx(t1, abs=1e-15)
    assert F1[0, 0].tolist() == pytest.approx([0.1 * t1, 0.0], abs=1e-15)
    # step 2: x = 2, z = [2, h1]; G = [3 + 0.1 h1, 4]; N = |G|; a = (G . z) / N
    #         F2 = lam * F1 / N + gamma * h2 * z
    g0 = 3.0 + 0.1 * t1
    N = math.sqrt(g0 ** 2 + 16.0)
    t2 = math.tanh((g0 * 2.0 + 4.0 * t1) / N)
    h2, F2, _ = stpn_step(W, b, lam, gamma, torch.tensor([[2.0]], dtype=d), h1, F1)
    assert h2.item() == pytest.approx(t2, abs=1e-14)
    expect_F2 = [0.5 * 0.1 * t1 / N + 0.1 * t2 * 2.0, 0.25 * 0.0 / N + 0.2 * t2 * t1]
    assert F2[0, 0].tolist() == pytest.approx(expect_F2, abs=1e-14)


def _loop_reference(W, b, lam, gamma, x, h, F):
    """Scalar-loop version of BRIEF section 2 (independent of the vectorised code)."""
    B, H, K = F.shape
    h_new = np.zeros((B, H))
    F_new = np.zeros((B, H, K))
    for n in range(B):
        z = list(x[n]) + list(h[n])
        for i in range(H):
            G = [W[i][f] + F[n][i][f] for f in range(K)]
            N = math.sqrt(sum(g * g for g in G)) + 1e-16
            h_new[n, i] = math.tanh(sum(G[f] / N * z[f] for f in range(K)) + b[i])
        for i in range(H):
            G = [W[i][f] + F[n][i][f] for f in range(K)]
            N = math.sqrt(sum(g * g for g in G)) + 1e-16
            for f in range(K):
                F_new[n, i, f] = lam[i][f] * F[n][i][f] / N + gamma[i][f] * h_new[n, i] * z[f]
    return h_new, F_new


def test_batched_step_matches_scalar_loop():
    rng = np.random.default_rng(1)
    B, I, H = 3, 4, 2
    K = I + H
    W, lam, gamma, F = (rng.normal(size=s) for s in [(H, K), (H, K), (H, K), (B, H, K)])
    b, x, h = rng.normal(size=H), rng.normal(size=(B, I)), rng.uniform(-1, 1, size=(B, H))
    t = lambda a: torch.tensor(a, dtype=torch.float64)  # noqa: E731
    h1, F1, _ = stpn_step(t(W), t(b), t(lam), t(gamma), t(x), t(h), t(F))
    rh, rF = _loop_reference(W, b, lam, gamma, x, h, F)
    np.testing.assert_allclose(h1.numpy(), rh, rtol=0, atol=1e-13)
    np.testing.assert_allclose(F1.numpy(), rF, rtol=0, atol=1e-13)


def test_energy_proxy_and_fmax_clip():
    torch.manual_seed(0)
    layer = STPN(5, 3).double()
    x = torch.randn(2, 5, dtype=torch.float64)
    st = layer.init_state(2)
    st = STPNState(st.h, torch.randn_like(st.F))
    _, _, ex = layer(x, st, energy=True)
    G = layer.W + st.F
    z = torch.cat([x, st.h], -1)
    N = G.norm(dim=-1, keepdim=True) + 1e-16
    expect = (z.unsqueeze(1) ** 2 * (G / N).abs()).sum((1, 2))
    torch.testing.assert_close(ex["energy"], expect, rtol=1e-12, atol=0)
    p = layer.effective_params()
    _, F, _ = stpn_step(p["W"], p["b"], p["lam"] * 50, p["gamma"] * 1e4, x, st.h, st.F, f_max=0.01)
    assert F.abs().max().item() == pytest.approx(0.01)


def test_init_ranges_and_state_shapes():
    torch.manual_seed(0)
    H, I = 64, 100
    layer = STPN(I, H)
    assert layer.n_synapses == H * (I + H)
    assert 0 <= layer.lam.min() and layer.lam.max() <= 1
    assert layer.gamma.abs().max() <= 1e-3 / 8 and layer.W.abs().max() <= 1 / 8
    st = layer.init_state(3)
    assert st.h.shape == (3, H) and st.F.shape == (3, H, I + H) and not st.F.any()


def test_reset_state_zeroes_only_finished_episodes_and_detach():
    layer = STPN(3, 2)
    x = torch.randn(4, 3)
    _, st, _ = layer(x)
    _, st, _ = layer(x, st)
    assert st.F.requires_grad
    done = np.array([False, True, False, True])
    r = reset_state(st, done)
    assert not r.F[1].any() and not r.h[3].any() and not r.F[3].any()
    torch.testing.assert_close(r.F[[0, 2]], st.F[[0, 2]])
    torch.testing.assert_close(r.h[[0, 2]], st.h[[0, 2]])
    d = detach_state(r)
    assert not d.F.requires_grad and torch.equal(d.F, r.F)


def test_policy_float64_matches_explicit_chain():
    """The whole policy runs in float64 and equals conv -> stpn_step -> heads done by hand."""
    torch.manual_seed(0)
    pol = Policy(ModelConfig(kind="stpn", hidden=8, n_actions=3)).double()
    obs = torch.randint(0, 256, (2, 3, 1, 84, 84), dtype=torch.uint8)
    st = pol.init_state(2)
    assert st.F.dtype == torch.float64
    h = torch.zeros(2, 8, dtype=torch.float64)
    F = torch.zeros(2, 8, 2592 + 8, dtype=torch.float64)
    for t in range(3):
        logits, value, st, ex = pol(obs[:, t], st)
        x = pol.torso(obs[:, t].double() / 255.0)
        c = pol.core
        h, F, _ = stpn_step(c.W, c.b, c.lam, c.gamma, x, h, F)
        torch.testing.assert_close(logits, pol.pi(h), rtol=0, atol=1e-12)
        torch.testing.assert_close(value, pol.v(h).squeeze(-1), rtol=0, atol=1e-12)
    assert logits.dtype == torch.float64 and value.shape == (2,)
    assert ex["features"].shape == (2, 2592) and ex["norm"].shape == (2, 8)
    # float32 copy agrees to float32 precision
    p32 = Policy(ModelConfig(kind="stpn", hidden=8, n_actions=3))
    p32.load_state_dict({k: v.float() for k, v in pol.state_dict().items()})
    l32, _, _, _ = p32(obs[:, 0])
    l64, _, _, _ = pol(obs[:, 0])
    torch.testing.assert_close(l32.double(), l64, rtol=1e-4, atol=1e-5)


def test_policy_rejects_wrong_observation_shape():
    from mstpn_base.errors import DataFormatError

    pol = Policy(ModelConfig(kind="stpn", hidden=4, n_actions=3))
    with pytest.raises(DataFormatError, match="84, 84"):
        pol(torch.zeros(2, 84, 84))
    with pytest.raises(DataFormatError, match="84, 84"):
        pol(torch.zeros(2, 4, 84, 84))


@pytest.mark.filterwarnings("error::RuntimeWarning")   # a silent fallback to eager would fail here
@pytest.mark.parametrize("kind", ["stpn", "mstpn"])
def test_compiled_step_matches_eager_values_and_gradients(kind):
    """torch.compile'd step (training speed) = eager step: float64, so only summation order differs
    (tolerance 1e-10 relative: sums over K = 2596 terms in another order differ by ~1e-13)."""
    from snn_agent.checkpoint import build_policy
    from snn_agent.config import ModelConfig

    torch.manual_seed(0)
    grads, outs = [], []
    for compiled in (False, True):
        pol = build_policy(ModelConfig(kind=kind, hidden=4, n_actions=3, noise=False), seed=2,
                           dtype=torch.float64)
        core = pol.core
        if compiled:
            core.compile_step()
        x = torch.rand(3, 2, core.input_size, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
        state, hs = None, []
        for t in range(3):
            h, state, _ = core(x[t], state)
            hs.append(h)
        loss = torch.stack(hs).square().sum() + state.F.sum()
        loss.backward()
        outs.append(torch.cat([torch.stack(hs).flatten(), state.F.flatten()]).detach())
        grads.append(torch.cat([p.grad.flatten() for p in core.parameters()]))
    assert torch.allclose(outs[0], outs[1], rtol=1e-10, atol=1e-14)
    assert torch.allclose(grads[0], grads[1], rtol=1e-10, atol=1e-14)
    assert grads[0].abs().max() > 0
