"""Synchronous advantage actor-critic (A2C) with truncated BPTT through the plastic state.

A2C is what the reference trained (RLlib A2C).  On CPU every sample costs one forward and one
backward pass through the 170k-synapse plastic layer; A2C uses each sample once, straight from
the rollout's autograd graph, where PPO (:mod:`snn_agent.ppo`) passes over it several times.

One update, for ``num_envs`` environments B and ``n_steps`` T (the BPTT truncation):

* roll out T steps with the autograd graph kept (actions sampled from softmax(logits));
  after each step the state of environments whose episode ended is zeroed (F_0 = 0, h_0 = 0);
* bootstrap V(s_T) with a no-grad forward pass whose state is discarded;
* returns R_t = r_t + discount (1 - done_t) R_{t+1}, R_T = V(s_T); advantage A_t = R_t - V(s_t)
  (n-step returns, i.e. GAE with lambda = 1 as RLlib's A2C);
* loss = mean(-log pi(a_t|s_t) A_t) + value_coef mean((R_t - V(s_t))^2) / 2
         - entropy_coef mean(H[pi(.|s_t)]);
* gradient-norm clip, Adam step with the learning rate decayed linearly to 0 over the run;
* the state (h, F) is carried into the next rollout, detached (truncated BPTT).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from mstpn_base.errors import ParameterError
from snn_agent.config import TrainConfig
from snn_agent.policy import detach_state, reset_state


@dataclass
class UpdateStats:
    loss: float
    policy_loss: float
    value_loss: float
    entropy: float
    grad_norm: float
    lr: float
    agreement: float | None = None   # distillation: fraction of steps whose greedy actions agree
    approx_kl: float | None = None   # PPO: mean of (ratio - 1) - log(ratio) (Schulman's k3 estimator)
    clip_frac: float | None = None   # PPO: fraction of samples whose ratio left [1 - clip, 1 + clip]


def nstep_returns(rewards, dones, bootstrap, discount: float):
    """R_t = r_t + discount (1 - done_t) R_{t+1} with R_T = bootstrap; tensors (T, B), (B,)."""
    R = bootstrap
    out = torch.empty_like(rewards)
    for t in range(rewards.shape[0] - 1, -1, -1):
        R = rewards[t] + discount * (1.0 - dones[t]) * R
        out[t] = R
    return out


class Learner:
    """What every learner shares: the Adam optimiser, the linear learning-rate schedule and one
    clipped optimiser step.  Subclasses implement ``step(env, obs, state, frames_done)`` (one
    rollout + update; returns obs, detached state, :class:`UpdateStats`, agent steps taken)."""

    def __init__(self, policy, cfg: TrainConfig, frames_per_step: int = 4):
        self.policy = policy
        self.cfg = cfg
        self.frames_per_step = frames_per_step
        self.opt = torch.optim.Adam(policy.parameters(), lr=cfg.lr, eps=cfg.adam_eps)

    def lr_at(self, frames_done: int) -> float:
        return self.cfg.lr * max(0.0, 1.0 - frames_done / self.cfg.frames)

    def optimise(self, loss, frames_done: int, what: str = "A2C") -> tuple[float, float]:
        """One Adam step on ``loss`` at the scheduled learning rate, gradient norm clipped at
        ``grad_clip``; returns (gradient norm before clipping, learning rate).  NaN/inf is an error."""
        if not torch.isfinite(loss):
            raise ParameterError(f"{what} loss became {loss.detach().item()} (diverged); lower the learning rate")
        lr = self.lr_at(frames_done)
        for g in self.opt.param_groups:
            g["lr"] = lr
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        grad_norm = float(torch.nn.utils.clip_grad_norm_(self.policy.parameters(), self.cfg.grad_clip))
        if not math.isfinite(grad_norm):
            raise ParameterError(f"{what} gradient became NaN/inf (diverged); lower the learning rate")
        self.opt.step()
        return grad_norm, lr


class A2C(Learner):
    """:meth:`step` does one rollout + one update and returns the new obs/state."""

    def step(self, env, obs, state, frames_done: int):
        """Roll out ``n_steps`` in ``env`` from ``obs``/``state`` and update the policy once.

        Returns ``(obs, state, stats, agent_steps)``: the observation and detached state to
        continue from, :class:`UpdateStats` and the number of agent steps taken (B x T).
        """
        cfg, policy = self.cfg, self.policy
        policy.train()
        logps, ents, values, rewards, dones = [], [], [], [], []
        for _ in range(cfg.n_steps):
            logits, value, state, _ = policy(obs, state)
            dist = torch.distributions.Categorical(logits=logits)
            action = dist.sample()
            obs, reward, done, _ = env.step(action.cpu().numpy())
            logps.append(dist.log_prob(action))
            ents.append(dist.entropy())
            values.append(value)
            rewards.append(torch.as_tensor(reward, dtype=value.dtype))
            d = torch.as_tensor(np.asarray(done), dtype=torch.bool)
            dones.append(d.to(value.dtype))
            if d.any():
                state = reset_state(state, d)
        with torch.no_grad():
            _, bootstrap, _, _ = policy(obs, state)
        dev = values[0].device
        logp, ent, val = torch.stack(logps), torch.stack(ents), torch.stack(values)
        rew, dn = torch.stack(rewards).to(dev), torch.stack(dones).to(dev)
        returns = nstep_returns(rew, dn, bootstrap.detach(), cfg.discount)
        adv = returns - val
        policy_loss = -(logp * adv.detach()).mean()
        value_loss = 0.5 * adv.pow(2).mean()
        entropy = ent.mean()
        loss = policy_loss + cfg.value_coef * value_loss - cfg.entropy_coef * entropy
        grad_norm, lr = self.optimise(loss, frames_done)
        stats = UpdateStats(*(t.detach().item() for t in (loss, policy_loss, value_loss, entropy)), grad_norm, lr)
        return obs, detach_state(state), stats, cfg.n_steps * len(rewards[0])
