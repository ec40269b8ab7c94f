"""The game loop: Pong played by a policy or a backend runner, one environment, batch 1.

:func:`record` plays the PyTorch policy and keeps the observations (calibration, equivalence
tests, benchmarks); :func:`play_loop` plays any ``act(obs) -> action`` closed loop;
:func:`play_game` and :func:`record_frames` do the same for a converted network's runner.
Scores are raw game scores (points won - points lost); actions are greedy (argmax of the logits,
first index on ties), as ``mstpn evaluate``.  One game = one episode of one environment.
"""
from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass

import numpy as np

from mstpn_base.errors import ParameterError
from snn_agent.config import EnvConfig
from snn_agent.envs import PongVecEnv


@dataclass
class Recording:
    frames: np.ndarray     # (T, 1, 84, 84) uint8, the observation the agent saw at each step
    starts: np.ndarray     # (T,) bool: an episode starts at this frame (reset the state before it)
    actions: np.ndarray    # (T,) int, the action taken
    logits: np.ndarray | None  # (T, A) float64 logits of the PyTorch policy (None if not recorded)
    score: float           # score of the first game (partial if it did not finish)
    finished: bool         # whether the first game ended within the recording


def _env(env_cfg, seed: int):
    return PongVecEnv(dataclasses.replace(env_cfg, reward_clipping=False), 1, seed=seed, num_threads=1)


def record(policy, env_cfg, n_frames: int | None = None, seed: int = 0, random_actions: bool = False,
           full_game: bool = False, max_frames: int = 30_000) -> Recording:
    """Play Pong with the PyTorch ``policy`` (greedy, run in float64) or random actions and record
    the observations; stops after ``n_frames`` or, with ``full_game``, when the first game ends."""
    import torch

    if n_frames is None and not full_game:
        raise ParameterError("give n_frames or full_game=True")
    limit = max_frames if n_frames is None else int(n_frames)
    if limit < 1:
        raise ParameterError(f"n_frames must be >= 1, got {n_frames}")
    rng = np.random.default_rng(seed)
    pol = copy.deepcopy(policy).double().eval() if policy is not None else None
    env = _env(env_cfg, seed)
    frames, starts, actions, logits = [], [], [], []
    score, finished = 0.0, False
    try:
        obs = env.reset()
        state, start = None, True
        with torch.no_grad():
            for _ in range(limit):
                frames.append(obs[0].copy())
                starts.append(start)
                if start:
                    state = None
                if pol is not None:
                    lo, _, state, _ = pol(torch.as_tensor(obs), state)
                    logits.append(lo[0].numpy().copy())
                    a = int(lo[0].argmax())
                else:
                    a = 0
                if random_actions:
                    a = int(rng.integers(env.n_actions))
                actions.append(a)
                obs, reward, done, _ = env.step(np.array([a]))
                if not finished:
                    score += float(reward[0])
                start = bool(done[0])
                if start:
                    finished = True
                    if full_game:
                        break
    finally:
        env.close()
    return Recording(np.stack(frames), np.asarray(starts), np.asarray(actions),
                     np.stack(logits) if logits else None, score, finished)


def game_limit(env_cfg, max_steps: int | None) -> int:
    """Agent steps of one game: ``max_steps``, default the env's episode limit."""
    limit = int(max_steps) if max_steps else env_cfg.max_episode_frames // env_cfg.frameskip
    if limit < 1:
        raise ParameterError(f"max_steps must be >= 1, got {max_steps}")
    return limit


def game(env_cfg, seed: int = 0, max_steps: int | None = None, keep_observations: bool = False, on_step=None):
    """One game of Pong, batch 1, as a generator: yields each observation (1, 1, 84, 84) uint8,
    receives the action (``send``) and returns the result of :func:`play_loop` when the game ends
    or after :func:`game_limit` steps.  Closing it early closes the env."""
    import time

    limit = game_limit(env_cfg, max_steps)
    env = _env(env_cfg, seed)
    score, actions, seen, finished = 0.0, [], [], False
    t0 = time.perf_counter()
    try:
        obs = env.reset()
        for _ in range(limit):
            if keep_observations:
                seen.append(obs[0, 0].copy())
            a = int((yield obs))
            actions.append(a)
            obs, reward, done, _ = env.step(np.array([a]))
            score += float(reward[0])
            if on_step is not None:
                on_step(len(actions), score)
            if done[0]:
                finished = True
                break
    finally:
        env.close()
    out = {"score": score, "steps": len(actions), "frames": len(actions) * env_cfg.frameskip,
           "finished": finished, "actions": np.asarray(actions), "seconds": time.perf_counter() - t0}
    if keep_observations:
        out["observations"] = seen
    return out


def play_loop(act, env_cfg, seed: int = 0, max_steps: int | None = None, keep_observations: bool = False,
              on_step=None) -> dict:
    """Closed loop, batch 1: ``act(obs) -> action`` plays one game of Pong (obs: (1, 1, 84, 84)
    uint8).  Stops when the game ends or after ``max_steps`` agent steps (default: the env's
    episode limit).  ``on_step(steps, score)`` is called after every step (progress display).
    Returns score (raw points won - lost), steps, frames, finished, actions, seconds and, with
    ``keep_observations``, the observations the agent saw."""
    g = game(env_cfg, seed, max_steps, keep_observations, on_step)
    try:
        obs = next(g)
        while True:
            obs = g.send(act(obs))
    except StopIteration as stop:
        return stop.value
    finally:
        g.close()


def _play_in_one_run(runner, env_cfg, seed, max_steps, **kw) -> dict:
    """:func:`play_runner` on a runner that runs a whole closed loop itself
    (``runner.run_loop(obs, on_frame, max_frames)``, e.g. Brian2 in one ``run()``): ``on_frame``
    takes the greedy action, steps the game and returns its next frame (None: game over)."""
    g = game(env_cfg, seed, max_steps, **kw)
    result = {}

    def on_frame(out):
        try:
            return g.send(int(np.argmax(out.logits)))[0, 0]
        except StopIteration as stop:
            result.update(stop.value)
            return None

    try:
        runner.run_loop(next(g)[0, 0], on_frame, max_frames=game_limit(env_cfg, max_steps))
    finally:
        g.close()
    return result


def env_config(net) -> EnvConfig:
    """The Pong environment a converted network was made for (metadata "env"), else the default."""
    env = net.metadata.get("env") or {}
    fields = {f.name for f in dataclasses.fields(EnvConfig)}
    return EnvConfig(**{k: (tuple(v) if isinstance(v, list) else v) for k, v in env.items() if k in fields})


def record_frames(net, n_frames: int, seed: int = 0, policy=None) -> np.ndarray:
    """Observations (T, 84, 84) uint8 of the PyTorch policy of ``net`` playing greedily from
    ``seed``; cut at the end of the first game (no reset inside a sequence)."""
    from snn_agent.torch_backend import policy_from_network

    policy = policy if policy is not None else policy_from_network(net)
    rec = record(policy, env_config(net), n_frames=n_frames, seed=seed)
    if rec.starts[1:].any():
        cut = int(np.flatnonzero(rec.starts[1:])[0]) + 1
        return rec.frames[:cut, 0]
    return rec.frames[:, 0]


def play_game(runner, net, seed: int = 0, max_steps: int | None = None, progress=None) -> dict:
    """One full Pong game on a backend ``runner`` of ``net`` (:func:`play_runner`).  Returns score
    (points won - lost), agent steps, seconds, truncated."""
    def report(steps, score):
        if progress and steps % 500 == 0:
            progress(f"  {getattr(runner, 'name', '?')}: {steps} steps, score {score:+.0f}")

    g = play_runner(runner, env_config(net), seed, max_steps, on_step=report)
    return dict(score=g["score"], steps=g["steps"], seconds=g["seconds"], truncated=not g["finished"])


def play_runner(runner, env_cfg, seed: int = 0, max_steps: int | None = None, **kw) -> dict:
    """Closed loop on a backend runner (conversion.backend's contract): ``runner.reset()``, then one
    greedy game, the action the argmax of the logits (first index on ties, as Simulator's actions).
    A runner with ``run_loop`` (Brian2: the game in one ``run()``) plays it in its own loop, the same
    game.  ``kw`` go to :func:`play_loop`."""
    runner.reset()
    if callable(getattr(runner, "run_loop", None)):      # the whole game in the backend's own loop
        return _play_in_one_run(runner, env_cfg, seed, max_steps, **kw)
    return play_loop(lambda obs: int(np.argmax(runner.step(obs[0, 0]).logits)), env_cfg, seed, max_steps=max_steps,
                     **kw)


def play_simulator(sim, env_cfg, seed: int = 0, max_frames: int = 30_000) -> dict:
    """Closed loop: the reference simulator (batch 1) plays one greedy game (at most ``max_frames``
    agent steps). Returns score, steps, finished, actions (see :func:`play_loop`)."""
    if sim.B != 1:
        raise ParameterError("play_simulator() needs a simulator with batch 1")
    sim.reset()
    return play_loop(lambda obs: sim.step(obs).actions[0], env_cfg, seed, max_steps=max_frames)
