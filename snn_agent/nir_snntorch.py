"""A plain NIR graph on snnTorch, through snnTorch's own importer (docs/nir.md).

:func:`run_snntorch` builds the network with ``snntorch.import_nir.import_from_nir`` (nirtorch 2.6
executes it), steps it on an input (T, *input shape) with batch 1 and records, per node, what the
module sent and the neuron states, in NIR's units, as a :class:`conversion.nir_graph.NirRecord`.

The importer fixes the conventions: ``dt = 1e-4`` (hard-coded in snnTorch), forward Euler
(``beta = 1 - dt / tau``), reset to zero, no delay on feed-forward edges (nirtorch evaluates the
modules in topological order), the back edge of a cycle carries the previous step's value.  It
scales the input weight into the threshold (``threshold = v_threshold / w``, ``w = r dt / tau``
for LIF, ``w_in dt / tau_syn`` for CubaLIF), so snnTorch's ``mem`` is ``v / w``; the record holds
``v = mem w`` (and ``i = syn w``).

Graphs with a cycle: the importer rewrites ``LIF <-> W_rec`` into a subgraph (RLeaky /
RSynaptic) that nirtorch 2.6 cannot build (``'GraphModule' object has no attribute 'items'``); for
those the backend maps every node with the importer's own node mapping
(``_nir_to_snntorch_module``) and lets nirtorch execute the cycle (its ``*_prev_output`` state).

What the importer cannot express as NIR defines it is refused with a
:class:`mstpn_base.errors.DataFormatError` naming the primitive (:func:`check_supported`).
"""
from __future__ import annotations

import contextlib
import copy
import io

import numpy as np

from conversion.nir_graph import NirProgram, NirRecord
from mstpn_base.errors import BackendUnavailableError, DataFormatError, ParameterError

#: snnTorch's importer discretises at this step (snntorch/import_nir.py: dt = 1e-4)
DT = 1e-4
#: NIR primitives snnTorch's importer maps (Input / Output are pass-through)
SUPPORTED = ("Input", "Output", "Affine", "Linear", "Conv2d", "Flatten", "AvgPool2d", "LIF", "CubaLIF")
#: why the importer cannot run the other primitives as NIR defines them
REFUSED = {
    "IF": "snnTorch's importer maps IF to a leaky neuron (beta = 0.9, reset by subtraction), not NIR's IF",
}


def _imports():
    try:
        import nirtorch  # noqa: F401
        import torch
        from snntorch import import_nir
    except ImportError as exc:
        raise BackendUnavailableError(f"the snntorch NIR backend needs snntorch and nirtorch ({exc}); "
                                      "pip install nirtorch==2.6") from None
    return torch, import_nir


def _uniform(x) -> bool:
    return np.unique(np.asarray(x)).size == 1


def input_scale(kind: str, node, dt: float = DT) -> float:
    """The factor w the importer folds into the threshold (snnTorch mem = NIR v / w)."""
    if kind == "LIF":
        return float(np.unique(np.asarray(node.r) * dt / np.asarray(node.tau))[0])
    if kind == "CubaLIF":
        return float(np.unique(np.asarray(node.w_in) * (dt / np.asarray(node.tau_syn)))[0])
    return 1.0


def check_supported(program: NirProgram, dt: float = DT) -> None:
    """Raise DataFormatError naming each node the importer cannot run as NIR defines it."""
    problems: dict[str, list[str]] = {}
    for name, kind in program.kinds.items():
        node = program.nodes[name]
        why = []
        if kind in REFUSED:
            why.append(f"{kind}: {REFUSED[kind]}")
        elif kind not in SUPPORTED:
            why.append(f"{kind}: snnTorch's NIR importer has no mapping for {kind}")
        elif kind in ("LIF", "CubaLIF"):
            if not np.allclose(node.v_leak, 0.0):
                why.append(f"{kind} with v_leak != 0 (the importer refuses it)")
            if not np.allclose(node.v_reset, 0.0):
                why.append(f"{kind} with v_reset != 0 (the importer resets to zero)")
            w = (np.asarray(node.r) * dt / np.asarray(node.tau) if kind == "LIF"
                 else np.asarray(node.w_in) * dt / np.asarray(node.tau_syn))
            if not _uniform(w) or not _uniform(np.asarray(node.v_threshold) / w):
                why.append(f"{kind} with per-neuron input scale or threshold (the importer needs one value)")
            if kind == "CubaLIF" and not np.allclose(node.r, np.asarray(node.tau_mem) / dt):
                why.append("CubaLIF with r != tau_mem / dt (the importer refuses it)")
        elif kind == "Flatten" and len(program.shapes[name]) != 1:
            why.append("Flatten that is not a full flatten (torch.nn.Flatten with batch 1)")
        for w in why:
            problems.setdefault(w, []).append(name)
    if problems:
        raise DataFormatError("snntorch cannot run this NIR graph: " + "; ".join(
            f"{why} (node{'s' if len(names) > 1 else ''} {', '.join(names)})" for why, names in problems.items()))


def build(program: NirProgram):
    """The snnTorch network of a NIR graph: (module, how it was built)."""
    torch, import_nir = _imports()
    graph = copy.deepcopy(program.graph)
    with contextlib.redirect_stdout(io.StringIO()):    # the importer prints progress lines
        if not program.back_edges:
            return import_nir.import_from_nir(graph), "import_from_nir"
        import nir
        import nirtorch

        mapping = {t: (lambda n: import_nir._nir_to_snntorch_module(n, init_hidden=True))
                   for t in (nir.Affine, nir.Linear, nir.Conv2d, nir.Flatten, nir.AvgPool2d, nir.LIF, nir.CubaLIF)}
        return nirtorch.nir_to_torch(graph, mapping), "importer node mapping + nirtorch (cycle)"


def run_snntorch(graph, x, dt: float = DT, integration: str = "euler", reset: str = "zero",
                 delay: str = "none") -> NirRecord:
    """Run a NIR graph on snnTorch; the conventions are the importer's (module docstring)."""
    program = graph if isinstance(graph, NirProgram) else NirProgram(graph)
    if abs(float(dt) - DT) > 1e-12 or integration != "euler" or reset != "zero" or delay != "none":
        raise ParameterError(f"snntorch: its NIR importer fixes dt = {DT}, forward Euler, reset to zero, no "
                             f"feed-forward delay (asked: dt = {dt}, {integration}, {reset}, {delay})")
    check_supported(program, DT)
    torch, _ = _imports()
    net, how = build(program)
    x = np.asarray(x, np.float64)
    if tuple(x.shape[1:]) != program.input_shape:
        raise DataFormatError(f"input of shape {x.shape}: expected (T, {', '.join(map(str, program.input_shape))})")
    T = x.shape[0]
    modules = dict(net.named_modules())
    sanitized = {name: name.replace(".", "_") for name in program.nodes}
    rec = NirRecord(dt=DT, integration="euler", reset="zero", delay="none", backend=f"snntorch ({how})",
                    kinds=dict(program.kinds))
    rec.data = {n: {"out": np.zeros((T, *program.shapes[n]))} for n in program.nodes}
    step_out = {}

    def hook(name):
        def fn(module, inputs, output):
            step_out[name] = output[0] if isinstance(output, tuple) else output
        return fn

    for name, mod_name in sanitized.items():
        if mod_name in modules and mod_name:
            modules[mod_name].register_forward_hook(hook(name))
            kind = program.kinds[name]
            if kind in ("LIF", "CubaLIF"):
                for var in (("v",) if kind == "LIF" else ("i", "v")):
                    rec.data[name][var] = np.zeros((T, *program.shapes[name]))
    scale = {n: input_scale(k, program.nodes[n]) for n, k in program.kinds.items()}
    state = None
    in_name = program.inputs[0]
    with torch.no_grad():
        for t in range(T):
            step_out.clear()
            xt = torch.tensor(x[t][None], dtype=torch.float32)
            out, state = net(xt) if state is None else net(xt, state)
            for name in program.nodes:
                kind, shape = program.kinds[name], program.shapes[name]
                if name == in_name:
                    val = x[t]
                elif name in step_out:
                    val = step_out[name].detach().double().numpy().reshape(shape)
                else:
                    continue
                rec.data[name]["out"][t] = val
                if kind in ("LIF", "CubaLIF"):
                    mod = modules[sanitized[name]]
                    rec.data[name]["v"][t] = mod.mem.detach().double().numpy().reshape(shape) * scale[name]
                    if kind == "CubaLIF":
                        rec.data[name]["i"][t] = mod.syn.detach().double().numpy().reshape(shape) * scale[name]
            outputs = [n for n, k in program.kinds.items() if k == "Output"]
            if len(outputs) == 1:
                rec.data[outputs[0]]["out"][t] = out.detach().double().numpy().reshape(program.shapes[outputs[0]])
    return rec


# -- the standard part of one of the project's network files ---------------------------------------------
def _exact_identity(node) -> bool:
    """A Scale(ones) that means the identity: a plain one, or the stand-in of a SigmaDelta with identity
    activation and threshold 0 (then the stand-in is exact)."""
    import nir

    if not isinstance(node, nir.Scale) or not np.all(np.asarray(node.scale) == 1):
        return False
    meta = node.metadata or {}
    kind = meta.get("mstpn_type")
    if kind is None:
        return True
    kind = kind.decode() if isinstance(kind, bytes) else str(kind)
    act = meta.get("activation", "")
    act = act.decode() if isinstance(act, bytes) else str(act)
    return kind == "SigmaDelta" and act == "identity" and np.all(np.asarray(meta.get("threshold", 1.0)) == 0)


def standard_part(graph):
    """The part of a NIR graph (e.g. ``nir.read`` of a file written by ``mstpn convert``) that
    snnTorch's importer maps and that means what the project's network computes.

    From the Input along the chain of single-source nodes: identities (``Scale`` of ones: the
    stand-in of an identity SigmaDelta at threshold 0) are dropped; any other ``Scale`` is folded
    into the next Conv2d / Affine / Linear (a Conv2d needs it constant within each input channel);
    Conv2d, Affine, Linear, Flatten, AvgPool2d, LIF and CubaLIF are kept.  The part ends before the
    first node that is none of these, carries the project's extension (a stand-in that is not exact:
    a ReLU / tanh SigmaDelta, RateIF, PlasticSTPN), has several inputs or is on a cycle; an Output
    named ``<that node>_input`` then holds the value that node receives (for the Pong network: the
    pre-activation of ``conv1``).  Returns a plain ``nir.NIRGraph``."""
    import nir

    views = {n for n, node in graph.nodes.items() if "mstpn_view" in (getattr(node, "metadata", None) or {})}
    edges = [(a, b) for a, b in graph.edges if a not in views and b not in views]
    srcs = {n: [a for a, b in edges if b == n] for n in graph.nodes}
    succ = {n: [b for a, b in edges if a == n] for n in graph.nodes}
    inputs = [n for n, node in graph.nodes.items() if isinstance(node, nir.Input)]
    if len(inputs) != 1:
        raise DataFormatError(f"the NIR graph needs exactly one Input node, it has {len(inputs)}")
    cur = last = inputs[0]
    kept, new_edges, pending, seen, end = {last: graph.nodes[last]}, [], None, {last}, None
    keep_kinds = (nir.Conv2d, nir.Affine, nir.Linear, nir.Flatten, nir.AvgPool2d, nir.LIF, nir.CubaLIF)
    while end is None:
        nxt = succ[cur]
        if len(nxt) != 1 or srcs[nxt[0]] != [cur] or nxt[0] in seen:
            end = nxt[0] if len(nxt) == 1 else None
            break
        b = nxt[0]
        node = graph.nodes[b]
        seen.add(b)
        meta = getattr(node, "metadata", None) or {}
        if _exact_identity(node):
            cur = b
            continue
        if "mstpn_type" in meta or isinstance(node, nir.Output) or not isinstance(node, (nir.Scale,) + keep_kinds):
            end = b
            break
        if isinstance(node, nir.Scale):
            s = np.asarray(node.scale, np.float64)
            pending = s if pending is None else pending * s
            cur = b
            continue
        node = copy.deepcopy(node)
        if pending is not None:
            if isinstance(node, (nir.Affine, nir.Linear)):
                node.weight = np.asarray(node.weight) * pending.reshape(1, -1)
            elif isinstance(node, nir.Conv2d) and pending.ndim == 3 and np.all(
                    pending == pending.reshape(pending.shape[0], -1)[:, :1, None]):
                node.weight = np.asarray(node.weight) * pending[:, 0, 0].reshape(1, -1, 1, 1)
            else:
                end = b
                break
            pending = None
        kept[b] = node
        new_edges.append((last, b))
        last = cur = b
    out = f"{end}_input" if end is not None else "output"
    part = nir.NIRGraph(nodes=dict(kept, **{out: nir.Output(output_type={"output": np.array([1])})}),
                        edges=new_edges + [(last, out)], type_check=False)
    shape = NirProgram(part).shapes[last]
    part.nodes[out] = nir.Output(output_type={"output": np.array(shape)})
    return part


def import_standard_part(graph):
    """snnTorch's ``import_from_nir`` on :func:`standard_part` of ``graph`` (a path or a NIR graph):
    (module, the part)."""
    import nir

    _, import_nir = _imports()
    if not isinstance(graph, nir.NIRGraph):
        graph = nir.read(str(graph))
    part = standard_part(graph)
    check_supported(NirProgram(part))
    with contextlib.redirect_stdout(io.StringIO()):
        return import_nir.import_from_nir(copy.deepcopy(part)), part
