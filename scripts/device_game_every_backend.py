"""One full greedy Pong game of the converted m-STPN on every backend, its plastic synapses as
memristor devices (``synapses="device"``) and, beside it, with the ideal rule, on the same game
seed: every backend sees the same frames, the same seeded stream of repeated (sticky) actions and
the same device draws, so where the backends agree the games are identical.

    python scripts/device_game_every_backend.py --out results/device_game_every_backend \
        [--backends numpy torch brian2 lava] [--seed 1500000000] [--sticky 0.25] [--max-steps 27000]

Each game is appended to OUT/games.json (atomically, after every game; a restarted run skips the
games it holds) and OUT/README.md holds the table.  Converted with thresholds 0 (the event-driven
network computes the dense policy); the device block of the file (default DeviceParams, variability
and cycle-to-cycle noise on) with device seed ``--device-seed``.
"""
from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import time
from pathlib import Path

import numpy as np

#: the reference whose game each backend's is compared with, by precision
REFERENCE = {"float": "numpy", "fixed": "numpy-fixed"}


def table(games: list, args) -> str:
    rows = ["| backend | synapses | score | agent steps | finished | wall time [s] | steps/s | actions = reference |",
            "|---|---|---|---|---|---|---|---|"]
    # float backends against numpy, fixed-point backends against numpy-fixed
    ref = {(g["backend"], g["synapses"]): g["actions_sha"] for g in games if g["backend"] in REFERENCE.values()}
    for g in games:
        r = REFERENCE[g.get("precision", "float")]
        same = "reference" if g["backend"] == r else \
            ("identical" if ref.get((r, g["synapses"])) == g["actions_sha"] else "differ") \
            if (r, g["synapses"]) in ref else "-"
        rows.append(f"| {g['backend']} | {g['synapses']} | {g['score']:+.0f} | {g['steps']:,} | "
                    f"{'yes' if g['finished'] else 'no (capped)'} | {g['seconds']:.0f} | "
                    f"{g['steps'] / max(g['seconds'], 1e-9):.1f} | {same} |")
    return "\n".join(rows)


def main(argv=None) -> int:
    import torch

    from conversion import device_layer as dl
    from conversion.convert import convert_policy
    from mstpn_base import registry
    from mstpn_base.io import atomic_write_json, atomic_write_text
    from snn_agent.checkpoint import load_policy
    from snn_agent.export import convert_with_calibration
    from snn_agent.play import env_config, play_runner

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--checkpoint", default="artifacts/mstpn/policy.safetensors")
    ap.add_argument("--out", default="results/device_game_every_backend")
    ap.add_argument("--backends", nargs="+", default=["numpy", "torch", "lava", "brian2"])
    ap.add_argument("--synapses", nargs="+", default=["device", "ideal"], choices=["device", "ideal"])
    ap.add_argument("--seed", type=int, default=1_500_000_000, help="game seed (an evaluation seed)")
    ap.add_argument("--sticky", type=float, default=0.25, help="repeat_action_probability")
    ap.add_argument("--device-seed", type=int, default=0)
    ap.add_argument("--max-steps", type=int, default=27_000)
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    policy, meta = load_policy(args.checkpoint)
    net = convert_policy(policy, metadata={"env": dataclasses.asdict(meta["config"].env)})
    fixed_net = None
    if any(registry.spec(b).precision == "fixed" for b in args.backends):
        # the fixed-point backends: the same policy with fixed-point parameters (300 calibration frames,
        # seed 0, event thresholds 0 as the float network's, the default sigma-delta rule)
        fixed_net = convert_with_calibration(policy, meta["config"].env, calib_frames=300, seed=0, rel=0.0,
                                             fixed_point=True, source=args.checkpoint, log=lambda m: None)
    mapping = dl.Mapping.from_block(net.nodes["stpn"].device).replace(seed=args.device_seed)
    env_cfg = dataclasses.replace(env_config(net), repeat_action_probability=args.sticky)
    saved = out / "games.json"
    games = json.loads(saved.read_text())["games"] if saved.exists() else []
    done = {(g["backend"], g["synapses"]) for g in games}
    for backend in args.backends:
        for syn in args.synapses:
            if (backend, syn) in done:
                continue
            precision = registry.spec(backend).precision
            runner = registry.make_runner(backend, fixed_net if precision == "fixed" else net, synapses=syn,
                                          device=mapping if syn == "device" else None)
            try:
                t0 = time.perf_counter()
                g = play_runner(runner, env_cfg, args.seed, max_steps=args.max_steps)
                secs = time.perf_counter() - t0
                stats = dict(runner.device_stats.get("stpn", {})) if syn == "device" else {}
            finally:
                runner.close()
            acts = np.asarray(g["actions"], np.int64)
            row = {"backend": backend, "precision": precision, "synapses": syn, "seed": args.seed, "sticky": args.sticky,
                   "device_seed": args.device_seed if syn == "device" else None, "score": g["score"],
                   "steps": g["steps"], "finished": g["finished"], "seconds": secs,
                   "actions_sha": hashlib.sha256(acts.tobytes()).hexdigest(), "device_stats": stats}
            games.append(row)
            print(f"{backend:12s} {syn:7s}: {g['score']:+.0f} in {g['steps']} steps ({secs:.0f} s)", flush=True)
            atomic_write_json(saved, {"games": games, "args": vars(args)})
    atomic_write_text(out / "README.md", "# One full greedy game per backend, device model and ideal rule\n\n"
                      f"    python scripts/device_game_every_backend.py --out {args.out} --backends "
                      f"{' '.join(args.backends)} --seed {args.seed} --sticky {args.sticky}\n\n"
                      f"Policy `{args.checkpoint}`; game seed {args.seed}, sticky actions {args.sticky}; device seed "
                      f"{args.device_seed}. `actions = reference`: the game's action sequence (SHA-256) equals the "
                      "reference's with the same synapse model (float backends: numpy; fixed point: numpy-fixed, the network "
                      "calibrated on 300 frames, thresholds 0, the default sigma-delta rule).\n\n" + table(games, args) + "\n")
    print(table(games, args))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
