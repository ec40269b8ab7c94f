"""Turn a PyTorch STPN / m-STPN Pong policy into an event-driven :class:`~conversion.graph.Network`.

Sigma-delta form (primary; one algorithmic step per agent frame)::

    input (1,84,84) -> sd_in (identity) -> scale (1/255) -> conv1 -> sd1 (relu) -> conv2 -> sd2 (relu)
    -> flatten (2592) -> stpn (plastic) <-> h (tanh) -> pi -> logits ;  h -> v -> value

Rate-coded form (alternative; ``steps`` IF sub-steps per frame for the conv layers)::

    input -> scale -> conv1 -> if1 (RateIF) -> conv2 -> if2 (RateIF) -> flatten -> stpn <-> h -> heads

Parameters are copied as float64, exactly the tensors the policy uses (``core.effective_params()``:
for an m-STPN, the constrained W, lambda, gamma and the bound f_max).  Thresholds start at 0 (the
converted network then equals the dense one); :mod:`conversion.calibrate` sets the defaults.
"""
from __future__ import annotations

import copy
import math

import numpy as np

from conversion import device_layer as dl
from conversion import graph as g
from mstpn_base.errors import ParameterError

CONVERTER_VERSION = 1


def _np(t) -> np.ndarray:
    return t.detach().double().cpu().numpy().copy()


def policy_arrays(policy) -> dict:
    """The policy's parameters as float64 arrays (conv1/conv2/stpn/pi/v) plus the core's bounds."""
    core = getattr(policy, "core", None)
    if core is None or not hasattr(core, "effective_params"):
        kind = type(core).__name__ if core is not None else type(policy).__name__
        raise ParameterError(f"only STPN / m-STPN policies can be converted (core is {kind})")
    convs = [m for m in policy.torso if m.__class__.__name__ == "Conv2d"]
    if len(convs) != 2:
        raise ParameterError(f"expected 2 conv layers in the torso, found {len(convs)}")
    core = copy.deepcopy(core).double()   # effective parameters computed in float64 (m-STPN: tanh, sigmoid)
    p = core.effective_params()
    out = {"stpn": {k: _np(p[k]) for k in ("W", "b", "lam", "gamma")},
           "f_max": math.inf if p.get("f_max") is None else float(p["f_max"])}
    for name, conv in zip(("conv1", "conv2"), convs):
        if conv.groups != 1 or tuple(conv.dilation) != (1, 1) or not isinstance(conv.padding, tuple):
            raise ParameterError(f"{name}: only groups=1, dilation=1, numeric padding are supported")
        out[name] = {"weight": _np(conv.weight), "bias": _np(conv.bias), "stride": tuple(conv.stride),
                     "padding": tuple(conv.padding)}
    for name in ("pi", "v"):
        lin = getattr(policy, name)
        out[name] = {"weight": _np(lin.weight), "bias": _np(lin.bias)}
    mapping = getattr(core, "mapping", None)
    out["device"] = None
    if mapping is not None:
        # the versioned device block: parameters, the weight-to-device-pair mapping, the seed
        out["device"] = dl.Mapping(mapping.params, dt=mapping.dt, w_max=mapping.w_max).to_block()
    return out


def build_network(arrays: dict, frame_shape=(1, 84, 84), mode: str = "sigma_delta",
                  rate_steps: int = g.DEFAULT_RATE_STEPS, metadata: dict | None = None) -> g.Network:
    """Network from :func:`policy_arrays` output (thresholds 0; RateIF thresholds 1 until calibrated)."""
    if mode not in g.MODES:
        raise ParameterError(f"mode must be one of {g.MODES}, got {mode!r}")
    c1, c2, st = arrays["conv1"], arrays["conv2"], arrays["stpn"]
    frame_shape = tuple(int(s) for s in frame_shape)
    conv1 = g.Conv2d(c1["weight"], c1["bias"], frame_shape[1:], c1["stride"], c1["padding"])
    conv2 = g.Conv2d(c2["weight"], c2["bias"], conv1.out_shape[1:], c2["stride"], c2["padding"])
    H = st["W"].shape[0]
    nodes = {"input": g.Input(frame_shape)}
    if mode == "sigma_delta":
        nodes["sd_in"] = g.SigmaDelta("identity", np.zeros(frame_shape))
    nodes["scale"] = g.Scale(np.full(frame_shape, 1.0 / 255.0))
    nodes["conv1"] = conv1
    n1, n2 = ("sd1", "sd2") if mode == "sigma_delta" else ("if1", "if2")
    if mode == "sigma_delta":
        nodes[n1] = g.SigmaDelta("relu", np.zeros(conv1.out_shape))
    else:
        nodes[n1] = g.RateIF(np.ones(conv1.out_shape), rate_steps)
    nodes["conv2"] = conv2
    if mode == "sigma_delta":
        nodes[n2] = g.SigmaDelta("relu", np.zeros(conv2.out_shape))
    else:
        nodes[n2] = g.RateIF(np.ones(conv2.out_shape), rate_steps)
    nodes["flatten"] = g.Flatten(conv2.out_shape)
    nodes["stpn"] = g.PlasticSTPN(st["W"], st["b"], st["lam"], st["gamma"], post="h", f_max=arrays["f_max"],
                                  device=arrays.get("device"))
    nodes["h"] = g.SigmaDelta("tanh", np.zeros(H))
    nodes["pi"] = g.Affine(arrays["pi"]["weight"], arrays["pi"]["bias"])
    nodes["v"] = g.Affine(arrays["v"]["weight"], arrays["v"]["bias"])
    nodes["logits"] = g.Output((arrays["pi"]["weight"].shape[0],))
    nodes["value"] = g.Output((1,))
    names = list(nodes)
    chain = names[: names.index("stpn") + 2]  # ... -> stpn -> h
    edges = list(zip(chain[:-1], chain[1:]))
    edges += [("h", "stpn"), ("h", "pi"), ("pi", "logits"), ("h", "v"), ("v", "value")]
    meta = {"mode": mode, "converter_version": CONVERTER_VERSION, "n_actions": int(arrays["pi"]["weight"].shape[0]),
            "action_rule": "argmax(logits), first index on ties", "thresholds": "zero (not calibrated)"}
    meta.update(metadata or {})
    return g.Network(nodes, edges, meta)


def convert_policy(policy, mode: str = "sigma_delta", rate_steps: int = g.DEFAULT_RATE_STEPS,
                   metadata: dict | None = None) -> g.Network:
    """Convert a :class:`snn_agent.policy.Policy` (STPN or m-STPN core)."""
    arrays = policy_arrays(policy)
    meta = {"core": type(policy.core).__name__}
    cfg = getattr(policy, "cfg", None)
    if cfg is not None:
        meta["core_kind"] = getattr(cfg, "kind", None)
    meta.update(metadata or {})
    return build_network(arrays, mode=mode, rate_steps=rate_steps, metadata=meta)
