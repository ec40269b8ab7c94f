"""Distillation (DAgger) of a teacher policy into an STPN / m-STPN student (snn_agent/distill.py)."""
import csv
from typing import NamedTuple

import numpy as np
import pytest
import torch

from mstpn_base.errors import ParameterError
from snn_agent.config import EnvConfig, ModelConfig, RunConfig, TrainConfig
from snn_agent.distill import Distill, check_teacher
from snn_agent.policy import Policy
from test_snn_training import CLASS_FRAMES, BanditEnv

torch.set_num_threads(1)


class Count(NamedTuple):
    n: torch.Tensor


class OracleTeacher(torch.nn.Module):
    """Greedy-correct teacher for BanditEnv: logits +-2 by which half holds the white bar; counts
    its steps in its state so that the test can see the state being reset."""

    def init_state(self, batch, device=None):
        return Count(torch.zeros(batch, 1))

    def forward(self, obs, state):
        x = torch.as_tensor(np.asarray(obs), dtype=torch.float32)
        right = (x[:, 0, :, 42:] > 200).any(-1).any(-1).float()
        logits = torch.stack([2.0 - 4.0 * right, 4.0 * right - 2.0], -1)
        return logits, torch.full((x.shape[0],), 0.5), Count(state.n + 1), {}


class RecordingEnv(BanditEnv):
    def __init__(self, *a, **k):
        super().__init__(*a, **k)
        self.actions = []

    def step(self, a):
        self.actions.append(np.asarray(a).copy())
        return super().step(a)


def _agreement(pol, teacher):
    with torch.no_grad():
        return float((pol(CLASS_FRAMES)[0].argmax(-1) == teacher(CLASS_FRAMES, teacher.init_state(2))[0]
                      .argmax(-1)).float().mean())


@pytest.mark.parametrize("kind", ["stpn", "mstpn"])
def test_student_learns_the_teachers_greedy_policy_without_rewards(kind):
    torch.manual_seed(0)
    pol = Policy(ModelConfig(kind=kind, hidden=16, n_actions=2))
    teacher = OracleTeacher()
    env = BanditEnv(8, length=5, seed=0)
    learner = Distill(pol, teacher, TrainConfig(n_steps=5, num_envs=8, frames=10**9, lr=3e-3,
                                                teacher_temperature=0.5), seed=0)
    obs, st = env.reset(), pol.init_state(8)
    first = []
    for i in range(60):
        obs, st, stats, n = learner.step(env, obs, st, 0)
        assert n == 40 and 0.0 <= stats.agreement <= 1.0 and stats.policy_loss >= 0.0
        if i < 3:
            first.append(stats.policy_loss)
    # the target is softmax(+-2 / 0.5): the KL falls well below its start and greedy actions agree
    assert stats.policy_loss < 0.5 * np.mean(first), (first, stats.policy_loss)
    assert _agreement(pol, teacher) == 1.0
    with torch.no_grad():   # the value head follows the teacher's value (0.5)
        assert abs(pol(CLASS_FRAMES)[1].mean().item() - 0.5) < 0.2


def test_executed_action_is_students_greedy_or_teachers_by_teacher_prob():
    torch.manual_seed(1)
    pol = Policy(ModelConfig(kind="stpn", hidden=8, n_actions=2))
    teacher = OracleTeacher()
    for prob in (0.0, 1.0):
        env = RecordingEnv(4, length=3, seed=2)
        learner = Distill(pol, teacher, TrainConfig(n_steps=1, num_envs=4, frames=10**9, lr=1e-12,
                                                    teacher_prob=prob), seed=0)
        obs, st = env.reset(), pol.init_state(4)
        expected, differ = [], False
        for _ in range(6):      # n_steps = 1: one environment step per update
            with torch.no_grad():
                a_s = pol(obs, st)[0].argmax(-1).numpy()
            a_t = teacher(obs, teacher.init_state(4))[0].argmax(-1).numpy()
            expected.append(a_t if prob == 1.0 else a_s)
            differ |= bool((a_s != a_t).any())
            obs, st, _, _ = learner.step(env, obs, st, 0)
        assert differ   # the untrained student disagrees somewhere, so the two cases are told apart
        assert all(np.array_equal(a, e) for a, e in zip(env.actions, expected))

def test_teacher_state_is_reset_where_episodes_end():
    torch.manual_seed(0)
    pol = Policy(ModelConfig(kind="stpn", hidden=8, n_actions=2))
    learner = Distill(pol, OracleTeacher(), TrainConfig(n_steps=5, num_envs=3, frames=10**9), seed=0)
    env = BanditEnv(3, length=3, seed=0)
    obs, st = env.reset(), pol.init_state(3)
    learner.step(env, obs, st, 0)          # 5 steps, episodes of 3: reset after step 3, then 2 more
    assert learner.teacher_state.n.flatten().tolist() == [2.0, 2.0, 2.0]


def test_teacher_with_other_env_settings_is_refused():
    check_teacher(EnvConfig(action_set="updown"), EnvConfig(action_set="updown"), "t")
    with pytest.raises(ParameterError, match="action_set"):
        check_teacher(EnvConfig(action_set="minimal"), EnvConfig(action_set="updown"), "t.safetensors")


@pytest.mark.parametrize("section", [{"teacher_prob": 1.5}, {"teacher_temperature": 0.0},
                                     {"teacher_temperature": float("nan")}, {"teacher": 3}])
def test_distillation_settings_are_validated(section):
    with pytest.raises(ParameterError):
        RunConfig.from_dict({"train": section})


def test_train_with_a_teacher_checkpoint_distils_and_logs_agreement(tmp_path):
    from snn_agent.checkpoint import build_policy, load_policy, save_checkpoint
    from snn_agent.train import LATEST, train

    base = {"env": {"action_set": "updown"},
            "train": {"num_envs": 4, "n_steps": 5, "frames": 10**6, "log_every_updates": 2, "lr": 1e-3}}
    tcfg = RunConfig.from_dict(dict(base, model={"kind": "lstm", "hidden": 8}))
    save_checkpoint(tmp_path / "teacher.safetensors", build_policy(tcfg, seed=3), tcfg)
    cfg = RunConfig.from_dict(dict(base, model={"kind": "stpn", "hidden": 8},
                                   train=dict(base["train"], teacher=str(tmp_path / "teacher.safetensors"))))
    factory = lambda c, seed: BanditEnv(c.train.num_envs, length=3, seed=seed)  # noqa: E731
    logs = []
    prog = train(cfg, tmp_path / "run", progress=False, max_updates=4, env_factory=factory, log=logs.append)
    assert prog["updates"] == 4 and any("distilling from teacher" in m for m in logs)
    rows = list(csv.DictReader(open(tmp_path / "run" / "curve.csv")))
    assert len(rows) == 2 and all(0.0 <= float(r["agreement"]) <= 1.0 for r in rows)
    _, meta = load_policy(tmp_path / "run" / LATEST)
    assert meta["config"].train.teacher == str(tmp_path / "teacher.safetensors")
    # a teacher trained with another action set is refused before any update
    mcfg = RunConfig.from_dict(dict(base, model={"kind": "lstm", "hidden": 8}, env={"action_set": "minimal"}))
    save_checkpoint(tmp_path / "t6.safetensors", build_policy(mcfg, seed=3), mcfg)
    bad = RunConfig.from_dict(dict(base, model={"kind": "stpn", "hidden": 8},
                                   train=dict(base["train"], teacher=str(tmp_path / "t6.safetensors"))))
    with pytest.raises(ParameterError, match="action_set"):
        train(bad, tmp_path / "run2", progress=False, max_updates=1, env_factory=factory, log=logs.append)
