"""Greedy Pong games of the shipped m-STPN, closed loop: the ideal plasticity rule (NumPy reference
simulator) and the device model in the loop (conversion.device_layer, default device parameters,
device seed 0, on the torch backend with its device step compiled: logits within 1e-9 of the NumPy
reference, tests/test_device_layer.py), each with sticky actions 0.25 and deterministic
(repeat_action_probability 0).  Conditions are played round robin on the same game seeds (1.5e9,
1.5e9 + 1, ...) until ``--games`` rounds are done or the time budget is spent; every game is appended to
OUT/games.json (written atomically after each game; a restarted run continues after the games it
holds) and OUT/summary.json holds mean, std, 95 % t-interval and n per condition.

    python scripts/device_in_the_loop.py --games 20 --minutes 70 --out results/device_in_the_loop
"""
from __future__ import annotations

import argparse
import dataclasses
import time
from pathlib import Path

import numpy as np


def t_interval(x):
    """The 95 % Student-t interval of the mean (:func:`snn_agent.evaluate.mean_ci`); (None, None)
    for fewer than two values."""
    from snn_agent.evaluate import mean_ci

    ci = mean_ci(x)["ci"] if len(x) > 1 else None
    return (ci[0], ci[1]) if ci else (None, None)


def write_summary(out, games, conds, args, devsum) -> dict:
    """OUT/summary.json: n, mean, std, 95 % t-interval, seeds and scores per condition, over
    complete rounds only (every condition on the same seeds); device rows add the counted
    pulses and energies per agent step."""
    from mstpn_base.io import atomic_write_json

    # only complete rounds of each environment's conditions count, so every condition has the same seeds
    summary = {}
    for syn, env in conds:
        rows = [r for r in games if r["synapses"] == syn and r["env"] == env]
        n_common = min(len([r for r in games if r["synapses"] == s and r["env"] == env]) for s in args.conditions)
        rows = rows[:n_common]
        sc = [r["score"] for r in rows]
        lo, hi = t_interval(sc)
        summary[f"{syn}/{env}"] = {"n": len(sc), "mean": float(np.mean(sc)) if sc else None,
                                   "std": float(np.std(sc, ddof=1)) if len(sc) > 1 else None,
                                   "ci95": [lo, hi], "seeds": [r["seed"] for r in rows],
                                   "scores": sc, "steps": [r["steps"] for r in rows],
                                   "all_finished": all(r["finished"] for r in rows)}
        if syn == "device" and rows:
            steps = sum(r["steps"] for r in rows)
            summary[f"{syn}/{env}"].update(
                pulses_per_step=sum(r["pulses"] for r in rows) / steps,
                pulse_energy_J_per_step=sum(r["pulse_energy_J"] for r in rows) / steps,
                bias_energy_J_per_step=sum(r["bias_energy_J"] for r in rows) / steps)
    # the effect of the device model: per-game differences on the same seeds (paired t-interval)
    for env in dict.fromkeys(e for _, e in conds):
        ideal, dev = summary.get(f"ideal/{env}"), summary.get(f"device/{env}")
        if ideal and dev and ideal["n"] > 1 and ideal["seeds"] == dev["seeds"]:
            d = np.subtract(dev["scores"], ideal["scores"])
            lo, hi = t_interval(d)
            summary[f"device - ideal (same seeds)/{env}"] = {
                "n": len(d), "mean": float(d.mean()), "std": float(d.std(ddof=1)), "ci95": [lo, hi],
                "seeds": ideal["seeds"], "scores": d.tolist()}
    atomic_write_json(out / "summary.json", {"summary": summary, "device": devsum, "args": vars(args)})
    return summary


def main(argv=None):
    import torch

    import json

    from conversion.convert import convert_policy
    from conversion.simulator import Simulator
    from mstpn_base import registry
    from mstpn_base.io import atomic_write_json
    from snn_agent.checkpoint import load_policy
    from snn_agent.play import env_config, play_runner, play_simulator

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--checkpoint", default="artifacts/mstpn/policy.safetensors")
    ap.add_argument("--out", default="results/device_in_the_loop")
    ap.add_argument("--minutes", type=float, default=15.0)
    ap.add_argument("--games", type=int, default=20, help="rounds (games per condition)")
    ap.add_argument("--conditions", nargs="+", default=["ideal", "device"], choices=["ideal", "device", "ideal_gamma0"])
    ap.add_argument("--first-seed", type=int, default=1_500_000_000, help="first game seed (the evaluation seeds, never used in training)")
    ap.add_argument("--device-seed", type=int, default=0)
    ap.add_argument("--max-steps", type=int, default=10000, help="agent steps per game at most (truncated beyond)")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    policy, meta = load_policy(args.checkpoint)
    env_meta = {"env": dataclasses.asdict(meta["config"].env)}
    net = convert_policy(policy, metadata=env_meta)   # thresholds 0: the event-driven net equals the dense policy
    net_g0 = convert_policy(policy, metadata=env_meta)
    net_g0.nodes["stpn"].gamma = np.zeros_like(net_g0.nodes["stpn"].gamma)
    from conversion import device_layer as dl

    mapping = dl.Mapping.from_block(net.nodes["stpn"].device).replace(seed=args.device_seed)
    sims = {"ideal": Simulator(net), "ideal_gamma0": Simulator(net_g0)}
    device = registry.make_runner("torch", net, synapses="device", device=mapping, compile=True)
    base = env_config(net)
    envs = {"sticky0.25": dataclasses.replace(base, repeat_action_probability=0.25),
            "deterministic": dataclasses.replace(base, repeat_action_probability=0.0)}
    conds = [(s, e) for e in envs for s in args.conditions]
    saved = out / "games.json"
    games = json.loads(saved.read_text())["games"] if saved.exists() else []
    t_end, i = time.time() + 60 * args.minutes, len(games)
    devsum = device.policy.core.devices.summary()

    def play(syn, env_cfg, seed):
        if syn != "device":
            return play_simulator(sims[syn], env_cfg, seed=seed, max_frames=args.max_steps)
        return play_runner(device, env_cfg, seed, max_steps=args.max_steps)

    while time.time() < t_end and i < args.games * len(conds):
        seed = args.first_seed + i // len(conds)
        syn, env = conds[i % len(conds)]
        before = dict(device.device_stats["stpn"])
        g = play(syn, envs[env], seed)
        row = {"synapses": syn, "env": env, "seed": seed, "score": g["score"], "steps": g["steps"],
               "finished": g["finished"], "seconds": g["seconds"]}
        if syn == "device":
            row.update({k: device.device_stats["stpn"][k] - before[k] for k in device.device_stats["stpn"]})
        games.append(row)
        print(f"{syn:13s} {env:13s} seed {seed}: {g['score']:+.0f} in {g['steps']} steps ({g['seconds']:.0f} s)", flush=True)
        atomic_write_json(out / "games.json", {"games": games, "device": devsum, "mapping": mapping.to_block()["mapping"]})
        i += 1
        write_summary(out, games, conds, args, devsum)
    summary = write_summary(out, games, conds, args, devsum)
    for k, v in summary.items():
        print(k, {kk: v[kk] for kk in ("n", "mean", "std", "ci95")})


if __name__ == "__main__":
    main()
