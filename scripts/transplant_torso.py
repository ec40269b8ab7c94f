"""Experiment: start a plastic-core policy (STPN / m-STPN) from another policy's trained conv torso.

    .venv/bin/python scripts/transplant_torso.py SOURCE.safetensors OUT.safetensors [--model stpn] [--seed 0]
    .venv/bin/mstpn train --init-from OUT.safetensors --out runs/stpn_torso --frames 25000000

The new checkpoint has SOURCE's Conv2d weights and biases (the ball/paddle detectors an agent
learned), a freshly initialised core and heads (``build_policy(seed)``), and progress 0 frames:
the frames SOURCE trained for are not counted in the new run, so report them beside its result.
Why: on CPU the LSTM baseline learned Pong within ~10M frames while the STPN had not improved by
~6M; starting the STPN from learned features separates feature learning from the plastic core.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from snn_agent.checkpoint import build_policy, load_policy, save_checkpoint  # noqa: E402
from snn_agent.config import replace  # noqa: E402


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("source", type=Path)
    ap.add_argument("out", type=Path)
    ap.add_argument("--model", default="stpn", choices=("stpn", "mstpn", "lstm"))
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    src, meta = load_policy(args.source)
    cfg = replace(meta["config"], model={"kind": args.model, "device_params": None})
    policy = build_policy(cfg, seed=args.seed)
    policy.torso.load_state_dict(src.torso.state_dict())
    save_checkpoint(args.out, policy, cfg, progress={"frames": 0, "agent_steps": 0, "updates": 0,
                                                     "episodes": 0, "wall_s": 0.0})
    print(f"{args.out}: {args.model} core (seed {args.seed}) on the conv torso of {args.source} "
          f"({meta['progress'].get('frames')} frames trained there)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
