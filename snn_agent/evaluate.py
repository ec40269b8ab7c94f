"""Greedy evaluation of a policy on Pong: N episodes with fixed seeds, on CPU.

Episodes run in parallel batches of up to ``num_envs`` games; game i of batch k is seeded with
``seed + k * num_envs + i`` (ale-py's vector env seeds its sub-environments consecutively), so the
same (checkpoint, seed, episodes) gives the same scores.  Actions are argmax of the logits; scores
are the raw game score (points won - points lost, -21..+21).  ``max_frames`` caps each episode
(emulator frames); an episode cut there reports its partial score and ``truncated = True``.
"""
from __future__ import annotations

import dataclasses

import numpy as np
import torch

from mstpn_base.errors import ParameterError
from mstpn_base.io import atomic_path
from snn_agent.config import EnvConfig
from snn_agent.policy import Policy, reset_state


@torch.no_grad()
def evaluate(policy: Policy, env_cfg: EnvConfig, episodes: int = 10, seed: int = 0,
             max_frames: int | None = None, gif=None, num_envs: int = 8, progress: bool = True,
             threads: int = 1) -> dict:
    """Play ``episodes`` greedy games; returns mean/std score, per-episode scores, lengths, truncated."""
    from snn_agent.envs import PongVecEnv

    if episodes < 1:
        raise ParameterError(f"episodes must be >= 1, got {episodes}")
    if max_frames is not None and max_frames < env_cfg.frameskip:
        raise ParameterError(f"max_frames must be at least one agent step ({env_cfg.frameskip} frames)")
    torch.set_num_threads(threads)
    env_cfg = dataclasses.replace(env_cfg, reward_clipping=False)
    max_steps = (max_frames // env_cfg.frameskip) if max_frames else env_cfg.max_episode_frames // env_cfg.frameskip
    policy = policy.eval()
    scores, lengths, truncated = [], [], []
    frames_gif = []
    bar = None
    if progress:
        from tqdm import tqdm
        bar = tqdm(total=episodes, unit="game", dynamic_ncols=True)
    for k, start in enumerate(range(0, episodes, num_envs)):
        n = min(num_envs, episodes - start)
        env = PongVecEnv(env_cfg, n, seed=seed + start, num_threads=1)
        try:
            obs = env.reset()
            state = policy.init_state(n)
            ret = np.zeros(n)
            length = np.zeros(n, dtype=np.int64)
            active = np.ones(n, dtype=bool)
            record = gif is not None and k == 0
            for _ in range(max_steps):
                if record:
                    frames_gif.append(obs[0, 0].copy())
                logits, _, state, _ = policy(obs, state)
                action = logits.argmax(-1).cpu().numpy()
                obs, reward, done, _ = env.step(action)
                ret += reward * active
                length += active
                if done.any():
                    state = reset_state(state, done)
                    if record and done[0] and active[0]:
                        record = False
                    newly = done & active
                    active &= ~done
                    if bar is not None and newly.any():
                        bar.update(int(newly.sum()))
                if not active.any():
                    break
            if bar is not None and active.any():
                bar.update(int(active.sum()))
            scores += ret.tolist()
            lengths += length.tolist()
            truncated += active.tolist()
        finally:
            env.close()
    if bar is not None:
        bar.close()
    if gif is not None and frames_gif:
        write_gif(gif, frames_gif)
    s = np.asarray(scores, dtype=float)
    return {"episodes": episodes, "seed": seed, "mean": float(s.mean()), "std": float(s.std()),
            "scores": s.tolist(), "agent_steps": lengths, "frames": [int(x) * env_cfg.frameskip for x in lengths],
            "truncated": [bool(t) for t in truncated], "max_frames": max_frames}


def write_gif(path, frames, scale: int = 2, fps: int = 15) -> None:
    """Write grayscale 84x84 frames (the agent's view) as an animated GIF, upscaled by ``scale``."""
    import imageio.v2 as imageio

    imgs = [np.repeat(np.repeat(f, scale, axis=0), scale, axis=1) for f in frames]
    with atomic_path(path) as tmp:
        imageio.mimsave(tmp, imgs, format="GIF", duration=1.0 / fps, loop=0)
