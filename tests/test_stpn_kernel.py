"""The fused numba STPN step (snn_agent/stpn_kernel.py) against autograd of the eager stpn_step.

Tolerances: float64 kernel vs float64 eager autograd 1e-10 relative (only the summation order
differs: sums over K terms reassociated, ~1e-15 relative each); float32 kernel vs float64 eager:
its error may be at most 4x the float32 eager step's own error against float64 (plus 1e-7 of the
gradient's largest value), i.e. no less accurate than the torch step in float32 to within a
rounding-order factor.
"""
from __future__ import annotations

import pytest
import torch

from snn_agent import stpn_kernel as sk
from snn_agent.stpn import STPN, NORM_EPS, STPNState, reset_state, stpn_step

pytestmark = pytest.mark.skipif(not sk.AVAILABLE, reason="numba not installed")

F64 = torch.float64


def _params(H, K, dtype=F64, seed=0, scale=1.0):
    g = torch.Generator().manual_seed(seed)
    W = (torch.rand(H, K, generator=g, dtype=F64) * 2 - 1) * scale
    b = torch.rand(H, generator=g, dtype=F64) * 2 - 1
    lam = torch.rand(H, K, generator=g, dtype=F64)
    gamma = (torch.rand(H, K, generator=g, dtype=F64) * 2 - 1) * 0.5
    return [p.to(dtype).requires_grad_() for p in (W, b, lam, gamma)]


def _sequence(step, params, xs, h0, F0, dones, wh, wF, use_extras=False):
    """Loss of a T-step sequence: sum_t <wh_t, h_t> + <wF, F_T> (+ the extras), with the state
    zeroed after the steps whose ``dones`` hold, as snn_agent.ppo.rerun_sequence does."""
    W, b, lam, gamma = params
    state, loss = STPNState(h0, F0), 0.0
    for t, x in enumerate(xs):
        h, F, ex = step(W, b, lam, gamma, x, state.h, state.F)
        loss = loss + (wh[t] * h).sum()
        if use_extras:
            loss = loss + ex["norm"].sin().sum() + (ex["pre"] ** 2).sum() + ex["z"].cos().sum()
        state = STPNState(h, F)
        if dones[t].any():
            state = reset_state(state, dones[t])
    return loss + (wF * state.F).sum()


def _inputs(B, I, H, T, dtype=F64, seed=1, nonzero_state=True):
    g = torch.Generator().manual_seed(seed)
    K = I + H
    xs = [torch.randn(B, I, generator=g, dtype=F64).to(dtype).requires_grad_() for _ in range(T)]
    h0 = (torch.randn(B, H, generator=g, dtype=F64) * 0.5 * nonzero_state).to(dtype).requires_grad_()
    F0 = (torch.randn(B, H, K, generator=g, dtype=F64) * 0.3 * nonzero_state).to(dtype).requires_grad_()
    dones = torch.rand(T, B, generator=g) < 0.3
    wh = torch.randn(T, B, H, generator=g, dtype=F64).to(dtype)
    wF = torch.randn(B, H, K, generator=g, dtype=F64).to(dtype)
    return xs, h0, F0, dones, wh, wF


def _kernel(W, b, lam, gamma, x, h, F, **options):
    return sk.fused_stpn_step(W, b, lam, gamma, x, h, F, norm_eps=NORM_EPS, **options)


def _grads(step, params, inputs, use_extras=False):
    xs, h0, F0, dones, wh, wF = inputs
    leaves = list(params) + list(xs) + [h0, F0]
    loss = _sequence(step, params, xs, h0, F0, dones, wh, wF, use_extras)
    return loss.detach(), torch.autograd.grad(loss, leaves)


def _rel(a, b):
    return ((a - b).abs().max() / b.abs().max().clamp_min(1e-300)).item()


@pytest.mark.parametrize("shape", [(1, 1, 1), (2, 2, 3), (3, 1, 2), (1, 3, 1)])
def test_gradcheck_float64_tiny(shape):
    """torch.autograd.gradcheck of the Function: every input, every output (norm and pre too)."""
    B, I, H = shape
    K = I + H
    params = _params(H, K, seed=B + I + H)
    g = torch.Generator().manual_seed(5)
    z = torch.randn(B, K, generator=g, dtype=F64, requires_grad=True)
    F = (torch.randn(B, H, K, generator=g, dtype=F64) * 0.3).requires_grad_()
    assert torch.autograd.gradcheck(lambda *a: sk.STPNStepFunction.apply(*a, NORM_EPS),
                                    (*params, z, F), eps=1e-6, atol=1e-7, rtol=1e-5)


@pytest.mark.parametrize("case", range(8))
def test_chained_steps_match_eager_autograd_float64(case):
    """Random shapes (small H, K; b = 1..5), 2..5 chained steps with episode resets between steps,
    a loss on every h and on the final F: the value and the gradients of W, b, lam, gamma, every
    x, h_0 and F_0 equal eager autograd to 1e-10 relative."""
    g = torch.Generator().manual_seed(100 + case)
    B, I, H, T = (int(torch.randint(lo, hi + 1, (1,), generator=g)) for lo, hi in ((1, 5), (1, 7), (1, 6), (2, 5)))
    params = _params(H, I + H, seed=case)
    inputs = _inputs(B, I, H, T, seed=case, nonzero_state=case % 2 == 0)
    l_ref, g_ref = _grads(stpn_step, params, inputs)
    l_k, g_k = _grads(_kernel, params, inputs)
    assert abs(l_k - l_ref) <= 1e-10 * abs(l_ref)
    for a, r in zip(g_k, g_ref):
        assert _rel(a, r) < 1e-10
    assert all(r.abs().max() > 0 for r in g_ref[:4])


def test_extras_values_and_their_gradients():
    """z, norm, pre equal the eager extras; a loss on them backpropagates like autograd's."""
    B, I, H, T = 3, 4, 5, 3
    params = _params(H, I + H, seed=3)
    inputs = _inputs(B, I, H, T, seed=3)
    W, b, lam, gamma = params
    x, h0, F0 = inputs[0][0], inputs[1], inputs[2]
    ref, ker = stpn_step(W, b, lam, gamma, x, h0, F0), _kernel(W, b, lam, gamma, x, h0, F0)
    assert set(ker[2]) == {"z", "norm", "pre"}
    for k in ("z", "norm", "pre"):
        torch.testing.assert_close(ker[2][k], ref[2][k], rtol=1e-13, atol=1e-15)
    l_ref, g_ref = _grads(stpn_step, params, inputs, use_extras=True)
    l_k, g_k = _grads(_kernel, params, inputs, use_extras=True)
    assert abs(l_k - l_ref) <= 1e-10 * abs(l_ref)
    for a, r in zip(g_k, g_ref):
        assert _rel(a, r) < 1e-10


def _vector_norm_step(W, b, lam, gamma, x, h, F):
    """stpn_step with the row norm by torch.linalg.vector_norm, whose gradient at a zero row is
    the subgradient 0 (stpn_step's sqrt(sum G^2) gives NaN there)."""
    z = torch.cat([x, h], dim=-1)
    G = W.unsqueeze(0) + F
    norm = torch.linalg.vector_norm(G, dim=-1) + NORM_EPS
    pre = torch.bmm(G, z.unsqueeze(-1)).squeeze(-1) / norm + b
    h_new = torch.tanh(pre)
    F_new = lam * (F / norm.unsqueeze(-1)) + gamma * (h_new.unsqueeze(-1) * z.unsqueeze(-2))
    return h_new, F_new, {"z": z, "norm": norm, "pre": pre}


def test_zero_rows_of_G():
    """A row of W zero and F_0 = 0: that row of G is zero at the first step (N = 1e-16).  The
    kernel's gradients are finite and equal those of the vector_norm form; the eager form is NaN
    there (sqrt's derivative at 0), so it cannot serve as the reference."""
    B, I, H, T = 2, 3, 4, 3
    params = _params(H, I + H, seed=7)
    with torch.no_grad():
        params[0][1] = 0.0
    inputs = _inputs(B, I, H, T, seed=7, nonzero_state=False)
    _, g_nan = _grads(stpn_step, params, inputs)
    assert torch.isnan(g_nan[0]).any()
    l_ref, g_ref = _grads(_vector_norm_step, params, inputs)
    l_k, g_k = _grads(_kernel, params, inputs)
    assert abs(l_k - l_ref) <= 1e-10 * abs(l_ref)
    for a, r in zip(g_k, g_ref):
        assert torch.isfinite(a).all()
        assert _rel(a, r) < 1e-10


def test_pong_shape_and_noncontiguous_inputs():
    """The Pong layer's shape (H = 64, K = 2,656, b = 4: the kernels' vector loops and their
    remainders) over two steps, F_0 a non-contiguous view; float64 to 1e-10 relative."""
    B, I, H, T = 4, 2592, 64, 2
    params = _params(H, I + H, seed=11, scale=1 / 8)
    xs, h0, F0, dones, wh, wF = _inputs(B, I, H, T, seed=11)
    F0 = F0.detach().transpose(0, 1).contiguous().transpose(0, 1).requires_grad_()
    assert not F0.is_contiguous()
    inputs = (xs, h0, F0, dones, wh, wF)
    l_ref, g_ref = _grads(stpn_step, params, inputs)
    l_k, g_k = _grads(_kernel, params, inputs)
    assert abs(l_k - l_ref) <= 1e-10 * abs(l_ref)
    for a, r in zip(g_k, g_ref):
        assert _rel(a, r) < 1e-10


def test_float32_as_accurate_as_the_torch_step():
    """float32 kernel against float64 autograd: its error is at most 4x the float32 eager step's
    (+ 1e-7 of the largest gradient), at the Pong layer's K."""
    B, I, H, T = 4, 300, 16, 4
    p64 = _params(H, I + H, seed=13, scale=1 / 4)
    in64 = _inputs(B, I, H, T, seed=13)
    p32 = [p.detach().float().requires_grad_() for p in p64]

    def as32(inputs):
        xs, h0, F0, dones, wh, wF = inputs
        return ([x.detach().float().requires_grad_() for x in xs], h0.detach().float().requires_grad_(),
                F0.detach().float().requires_grad_(), dones, wh.float(), wF.float())

    _, g64 = _grads(stpn_step, p64, in64)
    _, g_eager32 = _grads(stpn_step, p32, as32(in64))
    _, g_k32 = _grads(_kernel, p32, as32(in64))
    for k, e, r in zip(g_k32, g_eager32, g64):
        assert k.dtype == torch.float32
        assert _rel(k.double(), r) <= 4 * _rel(e.double(), r) + 1e-7
        assert _rel(k.double(), r) < 1e-4


def test_backward_accumulates_like_autograd_grad():
    """.backward() fills .grad with what torch.autograd.grad returns, and accumulates on a second
    call; two runs are bitwise equal (deterministic kernels)."""
    B, I, H, T = 3, 5, 4, 4
    params = _params(H, I + H, seed=17)
    inputs = _inputs(B, I, H, T, seed=17)
    _, g1 = _grads(_kernel, params, inputs)
    _, g2 = _grads(_kernel, params, inputs)
    assert all(torch.equal(a, b) for a, b in zip(g1, g2))
    for _ in range(2):
        _sequence(_kernel, params, *inputs).backward()
    for p, g in zip(params, g1):
        torch.testing.assert_close(p.grad, 2 * g, rtol=1e-14, atol=0)


def test_dispatch_sends_uncovered_calls_to_the_fallback():
    """energy, per-game Hebbian noise (B, H, K), mixed or half dtypes go to the fallback; the rest
    (f_max and per-synapse noise (H, K) included) to the kernel (whose grad_fn is the
    Function's), without gradients too, with the same values."""
    calls = []

    def fallback(*args, **kw):
        calls.append(kw)
        return stpn_step(*args, **kw)

    step = sk.kernel_step(fallback)
    W, b, lam, gamma = _params(3, 5)
    x, h, F = torch.randn(2, 2, dtype=F64), torch.zeros(2, 3, dtype=F64), torch.zeros(2, 3, 5, dtype=F64)
    h1, _, _ = step(W, b, lam, gamma, x, h, F)
    assert not calls and type(h1.grad_fn).__name__ == "STPNStepFunctionBackward"
    for kw in ({"f_max": 0.5}, {"hebb_noise": torch.ones(3, 5, dtype=F64)},
               {"hebb_noise": torch.ones(1, 3, 5, dtype=F64), "f_max": 0.1}):
        h1, _, _ = step(W, b, lam, gamma, x, h, F, **kw)
        assert not calls and type(h1.grad_fn).__name__ == "STPNStepFunctionBackward"
    step(W, b, lam, gamma, x, h, F, hebb_noise=torch.ones(2, 3, 5, dtype=F64))
    step(W, b, lam, gamma, x, h, F, hebb_noise=torch.ones(3, 5))
    step(W, b, lam, gamma, x, h, F, energy=True)
    with torch.no_grad():
        h0, F0, _ = step(W, b, lam, gamma, x, h, F)
    assert len(calls) == 3 and h0.grad_fn is None
    h1, F1, _ = step(W, b, lam, gamma, x, h, F)
    assert torch.equal(h0, h1) and torch.equal(F0, F1)     # the same kernel: bit for bit
    step(W, b, lam, gamma, x.float(), h, F)
    half = [t.detach().half() for t in (W, b, lam, gamma, x, h, F)]
    half[0].requires_grad_()
    step(*half)
    assert len(calls) == 5


def test_compile_step_selects_the_kernel_for_stpn_and_mstpn():
    """STPN.compile_step runs the kernel in training, for the m-STPN (f_max, per-synapse noise)
    too; the m-STPN's gradients through it equal those of its eager step to 1e-10 relative."""
    from snn_agent.device_constrained import MSTPN

    layer = STPN(6, 4).double()
    layer.compile_step()
    x = torch.randn(2, 6, dtype=F64)
    h, state, _ = layer(x)
    assert type(h.grad_fn).__name__ == "STPNStepFunctionBackward"
    torch.manual_seed(3)
    m = MSTPN(6, 4).double()
    state = STPNState(torch.randn(2, 4, dtype=F64) * 0.5, torch.randn(2, 4, 10, dtype=F64) * m.f_max)
    grads = {}
    for kind in ("eager", "kernel"):
        if kind == "kernel":
            m.compile_step()
        torch.manual_seed(4)                   # the same c2c noise draws in both
        h, st, _ = m(x, state)
        h2, st2, _ = m(x, st)
        if kind == "kernel":
            assert type(h2.grad_fn).__name__ == "STPNStepFunctionBackward"
        loss = (h2 * torch.arange(4.0, dtype=F64)).sum() + (st2.F.sin()).sum()
        grads[kind] = torch.autograd.grad(loss, list(m.parameters()))
    for a, r in zip(grads["kernel"], grads["eager"]):
        assert _rel(a, r) < 1e-10


def test_a_first_call_without_gradients_still_selects_the_kernel(monkeypatch):
    """The kernels' one-time check runs with gradients even when the first call is PPO's no-grad
    rollout; a failing check would send every later call to the fallback, with a warning."""
    import warnings

    monkeypatch.setattr(sk, "_READY", {})
    step = sk.kernel_step(lambda *a, **k: pytest.fail("the fallback ran"))
    W, b, lam, gamma = _params(3, 5)
    x, h, F = torch.randn(2, 2, dtype=F64), torch.zeros(2, 3, dtype=F64), torch.zeros(2, 3, 5, dtype=F64)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with torch.no_grad():
            step(W, b, lam, gamma, x, h, F)
        h1, _, _ = step(W, b, lam, gamma, x, h, F)
    assert sk._READY == {F64: True} and type(h1.grad_fn).__name__ == "STPNStepFunctionBackward"


def test_a_sample_gets_the_same_bits_in_any_batch():
    """PPO rolls out 16 games without gradients and re-runs them in minibatches of 4 with
    gradients: through the kernel a game's step is bit-identical in both, so the first pass's
    probability ratios are exactly 1."""
    torch.manual_seed(0)
    layer = STPN(40, 8)
    layer.compile_step()
    x = torch.randn(16, 40)
    h, F = torch.randn(16, 8) * 0.3, torch.randn(16, 8, 48) * 0.01
    with torch.no_grad():
        h16, s16, _ = layer(x, STPNState(h, F))
    h4, s4, _ = layer(x[4:8], STPNState(h[4:8], F[4:8]))
    assert h4.grad_fn is not None
    assert torch.equal(h16[4:8], h4.detach()) and torch.equal(s16.F[4:8], s4.F.detach())


def _noisy_clipped(f_max, noises):
    """Steps with the m-STPN's options: a clip at ``f_max`` and the t-th (H, K) noise factor at
    step t (the same in the eager and the kernel sequence)."""
    def make(base):
        it = iter(noises)

        def step(W, b, lam, gamma, x, h, F):
            return base(W, b, lam, gamma, x, h, F, f_max=f_max, hebb_noise=next(it))
        return step
    return make(stpn_step), make(_kernel)


@pytest.mark.parametrize("case", range(6))
def test_clipped_noisy_steps_match_eager_autograd_float64(case):
    """The m-STPN's step: F' clipped to +-f_max (f_max chosen so that 20-60 % of F' saturates)
    and a per-synapse noise factor on the Hebbian term; values and every gradient (noise's
    too) equal eager autograd to 1e-10 relative over chained steps with resets."""
    g = torch.Generator().manual_seed(200 + case)
    B, I, H, T = (int(torch.randint(lo, hi + 1, (1,), generator=g)) for lo, hi in ((1, 5), (1, 7), (1, 6), (2, 5)))
    K = I + H
    params = _params(H, K, seed=case)
    inputs = _inputs(B, I, H, T, seed=case)
    f_max = 0.12
    noises = [(1 + 0.3 * torch.randn(H, K, generator=g, dtype=F64)).clamp_min(0).requires_grad_()
              for _ in range(T)]
    eager, kernel = _noisy_clipped(f_max, noises)
    with torch.no_grad():
        _, F1, _ = stpn_step(*params, inputs[0][0], inputs[1], inputs[2], f_max=f_max, hebb_noise=noises[0])
        saturated = (F1.abs() == f_max).double().mean().item()
    assert 0.2 < saturated < 0.6
    results = {}
    for name, step in (("eager", eager), ("kernel", kernel)):
        xs, h0, F0, dones, wh, wF = inputs
        loss = _sequence(step, params, xs, h0, F0, dones, wh, wF)
        results[name] = (loss.detach(), torch.autograd.grad(loss, list(params) + list(xs) + [h0, F0] + noises))
    (l_ref, g_ref), (l_k, g_k) = results["eager"], results["kernel"]
    assert abs(l_k - l_ref) <= 1e-10 * abs(l_ref)
    for a, r in zip(g_k, g_ref):
        assert _rel(a, r) < 1e-10


def test_gradcheck_with_clip():
    """gradcheck of the Function with f_max (entries away from the clip's kinks by > 1e-3)."""
    B, I, H = 2, 2, 3
    K = I + H
    params = _params(H, K, seed=9)
    g = torch.Generator().manual_seed(6)
    z = torch.randn(B, K, generator=g, dtype=F64, requires_grad=True)
    F = (torch.randn(B, H, K, generator=g, dtype=F64) * 0.3).requires_grad_()
    f_max = 0.1
    _, F1, _, _ = sk.STPNStepFunction.apply(*params, z, F, NORM_EPS, None)
    assert ((F1.abs() - f_max).abs() > 1e-3).all() and (F1.abs() > f_max).any() and (F1.abs() < f_max).any()
    assert torch.autograd.gradcheck(lambda *a: sk.STPNStepFunction.apply(*a, NORM_EPS, f_max),
                                    (*params, z, F), eps=1e-6, atol=1e-7, rtol=1e-5)


def test_clip_gradient_passes_at_the_bound_as_torch_clamp():
    """An update landing exactly on f_max keeps its gradient (torch.clamp's rule); beyond, 0."""
    W = torch.zeros(1, 2, dtype=F64, requires_grad=True)
    b = torch.zeros(1, dtype=F64, requires_grad=True)
    lam = torch.ones(1, 2, dtype=F64, requires_grad=True)
    gamma = torch.zeros(1, 2, dtype=F64, requires_grad=True)
    x, h = torch.zeros(1, 1, dtype=F64), torch.zeros(1, 1, dtype=F64)
    F = torch.tensor([[[0.5, 2.0]]], dtype=F64, requires_grad=True)
    for step in (stpn_step, _kernel):
        _, free, _ = step(W, b, lam, gamma, x, h, F)
        f_max = free[0, 0, 0].item()                  # the first update lands on the bound exactly
        _, F1, _ = step(W, b, lam, gamma, x, h, F, f_max=f_max)
        (g,) = torch.autograd.grad(F1.sum(), [lam])
        assert F1[0, 0, 0].item() == f_max and F1[0, 0, 1].item() == f_max < free[0, 0, 1].item()
        assert g[0, 0].item() == free[0, 0, 0].item() and g[0, 1].item() == 0.0
