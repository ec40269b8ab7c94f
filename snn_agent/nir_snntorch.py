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
