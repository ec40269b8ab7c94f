"""Where the snnTorch rate form leaves PyTorch's game: replay the PyTorch policy's own greedy game
(seed ``--seed``, ``--frames`` frames) through the rate form at each number of sub-steps T and print
the action agreement and the first frames whose action differs.  A closed-loop game on the rate
form is PyTorch's game exactly up to its first differing action, so that frame is where its own
game begins.

    python benchmarks/bench_rate_divergence.py [--checkpoint CKPT] [--seed 1003] [--frames 1500]
                                               [--steps 256 1024]
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--checkpoint", type=Path, default=ROOT / "artifacts" / "stpn" / "policy.safetensors")
    ap.add_argument("--seed", type=int, default=1003)
    ap.add_argument("--frames", type=int, default=1500)
    ap.add_argument("--steps", type=int, nargs="+", default=[256, 1024])
    args = ap.parse_args(argv)

    from snn_agent.export import convert_with_calibration
    from mstpn import compare as C
    from mstpn_base import registry
    from snn_agent.play import record_frames
    from snn_agent.checkpoint import load_policy
    from snn_agent.snntorch_backend import SnnTorchRunner

    policy, meta = load_policy(args.checkpoint)
    net = convert_with_calibration(policy, meta["config"].env, calib_frames=300, seed=0, log=lambda *a: None)
    frames = record_frames(net, args.frames, seed=args.seed, policy=policy)
    ref = C.run_sequence(registry.make_runner("torch", net, policy=policy), frames, "torch", keep_acts=False)
    ref_actions = ref.logits.argmax(1)
    for steps in args.steps:
        runner = SnnTorchRunner(net, steps=steps)
        runner.reset()
        t0 = time.perf_counter()
        diffs = [i for i, f in enumerate(frames) if int(runner.step(f).logits.argmax()) != ref_actions[i]]
        print(json.dumps({"T": steps, "seed": args.seed, "frames": len(frames),
                          "agreement": 1 - len(diffs) / len(frames), "first_differing_frames": diffs[:10],
                          "differing": len(diffs), "s_per_frame": (time.perf_counter() - t0) / len(frames)}),
              flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
