"""The converted Pong policy as a Lava process graph, run frame by frame.

Backends: ``lava`` (floating_pt models, float64), ``lava-fixed`` (fixed_pt models, bit-accurate
against conversion's NumPy fixed-point simulator) and ``loihi2`` (the same graph for Loihi 2
hardware through lava-loihi; it raises BackendUnavailableError where lava-loihi or a board is
missing).

The converted :class:`conversion.graph.Network` is cut into *layers* (:func:`conversion.backend.layers_of`): each
ends at a node that emits events (SigmaDelta) or at an Output; pass-through nodes (Scale, Flatten)
join the layer after them.  For the Pong network::

    [input, sd_in] -> [scale, conv1, sd1] -> [conv2, sd2] -> [flatten, stpn, h] -> [pi, logits]
                                                                                -> [v, value]

Each layer is one :class:`lava_procs.stpn_layer.SDLayer` process; the events of its last node
travel to the next layer's ``a_in`` port.  A lava Injector carries each frame from the host into
the first layer, a lava Extractor per layer brings its values, event counts and synaptic
operations back.  One frame = ``period`` Lava time steps, because every layer delivers its events
one step later (the lava Dense convention, see :mod:`lava_procs.stpn_layer`).  Each frame is one
blocking ``run(RunSteps(period))``: the host sends the frame, runs, reads the logits, and in closed
loop steps Pong before it sends the next frame.

The arithmetic of the nodes inside a layer is that of :class:`conversion.simulator.Simulator`
(floating point, or its integer specification for fixed_pt), applied to that layer's nodes only
(:class:`lava_procs.stpn_layer.LayerKernel`); specification and oracle share one implementation, as for the memristor
process, so what the Lava graph adds (and what is tested) is the process structure, the event
messages between processes and the timing.

Synapse models of the plastic layer: ``lava`` runs ``synapses="ideal"`` (the rule inside the layer's
kernel) and ``synapses="device"``: the synapses are memristor device pairs whose state lives in
the Vars of a :class:`lava_procs.memristor.layer.DeviceLayer` process beside the layer (an
:class:`lava_procs.stpn_layer.SDPlasticLayer`).  The layer's neurons compute N, the pre-activation
and tanh with the pairs' read-back W and the current F, send h, z and N to the devices, which
step (:func:`conversion.device_layer.plasticity`, the reference simulator's devices and
cycle-to-cycle draws) and send the read-back F back in the same time step::

    [flatten, stpn, h] --h, z, N--> DeviceLayer(stpn)
                       <----F------

``lava-fixed`` runs the ideal rule only (the device layer has no integer specification).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

import lava_procs
from lava_procs import run_config  # noqa: F401  (re-exported for users of lava_processes)
from conversion.backend import (StepOut, UnsupportedNetworkError, layer_depths, layers_of, logits_node,
                                value_exponent)
from conversion.simulator import DEVICE_COUNTERS
from lava_procs.lifecycle import LavaRuntime
from mstpn_base.errors import BackendUnavailableError


@dataclass
class LavaGraph:
    """The converted network as Lava processes, to wire into one's own Lava graph.

    ``input_port``: the first layer's ``a_in`` (InPort, the frame's pixels, flat); ``outputs``:
    each layer's graded events ``s_out`` (OutPort) by layer name, e.g. ``outputs["logits"]``;
    ``records``: each layer's ``rec_out`` (its value, event count and synaptic operations);
    ``period``: Lava time steps per frame (one per layer depth: a synapse delivers one step
    later); a frame sent at step k is complete at step k + period - 1.  Run with
    ``run_config(fixed_point)``.
    """

    layers: dict
    sizes: dict
    input_port: object
    outputs: dict
    records: dict
    period: int
    fixed_point: bool
    #: synapses="device": the :class:`lava_procs.memristor.layer.DeviceLayer` of each plastic node
    synapses: dict = field(default_factory=dict)


#: the synapse models the Lava graph runs: floating_pt both, fixed_pt the ideal rule only
FIXED_POINT_SYNAPSES = ("ideal",)


def build_devices(net, device=None) -> dict:
    """The frozen device pairs of every plastic node of ``net``, as the reference simulator builds
    them (:func:`conversion.device_layer.build` of the node's W and lambda) with the mapping
    ``device`` (a :class:`conversion.device_layer.Mapping` or block; None: the node's block)."""
    from conversion import device_layer as dl

    return dl.network_devices(net, device, error=UnsupportedNetworkError)


def lava_processes(net, fixed_point: bool = False, synapses: str = "ideal", device=None, devices: dict | None = None,
                   step0: int = 0, counts0: dict | None = None) -> LavaGraph:
    """Build the converted sigma-delta network ``net`` as connected Lava processes (one
    :class:`lava_procs.stpn_layer.SDLayer` per layer of :func:`conversion.backend.layers_of`);
    nothing is attached to its input or outputs.  ``fixed_point`` selects, at run time through
    :func:`run_config`, the bit-accurate models (the network must carry fixed-point parameters).

    ``synapses="device"`` (floating point only) puts each plastic node's synapses on memristor
    device pairs in a :class:`lava_procs.memristor.layer.DeviceLayer` (``graph.synapses[node]``),
    wired to its layer (an :class:`lava_procs.stpn_layer.SDPlasticLayer`): ``devices`` are the
    frozen pairs per node (:func:`build_devices` with ``device`` when None), ``step0`` the agent
    step of the first frame (it indexes the cycle-to-cycle draws), ``counts0`` per node the device
    counters to continue from."""
    lava_procs.require_lava()
    from lava_procs.stpn_layer import SDLayer, SDPlasticLayer

    if fixed_point and net.fixed is None:
        raise UnsupportedNetworkError("the fixed-point Lava models need a network with fixed-point parameters "
                                      "(mstpn convert with calibration)")
    check_synapses(synapses, fixed_point)
    if synapses == "device" and devices is None:
        devices = build_devices(net, device)
    devices = devices if synapses == "device" else {}
    layers = layers_of(net)
    depth = layer_depths(layers)
    period = max(depth.values())
    procs, sizes, syn = {}, {}, {}
    for name, nodes, src in layers:
        n = int(np.prod(net.nodes[name].out_shape))
        n_in = int(np.prod(net.nodes[nodes[0]].shape)) if src is None else int(np.prod(net.nodes[src].out_shape))
        kw = dict(net=net, nodes=nodes, src=src, n=n, n_in=n_in, phase=depth[name] - 1, period=period, name=name)
        plastic = [k for k in nodes if k in devices]
        if len(plastic) > 1:
            raise UnsupportedNetworkError(f"layer {name!r} has more than one plastic node ({plastic})")
        if plastic:
            proc = _device_layer(SDPlasticLayer, kw, plastic[0], devices[plastic[0]], net.nodes[plastic[0]].gamma,
                                 step0, (counts0 or {}).get(plastic[0]), syn)
        else:
            proc = SDLayer(**kw)
        if src is not None:
            procs[src].s_out.connect(proc.a_in)
        procs[name], sizes[name] = proc, n
    return LavaGraph(procs, sizes, procs[layers[0][0]].a_in, {n: p.s_out for n, p in procs.items()},
                     {n: p.rec_out for n, p in procs.items()}, period, fixed_point, syn)


def _device_layer(cls, kw, node, devs, gamma, step0, counts0, syn):
    """The layer of plastic node ``node`` (``cls``: SDPlasticLayer) and its DeviceLayer, connected
    both ways (h, z, N to the devices; F back)."""
    from lava_procs.memristor.layer import DeviceLayer

    proc = cls(plastic=node, weights=devs.W, **kw)
    dev = DeviceLayer(devices=devs, gamma=gamma, phase=kw["phase"], period=kw["period"], step0=step0,
                      counts0=counts0, name=f"{node}_devices")
    proc.h_out.connect(dev.h_in)
    proc.z_out.connect(dev.z_in)
    proc.norm_out.connect(dev.norm_in)
    dev.f_out.connect(proc.f_in)
    syn[node] = dev
    return proc


def check_synapses(synapses: str, fixed_point: bool) -> None:
    """A clear error for a synapse model the chosen Lava models do not run."""
    from mstpn_base.registry import SYNAPSE_MODELS, SynapseModelError

    if synapses not in SYNAPSE_MODELS:
        raise SynapseModelError(f"synapses must be one of {SYNAPSE_MODELS}, got {synapses!r}")
    if fixed_point and synapses not in FIXED_POINT_SYNAPSES:
        raise SynapseModelError("the fixed-point Lava models run the ideal synapse model only: the device layer "
                                "has no integer specification yet (use backend 'lava' for synapses='device')")


class LavaRunner:
    """Frame-by-frame Lava run of ``net``; ``fixed_point`` selects the fixed_pt models.

    ``synapses="device"`` (floating point) runs each plastic layer's synapses on memristor device
    pairs in a :class:`lava_procs.memristor.layer.DeviceLayer` (``runner.device_layers[node]``, its
    state in Lava Vars) with the mapping ``device`` (None: the node's device block), as
    ``Simulator(net, synapses="device", device=device)``: the same devices, and the cycle-to-cycle
    draws indexed by the agent step, which goes on across :meth:`reset`.  ``device_stats`` holds
    per plastic node the counted pulses and energies (:data:`conversion.simulator.DEVICE_COUNTERS`).
    """

    def __init__(self, net, fixed_point: bool = False, loihi2: bool = False, synapses: str = "ideal", device=None):
        check_synapses(synapses, fixed_point or loihi2)
        lava_procs.require_lava()
        if fixed_point and net.fixed is None:
            raise UnsupportedNetworkError("lava-fixed needs a network with fixed-point parameters "
                                          "(mstpn convert with calibration)")
        self.net, self.fixed_point, self.loihi2, self.synapses = net, fixed_point, loihi2, synapses
        self.name = "loihi2" if loihi2 else "lava-fixed" if fixed_point else "lava"
        self.layers = layers_of(net)
        self.depth = layer_depths(self.layers)
        self.period = max(self.depth.values())
        self.devices = build_devices(net, device) if synapses == "device" else {}
        self._steps = 0            # agent steps run (the index of the next step's cycle-to-cycle draws)
        self._counts = {n: None for n in self.devices}   # device counters of the graphs closed so far
        self._ok = False           # the last frame ran to completion (its Vars can be read)
        self._build()

    def _build(self):
        from lava.proc.io.extractor import Extractor
        from lava.proc.io.injector import Injector

        g = lava_processes(self.net, synapses=self.synapses, devices=self.devices, step0=self._steps,
                           counts0=self._counts)
        self.device_layers = g.synapses
        self.procs, self.ext, self.sizes = g.layers, {}, g.sizes
        for name, proc in g.layers.items():
            ext = Extractor(shape=(g.sizes[name] + 2,), buffer_size=4 * self.period)  # a whole frame: no deadlock
            proc.rec_out.connect(ext.in_port)
            self.ext[name] = ext
        self.n_obs = g.input_port.shape[0]
        self.inj = Injector(shape=(self.n_obs,), buffer_size=2 * self.period)
        self.inj.out_port.connect(g.input_port)
        self._zeros = np.zeros(self.n_obs)
        self._root = g.layers[self.layers[0][0]]
        self._cfg = self.run_config()
        self._runtime = LavaRuntime(self._root)

    def run_config(self):
        return loihi2_run_config() if self.loihi2 else run_config(self.fixed_point)

    def reset(self):
        """A new episode: the Lava graph is rebuilt (its state lives in the ProcessModels)."""
        if self._runtime.active:
            self.close()
            self._build()

    def step(self, obs):
        from lava.magma.core.run_conditions import RunSteps

        if not self._runtime.active:   # the Injector's channel exists once the runtime is created
            self._runtime.start(self._cfg)
        # the frame in the frame's first time step, zeros in the others (the Injector's buffer
        # holds them until the run consumes them, one per step)
        self.inj.send(np.asarray(obs, np.float64).reshape(-1))
        for _ in range(self.period - 1):
            self.inj.send(self._zeros)
        self._ok = False
        self._root.run(condition=RunSteps(num_steps=self.period, blocking=True), run_cfg=self._cfg)
        self._ok = True
        self._steps += 1
        out = StepOut(None)
        for name, _, _ in self.layers:
            recs = [self.ext[name].receive() for _ in range(self.period)]
            rec = np.asarray(recs[self.depth[name] - 1])
            n = self.sizes[name]
            val = rec[:n].copy()
            if self.fixed_point:
                out.raw[name] = np.rint(val).astype(np.int64)
                val = val * 2.0 ** value_exponent(self.net, name)
            out.acts[name] = val
            out.events[name] = int(rec[n])
            out.synops[name] = int(rec[n + 1])
        out.logits = out.acts[logits_node(self.net)].copy()
        return out

    @property
    def device_stats(self) -> dict:
        """Per plastic node the counted device activity since the start (synapses="device"): the
        ``counts`` Var of its DeviceLayer (read with Var.get() while the graph is paused)."""
        from lava_procs.memristor.layer import counters

        if self._runtime.active and self._ok:
            return {n: counters(d.counts.get()) for n, d in self.device_layers.items()}
        return {n: (dict(c) if c is not None else counters(np.zeros(len(DEVICE_COUNTERS))))
                for n, c in self._counts.items()}

    def device_state(self, node: str) -> dict:
        """The volatile device state of plastic node ``node``, read from the Vars of its
        DeviceLayer: {"g_st_p": (H, K), "r_p", "q_p", "g_st_m", "r_m", "q_m"} (after a frame)."""
        from conversion import device_layer as dl
        from lava_procs.memristor.layer import var_name

        dev = self.device_layers[node]
        return {var_name(v, side): np.asarray(getattr(dev, var_name(v, side)).get(), np.float64)
                for side in dl.SIDES for v in dl.DEVICE_STATE}

    def close(self):
        """Stop the runtime and its worker processes (also after an error or an interrupt)."""
        if self.devices and self._runtime.active and self._ok:
            self._counts = self.device_stats   # the next graph continues from these counters
        self._ok = False
        self._runtime.stop()


def make_float_runner(spec, synapses: str = "ideal", device=None, **options):
    """Backend ``lava``: floating_pt models; ``synapses="device"`` runs the plastic layer on
    device pairs (:class:`LavaRunner`)."""
    return LavaRunner(spec, fixed_point=False, synapses=synapses, device=device, **options)


def make_fixed_runner(spec, synapses: str = "ideal", device=None, **options):
    """Backend ``lava-fixed``: bit-accurate fixed_pt models, the ideal synapse model only."""
    check_synapses(synapses, True)
    return LavaRunner(spec, fixed_point=True, **options)


# -- Loihi 2 hardware ----------------------------------------------------------------------------
def loihi2_available() -> tuple[bool, str]:
    """(True, "") where lava-loihi and a Loihi 2 board are usable, else (False, reason)."""
    import importlib.util

    lava_procs.require_lava()
    if importlib.util.find_spec("lava.utils.system") is None:
        return False, "lava.utils.system is missing"
    try:
        from lava.utils.system import Loihi2
    except ImportError as exc:
        return False, f"lava.utils.system: {exc}"
    try:
        Loihi2.preferred_partition = "oheogulch"
        ok = bool(Loihi2.is_loihi2_available)
    except Exception as exc:  # noqa: BLE001 - any failure of the probe means no hardware
        return False, f"probe failed: {exc}"
    if not ok:
        return False, "no Loihi 2 system found (Loihi2.is_loihi2_available is False)"
    if importlib.util.find_spec("lava.magma.compiler.subcompilers.nc") is None:
        return False, "lava-loihi (the Loihi 2 compiler extension) is not installed"
    return True, ""


def loihi2_run_config():
    """Loihi2HwCfg for the graph (needs lava-loihi and Intel's NCL process models for SDLayer)."""
    ok, why = loihi2_available()
    if not ok:
        raise BackendUnavailableError(f"backend 'loihi2' needs Loihi 2 hardware and lava-loihi: {why}")
    from lava.magma.core.run_configs import Loihi2HwCfg

    return Loihi2HwCfg()


def make_loihi2_runner(spec, **options):
    """The Loihi 2 path: same graph, Loihi2HwCfg, bit-accurate fixed-point parameters."""
    ok, why = loihi2_available()
    if not ok:
        raise BackendUnavailableError(f"backend 'loihi2' needs Loihi 2 hardware and lava-loihi: {why}")
    raise UnsupportedNetworkError("backend 'loihi2': SDLayer has Python (CPU) ProcessModels only; a "
                                  "Loihi 2 NcProcessModel (microcode neurons) for it is not written yet")


