"""Lava backend of the device model: ``simulate(batch, drive, g_lt0=None, fixed_point=False)``.

Backends "lava" (floating_pt, float64) and "lava-fixed" (fixed_pt, bit-accurate integers of
:mod:`memristor.fixed_point`).  The drive is fed by three lava RingBuffers (s, lt, noise) wired
straight into MemristorArray.  A RingBuffer sends column ts-1 of its data at time step ts and a
direct OutPort -> InPort connection delivers it in the same time step (no Dense, so no one-step
delay): drive row k lands at time step k+1 and is recorded in row k of the trace.  Each step's
state leaves through the ``state_out`` port into a lava Extractor and is received here while the
run proceeds (non-blocking run): one message per step, where Var.get() would send every element
separately.
Lava is imported only when simulate is called (BackendUnavailableError if it is missing).
"""
from __future__ import annotations

import numpy as np

from lava_procs import run_config  # noqa: F401  (also used by examples)
from memristor import equations as eq
from memristor import fixed_point as fp
from memristor import reference as ref
from memristor.reference import DeviceBatch, Drive, Trace


def _float_values(batch: DeviceBatch, drive: Drive, g_lt0) -> tuple[dict, np.ndarray, tuple]:
    lam = ref.decay_factors(batch, drive.dt)
    n = batch.n
    rows = [lam[v] for v in eq.TIME_CONSTANTS] + [batch.a_st, batch.eta_lt]      # FLOAT_CONSTS
    consts = np.stack([np.broadcast_to(np.asarray(x, float), (n,)) for x in rows])
    return ref.initial_state(batch, g_lt0), consts, (drive.s, drive.lt.astype(float), drive.noise)


def _fixed_values(prob: fp.FixedProblem) -> tuple[dict, np.ndarray, tuple]:
    consts = np.stack([prob.consts[k] for k in fp.CONST_ORDER]).astype(np.int32)
    state = {k: np.asarray(v, np.int32) for k, v in prob.init.items()}
    return state, consts, (prob.s, prob.lt.astype(np.int32), prob.noise)


def build(batch: DeviceBatch, drive: Drive, g_lt0=None, fixed_point: bool = False,
          spec: fp.FixedPointSpec = fp.DEFAULT_SPEC):
    """(MemristorArray fed by three RingBuffers with the drive, FixedProblem or None); the caller
    runs it for drive.n_steps steps (Loihi2SimCfg select_tag 'fixed_pt' / 'floating_pt')."""
    import lava_procs

    lava_procs.require_lava()
    from lava.proc.io.source import RingBuffer

    from lava_procs.memristor.process import MemristorArray

    ref.check_shapes(batch, drive)
    prob = fp.integer_problem(batch, drive, spec, g_lt0) if fixed_point else None
    state, consts, inputs = _fixed_values(prob) if fixed_point else _float_values(batch, drive, g_lt0)
    proc = MemristorArray(shape=(batch.n,), consts=consts, state=state, params=batch.params,
                          n_levels=int(batch.params.n_levels), spec=spec)
    for x, port in zip(inputs, (proc.s_in, proc.lt_in, proc.noise_in)):
        RingBuffer(data=np.ascontiguousarray(x.T)).s_out.connect(port)  # (n, n_steps): time last
    return proc, prob


def simulate(batch: DeviceBatch, drive: Drive, g_lt0=None, fixed_point: bool = False,
             spec: fp.FixedPointSpec = fp.DEFAULT_SPEC) -> Trace:
    """Run the device model in Lava for drive.n_steps steps; returns the per-step Trace.

    fixed_point=False: float64, equal to memristor.reference.simulate up to rounding.
    fixed_point=True: equal bit for bit to memristor.fixed_point.simulate_fixed (raw integers in
    ``trace.meta["raw"]``); an overflow raises FixedPointOverflowError if ``spec.strict``.
    """
    if drive.n_steps == 0:  # nothing to run (Lava cannot run 0 steps)
        import lava_procs

        lava_procs.require_lava()
        ref.check_shapes(batch, drive)
        prob = fp.integer_problem(batch, drive, spec, g_lt0) if fixed_point else None
        raw = {v: np.empty((0, batch.n), fp.INT if fixed_point else float) for v in ref.STATE_VARS}
        return _trace(prob, raw, drive, fixed_point, [])
    proc, prob = build(batch, drive, g_lt0, fixed_point, spec)
    from lava.magma.core.run_conditions import RunSteps
    from lava.proc.io.extractor import Extractor

    from lava_procs.lifecycle import LavaRuntime

    n_steps = drive.n_steps
    ext = Extractor(shape=(len(ref.STATE_VARS), batch.n), buffer_size=min(n_steps, 256))
    proc.state_out.connect(ext.in_port)
    rows = np.empty((n_steps, len(ref.STATE_VARS), batch.n))
    runtime = LavaRuntime(proc)
    try:
        with runtime.host_calls():
            runtime.start(run_config(fixed_point), condition=RunSteps(num_steps=n_steps, blocking=False))
            for k in range(n_steps):
                rows[k] = ext.receive()
            proc.wait()
            ovf = np.asarray(proc.overflow.get()).astype(int)
    finally:
        runtime.stop()   # the runtime and its worker processes, also after an error or an interrupt
    raw = {v: rows[:, i, :] for i, v in enumerate(ref.STATE_VARS)}
    if fixed_point:  # integers < 2**24 travel exactly through the float64 Extractor channel
        raw = {v: a.astype(fp.INT) for v, a in raw.items()}
    events = []
    if ovf[0]:
        event = (fp.OVERFLOW_ORDER[int(ovf[1])], int(ovf[2]), int(ovf[3]))
        if spec.strict:
            raise fp.overflow_error(*event)
        events = [event]  # the model keeps the first event and the total count
    trace = _trace(prob, raw, drive, fixed_point, events)
    trace.meta["overflow_count"] = int(ovf[0])
    return trace


def _trace(prob, raw, drive, fixed_point, events) -> Trace:
    if fixed_point:
        return fp.to_trace(prob, raw, drive.times, "lava-fixed", events)
    return Trace(drive.times, raw["g_lt"], raw["g_st"], raw["r"], raw["q"], backend="lava")
