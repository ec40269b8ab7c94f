"""Fit the compact model to a user's measurements (scipy.optimize.least_squares).

Input: a CSV with one row per sample (format in docs/fitting.md and :func:`read_measurements`).
Two kinds of trace, and what each identifies:

* ``relaxation`` (after a burst, no pulses in the fitted window): G(t) = c + A exp(-t / tau(V)),
  tau(V) = tau0 exp(-V / v_tau), with per-trace nuisances A (amplitude) and c (offset = the
  non-volatile part).  Identifies **tau0**, and **v_tau** when at least two distinct biases are given.
* ``pulse_train`` (a rested device: g_st = r = q = 0 at the first sample): the full model of
  :mod:`memristor.reference`, evaluated exactly at the sample times (:func:`simulate_samples`), with
  a per-trace nuisance g_lt0 (initial long-term conductance).  Identifies **a_st** and
  **g_st_max** (sub-threshold pulses; a depressing pulse fixes a_st alone, saturation fixes
  g_st_max), and **eta_lt** and **g_max** when some pulse has |V| >= v_lt_threshold.  tau0 and
  v_tau enter too (relaxation between pulses) and are fitted jointly if relaxation traces exist,
  otherwise held.

Held at the ``init`` values (not identifiable from one pulse shape; documented in docs/fitting.md):
v0, beta_t, v_ref, t_ref (only a_st * s(V, t_p) is seen at one amplitude and width), ppf_gain,
tau_ppf, meta_depletion, tau_meta, g_min and the variability parameters.  Quantisation is ignored
while fitting (n_levels = 0: the model must be differentiable); the output keeps init's n_levels.

Fitted parameters are varied as theta = log(value / init) within their physical ranges; residuals
are in nS, all samples weighted equally (one measurement noise).  Uncertainties: the covariance
s^2 (J^T J)^-1 at the optimum, s^2 = sum(res^2) / (N - P) (delta method back to linear units).
"""
from __future__ import annotations

import csv
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from memristor import equations as eq
from memristor import reference as ref
from memristor.params import DeviceParams
from mstpn_base.errors import DataFormatError, MstpnError, ParameterError

KINDS = ("relaxation", "pulse_train")
COLUMNS = ("kind", "trace_id", "v_bias_V", "t_s", "pulse_v_V", "pulse_width_s", "g_S")
NUMERIC = ("v_bias_V", "t_s", "pulse_v_V", "pulse_width_s", "g_S")
SCALE = 1e-9  #: residuals in nS
TAG = "fitted-to-user-data"
MIN_RELAX_SAMPLES = 4  # c, A and the decay need more samples than unknowns
#: plausible magnitude of each numeric column (beyond it the file is in other units or corrupted)
LIMITS = {"v_bias_V": 100.0, "t_s": 1e9, "pulse_v_V": 100.0, "pulse_width_s": 1e3, "g_S": 1.0}


class FitError(MstpnError):
    """The optimiser failed or the data identify nothing; no output is written."""


@dataclass
class MeasuredTrace:
    """One trace of a measurement file; arrays in SI units, ``lines`` = CSV line numbers."""

    kind: str
    trace_id: str
    v_bias: float
    t: np.ndarray
    pulse_v: np.ndarray
    pulse_width: np.ndarray
    g: np.ndarray
    lines: np.ndarray

    @property
    def first_line(self) -> int:
        return int(self.lines[0])


# -- reading and validation ------------------------------------------------------------------------
def read_measurements(path) -> list[MeasuredTrace]:
    """Parse and strictly validate a measurement CSV; every problem raises :class:`DataFormatError`
    naming the file, the line (1 = header) and the column.  Lines starting with '#' are comments;
    extra columns are ignored."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8-sig")  # a byte-order mark (spreadsheet export) is dropped
    except UnicodeDecodeError as exc:
        raise DataFormatError(f"{path}: not a UTF-8 text file (byte {exc.start}); save the CSV as UTF-8") from None
    numbered = [(i, ln) for i, ln in enumerate(text.splitlines(), start=1)
                if ln.strip() and not ln.lstrip().startswith("#")]
    if not numbered:
        raise DataFormatError(f"{path}: empty file (expected a header with columns {', '.join(COLUMNS)})")
    rows = list(csv.reader([ln for _, ln in numbered]))
    header_line, header = numbered[0][0], [h.strip() for h in rows[0]]
    dup = sorted({h for h in header if header.count(h) > 1})
    if dup:
        raise DataFormatError(f"{path}: line {header_line}: duplicate column(s) {', '.join(dup)}")
    missing = [c for c in COLUMNS if c not in header]
    if missing:
        raise DataFormatError(f"{path}: line {header_line}: missing column(s) {', '.join(missing)} "
                              f"(required: {', '.join(COLUMNS)})")
    if len(rows) == 1:
        raise DataFormatError(f"{path}: no data rows after the header")
    col = {c: header.index(c) for c in COLUMNS}
    traces: dict[str, dict] = {}
    for (line, _), fields_ in zip(numbered[1:], rows[1:]):
        where = f"{path}: line {line}"
        if len(fields_) != len(header):
            raise DataFormatError(f"{where}: expected {len(header)} fields, got {len(fields_)}")
        kind, tid = fields_[col["kind"]].strip(), fields_[col["trace_id"]].strip()
        if kind not in KINDS:
            raise DataFormatError(f"{where}, column 'kind': unknown kind {kind!r} (expected one of {', '.join(KINDS)})")
        if not tid:
            raise DataFormatError(f"{where}, column 'trace_id': empty")
        val = {c: _number(fields_[col[c]], f"{where}, column '{c}'", LIMITS[c]) for c in NUMERIC}
        if val["g_S"] < 0:
            raise DataFormatError(f"{where}, column 'g_S': negative conductance {val['g_S']!r} S")
        if val["pulse_width_s"] < 0:
            raise DataFormatError(f"{where}, column 'pulse_width_s': negative width {val['pulse_width_s']!r} s")
        if val["pulse_v_V"] != 0 and val["pulse_width_s"] == 0:
            raise DataFormatError(f"{where}, column 'pulse_width_s': a pulse (pulse_v_V != 0) needs a width > 0")
        tr = traces.setdefault(tid, dict(kind=kind, v_bias=val["v_bias_V"], rows=[], line=line))
        if tr["kind"] != kind:
            raise DataFormatError(f"{where}, column 'kind': trace {tid!r} started as {tr['kind']!r} on line {tr['line']}")
        if tr["v_bias"] != val["v_bias_V"]:
            raise DataFormatError(f"{where}, column 'v_bias_V': trace {tid!r} changes its bias "
                                  f"({tr['v_bias']!r} V on line {tr['line']}); use one trace per bias")
        if tr["rows"] and val["t_s"] <= tr["rows"][-1][0]:
            raise DataFormatError(f"{where}, column 't_s': {val['t_s']!r} s is not after the previous sample "
                                  f"of trace {tid!r} (time must increase within a trace)")
        tr["rows"].append((val["t_s"], val["pulse_v_V"], val["pulse_width_s"], val["g_S"], line))
    out = []
    for tid, tr in traces.items():
        a = np.array(tr["rows"], dtype=float)
        out.append(MeasuredTrace(tr["kind"], tid, tr["v_bias"], a[:, 0], a[:, 1], a[:, 2], a[:, 3], a[:, 4].astype(int)))
    return out


def _number(text: str, where: str, limit: float) -> float:
    try:
        x = float(text)
    except ValueError:
        raise DataFormatError(f"{where}: {text.strip()[:40]!r} is not a number") from None
    if not math.isfinite(x):
        raise DataFormatError(f"{where}: {text.strip()[:40]!r} is not finite")
    if abs(x) > limit:
        raise DataFormatError(f"{where}: {x:g} is beyond the plausible magnitude {limit:g} (SI units expected: "
                              "S, s, V)")
    return x


# -- the model at the sample times -----------------------------------------------------------------
def simulate_samples(p: DeviceParams, traces: list[MeasuredTrace], g_lt0) -> list[np.ndarray]:
    """Total conductance G = g_lt + g_st [S] of the model at each trace's sample times.

    All traces run side by side (one device each, no variability); between samples g_st, r and q
    relax exactly over the (non-uniform) interval, a row with a pulse applies step 2 of
    :mod:`memristor.reference` (via :func:`memristor.reference.apply_pulses`), then G is read.
    On a uniform grid this is :func:`memristor.reference.simulate`.
    """
    n, length = len(traces), max(len(tr.t) for tr in traces)
    dt, v, w = np.zeros((length, n)), np.zeros((length, n)), np.zeros((length, n))
    for i, tr in enumerate(traces):
        m = len(tr.t)
        dt[1:m, i] = np.diff(tr.t)
        v[:m, i], w[:m, i] = tr.pulse_v, tr.pulse_width
    s = ref.pulse_efficacy(p, v, w)
    lt = (np.abs(v) >= p.v_lt_threshold) & (s != 0)
    batch = ref.make_devices(p, [tr.v_bias for tr in traces], variability=False)
    state = ref.initial_state(batch, np.clip(g_lt0, p.g_min, p.g_max))
    ones = np.ones(n)
    out = np.empty((length, n))
    for k in range(length):
        if k:
            d = dt[k]
            state = eq.relax(state, eq.retention(eq.NUMPY, p, batch.tau, d))
        if np.any(s[k]):
            state = ref.apply_pulses(batch, state, s[k], lt[k], ones)
        out[k] = state["g_lt"] + state["g_st"]
    return [out[: len(tr.t), i] for i, tr in enumerate(traces)]


def relaxation_window(tr: MeasuredTrace) -> tuple[np.ndarray, np.ndarray]:
    """(t - t_start, g) from the last pulse row (inclusive; the first row if there is none)."""
    pulses = np.flatnonzero(tr.pulse_v != 0)
    start = int(pulses[-1]) if len(pulses) else 0
    return tr.t[start:] - tr.t[start], tr.g[start:]


# -- the fit ---------------------------------------------------------------------------------------
@dataclass
class FitResult:
    """Fitted parameters (``params``: init with the fitted values, tagged fitted-to-user-data),
    ``values``/``sigmas`` of the fitted parameters (SI), per-trace nuisances, residual RMS [S]."""

    params: DeviceParams
    fitted: list
    values: dict
    sigmas: dict
    nuisance: dict
    residual_rms: dict
    n_samples: int
    n_params: int
    noise_estimate_S: float
    message: str
    warnings: list = field(default_factory=list)
    curves: dict = field(default_factory=dict)   # trace id -> kind, t_s, g_S (data), model_S (fit), v_bias_V

    def to_dict(self, data_path="") -> dict:
        """The fit as JSON data: values and 1-sigma uncertainties (SI) of the fitted parameters,
        nuisances, residuals, warnings (the parameters themselves are saved by DeviceParams.save)."""
        units = {row["name"]: row["unit"] for row in DeviceParams.describe()}
        return {"data": str(data_path), "message": self.message, "n_samples": self.n_samples,
                "n_unknowns": self.n_params,
                "fitted": {nm: {"value": self.values[nm], "sigma": self.sigmas[nm], "unit": units[nm]}
                           for nm in self.fitted},
                "nuisance": {k: float(v) for k, v in self.nuisance.items()},
                "residual_rms_S": self.residual_rms, "noise_estimate_S": self.noise_estimate_S,
                "warnings": list(self.warnings)}

    def plot(self, path) -> None:
        """Every trace's data (points) and the fitted model (line), G [nS] against t [s], with the
        fitted values +- 1 sigma in the title (matplotlib Agg, atomic write)."""
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        from mstpn_base.io import atomic_path

        units = {row["name"]: row["unit"] for row in DeviceParams.describe()}
        n = max(len(self.curves), 1)
        fig, axes = plt.subplots(n, 1, figsize=(7, 2.4 * n), squeeze=False)
        for ax, (tid, c) in zip(axes[:, 0], self.curves.items()):
            ax.plot(c["t_s"], c["g_S"] * 1e9, ".", ms=3, label="measured")
            ax.plot(c["t_s"], c["model_S"] * 1e9, "-", lw=1.2, label="fitted model")
            ax.set_title(f"{tid} ({c['kind']}, V_bias = {c['v_bias_V']:g} V): residual RMS "
                         f"{self.residual_rms[tid] * 1e9:.3g} nS", fontsize=8)
            ax.set_xlabel("time since the window start [s]" if c["kind"] == "relaxation" else "time [s]")
            ax.set_ylabel("G [nS]")
            ax.legend(fontsize=7)
        terms = [f"{nm} = {self.values[nm]:.4g} +- {self.sigmas[nm]:.2g} {units[nm]}" for nm in self.fitted]
        fig.suptitle("fitted (1 sigma): " + "\n".join(", ".join(terms[i:i + 3]) for i in range(0, len(terms), 3)),
                     fontsize=8)
        fig.tight_layout(rect=(0, 0, 1, 1 - 0.5 / (2.4 * n)))   # room for the two-line title
        with atomic_path(path) as tmp:
            fig.savefig(tmp, dpi=90)
        plt.close(fig)


def identifiable(traces: list[MeasuredTrace], init: DeviceParams) -> list[str]:
    """Names of the parameters the given traces identify (see the module docstring)."""
    relax = [t for t in traces if t.kind == "relaxation"]
    pulse = [t for t in traces if t.kind == "pulse_train" and np.any(t.pulse_v != 0)]
    names = []
    if relax:
        names.append("tau0")
        if len({t.v_bias for t in relax}) >= 2:
            names.append("v_tau")
    if pulse:
        names += ["a_st", "g_st_max"]
        if any(np.any(np.abs(t.pulse_v) >= init.v_lt_threshold) for t in pulse):
            names += ["eta_lt", "g_max"]
    return names


def _check(traces: list[MeasuredTrace], init: DeviceParams, path) -> None:
    for tr in traces:
        where = f"{path}: line {tr.first_line}, trace {tr.trace_id!r}"
        if not init.v_bias_min - 1e-12 <= tr.v_bias <= init.v_bias_max + 1e-12:
            raise DataFormatError(f"{where}: v_bias_V={tr.v_bias} V is outside the device's bias range "
                                  f"[{init.v_bias_min}, {init.v_bias_max}] V (set it in --init)")
        if tr.kind == "relaxation" and len(relaxation_window(tr)[0]) < MIN_RELAX_SAMPLES:
            raise DataFormatError(f"{where}: a relaxation trace needs at least {MIN_RELAX_SAMPLES} samples "
                                  f"from its last pulse on")
        if tr.kind == "relaxation" and np.ptp(relaxation_window(tr)[1]) == 0:
            raise FitError(f"{where}: the conductance is constant, so the trace shows no relaxation and "
                           "identifies no time constant (tau0 is not identifiable); drop the trace or "
                           "measure right after a burst")


def fit_measurements(traces: list[MeasuredTrace], init: DeviceParams | None = None, path="<data>") -> FitResult:
    """Least-squares fit of the identifiable parameters (:func:`identifiable`) to ``traces``."""
    from scipy.optimize import least_squares

    init = DeviceParams() if init is None else init
    if not traces:
        raise DataFormatError(f"{path}: no traces")
    _check(traces, init, path)
    names = identifiable(traces, init)
    if not names:
        raise FitError(f"{path}: these data identify no parameter (need relaxation traces, or pulse trains with pulses)")
    relax = [t for t in traces if t.kind == "relaxation"]
    pulse = [t for t in traces if t.kind == "pulse_train"]
    base = init.replace(n_levels=0)
    x0_vals = np.array([getattr(init, n) for n in names])
    lo, hi = _bounds(names, init)
    nr, npu = len(relax), len(pulse)
    windows = [relaxation_window(t) for t in relax]
    # x = [log(value/init) per fitted name] + [A_i, c_i per relaxation trace] + [g0_i per pulse trace] (nS)
    x0 = np.concatenate([np.zeros(len(names)),
                         [w[1][0] / SCALE - w[1][-1] / SCALE for w in windows], [w[1][-1] / SCALE for w in windows],
                         [np.clip(t.g[0], init.g_min, init.g_max) / SCALE for t in pulse]])
    lb = np.concatenate([lo, np.full(2 * nr + npu, -np.inf)])
    ub = np.concatenate([hi, np.full(2 * nr + npu, np.inf)])
    x0 = np.clip(x0, lb + 1e-9, ub - 1e-9)
    nf = len(names)
    pulse_cols = [j for j, n in enumerate(names) if n in ("tau0", "v_tau", "a_st", "g_st_max", "eta_lt", "g_max")]
    pulse_cols += list(range(nf + 2 * nr, nf + 2 * nr + npu))

    def params_of(x):
        vals = dict(zip(names, x0_vals * np.exp(x[:nf])))
        return base.replace(**vals)

    def relax_res(x, p):
        out = []
        for i, (tr, (t, g)) in enumerate(zip(relax, windows)):
            a, c = x[nf + i], x[nf + nr + i]
            out.append(c + a * np.exp(-t / float(p.tau(tr.v_bias))) - g / SCALE)
        return np.concatenate(out) if out else np.zeros(0)

    def pulse_res(x, p):
        if not pulse:
            return np.zeros(0)
        g0 = x[nf + 2 * nr:] * SCALE
        model = simulate_samples(p, pulse, g0)
        return np.concatenate([(m - t.g) / SCALE for m, t in zip(model, pulse)])

    def residuals(x):
        p = params_of(x)
        return np.concatenate([relax_res(x, p), pulse_res(x, p)])

    def jac(x):
        p = params_of(x)
        n_rel = sum(len(w[0]) for w in windows)
        base_pulse = pulse_res(x, p)
        J = np.zeros((n_rel + len(base_pulse), len(x)))
        row = 0
        for i, (tr, (t, _)) in enumerate(zip(relax, windows)):  # analytic
            tau = float(p.tau(tr.v_bias))
            e = np.exp(-t / tau)
            a = x[nf + i]
            sl = slice(row, row + len(t))
            if "tau0" in names:
                J[sl, names.index("tau0")] = a * e * t / tau
            if "v_tau" in names:
                J[sl, names.index("v_tau")] = a * e * (t / tau) * (tr.v_bias / p.v_tau)
            J[sl, nf + i], J[sl, nf + nr + i] = e, 1.0
            row += len(t)
        for j in pulse_cols:  # forward differences
            h = 1e-7 * max(1.0, abs(x[j]))
            xj = x.copy()
            xj[j] = x[j] + h if x[j] + h <= ub[j] else x[j] - h
            try:
                J[n_rel:, j] = (pulse_res(xj, params_of(xj)) - base_pulse) / (xj[j] - x[j])
            except ParameterError:
                J[n_rel:, j] = 0.0
        return J

    try:
        sol = least_squares(residuals, x0, jac=jac, bounds=(lb, ub), x_scale="jac", method="trf",
                            xtol=1e-12, ftol=1e-12, gtol=1e-12, max_nfev=200)
    except ParameterError as exc:
        raise FitError(f"{path}: the fit left the model's valid range ({exc})") from None
    if sol.status <= 0 or not np.all(np.isfinite(sol.x)):
        raise FitError(f"{path}: the fit did not converge ({sol.message})")
    return _result(sol, names, x0_vals, init, relax, pulse, windows, residuals, jac, nf, nr)


def _bounds(names, init):
    ranges = {row["name"]: row["range"] for row in DeviceParams.describe()}
    lo, hi = [], []
    for n in names:
        a, b = ranges[n]
        if n == "g_max":
            a = max(a, init.g_min * 1.001)
        v = getattr(init, n)
        lo.append(math.log(max(a, v * 1e-6) / v))
        hi.append(math.log(min(b, v * 1e6) / v))
    return np.array(lo), np.array(hi)


def _result(sol, names, x0_vals, init, relax, pulse, windows, residuals, jac, nf, nr) -> FitResult:
    res = residuals(sol.x)
    n, P = len(res), len(sol.x)
    if n <= P:
        raise FitError(f"{n} samples cannot determine {P} unknowns")
    s2 = float(res @ res) / (n - P)
    J = jac(sol.x)
    flat = [nm for j, nm in enumerate(names) if not np.any(J[:, j])]
    if flat:
        raise FitError(f"{', '.join(flat)} not identifiable: the data do not depend on {'it' if len(flat) == 1 else 'them'} "
                       "(no relaxation or response visible); nothing written")
    if not (np.all(np.isfinite(J)) and np.isfinite(s2)):
        raise FitError("the fit's Jacobian is not finite (data far outside the model's range?); nothing written")
    cov = np.linalg.pinv(J.T @ J) * s2
    sig_log = np.sqrt(np.clip(np.diag(cov), 0, None))
    values = {nm: float(v) for nm, v in zip(names, x0_vals * np.exp(sol.x[:nf]))}
    sigmas = {nm: values[nm] * float(sig_log[j]) for j, nm in enumerate(names)}
    warnings = [f"{nm} is poorly identified by these data (sigma/value = {sigmas[nm] / values[nm]:.2g})"
                for nm in names if not sigmas[nm] < 0.5 * values[nm]]
    at_bound = [nm for j, nm in enumerate(names) if sol.active_mask[j] != 0]
    warnings += [f"{nm} ended on its physical range limit" for nm in at_bound]
    prov = dict(init.provenance, **{nm: TAG for nm in names})
    params = init.replace(**values, provenance=prov)
    nuisance = {f"A[{t.trace_id}]_S": sol.x[nf + i] * SCALE for i, t in enumerate(relax)}
    nuisance.update({f"offset[{t.trace_id}]_S": sol.x[nf + nr + i] * SCALE for i, t in enumerate(relax)})
    nuisance.update({f"g_lt0[{t.trace_id}]_S": sol.x[nf + 2 * nr + i] * SCALE for i, t in enumerate(pulse)})
    rms, curves, pos = {}, {}, 0
    for tr, (t, g) in [(t, w) for t, w in zip(relax, windows)] + [(t, (t.t, t.g)) for t in pulse]:
        r = res[pos:pos + len(t)]
        rms[tr.trace_id] = float(np.sqrt(np.mean(r ** 2))) * SCALE
        curves[tr.trace_id] = dict(kind=tr.kind, v_bias_V=tr.v_bias, t_s=t, g_S=g, model_S=g + r * SCALE)  # r = model - data
        pos += len(t)
    return FitResult(params, names, values, sigmas, nuisance, rms, n, P, math.sqrt(s2) * SCALE, sol.message, warnings,
                     curves)


def fit_file(path, init: DeviceParams | None = None) -> FitResult:
    """Read, validate and fit a measurement CSV."""
    return fit_measurements(read_measurements(path), init, path)
