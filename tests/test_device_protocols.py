"""Characterisation protocols: cross-implementation agreement, qualitative shapes, writers, CLI.

Agreement: every backend of the registry runs the four protocols (with device-to-device and
cycle-to-cycle variability on, so that per-device parameters and the drive noise are exercised)
and is compared with the NumPy reference per state variable:

* float64 backends (torch, brian2, brian2-cython, lava): max|x - x_ref| / max|x_ref| <= 1e-6, the
  project's cross-backend tolerance.  They evaluate the same float64 operations (Brian2 composes
  the decay as exp(-(t - lastupdate)/tau) instead of a product of one-step factors): differences
  are a few ulp per step, far below 1e-6 over a few thousand steps.
* lava-fixed: |x - x_ref| <= memristor.fixed_point.error_bound(batch, drive, g_lt0) elementwise
  (the derived quantisation bound of the integer model).

A backend that is genuinely not installed is skipped, unless MSTPN_REQUIRE_ALL_BACKENDS=1 (CI, where
every backend is installed): then unavailability is a failure, so a skip cannot hide one.
"""
import csv
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from memristor import fixed_point as fp
from memristor import protocols as pr
from mstpn_base.registry import device_backends, device_simulator
from memristor.params import DeviceParams
from mstpn_base.errors import BackendUnavailableError, MstpnError

ROOT = Path(__file__).resolve().parents[1]
REQUIRE_ALL = os.environ.get("MSTPN_REQUIRE_ALL_BACKENDS") == "1"
FLOAT_TOL = 1e-6
SEED = 11
P = DeviceParams()


def run_or_skip(name, backend):
    """run_protocol on ``backend``; skip if it is not installed (fail under MSTPN_REQUIRE_ALL_BACKENDS=1)."""
    try:
        return pr.run_protocol(name, backend, P, seed=SEED, variability=True)
    except BackendUnavailableError as exc:
        if REQUIRE_ALL:
            pytest.fail(f"MSTPN_REQUIRE_ALL_BACKENDS=1 but backend {backend!r} is unavailable: {exc}")
        pytest.skip(str(exc))


@pytest.fixture(scope="module")
def reference():
    return {name: pr.run_protocol(name, "numpy", P, seed=SEED, variability=True) for name in pr.PROTOCOLS}


@pytest.fixture(scope="module")
def nominal():
    """Protocols without variability (shapes are compared with the nominal model)."""
    return {name: pr.run_protocol(name, "numpy", P) for name in pr.PROTOCOLS}


# -- cross-implementation agreement --------------------------------------------------------------------
FLOAT_BACKENDS = [b for b in device_backends() if b not in ("numpy", "lava-fixed")]


def test_registry_covers_the_required_backends():
    assert {"numpy", "torch", "brian2", "lava", "lava-fixed"} <= set(device_backends())


@pytest.mark.parametrize("backend", FLOAT_BACKENDS)
@pytest.mark.parametrize("name", list(pr.PROTOCOLS))
def test_float_backends_agree_with_reference(reference, name, backend):
    want = reference[name]
    got = run_or_skip(name, backend)
    assert got.trace.g_lt.shape == want.trace.g_lt.shape
    assert np.array_equal(got.trace.t, want.trace.t) or np.allclose(got.trace.t, want.trace.t, rtol=0, atol=1e-12)
    for var in ("g_lt", "g_st", "r", "q"):
        a, b = getattr(got.trace, var), getattr(want.trace, var)
        scale = np.max(np.abs(b))
        assert scale > 0, f"{name}: reference {var} is identically 0, the comparison would be vacuous"
        rel = np.max(np.abs(a - b)) / scale
        assert rel <= FLOAT_TOL, f"{backend} {name} {var}: relative difference {rel:.3g} > {FLOAT_TOL}"


@pytest.mark.parametrize("name", list(pr.PROTOCOLS))
def test_fixed_point_backend_within_quantisation_bound(reference, name):
    want = reference[name]
    got = run_or_skip(name, "lava-fixed")
    bound = fp.error_bound(want.batch, want.drive, want.g_lt0)
    for var in ("g_lt", "g_st", "r", "q"):
        err = np.abs(getattr(got.trace, var) - getattr(want.trace, var))
        worst = np.unravel_index(np.argmax(err - bound[var]), err.shape)
        assert np.all(err <= bound[var]), (f"{name} {var}: |fixed - float| = {err[worst]:.3g} exceeds the bound "
                                           f"{bound[var][worst]:.3g} at step {worst[0]}, device {worst[1]}")
    # the bound is not vacuous: well below the signal it bounds
    assert np.max(bound["g_st"]) < 0.05 * np.max(want.trace.g_st)


def test_missing_backend_skips_only_when_not_required(monkeypatch):
    """The skip guard itself: a missing backend is a skip normally, a failure under
    MSTPN_REQUIRE_ALL_BACKENDS=1."""
    def missing(name, **_):
        raise BackendUnavailableError(f"backend {name!r} is not available (test); install it")

    monkeypatch.setattr(pr, "device_simulator", missing)
    monkeypatch.setattr(sys.modules[__name__], "REQUIRE_ALL", False)
    with pytest.raises(pytest.skip.Exception, match="not available"):
        run_or_skip("ppf", "lava")
    monkeypatch.setattr(sys.modules[__name__], "REQUIRE_ALL", True)
    with pytest.raises(pytest.fail.Exception, match="MSTPN_REQUIRE_ALL_BACKENDS=1"):
        run_or_skip("ppf", "lava")


def test_unknown_backend_is_a_clear_error():
    with pytest.raises(MstpnError, match="unknown device backend 'nonsense'"):
        device_simulator("nonsense")
    with pytest.raises(MstpnError, match="unknown protocol"):
        pr.run_protocol("nonsense")


# -- qualitative shapes (reference, nominal devices) -------------------------------------------------
def test_pulse_train_staircase(nominal):
    res = nominal["pulse_train"]
    p, tr = res.batch.params, res.trace
    step = (p.g_max - p.g_min) / (p.n_levels - 1)
    first_steps = []
    for dev in range(res.batch.n):
        up = tr.g_lt[pr.pulse_steps(res.drive, dev, +1), dev]
        down = tr.g_lt[pr.pulse_steps(res.drive, dev, -1), dev]
        inc = np.diff(np.concatenate([[p.g_min], up]))
        assert len(up) == pr.PT_N_UP and len(down) == pr.PT_N_DOWN
        assert np.all(inc >= 0) and up[-1] - p.g_min > 0.5 * (p.g_max - p.g_min), "LTP must rise monotonically"
        assert inc[-5:].mean() < 0.25 * inc[:5].mean(), "LTP must saturate (soft bound)"
        assert up[-1] <= p.g_max
        dec = np.diff(np.concatenate([[up[-1]], down]))
        assert np.all(dec <= 0) and down[-1] < 0.3 * up[-1], "LTD must fall monotonically"
        levels = (tr.g_lt[:, dev] - p.g_min) / step
        assert np.allclose(levels, np.round(levels), atol=1e-9), "g_lt must sit on the quantised levels"
        assert tr.g_st[:, dev].max() > 0, "the pulses also drive the volatile part"
        first_steps.append(inc[0])
    assert first_steps[1] > first_steps[0], "a wider pulse must program a larger step"


def test_relaxation_tau_follows_bias(nominal, reference):
    rows = nominal["relaxation"].rows
    biases = [r["v_bias_V"] for r in rows]
    assert biases == sorted(biases) and biases[0] == P.v_bias_min and biases[-1] == P.v_bias_max
    taus = [r["tau_fit_s"] for r in rows]
    assert all(a > b for a, b in zip(taus, taus[1:])), "tau must increase as the bias decreases"
    for r in rows:
        assert r["tau_fit_s"] == pytest.approx(float(P.tau(r["v_bias_V"])), rel=0.02)
    # with device-to-device variation each device follows its own tau
    for r in reference["relaxation"].rows:
        assert abs(r["rel_error_vs_device"]) < 0.02


def test_ppf_facilitates_and_fades(nominal):
    res = nominal["ppf"]
    rows = res.rows
    idx = np.array([r["ppf_index"] for r in rows])
    dt = np.array([r["interval_s"] for r in rows])
    assert dt[0] == pytest.approx(0.02) and dt[-1] == pytest.approx(2.0)
    assert idx[0] > 1.0 and np.all(idx[dt <= P.tau_ppf] > 1.0), "paired pulses within tau_ppf must facilitate"
    fading = idx[dt <= 5 * P.tau_ppf]
    assert np.all(np.diff(fading) < 0), "facilitation must fade with the interval"
    # closed form of the model for a fresh device: index = f mu (g_st_max - g1 e^{-D/tau}) / g_st_max
    tau = res.batch.tau[0]
    for r in rows:
        d = r["interval_s"]
        g1 = r["increment1_S"]
        f = 1 + P.ppf_gain * math.exp(-d / P.tau_ppf)
        mu = 1 - P.meta_depletion * math.exp(-d / P.tau_meta)
        assert r["ppf_index"] == pytest.approx(f * mu * (P.g_st_max - g1 * math.exp(-d / tau)) / P.g_st_max, rel=1e-9)


def test_metaplasticity_history_and_bias(nominal):
    rows = nominal["metaplasticity"].rows
    biases = sorted({r["v_bias_V"] for r in rows})
    assert len(biases) == 3
    for vb in biases:
        sel = sorted((r for r in rows if r["v_bias_V"] == vb), key=lambda r: r["n_priming"])
        inc = [r["test_increment_S"] for r in sel]
        assert [r["n_priming"] for r in sel] == list(pr.META_PRIMES)
        assert all(a > b > 0 for a, b in zip(inc, inc[1:])), "more priming must give a smaller test increment"
    for n in pr.META_PRIMES:
        sel = sorted((r for r in rows if r["n_priming"] == n), key=lambda r: r["v_bias_V"])
        ret = [r["retention"] for r in sel]
        assert all(a > b for a, b in zip(ret, ret[1:])), "lower bias must retain longer"
        for r in sel:
            assert r["retention"] == pytest.approx(math.exp(-r["retention_window_s"] / float(P.tau(r["v_bias_V"]))),
                                                   rel=1e-9)


def test_builders_are_deterministic_and_variability_changes_devices():
    for proto in pr.PROTOCOLS.values():
        b1, d1, _ = proto.build(P, 5, True)
        b2, d2, _ = proto.build(P, 5, True)
        b0, d0, _ = proto.build(P, 5, False)
        assert np.array_equal(b1.tau, b2.tau) and np.array_equal(d1.noise, d2.noise)
        assert not np.array_equal(b1.tau, b0.tau) and np.all(d0.noise == 1)
        assert d1.dt == pr.DT and 100 <= d1.n_steps <= 5000


def test_protocols_reject_parameters_without_subthreshold_pulses():
    with pytest.raises(MstpnError, match="v_lt_threshold"):
        pr.build_relaxation(P.replace(v_lt_threshold=0.0))


# -- writers -----------------------------------------------------------------------------------------
def test_trace_and_summary_csv(nominal, tmp_path):
    results = [nominal["ppf"], nominal["relaxation"]]
    pr.write_traces_csv(results, tmp_path / "t.csv")
    pr.write_summary_csv(results, tmp_path / "s.csv")
    with open(tmp_path / "t.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert tuple(rows[0]) == pr.TRACE_COLUMNS
    assert len(rows) == sum(r.drive.n_steps * r.batch.n for r in results)
    res = nominal["ppf"]
    sel = [r for r in rows if r["protocol"] == "ppf" and r["device"] == "3"]
    assert sel[0]["label"] == res.rows[3]["label"]
    assert np.array_equal([float(r["g_st_S"]) for r in sel], res.trace.g_st[:, 3])  # lossless (repr)
    with open(tmp_path / "s.csv", newline="") as fh:
        summ = list(csv.DictReader(fh))
    assert len(summ) == len(res.rows) + len(nominal["relaxation"].rows)
    assert float(summ[0]["ppf_index"]) == pytest.approx(res.rows[0]["ppf_index"], rel=1e-12)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")], "no temporary files left behind"


def test_plot_writes_png(nominal, tmp_path):
    pr.plot_protocol(nominal["metaplasticity"], tmp_path / "m.png")
    assert (tmp_path / "m.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


# -- CLI -----------------------------------------------------------------------------------------------
def _cli(*args):
    return subprocess.run([sys.executable, "-m", "mstpn.cli", "device", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)


def test_cli_characterize_writes_csv_and_png(tmp_path):
    out = tmp_path / "chr"
    proc = _cli("characterize", "--backend", "numpy", "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    for name in pr.PROTOCOLS:
        assert (out / f"{name}_numpy.png").read_bytes()[:4] == b"\x89PNG"
        with open(out / f"{name}_numpy_traces.csv", newline="") as fh:
            assert tuple(next(csv.reader(fh))) == pr.TRACE_COLUMNS
        assert (out / f"{name}_numpy_summary.csv").stat().st_size > 0
        assert f"== {name} on numpy" in proc.stdout
    assert "tau_fit_s" in proc.stdout and "ppf_index" in proc.stdout


def test_cli_unknown_backend_one_line_error(tmp_path):
    proc = _cli("characterize", "--backend", "nonsense", "--out", str(tmp_path / "x"))
    assert proc.returncode != 0
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "unknown device backend 'nonsense'" in lines[0], proc.stderr
    assert not (tmp_path / "x").exists()


def test_cli_bad_params_file_names_it(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text('{"schema": "something else"}')
    proc = _cli("characterize", "--params", str(bad), "--out", str(tmp_path / "x"))
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1 and str(bad) in lines[0] and "not a device parameter file" in lines[0]
    assert not (tmp_path / "x").exists()


def test_cli_params_table_and_json(tmp_path):
    proc = _cli("params", "--out", str(tmp_path / "p.json"))
    assert proc.returncode == 0, proc.stderr
    head, *rows = proc.stdout.splitlines()[:-1]
    assert head.split() == ["name", "value", "unit", "range", "source"]
    assert len(rows) == len(DeviceParams.parameter_names())
    assert any(r.split()[0] == "tau0" and r.split()[-1] == "assumption" for r in rows)
    assert any(r.split()[0] == "p_leak_ref" and r.split()[-1] == "published" for r in rows)
    assert DeviceParams.load(tmp_path / "p.json") == DeviceParams()
