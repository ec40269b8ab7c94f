"""The backend contract: what every simulator backend of a converted network provides.

A backend is a factory ``make_runner(net, **options) -> runner`` registered in
:mod:`mstpn_base.registry` (built in, or through the ``mstpn.backends`` entry-point group).  The
runner plays the network one frame at a time::

    runner.reset()                 # new episode: F = 0, h = 0, sigma-delta state = 0
    out = runner.step(obs)         # obs: uint8 (84, 84), one frame -> StepOut
    runner.close()                 # free processes / devices (idempotent)

and may offer ``runner.run_frames(frames) -> iterable of StepOut`` for a whole recorded sequence
(backends that compile a sequence at once, e.g. Brian2's cpp_standalone device).

A factory that cannot express a network (a node kind it lacks, a network without fixed-point
parameters, ...) raises :class:`UnsupportedNetworkError`; a missing optional package raises
:class:`mstpn_base.errors.BackendUnavailableError`.  docs/backends.md has a worked example.

The layers compared across backends are the nodes that send events or outputs
(:func:`layer_names`); :func:`layers_of` cuts a sigma-delta network into those layers for
backends that run one process per layer.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable, Protocol

import numpy as np

from conversion import graph as g
from mstpn_base.errors import DataFormatError, MstpnError


class UnsupportedNetworkError(MstpnError, ValueError):
    """The network contains something a backend cannot express (the message says what)."""


@dataclass
class StepOut:
    """One frame's outputs of a runner (per layer of :func:`layer_names`)."""

    logits: np.ndarray
    acts: dict = field(default_factory=dict)      # layer -> activation (float) after this frame
    events: dict = field(default_factory=dict)    # layer -> number of graded events / spikes sent
    synops: dict = field(default_factory=dict)    # layer -> synaptic operations
    raw: dict = field(default_factory=dict)       # fixed point: layer -> integer state (bit-exact checks)


class Runner(Protocol):
    name: str

    def reset(self) -> None: ...

    def step(self, obs) -> StepOut: ...

    def close(self) -> None: ...


class SequenceRunner(Runner, Protocol):
    def run_frames(self, frames) -> Iterable[StepOut]: ...


def layer_names(net: g.Network) -> list:
    """The compared layers: nodes that send events (SigmaDelta, RateIF) or outputs."""
    return [n for n in net.order if isinstance(net.nodes[n], (g.SigmaDelta, g.RateIF, g.Output))]


def logits_node(net: g.Network) -> str:
    """The Output node that carries the policy's logits ("logits", else the first Output)."""
    outs = net.of_type(g.Output)
    if not outs:
        raise DataFormatError("network has no Output node")
    return "logits" if "logits" in outs else outs[0]


def value_exponent(net: g.Network, name: str) -> int:
    """Exponent e of a node's integer value (value = int * 2**e) in the fixed-point network."""
    node = net.nodes[name]
    if isinstance(node, g.Output):
        return int(net.fixed[net.source(name)]["u_exp"])
    if isinstance(node, g.Input):
        return 0
    fp = net.fixed.get(name, {})
    if isinstance(node, g.SigmaDelta):
        return int(fp.get("out_exp", 0))
    return int(fp.get("u_exp", 0))


def layers_of(net: g.Network) -> list:
    """[(name, nodes, external source node or None)] in evaluation order.

    Each layer ends at a node that emits events (SigmaDelta) or at an Output; pass-through nodes
    (Scale, Flatten) join the layer after them.  For the Pong network::

        [input, sd_in] -> [scale, conv1, sd1] -> [conv2, sd2] -> [flatten, stpn, h] -> [pi, logits]
                                                                                    -> [v, value]
    """
    if net.mode != "sigma_delta" or net.of_type(g.RateIF):
        raise UnsupportedNetworkError("this backend runs the sigma-delta form; this network is "
                                      f"{net.mode!r} (rate-coded IF: use the snntorch backend)")
    terminal = [n for n in net.order if isinstance(net.nodes[n], (g.SigmaDelta, g.Output))]
    out, used = [], set()
    for t in terminal:          # a layer = the terminal node and the pass-through chain before it
        nodes, n = [t], t
        while not isinstance(net.nodes[n], g.Input):
            s = net.source(n)
            if s in terminal:
                break
            if s in used:
                raise UnsupportedNetworkError(f"node {s!r} feeds two layers; only chains are supported")
            nodes.insert(0, s)
            n = s
        used |= set(nodes)
        out.append(nodes)
    rest = [n for n in net.order if n not in used]
    if rest:
        raise UnsupportedNetworkError(f"nodes {rest} end the network without a neuron or an Output")
    layers = []
    for nodes in out:
        ext = set()
        for n in nodes:
            if not isinstance(net.nodes[n], g.Input):
                ext |= {s for s in net.sources(n) if s not in nodes and net.order.index(s) < net.order.index(n)}
        if len(ext) > 1:
            raise UnsupportedNetworkError(f"layer {nodes} reads more than one other layer ({sorted(ext)})")
        src = ext.pop() if ext else None
        if src is None and not isinstance(net.nodes[nodes[0]], g.Input):
            raise UnsupportedNetworkError(f"layer {nodes} has no input")
        layers.append((nodes[-1], nodes, src))
    return layers


def layer_depths(layers) -> dict:
    """Depth of each layer of :func:`layers_of` (input layer 1): the sub-step a frame reaches it
    under a one-step synaptic delay per layer."""
    depth = {}
    for name, _, src in layers:
        depth[name] = 1 if src is None else depth[src] + 1
    return depth
