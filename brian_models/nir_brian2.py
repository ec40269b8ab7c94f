"""A plain NIR graph on Brian2: one NeuronGroup per NIR node, one Synapses per edge (docs/nir.md).

Every node is a ``NeuronGroup`` of its size with a variable ``out`` (what it sends) and one
``in_k`` per incoming edge; every edge is a ``Synapses`` object whose summed variable
``in_k_post = w * out_pre`` carries the source's output.  Into a linear primitive (Affine, Linear,
Scale, Flatten, Conv1d, Conv2d, SumPool2d, AvgPool2d) the synapses hold that primitive's matrix
(its NumPy definition applied to the unit vectors; a node adds its bias, ``out = sum_k in_k + b``);
into a neuron or an Output node they are one-to-one with w = 1.  A neuron's update is
``run_regularly`` code generated from :mod:`conversion.nir_semantics` with
:class:`brian_models.codegen.Brian2Ops` (no equation is retyped here), its per-step factors
(a, g) are per-neuron parameters computed by the same definitions.

Schedule: all in the ``groups`` slot, node k of the topological order at order 2k + 2 and its
summed variables (Brian2 puts them at the target's order - 1) just before it: no delay on
feed-forward edges, the back edge of a cycle reads the source's previous step, as in the NumPy
executor with ``delay="none"``.  Any dt, ``integration`` and ``reset`` of the NumPy executor.
"""
from __future__ import annotations

import numpy as np

from brian_models import require_brian2
from brian_models.codegen import Brian2Ops, Sym
from conversion import nir_semantics as sem
from conversion.nir_graph import NirProgram, NirRecord
from mstpn_base.errors import DataFormatError, ParameterError

LINEAR = ("Affine", "Linear", "Scale", "Flatten", "Conv1d", "Conv2d", "SumPool2d", "AvgPool2d")
SUPPORTED = ("Input", "Output") + LINEAR + tuple(sem.NEURONS)
#: state names that Brian2 reserves ("i" is the neuron index)
_B2_NAME = {"i": "isyn"}


def _b2_name(var: str) -> str:
    return _B2_NAME.get(var, var)


def linear_map(program: NirProgram, name: str):
    """(M, b): the matrix (out, in) and offset of a linear node, from its NumPy definition."""
    kind, src_shape = program.kinds[name], None
    for a in program.sources[name]:
        src_shape = program.shapes[a]
    n_in = int(np.prod(src_shape))
    f = lambda u: np.asarray(program._step(name, kind, u.reshape(src_shape), None, None, "zero")).reshape(-1)  # noqa: E731
    b = f(np.zeros(n_in))
    M = np.stack([f(e) - b for e in np.eye(n_in)], axis=1)
    return M, b


def update_code(kind: str, n_inputs: int, reset: str) -> tuple[str, list[str]]:
    """A neuron kind's per-step Brian2 code (from nir_semantics) and its parameter names."""
    step, state_vars, _ = sem.NEURONS[kind]
    ops = Brian2Ops()
    current = ops.let("cur", Sym(" + ".join(f"in_{k}" for k in range(n_inputs)) or "0.0"))
    names = []

    class Params(dict):
        def __missing__(self, key):
            names.append(key)
            self[key] = Sym(f"p_{key}")
            return self[key]

    new = step(ops, {v: Sym(_b2_name(v)) for v in state_vars}, current, Params(), reset)
    assign = {_b2_name(v): new[v] for v in state_vars}
    assign["out"] = new["out"]
    return ops.code(**assign), names


def run_brian2(graph, x, dt: float, integration: str = "exact", reset: str = "zero", delay: str = "none",
               target: str = "numpy") -> NirRecord:
    """Run a NIR graph on Brian2 (``target`` numpy or cython) and record every node."""
    program = graph if isinstance(graph, NirProgram) else NirProgram(graph)
    if delay != "none":
        raise ParameterError("brian2: the NIR backend evaluates feed-forward edges without delay (delay='none')")
    bad = sorted({k for k in program.kinds.values() if k not in SUPPORTED})
    if bad:
        raise DataFormatError(f"brian2 cannot run NIR primitive(s) {', '.join(bad)} (supported: {', '.join(SUPPORTED)})")
    params = program.prepare(dt, integration)
    x = np.asarray(x, np.float64)
    if tuple(x.shape[1:]) != program.input_shape:
        raise DataFormatError(f"input of shape {x.shape}: expected (T, {', '.join(map(str, program.input_shape))})")
    b2 = require_brian2()
    b2.prefs.codegen.target = target
    T = x.shape[0]
    clock = b2.Clock(dt=float(dt) * b2.second, name="nir_clock")
    stim = b2.TimedArray(x.reshape(T, -1), dt=float(dt) * b2.second, name="nir_stim")
    groups, objs, monitors = {}, [], {}
    n_in = {n: len(program.sources[n]) for n in program.nodes}
    for k, name in enumerate(program.order):
        kind, size = program.kinds[name], int(np.prod(program.shapes[name]))
        order = 2 * k + 2
        ins = [f"in_{j} : 1" for j in range(n_in[name])]
        if name == program.inputs[0]:
            g = b2.NeuronGroup(size, "out : 1", clock=clock, order=order, name=f"nir_{k}")
            g.run_regularly("out = nir_stim(t, i)", when="groups", order=order)
        elif kind in sem.NEURONS:
            code, pnames = update_code(kind, n_in[name], reset)
            eqs = ["out : 1"] + ins + [f"{_b2_name(v)} : 1" for v in sem.NEURONS[kind][1]] + [f"p_{p} : 1" for p in pnames]
            g = b2.NeuronGroup(size, "\n".join(eqs), clock=clock, order=order, name=f"nir_{k}")
            for p in pnames:
                setattr(g, f"p_{p}", np.broadcast_to(np.asarray(params[name][p], np.float64), program.shapes[name]).reshape(-1))
            g.run_regularly(code, when="groups", order=order)
        else:
            bias = linear_map(program, name)[1] if kind in LINEAR else np.zeros(size)
            g = b2.NeuronGroup(size, "\n".join(["out : 1", "bias : 1"] + ins), clock=clock, order=order, name=f"nir_{k}")
            g.bias = bias
            total = " + ".join(f"in_{j}" for j in range(n_in[name])) or "0.0"
            g.run_regularly(f"out = {total} + bias", when="groups", order=order)
        groups[name] = g
        objs.append(g)
        variables = ["out"] + [_b2_name(v) for v in sem.NEURONS.get(kind, (None, ()))[1]]
        monitors[name] = b2.StateMonitor(g, variables, record=True, when="end", clock=clock, name=f"nir_mon_{k}")
        objs.append(monitors[name])
    for name in program.order:
        kind = program.kinds[name]
        M = linear_map(program, name)[0] if kind in LINEAR else None
        for j, src in enumerate(program.sources[name]):
            syn = b2.Synapses(groups[src], groups[name], f"w : 1\nin_{j}_post = w * out_pre : 1 (summed)",
                              clock=clock, name=f"nir_syn_{groups[name].name}_{j}")
            if M is None:
                syn.connect(j="i")
                syn.w = 1.0
            else:
                post, pre = np.nonzero(M)
                if len(pre):
                    syn.connect(i=pre, j=post)
                    syn.w = M[post, pre]
            objs.append(syn)
    net = b2.Network(*objs)
    net.run(T * float(dt) * b2.second, namespace={"nir_stim": stim})
    rec = NirRecord(dt=float(dt), integration=integration, reset=reset, delay="none", backend=f"brian2 ({target})",
                    kinds=dict(program.kinds))
    for name, mon in monitors.items():
        shape = program.shapes[name]
        back = {_b2_name(v): v for v in ("out", "v", "i")}
        rec.data[name] = {back[v]: np.asarray(getattr(mon, v)).T.reshape((T, *shape)) for v in mon.record_variables}
    return rec

