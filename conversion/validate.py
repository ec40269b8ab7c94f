"""Validation of a network read from a file (:func:`conversion.nirfile.read_network` calls it).

The file's checksums catch accidental corruption; this checks that the *content* is one that the
converter can produce and the simulators can run: node parameters finite and of a sane size,
strides >= 1, metadata a JSON object whose ``n_actions`` matches the logits output and the
action set, and a fixed-point block (``net.fixed``) with every entry each node kind needs, of
the right shape, inside its bit budget and with consistent exponents (the rules of
:mod:`conversion.quantise`).  Every problem raises :class:`DataFormatError` naming it.
"""
from __future__ import annotations

import math

import numpy as np

from conversion import device_layer as dl
from conversion import fixed_point as fx
from conversion import graph as g
from mstpn_base.errors import DataFormatError

#: largest magnitude of a float parameter (weights, biases, thresholds, plasticity parameters)
VALUE_MAX = 1e6
#: largest size of one dimension of a node's shape
DIM_MAX = 1 << 16
#: fixed-point exponents (value = integer * 2**exponent) lie in this range
EXP_MIN, EXP_MAX = -64, 32
#: number of actions of each action set (mirrors snn_agent.config.ACTION_SETS; a test checks it)
ACTION_SET_SIZES = {"minimal": 6, "updown": 3}
INT8_MIN, INT8_MAX = -128, 127

#: fixed-point entries per node kind: (name, kind) with kind "exp" (an exponent), "int" (a plain
#: integer) or "array"
_FIXED_KEYS = {
    "Conv2d": ("weight_mant", "weight_exp", "in_exp", "u_exp", "bias"),
    "Affine": ("weight_mant", "weight_exp", "in_exp", "u_exp", "bias"),
    "SigmaDelta": ("in_exp", "out_exp", "threshold"),
    "PlasticSTPN": ("w_mant", "w_exp", "f_exp", "gamma_mant", "gamma_exp", "lam_q12", "bias", "x_exp",
                    "h_exp", "z_exp", "a_exp", "hebb_shift", "f_max"),
    "Scale": ("folded",),
}
_ARRAYS = ("weight_mant", "bias", "threshold", "w_mant", "gamma_mant", "lam_q12", "lut")


def validate_network(nodes: dict, edges: list, metadata, fixed) -> g.Network:
    """Check a network's parts as read from a file and return the :class:`Network`.

    ``fixed`` is the raw fixed-point block (node -> {name: integer or integer array}) or None.
    """
    for name, node in nodes.items():
        _check_node(name, node)
    net = g.Network(nodes, edges, {}, None)  # structure: edges, shapes, one feed-forward input each
    net.metadata = _check_metadata(net, metadata)
    if fixed is not None:
        net.fixed = _check_fixed(net, fixed)
    return net


# -- nodes ----------------------------------------------------------------------------------------
def _finite_bounded(name: str, what: str, a) -> None:
    a = np.asarray(a, np.float64)
    if a.size and not np.all(np.isfinite(a)):
        raise DataFormatError(f"node {name!r}: {what} contains NaN/inf")
    if a.size and float(np.max(np.abs(a))) > VALUE_MAX:
        raise DataFormatError(f"node {name!r}: {what} has a value of {float(np.max(np.abs(a))):.3g}, "
                              f"beyond {VALUE_MAX:g} (corrupted file?)")


def _check_shape(name: str, shape) -> None:
    if not shape or any(not 1 <= int(s) <= DIM_MAX for s in shape):
        raise DataFormatError(f"node {name!r}: shape {tuple(shape)} must have dimensions in [1, {DIM_MAX}]")


def _check_node(name: str, node) -> None:
    if isinstance(node, (g.Input, g.Output)):
        _check_shape(name, node.shape)
    elif isinstance(node, g.Flatten):
        _check_shape(name, node.input_shape)
    elif isinstance(node, g.Scale):
        _finite_bounded(name, "scale", node.scale)
    elif isinstance(node, g.Conv2d):
        _finite_bounded(name, "weight", node.weight)
        _finite_bounded(name, "bias", node.bias)
        _check_shape(name, node.input_shape)
        if min(node.stride) < 1 or min(node.padding) < 0 or max(node.stride + node.padding) > DIM_MAX:
            raise DataFormatError(f"node {name!r}: stride {node.stride} must be >= 1 and padding "
                                  f"{node.padding} >= 0")
        if min(node.weight.shape) < 1 or min(node.out_shape[1:]) < 1:
            raise DataFormatError(f"node {name!r}: kernel {node.weight.shape[2:]} does not fit the input "
                                  f"{node.input_shape}")
    elif isinstance(node, g.Affine):
        _finite_bounded(name, "weight", node.weight)
        _finite_bounded(name, "bias", node.bias)
        if node.weight.size == 0:
            raise DataFormatError(f"node {name!r}: empty weight matrix")
    elif isinstance(node, g.SigmaDelta):
        _finite_bounded(name, "threshold", node.threshold)
    elif isinstance(node, g.RateIF):
        _finite_bounded(name, "v_threshold", node.v_threshold)
        if not 1 <= node.steps <= 1 << 20:
            raise DataFormatError(f"node {name!r}: steps {node.steps} must lie in [1, {1 << 20}]")
    elif isinstance(node, g.PlasticSTPN):
        for what in ("W", "b", "lam", "gamma"):
            _finite_bounded(name, what, getattr(node, what))
        if not (math.isfinite(node.norm_eps) and 0 < node.norm_eps <= 1):
            raise DataFormatError(f"node {name!r}: norm_eps must lie in (0, 1], got {node.norm_eps!r}")
        if not (node.device is None or isinstance(node.device, dict)):
            raise DataFormatError(f"node {name!r}: device must be a JSON object or null")
        if node.device is not None:
            try:
                dl.Mapping.from_block(node.device)      # the device block the simulator would run
            except DataFormatError as exc:
                raise DataFormatError(f"node {name!r}: {exc}") from None


# -- metadata ---------------------------------------------------------------------------------------
def _logits_node(net: g.Network) -> str:
    outs = net.of_type(g.Output)
    if not outs:
        raise DataFormatError("network has no Output node")
    return "logits" if "logits" in outs else outs[0]


def _check_metadata(net: g.Network, meta) -> dict:
    if not isinstance(meta, dict):
        raise DataFormatError(f"metadata must be a JSON object, got {type(meta).__name__}")
    mode = meta.get("mode", "sigma_delta")
    if mode not in g.MODES:
        raise DataFormatError(f"metadata mode {mode!r} is not one of {g.MODES}")
    n_out = int(np.prod(net.nodes[_logits_node(net)].shape))
    n_actions = meta.get("n_actions", n_out)
    if isinstance(n_actions, bool) or not isinstance(n_actions, int) or n_actions != n_out:
        raise DataFormatError(f"metadata n_actions is {n_actions!r} but the logits output has {n_out} units")
    env = meta.get("env")
    if env is not None:
        if not isinstance(env, dict):
            raise DataFormatError("metadata env must be a JSON object")
        action_set = env.get("action_set", "minimal")
        if action_set not in ACTION_SET_SIZES:
            raise DataFormatError(f"metadata env.action_set {action_set!r} is not one of {sorted(ACTION_SET_SIZES)}")
        if ACTION_SET_SIZES[action_set] != n_out:
            raise DataFormatError(f"the logits output has {n_out} units but the action set {action_set!r} "
                                  f"has {ACTION_SET_SIZES[action_set]} actions")
    return meta


# -- fixed point -------------------------------------------------------------------------------------
def _as_int(node: str, key: str, v, array: bool):
    a = np.asarray(v)
    if a.dtype.kind not in "iu" and not (a.dtype.kind == "b"):
        raise DataFormatError(f"fixed-point {node}.{key} must be an integer, got dtype {a.dtype}")
    if array:
        if a.ndim == 0:
            raise DataFormatError(f"fixed-point {node}.{key} must be an array")
        return a.astype(np.int64)
    if a.ndim != 0:
        raise DataFormatError(f"fixed-point {node}.{key} must be a single integer, got shape {a.shape}")
    return int(a)


def _in_range(node: str, key: str, a, lo: int, hi: int) -> None:
    a = np.asarray(a)
    if a.size and (int(a.min()) < lo or int(a.max()) > hi):
        raise DataFormatError(f"fixed-point {node}.{key} has values outside [{lo}, {hi}] "
                              f"({int(a.min())}..{int(a.max())})")


def _shape(node: str, key: str, a, shape) -> None:
    if tuple(a.shape) != tuple(shape):
        raise DataFormatError(f"fixed-point {node}.{key} has shape {tuple(a.shape)}, expected {tuple(shape)}")


def _equal(node: str, key: str, got: int, want: int, rule: str) -> None:
    if got != want:
        raise DataFormatError(f"fixed-point {node}.{key} is {got}, expected {want} ({rule})")


def _check_fixed(net: g.Network, fixed) -> dict:
    if not isinstance(fixed, dict):
        raise DataFormatError("fixed-point block must be a group of per-node entries")
    if net.mode != "sigma_delta":
        raise DataFormatError("only a sigma-delta network may carry fixed-point parameters")
    out: dict = {}
    spec = fixed.get("_spec")
    if not isinstance(spec, dict) or _as_int("_spec", "version", spec.get("version", -1), False) not in (1, 2):
        raise DataFormatError("fixed-point block lacks its _spec entry (version 1 or 2)")
    out["_spec"] = {k: _as_int("_spec", k, v, False) for k, v in spec.items()}
    if "sd_rule" in out["_spec"]:
        _in_range("_spec", "sd_rule", out["_spec"]["sd_rule"], 0, max(fx.SD_SPEC_CODE.values()))
    unknown = sorted(set(fixed) - set(net.nodes) - {"_spec"})
    if unknown:
        raise DataFormatError(f"fixed-point entry {unknown[0]!r} names no node of the network")
    exp_out: dict = {}  # node -> exponent of its output value
    for name in net.order:
        node, kind = net.nodes[name], type(net.nodes[name]).__name__
        src = None if isinstance(node, g.Input) else net.source(name)
        keys = _FIXED_KEYS.get(kind, ())
        if isinstance(node, g.SigmaDelta) and node.activation == "tanh":
            keys = keys + ("lut", "lut_shift")
        if isinstance(node, g.SigmaDelta) and isinstance(fixed.get(name), dict) and "rule" in fixed[name]:
            keys = keys + (("rule", "state_exp", "step_exp", "vth") if int(fixed[name]["rule"]) else ("rule",))
        if not keys:
            if name in fixed:
                raise DataFormatError(f"fixed-point entry for {kind} node {name!r}, which has none")
            exp_out[name] = 0 if src is None else exp_out[src]
            continue
        entry = fixed.get(name)
        if not isinstance(entry, dict):
            raise DataFormatError(f"fixed-point parameters of node {name!r} are missing")
        missing = [k for k in keys if k not in entry]
        if missing:
            raise DataFormatError(f"fixed-point {name} lacks {', '.join(missing)}")
        extra = sorted(set(entry) - set(keys))
        if extra:
            raise DataFormatError(f"fixed-point {name} has unknown entries {', '.join(extra)}")
        e = {k: _as_int(name, k, entry[k], k in _ARRAYS) for k in keys}
        for k, v in e.items():
            if k.endswith("_exp"):
                _in_range(name, k, v, EXP_MIN, EXP_MAX)
        if isinstance(node, g.Scale):
            _equal(name, "folded", e["folded"], 1, "a Scale is folded into the next synapse")
            exp_out[name] = exp_out[src]
        elif isinstance(node, (g.Conv2d, g.Affine)):
            _shape(name, "weight_mant", e["weight_mant"], node.weight.shape)
            _in_range(name, "weight_mant", e["weight_mant"], INT8_MIN, INT8_MAX)
            _shape(name, "bias", e["bias"], node.bias.shape)
            _in_range(name, "bias", e["bias"], -fx.STATE_MAX, fx.STATE_MAX)
            _equal(name, "in_exp", e["in_exp"], exp_out[src], f"the output exponent of {src!r}")
            _equal(name, "u_exp", e["u_exp"], e["weight_exp"] + e["in_exp"], "weight_exp + in_exp")
            exp_out[name] = e["u_exp"]
        elif isinstance(node, g.SigmaDelta):
            _shape(name, "threshold", e["threshold"], node.threshold.shape)
            _in_range(name, "threshold", e["threshold"], 0, fx.STATE_MAX)
            _equal(name, "in_exp", e["in_exp"], exp_out[src], f"the output exponent of {src!r}")
            if "rule" in e:
                _in_range(name, "rule", e["rule"], 0, max(fx.SD_RULE_CODE.values()))
            if e.get("rule", 0):
                _equal(name, "state_exp", e["state_exp"], e["out_exp"] - e["in_exp"], "out_exp - in_exp")
                _in_range(name, "vth", e["vth"], 1, fx.STATE_MAX)
            if "lut" in e:
                table, shift = fx.tanh_table(e["in_exp"], e["out_exp"])
                _equal(name, "lut_shift", e["lut_shift"], shift, "the tanh table rule")
                if e["lut"].shape != table.shape or not np.array_equal(e["lut"], table):
                    raise DataFormatError(f"fixed-point {name}.lut is not the tanh table of its exponents")
            exp_out[name] = e["out_exp"]
        elif isinstance(node, g.PlasticSTPN):
            _check_plastic(net, name, node, e, exp_out)
            exp_out[name] = e["z_exp"]
        out[name] = e
    for name in net.of_type(g.PlasticSTPN):  # its post node comes later in the order
        post = net.nodes[name].post
        _equal(name, "h_exp", out[name]["h_exp"], out[post]["out_exp"], f"the output exponent of {post!r}")
    return out


def _check_plastic(net: g.Network, name: str, node, e: dict, exp_out: dict) -> None:
    for k, ref in (("w_mant", node.W), ("gamma_mant", node.gamma), ("lam_q12", node.lam)):
        _shape(name, k, e[k], ref.shape)
    _in_range(name, "w_mant", e["w_mant"], INT8_MIN, INT8_MAX)
    _in_range(name, "gamma_mant", e["gamma_mant"], INT8_MIN, INT8_MAX)
    _in_range(name, "lam_q12", e["lam_q12"], -fx.LAM_MAX, fx.LAM_MAX)
    _shape(name, "bias", e["bias"], node.b.shape)
    _in_range(name, "bias", e["bias"], -fx.STATE_MAX, fx.STATE_MAX)
    _equal(name, "x_exp", e["x_exp"], exp_out[net.source(name)], "the output exponent of its input")
    _equal(name, "z_exp", e["z_exp"], min(e["x_exp"], e["h_exp"]), "min(x_exp, h_exp)")
    _equal(name, "a_exp", e["a_exp"], e["z_exp"], "z_exp")
    _equal(name, "hebb_shift", e["hebb_shift"], e["f_exp"] - (e["gamma_exp"] + e["h_exp"] + e["z_exp"]),
           "f_exp - (gamma_exp + h_exp + z_exp)")
    if e["hebb_shift"] < 0:
        raise DataFormatError(f"fixed-point {name}.hebb_shift must be >= 0, got {e['hebb_shift']}")
    if e["f_exp"] > e["w_exp"]:
        raise DataFormatError(f"fixed-point {name}.f_exp ({e['f_exp']}) must not exceed w_exp ({e['w_exp']})")
    if not (e["f_max"] == -1 or 0 < e["f_max"] <= fx.STATE_MAX):
        raise DataFormatError(f"fixed-point {name}.f_max must be -1 (unbounded) or in [1, {fx.STATE_MAX}], "
                              f"got {e['f_max']}")
