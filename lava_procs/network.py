"""The converted Pong policy as a graph of Lava's own processes, run frame by frame.

Backends: ``lava`` (floating_pt models, float64), ``lava-fixed`` (fixed_pt models, bit-accurate
against conversion's NumPy fixed-point simulator with the "lava" sigma-delta rule) and ``loihi2``
(the same graph on Loihi 2 through lava-loihi; it raises BackendUnavailableError where lava-loihi
or a board is missing).

The converted :class:`conversion.graph.Network` is cut into layers (:func:`conversion.backend.layers_of`),
each built from lava-nc's processes where Lava has them::

    input, sd_in          -> lava.proc.sdn Delta (vth; the frame held over the frame's steps)
    scale, conv1, sd1     -> lava.proc.conv Conv -> lava.proc.sdn SigmaDelta (RELU, bias, vth, state_exp)
    conv2, sd2            -> Conv -> SigmaDelta
    flatten, stpn, h      -> lava_procs.stpn_layer.PlasticLayer (its state in Vars)
    pi, logits / v, value -> lava.proc.dense Dense -> lava.proc.sdn Sigma  (logits = bias + sigma)

Lava's layout is (X, Y, C): a (C, H, W) array of the project is ``a.transpose(2, 1, 0)`` there; conv
kernels are flipped (Lava's Conv convolves, PyTorch's correlates).  fixed_pt: the weights are the
8-bit mantissas of ``net.fixed`` (Dense: doubled with weight_exp -1, as Lava keeps 8-bit mixed-sign
weights even), SigmaDelta vth and bias are the "lava" rule's u-unit integers divided by
2**state_exp (Lava's constructor multiplies them back).  floating_pt: Lava's float SigmaDelta fires
at |delta| >= vth, so vth = the next float above the layer's threshold (the project's strict
rule).

One frame = ``period`` Lava time steps (a synapse delivers one step later; the layer at depth d
computes the frame at sub-step d - 1).  A Lava SigmaDelta computes in every time step, so with its
bias on it fires act(bias) in the sub-steps before its first frame reaches it (the pre-phase,
:mod:`conversion.sd_reset`):

* fixed_pt keeps Lava's native behaviour: the biases are on from the start, the layers fire in the
  pre-phase, and the fixed-point reference starts from the same pre-phase reset state
  (:func:`conversion.simulator.prephase_state`), so the two agree bit for bit;
* floating_pt follows the *float schedule*, as the float reference has no pre-phase (sent starts
  at 0): every SigmaDelta bias Var starts at 0, and the first frame of a fresh graph runs one
  ``run(RunSteps(1))`` per sub-step; before sub-step j the host sets (Var.set, the runtime paused)
  the bias of each layer whose first frame arrives at sub-step j (:meth:`LavaGraph.switch_on_biases`).
  Later frames run as below, the biases on.

Closed loop: one blocking ``run(RunSteps(period))`` per frame.  A recorded sequence
(:meth:`LavaRunner.run_frames`): the first frame as above, then one ``run(RunSteps(period * (n - 1)))``,
the host streaming frames into the Injector and one vector per frame out of the runner's
:class:`lava_procs.io_models.FrameRecorder` meanwhile.

Synapse models of the plastic layer: ``synapses="ideal"`` (the rule inside the layer) and
``synapses="device"``: the synapses are memristor device pairs in a
:class:`lava_procs.memristor.layer.DeviceLayer` beside the layer, which sends h, z and N and
receives the read-back F in the same time step::

    PlasticLayer --h, z, N--> DeviceLayer(stpn)
                 <----F------

In fixed_pt the DeviceLayer runs its integer model (``fixed`` =
:func:`conversion.device_layer_fixed.build_fixed` of the node's devices and fixed-point block,
``gamma_mant`` its 8-bit gamma); the plastic layer's forward pass uses the devices' 8-bit
read-back W mantissas (``w_mant``) and the ports carry int64: h at h_exp, z at z_exp, N =
max(isqrt(sum G^2), 1), F at f_exp, as ``Simulator(net, fixed=True, synapses="device")``.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

import lava_procs
from lava_procs import run_config  # noqa: F401  (re-exported for users of lava_processes)
from conversion import fixed_point as fx
from conversion import graph as g
from conversion.backend import (StepOut, UnsupportedNetworkError, layer_depths, layers_of, logits_node,
                                value_exponent)
from conversion.ops import conv_fanout
from conversion.simulator import DEVICE_COUNTERS
from lava_procs.layout import conv_kernel, lava_shape, to_lava
from lava_procs.lifecycle import LavaRuntime
from mstpn_base.errors import BackendUnavailableError

#: graded payloads between Lava processes (Conv/Dense num_message_bits)
MESSAGE_BITS = 24


@dataclass
class LavaGraph:
    """The converted network as Lava processes, to wire into one's own Lava graph.

    ``input_port``: the Delta encoder's ``a_in`` (the frame's pixels in Lava's (X, Y, C) layout,
    held for the ``period`` steps of the frame); ``outputs``: each layer's OutPort by layer name:
    the Delta/SigmaDelta payloads, the plastic layer's h events, the heads' Sigma (its
    accumulated W h; value = ``bias[name]`` + it); ``records``: the plastic layer's ``rec_out``;
    ``procs``: every process by node name; ``period``: Lava time steps per frame, a frame
    sent at step k is complete at step k + period - 1.  Run with ``run_config(fixed_point)``.
    """

    layers: dict
    sizes: dict
    input_port: object
    outputs: dict
    records: dict
    period: int
    fixed_point: bool
    procs: dict = field(default_factory=dict)
    bias: dict = field(default_factory=dict)
    kinds: dict = field(default_factory=dict)   # layer -> "delta", "sigma_delta", "plastic", "head"
    #: synapses="device": the :class:`lava_procs.memristor.layer.DeviceLayer` of each plastic node
    synapses: dict = field(default_factory=dict)
    #: floating_pt: per SigmaDelta layer (its bias Var starts at 0) the sub-step of its first
    #: frame and the bias to switch on then (:meth:`switch_on_biases`; module docstring)
    pending_bias: dict = field(default_factory=dict)

    def switch_on_biases(self, sub_step: int) -> None:
        """The float schedule: set the bias Var of every SigmaDelta layer whose first frame
        arrives at ``sub_step`` (Var.set, the runtime paused before that time step)."""
        for name, (j, bias) in self.pending_bias.items():
            if j == sub_step:
                self.procs[name].bias.set(bias)

    def run_first_frame(self, proc, run_cfg) -> None:
        """Run the first frame of the fresh graph (``proc``: any process of it): fixed_pt one
        ``run(RunSteps(period))``; floating_pt the float schedule, one ``run(RunSteps(1))`` per
        sub-step with :meth:`switch_on_biases` before it (module docstring)."""
        from lava.magma.core.run_conditions import RunSteps

        if not self.pending_bias:
            proc.run(condition=RunSteps(num_steps=self.period, blocking=True), run_cfg=run_cfg)
            return
        if any(j == 0 for j, _ in self.pending_bias.values()):
            raise UnsupportedNetworkError("a SigmaDelta layer with a bias receives the frame at sub-step 0")
        for j in range(self.period):
            if j:   # Var.set needs a runtime that has run (sub-step 0 is the Delta input's)
                self.switch_on_biases(j)
            proc.run(condition=RunSteps(num_steps=1, blocking=True), run_cfg=run_cfg)


#: the synapse models the fixed_pt Lava graph runs (floating_pt runs every model)
FIXED_POINT_SYNAPSES = ("ideal", "device")


def build_devices(net, device=None) -> dict:
    """The frozen device pairs of every plastic node of ``net``, as the reference simulator builds
    them (:func:`conversion.device_layer.build` of the node's W and lambda) with the mapping
    ``device`` (a :class:`conversion.device_layer.Mapping` or block; None: the node's block)."""
    from conversion import device_layer as dl

    return dl.network_devices(net, device, error=UnsupportedNetworkError)


def _float_vth(net, n) -> float:
    """Lava fires at |delta| >= vth: the next float above the (uniform) threshold is the strict rule."""
    thr = np.asarray(net.nodes[n].threshold, np.float64)
    if thr.size and np.any(thr != thr.flat[0]):
        raise UnsupportedNetworkError(f"node {n!r}: Lava's SigmaDelta has one threshold per layer; "
                                      "this one varies per unit")
    return float(np.nextafter(thr.flat[0] if thr.size else 0.0, np.inf))


def _fixed_neuron(net, n) -> dict:
    fp = net.fixed.get(n, {})
    if fx.sd_rule(fp) != "lava":
        raise UnsupportedNetworkError(f"node {n!r} follows the {fx.sd_rule(fp)!r} sigma-delta rule; the Lava graph "
                                      "needs the 'lava' rule (mstpn convert --sd-rule lava, the default)")
    return fp


def _input_layer(net, nodes, fixed):
    from lava.proc.sdn.process import Delta

    sd = nodes[-1]
    if not isinstance(net.nodes[sd], g.SigmaDelta) or net.nodes[sd].activation != "identity":
        raise UnsupportedNetworkError(f"the input layer must end in an identity SigmaDelta, got {sd!r}")
    shape = lava_shape(net.nodes[sd].out_shape)
    if fixed:
        fp = _fixed_neuron(net, sd)
        if int(fp["state_exp"]) != 0:
            raise UnsupportedNetworkError(f"the input encoder {sd!r} must have state_exp 0")
        proc = Delta(shape=shape, vth=int(fp["vth"]))
    else:
        proc = Delta(shape=shape, vth=_float_vth(net, sd))
    return {sd: proc}, proc.a_in, proc.s_out


def _conv_layer(net, nodes, fixed):
    from lava.proc.conv.process import Conv
    from lava.proc.sdn.process import ActivationMode, SigmaDelta

    conv = [n for n in nodes if isinstance(net.nodes[n], g.Conv2d)]
    sd = nodes[-1]
    node = net.nodes[sd]
    if len(conv) != 1 or node.activation not in ("relu", "identity"):
        raise UnsupportedNetworkError(f"layer {nodes}: the Lava graph runs Conv2d -> relu/identity SigmaDelta layers")
    c = net.nodes[conv[0]]
    scale = [n for n in nodes if isinstance(net.nodes[n], g.Scale)]
    if fixed:
        w, bias = net.fixed[conv[0]]["weight_mant"], net.fixed[conv[0]]["bias"]
        fp = _fixed_neuron(net, sd)
        S = int(fp["state_exp"])
        vth, bias = int(fp["vth"]), np.asarray(bias, np.int64)   # u units: Lava's Vars, set below
    else:
        w, bias, S, vth = c.weight, c.bias, 0, _float_vth(net, sd)
        for n in scale:
            sc = net.nodes[n].scale
            if np.any(sc != sc.flat[0]):
                raise UnsupportedNetworkError(f"Scale node {n!r} must be uniform to be folded into {conv[0]!r}")
            w = w * float(sc.flat[0])
    kern = conv_kernel(w)                                # (O, kw, kh, C_in), flipped
    syn = Conv(weight=kern.astype(np.int64 if fixed else np.float64), input_shape=lava_shape(c.in_shape),
               stride=tuple(reversed(c.stride)), padding=tuple(reversed(c.padding)), num_message_bits=MESSAGE_BITS)
    shape = lava_shape(node.out_shape)
    b = np.broadcast_to(np.asarray(bias).reshape(1, 1, -1), shape).copy()
    act = ActivationMode.RELU if node.activation == "relu" else ActivationMode.UNIT
    neuron = SigmaDelta(shape=shape, vth=0, bias=0, act_mode=act, state_exp=S)
    neuron.vth.init = np.array([vth])              # the Vars in u units (the constructor's x 2**state_exp)
    neuron.bias.init = b if fixed else np.zeros(shape)   # float: switched on at the layer's first frame
    syn.a_out.connect(neuron.a_in)
    return {conv[0]: syn, sd: neuron}, syn.s_in, neuron.s_out, (None if fixed else b)


def _head_layer(net, nodes, fixed):
    from lava.proc.dense.process import Dense
    from lava.proc.sdn.process import Sigma

    aff = [n for n in nodes if isinstance(net.nodes[n], g.Affine)]
    if len(aff) != 1 or not isinstance(net.nodes[nodes[-1]], g.Output):
        raise UnsupportedNetworkError(f"layer {nodes}: the Lava graph runs Affine -> Output heads")
    a = net.nodes[aff[0]]
    if fixed:   # Lava's Dense keeps mixed-sign 8-bit weights even: 2 w with weight_exp -1 is exact
        syn = Dense(weights=2 * np.asarray(net.fixed[aff[0]]["weight_mant"], np.int64), weight_exp=-1,
                    num_message_bits=MESSAGE_BITS)
        bias = np.asarray(net.fixed[aff[0]]["bias"], np.int64)
    else:
        syn, bias = Dense(weights=a.weight, num_message_bits=MESSAGE_BITS), a.bias
    acc = Sigma(shape=(a.weight.shape[0],))
    syn.a_out.connect(acc.a_in)
    return {aff[0]: syn, nodes[-1]: acc}, syn.s_in, acc.s_out, bias


def lava_processes(net, fixed_point: bool = False, synapses: str = "ideal", device=None, devices: dict | None = None,
                   step0: int = 0, counts0: dict | None = None) -> LavaGraph:
    """Build the converted sigma-delta network ``net`` from Lava's processes (module docstring):
    Delta, Conv + SigmaDelta, the plastic :class:`lava_procs.stpn_layer.PlasticLayer`, Dense +
    Sigma heads; nothing is attached to its input or outputs.  ``fixed_point`` builds the
    fixed_pt arguments (the network must carry "lava"-rule fixed-point parameters); run it with
    :func:`run_config`.

    ``synapses="device"`` (floating or fixed point) puts each plastic node's synapses on memristor
    device pairs in a :class:`lava_procs.memristor.layer.DeviceLayer` (``graph.synapses[node]``):
    ``devices`` are the frozen pairs per node (:func:`build_devices` with ``device`` when None),
    ``step0`` the agent step of the first frame (it indexes the cycle-to-cycle draws), ``counts0``
    per node the device counters to continue from."""
    lava_procs.require_lava()
    from lava_procs.stpn_layer import DevicePlasticLayer, PlasticLayer

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
    main, ins, outs, procs, sizes, kinds, biases, records, syn = {}, {}, {}, {}, {}, {}, {}, {}, {}
    pending = {}
    for name, nodes, src in layers:
        sizes[name] = int(np.prod(net.nodes[name].out_shape))
        kinds_here = {type(net.nodes[n]).__name__ for n in nodes}
        if src is None:
            p, ins[name], outs[name] = _input_layer(net, nodes, fixed_point)
            kinds[name] = "delta"
        elif "PlasticSTPN" in kinds_here:
            plastic = next(n for n in nodes if isinstance(net.nodes[n], g.PlasticSTPN))
            kw = dict(net=net, nodes=nodes, src=src, in_shape=lava_shape(net.nodes[src].out_shape),
                      phase=depth[name] - 1, period=period, name=name, fixed=fixed_point)
            if plastic in devices:
                fd = None
                if fixed_point:   # the integer devices; the neurons read their 8-bit W mantissas
                    from conversion.device_layer_fixed import build_fixed

                    fd = build_fixed(devices[plastic], net.fixed[plastic])
                proc = DevicePlasticLayer(weights=devices[plastic].W if fd is None else fd.w_mant, **kw)
                _wire_devices(proc, plastic, devices[plastic], net, kw, step0, (counts0 or {}).get(plastic), syn, fd)
            else:
                proc = PlasticLayer(**kw)
            p, ins[name], outs[name] = {plastic: proc}, proc.a_in, proc.s_out
            records[name] = proc.rec_out
            kinds[name] = "plastic"
        elif "Conv2d" in kinds_here:
            p, ins[name], outs[name], b = _conv_layer(net, nodes, fixed_point)
            kinds[name] = "sigma_delta"
            if b is not None:
                pending[name] = (depth[name] - 1, b)
        else:
            p, ins[name], outs[name], biases[name] = _head_layer(net, nodes, fixed_point)
            kinds[name] = "head"
        procs.update(p)
        main[name] = p[name] if name in p else next(iter(p.values()))
        if src is not None:
            outs[src].connect(ins[name])
    return LavaGraph(main, sizes, ins[layers[0][0]], outs, records, period, fixed_point, procs, biases, kinds, syn,
                     pending)


def _wire_devices(proc, node, devs, net, kw, step0, counts0, syn, fd=None) -> None:
    """The DeviceLayer of plastic node ``node``, connected both ways (h, z, N to it; F back);
    ``fd``: its integer devices (fixed_pt)."""
    from lava_procs.memristor.layer import DeviceLayer

    gm = None if fd is None else net.fixed[node]["gamma_mant"]
    dev = DeviceLayer(devices=devs, gamma=net.nodes[node].gamma, phase=kw["phase"], period=kw["period"], step0=step0,
                      counts0=counts0, name=f"{node}_devices", fixed=fd, gamma_mant=gm)
    proc.h_out.connect(dev.h_in)
    proc.z_out.connect(dev.z_in)
    proc.norm_out.connect(dev.norm_in)
    dev.f_out.connect(proc.f_in)
    syn[node] = dev


def check_synapses(synapses: str, fixed_point: bool) -> None:
    """A clear error for a synapse model the chosen Lava models do not run."""
    from mstpn_base.registry import SYNAPSE_MODELS, SynapseModelError

    if synapses not in SYNAPSE_MODELS:
        raise SynapseModelError(f"synapses must be one of {SYNAPSE_MODELS}, got {synapses!r}")
    if fixed_point and synapses not in FIXED_POINT_SYNAPSES:
        raise SynapseModelError(f"the fixed-point Lava models run the synapse models {FIXED_POINT_SYNAPSES}, "
                                f"not {synapses!r}")


class LavaRunner:
    """Frame-by-frame Lava run of ``net``; ``fixed_point`` selects the fixed_pt models.

    Every layer's OutPort is read in every time step by one
    :class:`lava_procs.io_models.FrameRecorder`, which sends the host one vector per frame (``period``
    steps): a Delta/SigmaDelta layer's value is the running sum of its payloads (what its receivers
    hold), its events the nonzero payloads, its synaptic operations the source's events times their
    fan-out; a head's value is bias + its Sigma at the head's sub-step; the plastic layer reports its
    own (``rec_out``).  The Conv processes run the models of :meth:`run_config`.

    ``synapses="device"`` (float or fixed point) runs each plastic layer's synapses on memristor device
    pairs in a :class:`lava_procs.memristor.layer.DeviceLayer` (``runner.device_layers[node]``, its
    state in Lava Vars) with the mapping ``device`` (None: the node's device block), as
    ``Simulator(net, fixed=fixed_point, synapses="device", device=device)``: the same devices, and the cycle-to-cycle
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
        self._fan = self._fan_outs()
        self._steps = 0            # agent steps run (the index of the next step's cycle-to-cycle draws)
        self._counts = {n: None for n in self.devices}   # device counters of the graphs closed so far
        self._ok = False           # the last frame ran to completion (its Vars can be read)
        self._build()

    def _fan_outs(self) -> dict:
        """Per layer with a static synapse: the fan-out of each of its source's units."""
        fan = {}
        for name, nodes, src in self.layers:
            for n in nodes:
                node = self.net.nodes[n]
                if isinstance(node, g.Conv2d):
                    fan[name] = conv_fanout(node.in_shape, node.weight.shape, node.stride, node.padding).reshape(-1)
                elif isinstance(node, g.Affine):
                    fan[name] = np.full(node.weight.shape[1], node.weight.shape[0], np.int64)
        return fan

    def _build(self, buffer_frames: int = 2):
        from lava.proc.io.injector import Injector

        from lava_procs.io_models import FrameRecorder

        g_ = lava_processes(self.net, fixed_point=self.fixed_point, synapses=self.synapses, devices=self.devices,
                            step0=self._steps, counts0=self._counts)
        self.graph, self.device_layers = g_, g_.synapses
        self._taps = [self._tap(name) for name, _, _ in self.layers]
        self.rec = FrameRecorder(taps=self._taps, period=self.period,
                                 buffer_frames=buffer_frames + 1)
        for i, (name, _, _) in enumerate(self.layers):
            g_.records.get(name, g_.outputs[name]).connect(getattr(self.rec, f"in_{i}"))
        self.in_shape = g_.input_port.shape
        self.inj = Injector(shape=self.in_shape, buffer_size=(buffer_frames + 1) * self.period)
        self.inj.out_port.connect(g_.input_port)
        self._root = next(iter(g_.procs.values()))
        self._sent = {n: 0 for n, k in g_.kinds.items() if k in ("delta", "sigma_delta")}
        self._fresh = True         # no frame has run on this graph yet (the float schedule's first frame)
        self._cfg = self.run_config()
        self._runtime = LavaRuntime(self._root)

    def _tap(self, name) -> dict:
        """What the FrameRecorder keeps of layer ``name`` per frame (:func:`lava_procs.io_models.tap`):
        a plastic layer's ``rec_out`` and a head's Sigma at its sub-step; a Delta/SigmaDelta
        layer's payload sum, its event count and, per receiving SigmaDelta layer, its events times
        their fan-out (in Lava's layout)."""
        from lava_procs.io_models import tap

        kind = self.graph.kinds[name]
        if kind in ("plastic", "head"):
            port = self.graph.records.get(name, self.graph.outputs[name])
            return tap(port.shape, "row", self.depth[name] - 1)
        shape = lava_shape(self.net.nodes[name].out_shape)
        fans = [to_lava(self._fan[r].reshape(self.net.nodes[name].out_shape)).reshape(-1)
                for r in self._receivers(name)]
        return tap(shape, "sum", fans=fans)

    def _receivers(self, name) -> list:
        """The layers with a static synapse fed by layer ``name`` (their synaptic operations are
        counted on its payloads)."""
        return [r for r, _, src in self.layers if src == name and r in self._fan]

    def run_config(self):
        """:func:`lava_procs.run_config` with Lava's Conv models that skip all-zero input steps and
        convolve as one product (:mod:`lava_procs.io_models`: fixed point to the bit)."""
        if self.loihi2:
            return loihi2_run_config()
        from lava.proc.conv.process import Conv

        from lava_procs.io_models import PyConvModelSparseFixed, PyConvModelSparseFloat

        cfg = run_config(self.fixed_point)
        cfg.exception_proc_model_map[Conv] = PyConvModelSparseFixed if self.fixed_point else PyConvModelSparseFloat
        return cfg

    def reset(self):
        """A new episode: the Lava graph is rebuilt (its state lives in the processes' Vars)."""
        if self._runtime.active:
            self.close()
            self._build()

    def _send(self, obs) -> None:
        x = to_lava(np.asarray(obs, np.float64).reshape(self.net.nodes[self.layers[0][1][0]].shape))
        for _ in range(self.period):   # the Delta encoder sees the frame in each of its steps
            self.inj.send(x)

    def step(self, obs):
        from lava.magma.core.run_conditions import RunSteps

        if not self._runtime.active:   # the Injector's channel exists once the runtime is created
            self._runtime.start(self._cfg)
        with self._runtime.host_calls():
            self._send(obs)
            self._ok = False
            if self._fresh:
                self._first_frame()
            else:
                self._root.run(condition=RunSteps(num_steps=self.period, blocking=True), run_cfg=self._cfg)
            self._ok = True
            self._steps += 1
            return self._receive()

    def run_frames(self, frames):
        """A recorded sequence in one ``run(RunSteps(period * len(frames)))``: frames stream into the
        Injector and outputs out of the FrameRecorder while it runs (a fresh graph: a new episode)."""
        from lava.magma.core.run_conditions import RunSteps

        frames = np.asarray(frames)
        if self._runtime.active:
            self.close()
            self._build()
        self._runtime.start(self._cfg)
        out, T = [], len(frames)
        self._ok = False
        try:
            with self._runtime.host_calls():
                if T:
                    self._send(frames[0])
                    self._first_frame()
                    out.append(self._receive())
                if T > 1:
                    self._send(frames[1])
                    self._root.run(condition=RunSteps(num_steps=self.period * (T - 1), blocking=False),
                                   run_cfg=self._cfg)
                    for k in range(1, T):
                        if k + 1 < T:
                            self._send(frames[k + 1])
                        out.append(self._receive())
                    self._root.wait()
        except BaseException:
            self.close()
            raise
        self._ok = True
        self._steps += T
        return out

    def _first_frame(self) -> None:
        """The first frame of a fresh graph (:meth:`LavaGraph.run_first_frame`)."""
        self._fresh = False
        self.graph.run_first_frame(self._root, self._cfg)

    def _receive(self) -> StepOut:
        """Decode one frame's FrameRecorder vector: per layer its value, events, synaptic operations."""
        out = StepOut(None)
        kinds, vec, k = self.graph.kinds, np.asarray(self.rec.receive(), np.float64), 0
        rows, synops_in = {}, {}
        for (name, _, _), t in zip(self.layers, self._taps):
            n = int(np.prod(t["shape"]))
            rows[name] = vec[k:k + n]
            k += n
            if kinds[name] in ("delta", "sigma_delta"):
                recv = self._receivers(name)
                cnt = vec[k:k + 1 + len(recv)]
                k += 1 + len(recv)
                rows[name] = (rows[name], int(cnt[0]))
                synops_in.update({r: int(c) for r, c in zip(recv, cnt[1:])})
        for name, nodes, src in self.layers:
            kind = kinds[name]
            if kind == "plastic":
                row = rows[name]
                n = len(row) - 2
                val, events, synops = row[:n], int(row[n]), int(row[n + 1])
            elif kind == "head":
                val = rows[name] + self.graph.bias[name]
                events, synops = 0, self._synops(name, src, rows, synops_in)
            else:
                pay, events = rows[name]
                shape = self.net.nodes[name].out_shape
                self._sent[name] = self._sent[name] + to_lava(pay.reshape(lava_shape(shape))).reshape(-1)
                val = np.array(self._sent[name], np.float64)
                synops = 0 if src is None else self._synops(name, src, rows, synops_in)
            if self.fixed_point:
                out.raw[name] = np.rint(val).astype(np.int64)
                val = val * 2.0 ** value_exponent(self.net, name)
            out.acts[name], out.events[name], out.synops[name] = val, events, synops
        out.logits = out.acts[logits_node(self.net)].copy()
        return out

    def _synops(self, name, src, rows, synops_in) -> int:
        """Events of the source in this frame's steps times their fan-out into layer ``name`` (a
        plastic source's h events are not on its rec_out: their count times the fan-out)."""
        if self.graph.kinds[src] == "plastic":
            return int(rows[src][-2] * self._fan[name][0])
        return synops_in[name]

    @property
    def device_stats(self) -> dict:
        """Per plastic node the counted device activity since the start (synapses="device"): the
        ``counts`` Var of its DeviceLayer (read with Var.get() while the graph is paused)."""
        from lava_procs.memristor.layer import counters

        if self._runtime.active and self._ok:
            with self._runtime.host_calls():
                return {n: counters(d.counts.get()) for n, d in self.device_layers.items()}
        return {n: (dict(c) if c is not None else counters(np.zeros(len(DEVICE_COUNTERS))))
                for n, c in self._counts.items()}

    def device_state(self, node: str) -> dict:
        """The volatile device state of plastic node ``node``, read from the Vars of its
        DeviceLayer: {"g_st_p": (H, K), "r_p", "q_p", "g_st_m", "r_m", "q_m"} (after a frame)."""
        from conversion import device_layer as dl
        from lava_procs.memristor.layer import var_name

        dev = self.device_layers[node]
        with self._runtime.host_calls():
            return {var_name(v, side): np.asarray(getattr(dev, var_name(v, side)).get(), np.float64)
                    for side in dl.SIDES for v in dl.DEVICE_STATE}

    def plastic_state(self, var: str = "F") -> np.ndarray:
        """A Var of the plastic layer (``F``, ``z``, ``uW``, ``N``, ...), read with Var.get()."""
        proc = self.graph.layers[next(n for n, k in self.graph.kinds.items() if k == "plastic")]
        with self._runtime.host_calls():
            return np.asarray(getattr(proc, var).get())

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
    """Backend ``lava-fixed``: bit-accurate fixed_pt models; ``synapses="device"`` runs the plastic
    layer on device pairs with the integer device layer (:class:`LavaRunner`)."""
    return LavaRunner(spec, fixed_point=True, synapses=synapses, device=device, **options)


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
    raise UnsupportedNetworkError("backend 'loihi2': the plastic layer (PlasticLayer) has Python (CPU) ProcessModels only; a "
                                  "Loihi 2 NcProcessModel (microcode neurons) for it is not written yet")


