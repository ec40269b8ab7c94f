"""``mstpn convert CHECKPOINT -o NET``: policy -> event-driven network file (registered by mstpn.cli;
the pipeline itself is :func:`snn_agent.export.convert_with_calibration`).

Steps: load the policy (a checkpoint file, or ``random`` / ``random:SEED`` for a randomly
initialised STPN policy); convert (threshold 0); record ``--calib-frames`` Pong frames played by the
policy; calibrate value ranges; choose the thresholds (``--rel`` or, by default, the largest
relative threshold keeping ``--target`` action agreement on the calibration frames); quantise to
fixed point (sigma-delta form, ``--sd-rule``: "lava" by default, see :mod:`conversion.quantise`); write the file (NIR layout + mstpn extension, atomically).
"""
from __future__ import annotations

import argparse

from conversion.calibrate import DEFAULT_TARGET
from conversion.fixed_point import SD_RULES
from conversion.graph import DEFAULT_RATE_STEPS
from mstpn_base.checks import check_output_file, check_seed
from mstpn_base.cliargs import add_out
from mstpn_base.errors import ParameterError
from snn_agent.export import convert_with_calibration, load_source


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "convert", help="convert a trained STPN policy to an event-driven network file",
        description="Convert an STPN / m-STPN policy checkpoint to an event-driven (sigma-delta or "
                    "rate-coded IF) network in a portable NIR-based file with Loihi-style fixed point.")
    p.add_argument("checkpoint", help="policy checkpoint (.safetensors), or 'random[:SEED]' for a random STPN policy")
    add_out(p, required=True, metavar="NET", aliases=("--output",), help="network file to write (.nir / .h5)")
    p.add_argument("--mode", choices=("sigma_delta", "rate"), default="sigma_delta",
                   help="sigma-delta graded events or rate-coded integrate-and-fire")
    p.add_argument("--rate-steps", type=int, default=DEFAULT_RATE_STEPS, help="IF sub-steps per frame (rate mode)")
    p.add_argument("--calib-frames", type=int, default=300,
                   help="Pong frames recorded for calibration (0: no calibration, thresholds 0, no fixed point)")
    p.add_argument("--seed", type=int, default=0, help="environment seed of the calibration recording")
    p.add_argument("--rel", type=float, help="relative event threshold for every hidden layer (default: tuned "
                                              "to keep --target)")
    p.add_argument("--target", type=float, default=DEFAULT_TARGET,
                   help="action agreement on the calibration frames that the tuned thresholds must keep")
    p.add_argument("--input-threshold", type=float, default=0.0, help="input event threshold [pixel units]")
    p.add_argument("--headroom", type=float, default=None,
                   help="fixed-point headroom over calibrated maxima (default: 1.5 for --sd-rule lava, 4 otherwise)")
    p.add_argument("--sd-rule", choices=SD_RULES, default="lava",
                   help="fixed-point sigma-delta rule: 'lava' (Lava's SigmaDelta: fire at |delta| >= vth, floored "
                        "payloads; the smallest state_exp per layer that the 24-bit budgets allow), 'lava-netx' "
                        "(the same with lava-dl netx's exponents: `mstpn export-netx` is exact) or 'round' "
                        "(the rounded-activation rule of version-1 files)")
    p.add_argument("--no-fixed-point", action="store_true",
                   help="do not add the fixed-point parameters (default: added, when calibrated)")
    p.set_defaults(func=cmd_convert)


def cmd_convert(args: argparse.Namespace) -> int:
    from conversion.nirfile import write_network

    if args.rate_steps < 1:
        raise ParameterError(f"--rate-steps must be >= 1, got {args.rate_steps}")
    if args.calib_frames < 0:
        raise ParameterError(f"--calib-frames must be >= 0 (0: no calibration), got {args.calib_frames}")
    if not 0 < args.target <= 1:
        raise ParameterError(f"--target must be an action agreement in (0, 1], got {args.target}")
    check_seed(args.seed)
    check_output_file(args.out, "--out")
    policy, env_cfg, desc = load_source(args.checkpoint)
    print(f"converting {desc} ({args.mode})")
    net = convert_with_calibration(policy, env_cfg, args.mode, args.rate_steps, args.calib_frames, args.seed,
                                   args.rel, args.target, args.input_threshold, args.headroom,
                                   not args.no_fixed_point, source=desc, sd_rule=args.sd_rule)
    for n, v in net.metadata.get("sd_state_exp", {}).items():
        print(f"  {n}: state_exp {v['state_exp']} ({v['why']})")
    write_network(args.out, net)
    print(f"wrote {args.out}: {len(net.nodes)} nodes, {len(net.edges)} edges"
          + (", fixed point" if net.fixed else ""))
    return 0
