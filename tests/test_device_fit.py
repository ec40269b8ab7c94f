"""memristor.fit: recovery of known parameters from the shipped synthetic data, strict CSV validation,
no output on failure."""
import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from memristor import fit
from memristor import reference as ref
from memristor.params import DeviceParams
from mstpn_base.errors import DataFormatError

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "memristor" / "data" / "synthetic_measurements.csv"
HEADER = ",".join(fit.COLUMNS)


def _load_generator():
    spec = importlib.util.spec_from_file_location("make_synth", ROOT / "scripts" / "make_synthetic_device_data.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


GEN = _load_generator()


@pytest.fixture(scope="module")
def shipped_fit():
    return fit.fit_file(DATA)


def test_shipped_data_is_reproducible():
    """The CSV in the tree is exactly what the script generates (fixed seed)."""
    assert DATA.read_text(encoding="utf-8") == GEN.to_csv(GEN.generate())


def test_fit_recovers_known_parameters(shipped_fit):
    """Tolerance per parameter: 3 sigma of the fit's own covariance (the noise: 20 pS Gaussian per
    sample) plus 1e-4 relative for model mismatch.  The fitted model is the generator's model
    (no variability, n_levels = 0), so the only mismatch is the CSV's rounding of g to 9 significant
    digits (5e-9 relative, far below the noise) and the optimiser's tolerance; the noise-free test
    below shows that mismatch is < 1e-6."""
    res = shipped_fit
    assert set(res.fitted) == {"tau0", "v_tau", "a_st", "g_st_max", "eta_lt", "g_max"}
    for name in res.fitted:
        true, got, sigma = GEN.TRUE_PARAMS[name], res.values[name], res.sigmas[name]
        assert 0 < sigma < 0.02 * true, f"{name}: sigma {sigma:.3g} is not a meaningful bound"
        assert abs(got - true) <= 3 * sigma + 1e-4 * true, f"{name}: {got} vs true {true} (sigma {sigma:.3g})"
        # the data moved it: the default (start) value is far outside the bound
        assert abs(getattr(DeviceParams(), name) - true) > 10 * sigma


def test_fit_residuals_match_the_noise(shipped_fit):
    """The residual RMS estimates the 20 pS noise: with N ~ 1600 samples its standard error is
    sigma / sqrt(2N) ~ 1.8 %, so 6 % is > 3 standard errors."""
    assert shipped_fit.noise_estimate_S == pytest.approx(GEN.NOISE_SIGMA_S, rel=0.06)
    for tid, rms in shipped_fit.residual_rms.items():
        assert rms == pytest.approx(GEN.NOISE_SIGMA_S, rel=0.25), tid  # ~200-300 samples per trace
    assert not shipped_fit.warnings


def test_fit_tags_and_keeps_held_parameters(shipped_fit):
    p = shipped_fit.params
    for name in DeviceParams.parameter_names():
        if name in shipped_fit.fitted:
            assert p.source(name) == "fitted-to-user-data"
            assert getattr(p, name) == shipped_fit.values[name]
        else:
            assert p.source(name) == DeviceParams().source(name)
            assert getattr(p, name) == getattr(DeviceParams(), name), f"held parameter {name} changed"


def test_noise_free_fit_is_exact(tmp_path):
    path = tmp_path / "clean.csv"
    path.write_text(GEN.to_csv(GEN.generate(noise_sigma=0.0)))
    res = fit.fit_file(path)
    for name in res.fitted:
        assert res.values[name] == pytest.approx(GEN.TRUE_PARAMS[name], rel=1e-6), name


def test_identifiable_depends_on_the_data():
    traces = fit.read_measurements(DATA)
    relax = [t for t in traces if t.kind == "relaxation"]
    st = [t for t in traces if t.trace_id == "st_train"]
    p = DeviceParams()
    assert fit.identifiable(relax[:1], p) == ["tau0"]
    assert fit.identifiable(relax, p) == ["tau0", "v_tau"]
    assert fit.identifiable(st, p) == ["a_st", "g_st_max"]  # no pulse above the long-term threshold


def test_simulate_samples_is_the_reference_model():
    """On a uniform grid the sample-time simulator equals reference.simulate (same float64 ops)."""
    p = DeviceParams().replace(n_levels=0)
    pulses = [(5 + 7 * i, 0, 1.3 if i < 8 else -1.3, 1e-4) for i in range(12)] + [(3 + 11 * i, 1, 0.9, 4e-4) for i in range(6)]
    batch = ref.make_devices(p, [0.1, 0.5], variability=False)
    drive = ref.make_drive(p, 120, 2, 0.01, pulses, noise=False)
    want = ref.simulate(batch, drive, [1e-9, 4e-9])
    traces = [fit.MeasuredTrace("pulse_train", str(i), batch.v_bias[i], drive.times, drive.v[:, i], drive.width[:, i],
                                want.g[:, i], np.arange(120)) for i in range(2)]
    got = fit.simulate_samples(p, traces, np.array([1e-9, 4e-9]))
    for i in range(2):
        assert np.max(np.abs(got[i] - want.g[:, i])) <= 1e-12 * np.max(want.g[:, i])


# -- malformed CSV ---------------------------------------------------------------------------------
GOOD_ROW = "relaxation,a,0.1,0.5,0,0,1e-9"


@pytest.mark.parametrize("text, match", [
    ("", "empty file"),
    ("# only a comment\n", "empty file"),
    (HEADER + "\n", "no data rows"),
    ("kind,trace_id,v_bias_V,t_s,pulse_v_V,g_S\nrelaxation,a,0,0,0,1e-9\n", r"line 1: missing column\(s\) pulse_width_s"),
    (HEADER + "\n" + GOOD_ROW + "\nrelaxation,a,0.1,0.6,0,0,abc\n", r"line 3, column 'g_S': 'abc' is not a number"),
    (HEADER + "\n" + GOOD_ROW + "\nrelaxation,a,0.1,nan,0,0,1e-9\n", r"line 3, column 't_s': 'nan' is not finite"),
    (HEADER + "\nrelaxation,a,0.1,0.5,0,0,inf\n", r"line 2, column 'g_S': 'inf' is not finite"),
    (HEADER + "\nrelaxation,a,0.1,0.5,0,0,-1e-9\n", r"line 2, column 'g_S': negative conductance"),
    (HEADER + "\nrelaxed,a,0.1,0.5,0,0,1e-9\n", r"line 2, column 'kind': unknown kind 'relaxed'"),
    (HEADER + "\nrelaxation,a,0.1,0.5,0,1e-9\n", r"line 2: expected 7 fields, got 6"),
    (HEADER + "\n" + GOOD_ROW + "\nrelaxation,a,0.1,0.5,0,0,1e-9\n", r"line 3, column 't_s'.*time must increase"),
    (HEADER + "\n" + GOOD_ROW + "\nrelaxation,a,0.2,0.6,0,0,1e-9\n", r"line 3, column 'v_bias_V'.*changes its bias"),
    (HEADER + "\n" + GOOD_ROW + "\npulse_train,a,0.1,0.6,0,0,1e-9\n", r"line 3, column 'kind'.*started as"),
    (HEADER + "\npulse_train,b,0.1,0.5,1.0,0,1e-9\n", r"line 2, column 'pulse_width_s'.*needs a width"),
    (HEADER + "\n,a,0.1,0.5,0,0,1e-9\n", r"line 2, column 'kind'"),
])
def test_malformed_csv_names_file_line_and_problem(tmp_path, text, match):
    path = tmp_path / "bad.csv"
    path.write_text(text)
    with pytest.raises(DataFormatError, match=match) as info:
        fit.read_measurements(path)
    assert str(path) in str(info.value)


def test_data_outside_the_model_is_rejected(tmp_path):
    path = tmp_path / "bias.csv"
    path.write_text(HEADER + "\n" + "\n".join(f"relaxation,a,0.9,{t},0,0,1e-9" for t in range(5)) + "\n")
    with pytest.raises(DataFormatError, match=r"line 2, trace 'a': v_bias_V=0.9 V is outside"):
        fit.fit_file(path)
    path.write_text(HEADER + "\nrelaxation,a,0.1,0,0,0,1e-9\nrelaxation,a,0.1,1,0,0,1e-9\n")
    with pytest.raises(DataFormatError, match="at least 4 samples"):
        fit.fit_file(path)


# -- CLI: output only on success ---------------------------------------------------------------------
def _cli(*args):
    return subprocess.run([sys.executable, "-m", "mstpn.cli", "device", "fit", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)


def test_cli_fit_writes_tagged_json(tmp_path):
    out = tmp_path / "fitted.json"
    proc = _cli(str(DATA), "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    p = DeviceParams.load(out)
    assert p.source("tau0") == "fitted-to-user-data" and p.tau0 == pytest.approx(6.0, rel=0.01)
    assert json.loads(out.read_text())["parameters"]["a_st"]["source"] == "fitted-to-user-data"
    assert "sigma" in proc.stdout and "residual RMS" in proc.stdout
    # the uncertainties and the fit against the data are kept beside the parameters
    report = json.loads((tmp_path / "fitted.fit.json").read_text())
    tau0 = report["fitted"]["tau0"]
    assert tau0["unit"] == "s" and tau0["value"] == pytest.approx(p.tau0) and 0 < tau0["sigma"] < 0.1 * tau0["value"]
    assert set(report["residual_rms_S"]) and max(report["residual_rms_S"].values()) < 0.05e-9
    from PIL import Image

    with Image.open(tmp_path / "fitted.fit.png") as im:
        assert im.size[0] > 300 and im.size[1] > 300


@pytest.mark.parametrize("content", [HEADER + "\nrelaxation,a,0.1,0.5,0,0,oops\n",
                                     HEADER + "\n" + "\n".join(f"pulse_train,a,0.1,{t},0,0,1e-9" for t in range(5))])
def test_cli_fit_failure_leaves_no_output(tmp_path, content):
    """Bad data (DataFormatError) and unidentifiable data (FitError: a pulse train without pulses)
    exit 2 with one line on stderr; no new file appears and an existing one is left intact."""
    data = tmp_path / "data.csv"
    data.write_text(content)
    fresh = tmp_path / "fresh.json"
    proc = _cli(str(data), "--out", str(fresh))
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert not fresh.exists()
    old = tmp_path / "old.json"
    old.write_text("previous contents")
    assert _cli(str(data), "--out", str(old)).returncode == 2
    assert old.read_text() == "previous contents"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data.csv", "old.json"]
