"""The converted Pong policy as a Lava process graph, run frame by frame (issue #5).

Backends: ``lava`` (floating_pt models, float64), ``lava-fixed`` (fixed_pt models, bit-accurate
against conversion's NumPy fixed-point simulator) and ``loihi2`` (the same graph compiled for Loihi 2
hardware through lava-loihi; it raises BackendUnavailableError where lava-loihi or a board is
missing).

Graph: lava Injector (the host sends each frame) -> SDLayer(input) -> SDLayer(conv1) ->
SDLayer(conv2) -> SDLayer(stpn) -> SDLayer(pi), SDLayer(v); every SDLayer's ``rec_out`` goes to a
lava Extractor, from which the host reads activations, event counts and synaptic operations.
One frame = ``period`` Lava time steps, because every layer delivers its events one step later
(the lava Dense convention, see :mod:`lava_procs.stpn_layer`); the host sends the frame in the
frame's first step (zeros in the others) and reads the heads after the last.  The run is one
non-blocking ``RunSteps`` over all frames; in closed loop (Pong) the host computes the action from
the logits of frame t before it sends frame t+1, which the Injector (blocking receive) waits for.
"""
from __future__ import annotations

import numpy as np

import lava_procs
from mstpn.errors import BackendUnavailableError, MstpnError
from mstpn.netspec import NetSpec, UnsupportedNetworkError


def _check(spec: NetSpec):
    if spec.meta.get("mode", "sigma_delta") != "sigma_delta":
        raise UnsupportedNetworkError("the Lava backends run sigma-delta networks; this file is in "
                                      f"{spec.meta.get('mode')!r} mode (rate-coded IF: use the snntorch backend)")


class LavaRunner:
    """Frame-by-frame Lava run of ``spec``; ``fixed_point`` selects the fixed_pt models."""

    def __init__(self, spec: NetSpec, fixed_point: bool = False, max_frames: int = 200_000, loihi2: bool = False):
        lava_procs.require_lava()
        _check(spec)
        self.spec, self.fixed_point = spec, fixed_point
        self.name = "lava-fixed" if fixed_point else "lava"
        self.period = max(spec.depth(n) for n in spec.names)
        self.max_frames = int(max_frames)
        self.loihi2 = loihi2
        self.fixed = fixed_params(spec) if fixed_point else None
        self._running = False
        self._build()

    def _build(self):
        from lava.proc.io.extractor import Extractor
        from lava.proc.io.injector import Injector
        from lava.proc.io.utils import ChannelConfig, ReceiveEmpty, ReceiveNotEmpty, SendFull

        from lava_procs.stpn_layer import SDLayer

        spec = self.spec
        self.procs, self.ext = {}, {}
        for layer in spec.layers:
            in_shape = None if layer.source is None else spec[layer.source].shape
            n_in = 84 * 84 if layer.source is None else int(np.prod(in_shape))
            proc = SDLayer(layer=layer, in_shape=in_shape, n_in=n_in, phase=spec.depth(layer.name) - 1,
                           period=self.period, fixed=None if self.fixed is None else self.fixed.get(layer.name))
            if layer.source is not None:
                self.procs[layer.source].s_out.connect(proc.a_in)
            self.procs[layer.name] = proc
            ext = Extractor(shape=(layer.size + 2,), buffer_size=4)
            proc.rec_out.connect(ext.in_port)
            self.ext[layer.name] = ext
        cfg = ChannelConfig(send_full=SendFull.BLOCKING, receive_empty=ReceiveEmpty.BLOCKING,
                            receive_not_empty=ReceiveNotEmpty.FIFO)
        self.inj = Injector(shape=(84 * 84,), buffer_size=2 * self.period, channel_config=cfg)
        self.inj.out_port.connect(self.procs[spec.layers[0].name].a_in)
        self._zeros = np.zeros(84 * 84)
        self._root = self.procs[spec.layers[0].name]

    def run_config(self):
        from lava.magma.core.run_configs import Loihi2SimCfg
        from lava.proc.io.extractor import Extractor, PyLoihiExtractorModel
        from lava.proc.io.injector import Injector, PyLoihiInjectorModel

        if self.loihi2:
            return loihi2_run_config()
        return Loihi2SimCfg(select_tag="fixed_pt" if self.fixed_point else "floating_pt",
                            exception_proc_model_map={Extractor: PyLoihiExtractorModel,
                                                      Injector: PyLoihiInjectorModel})

    def _start(self):
        from lava.magma.core.run_conditions import RunSteps

        self._root.run(condition=RunSteps(num_steps=self.max_frames * self.period, blocking=False),
                       run_cfg=self.run_config())
        self._running = True
        self._frames = 0

    def reset(self):
        """A new episode: the Lava graph is rebuilt (its state lives in the ProcessModels)."""
        if self._running:
            self.close()
            self._build()
        self._frames = 0

    def step(self, obs):
        from mstpn.compare import StepOut

        if not self._running:
            self._start()
        if self._frames >= self.max_frames:
            raise MstpnError(f"Lava run limited to {self.max_frames} frames; raise max_frames")
        self.inj.send(np.asarray(obs, np.float64).reshape(-1))
        for _ in range(self.period - 1):
            self.inj.send(self._zeros)
        out = StepOut(None)
        for layer in self.spec.layers:
            recs = [self.ext[layer.name].receive() for _ in range(self.period)]
            rec = np.asarray(recs[self.spec.depth(layer.name) - 1])
            n = layer.size
            out.acts[layer.name] = rec[:n].copy()
            out.events[layer.name] = int(rec[n])
            out.synops[layer.name] = int(rec[n + 1])
        if self.fixed_point:
            out.raw = {k: np.rint(v).astype(np.int64) for k, v in out.acts.items()}
            out.acts = {k: self.fixed.to_float(k, v) for k, v in out.raw.items()}
        out.logits = out.acts[self.spec.outputs["logits"]].copy()
        self._frames += 1
        return out

    def close(self):
        if self._running:
            self._running = False
            try:
                self._root.stop()
            except Exception:  # noqa: BLE001 - a stopped runtime may complain; nothing is left to free
                pass


def make_float_runner(spec, **options):
    return LavaRunner(spec, fixed_point=False, **options)


def make_fixed_runner(spec, **options):
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
                                  "Loihi 2 NcProcessModel for it is not written yet")


# -- fixed point (adapter to conversion's fixed-point simulator) ---------------------------------
def fixed_params(spec: NetSpec):
    raise BackendUnavailableError("lava-fixed needs conversion.fixed_point (not available yet)")


def make_fixed_kernel(layer, in_shape, fixed):
    raise BackendUnavailableError("lava-fixed needs conversion.fixed_point (not available yet)")


def conversion_fixed_runner(spec, **options):
    raise BackendUnavailableError("numpy-fixed needs conversion.simulator (not available yet)")
