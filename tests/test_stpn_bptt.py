"""One-node BPTT of the STPN (snn_agent/stpn_bptt.py) against autograd through the step loop:
same hidden states, same gradients of W, b, lambda, gamma, the input features and the start
state, with episode resets inside the sequence; and the same PPO loss and gradients on a tiny
rollout of the whole policy."""
import numpy as np
import pytest
import torch

from snn_agent.config import ModelConfig
from snn_agent.device_constrained import MSTPN
from snn_agent.policy import Policy, reset_state
from snn_agent.stpn import STPN
from snn_agent.stpn_bptt import core_sequence, fast_path, stpn_step_backward

torch.set_num_threads(1)


def _loop(core, x, state, dones):
    """The reference: autograd through a plain step loop."""
    hs = []
    for t in range(x.shape[0]):
        h, state, _ = core(x[t], state)
        hs.append(h)
        if dones[t].any():
            state = reset_state(state, dones[t])
    return torch.stack(hs)


def _setup(dtype, I=7, H=5, B=3, T=9, seed=0):
    torch.manual_seed(seed)
    core = STPN(I, H).to(dtype)
    with torch.no_grad():       # larger plasticity than the initialisation, so F matters
        core.gamma.mul_(300.0)
    x = torch.randn(T, B, I, dtype=dtype)
    st = core.init_state(B)
    st = type(st)(torch.randn_like(st.h) * 0.5, torch.randn_like(st.F) * 0.1)
    dones = np.zeros((T, B), dtype=bool)
    dones[2, 1] = dones[5, 0] = dones[5, 2] = dones[T - 1, 1] = True
    w = torch.randn(T, B, H, dtype=dtype)      # a loss that weighs every step's h differently
    return core, x, st, dones, w


def _grads(core, x, st, dones, w, fn):
    x = x.clone().requires_grad_(True)
    st = type(st)(*(s.clone().requires_grad_(True) for s in st))
    hs = fn(core, x, st, dones)
    core.zero_grad()
    (hs * w).sum().backward()
    return [hs.detach(), x.grad, st.h.grad, st.F.grad] + [p.grad.clone() for p in core.parameters()]


@pytest.mark.parametrize("dtype, tol", [(torch.float64, 1e-12), (torch.float32, 2e-5)])
def test_sequence_equals_autograd_step_loop(dtype, tol):
    """Values and every gradient equal within ``tol`` relative to each tensor's largest entry
    (float rounding: the reductions are summed in another order)."""
    core, x, st, dones, w = _setup(dtype)
    assert fast_path(core)
    ref = _grads(core, x, st, dones, w, _loop)
    new = _grads(core, x, st, dones, w, core_sequence)
    names = ["h", "x", "h0", "F0"] + [n for n, _ in core.named_parameters()]
    for name, a, b in zip(names, ref, new):
        scale = a.abs().max().item()
        assert scale > 0, name
        assert (a - b).abs().max().item() <= tol * scale, name


def test_reset_cuts_gradient_to_the_start_state():
    """An environment reset after step 0 whose step-0 output does not enter the loss gets no
    gradient at its start state; the others do."""
    core, x, st, dones, w = _setup(torch.float64)
    dones[:] = False
    dones[0, 1] = True
    w[0, 1] = 0.0
    g = _grads(core, x, st, dones, w, core_sequence)
    assert torch.all(g[2][1] == 0) and torch.all(g[3][1] == 0)
    assert g[2][0].abs().max() > 0 and g[3][2].abs().max() > 0


def test_step_backward_matches_autograd_of_one_step():
    core, x, st, _, _ = _setup(torch.float64)
    from snn_agent.stpn import stpn_step

    p = [t.detach().clone().requires_grad_(True) for t in (core.W, core.b, core.lam, core.gamma)]
    xs, h, F = (t.detach().clone().requires_grad_(True) for t in (x[0], st.h, st.F))
    h1, F1, ex = stpn_step(*p, xs, h, F)
    gF1, gh1 = torch.randn_like(F1), torch.randn_like(h1)
    auto = torch.autograd.grad([h1, F1], [F, xs, h] + p, [gh1, gF1])
    acc = tuple(torch.full_like(t, 0.5) for t in p)        # earlier steps' share, added to
    g_F, g_z, g_par = stpn_step_backward(*(t.detach() for t in p), F.detach(), ex["z"].detach(),
                                         ex["norm"].detach(), ex["pre"].detach(), h1.detach(), gF1, gh1, acc)
    g_par = [g - 0.5 for g in g_par]
    mine = [g_F, g_z[:, :xs.shape[1]], g_z[:, xs.shape[1]:]] + g_par
    for a, b in zip(auto, mine):
        torch.testing.assert_close(b, a, rtol=1e-12, atol=1e-14)


def test_other_cores_take_the_step_loop():
    assert not fast_path(MSTPN(6, 4))
    assert not fast_path(Policy(ModelConfig(kind="lstm")).core)
    core, x, st, dones, _ = _setup(torch.float64)
    with torch.no_grad():   # no autograd: the step loop, same values
        torch.testing.assert_close(core_sequence(core, x, st, dones), _loop(core, x, st, dones), rtol=0, atol=0)


def _ppo_minibatch_loss(learner, buf, start, idx):
    """The PPO loss of one minibatch of the update (as PPO.step computes it)."""
    from snn_agent.ppo import gae, index_state, ppo_losses, rerun_sequence

    cfg, pol = learner.cfg, learner.policy
    dones_f = torch.as_tensor(buf["dones"], dtype=buf["values"].dtype)
    adv, returns = gae(buf["rewards"], buf["values"], dones_f, buf["bootstrap"], cfg.discount, cfg.gae_lambda)
    logits, new_v = rerun_sequence(pol, buf["obs"][:, idx], index_state(start, idx), buf["dones"][:, idx.numpy()])
    dist = torch.distributions.Categorical(logits=logits)
    mb_adv = adv[:, idx]
    mb_adv = (mb_adv - mb_adv.mean()) / (mb_adv.std() + 1e-8)
    pg, vl, _, _ = ppo_losses(dist.log_prob(buf["actions"][:, idx]), buf["logp"][:, idx], mb_adv, new_v,
                              buf["values"][:, idx], returns[:, idx], cfg.clip_coef, cfg.clip_vloss)
    return pg + cfg.value_coef * vl - cfg.entropy_coef * dist.entropy().mean()


@pytest.mark.parametrize("dtype, compiled, tol", [(torch.float64, False, 1e-10), (torch.float32, True, 1e-4)])
def test_ppo_loss_and_gradients_unchanged(monkeypatch, dtype, compiled, tol):
    """On a tiny rollout of the whole policy (conv torso, STPN, heads; episode ends inside the
    sequence) the PPO minibatch loss and the gradient of every parameter equal those of autograd
    through the step loop: relative to each gradient's largest entry within 1e-10 in float64
    (eager), 1e-4 in float32 with the compiled step and backward (float rounding only)."""
    import snn_agent.ppo as ppo
    from test_snn_training import BanditEnv

    from snn_agent.config import TrainConfig

    torch.manual_seed(0)
    pol = Policy(ModelConfig(kind="stpn", hidden=8, n_actions=2)).to(dtype)
    with torch.no_grad():
        pol.core.gamma.mul_(300.0)
    if compiled:
        pol.core.compile_step()
    cfg = TrainConfig(algo="ppo", num_envs=4, n_steps=7, num_minibatches=2, update_epochs=1, frames=10**9)
    learner = ppo.PPO(pol, cfg)
    env = BanditEnv(4, length=3, seed=1)
    obs, st = env.reset(), pol.init_state(4)
    _, obs, st = learner.rollout(env, obs, st)
    buf, _, _ = learner.rollout(env, obs, st)
    assert buf["dones"].any()
    idx = torch.tensor([3, 1])
    results = []
    for seq in (lambda core, x, s, d: _loop(core, x, s, d), ppo.core_sequence):
        monkeypatch.setattr(ppo, "core_sequence", seq)
        pol.zero_grad()
        loss = _ppo_minibatch_loss(learner, buf, st, idx)
        loss.backward()
        results.append((loss.item(), {n: p.grad.clone() for n, p in pol.named_parameters()}))
    (l_ref, g_ref), (l_new, g_new) = results
    assert l_new == pytest.approx(l_ref, rel=tol, abs=0)
    for name, g in g_ref.items():
        scale = g.abs().max().item()
        assert scale > 0, name
        assert (g_new[name] - g).abs().max().item() <= tol * scale, name
