"""The device model inside the converted Brian2 network against the NumPy reference, and its speed.

1. check: the small m-STPN of tests/test_brian2_device.py (H = 8, gamma x 40) on 100 synthetic
   Pong-like frames (conversion.synthetic.pong_like_frames, seed 1), Brian2 numpy and cython
   targets against ``registry.make_runner("numpy", net, synapses="device")``: the largest
   element-wise relative difference of every device variable (g_st, r, q per side), of F and the
   logits (absolute), the frames with the same action, pulses and energies.
2. timing: the shipped m-STPN (artifacts/mstpn/policy.safetensors, converted with thresholds 0:
   H = 64, K = 2656, 169,984 synapses, 339,968 devices), one warm-up frame then ``--frames`` timed
   frames per runner: Brian2 numpy and cython targets with the ideal and the device synapse model,
   and the NumPy reference with the device model; wall and process CPU seconds per frame, and the
   device state of Brian2 against NumPy after those frames.

    python scripts/brian2_device_check.py --out results/brian2_device [--frames 5] [--skip-check] [--skip-timing]

Writes OUT/check.json (part 1) and OUT/timing.json (part 2), each with the machine's load average
at its start and end (timings on a shared machine are upper bounds).
"""
from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np


def small_net():
    import torch

    from conversion.convert import convert_policy
    from snn_agent.checkpoint import build_policy
    from snn_agent.config import ModelConfig

    pol = build_policy(ModelConfig(kind="mstpn", hidden=8, n_actions=3), seed=3)
    with torch.no_grad():
        g = torch.Generator().manual_seed(0)
        pol.core.gamma_raw.copy_(torch.empty(pol.core.gamma_raw.shape).uniform_(-0.3, 0.3, generator=g))
    net = convert_policy(pol.double())
    net.nodes["stpn"].gamma = net.nodes["stpn"].gamma * 40.0
    return net


def compare(ref, b2, la, lb) -> dict:
    from conversion import device_layer as dl

    st, got = ref.sim.state["stpn"], b2.device_state()
    out = {}
    for side in dl.SIDES:
        for v in dl.DEVICE_STATE:
            want, have = st[f"{v}_{side}"][0], got[side][v]
            nz = want != 0
            out[f"{v}_{side}_max_rel"] = float(np.max(np.abs(have - want)[nz] / np.abs(want)[nz])) if nz.any() else 0.0
            out[f"{v}_{side}_zeros_agree"] = bool(np.array_equal(want == 0, have == 0))
    out["F_max_abs"] = float(np.max(np.abs(b2.read_back_F() - st["F"][0])))
    la, lb = np.asarray(la), np.asarray(lb)
    out["logits_max_abs"] = float(np.max(np.abs(la - lb)))
    out["same_action_frames"] = int(np.sum(np.argmax(la, -1) == np.argmax(lb, -1)))
    out["frames"] = len(la)
    sa, sb = ref.device_stats["stpn"], b2.device_stats["stpn"]
    out["numpy_device_stats"], out["brian2_device_stats"] = sa, sb
    out["same_pulses"] = all(sa[k] == sb[k] for k in ("pulses", "potentiating", "depressing", "device_steps"))
    out["energy_max_rel"] = max(abs(sb[k] - sa[k]) / abs(sa[k]) for k in ("pulse_energy_J", "bias_energy_J"))
    return out


def run(name, net, frames, **kw):
    from mstpn_base import registry

    r = registry.make_runner(name, net, **kw)
    return r, [r.step(f).logits for f in frames]


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="results/brian2_device")
    ap.add_argument("--frames", type=int, default=5, help="timed frames of the shipped m-STPN per runner")
    ap.add_argument("--skip-check", action="store_true")
    ap.add_argument("--skip-timing", action="store_true")
    args = ap.parse_args(argv)
    import torch

    from conversion.convert import convert_policy
    from conversion.synthetic import pong_like_frames
    from mstpn_base import registry
    from snn_agent.checkpoint import load_policy

    torch.set_num_threads(1)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if not args.skip_check:
        report = {"load_average_start": os.getloadavg(), "cpus": os.cpu_count()}
        net = small_net()
        frames = pong_like_frames(100, seed=1)
        ref, la = run("numpy", net, frames, synapses="device")
        for name in ("brian2", "brian2-cython"):
            t0 = time.time()
            b2, lb = run(name, net, frames, synapses="device")
            res = compare(ref, b2, la, lb)
            res["seconds"] = time.time() - t0
            report[f"check_{name}"] = res
            print(name, {k: v for k, v in res.items() if not k.endswith("stats")}, flush=True)
        report["load_average_end"] = os.getloadavg()
        (out / "check.json").write_text(json.dumps(report, indent=1, default=float) + "\n")
        print("wrote", out / "check.json")
    if args.skip_timing:
        return
    report = {"load_average_start": os.getloadavg(), "cpus": os.cpu_count()}
    policy, _ = load_policy("artifacts/mstpn/policy.safetensors")
    net = convert_policy(policy)
    H, K = net.nodes["stpn"].W.shape
    report["shipped"] = {"H": H, "K": K, "synapses": H * K, "devices": 2 * H * K, "timed_frames": args.frames}
    frames = pong_like_frames(args.frames + 1, seed=1)
    timing = {}
    ref = None
    for name, syn in (("numpy", "device"), ("brian2", "ideal"), ("brian2", "device"),
                      ("brian2-cython", "ideal"), ("brian2-cython", "device")):
        t0 = time.time()
        r = registry.make_runner(name, net, synapses=syn)
        build = time.time() - t0
        t0 = time.time()
        logits = [r.step(frames[0]).logits]
        first = time.time() - t0
        w0, c0 = time.time(), time.process_time()
        logits += [r.step(f).logits for f in frames[1:]]
        wall, cpu = (time.time() - w0) / args.frames, (time.process_time() - c0) / args.frames
        row = {"build_s": build, "first_frame_s": first, "wall_s_per_frame": wall, "cpu_s_per_frame": cpu}
        if name == "numpy":
            ref, ref_logits = r, logits
        elif syn == "device":
            agree = compare(ref, r, ref_logits, logits)
            row.update({k: agree[k] for k in ("g_st_p_max_rel", "g_st_m_max_rel", "F_max_abs", "logits_max_abs",
                                              "same_action_frames", "same_pulses", "energy_max_rel")})
        timing[f"{name}/{syn}"] = row
        print(name, syn, row, flush=True)
        del r
    report["shipped"]["timing"] = timing
    report["load_average_end"] = os.getloadavg()
    (out / "timing.json").write_text(json.dumps(report, indent=1, default=float) + "\n")
    print("wrote", out / "timing.json")


if __name__ == "__main__":
    main()
