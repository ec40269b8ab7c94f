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
the PyTorch policy's action on at least ``target`` (default 99 %) of the calibration frames: a
policy with small logit margins gets small thresholds, a confident one sparse events.
Default rate-coded IF thresholds: v_threshold = the layer's 99.9th-percentile activation, so
``steps`` sub-steps resolve activations in steps of v_threshold / steps.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from conversion import graph as g
from conversion.simulator import Simulator
from mstpn.errors import ParameterError

#: candidate relative thresholds, largest (sparsest) first
REL_LADDER = (0.1, 0.05, 0.02, 0.01, 0.005, 0.002, 0.001, 5e-4, 2e-4, 1e-4, 0.0)
DEFAULT_TARGET = 0.99
#: relative threshold used when no reference actions are available to tune against
DEFAULT_REL = 0.001
DEFAULT_INPUT_THRESHOLD = 0.0  # pixel units


@dataclass
class Calibration:
    frames: int
    maxabs: dict = field(default_factory=dict)
    p999: dict = field(default_factory=dict)
    F: float = 0.0

    def to_dict(self) -> dict:
        return {"frames": self.frames, "maxabs": self.maxabs, "p999": self.p999, "F": self.F}

    @classmethod
    def from_dict(cls, d: dict) -> "Calibration":
        return cls(int(d["frames"]), dict(d["maxabs"]), dict(d["p999"]), float(d["F"]))


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
            vals[n].append(np.abs(sim.values[n]).ravel())
        for n in plastic:
            fmax = max(fmax, float(np.max(np.abs(sim.state[n]["F"]))))
    cal = Calibration(int(frames.shape[0]), F=fmax)
    for n in record:
        v = np.concatenate(vals[n])
        cal.maxabs[n] = float(v.max()) if v.size else 0.0
        cal.p999[n] = float(np.percentile(v, 99.9)) if v.size else 0.0
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


def set_rate_thresholds(net: g.Network, cal: Calibration, names: dict) -> dict:
    """RateIF v_threshold from the calibration of the matching sigma-delta node (``names``:
    RateIF node -> calibrated node), = its 99.9th-percentile activation (at least 1e-6)."""
    chosen = {}
    for n, ref in names.items():
        node = net.nodes[n]
        th = max(cal.p999.get(ref, 0.0), 1e-6)
        node.v_threshold = np.full(node.out_shape, th)
        chosen[n] = th
    net.metadata["rate_thresholds"] = {"rule": "p99.9(|activation|) of the dense network", "values": chosen}
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
    ``rec.frames, rec.starts, rec.actions`` of :func:`conversion.pong.record`), else the untuned
    conservative ``DEFAULT_REL``.  Returns the relative threshold used."""
    if frames is not None and ref_actions is not None:
        return tune_thresholds(net, cal, frames, starts, ref_actions, target, input_threshold)[0]
    set_thresholds(net, cal, DEFAULT_REL, input_threshold)
    return DEFAULT_REL
