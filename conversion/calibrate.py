"""Calibration on recorded Pong observations: value ranges per node (for the fixed-point scales)
and the default event thresholds.

Statistics come from the float simulator run with the network as given (convert with threshold
0 first, so the statistics are those of the dense network).  Per node: ``maxabs`` (largest |value|
it exposes: u of a synapse node, y of a neuron node, a of the plastic layer), ``p999`` (99.9th
percentile of |value| over units and frames) and, for the plastic layer, ``F`` (largest |F|).

Thresholds (sigma-delta): an event is sent when the activation moved by more than ``rel`` x (the
layer's 99.9th-percentile |activation|), one ``rel`` for every hidden layer; the input layer uses an
absolute pixel threshold (default 0: every changed pixel is an event).  The default ``rel``
(:func:`tune_thresholds`) is the largest value of :data:`REL_LADDER` whose float network still picks
the PyTorch policy's action on at least ``target`` (default 99.9 %, see :data:`DEFAULT_TARGET`) of the
calibration frames: a policy with small logit margins gets small thresholds, a confident one sparse
events.
Default rate-coded IF thresholds (:func:`rate_thresholds`): per channel, the channel's largest
activation over the calibration frames (channel-wise normalisation, as in Spiking-YOLO, Kim et al.
2020); ``steps`` sub-steps then resolve a channel's activations in steps of v_threshold / steps and
clip nothing seen in calibration.  A channel never active in calibration gets the layer's largest
activation.  Measured on the 8M-frame STPN (600 frames of play, T = 128): per-layer p99.9 thresholds
agree with the policy on 94.3 % of actions (clipping the top 0.1 % costs more than resolution),
per-layer maxima 98.7 %, per-channel maxima 98.8 %; at T = 32: 94.0 / 94.7 / 96.8 %.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from conversion import graph as g
from conversion.simulator import Simulator
from mstpn_base.errors import ParameterError

#: candidate relative thresholds, largest (sparsest) first
REL_LADDER = (0.1, 0.05, 0.02, 0.01, 0.005, 0.002, 0.001, 5e-4, 2e-4, 1e-4, 0.0)
#: calibration action agreement the tuned thresholds must keep.  0.999 (on a few hundred frames: every
#: action) rather than the backends' 99 %: agreement measured on 300 calibration frames generalises
#: poorly to a whole game (8M-frame STPN: rel 0.02 kept 99.3 % of the calibration actions but 98.6 % of
#: a 6,355-frame game; rel 0.01: 99.5 %, rel 0.005: 99.7 %), while smaller thresholds cost few events
#: (453 events/frame at rel 0 vs 399 at 0.02; synaptic ops 3.45 % vs 3.47 % of dense).
DEFAULT_TARGET = 0.999
#: relative threshold used when no reference actions are available to tune against
DEFAULT_REL = 0.001
DEFAULT_INPUT_THRESHOLD = 0.0  # pixel units


@dataclass
class Calibration:
    frames: int
    maxabs: dict = field(default_factory=dict)
    p999: dict = field(default_factory=dict)
    F: float = 0.0
    channel_max: dict = field(default_factory=dict)   # node -> [largest |value| of each channel] (C, H, W nodes)

    def to_dict(self) -> dict:
        return {"frames": self.frames, "maxabs": self.maxabs, "p999": self.p999, "F": self.F,
                "channel_max": self.channel_max}

    @classmethod
    def from_dict(cls, d: dict) -> "Calibration":
        return cls(int(d["frames"]), dict(d["maxabs"]), dict(d["p999"]), float(d["F"]),
                   {k: list(v) for k, v in (d.get("channel_max") or {}).items()})


def calibrate(net: g.Network, frames, starts=None, batch: int = 1) -> Calibration:
    """Run the float simulator on ``frames`` (T, [B,] 1, 84, 84) and collect value ranges."""
    frames = np.asarray(frames)
    if frames.shape[0] < 1:
        raise ParameterError("calibration needs at least one frame")
    sim = Simulator(net, batch=batch)
    record = [n for n, node in net.nodes.items() if not isinstance(node, (g.Input, g.Output, g.Flatten, g.Scale))]
    plastic = net.of_type(g.PlasticSTPN)
    fmax = 0.0
    vals = {n: [] for n in record}
    if starts is None:
        starts = np.zeros(frames.shape[0], bool)
        starts[0] = True
    starts = np.asarray(starts, bool)
    shape = (batch, *net.nodes[sim.order[0]].shape)
    for t in range(frames.shape[0]):
        if starts[t]:
            sim.reset()
        sim.step(frames[t].reshape(shape))
        for n in record:
            vals[n].append(np.abs(sim.values[n]).reshape(batch, *net.nodes[n].out_shape))
        for n in plastic:
            fmax = max(fmax, float(np.max(np.abs(sim.state[n]["F"]))))
    cal = Calibration(int(frames.shape[0]), F=fmax)
    for n in record:
        v = np.concatenate(vals[n])             # (T * batch, *out_shape)
        cal.maxabs[n] = float(v.max()) if v.size else 0.0
        cal.p999[n] = float(np.percentile(v, 99.9)) if v.size else 0.0
        if v.ndim == 4:                          # (frames, C, H, W)
            cal.channel_max[n] = [float(m) for m in v.max(axis=(0, 2, 3))]
    return cal


def set_thresholds(net: g.Network, cal: Calibration, rel: float,
                   input_threshold: float = DEFAULT_INPUT_THRESHOLD) -> dict:
    """Set every SigmaDelta threshold (in place) to rel x p99.9 (input: ``input_threshold``
    pixels); returns {node: threshold}."""
    chosen = {}
    for n in net.of_type(g.SigmaDelta):
        node = net.nodes[n]
        if isinstance(net.nodes[net.source(n)], g.Input):
            th = float(input_threshold)
        else:
            th = float(rel) * cal.p999.get(n, 0.0)
        if not (np.isfinite(th) and th >= 0):
            raise ParameterError(f"threshold of {n} must be a finite number >= 0, got {th}")
        node.threshold = np.full(node.out_shape, th)
        chosen[n] = th
    net.metadata["thresholds"] = {"rule": "rel * p99.9(|activation|) per layer; input absolute",
                                  "rel": float(rel), "input": float(input_threshold),
                                  "values": chosen}
    return chosen


#: rate-coded IF node -> the sigma-delta (dense) node whose calibrated activations it codes
RATE_SOURCES = {"if1": "sd1", "if2": "sd2"}
RATE_RULE = "per channel: largest activation of the dense network over the calibration frames"


def rate_thresholds(cal: Calibration, shapes: dict, names: dict = RATE_SOURCES) -> dict:
    """IF thresholds {IF node: v_threshold (C, H, W)} (``shapes``: IF node -> its (C, H, W)): per
    channel the calibrated largest activation of the matching node (``names``); a channel never
    active in calibration gets that layer's largest activation (1e-6 if the layer never fired).
    Calibrations without per-channel maxima (files of converter <= 1) fall back to the layer's p99.9."""
    out = {}
    for n, shape in shapes.items():
        ref, shape = names[n], tuple(shape)
        layer = max(cal.maxabs.get(ref, 0.0), 1e-6)
        if ref in cal.channel_max:
            ch = np.asarray(cal.channel_max[ref], np.float64)
            if ch.shape != shape[:1]:
                raise ParameterError(f"calibration of {ref} has {ch.size} channels, {n} has shape {shape}")
            th = np.where(ch > 0, ch, layer).reshape(-1, *([1] * (len(shape) - 1)))
            out[n] = np.broadcast_to(th, shape).copy()
        else:
            out[n] = np.full(shape, max(cal.p999.get(ref, 0.0), 1e-6))
    return out


def set_rate_thresholds(net: g.Network, cal: Calibration, names: dict = RATE_SOURCES) -> dict:
    """Set every RateIF v_threshold (in place) by :func:`rate_thresholds`; returns {node: per-channel list}."""
    chosen = {}
    for n, th in rate_thresholds(cal, {n: net.nodes[n].out_shape for n in names}, names).items():
        net.nodes[n].v_threshold = th
        chosen[n] = [float(x) for x in th.reshape(th.shape[0], -1)[:, 0]]
    net.metadata["rate_thresholds"] = {"rule": RATE_RULE, "values": chosen}
    return chosen


def tune_thresholds(net: g.Network, cal: Calibration, frames, starts, ref_actions, target: float = DEFAULT_TARGET,
                    input_threshold: float = DEFAULT_INPUT_THRESHOLD, ladder=REL_LADDER) -> tuple[float, float]:
    """Largest ``rel`` of ``ladder`` whose float network agrees with ``ref_actions`` (T,) on at
    least ``target`` of the frames; sets those thresholds and returns (rel, agreement)."""
    from conversion.simulator import run_sequence

    if not 0.0 < target <= 1.0:
        raise ParameterError(f"target agreement must lie in (0, 1], got {target}")
    ref = np.asarray(ref_actions).reshape(-1)

    def agreement(r):
        set_thresholds(net, cal, r, input_threshold)
        return float(np.mean(run_sequence(Simulator(net), frames, starts)["actions"].reshape(-1) == ref))

    for rel in ladder:
        agree = agreement(rel)
        if agree >= target:
            break
    else:  # none meets the target: the exact (threshold 0) network
        rel = 0.0
        agree = agreement(rel) if ladder[-1] != 0.0 else agree
    net.metadata["thresholds"].update(rule=f"largest rel in {list(ladder)} with calibration action agreement "
                                      f">= {target}", calibration_agreement=agree, target=target)
    return rel, agree


def set_default_thresholds(net: g.Network, cal: Calibration, frames=None, starts=None, ref_actions=None,
                           target: float = DEFAULT_TARGET, input_threshold: float = DEFAULT_INPUT_THRESHOLD) -> float:
    """The default thresholds of ``mstpn convert``: tuned with :func:`tune_thresholds` when the
    calibration ``frames`` and the policy's ``ref_actions`` on them are given (pass
    ``rec.frames, rec.starts, rec.actions`` of :func:`snn_agent.play.record`), else the untuned
    conservative ``DEFAULT_REL``.  Returns the relative threshold used."""
    if frames is not None and ref_actions is not None:
        return tune_thresholds(net, cal, frames, starts, ref_actions, target, input_threshold)[0]
    set_thresholds(net, cal, DEFAULT_REL, input_threshold)
    return DEFAULT_REL
