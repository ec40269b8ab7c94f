"""A trained policy as a calibrated event-driven network: the pipeline behind ``mstpn convert``.

Load the policy (a checkpoint, or ``random[:SEED]``); convert it (threshold 0); record Pong frames
played by it; calibrate value ranges; choose the event thresholds (given, or tuned to keep a
target action agreement on the calibration frames); quantise to Loihi-style fixed point.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path

from conversion import calibrate as cal_mod
from conversion.calibrate import DEFAULT_TARGET
from conversion.convert import convert_policy
from conversion.graph import DEFAULT_RATE_STEPS
from conversion.quantise import quantise_checked
from mstpn_base.errors import ParameterError
from snn_agent.checkpoint import build_policy, load_policy
from snn_agent.config import RunConfig
from snn_agent.play import record


def load_source(spec: str):
    """(policy, env config, description) from a checkpoint path or 'random[:SEED]'."""
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
                             seed=0, rel=None, target=DEFAULT_TARGET, input_threshold=0.0, headroom=None,
                             fixed_point=True, source="", log=print, sd_rule="lava"):
    """The whole pipeline of ``mstpn convert`` on an in-memory policy; returns the Network."""
    meta = {"source": source, "env": dataclasses.asdict(env_cfg)}
    net = convert_policy(policy, mode=mode, rate_steps=rate_steps, metadata=meta)
    if calib_frames <= 0:
        log("no calibration: thresholds 0, no fixed-point parameters")
        return net
    rec = record(policy, env_cfg, n_frames=calib_frames, seed=seed)
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
        quantise_checked(net, cal, rec.frames, rec.starts, headroom, sd_rule=sd_rule, log=log)
        log("fixed point: " + ", ".join(f"{n}: 2^{e['out_exp']}" for n, e in net.fixed.items() if "out_exp" in e))
    return net
