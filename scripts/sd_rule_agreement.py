"""Action agreement of the fixed-point STPN with the float network under each sigma-delta rule.

The policy (default: the shipped STPN) is converted as ``mstpn convert`` does by default
(300 calibration frames of seed 0, thresholds tuned to the default target), once; the same
calibration is then quantised with each rule (``quantise(net, cal, sd_rule=...)``, which is what
``mstpn convert --sd-rule RULE`` writes).  The PyTorch policy records ``--frames`` Pong frames
(seed ``--record-seed``, cut at the end of the first game), and the float and the fixed-point
reference simulators replay them (teacher forcing).  Printed per rule: the chosen state_exp of
every Lava-rule layer and why, the action agreement with the float network, the largest logit
error, the overflow count of the fixed-point run and its events per frame.

    .venv/bin/python scripts/sd_rule_agreement.py [--frames 1000] [--json out.json]
"""
from __future__ import annotations

import argparse
import copy
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from conversion.calibrate import Calibration  # noqa: E402
from conversion.fixed_point import SD_RULES, OverflowMonitor  # noqa: E402
from conversion.quantise import default_headroom, quantise  # noqa: E402
from conversion.simulator import Simulator, run_sequence  # noqa: E402
from mstpn_base.io import atomic_write_json  # noqa: E402
from snn_agent.export import convert_with_calibration, load_source  # noqa: E402
from snn_agent.play import record_frames  # noqa: E402


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--checkpoint", default=str(ROOT / "artifacts" / "stpn" / "policy.safetensors"))
    ap.add_argument("--frames", type=int, default=1000, help="recorded frames replayed (the first game at most)")
    ap.add_argument("--record-seed", type=int, default=1, help="environment seed of the recording")
    ap.add_argument("--calib-frames", type=int, default=300)
    ap.add_argument("--seed", type=int, default=0, help="environment seed of the calibration recording")
    ap.add_argument("--rules", nargs="+", choices=SD_RULES, default=["lava", "lava-netx", "round"])
    ap.add_argument("--headroom", type=float, nargs="+", default=[None],
                    help="calibration headroom factor(s): each rule is quantised with each (default: each "
                         "rule's own, conversion.quantise.RULE_HEADROOM)")
    ap.add_argument("--json", type=Path, help="also write the results as JSON")
    args = ap.parse_args(argv)
    import torch

    torch.set_num_threads(1)
    policy, env_cfg, desc = load_source(args.checkpoint)
    t0 = time.time()
    base = convert_with_calibration(policy, env_cfg, calib_frames=args.calib_frames, seed=args.seed,
                                    fixed_point=False, source=desc, log=lambda s: print("  " + s))
    cal = Calibration.from_dict(base.metadata["calibration"])
    print(f"{desc}: converted and calibrated in {time.time() - t0:.0f} s")
    frames = record_frames(base, args.frames, seed=args.record_seed, policy=policy)
    frames = frames.reshape(len(frames), 1, *base.nodes[base.order[0]].shape)     # (T, B = 1, C, H, W)
    print(f"{len(frames)} frames recorded (seed {args.record_seed})")
    fl = run_sequence(Simulator(base), frames)
    res = {"policy": desc, "frames": int(len(frames)), "record_seed": args.record_seed,
           "calibration": {"frames": args.calib_frames, "seed": args.seed},
           "thresholds": base.metadata.get("thresholds"), "rules": {}}
    for rule, hr in ((r, h) for h in args.headroom for r in args.rules):
        key = rule if hr is None else f"{rule}@headroom{hr:g}"
        net = copy.deepcopy(base)
        quantise(net, cal, headroom=hr, sd_rule=rule)
        mon = OverflowMonitor()
        sim = Simulator(net, fixed=True, monitor=mon)
        t0 = time.time()
        out = run_sequence(sim, frames)
        agree = float(np.mean(out["actions"][:, 0] == fl["actions"][:, 0]))
        err = float(np.max(np.abs(out["logits"] - fl["logits"])))
        exps = net.metadata.get("sd_state_exp", {})
        r = res["rules"][key] = {"headroom": default_headroom(rule) if hr is None else hr, "action_agreement": agree, "max_logit_error": err,
                                  "overflows": int(sum(mon.counts.values())),
                                  "events_per_frame": float(sim.totals_per_frame()["events"]),
                                  "state_exp": exps, "out_exp": {n: int(e["out_exp"]) for n, e in net.fixed.items()
                                                                 if isinstance(e, dict) and "out_exp" in e}}
        print(f"\n[{key}] action agreement {100 * agree:.2f} %, max |logit error| {err:.3g}, "
              f"overflows {r['overflows']}, {r['events_per_frame']:.0f} events/frame [{time.time() - t0:.0f} s]")
        for n, v in exps.items():
            print(f"  {n}: state_exp {v['state_exp']} ({v['why']})")
    if args.json:
        atomic_write_json(args.json, res)
    return 0


if __name__ == "__main__":
    sys.exit(main())
