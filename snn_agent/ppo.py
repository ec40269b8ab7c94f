"""Recurrent PPO (Schulman et al. 2017, clipped objective) with truncated BPTT through the plastic
state, for the STPN / m-STPN / LSTM policies.

One update, for ``num_envs`` environments B and ``n_steps`` T:

* store the recurrent state s_0 at the rollout start (STPN / m-STPN: (h, F); LSTM: (h, c));
* roll out T steps without gradients, actions a_t ~ softmax(logits); keep obs_t, a_t,
  log pi_old(a_t|obs_t), V_old(obs_t), r_t, done_t; zero the state of environments whose episode
  ended (as the rollout of :mod:`snn_agent.a2c`); bootstrap V(obs_T) from the final state;
* GAE(lambda) (Schulman et al. 2016), with d_t = done_t:
      delta_t = r_t + discount (1 - d_t) V_{t+1} - V_t,   V_T = bootstrap
      A_t     = delta_t + discount lambda (1 - d_t) A_{t+1},   R_t = A_t + V_t  (value targets);
* ``update_epochs`` passes; each pass splits the B environments at random into
  ``num_minibatches`` groups (whole environments: a sequence is never cut).  For each group the
  conv torso runs on all T frames at once, then the core re-runs the sequence from the stored
  s_0 with gradients, zeroing the state after every done_t inside the sequence, exactly as the
  rollout did (BPTT through the whole T-step sequence);
* per minibatch (ratio rho_t = exp(log pi(a_t) - log pi_old(a_t)), A normalised if ``norm_adv``):
      L_pi = mean(max(-A_t rho_t, -A_t clip(rho_t, 1 - eps, 1 + eps)))
      L_V  = mean(max((V_t - R_t)^2, (V_old,t + clip(V_t - V_old,t, -eps, eps) - R_t)^2)) / 2
             (or mean((V_t - R_t)^2) / 2 without ``clip_vloss``)
      loss = L_pi + value_coef L_V - entropy_coef mean(H[pi(.|obs_t)]);
  gradient-norm clip at ``grad_clip``, Adam step; the learning rate decays linearly to 0 over the
  run (:class:`snn_agent.a2c.Learner`);
* the state after the rollout is carried into the next one, detached (truncated BPTT).

The m-STPN's cycle-to-cycle noise (one factor per synapse and step, shared by the games) is
recorded during the rollout and replayed in every re-run of its sequences
(:meth:`~snn_agent.device_constrained.MSTPN.noise_tape`): a ratio then compares the parameters
under the noise the action was sampled with (first-pass ratios 1, as the plain STPN's), and the
T noise draws of a rollout serve all epochs and minibatches instead of one draw per step of each.
Minibatch permutations use torch's global RNG, which the resume state saves.
"""
from __future__ import annotations

import contextlib

import numpy as np
import torch

from snn_agent.a2c import Learner, UpdateStats
from snn_agent.policy import detach_state, reset_state


def gae(rewards, values, dones, bootstrap, discount: float, lam: float):
    """Advantages A_t and value targets R_t = A_t + V_t of GAE(lambda) (see module docstring).

    ``rewards``, ``values``, ``dones`` (0/1): tensors (T, B); ``bootstrap``: V(obs_T), (B,).
    With ``lam = 1`` R_t equals the n-step return of :func:`snn_agent.a2c.nstep_returns`."""
    T = rewards.shape[0]
    adv = torch.zeros_like(rewards)
    last = torch.zeros_like(bootstrap)
    for t in range(T - 1, -1, -1):
        nxt = bootstrap if t == T - 1 else values[t + 1]
        keep = 1.0 - dones[t]
        delta = rewards[t] + discount * keep * nxt - values[t]
        last = delta + discount * lam * keep * last
        adv[t] = last
    return adv, adv + values


def ppo_losses(new_logp, old_logp, adv, new_v, old_v, returns, clip_coef: float, clip_vloss: bool = True):
    """Clipped policy loss L_pi, value loss L_V (module docstring), approximate KL
    mean((rho - 1) - log rho) and the fraction of clipped ratios; tensors of one shape."""
    log_ratio = new_logp - old_logp
    ratio = log_ratio.exp()
    pg_loss = torch.max(-adv * ratio, -adv * ratio.clamp(1.0 - clip_coef, 1.0 + clip_coef)).mean()
    v_sq = (new_v - returns).pow(2)
    if clip_vloss:
        v_clipped = old_v + (new_v - old_v).clamp(-clip_coef, clip_coef)
        v_loss = 0.5 * torch.max(v_sq, (v_clipped - returns).pow(2)).mean()
    else:
        v_loss = 0.5 * v_sq.mean()
    with torch.no_grad():
        approx_kl = ((ratio - 1.0) - log_ratio).mean()
        clip_frac = ((ratio - 1.0).abs() > clip_coef).to(ratio.dtype).mean()
    return pg_loss, v_loss, approx_kl, clip_frac


def env_minibatches(num_envs: int, num_minibatches: int, generator=None) -> list[torch.Tensor]:
    """A random partition of the environment indices 0..num_envs-1 into ``num_minibatches``
    equal groups (torch's global RNG unless ``generator``)."""
    perm = torch.randperm(num_envs, generator=generator)
    return list(perm.view(num_minibatches, num_envs // num_minibatches))


def index_state(state, idx):
    """The recurrent state of the environments ``idx`` (every state tensor has batch first)."""
    return type(state)(*(s[idx] for s in state))


def noise_tape(policy, replay: list | None = None):
    """The core's noise tape (:meth:`~snn_agent.device_constrained.MSTPN.noise_tape`: record, or
    replay ``replay``); for a core without training noise, a block that yields an empty list."""
    tape = getattr(policy.core, "noise_tape", None)
    return tape(replay) if tape is not None else contextlib.nullcontext([])


def rerun_sequence(policy, obs, start_state, dones, noise: list | None = None):
    """Logits (T, b, A) and values (T, b) of ``policy`` over the stored sequence ``obs`` (T, b, 1,
    84, 84) from ``start_state``, with the state zeroed after every step whose ``dones`` (T, b;
    numpy bool) is true; gradients flow through the whole sequence.  ``noise``: the rollout's
    recorded training noise (:func:`noise_tape`), replayed step by step (None: fresh draws)."""
    T, b = obs.shape[:2]
    x = policy.features(obs.reshape((T * b,) + tuple(obs.shape[2:]))).view(T, b, -1)
    state, hs = start_state, []
    with noise_tape(policy, noise) if noise else contextlib.nullcontext():
        # unbind, not x[t]: the backward of T selects would build T zero-filled (T, b, I) gradients
        for t, xt in enumerate(x.unbind(0)):
            h, state, _ = policy.core(xt, state)
            hs.append(h)
            if dones[t].any():
                state = reset_state(state, dones[t])
    hs = torch.stack(hs)
    return policy.pi(hs), policy.v(hs).squeeze(-1)


class PPO(Learner):
    """Recurrent PPO learner with :class:`snn_agent.a2c.A2C`'s interface."""

    @torch.no_grad()
    def rollout(self, env, obs, state):
        """T steps without gradients; returns (buffers dict, obs, state after the rollout).  The
        buffers hold ``noise``, the core's recorded training noise (empty without)."""
        policy, T = self.policy, self.cfg.n_steps
        buf = {k: [] for k in ("obs", "actions", "logp", "values", "rewards", "dones")}
        with noise_tape(policy) as noise:
            for _ in range(T):
                logits, value, state, _ = policy(obs, state)
                dist = torch.distributions.Categorical(logits=logits)
                action = dist.sample()
                buf["obs"].append(torch.from_numpy(np.array(obs, dtype=np.uint8)))
                obs, reward, done, _ = env.step(action.cpu().numpy())
                done = np.asarray(done, dtype=bool)
                buf["actions"].append(action)
                buf["logp"].append(dist.log_prob(action))
                buf["values"].append(value)
                buf["rewards"].append(torch.as_tensor(reward, dtype=value.dtype, device=value.device))
                buf["dones"].append(done)
                if done.any():
                    state = reset_state(state, done)
        _, bootstrap, _, _ = policy(obs, state)      # V(obs_T) does not depend on this step's noise
        out = {k: torch.stack(v) for k, v in buf.items() if k != "dones"}
        out["dones"] = np.stack(buf["dones"])
        out["bootstrap"] = bootstrap
        out["noise"] = noise
        return out, obs, state

    def step(self, env, obs, state, frames_done: int):
        """One rollout from ``obs``/``state`` and ``update_epochs`` passes over it.

        Returns ``(obs, state, stats, agent_steps)`` like :meth:`snn_agent.a2c.A2C.step`."""
        cfg, policy = self.cfg, self.policy
        policy.train()
        start_state = detach_state(state)
        buf, obs, state = self.rollout(env, obs, start_state)
        dev = buf["values"].device
        dones_f = torch.as_tensor(buf["dones"], dtype=buf["values"].dtype, device=dev)
        adv, returns = gae(buf["rewards"], buf["values"], dones_f, buf["bootstrap"], cfg.discount,
                           cfg.gae_lambda)
        B = adv.shape[1]
        obs_dev = buf["obs"].to(dev)
        sums = np.zeros(7)
        n_mb = 0
        for _ in range(cfg.update_epochs):
            for idx in env_minibatches(B, cfg.num_minibatches):
                idx_np = idx.numpy()
                idx = idx.to(dev)
                logits, new_v = rerun_sequence(policy, obs_dev[:, idx], index_state(start_state, idx),
                                               buf["dones"][:, idx_np], noise=buf["noise"])
                dist = torch.distributions.Categorical(logits=logits)
                new_logp = dist.log_prob(buf["actions"][:, idx])
                entropy = dist.entropy().mean()
                mb_adv = adv[:, idx]
                if cfg.norm_adv:
                    mb_adv = (mb_adv - mb_adv.mean()) / (mb_adv.std() + 1e-8)
                pg_loss, v_loss, kl, cf = ppo_losses(new_logp, buf["logp"][:, idx], mb_adv, new_v,
                                                     buf["values"][:, idx], returns[:, idx], cfg.clip_coef,
                                                     cfg.clip_vloss)
                loss = pg_loss + cfg.value_coef * v_loss - cfg.entropy_coef * entropy
                grad_norm, lr = self.optimise(loss, frames_done, "PPO")
                sums += [loss.item(), pg_loss.item(), v_loss.item(), entropy.item(), grad_norm, kl.item(),
                         cf.item()]
                n_mb += 1
        m = sums / n_mb
        stats = UpdateStats(loss=m[0], policy_loss=m[1], value_loss=m[2], entropy=m[3], grad_norm=m[4],
                            lr=lr, approx_kl=m[5], clip_frac=m[6])
        return obs, detach_state(state), stats, cfg.n_steps * B
