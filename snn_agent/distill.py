"""Policy distillation (DAgger) from a trained teacher policy into an STPN / m-STPN student.

Why: on one CPU core, A2C leaves the greedy STPN with endless rally cycles (+10.8 at 25M frames,
+7.7 at 40M; artifacts/README.md).  A teacher that wins every game (the A2C-trained LSTM baseline,
+21) labels the states the student's own greedy play visits, a dense supervised signal in place of
Pong's sparse reward (DAgger, Ross et al. 2011; policy distillation, Rusu et al. 2016).  The
student keeps its architecture (the STPN / m-STPN core and everything the conversion needs); only
the training signal differs.

One update, for ``num_envs`` environments B and ``n_steps`` T (the BPTT truncation):

* each step, the teacher (no gradient, its own recurrent state) gives logits_T and V_T, the
  student gives logits_S and V_S with the autograd graph kept;
* the executed action is the teacher's greedy action with probability ``teacher_prob`` (per
  environment and step), else the student's greedy action: the states trained on are those the
  student's evaluation play visits;
* loss = mean_t,b KL(softmax(logits_T / tau) || softmax(logits_S))  (tau = ``teacher_temperature``;
                                                   tau < 1 sharpens the target towards the teacher's
                                                   greedy action, which is what greedy play uses)
         + value_coef mean((V_S - V_T)^2) / 2            (the value head follows the teacher's,
                                                           so A2C can fine-tune the result);
* after a step, both states are zeroed where the episode ended; the student's state is carried
  into the next rollout detached (truncated BPTT), as in :mod:`snn_agent.a2c`;
* gradient-norm clip, Adam with the learning rate decayed linearly to 0 over the run.

Reported per update: the KL (as ``policy_loss``), the value loss, the student's entropy and the
fraction of steps whose greedy actions agree (``agreement``).
"""
from __future__ import annotations

import numpy as np
import torch

from mstpn_base.errors import ParameterError
from snn_agent.a2c import A2C, UpdateStats
from snn_agent.config import EnvConfig, TrainConfig
from snn_agent.policy import detach_state, reset_state


def check_teacher(teacher_env: EnvConfig, student_env: EnvConfig, path) -> None:
    """The teacher must act in the same environment: action set, frameskip, preprocessing.  The
    sticky-action probability may differ (it perturbs the executed actions, not what the policy
    sees or chooses from)."""
    a, b = teacher_env.__dict__, student_env.__dict__
    diff = sorted(k for k in a if a[k] != b.get(k) and k != "repeat_action_probability")
    if diff:
        raise ParameterError(f"teacher {path} was trained on other env settings ({', '.join(diff)}: "
                             f"{[a[k] for k in diff]} vs the student's {[b.get(k) for k in diff]})")


class Distill(A2C):
    """DAgger learner with :class:`A2C`'s interface (``step`` returns obs, state, stats, agent steps)."""

    def __init__(self, policy, teacher, cfg: TrainConfig, frames_per_step: int = 4, seed: int = 0):
        super().__init__(policy, cfg, frames_per_step)
        self.teacher = teacher.eval()
        for p in self.teacher.parameters():
            p.requires_grad_(False)
        self.teacher_state = None
        self.rng = np.random.default_rng(seed)

    def step(self, env, obs, state, frames_done: int):
        cfg, policy, teacher = self.cfg, self.policy, self.teacher
        policy.train()
        B = len(obs)
        if self.teacher_state is None:
            self.teacher_state = teacher.init_state(B)
        kls, ents, vlosses, agree = [], [], [], []
        for _ in range(cfg.n_steps):
            with torch.no_grad():
                t_logits, t_value, self.teacher_state, _ = teacher(obs, self.teacher_state)
            logits, value, state, _ = policy(obs, state)
            logp_s = torch.log_softmax(logits, -1)
            logp_t = torch.log_softmax(t_logits.to(logits.dtype) / cfg.teacher_temperature, -1)
            kls.append((logp_t.exp() * (logp_t - logp_s)).sum(-1))
            ents.append(-(logp_s.exp() * logp_s).sum(-1))
            vlosses.append((value - t_value.to(value.dtype)).pow(2))
            a_s, a_t = logits.argmax(-1).cpu().numpy(), t_logits.argmax(-1).cpu().numpy()
            agree.append(a_s == a_t)
            action = np.where(self.rng.random(B) < cfg.teacher_prob, a_t, a_s)
            obs, _, done, _ = env.step(action)
            d = np.asarray(done, dtype=bool)
            if d.any():
                state = reset_state(state, d)
                self.teacher_state = reset_state(self.teacher_state, d)
        kl, ent, vloss = torch.stack(kls).mean(), torch.stack(ents).mean(), 0.5 * torch.stack(vlosses).mean()
        loss = kl + cfg.value_coef * vloss
        grad_norm, lr = self.optimise(loss, frames_done, "distillation")
        stats = UpdateStats(*(t.detach().item() for t in (loss, kl, vloss, ent)), grad_norm, lr,
                            agreement=float(np.mean(agree)))
        return obs, detach_state(state), stats, cfg.n_steps * B
