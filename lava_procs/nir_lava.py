"""A plain NIR graph on Lava, built from Lava's own processes (docs/nir.md).

:func:`run_lava` builds the graph (:func:`build`), runs it with ``Loihi2SimCfg`` and the
``floating_pt`` models (:func:`lava_procs.run_config`) for ``T`` steps and returns a
:class:`conversion.nir_graph.NirRecord`, in NIR's units, to compare with the NumPy reference.

Processes:

* ``Input``: ``lava.proc.io.source.RingBuffer`` holding the input (T, *shape); ``Output``:
  ``lava.proc.io.sink.RingBuffer``; every recorded spike train is also a sink, every recorded
  state (``v``, ``u``) a ``lava.proc.monitor`` Monitor probe.
* ``Affine`` / ``Linear``: ``lava.proc.dense.process.Dense`` (graded messages); ``Conv2d`` /
  ``Conv1d``: ``lava.proc.conv.process.Conv`` (Lava's (X, Y, C) layout through transpose /
  reshape ports; a 1-d convolution is an (L, 1, C) one).  One synapse process per outgoing edge
  (each target may scale the weights, below).  The bias: into the target neuron's ``bias_mant``
  where the neuron has no synaptic current (LIF, IF, LI, I), else a constant source
  (``lava.proc.io.source.RingBuffer``) into the target's input.
* ``LIF``, ``CubaLIF``, ``IF``, ``LI``, ``CubaLI``, ``I``: ``lava.proc.lif.process.LIF``, whose
  floating-point model is ``u <- u (1 - du) + a_in; v <- v (1 - dv) + u + bias_mant; s = v > vth;
  v <- 0 where s``.  With the per-step factors (a, g) of :func:`conversion.nir_semantics.decay`
  (``integration`` exact or euler) and an input gain ``G`` (LIF / LI: ``g r``; IF / I: ``dt r``;
  CubaLIF / CubaLI: ``g_mem r g_syn w_in``), Lava's variables are NIR's in scaled units:
  ``v_lava = (v - v_reset) / c``, ``u_lava = i g_mem r / c`` (cuba) and ``du = 1 - a_syn`` (cuba,
  else 1), ``dv = 1 - a`` (LIF, LI; 0 for IF, I), ``vth = (v_threshold - v_reset) / c``,
  ``bias_mant = dv (v_leak - v_reset) / c``; the input enters scaled by ``G / c``.  ``c = G``
  where that makes ``vth`` one number (the input is then not scaled), else ``c = v_threshold -
  v_reset`` (``vth = 1``) and the scale ``G / c`` is folded into the incoming synapses' weights.
  The non-spiking kinds use ``vth = inf``; Lava's LIF sends spikes only, so LI / CubaLI / I run
  on Lava's LIF where their voltage goes to Output nodes alone (the Output records the probed
  voltage).
* Everything Lava has no process for (Threshold, Scale, Flatten, SumPool2d, AvgPool2d, Delay)
  and a neuron Lava's LIF cannot express (per-neuron time constants, a threshold that is not one
  number in any of the units above, a non-spiking neuron read by another node):
  :class:`NirNode`, a small Lava process whose floating_pt model steps the node with
  :meth:`conversion.nir_graph.NirProgram.step_node` (the equations of
  :mod:`conversion.nir_semantics`, not retyped).

Conventions (fixed by Lava): any ``dt``; ``integration`` exact or euler; reset to ``v_reset``
only (``reset="zero"``); ``delay="synapse"`` of the NumPy executor: a Dense / Conv sends in step
t what it received in step t - 1 (Lava's synapse convention), every other process receives and
sends in the same step.  A cycle must hold a synapse node (Lava deadlocks otherwise).
Arithmetic: float64 in every model (Lava's ``LavaPyType(..., float)``).
"""
from __future__ import annotations

import numpy as np

import lava_procs
from conversion import nir_semantics as sem
from conversion.nir_graph import SYNAPSES, NirProgram, NirRecord
from lava_procs.layout import conv_kernel
from lava_procs.lifecycle import LavaRuntime
from mstpn_base.errors import DataFormatError, ParameterError

#: NIR neuron kinds that can run on Lava's LIF process
LIF_KINDS = ("LIF", "CubaLIF", "IF", "LI", "CubaLI", "I")
#: kinds the project's NirNode process runs (Lava has no process for them)
NODE_KINDS = ("Threshold", "Scale", "Flatten", "SumPool2d", "AvgPool2d", "Delay")
SUPPORTED = ("Input", "Output") + SYNAPSES + LIF_KINDS + NODE_KINDS
#: the conventions this backend runs in (besides dt and integration)
RESET, DELAY = "zero", "synapse"


# -- the project's process for what Lava lacks -------------------------------------------------------
def _node_process():
    """The NirNode process and its floating_pt model (defined once lava is importable)."""
    if "NirNode" in globals():
        return globals()["NirNode"], globals()["PyNirNodeFloat"]
    from lava.magma.core.decorator import implements, requires, tag
    from lava.magma.core.model.py.model import PyLoihiProcessModel
    from lava.magma.core.model.py.ports import PyInPort, PyOutPort
    from lava.magma.core.model.py.type import LavaPyType
    from lava.magma.core.process.ports.ports import InPort, OutPort
    from lava.magma.core.process.process import AbstractProcess
    from lava.magma.core.process.variable import Var
    from lava.magma.core.resources import CPU
    from lava.magma.core.sync.protocols.loihi_protocol import LoihiProtocol

    class NirNode(AbstractProcess):
        """One NIR node stepped by the NumPy definition: ``a_in`` (the summed input, shaped as its
        sources), ``s_out`` (what the node sends), ``v`` / ``i`` (the neuron's states, for a probe)."""

        def __init__(self, *, program, node, params, reset, name=None):
            shape = program.shapes[node]
            src_shape = program.shapes[program.sources[node][0]]
            super().__init__(program=program, node=node, params=params, reset=reset, name=name)
            self.a_in = InPort(shape=src_shape)
            self.s_out = OutPort(shape=shape)
            self.v = Var(shape=shape, init=0.0)
            self.i = Var(shape=shape, init=0.0)

    @implements(proc=NirNode, protocol=LoihiProtocol)
    @requires(CPU)
    @tag("floating_pt")
    class PyNirNodeFloat(PyLoihiProcessModel):
        a_in: PyInPort = LavaPyType(PyInPort.VEC_DENSE, float)
        s_out: PyOutPort = LavaPyType(PyOutPort.VEC_DENSE, float)
        v: np.ndarray = LavaPyType(np.ndarray, float)
        i: np.ndarray = LavaPyType(np.ndarray, float)

        def __init__(self, proc_params):
            super().__init__(proc_params)
            self.program, self.node = proc_params["program"], proc_params["node"]
            self.params, self.reset = proc_params["params"], proc_params["reset"]
            self.state = self.program.initial_state(self.node, self.params)

        def run_spk(self):
            u = np.asarray(self.a_in.recv(), np.float64)
            out = self.program.step_node(self.node, u, self.params, self.state, self.reset)
            for var in ("v", "i"):
                if self.state is not None and var in self.state:
                    getattr(self, var)[:] = self.state[var]
            self.s_out.send(np.asarray(out, np.float64))

    NirNode.__module__ = PyNirNodeFloat.__module__ = __name__
    globals().update(NirNode=NirNode, PyNirNodeFloat=PyNirNodeFloat)
    return NirNode, PyNirNodeFloat


# -- parameters of Lava's LIF ---------------------------------------------------------------------------
def _one(a) -> float | None:
    a = np.asarray(a, np.float64).reshape(-1)
    return float(a[0]) if a.size and np.all(a == a[0]) else None


def lif_parameters(kind: str, p: dict):
    """Lava LIF parameters of a NIR neuron with prepared parameters ``p`` (NirProgram.prepare), or
    (None, reason) where Lava's LIF cannot express it.  Returns a dict: du, dv, vth, c (per neuron),
    gain (per-neuron input scale G / c, 1 where c = G), bias (per neuron), v0, offset (v_reset),
    u_to_i (per neuron, cuba kinds: i = u_lava * u_to_i)."""
    ones = np.ones_like(np.asarray(p["r"], np.float64))
    if kind in ("LIF", "LI"):
        du, dv, G = 1.0, _one(1.0 - p["a"]), p["g"] * p["r"]
        if dv is None:
            return None, f"{kind} with per-neuron tau (Lava's LIF has one dv per process)"
    elif kind in ("IF", "I"):
        du, dv, G = 1.0, 0.0, p["dt"] * p["r"]
    else:
        du, dv = _one(1.0 - p["a_syn"]), _one(1.0 - p["a_mem"])
        if du is None or dv is None:
            return None, f"{kind} with per-neuron tau_syn / tau_mem (Lava's LIF has one du, dv per process)"
        G = p["g_mem"] * p["r"] * p["g_syn"] * p["w_in"]
    G = np.asarray(G, np.float64) * ones
    spiking = kind in sem.SPIKING
    offset = np.asarray(p["v_reset"], np.float64) * ones if spiking else 0.0 * ones
    leak = (np.asarray(p.get("v_leak", 0.0), np.float64) * ones - offset) if kind not in ("IF", "I") else 0.0 * ones
    if spiking:
        theta = np.asarray(p["v_threshold"], np.float64) * ones - offset
        ratio = theta / np.where(G == 0, np.nan, G)
        if np.all(G != 0) and _one(ratio) is not None:
            c, vth, gain = G, _one(ratio), None
        elif np.all(theta > 0):
            c, vth, gain = theta, 1.0, G / theta
        else:
            return None, f"{kind}: a threshold that is not one number in Lava's LIF units"
    else:
        vth = float("inf")
        if np.all(G != 0) and _one(G) is not None:
            c, gain = G, None
        else:
            c, gain = ones, G
    out = {"du": du, "dv": dv, "vth": vth, "c": c, "gain": gain, "bias": dv * leak / c, "v0": -offset / c,
           "offset": offset}
    if kind in ("CubaLIF", "CubaLI"):
        k = np.asarray(p["g_mem"] * p["r"], np.float64) * ones
        if np.any(k == 0):
            return None, f"{kind} with r = 0 (its current cannot be read back from Lava's u)"
        out["u_to_i"] = c / k
    return out, ""


# -- building ---------------------------------------------------------------------------------------------
class LavaNirNet:
    """A NIR graph as connected Lava processes: ``procs[node]`` the Lava processes of each NIR node
    (one per outgoing edge for a synapse), ``how[node]`` what it runs as."""

    def __init__(self, program: NirProgram, x, dt: float, integration: str):
        lava_procs.require_lava()
        from lava.proc.io.sink import RingBuffer as Sink
        from lava.proc.io.source import RingBuffer as Source
        from lava.proc.lif.process import LIF
        from lava.proc.monitor.process import Monitor

        NirNode, _ = _node_process()
        self.program, p = program, program
        bad = sorted({k for k in p.kinds.values() if k not in SUPPORTED})
        if bad:
            raise DataFormatError(f"lava cannot run NIR primitive(s) {', '.join(bad)} (supported: {', '.join(SUPPORTED)})")
        if p.synapse_order()[1]:
            cyc = ", ".join(f"{a} -> {b}" for a, b in sorted(p.synapse_order()[1]))
            raise DataFormatError(f"lava: a cycle without a synapse node (Affine, Linear, Conv) ({cyc}): Lava's "
                                  "processes would wait for each other")
        self.params = p.prepare(dt, integration)
        x = np.asarray(x, np.float64)
        if x.ndim < 1 or tuple(x.shape[1:]) != p.input_shape or x.shape[0] < 1:
            raise DataFormatError(f"input of shape {x.shape}: expected (T, {', '.join(map(str, p.input_shape))})")
        self.T = T = x.shape[0]
        self.procs, self.how, self.lif, self.sinks, self.monitors = {}, {}, {}, {}, {}
        succ = {n: [b for a, b in p.edges if a == n] for n in p.nodes}
        # 1. which neurons run on Lava's LIF
        for name, kind in p.kinds.items():
            if kind not in LIF_KINDS:
                continue
            q, why = lif_parameters(kind, self.params[name])
            if q is not None and q["gain"] is not None and not all(p.kinds[a] in SYNAPSES for a in p.sources[name]):
                q, why = None, "an input scale that only a synapse's weights can carry"
            if q is not None and kind not in sem.SPIKING and not all(
                    p.kinds[b] == "Output" and p.sources[b] == [name] for b in succ[name]):
                q, why = None, "its voltage is read by another node (Lava's LIF sends spikes only)"
            if q is not None:
                self.lif[name] = q
            else:
                self.how[name] = f"NirNode ({why})"
        # 2. one process per non-synapse node
        for name in p.order:
            kind, shape = p.kinds[name], p.shapes[name]
            if name == p.inputs[0]:
                proc = Source(data=np.moveaxis(x, 0, -1).copy())
                self.how[name] = "lava.proc.io.source.RingBuffer"
            elif kind == "Output":
                if all(s in self.lif and p.kinds[s] not in sem.SPIKING for s in p.sources[name]):
                    self.how[name] = "the voltage probe of its Lava LIF source"
                    continue
                proc = Sink(shape=shape, buffer=T)
                self.sinks[name] = proc
                self.how[name] = "lava.proc.io.sink.RingBuffer"
            elif kind in SYNAPSES:
                continue
            elif name in self.lif:
                q = self.lif[name]
                proc = LIF(shape=shape, du=q["du"], dv=q["dv"], vth=q["vth"], bias_mant=q["bias"].copy(),
                           v=q["v0"].reshape(shape).copy(), u=np.zeros(shape), name=f"nir_{name}")
                self.how[name] = "lava.proc.lif.process.LIF"
            else:
                proc = NirNode(program=p, node=name, params=self.params, reset=RESET, name=f"nir_{name}")
                self.how.setdefault(name, "NirNode (no Lava process for it)")
            self.procs[name] = [proc]
        # 3. the edges into each process, through synapse processes
        for name in p.order:
            if name in self.procs and name != p.inputs[0] and p.kinds[name] not in SYNAPSES:
                self._wire_into(name, self._in_port(name), self.lif.get(name, {}).get("gain"))
        # 4. recording: a sink on what each process sends, a Monitor probe per neuron state
        for name, procs in self.procs.items():
            kind = p.kinds[name]
            if name == p.inputs[0] or kind == "Output" or kind in SYNAPSES:
                continue
            if not (name in self.lif and kind not in sem.SPIKING):   # Lava's LIF sends spikes only
                sink = Sink(shape=p.shapes[name], buffer=T)
                procs[0].s_out.connect(sink.a_in)
                self.sinks[name] = sink
            for var in sem.NEURONS.get(kind, (None, ()))[1]:
                target = getattr(procs[0], "u" if (var == "i" and name in self.lif) else var)
                mon = Monitor()
                mon.probe(target, T)
                self.monitors[(name, var)] = (mon, target)
        self.root = self.procs[p.inputs[0]][0]

    def _in_port(self, name):
        proc = self.procs[name][0]
        return proc.a_in

    def _out_port(self, name):
        return self.procs[name][0].s_out

    def _wire_into(self, name, port, gain, depth=0, view=None):
        """Connect the sources of NIR node ``name`` into the Lava in-port ``port``, scaled by ``gain``
        (per element of the input, or None); ``view`` maps an out-port shaped as ``name``'s input
        to ``port``'s shape (Lava's virtual ports; default: reshape)."""
        from lava.proc.io.source import RingBuffer as Source

        p = self.program
        if depth > len(p.nodes):
            raise DataFormatError("lava: a cycle made of synapse nodes only cannot be built")
        in_shape = p.shapes[p.sources[name][0]]

        def connect(out):
            if tuple(out.shape) != tuple(in_shape):
                out = out.reshape(tuple(in_shape))
            _connect(view(out) if view else out, port)

        for src in p.sources[name]:
            if p.kinds[src] not in SYNAPSES:
                connect(self._out_port(src))
                continue
            syn, bias = self._synapse(src, gain, depth)
            connect(syn)
            if np.any(bias != 0):
                q = self.lif.get(name)
                if q is not None and q["du"] == 1.0:
                    self.procs[name][0].bias_mant.init = q["bias"] + bias.reshape(q["bias"].shape)
                    q["bias"] = q["bias"] + bias.reshape(q["bias"].shape)
                else:
                    const = Source(data=bias.reshape(*p.shapes[src], 1).copy())
                    self.procs.setdefault(src, []).append(const)
                    connect(const.s_out)

    def _synapse(self, name, gain, depth):
        """A Lava Dense / Conv for synapse node ``name`` towards one target with input scale ``gain``;
        returns (its output port shaped as the NIR node's output, the scaled bias)."""
        from lava.proc.conv.process import Conv
        from lava.proc.dense.process import Dense

        p = self.program
        node, kind, shape = p.nodes[name], p.kinds[name], p.shapes[name]
        src_shape = p.shapes[p.sources[name][0]]
        g = np.ones(shape) if gain is None else np.broadcast_to(np.asarray(gain, np.float64).reshape(-1), (int(np.prod(shape)),)).reshape(shape)
        zero = np.zeros(src_shape)
        bias = np.asarray(p.step_node(name, zero, self.params, None, RESET), np.float64).reshape(shape) * g
        if kind in ("Affine", "Linear"):
            w = np.asarray(node.weight, np.float64) * g.reshape(-1, 1)
            proc = Dense(weights=w, num_message_bits=24, name=f"nir_{name}_{len(self.procs.get(name, []))}")
            self._wire_into(name, proc.s_in, None, depth + 1)
            out = proc.a_out if tuple(shape) == (w.shape[0],) else proc.a_out.reshape(shape)
        else:
            from conversion.nir_graph import _conv_padding, _pair

            k = 2 if kind == "Conv2d" else 1
            w = np.asarray(node.weight, np.float64)
            gc = g.reshape(g.shape[0], -1)
            if not np.all(gc == gc[:, :1]):
                raise DataFormatError(f"lava: {kind} {name!r} into a neuron whose input scale varies within a channel")
            pad, st = _conv_padding(node, w.shape[2:], k), _pair(node.stride, k)
            if k == 1:   # (C, L) as Lava's (X = L, Y = 1, C)
                w, pad, st = w[:, :, None, :], (0, pad[0]), (1, st[0])
            # NIR / torch: correlation, (C_out, C_in, H, W); Lava: convolution, (C_out, W, H, C_in)
            wl = conv_kernel(w * gc[:, 0].reshape(-1, 1, 1, 1))
            in3 = (src_shape[0], 1, src_shape[1]) if k == 1 else tuple(src_shape)
            proc = Conv(weight=wl, input_shape=(in3[2], in3[1], in3[0]), padding=(pad[1], pad[0]),
                        stride=(st[1], st[0]), num_message_bits=24, name=f"nir_{name}_{len(self.procs.get(name, []))}")
            # a (C, H, W) out-port as Lava's (X, Y, C); a 1-d one (C, L) as (L, 1, C)
            self._wire_into(name, proc.s_in, None, depth + 1,
                            view=lambda o: (o.reshape(in3) if k == 1 else o).transpose([2, 1, 0]))
            out = proc.a_out.transpose([2, 1, 0])
            if k == 1:
                out = out.reshape(shape)
        self.procs.setdefault(name, []).append(proc)
        self.how[name] = f"lava.proc.{'dense.process.Dense' if kind in ('Affine', 'Linear') else 'conv.process.Conv'}"
        return out, bias

    # -- running -----------------------------------------------------------------------------------------
    def run(self) -> NirRecord:
        from lava.magma.core.run_conditions import RunSteps

        p, T = self.program, self.T
        runtime = LavaRuntime(self.root)
        rec = NirRecord(dt=self.dt, integration=self.integration, reset=RESET, delay=DELAY,
                        backend="lava (Loihi2SimCfg, floating_pt)", kinds=dict(p.kinds), built=dict(self.how))
        try:
            with runtime.host_calls():
                runtime.start(lava_procs.run_config(fixed_point=False), RunSteps(num_steps=T))
                sinks = {n: np.moveaxis(np.asarray(s.data.get(), np.float64), -1, 0)
                         for n, s in self.sinks.items()}
                mons = {}
                for (name, var), (mon, target) in self.monitors.items():
                    data = mon.get_data()[target.process.name][target.name]
                    mons[(name, var)] = np.asarray(data, np.float64).reshape((T, *p.shapes[name]))
        finally:
            runtime.stop()
        for name, kind in p.kinds.items():
            d = {}
            if name == p.inputs[0]:
                d["out"] = self.x
            elif name in sinks:
                d["out"] = sinks[name].reshape((T, *p.shapes[name]))
            for var in sem.NEURONS.get(kind, (None, ()))[1]:
                val = mons[(name, var)]
                if name in self.lif:
                    q = self.lif[name]
                    val = val * q["u_to_i"] if var == "i" else val * q["c"] + q["offset"]
                d[var] = val
            if name in self.lif and kind not in sem.SPIKING:
                d["out"] = d["v"]
            if kind == "Output" and name not in sinks:
                d["out"] = sum(rec_d["out"] for rec_d in (rec.data[s] for s in p.sources[name]))
            if d:
                rec.data[name] = d
        return rec


def _connect(out_port, in_port):
    """out -> in; Lava sums the messages of several out-ports into one in-port."""
    if tuple(out_port.shape) != tuple(in_port.shape):
        out_port = out_port.reshape(tuple(in_port.shape))
    out_port.connect(in_port)


def build(graph, x, dt: float, integration: str = "exact") -> LavaNirNet:
    """The Lava processes of a NIR graph with the input ``x`` (T, *input shape) in its source."""
    program = graph if isinstance(graph, NirProgram) else NirProgram(graph)
    net = LavaNirNet(program, x, dt, integration)
    net.x, net.dt, net.integration = np.asarray(x, np.float64), float(dt), integration
    return net


def run_lava(graph, x, dt: float, integration: str = "exact", reset: str = RESET, delay: str = DELAY) -> NirRecord:
    """Run a NIR graph on Lava (floating_pt models); the conventions are the module docstring's."""
    if reset != RESET or delay != DELAY:
        raise ParameterError(f"lava: Lava's LIF resets to v_reset (reset='zero') and its synapses deliver one step "
                             f"later (delay='synapse'); asked: reset {reset!r}, delay {delay!r}")
    if integration not in sem.INTEGRATIONS:
        raise ParameterError(f"integration {integration!r}: choose {' or '.join(sem.INTEGRATIONS)}")
    return build(graph, x, dt, integration).run()
