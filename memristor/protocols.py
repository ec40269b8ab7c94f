"""Characterisation protocols of the device model, runnable on every backend of the registry.

Four protocols, each a ``build_<name>(params, seed, variability)`` returning ``(DeviceBatch, Drive,
g_lt0)`` on a uniform grid of ``DT = 10 ms`` and an ``analyse_<name>(trace, batch, drive)`` returning
a summary table (one dict per device):

* ``pulse_train``: 30 potentiating then 30 depressing pulses of ``v_lt_threshold + 50 mV`` every
  50 ms (two devices: widths t_ref/4 and t_ref) -> soft-bounded, saturating staircase of g_lt on the
  quantised levels, plus the volatile g_st.
* ``relaxation``: a burst of 10 sub-threshold pulses (0.75 v_lt_threshold, t_ref, one per step) then
  20 s of relaxation, one device per bias in linspace(v_bias_min, v_bias_max, 4); the fitted decay
  constant (log-linear least squares of g_st) follows tau(V) = tau0 exp(-V / v_tau).
* ``ppf``: two sub-threshold pulses at intervals 20 ms .. 2 s (one device per interval);
  PPF index = second increment / first increment, where an increment is g_st right after the
  pulse minus g_st relaxed over the step from the previous sample.
* ``metaplasticity``: 0, 4 or 16 priming pulses (every 50 ms), then 1.15 s after the last one the
  same test pulse, at three biases; reports the test increment and the retention
  g_st(t_test + 2 s) / g_st(t_test).

``run_protocol(name, backend, params, seed)`` runs one protocol through
:func:`mstpn_base.registry.device_simulator`; ``write_traces_csv``, ``write_summary_csv`` and
``plot_protocol`` write results atomically (:mod:`mstpn_base.io`).
"""
from __future__ import annotations

import csv
import time
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from memristor import reference as ref
from mstpn_base.registry import device_simulator
from memristor.params import DeviceParams
from memristor.reference import DeviceBatch, Drive, Trace
from mstpn_base.errors import MstpnError, ParameterError
from mstpn_base.io import atomic_open, atomic_path

DT = 0.01  #: grid step of every protocol [s]

# pulse_train
PT_N_UP, PT_N_DOWN, PT_EVERY, PT_START, PT_TAIL = 30, 30, 5, 10, 100  # pulses, steps
PT_WIDTH_FACTORS = (0.25, 1.0)  # pulse width / t_ref, one device each
PT_OVERDRIVE = 0.05  # V above v_lt_threshold
# relaxation
RX_N_BIAS, RX_BURST, RX_START, RX_DURATION = 4, 10, 10, 20.0  # devices, pulses, step, s
# ppf
PPF_INTERVALS_STEPS = (2, 5, 10, 20, 50, 100, 200)  # 20 ms .. 2 s at DT
PPF_START, PPF_TAIL = 10, 50
# metaplasticity
META_PRIMES, META_EVERY, META_START, META_TEST, META_RETENTION = (0, 4, 16), 5, 10, 200, 200
SUB_THRESHOLD_FRACTION = 0.75  # sub-threshold pulses: 0.75 v_lt_threshold, width t_ref


def _sub_pulse(p: DeviceParams) -> tuple[float, float]:
    v = SUB_THRESHOLD_FRACTION * p.v_lt_threshold
    if v <= 0 or ref.pulse_efficacy(p, v, p.t_ref) == 0:
        raise ParameterError("the protocols need v_lt_threshold > 0 (sub-threshold pulses at 0.75 of it)")
    return v, p.t_ref


def _batch(p: DeviceParams, v_bias, seed, variability):
    return ref.make_devices(p, v_bias, seed=seed, variability=variability)


def _drive(p, n_steps, n, pulses, seed, variability):
    return ref.make_drive(p, n_steps, n, DT, pulses, seed=seed, noise=variability)


# -- builders --------------------------------------------------------------------------------------
def build_pulse_train(params: DeviceParams, seed: int = 0, variability: bool = False):
    """Two devices at v_bias_min from g_lt = g_min: 30 pulses of +V then 30 of -V (V = v_lt_threshold
    + 50 mV, every 50 ms), widths t_ref/4 and t_ref."""
    p = params
    v = p.v_lt_threshold + PT_OVERDRIVE
    n = len(PT_WIDTH_FACTORS)
    pulses = []
    for dev, wf in enumerate(PT_WIDTH_FACTORS):
        for i in range(PT_N_UP + PT_N_DOWN):
            pulses.append((PT_START + PT_EVERY * i, dev, v if i < PT_N_UP else -v, wf * p.t_ref))
    n_steps = PT_START + PT_EVERY * (PT_N_UP + PT_N_DOWN) + PT_TAIL
    return _batch(p, np.full(n, p.v_bias_min), seed, variability), _drive(p, n_steps, n, pulses, seed, variability), p.g_min


def build_relaxation(params: DeviceParams, seed: int = 0, variability: bool = False):
    """One device per bias in linspace(v_bias_min, v_bias_max, 4): 10 sub-threshold pulses on
    consecutive steps, then 20 s of relaxation."""
    p = params
    v, w = _sub_pulse(p)
    biases = np.linspace(p.v_bias_min, p.v_bias_max, RX_N_BIAS)
    pulses = [(RX_START + i, dev, v, w) for dev in range(RX_N_BIAS) for i in range(RX_BURST)]
    n_steps = RX_START + RX_BURST + int(round(RX_DURATION / DT))
    return _batch(p, biases, seed, variability), _drive(p, n_steps, RX_N_BIAS, pulses, seed, variability), p.g_min


def build_ppf(params: DeviceParams, seed: int = 0, variability: bool = False):
    """One device per interval (20 ms .. 2 s), at the mid bias: two identical sub-threshold pulses."""
    p = params
    v, w = _sub_pulse(p)
    n = len(PPF_INTERVALS_STEPS)
    pulses = [(PPF_START + k, dev, v, w) for dev, gap in enumerate(PPF_INTERVALS_STEPS) for k in (0, gap)]
    n_steps = PPF_START + max(PPF_INTERVALS_STEPS) + PPF_TAIL
    mid = 0.5 * (p.v_bias_min + p.v_bias_max)
    return _batch(p, np.full(n, mid), seed, variability), _drive(p, n_steps, n, pulses, seed, variability), p.g_min


def build_metaplasticity(params: DeviceParams, seed: int = 0, variability: bool = False):
    """3 priming histories (0, 4, 16 pulses) x 3 biases (min, mid, max); the same test pulse at
    step 200 (2 s), then 2 s of relaxation.  Device index = i_bias * 3 + i_prime."""
    p = params
    v, w = _sub_pulse(p)
    biases = np.linspace(p.v_bias_min, p.v_bias_max, 3)
    v_bias, pulses = [], []
    for vb in biases:
        for n_prime in META_PRIMES:
            dev = len(v_bias)
            v_bias.append(vb)
            pulses += [(META_START + META_EVERY * i, dev, v, w) for i in range(n_prime)]
            pulses.append((META_TEST, dev, v, w))
    n = len(v_bias)
    n_steps = META_TEST + META_RETENTION + 1
    return _batch(p, v_bias, seed, variability), _drive(p, n_steps, n, pulses, seed, variability), p.g_min


# -- analysis helpers ------------------------------------------------------------------------------
def pulse_steps(drive: Drive, device: int, sign: int = 0) -> np.ndarray:
    """Steps at which ``device`` receives a pulse (sign > 0: potentiating, < 0: depressing, 0: any)."""
    s = drive.s[:, device]
    mask = s > 0 if sign > 0 else s < 0 if sign < 0 else s != 0
    return np.flatnonzero(mask)


def st_increment(trace: Trace, batch: DeviceBatch, drive: Drive, step: int, device: int) -> float:
    """Change of g_st [S] caused by the pulse at ``step``: g_st[k] - g_st[k-1] exp(-dt/tau)."""
    before = 0.0 if step == 0 else trace.g_st[step - 1, device] * np.exp(-drive.dt / batch.tau[device])
    return float(trace.g_st[step, device] - before)


def fit_decay(t, g) -> float:
    """Time constant [s] of g = A exp(-t/tau) by least squares on log g (samples with g > 0)."""
    t, g = np.asarray(t, float), np.asarray(g, float)
    ok = g > 0
    if ok.sum() < 3:
        raise MstpnError("fewer than 3 positive samples to fit a decay")
    slope = np.polyfit(t[ok], np.log(g[ok]), 1)[0]
    return float(-1.0 / slope) if slope < 0 else float("inf")


# -- analyses --------------------------------------------------------------------------------------
def analyse_pulse_train(trace: Trace, batch: DeviceBatch, drive: Drive) -> list[dict]:
    """Per device: g_lt before / after LTP / after LTD, first and last LTP step, levels visited."""
    rows = []
    for dev in range(batch.n):
        up, down = pulse_steps(drive, dev, +1), pulse_steps(drive, dev, -1)
        g_up, g_down = trace.g_lt[up, dev], trace.g_lt[down, dev]
        g0 = trace.g_lt[up[0] - 1, dev] if up[0] else g_up[0]
        steps_up = np.diff(np.concatenate([[g0], g_up]))
        rows.append(dict(
            device=dev, label=f"{drive.v[up[0], dev]:.2f} V x {drive.width[up[0], dev] * 1e6:.0f} us",
            pulse_v_V=float(drive.v[up[0], dev]), pulse_width_s=float(drive.width[up[0], dev]),
            n_ltp=len(up), n_ltd=len(down), g_lt_initial_S=float(g0), g_lt_after_ltp_S=float(g_up[-1]),
            g_lt_after_ltd_S=float(g_down[-1]), first_ltp_step_S=float(steps_up[0]),
            last_ltp_step_S=float(steps_up[-1]), g_st_peak_S=float(trace.g_st[:, dev].max()),
            levels_visited=int(len(np.unique(trace.g_lt[:, dev]))),
        ))
    return rows


def analyse_relaxation(trace: Trace, batch: DeviceBatch, drive: Drive) -> list[dict]:
    """Per bias: tau fitted to g_st after the burst (samples above 1e-3 of the burst-end value),
    the model's tau(V) and the device's own tau (with device-to-device variation)."""
    p, rows = batch.params, []
    for dev in range(batch.n):
        last = pulse_steps(drive, dev)[-1]
        g = trace.g_st[last:, dev]
        t = trace.t[last:] - trace.t[last]
        keep = g > 1e-3 * g[0]
        tau_fit = fit_decay(t[keep], g[keep])
        tau_model = float(p.tau(batch.v_bias[dev]))
        rows.append(dict(device=dev, label=f"V_bias={batch.v_bias[dev]:.2f} V", v_bias_V=float(batch.v_bias[dev]),
                         g_st_end_S=float(g[0]), tau_fit_s=tau_fit, tau_model_s=tau_model,
                         tau_device_s=float(batch.tau[dev]), rel_error_vs_device=tau_fit / batch.tau[dev] - 1))
    return rows


def analyse_ppf(trace: Trace, batch: DeviceBatch, drive: Drive) -> list[dict]:
    """Per interval: first and second g_st increments and PPF index = second / first."""
    rows = []
    for dev in range(batch.n):
        k1, k2 = pulse_steps(drive, dev)[:2]
        i1, i2 = (st_increment(trace, batch, drive, k, dev) for k in (k1, k2))
        interval = (k2 - k1) * drive.dt
        rows.append(dict(device=dev, label=f"interval={interval * 1e3:.0f} ms", interval_s=interval,
                         increment1_S=i1, increment2_S=i2, ppf_index=i2 / i1 if i1 else float("nan")))
    return rows


def analyse_metaplasticity(trace: Trace, batch: DeviceBatch, drive: Drive) -> list[dict]:
    """Per device: priming count, bias, test-pulse increment, retention over the window after it."""
    rows = []
    for dev in range(batch.n):
        steps = pulse_steps(drive, dev)
        k = steps[-1]
        end = min(k + META_RETENTION, drive.n_steps - 1)
        g_after = trace.g_st[k, dev]
        rows.append(dict(device=dev, label=f"{len(steps) - 1} primes, V_bias={batch.v_bias[dev]:.2f} V",
                         n_priming=len(steps) - 1, v_bias_V=float(batch.v_bias[dev]),
                         test_increment_S=st_increment(trace, batch, drive, k, dev),
                         retention_window_s=(end - k) * drive.dt,
                         retention=float(trace.g_st[end, dev] / g_after) if g_after else float("nan")))
    return rows


# -- plots -----------------------------------------------------------------------------------------
def _plot_pulse_train(ax, res):
    for dev, row in enumerate(res.rows):
        steps = pulse_steps(res.drive, dev)
        n = np.arange(1, len(steps) + 1)
        line, = ax.plot(n, res.trace.g_lt[steps, dev] * 1e9, "o-", ms=3, label=f"g_lt, {row['label']}")
        ax.plot(n, res.trace.g[steps, dev] * 1e9, ":", color=line.get_color(), label="g_lt + g_st")
    ax.axvline(PT_N_UP + 0.5, color="grey", lw=0.5)
    ax.set(xlabel="pulse number (LTP then LTD)", ylabel="conductance [nS]", title="pulse train")


def _plot_relaxation(ax, res):
    for dev, row in enumerate(res.rows):
        last = pulse_steps(res.drive, dev)[-1]
        t = res.trace.t[last:] - res.trace.t[last]
        ax.semilogy(t, res.trace.g_st[last:, dev] / row["g_st_end_S"],
                    label=f"{row['label']}: tau={row['tau_fit_s']:.2f} s (model {row['tau_model_s']:.2f})")
    ax.set(xlabel="time after burst [s]", ylabel="g_st / g_st(end of burst)", title="relaxation", ylim=(1e-3, 1.2))


def _plot_ppf(ax, res):
    x = [r["interval_s"] for r in res.rows]
    ax.semilogx(x, [r["ppf_index"] for r in res.rows], "o-", label="PPF index")
    ax.axhline(1.0, color="grey", lw=0.5)
    ax.set(xlabel="pulse interval [s]", ylabel="PPF index (2nd / 1st increment)", title="paired-pulse facilitation")


def _plot_metaplasticity(ax, res):
    biases = sorted({r["v_bias_V"] for r in res.rows})
    for vb in biases:
        sel = [r for r in res.rows if r["v_bias_V"] == vb]
        ax.plot([r["n_priming"] for r in sel], [r["test_increment_S"] * 1e9 for r in sel], "o-",
                label=f"V_bias={vb:.2f} V, retention {sel[0]['retention']:.2f} after {sel[0]['retention_window_s']:.1f} s")
    ax.set(xlabel="priming pulses", ylabel="test-pulse increment of g_st [nS]", title="meta-plasticity")


# -- registry, runner, writers ---------------------------------------------------------------------
@dataclass(frozen=True)
class Protocol:
    name: str
    build: Callable
    analyse: Callable
    plot: Callable


PROTOCOLS: dict[str, Protocol] = {
    "pulse_train": Protocol("pulse_train", build_pulse_train, analyse_pulse_train, _plot_pulse_train),
    "relaxation": Protocol("relaxation", build_relaxation, analyse_relaxation, _plot_relaxation),
    "ppf": Protocol("ppf", build_ppf, analyse_ppf, _plot_ppf),
    "metaplasticity": Protocol("metaplasticity", build_metaplasticity, analyse_metaplasticity, _plot_metaplasticity),
}


@dataclass
class ProtocolResult:
    """One protocol run: inputs, the recorded trace, the summary rows, and the simulate wall time [s]."""

    name: str
    backend: str
    batch: DeviceBatch
    drive: Drive
    g_lt0: float
    trace: Trace
    rows: list = field(default_factory=list)
    seconds: float = 0.0


def get_protocol(name: str) -> Protocol:
    if name not in PROTOCOLS:
        raise MstpnError(f"unknown protocol {name!r}; choose from {', '.join(PROTOCOLS)}")
    return PROTOCOLS[name]


def run_protocol(name: str, backend: str = "numpy", params: DeviceParams | None = None, seed: int = 0,
                 variability: bool = False, simulator: Callable | None = None) -> ProtocolResult:
    """Build protocol ``name``, simulate it on ``backend`` (or the given ``simulator``), analyse."""
    proto = get_protocol(name)
    params = DeviceParams() if params is None else params
    sim = simulator or device_simulator(backend)
    batch, drive, g0 = proto.build(params, seed, variability)
    t0 = time.perf_counter()
    trace = sim(batch, drive, g_lt0=g0)
    seconds = time.perf_counter() - t0
    return ProtocolResult(name, backend, batch, drive, g0, trace, proto.analyse(trace, batch, drive), seconds)


def plot_protocol(result: ProtocolResult, path) -> None:
    """Write the protocol's figure as a PNG (atomically)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    try:
        PROTOCOLS[result.name].plot(ax, result)
        ax.set_title(f"{ax.get_title()} ({result.backend})")
        ax.legend(fontsize=7)
        fig.tight_layout()
        with atomic_path(path) as tmp:
            fig.savefig(tmp, format="png", dpi=110)
    finally:
        plt.close(fig)


TRACE_COLUMNS = ("protocol", "backend", "device", "label", "t_s", "g_lt_S", "g_st_S")


def write_traces_csv(results, path) -> None:
    """Long-format traces: one row per (protocol, device, time step), columns TRACE_COLUMNS."""
    with atomic_open(path, "w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(TRACE_COLUMNS)
        for res in results:
            for dev in range(res.batch.n):
                label = res.rows[dev]["label"] if dev < len(res.rows) else ""
                for k in range(res.drive.n_steps):
                    w.writerow((res.name, res.backend, dev, label, repr(float(res.trace.t[k])),
                                repr(float(res.trace.g_lt[k, dev])), repr(float(res.trace.g_st[k, dev]))))


def write_summary_csv(results, path) -> None:
    """Summary rows of one or more results: protocol, backend, then the protocol's own columns."""
    cols = ["protocol", "backend"]
    for res in results:
        for row in res.rows:
            cols += [c for c in row if c not in cols]
    with atomic_open(path, "w", newline="", encoding="utf-8") as fh:
        w = csv.DictWriter(fh, fieldnames=cols, restval="")
        w.writeheader()
        for res in results:
            for row in res.rows:
                w.writerow({"protocol": res.name, "backend": res.backend, **row})


def format_rows(rows: list[dict], columns=None) -> str:
    """Plain-text table of summary rows (floats to 4 significant digits)."""
    if not rows:
        return "(no rows)"
    columns = list(columns or rows[0])
    fmt = lambda v: f"{v:.4g}" if isinstance(v, float) else str(v)  # noqa: E731
    cells = [[fmt(r.get(c, "")) for c in columns] for r in rows]
    widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(columns)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(columns, widths))]
    lines += ["  ".join(v.ljust(w) for v, w in zip(row, widths)) for row in cells]
    return "\n".join(lines)
