"""The converted policy as the backends of issue #5 see it: a flat list of layers (NumPy arrays).

Every backend (Brian2, Lava float/fixed, snnTorch, the NumPy reference runner of
:mod:`mstpn.compare`) is built from one :class:`NetSpec`, so that they all read the same numbers.
A NetSpec comes from a converted network file (:func:`load_spec`, through :mod:`conversion`'s
reader) or straight from a PyTorch :class:`snn_agent.policy.Policy` (:func:`spec_from_policy`,
used when no converted file is at hand and by the tests).

Layer kinds (``Layer.kind``), in topological order, each reading ``Layer.source`` (None = the
observation):

* ``input``  sigma-delta encoder of the frame: x = obs * scale (obs: pixels 0..255)
* ``conv``   Conv2d(weight (Co, Ci, k, k), bias, stride), activation ``act``
* ``dense``  Linear(weight (O, I), bias), activation ``act`` (``none`` for the heads)
* ``stpn``   the plastic layer: W, b, lam, gamma (H x (I+H)), h = tanh(...), F plastic

``threshold`` is the sigma-delta threshold of the layer's output units (0: every change is sent).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from mstpn.errors import DataFormatError, MstpnError

KINDS = ("input", "conv", "dense", "stpn")
ACTS = ("none", "relu", "tanh")


class UnsupportedNetworkError(MstpnError, ValueError):
    """The network contains something a backend cannot express (message names both)."""


@dataclass
class Layer:
    name: str
    kind: str
    source: str | None
    shape: tuple                      # output shape (C, H, W) for input/conv, (n,) otherwise
    act: str = "none"
    threshold: float = 0.0
    params: dict = field(default_factory=dict)   # weight/bias/stride/scale/W/b/lam/gamma

    @property
    def size(self) -> int:
        return int(np.prod(self.shape))


@dataclass
class NetSpec:
    layers: list
    outputs: dict                     # role -> layer name: {"logits": ..., "value": ...}
    meta: dict = field(default_factory=dict)

    def __post_init__(self):
        names = set()
        for layer in self.layers:
            if layer.kind not in KINDS:
                raise UnsupportedNetworkError(f"layer {layer.name!r}: unknown kind {layer.kind!r}")
            if layer.act not in ACTS:
                raise UnsupportedNetworkError(f"layer {layer.name!r}: unsupported activation {layer.act!r}")
            if layer.source is not None and layer.source not in names:
                raise DataFormatError(f"layer {layer.name!r} reads {layer.source!r}, which is not defined before it")
            names.add(layer.name)
        if "logits" not in self.outputs or self.outputs["logits"] not in names:
            raise DataFormatError("network has no 'logits' output layer")

    def __getitem__(self, name) -> Layer:
        for layer in self.layers:
            if layer.name == name:
                return layer
        raise KeyError(name)

    @property
    def names(self) -> list:
        return [layer.name for layer in self.layers]

    def consumers(self, name) -> list:
        return [layer for layer in self.layers if layer.source == name]

    @property
    def n_actions(self) -> int:
        return self[self.outputs["logits"]].size

    def depth(self, name) -> int:
        """Number of layers on the path from the input to ``name`` (input = 1)."""
        d, layer = 1, self[name]
        while layer.source is not None:
            layer, d = self[layer.source], d + 1
        return d

    def with_thresholds(self, threshold: float | dict) -> "NetSpec":
        import copy

        out = copy.deepcopy(self)
        for layer in out.layers:
            layer.threshold = float(threshold.get(layer.name, layer.threshold)
                                    if isinstance(threshold, dict) else threshold)
        return out


def _np(t) -> np.ndarray:
    return np.asarray(t.detach().cpu().double().numpy() if hasattr(t, "detach") else t, dtype=np.float64)


def spec_from_policy(policy, threshold: float = 0.0) -> NetSpec:
    """NetSpec of a :class:`snn_agent.policy.Policy` with an STPN core (float64 copies)."""
    core = policy.core
    if not hasattr(core, "effective_params"):
        raise UnsupportedNetworkError(f"only STPN / m-STPN cores convert, not {type(core).__name__}")
    p = core.effective_params()
    if p.get("f_max") is not None:
        raise UnsupportedNetworkError("m-STPN with clipped F (f_max) is not supported by these backends")
    c1, c2 = policy.torso[0], policy.torso[2]
    layers = [
        Layer("input", "input", None, (1, 84, 84), threshold=threshold, params=dict(scale=1.0 / 255.0)),
        Layer("conv1", "conv", "input", (16, 20, 20), "relu", threshold,
              dict(weight=_np(c1.weight), bias=_np(c1.bias), stride=int(c1.stride[0]))),
        Layer("conv2", "conv", "conv1", (32, 9, 9), "relu", threshold,
              dict(weight=_np(c2.weight), bias=_np(c2.bias), stride=int(c2.stride[0]))),
        Layer("stpn", "stpn", "conv2", (core.hidden_size,), "tanh", threshold,
              dict(W=_np(p["W"]), b=_np(p["b"]), lam=_np(p["lam"]), gamma=_np(p["gamma"]))),
        Layer("pi", "dense", "stpn", (policy.pi.out_features,), "none", 0.0,
              dict(weight=_np(policy.pi.weight), bias=_np(policy.pi.bias))),
        Layer("v", "dense", "stpn", (1,), "none", 0.0,
              dict(weight=_np(policy.v.weight), bias=_np(policy.v.bias))),
    ]
    return NetSpec(layers, {"logits": "pi", "value": "v"}, meta=dict(source="policy"))


def conv_out_hw(h: int, w: int, k: int, stride: int) -> tuple:
    return (h - k) // stride + 1, (w - k) // stride + 1


# -- from conversion's graph ---------------------------------------------------------------------
_LOGIT_NAMES = ("logits", "logit", "pi", "policy", "actions", "action")


def _stride(node) -> int:
    sh, sw = node.stride
    if sh != sw:
        raise UnsupportedNetworkError(f"conv stride {node.stride}: only equal strides are supported")
    return int(sh)


def spec_from_network(net) -> NetSpec:
    """NetSpec of a :class:`conversion.graph.Network` (a synapse node and the neuron node after it
    become one layer; Flatten is a re-indexing, i.e. nothing in flat C order).

    Raises UnsupportedNetworkError for a structure these backends do not build (padding, unequal
    strides, an Affine/Conv without a neuron, more than one input, ...)."""
    from conversion import graph as g

    layers, alias, outputs = [], {}, {}
    nodes, order = net.nodes, net.order
    pending = {}      # synapse node name -> (kind, params, source layer)
    rate = {}

    def src_layer(name):
        s = net.source(name)
        return alias.get(s, s)

    for name in order:
        node = nodes[name]
        if isinstance(node, g.Input):
            if layers or pending:
                raise UnsupportedNetworkError("only one Input node, first in the order, is supported")
            if tuple(node.shape) != (1, 84, 84):
                raise UnsupportedNetworkError(f"input shape {node.shape}: the backends take (1, 84, 84) frames")
            pending[name] = ("input", dict(scale=1.0), None)
        elif isinstance(node, g.Scale):
            kind, params, _ = pending.pop(net.source(name), (None, None, None))
            if kind != "input":
                raise UnsupportedNetworkError(f"Scale node {name!r}: only directly after the Input is supported")
            scale = np.unique(node.scale)
            if scale.size != 1:
                raise UnsupportedNetworkError(f"Scale node {name!r}: only a uniform scale is supported")
            pending[name] = ("input", dict(scale=float(scale[0])), None)
        elif isinstance(node, g.Conv2d):
            if any(node.padding):
                raise UnsupportedNetworkError(f"Conv2d {name!r}: padding {node.padding} is not supported")
            pending[name] = ("conv", dict(weight=node.weight, bias=node.bias, stride=_stride(node)), src_layer(name))
        elif isinstance(node, g.Affine):
            pending[name] = ("dense", dict(weight=node.weight, bias=node.bias), src_layer(name))
        elif isinstance(node, g.PlasticSTPN):
            pending[name] = ("stpn", dict(W=node.W, b=node.b, lam=node.lam, gamma=node.gamma,
                                          f_max=node.f_max, norm_eps=node.norm_eps, device=node.device),
                             src_layer(name))
        elif isinstance(node, g.Flatten):
            alias[name] = src_layer(name)
        elif isinstance(node, (g.SigmaDelta, g.RateIF)):
            syn = net.source(name)
            if syn not in pending:
                raise UnsupportedNetworkError(f"neuron node {name!r} must follow a synapse/scale node")
            kind, params, source = pending.pop(syn)
            act = "none" if isinstance(node, g.RateIF) or node.activation == "identity" else node.activation
            thr = node.v_threshold if isinstance(node, g.RateIF) else node.threshold
            shape = (tuple(nodes[syn].out_shape) if kind == "conv" else
                     (1, 84, 84) if kind == "input" else tuple(node.out_shape))
            if isinstance(node, g.RateIF):
                act = "relu"
                params = dict(params, rate=dict(steps=node.steps, v_init=node.v_init))
                rate[name] = True
            layer = Layer(name, kind, source, shape, act, 0.0, params)
            layer.threshold = np.asarray(thr, np.float64).reshape(-1)
            if kind != "input" or True:
                layer.params["synapse_node"] = syn
            layers.append(layer)
            alias[syn] = name
        elif isinstance(node, g.Output):
            src = net.source(name)
            if src in pending:   # Output reads a synapse's u directly (the heads)
                kind, params, source = pending.pop(src)
                if kind != "dense":
                    raise UnsupportedNetworkError(f"Output {name!r} must read an Affine or a neuron node")
                layer = Layer(src, "dense", source, tuple(nodes[src].out_shape), "none", 0.0, params)
                layers.append(layer)
                alias[src] = src
                target = src
            else:
                target = alias.get(src, src)
            low = name.lower()
            role = ("logits" if any(k == low or low.endswith(k) or low.startswith(k) for k in _LOGIT_NAMES)
                    else "value" if "value" in low or low in ("v", "out_v") else name)
            outputs[role] = target
        else:
            raise UnsupportedNetworkError(f"node {name!r} of kind {type(node).__name__} is not supported")
    if pending:
        raise UnsupportedNetworkError(f"synapse node(s) {sorted(pending)} have no neuron or output after them")
    if "logits" not in outputs:
        outs = [v for k, v in outputs.items()]
        if not outs:
            raise DataFormatError("network has no Output node")
        outputs["logits"] = outs[0]
    for layer in layers:   # thresholds may be scalars in the spec, arrays per unit here
        th = np.asarray(layer.threshold, np.float64)
        layer.threshold = th if th.size > 1 else float(th.reshape(-1)[0]) if th.size else 0.0
    mode = "rate" if rate else "sigma_delta"
    return NetSpec(layers, outputs, meta=dict(source="conversion", mode=mode, network=net,
                                              action_set=net.metadata.get("action_set", "minimal")))
