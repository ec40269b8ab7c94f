"""numpy-fixed device run vs the float device run of the shipped m-STPN on recorded Pong frames:
action agreement and the relative error of F (max over frames of max|F_int 2**f_exp - F| / max|F|),
with the ideal synapse model's fixed-vs-float numbers beside them.

    python scripts/device_layer_fixed_compare.py --frames 100
"""
from __future__ import annotations

import argparse
import json

import numpy as np


def main(argv=None):
    import torch

    from conversion.simulator import Simulator
    from snn_agent.checkpoint import load_policy
    from snn_agent.export import convert_with_calibration
    from snn_agent.play import record

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--checkpoint", default="artifacts/mstpn/policy.safetensors")
    ap.add_argument("--frames", type=int, default=100)
    ap.add_argument("--seed", type=int, default=1, help="environment seed of the recorded frames")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    policy, meta = load_policy(args.checkpoint)
    env = meta["config"].env
    net = convert_with_calibration(policy, env, calib_frames=300, seed=0, log=lambda *_: None)
    rec = record(policy, env, n_frames=args.frames, seed=args.seed)
    fe = int(net.fixed["stpn"]["f_exp"])
    out = {}
    for syn in ("device", "ideal"):
        fl, fi = Simulator(net, synapses=syn), Simulator(net, fixed=True, synapses=syn)
        same, err = 0, 0.0
        for frame, start in zip(rec.frames, rec.starts):
            if start:
                fl.reset(), fi.reset()
            a, b = fl.step(frame[None]), fi.step(frame[None])
            same += int(a.actions[0] == b.actions[0])
            F = fl.state["stpn"]["F"]
            err = max(err, float(np.max(np.abs(fi.state["stpn"]["F"] * 2.0**fe - F)) / max(float(np.max(np.abs(F))), 1e-300)))
        out[syn] = {"frames": len(rec.frames), "action_agreement": same / len(rec.frames), "max_rel_F_error": err,
                    "overflow": fi.monitor.report()}
        if syn == "device":
            out[syn]["pulses_fixed"], out[syn]["pulses_float"] = fi.device_stats["stpn"]["pulses"], fl.device_stats["stpn"]["pulses"]
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
