"""``mstpn convert CHECKPOINT -o NET``: policy -> event-driven network file (registered by mstpn.cli).

Steps: load the policy (a checkpoint file, or ``random`` / ``random:SEED`` for a randomly
initialised STPN policy); convert (threshold 0); record ``--calib-frames`` Pong frames played by the
policy; calibrate value ranges; choose the thresholds (``--rel`` or, by default, the largest
relative threshold keeping ``--target`` action agreement on the calibration frames); quantise to
fixed point (sigma-delta form); write the file (NIR layout + mstpn extension, atomically).
"""
from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

from conversion.calibrate import DEFAULT_TARGET
from conversion.graph import DEFAULT_RATE_STEPS
from mstpn_base.errors import ParameterError


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "convert", help="convert a trained STPN policy to an event-driven network file",
        description="Convert an STPN / m-STPN policy checkpoint to an event-driven (sigma-delta or "
                    "rate-coded IF) network in a portable NIR-based file with Loihi-style fixed point.")
    p.add_argument("checkpoint", help="policy checkpoint (.safetensors), or 'random[:SEED]' for a random STPN policy")
    p.add_argument("-o", "--output", type=Path, required=True, help="network file to write (.nir / .h5)")
    p.add_argument("--mode", choices=("sigma_delta", "rate"), default="sigma_delta",
                   help="sigma-delta graded events (default) or rate-coded integrate-and-fire")
    p.add_argument("--rate-steps", type=int, default=DEFAULT_RATE_STEPS, help="IF sub-steps per frame (rate mode)")
    p.add_argument("--calib-frames", type=int, default=300,
                   help="Pong frames recorded for calibration (0: no calibration, thresholds 0, no fixed point)")
    p.add_argument("--seed", type=int, default=0, help="environment seed of the calibration recording")
    p.add_argument("--rel", type=float, help="relative event threshold for every hidden layer (default: tuned)")
    p.add_argument("--target", type=float, default=DEFAULT_TARGET,
                   help="action agreement on the calibration frames that the tuned thresholds must keep")
    p.add_argument("--input-threshold", type=float, default=0.0, help="input event threshold [pixel units]")
    p.add_argument("--headroom", type=float, default=4.0, help="fixed-point headroom over calibrated maxima")
    p.add_argument("--no-fixed-point", action="store_true", help="do not add the fixed-point parameters")
    p.set_defaults(func=cmd_convert)


def load_source(spec: str):
    """(policy, env config, description) from a checkpoint path or 'random[:SEED]'."""
    from snn_agent.checkpoint import build_policy, load_policy
    from snn_agent.config import RunConfig

    if spec == "random" or spec.startswith("random:"):
        try:
            seed = int(spec.split(":", 1)[1]) if ":" in spec else 0
        except ValueError:
            raise ParameterError(f"random policy seed must be an integer, got {spec!r}") from None
        cfg = RunConfig().validate()
        return build_policy(cfg, seed=seed), cfg.env, f"random STPN policy (seed {seed})"
    path = Path(spec)
    if not path.exists():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    policy, meta = load_policy(path)
    return policy, meta["config"].env, f"checkpoint {path}"


def convert_with_calibration(policy, env_cfg, mode="sigma_delta", rate_steps=DEFAULT_RATE_STEPS, calib_frames=300,
                             seed=0, rel=None, target=DEFAULT_TARGET, input_threshold=0.0, headroom=4.0,
                             fixed_point=True, source="", log=print):
    """The whole pipeline of ``mstpn convert`` on an in-memory policy; returns the Network."""
    from conversion import calibrate as cal_mod
    from conversion import pong
    from conversion.convert import convert_policy
    from conversion.quantise import quantise

    meta = {"source": source, "env": dataclasses.asdict(env_cfg)}
    net = convert_policy(policy, mode=mode, rate_steps=rate_steps, metadata=meta)
    if calib_frames <= 0:
        log("no calibration: thresholds 0, no fixed-point parameters")
        return net
    rec = pong.record(policy, env_cfg, n_frames=calib_frames, seed=seed)
    dense = net if mode == "sigma_delta" else convert_policy(policy, metadata=meta)
    cal = cal_mod.calibrate(dense, rec.frames, rec.starts)
    net.metadata["calibration"] = dict(cal.to_dict(), seed=seed)
    if mode == "rate":
        cal_mod.set_rate_thresholds(net, cal)
        cal_mod.set_thresholds(net, cal, 0.0)
        log(f"rate-coded IF thresholds: {net.metadata['rate_thresholds']['values']}")
        return net
    if rel is not None:
        if not rel >= 0:
            raise ParameterError(f"--rel must be >= 0, got {rel}")
        cal_mod.set_thresholds(net, cal, rel, input_threshold)
    else:
        rel, agree = cal_mod.tune_thresholds(net, cal, rec.frames, rec.starts, rec.actions, target, input_threshold)
        log(f"thresholds: rel = {rel} (calibration action agreement {agree:.4f}, target {target})")
    if fixed_point:
        quantise(net, cal, headroom)
        log("fixed point: " + ", ".join(f"{n}: 2^{e['out_exp']}" for n, e in net.fixed.items() if "out_exp" in e))
    return net


def cmd_convert(args: argparse.Namespace) -> int:
    from conversion.nirfile import write_network

    if args.rate_steps < 1:
        raise ParameterError(f"--rate-steps must be >= 1, got {args.rate_steps}")
    policy, env_cfg, desc = load_source(args.checkpoint)
    print(f"converting {desc} ({args.mode})")
    net = convert_with_calibration(policy, env_cfg, args.mode, args.rate_steps, args.calib_frames, args.seed,
                                   args.rel, args.target, args.input_threshold, args.headroom,
                                   not args.no_fixed_point, source=desc)
    write_network(args.output, net)
    print(f"wrote {args.output}: {len(net.nodes)} nodes, {len(net.edges)} edges"
          + (", fixed point" if net.fixed else ""))
    return 0
