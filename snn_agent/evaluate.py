"""Greedy evaluation of a policy on Pong: N episodes with fixed seeds, on CPU.

Protocol (what ``mstpn evaluate`` does by default, Machado et al., JAIR 2018): sticky actions
0.25 (:func:`protocol_env`), up to 30 no-op starts, frameskip 4, episodes capped at 108,000
emulator frames, 30 greedy games on seeds EVAL_SEED_BASE + i = 1,500,000,000 + i, which no
training run uses (training seeds lie below 10^9 + num_envs, :func:`snn_agent.config.train_env_seed`).
The result holds the protocol it used (``protocol``), the mean, the sample standard deviation
(ddof 1) and the 95 % confidence interval of the mean (Student t, :func:`mean_ci`).

Episodes run in parallel batches of up to ``num_envs`` games; game i of batch k is seeded with
``seed + k * num_envs + i`` (ale-py's vector env seeds its sub-environments consecutively, the
sticky-action RNG included), so the same (checkpoint, protocol, seed, episodes) gives the same
scores.  Actions are argmax of the logits; scores are the raw game score (points won - points
lost, -21..+21).  ``max_frames`` caps each episode (emulator frames); an episode cut there
reports its partial score and ``truncated = True``.
"""
from __future__ import annotations

import dataclasses

import numpy as np
import torch

from mstpn_base.errors import ParameterError
from mstpn_base.io import atomic_path
from snn_agent.config import EVAL_SEED_BASE, STICKY_ACTIONS, TRAIN_SEED_SPACE, EnvConfig
from snn_agent.policy import Policy, reset_state
from snn_agent.stats import mean_ci

#: default number of evaluation games
EVAL_EPISODES = 30
#: largest training seed + 1 for num_envs <= 4096 (:func:`snn_agent.config.train_env_seed`)
TRAIN_SEED_END = TRAIN_SEED_SPACE + 4096


def protocol_env(env_cfg: EnvConfig, sticky: float = STICKY_ACTIONS) -> EnvConfig:
    """``env_cfg`` (a checkpoint's, for its action set and preprocessing) with the sticky-action
    probability of the evaluation protocol; validated."""
    cfg = dataclasses.replace(env_cfg, repeat_action_probability=float(sticky))
    cfg.validate()
    return cfg


def protocol_record(env_cfg: EnvConfig, episodes: int, seed: int, max_frames: int | None) -> dict:
    """The evaluation protocol as stored with a result."""
    cap = min(max_frames, env_cfg.max_episode_frames) if max_frames else env_cfg.max_episode_frames
    return {"repeat_action_probability": env_cfg.repeat_action_probability, "noop_max": env_cfg.noop_max,
            "frameskip": env_cfg.frameskip, "max_episode_frames": cap, "action_set": env_cfg.action_set,
            "reward": "raw game score", "actions": "greedy (argmax of the logits)",
            "seeds": [seed, seed + episodes - 1],
            "seeds_overlap_training": bool(seed < TRAIN_SEED_END)}


def describe_protocol(p: dict) -> str:
    """One line: ``sticky actions 0.25, noop_max 30, frameskip 4, <= 108000 frames, seeds a..b``."""
    return (f"sticky actions {p['repeat_action_probability']:g}, noop_max {p['noop_max']}, frameskip "
            f"{p['frameskip']}, <= {p['max_episode_frames']} frames per game, seeds {p['seeds'][0]}.."
            f"{p['seeds'][1]}" + (" (training seeds lie below 1,000,004,096: these may overlap them)"
                                  if p["seeds_overlap_training"] else " (never used in training)"))


def _check_games(env_cfg: EnvConfig, episodes: int, seed: int, max_frames: int | None) -> None:
    """ParameterError unless ``episodes`` games seeded ``seed``.. can be played within ``max_frames``."""
    if episodes < 1:
        raise ParameterError(f"episodes must be >= 1, got {episodes}")
    if not (0 <= seed and seed + episodes - 1 < 2**31):
        raise ParameterError(f"seeds must lie in [0, 2^31), got {seed}..{seed + episodes - 1}")
    if max_frames is not None and max_frames < env_cfg.frameskip:
        raise ParameterError(f"max_frames must be at least one agent step ({env_cfg.frameskip} frames)")


@torch.no_grad()
def evaluate(policy: Policy, env_cfg: EnvConfig, episodes: int = EVAL_EPISODES, seed: int = EVAL_SEED_BASE,
             max_frames: int | None = None, gif=None, num_envs: int = 8, progress: bool = True,
             threads: int = 1) -> dict:
    """Play ``episodes`` greedy games in ``env_cfg`` as given (use :func:`protocol_env` for the
    standard protocol); returns mean, std (ddof 1), 95 % CI, per-episode scores, lengths,
    truncated and ``protocol``.  Without autograd: a graph kept across a game's steps would hold
    every step's short-term weights F (8 games x 680 KB per step for the Pong STPN)."""
    from snn_agent.envs import PongVecEnv

    _check_games(env_cfg, episodes, seed, max_frames)
    torch.set_num_threads(threads)
    env_cfg = dataclasses.replace(env_cfg, reward_clipping=False)
    max_steps = (max_frames // env_cfg.frameskip) if max_frames else env_cfg.max_episode_frames // env_cfg.frameskip
    policy = policy.eval()
    scores, lengths, truncated = [], [], []
    frames_gif, rewards_gif = [], []
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
                if record:
                    rewards_gif.append(float(reward[0]))
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
        write_gif(gif, frames_gif, fps=60.0 / env_cfg.frameskip, rewards=rewards_gif)
    s = np.asarray(scores, dtype=float)
    ci = mean_ci(s)
    return {"episodes": episodes, "seed": seed, "mean": ci["mean"], "std": ci["std"], "ci95": ci["ci"],
            "protocol": protocol_record(env_cfg, episodes, seed, max_frames), "scores": s.tolist(),
            "agent_steps": lengths, "frames": [int(x) * env_cfg.frameskip for x in lengths],
            "truncated": [bool(t) for t in truncated], "max_frames": max_frames}


# -- the converted network on a backend runner (the device synapse model) -------------------------------
#: the backend that plays a converted network's games by default: the event-driven NumPy reference
DEFAULT_BACKEND = "numpy"


def device_mapping(net, seed: int | None = None, what: str = "the network"):
    """The device mapping a device run of the converted ``net`` uses: the plastic node's device
    block (:class:`conversion.device_layer.Mapping`), with the device draws from ``seed`` (None:
    the block's own seed).  Returns (node name, mapping); ParameterError if ``net`` has no device
    block (only an m-STPN has one)."""
    from conversion import device_layer as dl

    nodes = [n for n, node in net.nodes.items() if getattr(node, "device", None)]
    if not nodes:
        raise ParameterError(f"{what} has no device block: the device synapse model runs an m-STPN "
                             "(train one with --model mstpn) or use --synapses ideal")
    mapping = dl.Mapping.from_block(net.nodes[nodes[0]].device)
    if seed is not None:
        if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2**63:
            raise ParameterError(f"--device-seed must be an integer in [0, 2^63), got {seed!r}")
        mapping = mapping.replace(seed=seed)
    return nodes[0], mapping


def policy_device_block(policy):
    """The device block the conversion of ``policy`` carries (None: not an m-STPN), without
    converting the whole policy."""
    from conversion.convert import policy_arrays

    return policy_arrays(policy)["device"]


def check_device_backend(name: str, synapses: str = "device") -> str:
    """``name`` if it is a backend whose runner plays games closed loop with synapse model
    ``synapses`` (read from the registry), else ParameterError naming the ones that do."""
    from mstpn_base import registry

    if name not in registry.network_backends():
        raise ParameterError(f"unknown backend {name!r}; choose from {', '.join(registry.network_backends())}")
    able = [b for b in registry.synapse_backends(synapses) if registry.spec(b).closed_loop]
    if name not in able:
        raise ParameterError(f"backend {name!r} does not play the {synapses!r} synapse model closed loop; "
                             f"backends that do: {', '.join(able) or 'none'}")
    return name


def evaluate_converted(net, env_cfg: EnvConfig, episodes: int = EVAL_EPISODES, seed: int = EVAL_SEED_BASE,
                       max_frames: int | None = None, gif=None, backend: str = DEFAULT_BACKEND,
                       synapses: str = "device", device=None, progress: bool = True) -> dict:
    """Greedy games of the converted network ``net`` on ``backend``'s runner with the plastic
    layer's synapse model ``synapses`` (``device``: a conversion.device_layer.Mapping, None: the
    file's device block), one game after another in one environment (batch 1); game i is seeded
    ``seed + i`` as in :func:`evaluate`, the runner is reset before each game.  Returns the keys of
    :func:`evaluate` and ``backend``, ``synapses``, ``device_stats`` (the runner's counted device
    activity over all games, :data:`conversion.simulator.DEVICE_COUNTERS`) and ``games_device_stats``
    (the same per game)."""
    from mstpn_base import registry
    from snn_agent.play import play_runner

    _check_games(env_cfg, episodes, seed, max_frames)
    check_device_backend(backend, synapses)
    torch.set_num_threads(1)
    env_cfg = dataclasses.replace(env_cfg, reward_clipping=False)
    max_steps = (max_frames // env_cfg.frameskip) if max_frames else env_cfg.max_episode_frames // env_cfg.frameskip
    scores, lengths, truncated, per_game = [], [], [], []
    frames_gif, running = [], []
    bar = None
    if progress:
        from tqdm import tqdm
        bar = tqdm(total=episodes, unit="game", dynamic_ncols=True)
    runner = registry.make_runner(backend, net, synapses=synapses, device=device)
    try:
        for i in range(episodes):
            before = {n: dict(c) for n, c in (getattr(runner, "device_stats", {}) or {}).items()}
            record = gif is not None and i == 0
            g = play_runner(runner, env_cfg, seed + i, max_steps, keep_observations=record,
                            on_step=(lambda _s, score: running.append(score)) if record else None)
            if record:
                frames_gif = g["observations"]
            after = getattr(runner, "device_stats", {}) or {}
            per_game.append({n: {k: v - before.get(n, {}).get(k, 0) for k, v in c.items()} for n, c in after.items()})
            scores.append(g["score"])
            lengths.append(g["steps"])
            truncated.append(not g["finished"])
            if bar is not None:
                bar.update(1)
        stats = {n: dict(c) for n, c in (getattr(runner, "device_stats", {}) or {}).items()}
    finally:
        runner.close()
        if bar is not None:
            bar.close()
    if gif is not None and frames_gif:
        write_gif(gif, frames_gif, fps=60.0 / env_cfg.frameskip, rewards=np.diff([0.0] + running).tolist())
    s = np.asarray(scores, dtype=float)
    ci = mean_ci(s)
    return {"episodes": episodes, "seed": seed, "mean": ci["mean"], "std": ci["std"], "ci95": ci["ci"],
            "protocol": protocol_record(env_cfg, episodes, seed, max_frames), "scores": s.tolist(),
            "agent_steps": lengths, "frames": [int(x) * env_cfg.frameskip for x in lengths],
            "truncated": truncated, "max_frames": max_frames, "backend": backend, "synapses": synapses,
            "device_stats": stats, "games_device_stats": per_game}


#: the agent's step rate by default: 60 Hz emulator frames / frameskip 4
GIF_FPS = 15.0
#: height of the score banner above each GIF frame, in output pixels
GIF_BANNER_PX = 16
AGENT_GREEN = (92, 186, 92)


def write_gif(path, frames, scale: int = 2, fps: float = GIF_FPS, rewards=None, poster=None) -> None:
    """Write grayscale 84x84 frames (the agent's view) as an animated GIF at the game's true rate.

    ``fps`` is the agent's step rate, 60 Hz / frameskip (15 Hz by default): one GIF frame per agent
    step.  GIF stores each delay in centiseconds, so per-frame delays are 10 ms multiples chosen
    so that frame i starts at round(i * 1000 / fps) ms to the nearest 10 ms (15 Hz: 70, 60, 70, ...
    ms, exactly 15 frames per second on average; 10, 20 or 25 Hz give a constant delay).  Each
    frame is upscaled by ``scale`` and gets a banner with the score (agent vs opponent, summed from
    ``rewards``: the reward of each step, +1 agent point, -1 opponent point) and the agent's paddle
    (Pong: the right one) drawn green.  ``poster``: also write a mid-game frame as PNG (the still
    shown where a GIF does not animate).
    """
    if not fps > 0:
        raise ParameterError(f"fps must be > 0, got {fps!r}")
    if not frames:
        raise ParameterError("write_gif needs at least one frame")
    if rewards is not None and len(rewards) < len(frames) - 1:
        raise ParameterError(f"{len(rewards)} rewards for {len(frames)} frames")
    agent = opponent = 0
    imgs = []
    for i, f in enumerate(frames):
        imgs.append(_annotated_frame(np.asarray(f), scale, agent, opponent, rewards is not None))
        if rewards is not None and i < len(rewards):
            agent += int(rewards[i] > 0)
            opponent += int(rewards[i] < 0)
    durations = gif_frame_durations(len(imgs), fps)
    with atomic_path(path) as tmp:
        imgs[0].save(tmp, format="GIF", save_all=True, append_images=imgs[1:], duration=durations,
                     loop=0, disposal=1)
    if poster is not None:
        with atomic_path(poster) as tmp:
            imgs[len(imgs) // 2].convert("RGB").save(tmp, format="PNG")


def gif_frame_durations(n: int, fps: float) -> list[int]:
    """Per-frame GIF delays [ms] (10 ms multiples) whose running sum tracks i * 1000 / fps."""
    ends = [10 * round((i + 1) * 100.0 / fps) for i in range(n)]
    return [max(10, e - s) for s, e in zip([0] + ends[:-1], ends)]


def _annotated_frame(frame: np.ndarray, scale: int, agent: int, opponent: int, score: bool):
    """One 84x84 grayscale frame as an RGB image: upscaled, agent's paddle green, score banner."""
    from PIL import Image, ImageDraw

    g = np.asarray(frame, dtype=np.uint8)
    rgb = np.repeat(g[:, :, None], 3, axis=2)
    h, w = g.shape
    if (h, w) == (84, 84):
        # the agent's (right) paddle: columns 72-76 of the playfield (rows 14-76), brighter than the
        # background; Pong draws it green, the 84x84 grayscale view loses the colour
        field = g[14:77, 72:77].astype(int)
        mask = field > np.median(g[14:77]) + 15
        patch = rgb[14:77, 72:77]
        patch[mask] = AGENT_GREEN
    img = Image.fromarray(rgb, "RGB").resize((w * scale, h * scale), Image.NEAREST)
    out = Image.new("RGB", (img.width, img.height + GIF_BANNER_PX), (24, 24, 24))
    out.paste(img, (0, GIF_BANNER_PX))
    d = ImageDraw.Draw(out)
    left = f"opponent {opponent}" if score else "opponent"
    right = f"agent {agent}" if score else "agent (green)"
    d.text((3, 2), left, fill=(230, 230, 230))
    d.text((out.width - 3 - d.textlength(right), 2), right, fill=AGENT_GREEN)
    return out
