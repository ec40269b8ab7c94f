"""The converted Pong policy as a Brian2 network, run frame by frame or as a whole closed loop in one run().

Built from a converted :class:`conversion.graph.Network` (sigma-delta form, float64):

* every SigmaDelta node is a ``NeuronGroup`` with ``u`` (integrated synaptic input, initialised to
  the bias), ``y = act(u)`` (a subexpression), ``sent`` and a per-unit ``thr``; its event is Brian2's
  native threshold, ``threshold='abs(y - sent) > thr'``, and its event code (the reset, run in the
  ``before_synapses`` slot) stores the graded payload once per sending unit, ``payload = y - sent``,
  then ``sent = sent + (y - sent)``;
* Conv2d and Affine nodes are ``Synapses`` with precomputed connectivity (i, j, w), ordered by
  source unit, and one (zero) delay: every (input unit, output unit, kernel weight) triple of the
  convolution (409,600 synapses for conv1, 663,552 for conv2),
  ``on_pre='u_post += w * payload_pre'``; a Scale node is folded into the next synapse's weights.
  Affine -> Output heads are NeuronGroups whose ``u`` is read;
* the plastic STPN layer is two ``Synapses`` objects (x -> h, 2592 x 64, and the recurrent
  h -> h, 64 x 64) carrying per-synapse W, F, lam, gamma (synapse f H + h holds entry (h, f),
  so that consecutive synapses add into different units).  Row norms and G z are native Brian2
  *summed variables* (``n2_post = (W + F)**2``, ``dot_post = (W + F) * z``); the neuron-side
  operations (N = sqrt(sum) + eps, a = dot / N + b, y = tanh(a)) are ``run_regularly`` code of the
  h NeuronGroup; the plasticity F <- clip(lam F / N + gamma y z, +-f_max) (no clip for f_max = inf;
  ideal synapse model) is
  ``run_regularly`` code of the Synapses (slot ``end``, after the neurons).  Everything is Brian2 code generation
  (numpy or cython target); nothing runs in a Python ``network_operation``.

Timing: like Lava, a graded event reaches the next layer's threshold one Brian2 step later, so one
frame is ``period`` steps (one per event-sending stage: 4 for Pong), frame k the steps
``1 + k period + [0, period)`` (``frame_offset`` = 1).  The host sets the input group's ``x`` to the
frame, runs ``period`` steps, and reads the heads' ``u``.  Every SigmaDelta group's threshold is
gated to its own sub-step (depth - 1) by ``gate = int((step - frame_offset) % period == depth - 1)``
with ``step = int(t / dt + 0.5)``, so that each layer sends at most one event per unit and frame, as
the oracle does (ungated, a layer would already fire in sub-step 0 on its bias, before its input
arrived, and then a second time).  The STPN layer computes once per frame, in the frame's last step
(after the x events of the layer below arrived): its h group and both Synapses objects (summed
variables, plasticity) run on a frame clock (dt = period steps) whose ticks are exactly those steps
(multiples of period, hence the offset of 1), so their dense code runs once per frame, not in every
step, and ungated; run_loop's network operation runs on it too.  cpp_standalone starts at step 0
instead: it runs that idle step (all gates 0) first, with the frame clock's objects off, then the
frames, so that the frame clock's objects start at its tick 1 as in runtime mode; its monitors
record on the frame clock (the input layer's x is the frame itself and is not recorded).

One run: :meth:`Brian2Runner.run_loop` plays a closed loop in a single ``run()`` -- a
``NetworkOperation`` in the ``end`` slot of every frame's last step reads the frame's outputs, hands
them to the caller (snn_agent.play: greedy action, env step) and writes the next frame into the
input group, or stops the run at that frame boundary; ``run_frames`` replays a recording the same
way.  Measured on the 2-core CPU machine, 2026-12, 20 frames of the shipped STPN under cProfile: a
``run()`` per frame cost 0.47 s per frame, of which 0.26 s Brian2's per-run set-up (code objects,
identifier hashing), 0.17 s a ``gc.collect`` per run and only ~0.04 s the simulation itself (of that
~85 % the dense plastic layer computed in all 4 sub-steps); 100 recorded frames: 2.3 frames/s
before, 38-60 frames/s in one run with the frame clock (NumPy reference 140-750 frames/s on the
same, shared machine).  Later (Brian2's per-code-object profile, 200 recorded frames, one core):
the x -> h plasticity, both summed variables of x -> h and the conv2 pathway took ~70 % of the
runtime (numpy target) run and ~80 % of the compiled one; hence the source-major synapse orders
(the summed variables' accumulation and an event's synapses run through memory in order), the
payload per sending unit instead of per synapse, the ungated frame-clock code, one delay instead of
one per synapse, the zero-length run at build (code generation out of the frames' run) and the
frozen garbage collector during a run (Brian2 collects at every run()).

Device synapses (``synapses="device"``, :mod:`conversion.device_layer`): each synapse (h, f) of the
plastic layer carries a differential pair of devices (p, m) -- per device the volatile state
``g_st_*``, ``r_*``, ``q_*`` and the frozen draws of ``conversion.device_layer.build(mapping, W, lam)``
(the Devices object the NumPy reference builds: same seed, same draws; W is its read-back
long-term weight) -- and F is the read-back subexpression F = (g_st_p - g_st_m) / g_unit that the
summed variables of the forward pass use.  The plasticity is *event-driven*: the h group has a
custom event ``plastic`` (condition ``gate == 1``: once per frame, in the layer's sub-step, after
its run_regularly computed y and N), and both Synapses objects run one device step in an
``on_post`` pathway of that event -- code generated from ``conversion.device_layer.plasticity``,
``pulse_tally`` and ``bias_energy`` by :func:`brian_models.memristor_synapse.pair_equations`.
Between events the devices' state is held; at each event it is first relaxed over the interval
since the previous event, which is always one agent step (dt of the mapping, physical time), in
closed form x <- x exp(-dt / tau_x) with each device's own retention factor from the Devices object
(the exact solution of dx/dt = -x / tau_x that Brian2's event-driven equations apply at an event,
with the factor computed once, as the NumPy reference multiplies with it).  Then the target
F' / N + gamma h z^T, the split of dG between the devices, the exact soft-bound inversion, width,
cap and the pulse with the device's own a_st, facilitation, availability and the step's
cycle-to-cycle factor: the host draws it with ``conversion.device_layer.c2c_noise(mapping, step,
(1, H, K))`` (step: agent steps since the runner was built, as the reference's) and writes it into
the synapses' ``c2c_p`` / ``c2c_m`` before each frame.  Pulses and energies accumulate per synapse
(``n_pot``, ``n_dep``, ``e_pulse``, ``e_bias``); ``runner.device_stats`` sums them as the reference's
``device_stats`` (conversion.simulator.DEVICE_COUNTERS), across resets.

Relation to the memristive synapse (brian_models/memristor_synapse.py): F is the volatile part
G_ST of a differential device pair (F = (g_st+ - g_st-) / g_unit) and lam the retention over one
frame, lam = exp(-dt_frame / tau(V_bias)) (the device's ``dg_st/dt = -g_st / tau``); the Hebbian
term gamma y z is the change of G_ST caused by an update pulse in the linear, small-pulse regime
of the device's soft-bounded rule (k (g_st_max - g_st) ~ k g_st_max when g_st << g_st_max), and
f_max the conductance bound.  The ideal synapse model uses that linear form, as the oracle does, so
the network agrees with conversion's simulator (the device model above runs the full device rule);
the division by the row norm N (F / N) and the tanh are neuron-side operations with no device
counterpart.
"""
from __future__ import annotations

import contextlib
import gc
import signal
import time

import numpy as np

from brian_models import memristor_synapse, require_brian2
from brian_models.codegen import Brian2Ops, Sym, code_of
from conversion import semantics as sem
from conversion.backend import StepOut, UnsupportedNetworkError
from conversion.simulator import DEVICE_COUNTERS
from mstpn_base import signals
from mstpn_base.errors import BackendUnavailableError, MstpnError

TARGETS = ("numpy", "cython")


def _act_expr(kind: str) -> str:
    """y = act(u), generated from :func:`conversion.semantics.activation`."""
    return code_of(sem.activation(Brian2Ops(), kind, Sym("u")))


def _sender(value: str, gated: bool = True) -> dict:
    """Threshold of a sigma-delta group sending ``value`` (x or y), generated from
    :func:`conversion.semantics.sigma_delta`.  ``gated``: the threshold holds in the group's
    sub-step only (its ``gate``); a group on the frame clock computes in that sub-step only and
    needs no gate.  The event's code: :func:`_send`."""
    _, _, fire = sem.sigma_delta(Brian2Ops(), Sym(value), Sym("sent"), Sym("thr"))
    return dict(threshold=f"{code_of(fire)} == 1" + (" and gate == 1" if gated else ""))


def _send(grp, value: str) -> None:
    """The event code of a sigma-delta group (its reset), generated from
    :func:`conversion.semantics.change` and :func:`conversion.semantics.sigma_delta`: the payload
    ``payload`` (the change, once per sending unit), the new ``sent``, and the counts of the event and
    its fan-out.  It runs before the synapses slot, whose pathways read ``payload_pre``
    (:func:`_payload`), so that the change is computed per unit, not per synapse."""
    _, sent, _ = sem.sigma_delta(Brian2Ops(), Sym(value), Sym("sent"), Sym("thr"))
    grp.run_on_event("spike", f"payload = {code_of(sem.change(Sym(value), Sym('sent')))}\nsent = {code_of(sent)}\n"
                              "nev += 1\nnsyn += fan", when="before_synapses")


def _payload(pre) -> str:
    """The graded payload a synapse reads on an event: the sender's change, which the sender's
    event code (:func:`_send`) stored in its ``payload`` before the synapses slot."""
    return "payload_pre"


def _gate(phase: int) -> str:
    """Subexpression that is 1 in sub-step ``phase`` of every frame (``period`` steps from step
    ``frame_offset``; 0 in the steps before), else 0."""
    step = "int(t / dt + 0.5)"
    return f"gate = int((({step} - frame_offset) % period) == {int(phase)}) * int({step} >= frame_offset) : integer"


def conv_connectivity(node):
    """(i, j, w_index) of every synapse of a valid Conv2d node (C-order flat indices)."""
    ci_n, h, w = node.in_shape
    co_n, _, kh, kw = node.weight.shape
    (sh, sw), (ph, pw) = node.stride, node.padding
    if ph or pw:
        raise UnsupportedNetworkError(f"brian2: Conv2d padding {node.padding} is not supported")
    _, ho, wo = node.out_shape
    co, oy, ox, ci, ky, kx = np.meshgrid(np.arange(co_n), np.arange(ho), np.arange(wo), np.arange(ci_n),
                                         np.arange(kh), np.arange(kw), indexing="ij")
    i = ((ci * h + oy * sh + ky) * w + ox * sw + kx).ravel()
    j = ((co * ho + oy) * wo + ox).ravel()
    widx = (((co * ci_n + ci) * kh + ky) * kw + kx).ravel()
    return i, j, widx


class Brian2Runner:
    """Brian2 run of a converted sigma-delta network.

    ``target`` numpy or cython: frame by frame (``step``) or a whole closed loop in one run
    (``run_loop``), so it can play Pong;
    ``synapses="device"`` runs the plastic layer as device pairs (module docstring) with the mapping
    ``device`` (a conversion.device_layer.Mapping or block; None: the node's device block).
    ``target`` cpp_standalone: recorded sequences only (``run_frames``): the frames become a
    ``TimedArray`` that drives the input group, and the whole sequence is one compiled C++ run
    (``directory``: where Brian2 writes the project; default a fresh temporary folder).  After a
    standalone ``run_frames`` the seconds of its parts: ``build_s`` (Brian2 objects and C++ code
    generation), ``compile_s`` (make), ``run_s`` (the compiled binary: loading the connectivity, the
    run, writing the results), ``sim_s`` (its simulation loop alone), ``read_s`` (results read back).
    """

    def __init__(self, net, target: str = "numpy", directory=None, synapses: str = "ideal", device=None):
        b2 = require_brian2()
        if target not in TARGETS + ("cpp_standalone",):
            raise MstpnError(f"brian2 target {target!r}: choose numpy, cython or cpp_standalone")
        self.b2, self.net, self.target, self.directory = b2, net, target, directory
        self.name = "brian2" if target == "numpy" else f"brian2-{target.replace('cpp_', '')}"
        self.standalone = target == "cpp_standalone"
        self.synapses = synapses
        self.build_s = self.compile_s = self.run_s = self.sim_s = self.read_s = None   # standalone (s)
        #: ``profile = True``: runs record Brian2's per-code-object times; after a run ``profile_s``
        #: lists (code object, seconds) of that run, largest first (Brian2's ``profiling_info``)
        self.profile, self.profile_s = False, None
        #: device model: per plastic node its Devices, Mapping and Brian2 objects
        self.devices, self.mappings, self.plastic = {}, {}, {}
        if synapses not in ("ideal", "device"):
            raise UnsupportedNetworkError(f"brian2: unknown synapse model {synapses!r} (ideal or device)")
        if synapses == "device":
            if self.standalone:
                raise UnsupportedNetworkError("brian2-standalone runs the ideal synapse model only; the device "
                                              "model runs on brian2 and brian2-cython")
            self._prepare_devices(net, device)
        if not self.standalone:
            self._build()

    def _prepare_devices(self, net, device):
        """The frozen devices of every plastic node: conversion.device_layer.build with the mapping
        ``device`` (a Mapping or block) or the node's device block -- the Devices the NumPy
        reference builds (same seed, same draws)."""
        from conversion import device_layer as dl

        self.devices = dl.network_devices(net, device, error=UnsupportedNetworkError)
        self.mappings = {n: devs.mapping for n, devs in self.devices.items()}
        #: counted device activity before the last reset (the Brian2 accumulators restart at 0)
        self._dev_base = {n: dict.fromkeys(DEVICE_COUNTERS, 0) for n in self.devices}
        self._dev_t = 0          # agent steps since construction: the index of the c2c draws (as NumPy's sim.t)

    # -- construction -------------------------------------------------------------------------
    def _build(self, input_frames=None):
        """Create the Brian2 objects; with ``input_frames`` (T, n_input) the input group reads
        frame k from a TimedArray during frame k's ``period`` steps (standalone runs)."""
        from conversion import graph as g

        from conversion.backend import layers_of

        b2, net = self.b2, self.net
        if not self.standalone:
            b2.prefs.codegen.target = self.target
        b2.BrianLogger.log_level_error()
        layers = layers_of(net)          # same cut as Lava: [(name, nodes, src)]
        self.layers = layers
        depth = {}
        for name, nodes, src in layers:
            depth[name] = 1 if src is None else depth[src] + (0 if isinstance(net.nodes[name], g.Output) else 1)
        # an Output (head) integrates in the step its source fires: no extra step
        self.period = max(depth.values())
        self.depth = depth
        self.clock = b2.Clock(dt=1 * b2.ms)
        # the plastic layer (its h group, both Synapses, their summed variables and plasticity) runs
        # on a frame clock (dt = period steps) that ticks in its sub-step only: frame k is the steps
        # frame_offset + k period + [0, period), frame_offset = 1, so that sub-step period - 1 falls on
        # multiples of period.  numpy/cython start at step 1; cpp_standalone runs an idle step 0
        # (every gate is 0 in it).
        self.offset = 1
        self.frame_clock = b2.Clock(dt=self.period * self.clock.dt, name="frame_clock")
        objs, groups, ns = [], {}, {"period": self.period, "frame_offset": self.offset}
        fan = {}
        for name, nodes, src in layers:
            kinds = [type(net.nodes[n]).__name__ for n in nodes]
            last = net.nodes[name]
            n_out = int(np.prod(last.out_shape))
            stpn = [n for n in nodes if kinds[nodes.index(n)] == "PlasticSTPN"]
            if kinds[0] == "Input":
                if kinds != ["Input", "SigmaDelta"] or last.activation != "identity":
                    raise UnsupportedNetworkError(f"brian2: input layer {nodes} must be Input -> SigmaDelta(identity)")
                if input_frames is None:
                    x_eq = "x : 1"
                else:
                    ns["frames_in"] = b2.TimedArray(np.asarray(input_frames, np.float64),
                                                    dt=self.period * self.clock.dt)
                    x_eq = "x = frames_in(t - frame_offset * dt, i) : 1"
                grp = b2.NeuronGroup(n_out, x_eq + "\nsent : 1\npayload : 1\nthr : 1 (constant)\nnev : 1\nnsyn : 1\n"
                                     "fan : 1 (constant)\n" + _gate(0), **_sender("x"), clock=self.clock,
                                     name=f"g_{name}", namespace=ns)
                _send(grp, "x")
                grp.thr = last.threshold.reshape(-1)
                groups[name] = grp
                objs.append(grp)
                continue
            if stpn:
                groups[name] = self._build_stpn(net, nodes, src, groups, objs, ns)
                continue
            syn_nodes = [n for n in nodes if kinds[nodes.index(n)] in ("Conv2d", "Affine")]
            other = [k for k in kinds if k not in ("Scale", "Flatten", "Conv2d", "Affine", "SigmaDelta", "Output")]
            if len(syn_nodes) != 1 or other:
                raise UnsupportedNetworkError(f"brian2: layer {nodes} ({kinds}) is not synapse [+ neuron] ")
            sn = net.nodes[syn_nodes[0]]
            scale = 1.0
            for n, k in zip(nodes, kinds):
                if k == "Scale":
                    sc = np.unique(net.nodes[n].scale)
                    if sc.size != 1:
                        raise UnsupportedNetworkError(f"brian2: Scale {n!r} must be uniform to fold into weights")
                    scale *= float(sc[0])
            n_u = int(np.prod(sn.out_shape))
            if isinstance(last, g.SigmaDelta):
                eqs = (f"u : 1\ny = {_act_expr(last.activation)} : 1\nsent : 1\nthr : 1 (constant)\n"
                       "payload : 1\nnev : 1\nnsyn : 1\nfan : 1 (constant)\n" + _gate(depth[name] - 1))
                grp = b2.NeuronGroup(n_u, eqs, **_sender("y"), clock=self.clock, name=f"g_{name}", namespace=ns)
                _send(grp, "y")
                grp.thr = np.broadcast_to(last.threshold.reshape(-1), (n_u,))
            else:   # Output: its u is read
                grp = b2.NeuronGroup(n_u, "u : 1", clock=self.clock, name=f"g_{name}", namespace=ns)
            bias = sn.bias.reshape(-1, 1, 1) if isinstance(sn, g.Conv2d) else sn.bias
            grp.u = np.broadcast_to(bias, sn.out_shape).reshape(-1)
            pre = groups[src]
            if isinstance(sn, g.Conv2d):
                i, j, widx = conv_connectivity(sn)
                w = sn.weight.reshape(-1)[widx] * scale
            else:
                j, i = np.meshgrid(np.arange(sn.weight.shape[0]), np.arange(sn.weight.shape[1]), indexing="ij")
                i, j = i.ravel(), j.ravel()
                w = sn.weight[j, i] * scale
            # synapses ordered by source unit: an event's synapses are contiguous in memory (each
            # (source, target) pair has one synapse, so every target's sum runs in the same order)
            order = np.argsort(i, kind="stable")
            i, j, w = i[order], j[order], w[order]
            # one delay for all synapses (0: the event arrives in the step it is sent), not one per synapse
            syn = b2.Synapses(pre, grp, "w : 1 (constant)", on_pre=f"u_post += w * {_payload(pre)}",
                              delay=0 * b2.ms, clock=self.clock, name=f"s_{name}", namespace=ns)
            syn.connect(i=i, j=j)
            syn.w = w
            fan[src] = fan.get(src, 0) + np.bincount(i, minlength=len(pre))
            groups[name] = grp
            objs += [grp, syn]
        for src, f in fan.items():
            groups[src].fan = f
        self.groups = groups
        self.fan = fan
        if not self.standalone:   # run_loop's frame boundary, active only during run_loop
            # on the frame clock: it ticks in the last step of every frame only (multiples of period)
            self._loop = None
            self._boundary = b2.NetworkOperation(self._frame_boundary, clock=self.frame_clock, when="end",
                                                 order=10_000, name="frame_boundary")
            self._boundary.active = False
            objs.append(self._boundary)
        self.network = b2.Network(*objs)
        if not self.standalone:
            self.network.t_ = self.offset * float(self.clock.dt)   # frame 0 starts at step offset
        self.namespace = ns
        self._frames = 0
        if not self.standalone:
            # a run of no steps generates every code object (cython: compiles it) now; Brian2 caches
            # the generated code, so the set-up of the runs that play frames costs less
            self._run(0 * b2.ms)
            self.network.store("episode_start")   # reset() = restore (state and t = 0)

    def _build_stpn(self, net, nodes, src, groups, objs, ns):

        b2 = self.b2
        kinds = [type(net.nodes[n]).__name__ for n in nodes]
        if [k for k in kinds if k not in ("Flatten",)] != ["PlasticSTPN", "SigmaDelta"]:
            raise UnsupportedNetworkError(f"brian2: plastic layer {nodes} must be [Flatten] -> PlasticSTPN -> SigmaDelta")
        st = net.nodes[[n for n, k in zip(nodes, kinds) if k == "PlasticSTPN"][0]]
        post = net.nodes[nodes[-1]]
        H, K = st.W.shape
        I = K - H
        pre_x = groups[src]
        if len(pre_x) != I:
            raise UnsupportedNetworkError(f"brian2: plastic layer expects {I} inputs, its source has {len(pre_x)}")
        ns.update(stpn_eps=st.norm_eps, f_max=st.f_max)  # period is in ns already
        phase = self.depth[nodes[-1]] - 1
        clock = self.frame_clock if phase == self.period - 1 else self.clock
        # on the frame clock every tick is the layer's sub-step (the runs start after tick 0, see
        # _build): its code runs ungated; on the step clock a gate selects the sub-step
        gated = clock is self.clock
        eqs = "\n".join([
            "a : 1", "y : 1", "sent : 1", "zprev : 1", "rownorm : 1", "b : 1 (constant)", "thr : 1 (constant)",
            "payload : 1", "nev : 1", "nsyn : 1", "fan : 1 (constant)",
            "n2x : 1", "n2h : 1", "dotx : 1", "doth : 1"] + ([_gate(phase)] if gated else []))
        # device model: the "plastic" event of every h unit, once per frame in the layer's sub-step,
        # triggers the synapses' plasticity pathway
        events = {"events": {"plastic": "gate == 1" if gated else "True"}} if self.devices else {}
        h = b2.NeuronGroup(H, eqs, **_sender("y", gated), clock=clock, name=f"g_{nodes[-1]}", namespace=ns, **events)
        _send(h, "y")
        h.b = st.b
        h.thr = np.broadcast_to(post.threshold.reshape(-1), (H,))
        # neuron-side operations, once per frame, before the threshold of that step (the masks
        # select exactly: x * 1 + 0 == x; "+ (1 - gate)" keeps the divisions finite when gated off)
        # neuron-side operations (semantics.stpn_*), once per frame, before the threshold of that
        # step; on the step clock gated by masks that select exactly (x * 1 + 0 == x), and
        # "+ (1 - gate)" keeps the divisions finite when gated off
        ops, gate = Brian2Ops(), Sym("gate")

        def sel(new, old):       # the new value in the layer's sub-step, else the old one
            return ops.where(gate, new, old) if gated else new

        norm = sem.stpn_norm(ops, Sym("n2x") + Sym("n2h"), Sym("stpn_eps"))
        pre_act = sem.stpn_preactivation(Sym("dotx") + Sym("doth"),
                                         Sym("rownorm") + (1 - gate) if gated else Sym("rownorm"), Sym("b"))
        h.run_regularly(ops.code(zprev=sel(Sym("sent"), Sym("zprev")),
                                 rownorm=sel(norm, Sym("rownorm")),
                                 a=sel(pre_act, Sym("a")),
                                 y=sel(sem.activation(ops, "tanh", Sym("a")), Sym("y"))),
                        when="before_thresholds", name=f"rr_{nodes[-1]}")
        x_payload = "x_pre" if "x" in pre_x.variables else "sent_pre"
        # the plasticity's z: x -> h: x_sent (the source layer's sent value); h -> h: h_sent of the
        # previous frame (zprev); the forward pass (summed variables, before h's reset) reads sent
        z_of = {"x": "sent_pre", "h": "zprev_pre"}
        z_read = {"x": "sent_pre" if x_payload == "sent_pre" else "x_pre", "h": "sent_pre"}
        stpn_name = [n for n, k in zip(nodes, kinds) if k == "PlasticSTPN"][0]
        dev = self.devices.get(stpn_name)
        pairs = {}
        if dev is not None:      # the device pairs, generated from conversion.device_layer
            pairs = {tag: memristor_synapse.pair_equations(dev, norm="rownorm_post", h="y_post", z=z_of[tag])
                     for tag in ("x", "h")}
            ns.update(pairs["x"].namespace)
        model = lambda tag: "\n".join([  # noqa: E731
            "W : 1 (constant)", "lam : 1 (constant)", "gamma : 1 (constant)",
            pairs[tag].model if pairs else "F : 1",
            f"n2{tag}_post = (W + F) * (W + F) : 1 (summed)",
            f"dot{tag}_post = (W + F) * {z_read[tag]} : 1 (summed)"])
        # device model: the plasticity step is a pathway of the post group's "plastic" event
        # (once per frame, in its last sub-step, after the neurons computed y and N)
        path = (lambda tag: dict(on_post={"plasticity": pairs[tag].code}, on_event={"plasticity": "plastic"})
                ) if pairs else (lambda tag: {})
        # synapse (f, h) of the (H, K) matrix is synapse f * H + h: consecutive synapses add into
        # different h units, so the summed variables' accumulation has no chain of dependent
        # additions into one unit (each row's sum runs over f in the same order either way)
        sx = b2.Synapses(pre_x, h, model("x"), clock=clock, name="s_stpn_x", namespace=ns, **path("x"))
        ix, jx = np.meshgrid(np.arange(I), np.arange(H), indexing="ij")
        sx.connect(i=ix.ravel(), j=jx.ravel())
        sh = b2.Synapses(h, h, model("h"), clock=clock, name="s_stpn_h", namespace=ns, **path("h"))
        ih, jh = np.meshgrid(np.arange(H), np.arange(H), indexing="ij")
        sh.connect(i=ih.ravel(), j=jh.ravel())
        W = st.W if dev is None else dev.W           # device: the read-back long-term weights
        for syn, cols, tag in ((sx, slice(0, I), "x"), (sh, slice(I, K), "h")):
            syn.W = _synapse_order(W[:, cols])
            syn.lam = _synapse_order(st.lam[:, cols])
            syn.gamma = _synapse_order(st.gamma[:, cols])
            for name, arr in (pairs[tag].constants.items() if pairs else ()):
                setattr(syn, name, _synapse_order(arr[:, cols]))
        if not pairs:
            # the plasticity phase, after the neurons fired (z of this frame: x_sent and h_sent(prev))
            for syn, z in ((sx, z_of["x"]), (sh, z_of["h"])):
                ops, gate = Brian2Ops(), Sym("gate_post")
                norm_post = Sym("rownorm_post") + (1 - gate) if gated else Sym("rownorm_post")
                # f_max = inf: no clip (clip(x, -inf, inf) == x), as stpn_plasticity's f_max None
                F_new = sem.stpn_plasticity(ops, Sym("F"), norm_post, Sym("lam"), Sym("gamma"), Sym("y_post"),
                                            Sym(z), f_max=None if np.isposinf(st.f_max) else Sym("f_max"))
                syn.run_regularly(ops.code(F=ops.where(gate, F_new, Sym("F")) if gated else F_new), when="end",
                                  name=f"rr_{syn.name}")
        else:
            self.plastic[stpn_name] = dict(synapses={"x": sx, "h": sh}, cols={"x": slice(0, I), "h": slice(I, K)},
                                           pairs=pairs, shape=(H, K))
        objs += [h, sx, sh]
        self.stpn_synops = 2 * H * K   # W z + F z of the dense plastic layer (summed variables)
        return h

    # -- running ------------------------------------------------------------------------------
    def reset(self):
        if not self.standalone:
            if self.devices:       # counts run on across episodes, as NumPy's device_stats
                self._dev_base = {n: dict(c) for n, c in self.device_stats.items()}
            self.network.restore("episode_start")
        self._frames = 0

    # -- the device model -----------------------------------------------------------------------
    def _write_noise(self) -> None:
        """This agent step's cycle-to-cycle factors (conversion.device_layer.c2c_noise, drawn in
        NumPy from (seed, step) with the reference's (1, H, K) shape) into the synapses' c2c_*."""
        from conversion import device_layer as dl

        for n, info in self.plastic.items():
            noise = dl.c2c_noise(self.mappings[n], self._dev_t, (1, *info["shape"]))
            if noise is None:
                continue
            for tag, syn in info["synapses"].items():
                for side, var in info["pairs"][tag].noise.items():
                    setattr(syn, var, _synapse_order(noise[side][0][:, info["cols"][tag]]))

    def _count_step(self) -> None:
        for n in self.plastic:
            c = self._dev_base[n]
            c["device_steps"] += 1
            c["duration_s"] += self.mappings[n].dt

    def _per_synapse(self, node, name) -> np.ndarray:
        """A per-synapse variable of plastic ``node`` as an (H, K) array (x -> h columns, then h -> h)."""
        info = self.plastic[node]
        H, _ = info["shape"]
        return np.concatenate([np.asarray(getattr(info["synapses"][t], name)[:]).reshape(-1, H).T for t in ("x", "h")],
                              axis=1)

    def device_state(self, node: str = "stpn") -> dict:
        """The volatile state of the devices of plastic ``node``: per side {g_st, r, q} arrays (H, K)."""
        from conversion import device_layer as dl

        return {side: {v: self._per_synapse(node, memristor_synapse.pair_state_name(v, side))
                       for v in dl.DEVICE_STATE} for side in dl.SIDES}

    def read_back_F(self, node: str = "stpn") -> np.ndarray:
        """F = (g_st,p - g_st,m) / g_unit (H, K) of plastic ``node``, as the forward pass reads it."""
        return self._per_synapse(node, "F")

    @property
    def device_stats(self) -> dict:
        """Per plastic node the counted device activity since the start (synapses="device"), the keys
        of conversion.simulator.DEVICE_COUNTERS: the per-synapse accumulators of the generated code
        summed over the synapses, plus the counts before the last reset."""
        out = {}
        for n, info in self.plastic.items():
            c = dict(self._dev_base[n])
            for tag, syn in info["synapses"].items():
                for key, var in info["pairs"][tag].counters.items():
                    total = float(np.sum(np.asarray(getattr(syn, var)[:])))
                    c[key] = c[key] + (int(round(total)) if key in ("potentiating", "depressing") else total)
            c["pulses"] = c["potentiating"] + c["depressing"]
            out[n] = c
        return out

    @staticmethod
    def _value_name(grp) -> str:
        """The variable a layer reports: the input's x, a sigma-delta group's sent, a head's u."""
        return "x" if "x" in grp.variables else "sent" if "sent" in grp.variables else "u"

    def run_frames(self, frames) -> list:
        """Run a recorded sequence (T, 84, 84) from the episode start; one :class:`StepOut` per
        frame.  numpy/cython: one Brian2 run (:meth:`run_loop`); cpp_standalone: one compiled run."""
        if not self.standalone:
            self.reset()
            outs = []

            def collect(out):
                outs.append(out)
                return frames[len(outs)] if len(outs) < len(frames) else None

            if len(frames):
                self.run_loop(frames[0], collect, max_frames=len(frames))
            return outs
        import shutil
        import tempfile

        b2 = self.b2
        frames = np.asarray(frames, np.float64).reshape(len(frames), -1)
        directory = self.directory or tempfile.mkdtemp(prefix="mstpn_brian2_standalone_")
        t0 = time.perf_counter()
        b2.set_device("cpp_standalone", directory=directory, build_on_run=False)
        try:
            self._build(input_frames=frames)
            mons, spikes = {}, {}
            for name, _, _ in self.layers[1:]:    # the input layer's x is the frame itself: not recorded
                grp = self.groups[name]
                mons[name] = b2.StateMonitor(grp, self._value_name(grp), record=True, when="end",   # frame ends
                                             clock=self.frame_clock, name=f"m_{name}")
            for name, grp in self.groups.items():
                if "nev" in grp.variables:
                    spikes[name] = b2.SpikeMonitor(grp, name=f"spk_{name}")
            self.network.add(*mons.values(), *spikes.values())
            # the idle step 0 (every gate 0) with the frame clock's objects off: they start at its
            # tick 1, the last step of frame 0, as in runtime mode (which starts at step 1)
            on_frame_clock = [o for o in self.network.sorted_objects if o.clock is self.frame_clock]
            for o in on_frame_clock:
                o.active = False
            with _gc_frozen():
                self.network.run(self.offset * self.clock.dt, namespace=self.namespace, profile=self.profile)
                for o in on_frame_clock:
                    o.active = True
                self.network.run(len(frames) * self.period * self.clock.dt, namespace=self.namespace,
                                 profile=self.profile)
            try:
                b2.device.build(directory=directory, compile=True, run=True, debug=False, with_output=False)
            except Exception as exc:  # noqa: BLE001 - compiler missing or failing: say so
                raise BackendUnavailableError(f"brian2 cpp_standalone could not build or run the C++ project in "
                                              f"{directory}: {type(exc).__name__}: {str(exc).splitlines()[0][:200]}") from None
            if self.profile:
                self._read_profile()
            timers = b2.device.timers
            self.compile_s = sum(v or 0.0 for v in timers["compile"].values())
            self.run_s = float(timers["run_binary"] or 0.0)
            self.sim_s = float(b2.device._last_run_time or 0.0)
            self.build_s = time.perf_counter() - t0 - self.compile_s - self.run_s
            t0 = time.perf_counter()
            # frame k ends at step offset + k period + period - 1 = (k + 1) period: frame-clock tick
            # k + 1, the monitors' record k
            values = {n: np.asarray(getattr(m, self._value_name(self.groups[n]))[:, :len(frames)]).T
                      for n, m in mons.items()}
            values[self.layers[0][0]] = frames
            values = {n: values[n] for n, _, _ in self.layers}
            outs = [StepOut(None) for _ in frames]
            for name, mon in spikes.items():
                frame_of = (np.asarray(np.round(np.asarray(mon.t / self.clock.dt)), int) - self.offset) // self.period
                idx = np.asarray(mon.i[:])
                fan = self.fan.get(name, np.zeros(len(self.groups[name])))
                ev = np.bincount(frame_of, minlength=len(frames))
                syn = np.bincount(frame_of, weights=np.asarray(fan)[idx], minlength=len(frames))
                for k, out in enumerate(outs):
                    out.events[name], out.synops[name] = int(ev[k]), int(round(syn[k]))
        finally:
            b2.device.reinit()
            b2.set_device("runtime")
            if self.directory is None:
                shutil.rmtree(directory, ignore_errors=True)
        from conversion.backend import logits_node

        head = logits_node(self.net)
        for k, out in enumerate(outs):
            out.acts = {n: v[k].copy() for n, v in values.items()}
            out.logits = out.acts[head].copy()
        self.read_s = time.perf_counter() - t0
        return outs

    def _run(self, duration) -> None:
        """``network.run(duration)``; a run that Brian2 stopped early (its Ctrl-C handler, if the
        preference set in :func:`_b2` was changed back) raises Interrupted instead of returning
        a partial frame."""
        with _gc_frozen():
            self.network.run(duration, namespace=self.namespace, profile=self.profile)
        if self.profile:
            self._read_profile()
        if self.b2.Network._globally_stopped:
            raise signals.Interrupted(signal.SIGINT)

    def _read_profile(self) -> None:
        self.profile_s = [(name, float(sec)) for name, sec in self.network.profiling_info]

    def step(self, obs) -> StepOut:
        """One frame: ``period`` Brian2 steps in one ``run()`` (closed loops: :meth:`run_loop`)."""
        if self.standalone:
            raise UnsupportedNetworkError("brian2-standalone compiles a whole recorded sequence into one C++ run; "
                                          "frame-by-frame and closed-loop play need brian2 or brian2-cython")
        before = self._begin_frame(obs)
        self._run(self.period * self.clock.dt)
        return self._end_frame(before)

    def _counts(self) -> dict:
        """Per sending group the totals (events, synaptic operations) counted so far."""
        return {n: (float(np.sum(_values(g, "nev"))), float(np.sum(_values(g, "nsyn"))))
                for n, g in self.groups.items() if "nev" in g.variables}

    def _begin_frame(self, obs) -> dict:
        """Write frame ``obs`` into the input group (and the step's c2c draws); the counts before it."""
        # written into the device's array directly (Brian2's unit-checked setattr costs ~0.2 ms)
        self.groups[self.layers[0][0]].variables["x"].set_value(np.asarray(obs, np.float64).reshape(-1))
        if self.devices:
            self._write_noise()
        return self._counts()

    def _end_frame(self, before: dict) -> StepOut:
        """After a frame's last Brian2 step: count it and read its :class:`StepOut`."""
        from conversion.backend import logits_node

        self._frames += 1
        if self.devices:
            self._count_step()
            self._dev_t += 1
        out = StepOut(None)
        after = self._counts()
        for name, _, _ in self.layers:
            g = self.groups[name]
            out.acts[name] = np.array(_values(g, self._value_name(g)), np.float64)
            if name in before:
                out.events[name] = int(round(after[name][0] - before[name][0]))
                out.synops[name] = int(round(after[name][1] - before[name][1]))
        out.logits = out.acts[logits_node(self.net)].copy()
        return out

    def run_loop(self, obs, on_frame, max_frames: int) -> int:
        """Closed loop in one Brian2 ``run()``: frame ``obs`` (84, 84) first; at the end of every
        frame's last step a network operation calls ``on_frame(StepOut)``, which returns the next
        frame or None (the run stops there, at a frame boundary; also after ``max_frames``).
        Continues from the runner's state (call :meth:`reset` first for a new episode).  Returns
        the frames run.  One run pays Brian2's per-run() code-object set-up once, not per frame."""
        if self.standalone:
            raise UnsupportedNetworkError("brian2-standalone compiles a whole recorded sequence into one C++ run; "
                                          "frame-by-frame and closed-loop play need brian2 or brian2-cython")
        if int(max_frames) < 1:
            raise MstpnError(f"max_frames must be >= 1, got {max_frames}")
        start = self._frames
        self._loop = dict(on_frame=on_frame, last=start + int(max_frames), error=None,
                          before=self._begin_frame(obs))
        self._boundary.active = True
        try:
            self._run(int(max_frames) * self.period * self.clock.dt)
        finally:
            self._boundary.active = False
            loop, self._loop = self._loop, None
        if loop["error"] is not None:
            raise loop["error"]
        return self._frames - start

    def _frame_boundary(self) -> None:
        """The network operation of :meth:`run_loop`, in the ``end`` slot of every frame's last
        step (the frame clock), after all other objects."""
        loop = self._loop
        try:
            out = self._end_frame(loop["before"])
            nxt = loop["on_frame"](out)
            if nxt is None or self._frames >= loop["last"]:
                self.network.stop()
                return
            loop["before"] = self._begin_frame(nxt)
        except BaseException as exc:   # noqa: BLE001 - re-raised by run_loop after the run
            loop["error"] = exc
            self.network.stop()

    def close(self):
        pass


def make_runner(net, target: str = "numpy", synapses: str = "ideal", device=None, **_):
    return Brian2Runner(net, target=target, synapses=synapses, device=device)


def make_cython_runner(net, synapses: str = "ideal", device=None, **_):
    return Brian2Runner(net, target="cython", synapses=synapses, device=device)


def make_standalone_runner(net, directory=None, synapses: str = "ideal", device=None, **_):
    return Brian2Runner(net, target="cpp_standalone", directory=directory, synapses=synapses, device=device)


@contextlib.contextmanager
def _gc_frozen():
    """Brian2's ``Network.run`` starts with a full ``gc.collect()`` (0.2-0.5 s in a process that
    holds a policy and its recordings); inside this context the objects that existed before it are
    frozen (``gc.freeze``), so that collection scans only what was created since."""
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()


def _synapse_order(a) -> np.ndarray:
    """An (H, n) block of the plastic layer's matrix as per-synapse values: synapse f * H + h
    holds a[h, f] (the order in which :meth:`Brian2Runner._build_stpn` connects them)."""
    return np.ascontiguousarray(np.asarray(a).T).reshape(-1)


def _values(group, name: str) -> np.ndarray:
    """The current values of state variable ``name`` of ``group`` in runtime mode, read from the
    device's array without Brian2's unit-checked indexing (``group.name[:]`` costs ~0.1 ms per
    read; the frame loop reads every group's counters and outputs each frame)."""
    return group.variables[name].get_value()
