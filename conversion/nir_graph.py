"""Any NIR graph on the NumPy reference: load, discretise, run, record (docs/nir.md).

``program = NirProgram(nir.read(path))`` (or :func:`load` for a path) flattens nested graphs, orders
the nodes and finds the back edges of cycles; ``program.run(x, dt=..., integration=..., reset=...,
delay=...)`` steps the graph on an input ``x`` of shape ``(T, *input shape)`` (spike trains or
currents) and returns a :class:`NirRecord`: per node its output (``out``: spikes 0/1 of the spiking
neurons, the value of every other node) and its states (``v``, and ``i`` for the current-based
neurons), each ``(T, *shape)``.  The neuron equations are :mod:`conversion.nir_semantics`.

Conventions: a node's inputs are summed (NIR).  ``delay="none"``: within a step the nodes are
evaluated in topological order, so a spike crosses a chain of static nodes (Affine, Conv2d, ...)
into the next neuron in the same step; the edge that closes a cycle (the back edge found by a
depth-first walk from the inputs in the graph's own order, e.g. ``W_rec -> LIF`` of ``LIF -> W_rec
-> LIF``) carries the previous step's value.  ``delay="step"``: every edge carries one step (a node
reads its sources' outputs of the previous step; the Input node reads x[t]).  ``delay="synapse"``
(the convention of Lava's Dense and Conv processes and of Loihi's synapses): the edges leaving a
synapse node (:data:`SYNAPSES`: Affine, Linear, Conv1d, Conv2d) carry one step, all others none.  A
synapse node sends at step t what it computed from its input of step t - 1 (at step 0: itself
applied to a zero input, e.g. an Affine's bias); the nodes are evaluated in a topological order of
the graph without the synapses' outgoing edges, and a cycle without a synapse node still has a back
edge carrying the previous step.

A network file with the project's own nodes (``metadata/mstpn_type``) is read by
:func:`conversion.nirfile.read_network` instead: :func:`load` refuses it and says so.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from conversion import nir_semantics as sem
from conversion.ops import conv2d
from mstpn_base.errors import DataFormatError, ParameterError
from mstpn_base.ops import NUMPY

#: static (synapse / structure) primitives the executor runs
STATIC = ("Input", "Output", "Affine", "Linear", "Scale", "Flatten", "Conv1d", "Conv2d",
          "SumPool2d", "AvgPool2d", "Delay")
#: every primitive the executor runs
SUPPORTED = STATIC + tuple(sem.NEURONS)
DELAYS = ("none", "step", "synapse")
#: the primitives whose outgoing edges carry one step under ``delay="synapse"``
SYNAPSES = ("Affine", "Linear", "Conv1d", "Conv2d")


def load(source):
    """A NIR graph from a path (``nir.read``) or as given; refuses the project's network files."""
    import nir

    if isinstance(source, nir.NIRGraph):
        graph = source
    else:
        path = Path(source)
        if not path.is_file():
            raise DataFormatError(f"{path}: no such NIR file")
        try:
            graph = nir.read(str(path))
        except OSError as exc:
            raise DataFormatError(f"{path}: not an HDF5 NIR file ({exc})") from None
        except (ValueError, AssertionError, KeyError) as exc:
            try:   # NIR's own type inference refuses some published graphs (e.g. an Output typed
                graph = nir.read(str(path), type_check=False)   # (1, 1, 1) after a (1,) LIF)
            except Exception:
                raise DataFormatError(f"{path}: not a readable NIR graph ({exc})") from None
        except Exception as exc:
            raise DataFormatError(f"{path}: not a readable NIR graph ({type(exc).__name__}: {exc})") from None
    if is_project_graph(graph):
        raise DataFormatError("this graph holds the project's own nodes (metadata mstpn_type): "
                              "read it with conversion.nirfile.read_network (mstpn compare)")
    return graph


def is_project_graph(graph) -> bool:
    """True if a node carries the project's extension (``metadata/mstpn_type`` or ``mstpn_view``)."""
    import nir

    for node in graph.nodes.values():
        if isinstance(node, nir.NIRGraph):
            if is_project_graph(node):
                return True
        elif any(k in (getattr(node, "metadata", None) or {}) for k in ("mstpn_type", "mstpn_view")):
            return True
    return False


def flatten_graph(graph, prefix: str = ""):
    """(nodes, edges, inputs) of a graph with nested graphs inlined as ``outer.inner`` names.

    Edges into a subgraph go to its Input nodes, edges out of it leave from its Output nodes (which
    become pass-through nodes).  ``inputs``: the top-level Input nodes in the graph's order."""
    import nir

    nodes, edges, ports = {}, [], {}
    for name, node in graph.nodes.items():
        full = f"{prefix}{name}"
        if isinstance(node, nir.NIRGraph):
            sub_nodes, sub_edges, _ = flatten_graph(node, full + ".")
            nodes.update(sub_nodes)
            edges += sub_edges
            ports[full] = ([f"{full}.{k}" for k, n in node.nodes.items() if isinstance(n, nir.Input)],
                           [f"{full}.{k}" for k, n in node.nodes.items() if isinstance(n, nir.Output)])
        else:
            nodes[full] = node
    for a, b in graph.edges:
        a, b = f"{prefix}{a}", f"{prefix}{b}"
        for src in (ports[a][1] if a in ports else [a]):
            for dst in (ports[b][0] if b in ports else [b]):
                edges.append((src, dst))
    for a, b in edges:
        for end in (a, b):
            if end not in nodes:
                raise DataFormatError(f"NIR edge ({a}, {b}) names {end!r}, which is not a node of the graph")
    inputs = [n for n, node in nodes.items() if isinstance(node, nir.Input) and n.count(".") == prefix.count(".")]
    return nodes, list(dict.fromkeys(edges)), inputs


def order_and_back_edges(nodes: dict, edges: list, inputs: list):
    """(evaluation order, back edges): a depth-first walk from the inputs (then from any node not
    reached), in the graph's own order, marks each edge into a node still on the walk's stack as a
    back edge; the order is topological without the back edges."""
    succ = {n: [] for n in nodes}
    for a, b in edges:
        succ[a].append(b)
    state, back, post = {}, set(), []
    for root in list(inputs) + list(nodes):
        if root in state:
            continue
        stack = [(root, iter(succ[root]))]
        state[root] = 1
        while stack:
            node, it = stack[-1]
            nxt = next(it, None)
            if nxt is None:
                stack.pop()
                state[node] = 2
                post.append(node)
            elif state.get(nxt) == 1:
                back.add((node, nxt))
            elif nxt not in state:
                state[nxt] = 1
                stack.append((nxt, iter(succ[nxt])))
    return post[::-1], back


def _pair(v, n=2):
    a = np.atleast_1d(np.asarray(v)).astype(int).reshape(-1)
    return tuple(int(x) for x in (np.repeat(a, n) if a.size == 1 else a))


def _conv_padding(node, kernel, n):
    pad = node.padding
    if isinstance(pad, str):
        if pad == "valid":
            return (0,) * n
        if pad == "same" and all(k % 2 == 1 for k in kernel):
            return tuple(k // 2 for k in kernel)
        raise DataFormatError(f"Conv{n}d padding {pad!r} is not supported (valid, same with odd kernels, numbers)")
    return _pair(pad, n)


def _pool(x, kernel, stride, padding, mean):
    from numpy.lib.stride_tricks import sliding_window_view

    (ph, pw), (kh, kw) = padding, kernel
    x = np.pad(x, ((0, 0), (ph, ph), (pw, pw)))
    win = sliding_window_view(x, (kh, kw), axis=(1, 2))[:, :: stride[0], :: stride[1]]
    s = win.sum(axis=(-1, -2))
    return s / (kh * kw) if mean else s   # AvgPool2d: padding counts (torch's count_include_pad)


def _node_params(node) -> dict:
    return {k: np.asarray(v, np.float64) for k, v in vars(node).items()
            if k not in ("input_type", "output_type", "metadata") and v is not None}


@dataclass
class NirRecord:
    """What a run recorded: ``data[node][var]`` arrays (T, *shape); ``var`` in out / v / i."""
    dt: float
    integration: str
    reset: str
    delay: str
    backend: str = "numpy"
    data: dict = field(default_factory=dict)
    kinds: dict = field(default_factory=dict)
    #: per node, what the backend ran it as (e.g. Lava's process classes); empty for NumPy
    built: dict = field(default_factory=dict)

    def spikes(self, node) -> np.ndarray:
        return self.data[node]["out"]


class NirProgram:
    """A NIR graph ready to step on NumPy (float64)."""

    def __init__(self, graph):
        graph = load(graph)
        self.graph = graph
        self.nodes, self.edges, self.inputs = flatten_graph(graph)
        if len(self.inputs) != 1:
            raise DataFormatError(f"the NIR graph needs exactly one top-level Input node, it has {len(self.inputs)}")
        unsupported = sorted({type(n).__name__ for n in self.nodes.values()} - set(SUPPORTED))
        if unsupported:
            raise DataFormatError(f"NIR primitive(s) {', '.join(unsupported)} not supported by the NumPy "
                                  f"executor (supported: {', '.join(SUPPORTED)})")
        self.kinds = {n: type(node).__name__ for n, node in self.nodes.items()}
        self.order, self.back_edges = order_and_back_edges(self.nodes, self.edges, self.inputs)
        self.sources = {n: [a for a, b in self.edges if b == n] for n in self.nodes}
        self.input_shape = tuple(int(s) for s in np.asarray(self.nodes[self.inputs[0]].input_type["input"]).reshape(-1))
        self.shapes = self._infer_shapes()

    def synapse_order(self):
        """(order, back edges) of ``delay="synapse"``: the graph without the edges leaving a synapse."""
        edges = [(a, b) for a, b in self.edges if self.kinds[a] not in SYNAPSES]
        return order_and_back_edges(self.nodes, edges, self.inputs)

    # -- shapes -------------------------------------------------------------------------------
    def _infer_shapes(self) -> dict:
        shapes = {}
        for name in self.order:
            kind, node = self.kinds[name], self.nodes[name]
            srcs = [shapes[a] for a in self.sources[name] if (a, name) not in self.back_edges]
            if kind == "Input":
                shapes[name] = self.input_shape if name == self.inputs[0] else (srcs[0] if srcs else None)
                continue
            if not srcs:
                raise DataFormatError(f"NIR node {name!r} ({kind}) has no input")
            if any(s != srcs[0] for s in srcs):
                raise DataFormatError(f"NIR node {name!r}: its inputs have different shapes {srcs}")
            shapes[name] = self._out_shape(name, kind, node, srcs[0])
        return shapes

    def _out_shape(self, name, kind, node, s):
        n = int(np.prod(s))
        if kind in ("Affine", "Linear"):
            w = np.asarray(node.weight)
            if w.ndim != 2 or w.shape[1] != n:
                raise DataFormatError(f"NIR node {name!r} ({kind}): weight {w.shape} does not take input {s}")
            return (w.shape[0],)
        if kind == "Flatten":
            start, end = int(node.start_dim), int(node.end_dim)
            dims = list(s)
            end = end % len(dims)
            return tuple(dims[:start] + [int(np.prod(dims[start:end + 1]))] + dims[end + 1:])
        if kind in ("Conv1d", "Conv2d"):
            k = 1 if kind == "Conv1d" else 2
            w = np.asarray(node.weight)
            if _pair(node.dilation, k) != (1,) * k or int(node.groups) != 1:
                raise DataFormatError(f"NIR node {name!r} ({kind}): dilation != 1 or groups != 1 is not supported")
            if len(s) != k + 1 or s[0] != w.shape[1]:
                raise DataFormatError(f"NIR node {name!r} ({kind}): weight {w.shape} does not take input {s}")
            pad, st = _conv_padding(node, w.shape[2:], k), _pair(node.stride, k)
            return (w.shape[0], *[(s[1 + d] + 2 * pad[d] - w.shape[2 + d]) // st[d] + 1 for d in range(k)])
        if kind in ("SumPool2d", "AvgPool2d"):
            kk, st, pad = _pair(node.kernel_size), _pair(node.stride), _pair(node.padding)
            return (s[0], *[(s[1 + d] + 2 * pad[d] - kk[d]) // st[d] + 1 for d in range(2)])
        if kind in ("Output", "Input"):
            return s
        shape = tuple(np.shape(getattr(node, {"Scale": "scale", "Delay": "delay", "Threshold": "threshold",
                                             "I": "r", "IF": "r"}.get(kind, "r"))))
        if int(np.prod(shape)) != n:
            raise DataFormatError(f"NIR node {name!r} ({kind}): parameter shape {shape} does not take input {s}")
        return shape

    # -- running --------------------------------------------------------------------------------
    def prepare(self, dt: float, integration: str = "exact"):
        """Per-node parameters with the per-step factors of this dt and integration."""
        dt = float(dt)
        if not (math.isfinite(dt) and dt > 0):
            raise ParameterError(f"dt must be a positive number, got {dt}")
        if integration not in sem.INTEGRATIONS:
            raise ParameterError(f"integration {integration!r}: choose {' or '.join(sem.INTEGRATIONS)}")
        params = {}
        for name, kind in self.kinds.items():
            node = self.nodes[name]
            if kind in sem.NEURONS:
                p = _node_params(node)
                shape = self.shapes[name]
                p = {k: np.broadcast_to(v, shape).reshape(shape).astype(np.float64) for k, v in p.items()}
                params[name] = sem.neuron_factors(NUMPY, kind, p, dt, integration)
            elif kind == "Delay":
                steps = np.asarray(node.delay, np.float64) / dt
                k = np.rint(steps)
                if np.any(k < 0) or np.any(np.abs(steps - k) > 1e-6 * np.maximum(1.0, k)):
                    raise ParameterError(f"NIR node {name!r} (Delay): delays {np.asarray(node.delay)} are not "
                                         f"non-negative multiples of dt = {dt}")
                params[name] = {"steps": k.astype(int).reshape(self.shapes[name])}
        return params

    def initial_state(self, name: str, params: dict):
        """The state of node ``name`` before step 0 (None for a node without state)."""
        kind = self.kinds[name]
        if kind in sem.NEURONS:
            return {v: np.zeros(self.shapes[name]) for v in sem.NEURONS[kind][1]}
        if kind == "Delay":
            steps = params[name]["steps"]
            return {"buf": np.zeros((int(steps.max()) + 1, *self.shapes[name])), "pos": 0}
        return None

    def step_node(self, name: str, u, params: dict, state, reset: str):
        """One step of node ``name`` on its summed input ``u`` (updates ``state``); returns its output."""
        return self._step(name, self.kinds[name], u, params.get(name), state, reset)

    def run(self, x, dt: float, integration: str = "exact", reset: str = "zero", delay: str = "none") -> NirRecord:
        """Step the graph on x (T, *input shape); returns the recorded outputs and states."""
        if reset not in sem.RESETS:
            raise ParameterError(f"reset {reset!r}: choose {' or '.join(sem.RESETS)}")
        if delay not in DELAYS:
            raise ParameterError(f"delay {delay!r}: choose {' or '.join(DELAYS)}")
        x = np.asarray(x, np.float64)
        if x.ndim < 1 or tuple(x.shape[1:]) != self.input_shape or x.shape[0] < 1:
            raise DataFormatError(f"input of shape {x.shape}: expected (T, {', '.join(map(str, self.input_shape))})")
        if not np.all(np.isfinite(x)):
            raise DataFormatError("input holds NaN or inf")
        params = self.prepare(dt, integration)
        T = x.shape[0]
        values = {n: np.zeros(self.shapes[n]) for n in self.nodes}
        order, pending = self.order, {}
        if delay == "synapse":
            order = self.synapse_order()[0]
            pending = {n: self._step(n, k, np.zeros(self.shapes[self.sources[n][0]]), None, None, reset)
                       for n, k in self.kinds.items() if k in SYNAPSES}
        states = {n: self.initial_state(n, params) for n in self.nodes}
        rec = NirRecord(dt=float(dt), integration=integration, reset=reset, delay=delay, kinds=dict(self.kinds))
        rec.data = {n: {v: np.zeros((T, *self.shapes[n])) for v in ("out", *sem.NEURONS.get(k, (None, ()))[1])}
                    for n, k in self.kinds.items()}
        for t in range(T):
            prev = {n: v.copy() for n, v in values.items()} if delay == "step" else values
            values.update(pending)           # delay="synapse": what each synapse computed at t - 1
            for name in order:
                kind = self.kinds[name]
                if name == self.inputs[0]:
                    values[name] = x[t]
                else:
                    srcs = self.sources[name]
                    src = prev if delay == "step" else values
                    u = sum(src[a].reshape(self.shapes[a]) for a in srcs) if srcs else 0.0
                    new = self._step(name, kind, u, params.get(name), states.get(name), reset)
                    if name in pending:
                        pending[name] = new
                    else:
                        values[name] = new
                rec.data[name]["out"][t] = values[name]
                for v in sem.NEURONS.get(kind, (None, ()))[1]:
                    rec.data[name][v][t] = states[name][v]
        return rec

    def _step(self, name, kind, u, p, state, reset):
        node = self.nodes[name]
        if kind in sem.NEURONS:
            u = np.asarray(u, np.float64).reshape(self.shapes[name])
            new = sem.NEURONS[kind][0](NUMPY, state, u, p, reset)
            for v in sem.NEURONS[kind][1]:
                state[v] = new[v]
            return np.asarray(new["out"], np.float64)
        if kind in ("Output", "Input"):
            return np.array(u, np.float64)
        if kind == "Affine":
            return np.asarray(node.weight, np.float64) @ u.reshape(-1) + np.asarray(node.bias, np.float64).reshape(-1)
        if kind == "Linear":
            return np.asarray(node.weight, np.float64) @ u.reshape(-1)
        if kind == "Scale":
            return np.asarray(node.scale, np.float64) * u
        if kind == "Flatten":
            return u.reshape(self.shapes[name])
        if kind in ("Conv1d", "Conv2d"):
            w = np.asarray(node.weight, np.float64)
            bias = np.broadcast_to(np.asarray(node.bias, np.float64).reshape(-1), (w.shape[0],))
            if kind == "Conv1d":
                pad, st = _conv_padding(node, w.shape[2:], 1), _pair(node.stride, 1)
                y = conv2d(u[None, :, None, :], w[:, :, None, :], (1, st[0]), (0, pad[0]))[0, :, 0, :]
                return y + bias[:, None]
            pad, st = _conv_padding(node, w.shape[2:], 2), _pair(node.stride)
            return conv2d(u[None], w, st, pad)[0] + bias[:, None, None]
        if kind in ("SumPool2d", "AvgPool2d"):
            return _pool(u, _pair(node.kernel_size), _pair(node.stride), _pair(node.padding), kind == "AvgPool2d")
        if kind == "Delay":
            buf, steps = state["buf"], p["steps"]
            pos = state["pos"]
            buf[pos] = u
            out = np.take_along_axis(buf, ((pos - steps) % buf.shape[0])[None], axis=0)[0]
            state["pos"] = (pos + 1) % buf.shape[0]
            return out
        raise DataFormatError(f"NIR primitive {kind} not supported")


# -- agreement ------------------------------------------------------------------------------------
def agreement(ref: NirRecord, other: NirRecord, nodes=None) -> dict:
    """Per node of both records: spike agreement (spiking nodes: number of (step, unit) entries that
    differ, first step that differs, spike counts) and the largest voltage / output difference."""
    out = {}
    for name in (nodes or ref.data):
        if name not in other.data:
            continue
        a, b = ref.data[name], other.data[name]
        kind = ref.kinds.get(name, "")
        row = {"kind": kind}
        if kind in sem.SPIKING:
            sa, sb = a["out"] > 0.5, np.asarray(b["out"]).reshape(a["out"].shape) > 0.5
            diff = np.argwhere(sa != sb)
            row.update(spikes_ref=int(sa.sum()), spikes_other=int(sb.sum()), spike_mismatches=int(len(diff)),
                       first_mismatch_step=int(diff[0][0]) if len(diff) else None)
        for var in ("v", "i", "out"):
            if var in a and var in b and not (var == "out" and kind in sem.SPIKING):
                d = np.abs(a[var] - np.asarray(b[var]).reshape(a[var].shape))
                row[f"max_abs_err_{var}"] = float(d.max()) if d.size else 0.0
                row[f"max_abs_{var}"] = float(np.abs(a[var]).max()) if d.size else 0.0
        out[name] = row
    return out


def synthetic_input(shape, steps: int = 100, rate: float = 0.2, seed: int = 0) -> np.ndarray:
    """A default input: Bernoulli spike trains (probability ``rate`` per unit and step), (T, *shape)."""
    rng = np.random.default_rng(seed)
    return (rng.random((int(steps), *shape)) < rate).astype(np.float64)
