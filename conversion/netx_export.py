"""Export the static layers of a converted, quantised network as lava-dl netx networks (HDF5).

netx (``lava.lib.dl.netx.hdf5.Network``) builds Lava processes from an HDF5 description: a
``layer`` group with one numbered group per layer, each with a ``type`` ("input", "conv",
"dense"), a ``shape`` (C, H, W order; netx reverses it to Lava's x-y-channel order), the integer
weights (conv: PyTorch layout (out, in, kh, kw); dense: (out, in)), an integer ``bias`` and a
``neuron`` group (``type`` "SDNN", ``vThMant``; ``sigma_output`` for a plain accumulator).  It is
plain HDF5, written here with h5py; nothing of Lava is imported.

The plastic STPN layer (row-normalised plastic synapses, tanh) has no netx block, so the network
is cut there (:data:`CUT`)::

    graph 1 (``OUT``):        input (pixels) -> conv1 + sd1 -> conv2 + sd2  -> events to the host
    host / custom microcode:  flatten -> stpn (plastic) <-> h (tanh)
    graph 2 (``OUT_heads``):  input (h, sigma-delta encoded) -> dense [pi ; v] (accumulator) -> host

and a JSON file beside them (``OUT`` with suffix ``.json``) names the cut, the load arguments and
the scale of every layer's integers.

What netx's SDNN layers compute (lava-nc 0.10.0 fixed_pt models, loaded by netx with
``state_exp = 6`` and the network's ``spike_exp`` = se)::

    input (Delta):      a = x << (se + 6);  d = a - a_prev + r;  s = d if |d| >= vTh << (se + 6) else 0
                        r = d - s;  message = s >> 6                                 (= x-change << se)
    conv/dense (SigmaDelta):  sigma += W message_in;  act = relu(sigma + bias << (se + 6))
                        d = act - act_prev + r;  s = d if |d| >= vTh << (se + 6) else 0;  r = d - s
                        message = s >> 6
    sigma_output (Sigma):     sigma += W message_in;  message = sigma

Mapping of this project's fixed point (:mod:`conversion.quantise`) onto it: the weights are the
project's 8-bit mantissas, unchanged.  A layer's accumulator then holds ``2**c`` times the
project's u (without bias), where c is fixed by the scale of the messages it receives
(c = se for conv1); its message is ``2**d`` times the project's activation integer Y, with
d = c - 6 + s (s = out_exp - u_exp, the project's re-quantisation shift), and the next layer has
c = d.  The bias becomes ``round(B 2**(c - se - 6))`` (resolution ``2**(se + 6 - c)`` u-LSBs) and
the threshold ``vThMant = round((T + 1/2) 2**-q)``, q = se + 6 - c - s (resolution ``2**q`` Y
units).  ``spike_exp`` is chosen as the largest value in 0..6 for which every accumulator (24
bits), message (16 bits, netx's default for SDNN) and bias (16 bits) fits within ``headroom``
(default 1) times the calibrated maxima.  Graph 2 has se = 0 (messages = the h events, exactly);
its accumulator has no bias (netx's Sigma has none): the host adds the head biases (JSON).

A network quantised with the sigma-delta rule "lava-netx" (:mod:`conversion.quantise`; the
version-2 files whose ``_spec["sd_rule"]`` is 1) is exported exactly: its ``_spec`` names the spike_exp, its first conv layer has
s = 6 - spike_exp and the later ones s = 6, so c = spike_exp, then 0, and d = 0 (messages = the
project's payloads); its biases and vth (u units) are multiples of 2**(se + 6 - c), so
``bias = B >> (se + 6 - c)`` and ``vThMant = vth >> (se + 6 - c)`` are exact, and netx's pre-input
firing is the project's pre-phase reset state (:mod:`conversion.sd_reset`).  The graph then
reproduces the reference integers of conv1, conv2 and the heads bit for bit (tests/test_netx_export.py).

A network of the rule "lava" (the default: the smallest state_exp per layer, 3 and 0 for the
shipped STPN's conv layers under `mstpn convert` defaults, not netx's fixed 6) or "round" cannot be made exact without
requantising it, which needs its calibration data: it is exported approximately (as "round",
spike_exp chosen by the budgets), and the exporter says so (:data:`NOT_EXACT`, :data:`EXACT_HOW`).
Known differences of such a network (measured for "round") from the project's integer specification (measured by tests/test_netx_export.py
and stated in docs/deploy.md): a SigmaDelta layer fires relu(bias) once before any input
arrives; it thresholds the unrounded accumulator difference (with >=), not the rounded activation;
it sends the floored delta ``s >> 6`` yet resets the residue as if all of ``s`` had been sent, so
the receiver's sum drifts below the activation by up to one message unit per event; one scalar
threshold per layer; bias and threshold resolutions as above.  Only the input layer and graph 2
reproduce the project's integers exactly.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from conversion import fixed_point as fx
from conversion import graph as g
from mstpn_base.errors import DataFormatError, ParameterError
from mstpn_base.io import atomic_path, atomic_write_json

FORMAT = "mstpn-netx"
FORMAT_VERSION = 1
#: netx loads every SDNN neuron with this state exponent (lava.lib.dl.netx.hdf5)
STATE_EXP = 6
#: netx's default spike_exp, and the largest the exporter chooses
SPIKE_EXP_MAX = 6
#: netx gives SDNN layers 16-bit messages unless told otherwise; lava's SigmaDelta has a 16-bit bias
MESSAGE_MAX = (1 << 15) - 1
BIAS_MAX = (1 << 15) - 1
STATE_MAX = fx.STATE_MAX
#: headroom of the netx budgets over the calibrated maxima (the project's own budgets have 4 on top;
#: with 4 here the shipped STPN gets spike_exp 1 and loses precision, see docs/deploy.md)
DEFAULT_HEADROOM = 1.0
#: where the network is cut: the last node on netx graph 1, the nodes left to the host
CUT = {"after": "the second conv layer's sigma-delta neurons (sd2)",
       "host": "flatten -> PlasticSTPN (row-normalised plastic synapses) <-> h (tanh)",
       "reason": "netx has no block for a plastic, row-normalised layer; it runs on the host or needs "
                 "custom Loihi 2 microcode"}
DIFFERENCES = (
    "a SigmaDelta layer fires relu(bias) once before any input arrives",
    "it thresholds the unrounded accumulator difference (|d| >= vTh), not the rounded activation change",
    "it sends the floored delta (d >> 6) but resets its residue as if all of d had been sent",
    "one scalar threshold per layer; threshold resolution 2**q activation units (JSON: threshold_step)",
    "16-bit bias with resolution 2**(se + 6 - c) accumulator LSBs (JSON: bias_step)",
    "the Dense heads have no bias (netx's Sigma output): the host adds it",
)
#: what still differs for a network of the "lava-netx" sigma-delta rule
DIFFERENCES_LAVA = DIFFERENCES[-1:]
#: what the exporter says for a network whose conv layers netx cannot reproduce, and the remedy
NOT_EXACT = "the conv layers will not reproduce the reference integers exactly"
EXACT_HOW = ("for an exact netx file convert with `mstpn convert --sd-rule lava-netx` "
             "(netx's state_exp 6 after the first layer)")


@dataclass
class ConvLayer:
    """One conv + sigma-delta layer of graph 1, in the project's and in netx's integers."""

    node: str            # the Conv2d node
    neuron: str          # its SigmaDelta node
    weight: np.ndarray   # (out, in, kh, kw) 8-bit mantissas
    bias: np.ndarray     # netx bias (16 bit)
    stride: tuple
    padding: tuple
    out_shape: tuple     # (C, H, W)
    v_th: int            # netx vThMant
    c: int               # accumulator = 2**c * (u - B), u in the project's u-LSB
    d: int               # message = 2**d * Y
    s: int               # project's re-quantisation shift out_exp - u_exp
    u_exp: int
    out_exp: int
    threshold: int       # the project's threshold T (Y units)
    threshold_step: int  # vThMant resolution q (log2, in Y units)
    extra: dict = field(default_factory=dict)


@dataclass
class Plan:
    spike_exp: int
    headroom: float
    input_node: str
    input_shape: tuple   # (C, H, W)
    input_v_th: int
    input_threshold: int
    convs: list
    post: str            # the plastic layer's post node (h)
    h_v_th: int
    heads: list          # [(node, output node, rows)]
    head_weight: np.ndarray
    head_exp: int        # u LSB exponent of the combined heads accumulator
    head_bias: np.ndarray  # in that LSB, added by the host
    head_shifts: dict
    notes: list = field(default_factory=list)
    exact: bool = False  # the graph reproduces the reference integers ("lava" rule, exact steps)


def _scalar_threshold(name: str, thr: np.ndarray, notes: list) -> int:
    thr = np.asarray(thr, np.int64)
    lo, hi = int(thr.min()), int(thr.max())
    if lo != hi:
        notes.append(f"{name}: per-unit thresholds {lo}..{hi}; netx takes one per layer, the smallest is used")
    return lo


def _maxabs(net: g.Network, name: str, exp: int, hr: float) -> float:
    """hr x the calibrated max |value| of ``name`` in integers of LSB 2**exp (the 24-bit budget
    over hr when the network has no calibration ranges)."""
    cal = (net.metadata.get("calibration") or {}).get("maxabs") or {}
    if name in cal:
        return hr * float(cal[name]) / 2.0**exp
    return float(STATE_MAX)


def _chain(net: g.Network):
    """(input, sd_in, [(conv, neuron)...], flatten/plastic, post, heads) of a converted STPN network."""
    if net.mode != "sigma_delta":
        raise ParameterError(f"only the sigma-delta form can be exported to netx (network mode is {net.mode!r})")
    if not net.fixed:
        raise ParameterError("network has no fixed-point parameters; convert it with calibration "
                             "(`mstpn convert` without --no-fixed-point)")
    nodes, order = net.nodes, net.order
    inp = order[0]
    if not isinstance(nodes[inp], g.Input):
        raise DataFormatError(f"first node {inp!r} is not an Input")
    recv = {n: [b for a, b in net.edges if a == n and order.index(b) > order.index(n)] for n in order}

    def only(n):
        if len(recv[n]) != 1:
            raise DataFormatError(f"node {n!r} must feed exactly one node for the netx export, feeds {recv[n]}")
        return recv[n][0]

    sd_in = only(inp)
    if not (isinstance(nodes[sd_in], g.SigmaDelta) and nodes[sd_in].activation == "identity"):
        raise DataFormatError(f"the input must feed an identity SigmaDelta node, found {sd_in!r}")
    n = only(sd_in)
    convs = []
    while True:
        if isinstance(nodes[n], g.Scale):
            n = only(n)
            continue
        if not isinstance(nodes[n], g.Conv2d):
            break
        sd = only(n)
        if not (isinstance(nodes[sd], g.SigmaDelta) and nodes[sd].activation == "relu"):
            raise DataFormatError(f"conv node {n!r} must feed a relu SigmaDelta node, feeds {sd!r}")
        convs.append((n, sd))
        n = only(sd)
    if not convs:
        raise DataFormatError("no conv layer after the input")
    plastic = net.plastic()
    post = nodes[plastic].post
    heads = [b for a, b in net.edges if a == post and isinstance(nodes[b], g.Affine)]
    if not heads:
        raise DataFormatError(f"no Affine head reads the plastic layer's output {post!r}")
    outs = []
    for hnode in heads:
        o = [b for a, b in net.edges if a == hnode]
        if len(o) != 1 or not isinstance(nodes[o[0]], g.Output):
            raise DataFormatError(f"head {hnode!r} must feed one Output node")
        outs.append(o[0])
    return inp, sd_in, convs, post, list(zip(heads, outs))


def plan(net: g.Network, spike_exp: int | None = None, headroom: float | None = None) -> Plan:
    """The netx form of ``net``'s static layers (see the module docstring)."""
    inp, sd_in, convs, post, heads = _chain(net)
    fixed, nodes = net.fixed, net.nodes
    for name in [sd_in, post] + [n for pair in convs for n in pair] + [h for h, _ in heads]:
        if name not in fixed:
            raise ParameterError(f"network has no fixed-point parameters for node {name!r}")
    hr = DEFAULT_HEADROOM if headroom is None else float(headroom)
    if not (math.isfinite(hr) and hr >= 1):
        raise ParameterError(f"headroom must be >= 1, got {hr}")
    if int(fixed[sd_in]["out_exp"]) != 0:
        raise ParameterError("the input layer must send raw pixel integers (exponent 0)")
    notes: list = []
    rule = fx.spec_sd_rule(fixed.get("_spec", {}))
    arith = fx.sd_rule(fixed[sd_in]) == "lava" and all(fx.sd_rule(fixed[sd]) == "lava" for _, sd in convs)
    lava = arith and rule == "lava-netx"    # netx's exponents: the exact export
    t_in = _scalar_threshold(sd_in, fixed[sd_in]["threshold"], notes)
    thresholds = {sd: _scalar_threshold(sd, fixed[sd]["threshold"], notes) for _, sd in convs}
    if fx.sd_rule(fixed[sd_in]) == "lava":
        t_in = int(fixed[sd_in]["vth"]) - 1
    if not lava:
        notes.append(f"{NOT_EXACT} (sigma-delta rule {rule!r}); {EXACT_HOW}")

    def layers_for(se: int) -> tuple[list, list]:
        out, problems, c = [], [], se
        for conv, sd in convs:
            fc, fs = fixed[conv], fixed[sd]
            u_exp, out_exp = int(fc["u_exp"]), int(fs["out_exp"])
            s = out_exp - u_exp
            d = c - STATE_EXP + s
            q = se + STATE_EXP - c - s
            bias = np.rint(fc["bias"].astype(np.float64) * 2.0 ** (c - se - STATE_EXP)).astype(np.int64)
            t = thresholds[sd]
            v_th = max(int(math.floor((t + 0.5) / 2.0**q + 0.5)), 0)
            if lava:                 # exact: bias and vth are multiples of the step 2**(se + 6 - c)
                k = se + STATE_EXP - c
                if k < 0 or np.any(fc["bias"] % (1 << k)) or int(fs["vth"]) % (1 << k) or d != 0:
                    problems.append(f"{sd}: not exact at spike_exp {se} (step 2**{k}, message shift {d})")
                else:
                    bias, v_th = fc["bias"] >> k, int(fs["vth"]) >> k
            node = nodes[conv]
            act_max = _maxabs(net, conv, u_exp, hr) * 2.0**c
            msg_max = _maxabs(net, sd, out_exp, hr) * 2.0**d
            if act_max > STATE_MAX:
                problems.append(f"{conv}: accumulator {act_max:.3g} > 24 bits")
            if msg_max > MESSAGE_MAX:
                problems.append(f"{sd}: message {msg_max:.3g} > 16 bits")
            if np.abs(bias).max(initial=0) > BIAS_MAX:
                problems.append(f"{conv}: bias {int(np.abs(bias).max())} > 16 bits")
            out.append(ConvLayer(conv, sd, np.asarray(fc["weight_mant"], np.int64), bias, node.stride, node.padding,
                                 tuple(node.out_shape), v_th, c, d, s, u_exp, out_exp, t, q))
            c = d
        if 255 * 2.0 ** (se + STATE_EXP) > STATE_MAX or 255 * 2.0**se > MESSAGE_MAX:
            problems.append("input: pixel state / message out of range")
        return out, problems

    if lava and spike_exp is None:          # the network's own spike_exp: the exact one
        se = int(fixed["_spec"].get("spike_exp", 0))
        layers, problems = layers_for(se)
        if problems:
            notes.append(f"spike_exp {se}: " + "; ".join(problems))
    elif spike_exp is not None:
        se = int(spike_exp)
        if not 0 <= se <= 7:
            raise ParameterError(f"spike_exp must lie in 0..7 (3 bits), got {spike_exp}")
        layers, problems = layers_for(se)
        if problems:
            notes.append(f"spike_exp {se}: " + "; ".join(problems))
    else:
        for se in range(SPIKE_EXP_MAX, -1, -1):
            layers, problems = layers_for(se)
            if not problems:
                break
        else:
            raise ParameterError("no netx spike_exp in 0..6 keeps the layers within their bit budgets: "
                                 + "; ".join(problems))

    # graph 2: h (sigma-delta encoded by netx's input layer) -> [pi ; v], common weight exponent
    fh = fixed[post]
    t_h = _scalar_threshold(post, fh["threshold"], notes)
    w_exps = [int(fixed[h]["weight_exp"]) for h, _ in heads]
    e_w = min(w_exps)
    rows, bias, shifts = [], [], {}
    for (h, _), ew in zip(heads, w_exps):
        sh = ew - e_w
        rows.append(np.asarray(fixed[h]["weight_mant"], np.int64) << sh)
        bias.append(np.asarray(fixed[h]["bias"], np.int64) << sh)
        shifts[h] = sh
    weight = np.concatenate(rows, axis=0)
    if weight.max(initial=0) > 254 or weight.min(initial=0) < -256:
        raise ParameterError(f"the heads' weights do not share one exponent within netx's 9-bit range "
                             f"({int(weight.min())}..{int(weight.max())})")
    head_exp = e_w + int(fh["out_exp"])
    head_list, start = [], 0
    for (h, o), r in zip(heads, rows):
        head_list.append((h, o, (start, start + r.shape[0])))
        start += r.shape[0]
    if 2 ** (-int(fh["out_exp"])) * 2.0**STATE_EXP > STATE_MAX:
        notes.append("heads input: |h| << 6 exceeds 24 bits")
    exact = lava and not any("not exact" in pr for pr in problems)
    return Plan(se, hr, inp, tuple(nodes[inp].shape), t_in + 1, t_in, layers, post, t_h + 1, head_list, weight,
                head_exp, np.concatenate(bias), shifts, notes, exact)


# -- writing -----------------------------------------------------------------------------------
def _str(grp, key: str, value: str) -> None:
    grp.create_dataset(key, data=np.bytes_(value))


def _neuron(grp, v_th: int | None = None, sigma_output: bool = False) -> None:
    nrn = grp.create_group("neuron")
    _str(nrn, "type", "SDNN")
    if sigma_output:
        nrn.create_dataset("sigma_output", data=np.int64(1))
    else:
        nrn.create_dataset("vThMant", data=np.int64(v_th))


def _write_graph1(f, p: Plan) -> None:
    layer = f.create_group("layer")
    l0 = layer.create_group("0")
    _str(l0, "type", "input")
    l0.create_dataset("shape", data=np.asarray(p.input_shape, np.int64))
    _neuron(l0, p.input_v_th)
    for i, cl in enumerate(p.convs, start=1):
        grp = layer.create_group(str(i))
        _str(grp, "type", "conv")
        grp.create_dataset("shape", data=np.asarray(cl.out_shape, np.int64))
        grp.create_dataset("weight", data=cl.weight.astype(np.int64))
        grp.create_dataset("bias", data=cl.bias.astype(np.int64))
        grp.create_dataset("stride", data=np.asarray(cl.stride, np.int64))
        grp.create_dataset("padding", data=np.asarray(cl.padding, np.int64))
        grp.create_dataset("dilation", data=np.asarray((1, 1), np.int64))
        grp.create_dataset("groups", data=np.int64(1))
        _neuron(grp, cl.v_th)


def _write_graph2(f, p: Plan) -> None:
    layer = f.create_group("layer")
    l0 = layer.create_group("0")
    _str(l0, "type", "input")
    l0.create_dataset("shape", data=np.asarray([p.head_weight.shape[1]], np.int64))
    _neuron(l0, p.h_v_th)
    l1 = layer.create_group("1")
    _str(l1, "type", "dense")
    l1.create_dataset("shape", data=np.asarray([p.head_weight.shape[0]], np.int64))
    l1.create_dataset("weight", data=p.head_weight.astype(np.int64))
    _neuron(l1, sigma_output=True)


def paths(out) -> dict:
    """The three files written for ``out``: graph 1, graph 2 (heads) and the JSON description."""
    out = Path(out)
    suffix = out.suffix or ".net"
    if suffix == ".json":
        raise ParameterError(f"{out}: give the netx file name (e.g. policy.net); the .json is written beside it")
    return {"static": out, "heads": out.with_name(out.stem + "_heads" + suffix), "json": out.with_name(out.stem + ".json")}


def describe(net: g.Network, p: Plan, files: dict) -> dict:
    """The JSON written beside the netx files: cut, load arguments, scales, known differences."""
    fh = net.fixed[p.post]
    layers = [{"netx_layer": 0, "type": "input", "node": p.input_node, "encoder": net.order[1],
               "vThMant": p.input_v_th, "project_threshold": p.input_threshold,
               "message_exp": -p.spike_exp, "exact": True}]
    for i, cl in enumerate(p.convs, start=1):
        layers.append({"netx_layer": i, "type": "conv", "node": cl.node, "neuron": cl.neuron,
                       "vThMant": cl.v_th, "project_threshold": cl.threshold, "threshold_step": cl.threshold_step,
                       "bias_step": p.spike_exp + STATE_EXP - cl.c,
                       "accumulator_exp": cl.u_exp - cl.c, "message_exp": cl.out_exp - cl.d,
                       "project_exp": cl.out_exp, "message_shift": cl.d,
                       "exact": p.exact,
                       "to_project": (f"Y = sum of messages * 2**{-cl.d}" + (" (exact)" if p.exact else
                                      " (approximately; exact only where netx reproduces the project's rounding)"))})
    last = p.convs[-1]
    heads = {h: {"output": o, "rows": list(r), "bias": p.head_bias[r[0]:r[1]].tolist(),
                 "weight_shift": p.head_shifts[h]} for h, o, r in p.heads}
    return {
        "format": FORMAT, "version": FORMAT_VERSION, "source": net.metadata.get("source"),
        "cut": CUT,
        "graphs": {
            "static": {"file": files["static"].name, "load": {"spike_exp": p.spike_exp},
                       "input": {"node": p.input_node, "shape_chw": list(p.input_shape),
                                 "encoding": "pixel integers 0..255; Lava order x, y, channel "
                                             "(frame.transpose(2, 1, 0))"},
                       "output": {"node": last.neuron, "shape_chw": list(last.out_shape),
                                  "message_exp": last.out_exp - last.d,
                                  "to_host": f"the plastic layer's input x = (sum of messages, C-order after "
                                             f"transposing back to C, H, W) * 2**{last.out_exp - last.d}"},
                       "layers": layers},
            "heads": {"file": files["heads"].name, "load": {"spike_exp": 0},
                      "input": {"node": p.post, "shape": [int(p.head_weight.shape[1])], "vThMant": p.h_v_th,
                                "project_threshold": p.h_v_th - 1, "encoding": f"h integers (LSB 2**{int(fh['out_exp'])})"},
                      "output": {"accumulator_exp": p.head_exp,
                                 "to_host": f"u = sigma + bias (per head below), value = u * 2**{p.head_exp}",
                                 "heads": heads},
                      "exact": True}},
        "spike_exp_rule": f"largest in 0..{SPIKE_EXP_MAX} with accumulators in 24 bits, messages and biases "
                          f"in 16 bits at headroom {p.headroom:g} over the calibrated ranges",
        "headroom": p.headroom,
        "differences": list(DIFFERENCES_LAVA if p.exact else DIFFERENCES),
        "notes": p.notes,
    }


def write_netx(out, net: g.Network, spike_exp: int | None = None, headroom: float | None = None) -> dict:
    """Write graph 1, graph 2 and the JSON for ``net`` (each atomically); returns the JSON dict."""
    import h5py

    p = plan(net, spike_exp, headroom)
    files = paths(out)
    info = describe(net, p, files)
    for key, writer in (("static", _write_graph1), ("heads", _write_graph2)):
        with atomic_path(files[key]) as tmp:
            with h5py.File(tmp, "w") as f:
                writer(f, p)
                f.attrs["mstpn_netx"] = json.dumps({"format": FORMAT, "version": FORMAT_VERSION, "graph": key})
    atomic_write_json(files["json"], info)
    return info
