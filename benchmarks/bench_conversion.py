"""Event-driven conversion benchmark: sparsity, agreement with the PyTorch policy, game score.

    .venv/bin/python benchmarks/bench_conversion.py [--checkpoint PATH | --random] [--json OUT]

Policy: ``--checkpoint``, else the newest ``checkpoint_best.safetensors`` (or any checkpoint)
under artifacts/ or runs/, else a random STPN policy; the report says which.  The policy is
converted with the default thresholds (``mstpn convert`` defaults: tuned on 300 calibration frames
to keep 99 % action agreement) and fixed point.  Then:

* the PyTorch policy (float64, greedy) plays one full game; its frames are replayed through the
  float and the fixed-point event-driven networks (teacher forcing), giving the action agreement
  and the largest logit difference per frame;
* events and synaptic operations per frame (read path: conv/heads synops + plastic-layer W events
  and F z products) against the dense network's multiply-accumulates, plus the plastic upkeep;
* each event-driven network then plays its own full game (closed loop) for its score.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from snn_agent import play as pong  # noqa: E402
from snn_agent.export import convert_with_calibration, load_source  # noqa: E402
from conversion.fixed_point import OverflowMonitor  # noqa: E402
from conversion.simulator import Simulator, run_sequence  # noqa: E402
from mstpn_base.io import atomic_write_json  # noqa: E402


def find_checkpoint() -> Path | None:
    """Newest STPN / m-STPN checkpoint under artifacts/ or runs/ (``checkpoint_best`` preferred)."""
    from snn_agent.checkpoint import read_metadata

    def convertible(p: Path) -> bool:
        try:
            return read_metadata(p)["architecture"].get("kind") in ("stpn", "mstpn")
        except Exception:  # unreadable or foreign file: not a candidate
            return False

    for pattern in ("checkpoint_best.safetensors", "*.safetensors"):
        found = [p for d in ("artifacts", "runs") for p in (ROOT / d).rglob(pattern) if convertible(p)]
        if found:
            return max(found, key=lambda p: p.stat().st_mtime)
    return None


def frame_margins(logits: np.ndarray) -> np.ndarray:
    s = np.sort(logits, axis=1)
    return s[:, -1] - s[:, -2]


def margins(logits: np.ndarray) -> dict:
    m = frame_margins(logits)
    return {"median": float(np.median(m)), "p5": float(np.percentile(m, 5)), "logit_scale": float(np.abs(logits).max())}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--checkpoint", type=Path)
    ap.add_argument("--random", action="store_true", help="use a random STPN policy even if a checkpoint exists")
    ap.add_argument("--seed", type=int, default=0, help="game seed")
    ap.add_argument("--max-frames", type=int, default=20_000, help="cap per game [agent steps]")
    ap.add_argument("--rate-steps", type=int, default=0,
                    help="also run the rate-coded IF form (float) with this many sub-steps per frame (0: skip)")
    ap.add_argument("--json", type=Path, help="also write the results as JSON")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)

    ckpt = None if args.random else (args.checkpoint or find_checkpoint())
    policy, env_cfg, desc = load_source(str(ckpt) if ckpt else "random")
    print(f"policy: {desc}")
    t0 = time.time()
    net = convert_with_calibration(policy, env_cfg, seed=args.seed + 1000, source=desc,
                                   log=lambda s: print("  " + s))
    print(f"  conversion + calibration: {time.time() - t0:.1f} s")

    t0 = time.time()
    rec = pong.record(policy, env_cfg, full_game=True, seed=args.seed, max_frames=args.max_frames)
    print(f"reference game (PyTorch, float64, greedy): score {rec.score:+.0f} in {len(rec.actions)} steps"
          f"{'' if rec.finished else ' (cut, unfinished)'} [{time.time() - t0:.1f} s]")
    mg = margins(rec.logits)
    print(f"  logit margin top1-top2: median {mg['median']:.3g}, 5th pct {mg['p5']:.3g} (logit scale {mg['logit_scale']:.3g})")

    results = {"policy": desc, "reference": {"score": rec.score, "steps": int(len(rec.actions)),
                                             "finished": rec.finished, "margins": mg},
               "thresholds": net.metadata.get("thresholds"), "runs": {}}
    for name, fixed in (("float", False), ("fixed", True)):
        mon = OverflowMonitor()
        sim = Simulator(net, fixed=fixed, monitor=mon)
        t0 = time.time()
        out = run_sequence(sim, rec.frames, rec.starts)
        dt = time.time() - t0
        same = out["actions"][:, 0] == rec.actions
        agree = float(np.mean(same))
        err = float(np.max(np.abs(out["logits"][:, 0] - rec.logits)))
        decisive = frame_margins(rec.logits) > 2 * err     # frames whose margin exceeds twice the largest error
        agree_decisive = float(np.mean(same[decisive])) if decisive.any() else float("nan")
        tot = sim.totals_per_frame()
        per_node = sim.summary()
        game = pong.play_simulator(Simulator(net, fixed=fixed), env_cfg, seed=args.seed, max_frames=args.max_frames)
        results["runs"][name] = {
            "action_agreement": agree, "max_logit_error": err, "decisive_frames": int(decisive.sum()),
            "agreement_on_decisive_frames": agree_decisive, "events_per_frame": tot["events"],
            "synops_per_frame": tot["synops"], "dense_macs_per_frame": tot["dense"], "synops_ratio": tot["synops_ratio"],
            "plastic_ops_per_frame": tot["plastic_ops"], "plastic_dense_per_frame": tot["plastic_dense"],
            "events_by_layer": {n: c.get("events", 0.0) for n, c in per_node.items() if c.get("events")},
            "synops_by_layer": {n: c.get("synops", 0.0) for n, c in per_node.items() if c.get("synops")},
            "score": game["score"], "game_steps": game["steps"], "game_finished": game["finished"],
            "overflows": mon.report(), "seconds_per_frame": dt / len(rec.actions)}
        r = results["runs"][name]
        print(f"\n[{name}] teacher-forced on the reference game ({len(rec.actions)} frames, {1e3 * r['seconds_per_frame']:.1f} ms/frame)")
        print(f"  action agreement with PyTorch: {100 * agree:.2f} %   max |logit error|: {err:.3g}")
        print(f"  agreement on the {int(decisive.sum())} frames whose margin > 2 x max error: {100 * agree_decisive:.2f} %")
        print(f"  events/frame: {tot['events']:.1f}  (" + ", ".join(f"{n} {v:.1f}" for n, v in r["events_by_layer"].items()) + ")")
        print(f"  synaptic ops/frame: {tot['synops']:.4g} vs dense MACs {tot['dense']:.4g}  -> ratio {tot['synops_ratio']:.4f}"
              f" ({1 / tot['synops_ratio']:.1f}x fewer)")
        print("  synops by layer: " + ", ".join(f"{n} {v:.4g}" for n, v in r["synops_by_layer"].items()))
        print(f"  plastic upkeep/frame (norm, decay, Hebbian): {tot['plastic_ops']:.4g} vs dense {tot['plastic_dense']:.4g}")
        print(f"  {mon.report()}")
        print(f"  closed-loop game: score {game['score']:+.0f} in {game['steps']} steps"
              f"{'' if game['finished'] else ' (cut, unfinished)'}")
    if args.rate_steps > 0:
        rate = convert_with_calibration(policy, env_cfg, mode="rate", rate_steps=args.rate_steps,
                                        seed=args.seed + 1000, source=desc, log=lambda s: None)
        sim = Simulator(rate)
        out = run_sequence(sim, rec.frames, rec.starts)
        tot = sim.totals_per_frame()
        agree = float(np.mean(out["actions"][:, 0] == rec.actions))
        results["runs"]["rate_float"] = {"steps": args.rate_steps, "action_agreement": agree,
                                         "max_logit_error": float(np.max(np.abs(out["logits"][:, 0] - rec.logits))),
                                         "spikes_per_frame": tot["events"], "synops_per_frame": tot["synops"],
                                         "synops_ratio": tot["synops_ratio"]}
        r = results["runs"]["rate_float"]
        print(f"\n[rate-coded IF, T = {args.rate_steps}, float] agreement {100 * agree:.2f} %, max |logit error| "
              f"{r['max_logit_error']:.3g}, events/frame {tot['events']:.1f}, synops/frame {tot['synops']:.4g} "
              f"(ratio {tot['synops_ratio']:.3f})")
    if args.json:
        atomic_write_json(args.json, results)
        print(f"\nwrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
