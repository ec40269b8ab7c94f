"""Training: losses go down on tiny synthetic tasks, A2C resets state at episode ends, train() loop
writes curve/checkpoints and resumes."""
import csv
import os
import signal

import numpy as np
import pytest
import torch

from snn_agent.a2c import A2C, nstep_returns
from snn_agent.config import ModelConfig, RunConfig, TrainConfig
from snn_agent.device_constrained import MSTPN
from snn_agent.policy import LSTMCore, Policy
from snn_agent.stpn import STPN

torch.set_num_threads(1)


CLASS_FRAMES = np.full((2, 1, 84, 84), 87, np.uint8)
CLASS_FRAMES[0, 0, 30:54, 10:16] = 236
CLASS_FRAMES[1, 0, 30:54, 68:74] = 236


class BanditEnv:
    """Frames show a white bar in the left (class 0) or right half (class 1) on a grey background;
    reward 1 for action == class.  ``random``: the class is drawn per step from an RNG seeded
    ``seed``; else c = (env index + step in episode) % 2, so the games do not depend on the seed.
    Episodes last ``length`` steps; SAME_STEP autoreset like the Pong env."""

    def __init__(self, n, length=5, seed=0, random=True):
        self.n, self.length, self.random = n, length, random
        self.rng = np.random.default_rng(seed)
        self.finished = []
        self.t = np.zeros(n, dtype=int)
        self.ret = np.zeros(n)

    def _obs(self):
        self.c = self.rng.integers(0, 2, self.n) if self.random else (np.arange(self.n) + self.t) % 2
        return CLASS_FRAMES[self.c]

    def reset(self):
        self.t[:] = 0
        return self._obs()

    def step(self, a):
        r = (np.asarray(a) == self.c).astype(np.float32)
        self.t += 1
        self.ret += r
        done = self.t >= self.length
        for i in np.flatnonzero(done):
            self.finished.append((int(i), float(self.ret[i]), int(self.t[i])))
        self.t[done] = 0
        self.ret[done] = 0
        return self._obs(), r, done, {}

    def close(self):
        pass


def test_nstep_returns_by_hand():
    r = torch.tensor([[1.0], [0.0], [2.0]])
    d = torch.tensor([[0.0], [1.0], [0.0]])
    R = nstep_returns(r, d, torch.tensor([10.0]), 0.5)
    # R2 = 2 + 0.5*10 = 7; R1 = 0 + 0 (episode ended) = 0; R0 = 1 + 0.5*0 = 1
    assert R[:, 0].tolist() == [1.0, 0.0, 7.0]


@pytest.mark.parametrize("core", ["stpn", "mstpn", "lstm"])
def test_supervised_memory_task_loss_decreases(core):
    """Recall the sign of the first input after 3 blank steps: needs the recurrent state."""
    torch.manual_seed(0)
    I, H, T, B = 4, 16, 4, 32
    layer = {"stpn": lambda: STPN(I, H), "mstpn": lambda: MSTPN(I, H, quantise=False, noise=False),
             "lstm": lambda: LSTMCore(I, H)}[core]()
    head = torch.nn.Linear(H, 1)
    opt = torch.optim.Adam(list(layer.parameters()) + list(head.parameters()), lr=1e-2)
    gen = torch.Generator().manual_seed(1)

    def loss_fn():
        sign = torch.randint(0, 2, (B, 1), generator=gen).float() * 2 - 1
        xs = [sign * torch.ones(B, I)] + [torch.zeros(B, I)] * (T - 1)
        st = None
        for x in xs:
            h, st, _ = layer(x, st)
        return torch.nn.functional.mse_loss(head(h), sign)

    with torch.no_grad():
        before = np.mean([loss_fn().item() for _ in range(5)])
    for _ in range(60):
        loss = loss_fn()
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        after = np.mean([loss_fn().item() for _ in range(5)])
    assert after < 0.5 * before, (before, after)


class SpyCore(torch.nn.Module):
    """Wraps a core and records the state it is given at every call."""

    def __init__(self, core):
        super().__init__()
        self.core = core
        self.seen = []

    def init_state(self, *a, **k):
        return self.core.init_state(*a, **k)

    def forward(self, x, state=None, energy=False):
        self.seen.append(state)
        return self.core(x, state, energy=energy)


def test_a2c_resets_plastic_state_at_episode_end_and_detaches():
    torch.manual_seed(0)
    pol = Policy(ModelConfig(kind="stpn", hidden=8, n_actions=2))
    pol.core = SpyCore(pol.core)
    env = BanditEnv(3, length=2)
    learner = A2C(pol, TrainConfig(n_steps=3, num_envs=3, frames=1000))
    obs, st = env.reset(), pol.init_state(3)
    obs, st, stats, n = learner.step(env, obs, st, 0)
    assert n == 9 and np.isfinite(stats.loss)
    seen = pol.core.seen
    # calls: step0, step1, step2 (after the episode end at step 1), bootstrap
    assert seen[1].F.abs().sum() > 0                      # F grew within the episode
    assert not seen[2].F.any() and not seen[2].h.any()     # reset after done (F_0 = 0)
    assert not st.F.requires_grad and st.F.abs().sum() > 0  # carried, detached


@pytest.mark.parametrize("kind", ["stpn", "lstm"])
def test_a2c_learns_bandit(kind):
    torch.manual_seed(0)
    pol = Policy(ModelConfig(kind=kind, hidden=16, n_actions=2))
    env = BanditEnv(8, length=5, seed=0)
    learner = A2C(pol, TrainConfig(n_steps=5, num_envs=8, frames=10**9, lr=3e-3, entropy_coef=0.0))
    obs, st = env.reset(), pol.init_state(8)

    def p_correct():
        with torch.no_grad():
            p = torch.softmax(pol(CLASS_FRAMES)[0], -1)
        return (p[0, 0].item() + p[1, 1].item()) / 2

    before = p_correct()
    for _ in range(80):
        obs, st, stats, _ = learner.step(env, obs, st, 0)
    after = p_correct()
    assert after > 0.75 and after > before + 0.2, (before, after)   # chance level is 0.5


def test_train_loop_writes_curve_checkpoints_and_resumes(tmp_path):
    from snn_agent.checkpoint import load_policy
    from snn_agent.train import BEST, LATEST, train

    cfg = RunConfig.from_dict({"model": {"kind": "stpn", "hidden": 8}, "env": {"action_set": "updown"},
                               "train": {"num_envs": 4, "n_steps": 5, "frames": 10**6, "log_every_updates": 2,
                                         "snapshot_every_frames": 200, "lr": 1e-3}})
    factory = lambda c, seed: BanditEnv(c.train.num_envs, length=3, seed=seed)  # noqa: E731
    prog = train(cfg, tmp_path, progress=False, max_updates=6, env_factory=factory, log=lambda *_: None)
    assert prog["updates"] == 6 and prog["frames"] == 6 * 4 * 5 * 4 and prog["episodes"] > 0
    rows = list(csv.DictReader(open(tmp_path / "curve.csv")))
    assert [int(r["updates"]) for r in rows] == [2, 4, 6]
    assert (tmp_path / "curve.png").stat().st_size > 1000
    assert (tmp_path / LATEST).exists() and (tmp_path / BEST).exists()
    assert len(list((tmp_path / "snapshots").glob("frames_*.safetensors"))) >= 2
    _, meta = load_policy(tmp_path / LATEST)
    assert meta["progress"]["frames"] == prog["frames"]
    # a second run into the same folder without --resume is refused
    from mstpn_base.errors import MstpnError
    with pytest.raises(MstpnError, match="--resume"):
        train(cfg, tmp_path, progress=False, max_updates=1, env_factory=factory)
    with open(tmp_path / "curve.csv", "a") as fh:   # a row logged after the last checkpoint
        fh.write("999999,1,1,1,1,,,0,0,0,0,0,0,0\n")
    prog2 = train(cfg, tmp_path, resume=True, progress=False, max_updates=2, env_factory=factory,
                  log=lambda *_: None)
    assert prog2["updates"] == 8 and prog2["frames"] == 8 * 80
    rows = list(csv.DictReader(open(tmp_path / "curve.csv")))
    assert [r["updates"] for r in rows] == ["2", "4", "6", "8"]
    # a time limit already spent: no update, the resume point stays where it was
    prog3 = train(cfg, tmp_path, resume=True, progress=False, time_limit_s=1e-9, env_factory=factory,
                  log=lambda *_: None)
    assert prog3["updates"] == 8 and load_policy(tmp_path / LATEST)[1]["progress"]["updates"] == 8
    # a new run from the weights alone (no .resume.pt): same weights, counters continue
    shipped = tmp_path / "shipped.safetensors"
    shipped.write_bytes((tmp_path / LATEST).read_bytes())
    pol0, _ = load_policy(shipped)
    out2 = tmp_path / "more"
    prog4 = train(cfg, out2, progress=False, max_updates=0, init_from=shipped, env_factory=factory,
                  log=lambda *_: None)
    assert prog4["frames"] == 8 * 80 and prog4["updates"] == 8
    pol1, _ = load_policy(out2 / LATEST)
    assert all(torch.equal(a, b) for a, b in zip(pol0.state_dict().values(), pol1.state_dict().values()))
    with pytest.raises(MstpnError, match="--init-from"):
        train(cfg, out2, resume=True, init_from=shipped, progress=False, env_factory=factory)


def test_stop_request_passes_the_compiled_steps_fallback():
    """SIGTERM raises _Stop wherever the main thread is, often inside the compiled step; its
    fallback to eager catches compiler failures (Exception) but must let _Stop through, or the
    run goes on (eagerly) instead of saving and exiting."""
    from snn_agent.stpn import with_eager_fallback
    from snn_agent.train import _Stop

    def stop(*_):
        raise _Stop()

    def broken(*_):
        raise RuntimeError("no C++ compiler")

    eager = lambda x: x + 1      # noqa: E731
    with pytest.raises(_Stop):
        with_eager_fallback(stop, eager)(1)
    step = with_eager_fallback(broken, eager)
    with pytest.warns(RuntimeWarning, match="no C\\+\\+ compiler"):
        assert step(1) == 2
    assert step(2) == 3          # stays on eager, no second warning needed


def test_a2c_run_writes_tensorboard_and_ignores_the_ppo_fields(tmp_path):
    """A2C is the default algorithm; the PPO minibatch rule does not apply to it (3 envs, 4
    minibatches); tensorboard events hold the curve's scalars against emulator frames."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from snn_agent.train import train

    cfg = RunConfig.from_dict({"model": {"kind": "lstm", "hidden": 8}, "env": {"action_set": "updown"},
                               "train": {"num_envs": 3, "n_steps": 5, "frames": 10**6, "log_every_updates": 1,
                                         "num_minibatches": 4}})
    assert cfg.train.algo == "a2c"
    factory = lambda c, seed: BanditEnv(c.train.num_envs, length=3, seed=seed)  # noqa: E731
    train(cfg, tmp_path, progress=False, max_updates=3, env_factory=factory, log=lambda *_: None)
    acc = EventAccumulator(str(tmp_path / "tb"))
    acc.Reload()
    assert [e.step for e in acc.Scalars("train/entropy")] == [60, 120, 180]
    assert "train/approx_kl" not in acc.Tags()["scalars"]          # A2C has no PPO statistics
    rows = list(csv.DictReader(open(tmp_path / "curve.csv")))
    assert [r["approx_kl"] for r in rows] == ["", "", ""]


class _TermAt(BanditEnv):
    """BanditEnv that sends this process SIGTERM at its ``at``-th step."""

    def __init__(self, n, at):
        super().__init__(n, length=3)
        self.at, self.steps = at, 0

    def step(self, a):
        self.steps += 1
        if self.steps == self.at:
            os.kill(os.getpid(), signal.SIGTERM)
        return super().step(a)


def test_sigterm_saves_the_checkpoint_and_is_reported_as_sigterm(tmp_path):
    """A SIGTERM stops the run with its resume checkpoint saved and surfaces as Interrupted(SIGTERM),
    so the command exits 143 and says SIGTERM (not 130 / SIGINT)."""
    from mstpn_base import signals
    from snn_agent.train import train

    cfg = RunConfig.from_dict({"model": {"kind": "lstm", "hidden": 8}, "env": {"action_set": "updown"},
                               "train": {"num_envs": 2, "n_steps": 4, "frames": 10**6, "log_every_updates": 1}})
    factory = lambda c, seed: _TermAt(c.train.num_envs, at=10)  # noqa: E731
    before = signal.getsignal(signal.SIGTERM)
    with pytest.raises(signals.Interrupted) as info:
        train(cfg, tmp_path, progress=False, env_factory=factory, log=lambda *_: None)
    assert info.value.signum == signal.SIGTERM
    assert (tmp_path / "checkpoint_latest.safetensors").exists()
    assert signal.getsignal(signal.SIGTERM) is before      # the run's own handler is removed again
