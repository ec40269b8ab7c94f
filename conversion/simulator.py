"""Vectorised NumPy reference simulator of a converted :class:`~conversion.graph.Network`.

It is the oracle for other backends: one call of :meth:`Simulator.step` is one algorithmic step
(one agent frame) for a batch of B independent environments; afterwards ``sim.values[node]`` holds
what each node exposes to its receivers (SigmaDelta: the sent value y_sent; Conv2d/Affine: the
integrated input u; PlasticSTPN: the pre-activation a), ``sim.deltas[node]`` the events of this
step (zero where none) and ``sim.state[node]`` every internal state (y, u, F, z, N, ...).

Semantics per node: :mod:`conversion.semantics` (the float arithmetic here evaluates it; the
integer specification is :mod:`conversion.fixed_point`).  Order within a step: nodes in evaluation order
(no synaptic delay), then the plasticity phase of every PlasticSTPN (uses this step's N, z and the
post activation), as Loihi's learning phase after the neuron phase.  Synapse nodes integrate their
source's events (u += W e); a source without events (Input, graded Scale) is read densely.

``fixed=True`` runs the integer specification of :mod:`conversion.fixed_point` with the network's
``fixed`` parameters (:func:`conversion.quantise.quantise`); values are then int64 and
:class:`StepResult` also gives the outputs converted back to float.  With numba
(:data:`conversion.plastic_kernels.ENABLED`) the "lava" sigma-delta nodes, the event-driven Conv2d
synapses and the plastic layer run as fused integer kernels, the same integers; where one reports
a value beyond its budget, that node's NumPy form runs instead and the monitor records.

Counted per node (``sim.stats``): ``events`` (emitted events or spikes), ``synops`` (synaptic
operations actually performed: events x fan-out, plus the plastic layer's activity-driven F z
products), ``dense`` (multiply-accumulates of the dense network for the same frames) and, for the
plastic layer, ``plastic_ops`` (row norm, decay and Hebbian updates actually performed) against
``plastic_dense``.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from conversion import device_layer as dl
from conversion import device_layer_fixed as dlf
from conversion import fixed_point as fx
from conversion import graph as g
from conversion import plastic_kernels as pk
from conversion import sd_reset
from conversion import semantics as sem
from conversion.ops import EventConv2d, conv2d, conv_fanout, exact_in_float, matvec, row_dots
from mstpn_base.errors import DataFormatError, ParameterError
from mstpn_base.ops import NUMPY
from mstpn_base.registry import SYNAPSE_MODELS   # the abstract rule, or the device pairs of conversion.device_layer

INT = np.int64
COUNTERS = ("events", "synops", "dense", "plastic_ops", "plastic_dense", "hebbian")
#: what a device run counts per plastic node (``sim.device_stats``)
DEVICE_COUNTERS = ("pulses", "potentiating", "depressing", "pulse_energy_J", "bias_energy_J", "device_steps",
                   "duration_s")


@dataclass
class StepResult:
    logits: np.ndarray        # (B, n_actions) float
    value: np.ndarray         # (B,) float
    actions: np.ndarray       # (B,) argmax of the logits (first index on ties)
    logits_int: np.ndarray | None = None  # fixed point only: the integer logits


class Simulator:
    """``Simulator(net, batch=1, fixed=False, monitor=None, synapses="ideal", device=None)``;
    ``reset(done)``; ``step(obs)``.

    ``synapses="device"`` runs the plastic layer on device pairs (:mod:`conversion.device_layer`)
    with the mapping of the node's ``device`` block, or ``device`` (a :class:`~conversion.device_layer.Mapping`
    or block) if given; ``sim.devices[node]`` holds the frozen devices and ``sim.device_stats[node]``
    the counted pulses, their energy and the bias energy (:data:`DEVICE_COUNTERS`).
    """

    def __init__(self, net: g.Network, batch: int = 1, fixed: bool = False, monitor: fx.OverflowMonitor | None = None,
                 synapses: str = "ideal", device=None):
        self.net, self.B, self.fixed = net, int(batch), bool(fixed)
        if self.B < 1:
            raise ParameterError(f"batch must be >= 1, got {batch}")
        if synapses not in SYNAPSE_MODELS:
            raise ParameterError(f"synapses must be one of {SYNAPSE_MODELS}, got {synapses!r}")
        self.synapses, self.devices, self.device_stats, self._dev_arrays = synapses, {}, {}, {}
        self._dev_fixed = {}       # fixed point: the integer devices (conversion.device_layer_fixed)
        if synapses == "device":
            self.devices = dl.network_devices(net, device)
            for n, devs in self.devices.items():
                self.device_stats[n] = dict.fromkeys(DEVICE_COUNTERS, 0)
                self._dev_arrays[n] = devs.arrays()
                if self.fixed and net.fixed is not None and n in net.fixed:
                    self._dev_fixed[n] = dlf.build_fixed(devs, net.fixed[n])
        if self.fixed:
            if net.fixed is None:
                raise ParameterError("network has no fixed-point parameters; quantise it first "
                                     "(conversion.quantise.quantise or `mstpn convert` with calibration)")
            if net.mode != "sigma_delta":
                raise ParameterError("the fixed-point simulator runs the sigma-delta form only")
        self.monitor = monitor if monitor is not None else fx.OverflowMonitor()
        self.order = net.order
        self._rest = tuple(self.order[1:])       # what step() advances
        self.src = {n: (None if isinstance(net.nodes[n], g.Input) else net.source(n)) for n in self.order}
        self.out_logits, self.out_value = self._outputs()
        self._prepare()
        self.t = 0
        self.state: dict = {}
        self.values: dict = {}
        self.deltas: dict = {}
        self._active: dict = {}    # fixed point: {node: (its events array, their flat indices)} of this step
        self.stats = {n: dict.fromkeys(COUNTERS, 0) for n in self.order}
        self.frames = 0
        self.reset()

    # -- set-up -----------------------------------------------------------------------------
    def _outputs(self):
        outs = self.net.of_type(g.Output)
        names = {n: n for n in outs}
        logits = names.get("logits", outs[0] if outs else None)
        value = names.get("value")
        if logits is None:
            raise DataFormatError("network has no Output node")
        return logits, value

    def _prepare(self):
        """Fan-outs, dense MAC counts and (fixed point) integer parameters per node."""
        net, self.fan, self.dense_macs, self.fp = self.net, {}, {}, {}
        self.conv, self.plastic, self._buffers, self._conv_tables, self._thr = {}, {}, {}, {}, {}
        self._plans = {}           # step_nodes: {nodes: (their kernels, the plastic nodes among them)}
        #: Conv2d nodes that feed a "lava"-rule SigmaDelta: a Lava Conv computes them, and its fixed_pt
        #: model wraps each time step's output at 24 bits (fixed_point.wrap_signed)
        lava = set(sd_reset.lava_nodes(net)) if self.fixed else set()
        self.wrap_conv = {a for a, b in net.edges if b in lava and isinstance(net.nodes[a], g.Conv2d)}
        for n in self.order:
            node = net.nodes[n]
            if self.fixed:
                self.fp[n] = net.fixed.get(n, {})
            if isinstance(node, g.Conv2d):
                self.fan[n] = conv_fanout(node.in_shape, node.weight.shape, node.stride, node.padding).reshape(-1)
                self.dense_macs[n] = int(np.prod(node.out_shape) * np.prod(node.weight.shape[1:]))
                self.conv[n] = EventConv2d(self.fp[n]["weight_mant"] if self.fixed else node.weight, node.in_shape,
                                           node.stride, node.padding)
                if self.fixed and np.issubdtype(np.asarray(self.fp[n]["weight_mant"]).dtype, np.integer):
                    self._conv_tables[n] = conv_event_tables(self.fp[n]["weight_mant"], node.in_shape, node.stride,
                                                          node.padding) + (self.fan[n],)
                elif not self.fixed:                        # the float event tables (weights float64)
                    self._conv_tables[n] = conv_event_tables(np.asarray(node.weight, np.float64), node.in_shape,
                                                          node.stride, node.padding) + (self.fan[n],)
            elif isinstance(node, g.Affine):
                self.fan[n] = np.full(node.weight.shape[1], node.weight.shape[0], INT)
                self.dense_macs[n] = int(node.weight.size)
            elif isinstance(node, g.PlasticSTPN):
                self.dense_macs[n] = 2 * int(node.W.size)  # W z and F z
                self.plastic[n] = pp = self._plastic_params(n)
                # the row norms as |W|^2 + 2 W.F + |F|^2 (no G = W + F): |W|^2 per row, and for the
                # fixed-point bound of W.F the largest row sum of |W << sG|
                Wr = pp["Wsh"] if self.fixed else pp["W"]
                pp["Wr_f"] = np.asarray(Wr, np.float64)
                pp["Wsq"] = np.einsum("hk,hk->h", Wr, Wr)          # int64 exact (fixed point) or float
                pp["wabs_row"] = float(np.abs(pp["Wr_f"]).sum(axis=1).max(initial=0))
                if self.fixed:
                    pp["W_narrow"] = narrow_int(pp["W"])
            elif isinstance(node, g.SigmaDelta):
                thr = self.fp[n]["threshold"] if self.fixed else node.threshold
                self._thr[n] = np.ascontiguousarray(np.broadcast_to(thr, node.out_shape), INT if self.fixed
                                                    else np.float64).reshape(-1)
        rate = [n for n in self.order if isinstance(net.nodes[n], g.RateIF)]
        self.segment = []
        if rate:
            steps = {net.nodes[n].steps for n in rate}
            if len(steps) != 1:
                raise DataFormatError(f"all RateIF nodes must use the same number of steps, got {sorted(steps)}")
            self.rate_steps = steps.pop()
            first = min(self.order.index(self.src[rate[0]]), self.order.index(rate[0]))
            self.segment = self.order[first: self.order.index(rate[-1]) + 1]
            for n in self.segment:
                if not isinstance(net.nodes[n], (g.Conv2d, g.RateIF)):
                    raise DataFormatError(f"node {n!r} ({type(net.nodes[n]).__name__}) inside the rate-coded "
                                          "segment; only Conv2d and RateIF are supported there")

    def _plastic_params(self, n) -> dict:
        """Constants of a plastic layer: W (and W^T, rows = presynaptic units, for the event-driven
        W z); fixed point: W shifted to F's LSB and, as float64 (exact integers), the operands of the
        float-exact kernels (:meth:`_plasticity_exact`)."""
        node = self.net.nodes[n]
        if self.fixed:
            fp = self.fp[n]
            W = self._dev_fixed[n].w_mant if n in self._dev_fixed else fp["w_mant"]   # device: the read-back
            sG = int(fp["w_exp"]) - int(fp["f_exp"])
            Wsh = W << sG
            p = {"W": W, "sG": sG, "Wsh": Wsh, "Wsh_f": Wsh.astype(np.float64),
                 "f_shift": -int(fp["f_exp"]), "hebb_shift": int(fp["hebb_shift"]),
                 "lam_f": fp["lam_q12"].astype(np.float64) * 2.0**-fx.DECAY_BITS,
                 "lam_max": float(np.max(np.abs(fp["lam_q12"]), initial=0)),
                 "gamma_f": fp["gamma_mant"].astype(np.float64) * 2.0**-int(fp["hebb_shift"]),
                 "gamma_max": float(np.max(np.abs(fp["gamma_mant"]), initial=0))}
        else:
            W = self.devices[n].W if n in self.devices else node.W   # device: the read-back weights
            p = {"W": W}
        p["WT"] = np.ascontiguousarray(W.T)
        return p

    def _buffer(self, n, key, shape, dtype=np.float64) -> np.ndarray:
        """A work array of the simulator (not state), reused between steps."""
        b = self._buffers.get((n, key))
        if b is None or b.shape != shape or b.dtype != dtype:
            b = self._buffers[(n, key)] = np.empty(shape, dtype)
        return b

    def _spare(self, n, key, like: np.ndarray) -> np.ndarray:
        """The array the next value of the state ``key`` of ``n`` is written into: the one that
        state held two steps ago (double buffering of the large plastic-layer state)."""
        b = self._buffers.pop((n, "spare_" + key), None)
        if b is None or b.shape != like.shape or b.dtype != like.dtype or b is like:
            b = np.empty_like(like)
        return b

    def _retire(self, n, key, old: np.ndarray) -> None:
        self._buffers[(n, "spare_" + key)] = old

    # -- state ----------------------------------------------------------------------------------
    def _init_node(self, n):
        node, B, fixed = self.net.nodes[n], self.B, self.fixed
        dt = INT if fixed else np.float64
        fp = self.fp.get(n, {})
        if isinstance(node, g.SigmaDelta):
            shape = (B, *node.out_shape)
            st = {"y": np.zeros(shape, dt), "sent": np.zeros(shape, dt)}
            if fixed and fx.sd_rule(fp) == "lava":   # Lava's Vars act and residue (u units)
                st.update(act=np.zeros(shape, dt), residue=np.zeros(shape, dt))
            return st
        if isinstance(node, g.RateIF):
            return {"value": np.zeros((B, *node.out_shape)), "v": np.zeros((B, *node.out_shape))}
        if isinstance(node, (g.Conv2d, g.Affine)):
            shape = (B, *node.out_shape)
            bias = fp["bias"] if fixed else node.bias
            bias = bias.reshape((-1, 1, 1)) if isinstance(node, g.Conv2d) else bias
            return {"u": np.broadcast_to(bias, shape).astype(dt)}
        if isinstance(node, g.PlasticSTPN):
            H, K = node.W.shape
            st = {"F": np.zeros((B, H, K), dt), "z": np.zeros((B, K), dt), "uW": np.zeros((B, H), dt),
                  "N": np.zeros((B, H), dt), "dh": np.zeros((B, H), dt)}
            if n in self.devices:   # device state, per side: st["g_st_p"], st["r_m"], ... (fixed: int64 codes)
                fresh = dlf.init_state((B, H, K)) if fixed else dl.init_state((B, H, K))
                st.update({f"{v}_{side}": a for side, d in fresh.items() for v, a in d.items()})
            return st
        return {}

    #: start from :func:`prephase_state` (False: the zero/bias state only)
    prephase = True

    def _fresh(self, n):
        """The reset state of node ``n``: :meth:`_init_node` with the pre-phase state of a network
        whose SigmaDelta layers follow Lava's rule (:mod:`conversion.sd_reset`) laid over it."""
        st = self._init_node(n)
        if self.prephase:
            if not hasattr(self, "_pre"):
                self._pre = prephase_state(self.net, self.fixed)
            for k, v in self._pre.get(n, {}).items():
                st[k] = np.broadcast_to(v, st[k].shape).astype(st[k].dtype)
        return st

    def reset(self, done=None):
        """Initial state for all batch elements (``done=None``) or those with ``done`` true."""
        self._mirror = {}          # float copies of integer state (fixed point), rebuilt on use
        self._next = {}            # fixed point: {plastic node: (F, S)} of its last plasticity phase
        self._nnz_z = {}           # {plastic node: (z, its non-zero entries)} of this frame's forward phase
        if done is None:
            self.state = {n: self._fresh(n) for n in self.order}
            return
        done = np.asarray(done, bool).reshape(-1)
        if done.shape != (self.B,):
            raise ParameterError(f"done must have shape ({self.B},), got {done.shape}")
        if not done.any():
            return
        for n in self.order:
            fresh = self._fresh(n)
            for k, arr in fresh.items():
                self.state[n][k][done] = arr[done]

    # -- stepping ---------------------------------------------------------------------------------
    def step(self, obs) -> StepResult:
        """Advance one frame; ``obs`` (B, *input shape) pixel values 0..255."""
        obs = np.asarray(obs)
        inp = self.order[0]
        shape = (self.B, *self.net.nodes[inp].shape)
        if obs.shape != shape:
            raise ParameterError(f"observation has shape {obs.shape}, expected {shape}")
        if obs.dtype.kind not in "biu":                     # integer pixels are finite integers
            if not np.all(np.isfinite(obs)):
                raise ParameterError("observation contains NaN/inf")
            if self.fixed and np.any(obs != np.rint(obs)):
                raise ParameterError("the fixed-point network takes integer pixel values")
        self.step_nodes(self._rest, {inp: (obs, None)})
        return self._result()

    def step_nodes(self, nodes, given: dict) -> None:
        """Advance the listed ``nodes`` (in evaluation order) by one frame.

        ``given`` = {node: (value, events or None)} supplies the sources read from outside the
        list (the Input's frame, or another layer's running sum of events and this frame's
        events).  Then the plasticity phase of the plastic nodes among ``nodes``.  :meth:`step` is
        ``step_nodes(all but the Input, {Input: (frame, None)})``; a backend that runs the network
        as one process per layer steps each layer with it.
        """
        dt = INT if self.fixed else np.float64
        self.values, self.deltas, self._active = {}, {}, {}
        for n, (value, events) in given.items():
            self.values[n] = np.asarray(value).astype(dt)
            self.deltas[n] = None if events is None else np.asarray(events).astype(dt)
        key = nodes if isinstance(nodes, tuple) else tuple(nodes)
        plan = self._plans.get(key)
        if plan is None:
            plan = self._plans[key] = self._plan(key)
        kernels, plastic = plan
        for kernel, n in kernels:
            kernel(n)
        for n in plastic:
            self._plasticity(n)
        self.t += 1
        self.frames += self.B

    def _plan(self, nodes) -> tuple:
        """([(kernel, node)] in evaluation order (a rate-coded segment as one entry), the plastic
        nodes): what :meth:`step_nodes` calls for ``nodes``."""
        kernels = []
        for n in nodes:
            if n in self.segment:
                if n == self.segment[0]:
                    kernels.append((lambda _n: self._rate_segment(), n))
                continue
            kernels.append((getattr(self, "_" + type(self.net.nodes[n]).__name__), n))
        return kernels, [n for n in nodes if isinstance(self.net.nodes[n], g.PlasticSTPN)]

    def _result(self) -> StepResult:
        lo = self.values[self.out_logits]
        val = self.values[self.out_value] if self.out_value else np.zeros((self.B, 1))
        if self.fixed:
            e_l = self.fp[self.net.source(self.out_logits)]["u_exp"]
            e_v = self.fp[self.net.source(self.out_value)]["u_exp"] if self.out_value else 0
            return StepResult(lo * 2.0**e_l, (val * 2.0**e_v).reshape(self.B), np.argmax(lo, axis=1), lo.copy())
        return StepResult(lo.copy(), val.reshape(self.B).copy(), np.argmax(lo, axis=1))

    def _count(self, n, key, x):
        self.stats[n][key] += int(x)

    # node kernels: each reads self.values/deltas of its source and writes its own
    def _Scale(self, n):
        s = self.src[n]
        if self.fixed:  # folded into the next synapse's weights (conversion.quantise)
            self.values[n], self.deltas[n] = self.values[s], self.deltas[s]
            self._pass_active(s, n)
            return
        sc = self.net.nodes[n].scale
        self.values[n] = sc * self.values[s]
        d = self.deltas[s]
        self.deltas[n] = None if d is None else sc * d

    def _Flatten(self, n):
        s = self.src[n]
        self.values[n] = self.values[s].reshape(self.B, -1)
        d = self.deltas[s]
        self.deltas[n] = None if d is None else d.reshape(self.B, -1)
        self._pass_active(s, n)

    def _pass_active(self, s, n):
        """The flat indices of the events of ``s`` are those of ``n`` (a view of the same events)."""
        got = self._active.get(s)
        if got is not None and got[0] is self.deltas[s]:
            self._active[n] = (self.deltas[n], got[1])

    def _active_of(self, s, d) -> np.ndarray:
        """The flat indices of the non-zero events ``d`` of ``s`` (kept by its kernel, else found)."""
        got = self._active.get(s)
        return got[1] if got is not None and got[0] is d else np.flatnonzero(d)

    def _Output(self, n):
        self.values[n] = self.values[self.src[n]]
        self.deltas[n] = None

    def _synapse_op(self, n, x, events: bool = False, active=None):
        """W x of a synapse node; Conv2d: event-driven (only the active inputs, ``active``: their
        flat indices if known) where that is the smaller work (``events``), else im2col
        (:class:`conversion.ops.EventConv2d`)."""
        node = self.net.nodes[n]
        if isinstance(node, g.Conv2d):
            kern, B = self.conv[n], x.shape[0]
            flat = x.reshape(B, -1)
            return (kern(flat, active) if events else kern.dense(flat)).reshape(B, *node.out_shape)
        w = self.fp[n]["weight_mant"] if self.fixed else node.weight
        return x @ w.T

    def _syn(self, n):
        s, st, node = self.src[n], self.state[n], self.net.nodes[n]
        d = self.deltas[s]
        self._count(n, "dense", self.dense_macs[n] * self.B)
        if d is None:  # dense source: u = b + W x
            bias = self.fp[n]["bias"] if self.fixed else node.bias
            bias = bias.reshape((-1, 1, 1)) if isinstance(node, g.Conv2d) else bias
            du = None
            st["u"] = bias + self._synapse_op(n, self.values[s])
            self._count(n, "synops", self.dense_macs[n] * self.B)
        else:
            active = self._active_of(s, d)
            fast = self._conv_events(n, d, active) if pk.ENABLED and n in self._conv_tables else None
            if fast is not None:                              # the same integers, one fused pass
                st["u"], du, syn = fast
                self._count(n, "synops", syn)
                self.values[n], self.deltas[n] = st["u"], du
                return
            du = self._synapse_op(n, d, events=True, active=active)
            if n in self.wrap_conv:   # Lava's Conv wraps each step's output at 24 bits: flagged, then wrapped
                self.monitor.check(n, "du", du, fx.STATE_MAX, self.t, saturate=False)
                du = fx.wrap_signed(du, fx.STATE_BITS)
            st["u"] = st["u"] + du
            fan = self.fan[n]
            self._count(n, "synops", fan[active % fan.size].sum())   # events x fan-out
            if self.fixed:
                st["u"] = self.monitor.check(n, "u", st["u"], fx.STATE_MAX, self.t)
        self.values[n], self.deltas[n] = st["u"], du

    def _conv_events(self, n, d, active):
        """(u, du, synops) of the event branch of :meth:`_syn` for a Conv2d node in one pass:
        fixed point by :func:`conversion.plastic_kernels.conv_events_int` (the integer scatter
        table, the 24-bit wrap of a Lava Conv, u + du), float by
        :func:`conversion.plastic_kernels.conv_events_float` (the sums of the NumPy scatter, in
        its order); None where the events' synapses outnumber the dense MACs or (fixed point) a
        value leaves its budget (the NumPy form then runs and its monitor records)."""
        pos, kk, wt, fan = self._conv_tables[n]
        B, shape = d.shape[0], self.net.nodes[n].out_shape
        n_in, O = pos.shape[0], wt.shape[1]
        if active.size * pos.shape[1] * O > self.dense_macs[n] * B:
            return None
        n_pos = self.dense_macs[n] // (O * wt.shape[0])          # output positions
        if not self.fixed:
            du, unew = np.empty((B,) + shape), np.empty((B,) + shape)
            acc = self._buffer(n, "acc", (B, n_pos + 1, O))
            syn = pk.conv_events_float(np.ascontiguousarray(d, np.float64).reshape(-1), np.asarray(active, INT), n_in,
                                       pos, kk, wt, fan, np.ascontiguousarray(self.state[n]["u"], np.float64).reshape(B, -1),
                                       acc, du.reshape(B, -1), unew.reshape(B, -1))
            return unew, du, syn
        du, unew = np.empty((B,) + shape, INT), np.empty((B,) + shape, INT)
        u = np.ascontiguousarray(self.state[n]["u"], INT)
        acc = self._buffer(n, "acc", (B, n_pos + 1, O), INT)
        du_over, u_over, syn = pk.conv_events_int(np.ascontiguousarray(d, INT).reshape(-1), np.asarray(active, INT),
                                                  n_in, pos, kk, wt, fan, u.reshape(B, -1),
                                                  fx.STATE_BITS if n in self.wrap_conv else 0, fx.STATE_MAX, acc,
                                                  du.reshape(B, -1), unew.reshape(B, -1))
        if du_over or u_over:
            return None
        return unew, du, syn

    _Conv2d = _syn
    _Affine = _syn

    def _SigmaDelta(self, n):
        node, st, s = self.net.nodes[n], self.state[n], self.src[n]
        u = self.values[s]
        if u.shape[1:] != node.out_shape:
            u = u.reshape(self.B, *node.out_shape)
        if self.fixed and "act" in st:
            self._sigma_delta_lava(n, u)
            return
        if pk.ENABLED and self._sigma_delta_kernel(n, node, st, u):
            return
        if self.fixed:
            fp = self.fp[n]
            if node.activation == "tanh":
                y = fx.tanh_int(u, fp["lut"], int(fp["lut_shift"]))
            else:
                y = fx.rshift_round(u, int(fp["out_exp"]) - int(fp["in_exp"]))
                if node.activation == "relu":
                    y = np.maximum(y, 0)
            y = self.monitor.check(n, "y", y, fx.STATE_MAX, self.t)
            thr = fp["threshold"]
        else:
            y = sem.activation(NUMPY, node.activation, u)
            thr = node.threshold
        e, sent, fire = sem.sigma_delta(NUMPY, y, st["sent"], thr)
        if self.fixed:
            e = self.monitor.check(n, "payload", e, fx.STATE_MAX, self.t)
            sent = st["sent"] + e
        st["y"], st["sent"] = y, sent
        self._count(n, "events", fire.sum())
        self.values[n], self.deltas[n] = st["sent"], e

    def _sigma_delta_kernel(self, n, node, st, u) -> bool:
        """:meth:`_SigmaDelta` in one pass that also keeps the flat indices of the events: float by
        :func:`conversion.plastic_kernels.sigma_delta_float` after the activation of
        :mod:`conversion.semantics` (the same operations); fixed point (rule "round") by
        :func:`conversion.plastic_kernels.sigma_delta_round_int`.  False, state untouched, where a
        value leaves the state budget (the NumPy form then runs and its monitor records)."""
        thr, sent0 = self._thr[n], st["sent"]
        if not self.fixed:
            if u.dtype != np.float64 or sent0.dtype != np.float64:
                return False
            y = np.ascontiguousarray(sem.activation(NUMPY, node.activation, u))
            sent, e = np.empty(y.shape), np.empty(y.shape)
            active = np.empty(y.size, INT)
            na = pk.sigma_delta_float(y.reshape(-1), np.ascontiguousarray(sent0).reshape(-1), thr, sent.reshape(-1),
                                      e.reshape(-1), active)
        else:
            fp = self.fp[n]
            if node.activation == "tanh":
                mode, shift, table, tshift = 2, 0, fp["lut"], int(fp["lut_shift"])
            else:
                mode, shift, table, tshift = int(node.activation == "relu"), int(fp["out_exp"]) - int(fp["in_exp"]), \
                    self._thr[n][:1], 0
            if not (0 <= tshift < 63 and -63 < shift < 63):
                return False
            y, sent, e = (np.empty(u.shape, INT) for _ in range(3))
            active = np.empty(u.size, INT)
            y_over, p_over, na = pk.sigma_delta_round_int(
                np.ascontiguousarray(u, INT).reshape(-1), mode, shift, np.asarray(table, INT), tshift,
                np.ascontiguousarray(sent0, INT).reshape(-1), thr, fx.STATE_MAX, y.reshape(-1), sent.reshape(-1),
                e.reshape(-1), active)
            if y_over or p_over:
                return False
        st["y"], st["sent"] = y, sent
        self.stats[n]["events"] += na
        self.values[n], self.deltas[n] = sent, e
        self._active[n] = (e, active[:na])
        return True

    def _sigma_delta_lava(self, n, u):
        """Rule "lava" (:func:`conversion.fixed_point.sigma_delta_lava`): act = act(u) in u units,
        fire where |act - believed| >= vth, payload (delta >> state_exp) in Y units; ``sent`` is
        the sum of the payloads (what the receivers hold), ``y`` = act >> state_exp."""
        node, st, fp = self.net.nodes[n], self.state[n], self.fp[n]
        if pk.ENABLED and self._sigma_delta_lava_kernel(n, u):
            return
        act = np.maximum(u, 0) if node.activation == "relu" else u
        act = self.monitor.check(n, "act", act, fx.STATE_MAX, self.t)
        S = int(fp["state_exp"])
        pay, believed, fire = fx.sigma_delta_lava(act, st["act"] - st["residue"], int(fp["vth"]), S)
        pay = self.monitor.check(n, "payload", pay, fx.STATE_MAX, self.t)
        st["residue"], st["act"] = act - believed, act
        st["y"], st["sent"] = act >> S, st["sent"] + pay
        self._count(n, "events", fire.sum())
        self.values[n], self.deltas[n] = st["sent"], pay

    def _sigma_delta_lava_kernel(self, n, u) -> bool:
        """:meth:`_sigma_delta_lava` by :func:`conversion.plastic_kernels.sigma_delta_lava_int`
        (one pass; also the flat indices of the events); False, state untouched, where act or a
        payload leaves the state budget (the NumPy form then runs and its monitor records)."""
        node, st, fp = self.net.nodes[n], self.state[n], self.fp[n]
        flat = [np.ascontiguousarray(st[k], INT).reshape(-1) for k in ("act", "residue", "sent")]
        out = np.empty((6, u.size), INT)                     # act, residue, y, sent, payload, active
        a_over, p_over, fired, na = pk.sigma_delta_lava_int(
            np.ascontiguousarray(u, INT).reshape(-1), node.activation == "relu", *flat, int(fp["vth"]),
            int(fp["state_exp"]), fx.STATE_MAX, *out)
        act, res, y, sent, pay = (a.reshape(u.shape) for a in out[:5])
        active = out[5]
        if a_over or p_over:
            return False
        st["act"], st["residue"], st["y"], st["sent"] = act, res, y, sent
        self._count(n, "events", fired)
        self.values[n], self.deltas[n] = sent, pay
        self._active[n] = (pay, active[:na])
        return True

    def _PlasticSTPN(self, n):
        node, st, s = self.net.nodes[n], self.state[n], self.src[n]
        H, K = node.W.shape
        I = K - H
        dx = self.deltas[s]
        if dx is None:
            dx = self.values[s] - st["z"][:, :I]
        dh = st["dh"]
        pp = self.plastic[n]
        if pk.ENABLED and n not in self.devices and self._stpn_kernel(n, node, st, pp, dx, dh):
            return
        if self.fixed:
            fp = self.fp[n]
            ez = int(fp["z_exp"])
            dz = np.concatenate([dx << (int(fp["x_exp"]) - ez), dh << (int(fp["h_exp"]) - ez)], axis=1)
        else:
            dz = np.concatenate([dx, dh], axis=1)
        W = pp["W"]
        st["z"] = st["z"] + dz
        if pk.ENABLED and pp["WT"].dtype == INT and st["uW"].dtype == INT:   # event-driven W z, int64 (exact)
            uW = np.array(st["uW"], INT)
            pk.add_events_int(np.ascontiguousarray(dz, INT), pp["WT"], uW)
            st["uW"] = uW
        else:
            active = np.flatnonzero(np.any(dz != 0, axis=0))
            if active.size:                                  # event-driven W z: the rows of W^T of the events
                st["uW"] = st["uW"] + dz[:, active] @ pp["WT"][active]
        self._count(n, "synops", H * np.count_nonzero(dz))
        z, F = st["z"], st["F"]
        nz = np.count_nonzero(z)
        self._count(n, "synops", H * nz)                     # F z over active presynaptic units
        self._count(n, "dense", self.dense_macs[n] * self.B)
        self._count(n, "plastic_ops", H * K * self.B)        # row norm (every synapse)
        if self.fixed:
            m = self.monitor
            sG = pp["sG"]
            S, Fz = self._norm_and_dot_exact(n, F, z)
            if pk.ENABLED and 0 <= sG < 62:                  # the same integers in one pass, within the budgets
                B = S.shape[0]
                Nk, a = np.empty((B, H), INT), np.empty((B, H), INT)
                bias = np.ascontiguousarray(np.broadcast_to(np.asarray(fp["bias"], INT), (H,)))
                if not pk.stpn_forward_int(np.ascontiguousarray(S, INT), np.ascontiguousarray(st["uW"], INT),
                                           np.ascontiguousarray(Fz, INT), sG, bias, fx.WIDE_MAX, fx.STATE_MAX, Nk, a):
                    st["N"], st["a"] = Nk, a
                    self.values[n], self.deltas[n] = a, None
                    return
            S = m.check(n, "norm_sq", S, fx.WIDE_MAX, self.t)
            st["N"] = np.maximum(fx.isqrt(S), 1)
            uW = m.check(n, "uW", st["uW"], fx.WIDE_MAX >> sG, self.t, saturate=False)
            dot = m.check(n, "dot", (uW << sG) + Fz, fx.WIDE_MAX, self.t)
            a = fx.round_div(dot, st["N"]) + fp["bias"]
            a = m.check(n, "a", a, fx.STATE_MAX, self.t)
        else:
            Fz = None
            if n in self.devices:
                G = self._buffer(n, "G", F.shape)
                np.add(W, F, out=G)                          # G = W + F
                S = row_dots(G, G)
            elif pk.ENABLED:                                 # one fused pass: the row sums and F z
                S, Fz = self._buffer(n, "S", z.shape[:1] + (H,)), self._buffer(n, "Fz", z.shape[:1] + (H,))
                pk.norm_dot_float(pp["Wr_f"], pp["Wsq"], np.ascontiguousarray(F, np.float64),
                                  np.ascontiguousarray(z, np.float64), S, Fz)
            else:                                            # sum_f G^2 = |W|^2 + 2 W.F + |F|^2
                S = pp["Wsq"] + 2.0 * row_dots(pp["Wr_f"], F) + row_dots(F, F)
            st["N"] = sem.stpn_norm(NUMPY, S, node.norm_eps)
            a = sem.stpn_preactivation(st["uW"] + (matvec(F, z) if Fz is None else Fz), st["N"], node.b)
        st["a"] = a
        self.values[n], self.deltas[n] = a, None

    def _stpn_kernel(self, n, node, st, pp, dx, dh) -> bool:
        """The forward phase of :meth:`_PlasticSTPN` with the input events, W z and the row sums
        in one pass (:func:`conversion.plastic_kernels.stpn_input_float`; fixed point
        :func:`conversion.plastic_kernels.stpn_input_int`, then
        :func:`conversion.plastic_kernels.stpn_forward_int`, the row norms of the last plasticity
        pass where it computed them).  False, state untouched, where the operands are not the
        kernels' (or, fixed point, a value leaves its budget: the NumPy form then runs and its
        monitor records)."""
        H, K = node.W.shape
        F, z0, uW0 = st["F"], st["z"], st["uW"]
        B = z0.shape[0]
        dt = INT if self.fixed else np.float64
        if not (F.dtype == z0.dtype == uW0.dtype == pp["WT"].dtype == dt and F.flags.c_contiguous):
            return False
        z, uW = np.empty((B, K), dt), np.empty((B, H), dt)
        if self.fixed:
            fp = self.fp[n]
            ez, sG = int(fp["z_exp"]), pp["sG"]
            sx, sh = int(fp["x_exp"]) - ez, int(fp["h_exp"]) - ez
            if not (0 <= sx < 63 and 0 <= sh < 63 and 0 <= sG < 62):
                return False
            nxt = self._next.pop(n, None)
            fresh = nxt is None or nxt[0] is not F
            S = self._buffer(n, "S_i", (B, H), INT) if fresh else nxt[1]
            Fz = self._buffer(n, "Fz_i", (B, H), INT)
            nd, nz = pk.stpn_input_int(np.ascontiguousarray(dx, INT), np.ascontiguousarray(dh, INT), sx, sh,
                                       np.ascontiguousarray(z0), np.ascontiguousarray(uW0), pp["WT"], pp["Wsh"], F,
                                       fresh, z, uW, S, Fz)
            Nk, a = np.empty((B, H), INT), np.empty((B, H), INT)
            bias = pp.get("bias_c")
            if bias is None:
                bias = pp["bias_c"] = np.ascontiguousarray(np.broadcast_to(np.asarray(fp["bias"], INT), (H,)))
            if pk.stpn_forward_int(S, uW, Fz, sG, bias, fx.WIDE_MAX, fx.STATE_MAX, Nk, a):
                if not fresh:
                    self._next[n] = nxt                      # the NumPy form reads the same row norms
                return False
            st["N"] = Nk
        else:
            S, Fz = self._buffer(n, "S", (B, H)), self._buffer(n, "Fz", (B, H))
            nd, nz = pk.stpn_input_float(np.ascontiguousarray(dx, np.float64), np.ascontiguousarray(dh, np.float64),
                                         np.ascontiguousarray(z0), np.ascontiguousarray(uW0), pp["WT"], pp["Wr_f"],
                                         pp["Wsq"], F, z, uW, S, Fz)
            st["N"] = sem.stpn_norm(NUMPY, S, node.norm_eps)
            a = sem.stpn_preactivation(uW + Fz, st["N"], node.b)
        st["z"], st["uW"], st["a"] = z, uW, a
        self._nnz_z[n] = (z, nz)
        c = self.stats[n]
        c["synops"] += H * (nd + nz)                          # W z of the events, F z over active units
        c["dense"] += self.dense_macs[n] * B
        c["plastic_ops"] += H * K * B                         # row norm (every synapse)
        self.values[n], self.deltas[n] = a, None
        return True

    def _float_mirror(self, n, F) -> tuple[np.ndarray, float]:
        """Fixed point: F (int64) as float64 (exact) and max |F|, kept from the last plasticity step."""
        mir = self._mirror.get(n)
        if mir is None or mir[0] is not F:
            Ff = self._buffer(n, "F_f", F.shape)
            np.copyto(Ff, F)
            mir = self._mirror[n] = (F, Ff, float(np.max(np.abs(F), initial=0)))
        return mir[1], mir[2]

    def _norm_and_dot_exact(self, n, F, z):
        """Fixed point: the row sums of G^2 (G = W << sG + F) and F z, exact int64.  The row sums
        as |W << sG|^2 + 2 (W << sG).F + |F|^2, the two products in float64 (BLAS) where every
        partial sum is an integer below 2**52 (|F|^2: its total, a sum of squares; W.F: max |F|
        times the largest row sum of |W << sG|), else G^2 in int64.  With the kernels enabled:
        where the last plasticity phase wrote F, the row sums it computed and F z in one pass
        (:func:`conversion.plastic_kernels.dot_int`); else both in one int64 pass
        (:func:`conversion.plastic_kernels.norm_dot_int`)."""
        pp = self.plastic[n]
        nxt = self._next.pop(n, None)
        if pk.ENABLED and nxt is not None and nxt[0] is F:
            Fz = self._buffer(n, "Fz_i", nxt[1].shape, INT)
            pk.dot_int(F, np.ascontiguousarray(z, INT), Fz)
            return nxt[1], Fz
        if pk.ENABLED:
            shape = (F.shape[0], F.shape[1])
            S, Fz = self._buffer(n, "S_i", shape, INT), self._buffer(n, "Fz_i", shape, INT)
            pk.norm_dot_int(pp["Wsh"], pp["Wsq"], np.ascontiguousarray(F, INT), np.ascontiguousarray(z, INT), S, Fz)
            return S, Fz
        Ff, fmax = self._float_mirror(n, F)
        FF = row_dots(Ff, Ff)
        if not exact_in_float(fmax * pp["wabs_row"]) and not self._mirror_exact(n):
            fmax = self._tighten_mirror(n)
        if exact_in_float(float(FF.max(initial=0))) and exact_in_float(fmax * pp["wabs_row"]):
            S = pp["Wsq"] + 2 * row_dots(pp["Wr_f"], Ff).astype(INT) + FF.astype(INT)
        else:
            Gi = pp["Wsh"] + F
            S = np.einsum("bhk,bhk->bh", Gi, Gi)
        zf = z.astype(np.float64)
        if exact_in_float(fmax * float(np.abs(zf).sum(axis=1).max(initial=0))):
            Fz = matvec(Ff, zf).astype(INT)
        else:
            Fz = np.einsum("bhk,bk->bh", F, z)
        return S, Fz

    def _plasticity(self, n):
        """F <- clip(lam F / N + gamma h z^T, +-f_max); then forward the post neurons' events."""
        node, st = self.net.nodes[n], self.state[n]
        H, K = node.W.shape
        post = self.state[node.post]
        h, z, F = post["y"], st["z"], st["F"]
        got = self._nnz_z.pop(n, None)
        nz = (got[1] if got is not None and got[0] is z else np.count_nonzero(z)) * H
        self._count(n, "plastic_ops", H * K * self.B + nz)   # decay of every synapse + Hebbian on active ones
        self._count(n, "hebbian", nz)                         # Hebbian increments (memristor update pulses)
        self._count(n, "plastic_dense", 3 * H * K * self.B)  # norm, decay, Hebbian of the dense network
        if n in self.devices:
            F = self._device_plasticity(n, h, z)
        elif self.fixed:
            F = self._plasticity_kernel(n, F, st["N"], h, z) if pk.ENABLED else None
            if F is None:
                F = self._plasticity_exact(n, st["F"], st["N"], h, z)
            if F is None:
                F = self._plasticity_int(n, st["F"], st["N"], h, z)
        else:
            F = self._plasticity_float(n, F, st["N"], h, z)
        st["F"] = F
        st["dh"] = self.deltas[node.post]

    def _plasticity_float(self, n, F, N, h, z):
        """:func:`conversion.semantics.stpn_plasticity` evaluated in place, operation for operation
        (lam (F / N) + gamma (h z^T), then the clip), into the array of two steps ago."""
        node = self.net.nodes[n]
        if pk.ENABLED and F.dtype == np.float64:             # the same operations, fused in one pass
            pp, Fn = self.plastic[n], self._spare(n, "F", F)
            if "lam_c" not in pp:
                pp["lam_c"], pp["gamma_c"] = (np.ascontiguousarray(np.broadcast_to(np.asarray(v, np.float64), F.shape[1:]))
                                              for v in (node.lam, node.gamma))
            pk.plasticity_float(F, np.asarray(N, np.float64), pp["lam_c"], pp["gamma_c"], np.asarray(h, np.float64),
                                np.asarray(z, np.float64), float(node.f_max), Fn)
            self._retire(n, "F", F)
            return Fn
        Fn, hebb = self._spare(n, "F", F), self._buffer(n, "hebb", F.shape)
        np.divide(F, N[:, :, None], out=Fn)
        np.multiply(Fn, node.lam, out=Fn)
        np.einsum("bh,bk->bhk", h, z, out=hebb)             # h z^T (one product per entry)
        np.multiply(hebb, node.gamma, out=hebb)
        np.add(Fn, hebb, out=Fn)
        if np.isfinite(node.f_max):
            np.clip(Fn, -node.f_max, node.f_max, out=Fn)
        self._retire(n, "F", F)
        return Fn

    def _plasticity_int(self, n, F, N, h, z):
        """The fixed-point plasticity in int64, as :mod:`conversion.fixed_point` specifies it."""
        fp, m = self.fp[n], self.monitor
        q = fx.round_div(F << -int(fp["f_exp"]), N[:, :, None])
        q = fx.mul_q12(q, fp["lam_q12"])
        prod = m.check(n, "hebb_product", fp["gamma_mant"] * h[:, :, None] * z[:, None, :], fx.WIDE_MAX, self.t)
        F = q + fx.rshift_round(prod, int(fp["hebb_shift"]))
        if int(fp["f_max"]) >= 0:
            F = np.clip(F, -int(fp["f_max"]), int(fp["f_max"]))
        return m.check(n, "F", F, fx.STATE_MAX, self.t)

    def _plasticity_kernel(self, n, F, N, h, z):
        """The fixed-point plasticity of :meth:`_plasticity_int`, bit for bit, by the fused int64
        kernel :func:`conversion.plastic_kernels.plasticity_norm_int` (None where it reports an inexact
        quotient or a value beyond a budget: the caller then runs the NumPy forms, whose monitor
        checks record the events)."""
        pp, fp = self.plastic[n], self.fp[n]
        s, k = pp["f_shift"], pp["hebb_shift"]
        if not (0 <= s < 62 and -62 < k < 63 and 0 <= pp["sG"] < 62):
            return None
        Fi = self._spare(n, "F", F)
        lam, gamma = self._narrow(pp, fp, "lam_q12"), self._narrow(pp, fp, "gamma_mant")
        B, H = N.shape
        S = self._buffer(n, "S_next", (B, H), INT)
        bad = pk.plasticity_norm_int(np.ascontiguousarray(F, INT), np.ascontiguousarray(N, INT), lam, gamma,
                                     np.ascontiguousarray(h, INT), np.ascontiguousarray(z, INT), pp["W_narrow"],
                                     pp["sG"], s, k, int(fp["f_max"]), fx.WIDE_MAX, fx.STATE_MAX, Fi, S)
        if any(bad):
            self._retire(n, "F", Fi)
            return None
        self._mirror.pop(n, None)                            # no float mirror on this path
        self._next[n] = (Fi, S)                              # the next forward phase's row norms
        self._retire(n, "F", F)
        return Fi

    @staticmethod
    def _narrow(pp: dict, fp: dict, key: str) -> np.ndarray:
        """``fp[key]`` (int64) in the narrowest integer dtype that holds it (less memory read per
        frame), kept in ``pp`` while ``fp[key]`` is the same array."""
        a = fp[key]
        got = pp.get("narrow_" + key)
        if got is None or got[0] is not a:
            got = pp["narrow_" + key] = (a, narrow_int(a))
        return got[1]

    def _plasticity_exact(self, n, F, N, h, z):
        """The fixed-point plasticity of :meth:`_plasticity_int`, bit for bit, in float64 on exact
        integers (None where the bounds below do not hold; the caller then runs the int64 form).

        With s = -f_exp, x = F 2**s / N and every magnitude below 2**52: round_div(F << s, N) =
        floor(fl(x) + 1/2) (the rounding error of fl(x) and of the addition, below (|x| + 1) 2**-52,
        is smaller than the distance 1/(2N) of x + 1/2 to the next integer when it is not one, and
        an integer x + 1/2 is computed exactly).  Faster, with r = fl(2**s / N) where the bounds
        allow: floor(x + 1/2) = floor(fl(fl(F r) + c)) with c = 1/2 + eps,
        0 < eps: the computed value is within (|x| + 1) 2**-51 < eps of x + c, and x + 1/2 is an
        integer or at least 1/(2N) from one, so with eps + (|x| + 1) 2**-51 < 1/(2N) the floor
        is the same.  mul_q12(q, L) = trunc(q (L 2**-12)) and rshift_round(p, k) =
        floor(p 2**-k + 1/2) with p = gamma h z, all products exact integers times powers of two
        below 2**52.  max |F| is carried as a bound (|q| <= |x| + 1, |trunc(q L')| <= |q| |L'|),
        computed exactly only where that bound is too loose.
        """
        pp, fp, m = self.plastic[n], self.fp[n], self.monitor
        s, k = pp["f_shift"], pp["hebb_shift"]
        Ff, fmax = self._float_mirror(n, F)
        Nf = N.astype(np.float64)
        nmin, nmax = (float(Nf.min()), float(Nf.max())) if Nf.size else (1.0, 1.0)
        hf, zf = h.astype(np.float64), z.astype(np.float64)
        hz_max = float(np.max(np.abs(hf), initial=0)) * float(np.max(np.abs(zf), initial=0))
        c = 0.5 + 0.25 / nmax
        eps = c - 0.5                                        # exact (Sterbenz)

        def bounds(fm):
            """(exact at all, by the reciprocal r, bound of |x|)"""
            xmax = fm * 2.0**s / nmin * (1 + 2.0**-40)
            err = (xmax + 1) * 2.0**-50
            ok = (s >= 0 and nmin >= 1 and k <= 52
                  and exact_in_float(fm * 2.0 ** (s + 1) + 3 * nmax)                           # round_div
                  and exact_in_float((xmax + 1) * pp["lam_max"])                                # q L
                  and exact_in_float(pp["gamma_max"] * hz_max * 2.0 ** max(0, -k) + 1))        # gamma h z
            return ok, ok and err < eps and eps + err < 0.5 / nmax * (1 - 2.0**-40), xmax
        ok, recip, xmax = bounds(fmax)
        if not recip and not self._mirror_exact(n):
            fmax = self._tighten_mirror(n)
            ok, recip, xmax = bounds(fmax)
        if not ok:
            return None
        Fn, hebb = self._spare(n, "F_f", Ff), self._buffer(n, "hebb", F.shape)
        if recip:
            np.einsum("bhk,bh->bhk", Ff, 2.0**s / Nf, out=Fn)   # fl(F r)
            Fn += c
        else:                                                # fl(x) + 1/2 (correctly rounded division)
            np.divide(Ff, (Nf * 2.0**-s)[:, :, None], out=Fn)
            Fn += 0.5
        np.floor(Fn, out=Fn)                                 # q = round_div(F << s, N)
        np.multiply(Fn, pp["lam_f"], out=Fn)
        np.trunc(Fn, out=Fn)                                 # mul_q12(q, L)
        np.einsum("bh,bk->bhk", hf, zf, out=hebb)           # h z^T
        np.multiply(hebb, pp["gamma_f"], out=hebb)           # gamma h z 2**-k
        hebb += 0.5
        np.floor(hebb, out=hebb)                             # rshift_round(gamma h z, k)
        Fn += hebb
        bound = (xmax + 1) * pp["lam_max"] * 2.0**-fx.DECAY_BITS + pp["gamma_max"] * hz_max * 2.0**-k + 1
        if int(fp["f_max"]) >= 0:
            np.clip(Fn, -int(fp["f_max"]), int(fp["f_max"]), out=Fn)
            bound = min(bound, float(fp["f_max"]))
        Fi = self._spare(n, "F", F)
        np.copyto(Fi, Fn, casting="unsafe")
        self._retire(n, "F_f", Ff)
        self._retire(n, "F", F)
        exact = bound > fx.STATE_MAX
        if exact:                                            # the bound allows saturation: the true max
            bound = float(max(Fn.max(initial=0), -Fn.min(initial=0)))
            if bound > fx.STATE_MAX:                         # saturate and record, as the int64 form
                Fi = m.check(n, "F", Fi, fx.STATE_MAX, self.t)
                self._mirror.pop(n, None)
                return Fi
        self._mirror[n] = (Fi, Fn, bound, exact)
        return Fi

    def _mirror_exact(self, n) -> bool:
        """Whether the float mirror's max |F| of ``n`` is the true maximum (not a bound)."""
        mir = self._mirror.get(n)
        return mir is None or len(mir) < 4 or mir[3]

    def _tighten_mirror(self, n) -> float:
        """Replace the mirror's bound of max |F| by the true maximum; returns it."""
        F, Ff = self._mirror[n][:2]
        fm = float(np.max(np.abs(Ff), initial=0))
        self._mirror[n] = (F, Ff, fm, True)
        return fm

    def _device_plasticity(self, n, h, z):
        """The plasticity phase on device pairs (conversion.device_layer; fixed point: its integer
        specification conversion.device_layer_fixed); counts pulses and energy."""
        st, devs, node = self.state[n], self.devices[n], self.net.nodes[n]
        m, arrays, c = devs.mapping, self._dev_arrays[n], self.device_stats[n]
        state = {side: {v: st[f"{v}_{side}"] for v in dl.DEVICE_STATE} for side in dl.SIDES}
        if self.fixed:
            fd = self._dev_fixed[n]
            bias = dlf.bias_energy_int(fd, state)
            new, F, pulses = dlf.plasticity_int(fd, state, st["N"][:, :, None], h[:, :, None], z[:, None, :],
                                                self.fp[n]["gamma_mant"], dlf.c2c_noise_int(m, self.t, st["F"].shape),
                                                self.monitor, n, self.t)
            tally = dlf.pulse_tally_int(fd, pulses)
        else:
            bias = dl.bias_energy(m, arrays, state)
            new, F, pulses = dl.plasticity(NUMPY, m, arrays, state, st["N"][:, :, None], h[:, :, None], z[:, None, :],
                                           node.gamma, dl.c2c_noise(m, self.t, st["F"].shape))
            tally = dl.pulse_tally(m, pulses)
        dl.add_step_counts(c, tally, bias, m.dt, self.B)
        for side, d in new.items():
            for v, a in d.items():
                st[f"{v}_{side}"] = a
        return F

    # -- rate-coded segment (float only) ---------------------------------------------------------
    def _rate_segment(self):
        net, T, B = self.net, self.rate_steps, self.B
        cur, spikes, count = {}, {}, {}
        for n in self.segment:
            node = net.nodes[n]
            if isinstance(node, g.RateIF):
                self.state[n]["v"] = np.broadcast_to(node.v_init * node.v_threshold, (B, *node.out_shape)).copy()
                count[n] = np.zeros((B, *node.out_shape))
            elif not isinstance(net.nodes[self.src[n]], g.RateIF):  # graded input: constant current
                self._Conv2d(n)
                cur[n] = self.values[n]
        for _ in range(T):
            for n in self.segment:
                node, s = net.nodes[n], self.src[n]
                if isinstance(node, g.Conv2d) and isinstance(net.nodes[s], g.RateIF):
                    x = spikes[s] * net.nodes[s].v_threshold
                    cur[n] = node.bias.reshape(-1, 1, 1) + conv2d(x, node.weight, node.stride, node.padding)
                    self._count(n, "synops", (spikes[s].reshape(B, -1) != 0) @ self.fan[n] @ np.ones(B, INT))
                elif isinstance(node, g.RateIF):
                    st = self.state[n]
                    st["v"] = st["v"] + cur[s]
                    sp = st["v"] >= node.v_threshold
                    st["v"] = st["v"] - sp * node.v_threshold
                    spikes[n] = sp
                    count[n] += sp
                    self._count(n, "events", sp.sum())
        for n in self.segment:
            node = net.nodes[n]
            if isinstance(node, g.RateIF):
                val = count[n] * node.v_threshold / T
                self.deltas[n] = val - self.state[n]["value"]
                self.state[n]["value"] = val
                self.values[n] = val
            else:
                self.values[n], self.deltas[n] = cur[n], None
                if isinstance(net.nodes[self.src[n]], g.RateIF):
                    self._count(n, "dense", self.dense_macs[n] * B)

    # -- summaries ---------------------------------------------------------------------------------
    def summary(self) -> dict:
        """Per-node counters divided by the number of frames (per environment step)."""
        f = max(self.frames, 1)
        return {n: {k: v / f for k, v in c.items() if v} for n, c in self.stats.items() if any(c.values())}

    def totals_per_frame(self) -> dict:
        """events, synops (read path), dense MACs, plastic ops / dense plastic ops, per frame."""
        f = max(self.frames, 1)
        tot = {k: sum(c[k] for c in self.stats.values()) / f for k in COUNTERS}
        tot["synops_ratio"] = tot["synops"] / tot["dense"] if tot["dense"] else float("nan")
        return tot


def conv_event_tables(weight, in_shape, stride, padding) -> tuple:
    """(pos, kk, wt) of a Conv2d for :func:`conversion.plastic_kernels.conv_events_int`: for each
    input unit (c, y, x) (flat, C H W order) the output positions p = i Wo + j whose window covers
    it and the kernel entry kk = (c kh + a) kw + b it meets there (y = i sh + a - ph, x = j sw + b -
    pw), padded with the sink position Ho Wo; ``wt`` = the weights as (C kh kw, O) (integer
    weights: the narrowest integer dtype; float: float64)."""
    w = np.asarray(weight)
    O, C, kh, kw = w.shape
    _, H, W = in_shape
    (sh, sw), (ph, pw) = stride, padding
    Ho, Wo = (H + 2 * ph - kh) // sh + 1, (W + 2 * pw - kw) // sw + 1
    n_pos, P = Ho * Wo, -(-kh // sh) * -(-kw // sw)
    pos, kk = np.full((C * H * W, P), n_pos, INT), np.zeros((C * H * W, P), INT)
    cnt = np.zeros(C * H * W, INT)
    c = np.arange(C)
    for i in range(Ho):
        for j in range(Wo):
            for a in range(kh):
                for b in range(kw):
                    y, x = i * sh + a - ph, j * sw + b - pw
                    if 0 <= y < H and 0 <= x < W:
                        unit = (c * H + y) * W + x
                        pos[unit, cnt[unit]] = i * Wo + j
                        kk[unit, cnt[unit]] = (c * kh + a) * kw + b
                        cnt[unit] += 1
    wt = w.reshape(O, C * kh * kw).T
    return pos, kk, (narrow_int(wt) if np.issubdtype(w.dtype, np.integer) else np.ascontiguousarray(wt, np.float64))


def narrow_int(a) -> np.ndarray:
    """The integer array ``a`` as C-contiguous int8, int16 or int32, the narrowest that holds its
    values (int64 where none does)."""
    a = np.asarray(a)
    lo, hi = (int(a.min()), int(a.max())) if a.size else (0, 0)
    for t in (np.int8, np.int16, np.int32):
        if np.iinfo(t).min <= lo and hi <= np.iinfo(t).max:
            return np.ascontiguousarray(a, t)
    return np.ascontiguousarray(a, INT)


def run_sequence(sim: Simulator, frames, starts=None, record: tuple = ()) -> dict:
    """Run a recorded sequence ``frames`` (T, B, *shape) (or (T, *shape) for B = 1); ``starts`` (T, B)
    bool: reset those environments before processing that frame.  Returns logits (T, B, A), value
    (T, B), actions (T, B) and, for each node in ``record``, its values (T, B, ...)."""
    frames = np.asarray(frames)
    if frames.ndim == len(sim.net.nodes[sim.order[0]].shape) + 1:
        frames = frames[:, None]
    T = frames.shape[0]
    starts = np.zeros((T, sim.B), bool) if starts is None else np.asarray(starts, bool).reshape(T, sim.B)
    out = {"logits": [], "value": [], "actions": []}
    rec = {n: [] for n in record}
    for t in range(T):
        if starts[t].any():
            sim.reset(starts[t])
        r = sim.step(frames[t])
        out["logits"].append(r.logits)
        out["value"].append(r.value)
        out["actions"].append(r.actions)
        for n in record:
            rec[n].append(np.array(sim.values[n]))
    res = {k: np.stack(v) for k, v in out.items()}
    res.update({n: np.stack(v) for n, v in rec.items()})
    return res


def prephase_state(net: g.Network, fixed: bool = True) -> dict:
    """{node: {state key: array of batch 1}}: the reset state of ``net``'s fixed-point layers of
    Lava's rule after their pre-phase sub-steps (:mod:`conversion.sd_reset`), computed with this
    simulator's node kernels; {} where nothing runs before the input (float, "round" networks)."""
    if not (fixed and sd_reset.lava_nodes(net)):
        return {}

    class _Bare(Simulator):
        prephase = False

    return sd_reset.run_prephase(_Bare(net, 1, fixed=True))
