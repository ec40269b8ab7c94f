"""Pong as a batched environment: ale-py's threaded C++ vector env with the reference preprocessing.

Observations: uint8 (num_envs, 1, 84, 84) grayscale, one frame (no stacking: the plastic synapses
carry the memory), max-pooled over the last two of 4 skipped frames; rewards clipped to
{-1, 0, +1} (Pong's rewards are already so); up to 30 random no-ops at reset; FIRE at reset.
Autoreset is SAME_STEP: the observation returned with ``done`` is already the first frame of the
next episode, so the agent resets its plastic state (h, F) after that step and every transition
it trains on belongs to one episode.

Episode bookkeeping (scores, lengths) is done here, since reward clipping does not alter Pong's
score.
"""
from __future__ import annotations

import numpy as np

from mstpn_base.errors import BackendUnavailableError
from snn_agent.config import EnvConfig


class PongVecEnv:
    """``num_envs`` Pong games stepped together. ``step(actions)`` takes indices into the configured
    action set and returns ``obs, reward (float32), done (bool), info``; finished episodes are
    appended to ``self.finished`` as (env_id, score, agent_steps)."""

    def __init__(self, cfg: EnvConfig, num_envs: int, seed: int = 0, num_threads: int = 1):
        try:
            from ale_py.vector_env import AtariVectorEnv
        except ImportError as exc:  # pragma: no cover - ale-py is a dependency
            raise BackendUnavailableError(f"ale-py is needed for Pong ({exc})") from None
        cfg.validate()
        self.cfg = cfg
        self.num_envs = int(num_envs)
        self.seed = int(seed)
        self._actions = np.asarray(cfg.actions, dtype=np.int64)
        self.env = AtariVectorEnv(
            cfg.game, self.num_envs, num_threads=int(num_threads), stack_num=1, img_height=84,
            img_width=84, grayscale=True, frameskip=cfg.frameskip, noop_max=cfg.noop_max,
            repeat_action_probability=cfg.repeat_action_probability,
            reward_clipping=cfg.reward_clipping, max_num_frames_per_episode=cfg.max_episode_frames,
            autoreset_mode="SameStep", episodic_life=False, use_fire_reset=True)
        self.n_actions = len(self._actions)
        self.finished: list[tuple[int, float, int]] = []
        self._ret = np.zeros(self.num_envs)
        self._len = np.zeros(self.num_envs, dtype=np.int64)

    def reset(self):
        obs, _ = self.env.reset(seed=self.seed)
        self._ret[:] = 0
        self._len[:] = 0
        return obs

    def step(self, actions):
        a = self._actions[np.asarray(actions, dtype=np.int64)]
        obs, reward, term, trunc, info = self.env.step(a)
        done = np.logical_or(term, trunc)
        self._ret += reward
        self._len += 1
        for i in np.flatnonzero(done):
            self.finished.append((int(i), float(self._ret[i]), int(self._len[i])))
            self._ret[i] = 0
            self._len[i] = 0
        return obs, reward.astype(np.float32), done, info

    def close(self):
        self.env.close()
