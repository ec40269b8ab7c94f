"""Greedy Pong games of the shipped m-STPN on the NumPy reference simulator, closed loop: the ideal
plasticity rule, the device model in the loop (conversion.device_layer, default device parameters,
device seed 0) and the ideal rule with gamma = 0 (no short-term plasticity), each with sticky
actions 0.25 and deterministic (repeat_action_probability 0).  Conditions are played round robin on
the same game seeds (1000, 1001, ...) until the time budget is spent; every game is appended to
OUT/games.json (written atomically after each game) and OUT/summary.json holds mean, std, 95 %
t-interval and n per condition.

    python scripts/device_in_the_loop.py --minutes 15 --out results/device_in_the_loop
"""
from __future__ import annotations

import argparse
import dataclasses
import math
import time
from pathlib import Path

import numpy as np


def t_interval(x):
    from scipy import stats

    x = np.asarray(x, float)
    n = len(x)
    if n < 2:
        return None, None
    half = stats.t.ppf(0.975, n - 1) * x.std(ddof=1) / math.sqrt(n)
    return float(x.mean() - half), float(x.mean() + half)


def main(argv=None):
    import torch

    from conversion.convert import convert_policy
    from conversion.simulator import Simulator
    from mstpn_base.io import atomic_write_json
    from snn_agent.checkpoint import load_policy
    from snn_agent.play import env_config, play_simulator

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--checkpoint", default="artifacts/mstpn/policy.safetensors")
    ap.add_argument("--out", default="results/device_in_the_loop")
    ap.add_argument("--minutes", type=float, default=15.0)
    ap.add_argument("--first-seed", type=int, default=1000)
    ap.add_argument("--device-seed", type=int, default=0)
    ap.add_argument("--max-steps", type=int, default=6000, help="agent steps per game at most (truncated beyond)")
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
    sims = {"ideal": Simulator(net), "device": Simulator(net, synapses="device", device=mapping),
            "ideal_gamma0": Simulator(net_g0)}
    base = env_config(net)
    envs = {"sticky0.25": dataclasses.replace(base, repeat_action_probability=0.25),
            "deterministic": dataclasses.replace(base, repeat_action_probability=0.0)}
    conds = [(s, e) for e in envs for s in sims]
    games, t_end, i = [], time.time() + 60 * args.minutes, 0
    devsum = sims["device"].devices["stpn"].summary()
    while time.time() < t_end:
        seed = args.first_seed + i // len(conds)
        syn, env = conds[i % len(conds)]
        sim = sims[syn]
        before = dict(sim.device_stats.get("stpn", {}))
        g = play_simulator(sim, envs[env], seed=seed, max_frames=args.max_steps)
        row = {"synapses": syn, "env": env, "seed": seed, "score": g["score"], "steps": g["steps"],
               "finished": g["finished"], "seconds": g["seconds"]}
        if syn == "device":
            row.update({k: sim.device_stats["stpn"][k] - before[k] for k in sim.device_stats["stpn"]})
        games.append(row)
        print(f"{syn:13s} {env:13s} seed {seed}: {g['score']:+.0f} in {g['steps']} steps ({g['seconds']:.0f} s)", flush=True)
        atomic_write_json(out / "games.json", {"games": games, "device": devsum, "mapping": mapping.to_block()["mapping"]})
        i += 1
    # only complete rounds of each environment's conditions count, so every condition has the same seeds
    summary = {}
    for syn, env in conds:
        rows = [r for r in games if r["synapses"] == syn and r["env"] == env]
        n_common = min(len([r for r in games if r["synapses"] == s and r["env"] == env]) for s in sims)
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
    atomic_write_json(out / "summary.json", {"summary": summary, "device": devsum, "args": vars(args)})
    for k, v in summary.items():
        print(k, {kk: v[kk] for kk in ("n", "mean", "std", "ci95")})


if __name__ == "__main__":
    main()
