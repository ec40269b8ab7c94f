"""Recurrent PPO (snn_agent/ppo.py): GAE and the clipped objective by hand, sequence re-runs from
the stored state with resets inside the sequence, minibatches of whole environments, learning a
tiny task, exact resume; the evaluation protocol (sticky actions, seeds, 95 % CI)."""
import json

import numpy as np
import pytest
import torch

from mstpn_base.errors import MstpnError, ParameterError
from snn_agent.a2c import nstep_returns
from snn_agent.config import (EVAL_SEED_BASE, STICKY_ACTIONS, EnvConfig, ModelConfig, RunConfig, TrainConfig,
                              train_env_seed)
from snn_agent.policy import Policy
from snn_agent.ppo import PPO, env_minibatches, gae, index_state, ppo_losses, rerun_sequence

torch.set_num_threads(1)

from test_snn_training import CLASS_FRAMES as FRAMES  # noqa: E402,F401  (the shared toy task)
from test_snn_training import BanditEnv as CueEnv  # noqa: E402


def _cfg(**train):
    base = dict(algo="ppo", num_envs=4, n_steps=6, num_minibatches=2, update_epochs=2, frames=10**9,
                lr=1e-3, grad_clip=0.5)
    base.update(train)
    return TrainConfig(**base)


# -- GAE and the clipped objective, by hand ------------------------------------------------------
def test_gae_by_hand_and_lambda_one_is_nstep_return():
    r = torch.tensor([[1.0], [0.0], [2.0]])
    v = torch.tensor([[0.5], [1.0], [0.2]])
    d = torch.tensor([[0.0], [1.0], [0.0]])
    adv, ret = gae(r, v, d, torch.tensor([10.0]), discount=0.5, lam=0.5)
    # delta2 = 2 + 0.5*10 - 0.2 = 6.8 -> A2 = 6.8
    # delta1 = 0 + 0 (episode ended) - 1.0 = -1 -> A1 = -1 (no carry across the end)
    # delta0 = 1 + 0.5*1.0 - 0.5 = 1.0 -> A0 = 1.0 + 0.5*0.5*(-1) = 0.75
    assert adv[:, 0].tolist() == pytest.approx([0.75, -1.0, 6.8], abs=1e-6)
    assert ret[:, 0].tolist() == pytest.approx([1.25, 0.0, 7.0], abs=1e-6)
    g = torch.Generator().manual_seed(0)
    r, v = torch.randn(7, 3, generator=g), torch.randn(7, 3, generator=g)
    d = (torch.rand(7, 3, generator=g) < 0.3).float()
    boot = torch.randn(3, generator=g)
    _, ret1 = gae(r, v, d, boot, 0.9, 1.0)
    torch.testing.assert_close(ret1, nstep_returns(r, d, boot, 0.9), atol=1e-5, rtol=0)


def test_clipped_objective_by_hand():
    ratio = torch.tensor([1.5, 0.5, 1.05, 0.5])
    adv = torch.tensor([1.0, -1.0, 2.0, 1.0])
    old = torch.log(torch.tensor([0.2, 0.4, 0.3, 0.6]))
    new = (old + torch.log(ratio)).requires_grad_(True)
    old_v, new_v = torch.zeros(4), torch.tensor([0.5, -0.05, 0.2, 1.0])
    ret = torch.tensor([1.0, 1.0, 0.0, 0.0])
    pg, vl, kl, cf = ppo_losses(new, old, adv, new_v, old_v, ret, clip_coef=0.2, clip_vloss=True)
    # per sample max(-A r, -A clip(r, 0.8, 1.2)): -1.2, 0.8, -2.1, -0.5 (the pessimistic bound)
    assert pg.item() == pytest.approx((-1.2 + 0.8 - 2.1 - 0.5) / 4, abs=1e-6)
    # value: max((v - R)^2, (clip(v, -0.2, 0.2) - R)^2) = 0.64, 1.1025, 0.04, 1.0; halved mean
    assert vl.item() == pytest.approx(0.5 * (0.64 + 1.1025 + 0.04 + 1.0) / 4, abs=1e-6)
    _, vl_plain, _, _ = ppo_losses(new, old, adv, new_v, old_v, ret, 0.2, clip_vloss=False)
    assert vl_plain.item() == pytest.approx(0.5 * (0.25 + 1.1025 + 0.04 + 1.0) / 4, abs=1e-6)
    assert cf.item() == pytest.approx(0.75)                 # ratios 1.5, 0.5, 0.5 left [0.8, 1.2]
    lr = torch.log(ratio)
    assert kl.item() == pytest.approx(((ratio - 1) - lr).mean().item(), abs=1e-6)
    pg.backward()
    # clipped samples (0: r > 1 + eps with A > 0; 1: r < 1 - eps with A < 0) give no gradient;
    # the others d/dlogp (-A r / 4) = -A r / 4
    assert new.grad.tolist() == pytest.approx([0.0, 0.0, -2.0 * 1.05 / 4, -1.0 * 0.5 / 4], abs=1e-6)


# -- sequences, resets, minibatches --------------------------------------------------------------
class SpyCore(torch.nn.Module):
    def __init__(self, core):
        super().__init__()
        self.core, self.seen, self.active = core, [], False

    def init_state(self, *a, **k):
        return self.core.init_state(*a, **k)

    def forward(self, x, state=None, energy=False):
        if self.active:
            self.seen.append(state)
        return self.core(x, state, energy=energy)


@pytest.mark.parametrize("kind", ["stpn", "mstpn", "lstm"])
def test_rerun_from_stored_state_reproduces_the_rollout(kind):
    """The update re-runs each environment's sequence from the state stored at the rollout start
    (non-zero here: a second rollout), zeroing it at the episode ends inside the sequence: the
    rollout's log-probabilities and values come back, for all envs and for a subset of them."""
    torch.manual_seed(0)
    mcfg = ModelConfig(kind=kind, hidden=8, n_actions=2, noise=False)
    pol = Policy(mcfg).double()
    env = CueEnv(3, length=4, seed=1)
    learner = PPO(pol, _cfg(num_envs=3, n_steps=6, num_minibatches=1))
    obs, st = env.reset(), pol.init_state(3)
    _, obs, st = learner.rollout(env, obs, st)            # episode ends at steps 4 (and the 2nd at 8)
    assert st[0].abs().sum() > 0
    start = st
    buf, _, _ = learner.rollout(env, obs, start)
    assert buf["dones"].any() and not buf["dones"].all()
    with torch.no_grad():
        logits, v = rerun_sequence(pol, buf["obs"], start, buf["dones"])
        logp = torch.distributions.Categorical(logits=logits).log_prob(buf["actions"])
        torch.testing.assert_close(logp, buf["logp"], atol=1e-9, rtol=0)
        torch.testing.assert_close(v, buf["values"], atol=1e-9, rtol=0)
        idx = torch.tensor([2, 0])
        logits2, v2 = rerun_sequence(pol, buf["obs"][:, idx], index_state(start, idx), buf["dones"][:, idx.numpy()])
        torch.testing.assert_close(v2, buf["values"][:, idx], atol=1e-9, rtol=0)
        # without the resets the sequence after the episode end differs
        logits3, _ = rerun_sequence(pol, buf["obs"], start, np.zeros_like(buf["dones"]))
        assert not torch.allclose(logits3, logits, atol=1e-6)


def test_mstpn_reruns_replay_the_rollouts_device_noise():
    """The m-STPN trains with cycle-to-cycle noise on: the rollout records one (H, K) factor per
    step and the re-run replays them, so it reproduces the rollout's log-probabilities and values
    (first-pass ratios 1) for all envs and for a subset; fresh draws would not."""
    torch.manual_seed(0)
    pol = Policy(ModelConfig(kind="mstpn", hidden=8, n_actions=2, noise=True)).double().train()
    assert pol.core.noise
    with torch.no_grad():      # Hebbian rates near the device's bound, so the noise shows in the logits
        pol.core.gamma_raw.uniform_(-3 * pol.core.mapping.gamma_max, 3 * pol.core.mapping.gamma_max)
    env = CueEnv(3, length=4, seed=1)
    learner = PPO(pol, _cfg(num_envs=3, n_steps=6, num_minibatches=1))
    _, obs, start = learner.rollout(env, env.reset(), pol.init_state(3))
    buf, _, _ = learner.rollout(env, obs, start)
    H, K = pol.core.hidden_size, pol.core.input_size + pol.core.hidden_size
    assert len(buf["noise"]) == 6 and all(n.shape == (H, K) for n in buf["noise"])
    assert not torch.equal(buf["noise"][0], buf["noise"][1])
    with torch.no_grad():
        def rerun(idx, noise):
            logits, v = rerun_sequence(pol, buf["obs"][:, idx], index_state(start, idx), buf["dones"][:, idx.numpy()],
                                       noise=noise)
            return torch.distributions.Categorical(logits=logits).log_prob(buf["actions"][:, idx]), v
        for idx in (torch.arange(3), torch.tensor([2, 0])):
            logp, v = rerun(idx, buf["noise"])
            torch.testing.assert_close(logp, buf["logp"][:, idx], atol=1e-12, rtol=0)
            torch.testing.assert_close(v, buf["values"][:, idx], atol=1e-12, rtol=0)
        logp_fresh, _ = rerun(torch.arange(3), None)       # the untrained heads are small: ~1e-6
        assert (logp_fresh - buf["logp"]).abs().max() > 1e-8
        with pytest.raises(MstpnError, match="noise tape holds 2 steps"):
            rerun(torch.arange(3), buf["noise"][:2])


def test_state_is_zeroed_at_episode_ends_inside_the_sequence():
    torch.manual_seed(0)
    pol = Policy(ModelConfig(kind="stpn", hidden=8, n_actions=2))
    pol.core = SpyCore(pol.core)
    obs = torch.as_tensor(FRAMES[[0, 1, 0, 1, 0]]).view(5, 1, 1, 84, 84).expand(5, 2, 1, 84, 84)
    dones = np.zeros((5, 2), dtype=bool)
    dones[1, 0] = True                     # env 0's episode ends at step 1, env 1's goes on
    pol.core.active = True
    rerun_sequence(pol, obs, pol.init_state(2), dones)
    seen = pol.core.seen                   # the state given to steps 0..4
    assert len(seen) == 5
    assert seen[1].F[0].abs().sum() > 0 and seen[1].F[1].abs().sum() > 0
    assert not seen[2].F[0].any() and not seen[2].h[0].any()     # F_0 = 0, h_0 = 0 at the new episode
    assert seen[2].F[1].abs().sum() > 0                         # the other env keeps its state
    assert seen[3].F[0].abs().sum() > 0                         # and env 0 builds a new one


def test_minibatches_are_whole_environments():
    g = torch.Generator().manual_seed(3)
    parts = env_minibatches(8, 4, generator=g)
    assert len(parts) == 4 and all(len(p) == 2 for p in parts)
    assert sorted(torch.cat(parts).tolist()) == list(range(8))
    # in an update every forward pass of the core sees B / M environments, T steps in a row,
    # starting from the stored state of exactly those environments
    torch.manual_seed(0)
    pol = Policy(ModelConfig(kind="lstm", hidden=8, n_actions=2))
    pol.core = SpyCore(pol.core)
    cfg = _cfg(num_envs=4, n_steps=5, num_minibatches=2, update_epochs=3)
    learner = PPO(pol, cfg)
    env = CueEnv(4, length=100)
    obs, st = env.reset(), pol.init_state(4)
    obs, st, _, _ = learner.step(env, obs, st, 0)           # non-zero carried state
    carried = st
    pol.core.active = True
    learner.step(env, obs, carried, 0)
    seen = pol.core.seen
    n_roll = cfg.n_steps + 1                               # rollout (batch 4) + bootstrap
    upd = seen[n_roll:]
    assert all(s.h.shape[0] == 4 for s in seen[:n_roll])
    assert len(upd) == cfg.update_epochs * cfg.num_minibatches * cfg.n_steps
    assert all(s.h.shape[0] == 2 for s in upd)
    starts = [upd[i] for i in range(0, len(upd), cfg.n_steps)]
    rows = {tuple(np.round(carried.h[i].numpy(), 6)) for i in range(4)}
    for s in starts:                                       # each sequence starts from stored states
        assert {tuple(np.round(s.h[j].detach().numpy(), 6)) for j in range(2)} <= rows


# -- learning, training loop, resume ------------------------------------------------------------
@pytest.mark.parametrize("kind", ["stpn", "lstm"])
def test_ppo_learns_a_tiny_task(kind):
    torch.manual_seed(0)
    pol = Policy(ModelConfig(kind=kind, hidden=16, n_actions=2))
    env = CueEnv(8, length=5, seed=0)
    learner = PPO(pol, _cfg(num_envs=8, n_steps=8, num_minibatches=2, update_epochs=4, lr=3e-3,
                            entropy_coef=0.0, clip_coef=0.2))

    def p_correct():
        with torch.no_grad():
            p = torch.softmax(pol(FRAMES)[0], -1)
        return (p[0, 0].item() + p[1, 1].item()) / 2

    before = p_correct()
    obs, st = env.reset(), pol.init_state(8)
    for _ in range(25):
        obs, st, stats, n = learner.step(env, obs, st, 0)
    after = p_correct()
    assert n == 64 and stats.approx_kl is not None and stats.clip_frac is not None
    assert after > 0.8 and after > before + 0.25, (before, after)   # chance level 0.5


def _ppo_run(**train):
    t = dict(algo="ppo", num_envs=2, n_steps=4, num_minibatches=2, update_epochs=2, frames=10**6,
             log_every_updates=1, lr=1e-3, grad_clip=0.5, compile=False)
    t.update(train)
    return RunConfig.from_dict({"model": {"kind": "stpn", "hidden": 8}, "env": {"action_set": "updown"},
                                "train": t})


def test_ppo_train_loop_resume_reproduces_an_uninterrupted_run(tmp_path):
    """Episodes end exactly at rollout boundaries and the games do not depend on the seed, so a run
    stopped after 2 updates and resumed (weights, Adam state, torch RNG) must equal one of 4."""
    from snn_agent.checkpoint import load_policy
    from snn_agent.train import LATEST, train

    cfg = _ppo_run()
    factory = lambda c, seed: CueEnv(c.train.num_envs, length=c.train.n_steps, random=False)  # noqa: E731
    quiet = dict(progress=False, env_factory=factory, log=lambda *_: None)
    train(cfg, tmp_path / "a", max_updates=4, **quiet)
    train(cfg, tmp_path / "b", max_updates=2, **quiet)
    mid, _ = load_policy(tmp_path / "b" / LATEST)
    prog = train(cfg, tmp_path / "b", resume=True, max_updates=2, **quiet)
    assert prog["updates"] == 4
    a, _ = load_policy(tmp_path / "a" / LATEST)
    b, _ = load_policy(tmp_path / "b" / LATEST)
    for (k, x), y, m in zip(a.state_dict().items(), b.state_dict().values(), mid.state_dict().values()):
        assert torch.equal(x, y), k
    assert any(not torch.equal(x, m) for x, m in zip(a.state_dict().values(), mid.state_dict().values()))
    rows = (tmp_path / "b" / "curve.csv").read_text().splitlines()
    assert rows[0].split(",")[-2:] == ["approx_kl", "clip_frac"] and len(rows) == 5
    rows_a = (tmp_path / "a" / "curve.csv").read_text().splitlines()
    same = lambda r: r.split(",")[:3] + r.split(",")[7:13] + r.split(",")[15:]   # noqa: E731 - not wall time
    assert [same(r) for r in rows[1:]] == [same(r) for r in rows_a[1:]]
    # tensorboard: one event file per (re)start, with the curve's scalars
    events = sorted((tmp_path / "b" / "tb").glob("events.out.tfevents.*"))
    assert len(events) == 2 and all(e.stat().st_size > 100 for e in events)
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    acc = EventAccumulator(str(tmp_path / "a" / "tb"))
    acc.Reload()
    assert "train/approx_kl" in acc.Tags()["scalars"]
    assert [e.step for e in acc.Scalars("train/loss")] == [32, 64, 96, 128]   # emulator frames


def test_ppo_config_validation_and_cli_defaults(tmp_path):
    with pytest.raises(ParameterError, match="divide"):
        _ppo_run(num_envs=6, num_minibatches=4)
    with pytest.raises(ParameterError, match="algo"):
        _ppo_run(algo="sac")
    with pytest.raises(ParameterError, match="distillation"):
        _ppo_run(teacher="t.safetensors")
    from snn_agent.cli import build_config, register
    import argparse
    ap = argparse.ArgumentParser()
    register(ap.add_subparsers(dest="cmd"))
    cfg = build_config(ap.parse_args(["train", "--algo", "ppo", "--out", str(tmp_path), "--lr", "1e-4"]))
    assert (cfg.train.n_steps, cfg.train.grad_clip, cfg.train.num_envs, cfg.train.lr) == (128, 0.5, 8, 1e-4)
    assert cfg.env.repeat_action_probability == STICKY_ACTIONS
    a2c = build_config(ap.parse_args(["train", "--out", str(tmp_path), "--sticky", "0"]))
    assert (a2c.train.algo, a2c.train.n_steps, a2c.env.repeat_action_probability) == ("a2c", 5, 0.0)
    ev = ap.parse_args(["evaluate", "x.safetensors"])
    assert (ev.episodes, ev.seed, ev.sticky) == (30, EVAL_SEED_BASE, 0.25)


# -- evaluation protocol --------------------------------------------------------------------------
def test_training_and_evaluation_seeds_are_disjoint():
    from snn_agent.evaluate import TRAIN_SEED_END
    for seed in (0, 1, 9_999, 123_456):
        for updates in (0, 10**6):
            s = train_env_seed(TrainConfig(seed=seed), updates)
            assert 0 <= s < 10**9 and s + 4096 <= TRAIN_SEED_END <= EVAL_SEED_BASE
    assert EVAL_SEED_BASE + 10**6 < 2**31


def test_mean_ci_by_hand():
    from snn_agent.evaluate import mean_ci
    r = mean_ci([1, 2, 3, 4])
    s = np.sqrt(5 / 3)                            # sample std of 1..4
    half = 3.182446305 * s / 2                    # t_{0.975, 3} (tables) * s / sqrt(4)
    assert r["mean"] == 2.5 and r["std"] == pytest.approx(s, rel=1e-9)
    assert r["ci"] == pytest.approx([2.5 - half, 2.5 + half], rel=1e-8)
    assert mean_ci([3.0, 3.0, 3.0])["ci"] == [3.0, 3.0]
    one = mean_ci([5.0])
    assert one["ci"] is None and one["std"] == 0.0
    with pytest.raises(ParameterError):
        mean_ci([])


def test_sticky_actions_are_the_default_and_change_the_game():
    from snn_agent.envs import PongVecEnv
    assert EnvConfig().repeat_action_probability == 0.25 == STICKY_ACTIONS
    assert RunConfig().validate().env.repeat_action_probability == 0.25

    def frames(p):
        env = PongVecEnv(EnvConfig(repeat_action_probability=p, noop_max=0), 1, seed=4)
        try:
            env.reset()
            out = []
            for a in np.tile([2, 3], 60):
                obs, _, _, _ = env.step(np.array([a]))
                out.append(obs.copy())
            return np.stack(out)
        finally:
            env.close()

    det, det2, sticky = frames(0.0), frames(0.0), frames(0.25)
    assert np.array_equal(det, det2)                       # deterministic emulator
    assert not np.array_equal(det, sticky)                 # sticky actions repeat some actions
    with pytest.raises(ParameterError, match="sticky"):
        EnvConfig(repeat_action_probability=1.0).validate()


def test_evaluate_reports_its_protocol_for_an_old_deterministic_checkpoint(tmp_path, capsys):
    from snn_agent.checkpoint import build_policy, save_checkpoint
    from snn_agent.cli import main
    old = RunConfig.from_dict({"model": {"kind": "stpn", "hidden": 8}, "env": {"repeat_action_probability": 0.0}})
    ck = tmp_path / "old.safetensors"
    save_checkpoint(ck, build_policy(old, seed=0), old)
    out = tmp_path / "e.json"
    assert main(["evaluate", str(ck), "--episodes", "3", "--max-frames", "120", "--num-envs", "3",
                 "--json", str(out), "--no-progress"]) == 0
    text = capsys.readouterr().out
    assert "sticky actions 0.25" in text and "trained with sticky actions 0" in text and "95% CI" in text
    res = json.loads(out.read_text())
    p = res["protocol"]
    assert p["repeat_action_probability"] == 0.25 and p["noop_max"] == 30 and p["frameskip"] == 4
    assert p["max_episode_frames"] == 120 and p["seeds"] == [EVAL_SEED_BASE, EVAL_SEED_BASE + 2]
    assert not p["seeds_overlap_training"] and res["trained_repeat_action_probability"] == 0.0
    assert len(res["scores"]) == 3 and len(res["ci95"]) == 2
    assert main(["evaluate", str(ck), "--episodes", "2", "--max-frames", "120", "--sticky", "0", "--seed", "5",
                 "--json", str(out), "--no-progress"]) == 0
    res = json.loads(out.read_text())
    assert res["protocol"]["repeat_action_probability"] == 0.0 and res["protocol"]["seeds_overlap_training"]
    assert "may overlap" in capsys.readouterr().out


def test_frameskip_flag_sets_the_agent_step_everywhere(tmp_path):
    """--frameskip 1 (the reference's reading) sets the env and the m-STPN's step duration together;
    a config with a mismatched step is refused."""
    import argparse

    from snn_agent.cli import build_config, register
    from snn_agent.config import RunConfig

    ap = argparse.ArgumentParser()
    register(ap.add_subparsers(dest="cmd"))
    cfg = build_config(ap.parse_args(["train", "--model", "mstpn", "--frameskip", "1", "--out", str(tmp_path)]))
    assert cfg.env.frameskip == 1 and cfg.model.dt == pytest.approx(1 / 60, rel=1e-12)
    bad = RunConfig()
    bad.env.frameskip = 1
    with pytest.raises(ParameterError, match="not the agent's step"):
        bad.validate()
