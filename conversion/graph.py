"""A small declarative graph of the event-driven network (in the style of NIR's IR).

A :class:`Network` is an ordered dict of nodes and a list of edges.  Nodes are plain dataclasses
holding float64 arrays; their meaning (units, equations) is fixed here, so that any backend can
run the network from this description alone.  The node order is the evaluation order within one
algorithmic step (one agent frame); an edge from a node to an *earlier* node (the recurrent edge
``h -> stpn``) carries that node's value of the previous step.

Node kinds (NIR has a primitive for the first six; the last three are this project's extension):

==============  =====================================================================================
``Input``       frame source, shape (1, 84, 84), pixel values 0..255 [dimensionless]
``Scale``       y = scale (.) x                  (the 1/255 pixel normalisation)
``Conv2d``      u = b + conv(x, weight), stride, zero padding; weight (C_out, C_in, kh, kw)
``Flatten``     C-order flatten of the (C, H, W) input (identity on values, re-indexes events)
``Affine``      u = weight @ x + b; weight (out, in)
``Output``      graph output; reads the value of its source (a synapse node's u: logits, value)
``SigmaDelta``  graded-event neuron: y = act(u); it sends e = y - y_sent when |y - y_sent| > threshold
                (per unit), then y_sent += e.  Receivers integrate events: their input is y_sent.
``RateIF``      rate-coded integrate-and-fire neuron run for ``steps`` sub-steps per frame:
                v <- v + u; spike when v >= v_threshold, then v <- v - v_threshold (reset by
                subtraction); v starts each frame at v_init * v_threshold; the receiver's input is
                (number of spikes) * v_threshold / steps, an estimate of relu(u).
``PlasticSTPN`` the STPN synapses with short-term plasticity and row normalisation (the STPN rule of
                Rodriguez, Guo & Moraitis, ICML 2022):
                z = [x ; h_sent(prev. step)], G = W + F, N = ||G||_row + norm_eps,
                a = (G z) / N + b,  F <- clip(lam (.) F / N + gamma (.) (h_post z^T), +-f_max),
                where h_post = act(a) is the exact activation of the ``post`` SigmaDelta node.
==============  =====================================================================================
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from mstpn_base.errors import DataFormatError, ParameterError

#: activations a SigmaDelta / RateIF node may apply to its input u
ACTIVATIONS = ("identity", "relu", "tanh")
MODES = ("sigma_delta", "rate")
#: IF sub-steps per frame of the rate-coded form: activations resolved in steps of v_threshold / 256;
#: on a full game of the 8M-frame STPN, 98.9 % action agreement at 128, 99.5 % at 256 (docs/event_driven.md)
DEFAULT_RATE_STEPS = 256


def _arr(x, name: str, ndim: int | None = None) -> np.ndarray:
    a = np.asarray(x)
    if a.dtype.kind not in "fiu":
        raise ParameterError(f"{name} must be a numeric array, got dtype {a.dtype}")
    a = a.astype(np.float64, copy=False)
    if ndim is not None and a.ndim != ndim:
        raise ParameterError(f"{name} must have {ndim} dimensions, got shape {a.shape}")
    if not np.all(np.isfinite(a)):
        bad = tuple(int(i) for i in np.argwhere(~np.isfinite(a))[0])
        raise ParameterError(f"{name} contains NaN/inf (first at index {bad})")
    return a


def _pair(x, name: str) -> tuple[int, int]:
    t = tuple(int(v) for v in np.ravel(np.asarray(x)))
    if len(t) == 1:
        t = t * 2
    if len(t) != 2:
        raise ParameterError(f"{name} must be an int or a pair, got {x!r}")
    return t


@dataclass(eq=False)
class _Port:
    """A graph boundary of a given shape (the data that enters or leaves)."""

    shape: tuple

    def __post_init__(self):
        self.shape = tuple(int(s) for s in self.shape)

    @property
    def out_shape(self):
        return self.shape


@dataclass(eq=False)
class Input(_Port):
    """The frame that enters the network."""


@dataclass(eq=False)
class Scale:
    scale: np.ndarray

    def __post_init__(self):
        self.scale = _arr(self.scale, "Scale.scale")

    @property
    def out_shape(self):
        return self.scale.shape


@dataclass(eq=False)
class Conv2d:
    weight: np.ndarray
    bias: np.ndarray
    input_shape: tuple  # (H, W)
    stride: tuple = (1, 1)
    padding: tuple = (0, 0)

    def __post_init__(self):
        self.weight = _arr(self.weight, "Conv2d.weight", 4)
        self.bias = _arr(self.bias, "Conv2d.bias", 1)
        self.input_shape, self.stride, self.padding = (_pair(self.input_shape, "input_shape"),
                                                       _pair(self.stride, "stride"), _pair(self.padding, "padding"))
        if self.bias.shape != (self.weight.shape[0],):
            raise ParameterError(f"Conv2d.bias has shape {self.bias.shape}, expected ({self.weight.shape[0]},)")

    @property
    def in_shape(self):
        return (self.weight.shape[1], *self.input_shape)

    @property
    def out_shape(self):
        (h, w), (kh, kw) = self.input_shape, self.weight.shape[2:]
        (sh, sw), (ph, pw) = self.stride, self.padding
        return (self.weight.shape[0], (h + 2 * ph - kh) // sh + 1, (w + 2 * pw - kw) // sw + 1)


@dataclass(eq=False)
class Flatten:
    input_shape: tuple

    def __post_init__(self):
        self.input_shape = tuple(int(s) for s in self.input_shape)

    @property
    def out_shape(self):
        return (int(np.prod(self.input_shape)),)


@dataclass(eq=False)
class Affine:
    weight: np.ndarray
    bias: np.ndarray

    def __post_init__(self):
        self.weight = _arr(self.weight, "Affine.weight", 2)
        self.bias = _arr(self.bias, "Affine.bias", 1)
        if self.bias.shape != (self.weight.shape[0],):
            raise ParameterError(f"Affine.bias has shape {self.bias.shape}, expected ({self.weight.shape[0]},)")

    @property
    def out_shape(self):
        return (self.weight.shape[0],)


@dataclass(eq=False)
class Output(_Port):
    """A value the network reports (logits, value)."""


@dataclass(eq=False)
class SigmaDelta:
    activation: str
    threshold: np.ndarray  # per unit, >= 0, same units as y

    def __post_init__(self):
        if self.activation not in ACTIVATIONS:
            raise ParameterError(f"SigmaDelta.activation must be one of {ACTIVATIONS}, got {self.activation!r}")
        self.threshold = _arr(self.threshold, "SigmaDelta.threshold")
        if np.any(self.threshold < 0):
            raise ParameterError("SigmaDelta.threshold must be >= 0")

    @property
    def out_shape(self):
        return self.threshold.shape


@dataclass(eq=False)
class RateIF:
    v_threshold: np.ndarray  # per unit, > 0
    steps: int = DEFAULT_RATE_STEPS
    v_init: float = 0.5      # membrane at each frame start, as a fraction of v_threshold

    def __post_init__(self):
        self.v_threshold = _arr(self.v_threshold, "RateIF.v_threshold")
        if np.any(self.v_threshold <= 0):
            raise ParameterError("RateIF.v_threshold must be > 0")
        self.steps = int(self.steps)
        if self.steps < 1:
            raise ParameterError(f"RateIF.steps must be >= 1, got {self.steps}")
        if not 0.0 <= float(self.v_init) < 1.0:
            raise ParameterError(f"RateIF.v_init must lie in [0, 1), got {self.v_init}")
        self.v_init = float(self.v_init)

    @property
    def out_shape(self):
        return self.v_threshold.shape


@dataclass(eq=False)
class PlasticSTPN:
    """STPN synapses (H x K, K = I + H) with their plasticity parameters (all dimensionless).

    ``f_max``: bound on |F| (m-STPN; ``inf`` = unbounded).  ``device``: the DeviceParams JSON dict
    and the weight-to-conductance mapping of an m-STPN (``None`` for a plain STPN).
    """

    W: np.ndarray
    b: np.ndarray
    lam: np.ndarray
    gamma: np.ndarray
    post: str
    f_max: float = math.inf
    norm_eps: float = 1e-16
    device: dict | None = None

    def __post_init__(self):
        self.W = _arr(self.W, "PlasticSTPN.W", 2)
        H, K = self.W.shape
        self.b = _arr(self.b, "PlasticSTPN.b", 1)
        self.lam = _arr(self.lam, "PlasticSTPN.lam", 2)
        self.gamma = _arr(self.gamma, "PlasticSTPN.gamma", 2)
        for name, a, shape in (("b", self.b, (H,)), ("lam", self.lam, (H, K)), ("gamma", self.gamma, (H, K))):
            if a.shape != shape:
                raise ParameterError(f"PlasticSTPN.{name} has shape {a.shape}, expected {shape}")
        if K <= H:
            raise ParameterError(f"PlasticSTPN.W must be H x (I + H) with I > 0, got {self.W.shape}")
        self.f_max = float(self.f_max)
        if not self.f_max > 0:
            raise ParameterError(f"PlasticSTPN.f_max must be > 0 (inf = unbounded), got {self.f_max}")
        self.norm_eps = float(self.norm_eps)

    @property
    def hidden_size(self) -> int:
        return self.W.shape[0]

    @property
    def input_size(self) -> int:
        return self.W.shape[1] - self.W.shape[0]

    @property
    def out_shape(self):
        return (self.hidden_size,)


NODE_TYPES = {c.__name__: c for c in (Input, Scale, Conv2d, Flatten, Affine, Output, SigmaDelta, RateIF, PlasticSTPN)}
#: node kinds that NIR 1.0 has a primitive for (written in NIR's own layout)
NIR_KINDS = ("Input", "Scale", "Conv2d", "Flatten", "Affine", "Output")
#: this project's extension node kinds
EXTENSION_KINDS = ("SigmaDelta", "RateIF", "PlasticSTPN")


@dataclass(eq=False)
class Network:
    """Ordered nodes (evaluation order), edges (src, dst), free-form JSON metadata and, after
    quantisation, the fixed-point parameters per node (``fixed``: node -> {name: int array/int})."""

    nodes: dict
    edges: list
    metadata: dict = field(default_factory=dict)
    fixed: dict | None = None

    def __post_init__(self):
        self.edges = [(str(a), str(b)) for a, b in self.edges]
        validate(self)

    @property
    def order(self) -> list[str]:
        return list(self.nodes)

    @property
    def mode(self) -> str:
        return self.metadata.get("mode", "sigma_delta")

    def sources(self, name: str) -> list[str]:
        """Source nodes of ``name`` in edge order."""
        return [a for a, b in self.edges if b == name]

    def source(self, name: str) -> str:
        """The feed-forward (non-recurrent) source of ``name``."""
        pos = self.order.index(name)
        src = [a for a in self.sources(name) if self.order.index(a) < pos]
        if len(src) != 1:
            raise DataFormatError(f"node {name!r} must have exactly one feed-forward input, has {src}")
        return src[0]

    def of_type(self, kind) -> list[str]:
        return [n for n, node in self.nodes.items() if isinstance(node, kind)]

    def plastic(self) -> str:
        names = self.of_type(PlasticSTPN)
        if len(names) != 1:
            raise DataFormatError(f"network must have exactly one PlasticSTPN node, has {len(names)}")
        return names[0]


def validate(net: Network) -> None:
    """Structural checks; raise :class:`DataFormatError` naming the first problem."""
    if not isinstance(net.nodes, dict) or not net.nodes:
        raise DataFormatError("network has no nodes")
    for name, node in net.nodes.items():
        if type(node).__name__ not in NODE_TYPES:
            raise DataFormatError(f"node {name!r} has unknown kind {type(node).__name__}")
    order = list(net.nodes)
    seen = set()
    for a, b in net.edges:
        for n in (a, b):
            if n not in net.nodes:
                raise DataFormatError(f"edge ({a!r}, {b!r}) names a node that does not exist: {n!r}")
        if (a, b) in seen:
            raise DataFormatError(f"duplicate edge ({a!r}, {b!r})")
        seen.add((a, b))
        if order.index(a) >= order.index(b):
            # only the plastic layer may receive a delayed (recurrent) edge, from its post neurons
            node = net.nodes[b]
            if not (isinstance(node, PlasticSTPN) and node.post == a):
                raise DataFormatError(f"edge ({a!r}, {b!r}) goes backwards in the evaluation order; only "
                                      "PlasticSTPN <- its post node may be recurrent")
    for name, node in net.nodes.items():
        srcs = [a for a, b in net.edges if b == name]
        if isinstance(node, Input):
            if srcs:
                raise DataFormatError(f"Input node {name!r} must have no incoming edge")
            continue
        ff = [a for a in srcs if order.index(a) < order.index(name)]
        if len(ff) != 1:
            raise DataFormatError(f"node {name!r} must have exactly one feed-forward input, has {ff}")
        in_shape = tuple(net.nodes[ff[0]].out_shape)
        exp = _expected_in_shape(node)
        if exp is not None and tuple(exp) != in_shape:
            raise DataFormatError(f"node {name!r} expects input shape {tuple(exp)}, its source "
                                  f"{ff[0]!r} gives {in_shape}")
        if isinstance(node, PlasticSTPN):
            post = net.nodes.get(node.post)
            if not isinstance(post, SigmaDelta) or (node.post, name) not in seen or (name, node.post) not in seen:
                raise DataFormatError(f"PlasticSTPN {name!r}: post node {node.post!r} must be a SigmaDelta node "
                                      "with edges in both directions")
            if tuple(post.out_shape) != (node.hidden_size,):
                raise DataFormatError(f"PlasticSTPN {name!r}: post node has shape {post.out_shape}, "
                                      f"expected ({node.hidden_size},)")


def _expected_in_shape(node):
    if isinstance(node, Conv2d):
        return node.in_shape
    if isinstance(node, Flatten):
        return node.input_shape
    if isinstance(node, Affine):
        return (node.weight.shape[1],)
    if isinstance(node, PlasticSTPN):
        return (node.input_size,)
    if isinstance(node, (Scale, SigmaDelta, RateIF, Output)):
        return node.out_shape
    return None
