"""memristor.params: validation, provenance, JSON round trip and schema checks, atomic save, tau(V)."""
import json
import math
import os

import numpy as np
import pytest

from memristor.params import PROVENANCE_TAGS, SCHEMA, SCHEMA_VERSION, DeviceParams
from mstpn_base.errors import DataFormatError, ParameterError

NAMES = DeviceParams.parameter_names()
RANGES = {r["name"]: r["range"] for r in DeviceParams.describe()}


def test_defaults_are_valid_and_documented():
    p = DeviceParams()
    rows = DeviceParams.describe()
    assert [r["name"] for r in rows] == NAMES and len(NAMES) >= 20
    for r in rows:
        lo, hi = r["range"]
        assert lo <= getattr(p, r["name"]) <= hi, r["name"]
        assert r["unit"] and r["doc"] and r["source"] in PROVENANCE_TAGS
    assert p.source("v_bias_max") == "published" and p.source("p_leak_ref") == "published"
    # tau0 comes from a related device's photoresponse (arXiv:2509.22767), not this device
    assert p.source("tau0") == "assumption" and p.source("v_tau") == "assumption"
    for r in rows:   # a published value names its publication
        if r["source"] == "published":
            assert "Weilenmann et al., Nat. Commun. 15, 6898 (2024)" in r["doc"], r["name"]
    assert p.v_bias_max == 0.6 and p.p_leak_ref == 4.3e-9  # the published figures


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_non_finite_parameter_is_named(name, bad):
    with pytest.raises(ParameterError, match=rf"\b{name}\b"):
        DeviceParams().replace(**{name: bad})


@pytest.mark.parametrize("name", NAMES)
def test_out_of_range_parameter_is_named(name):
    lo, hi = RANGES[name]
    with pytest.raises(ParameterError, match=rf"{name}=.*outside its physical range"):
        DeviceParams().replace(**{name: 2 * hi + 1})
    with pytest.raises(ParameterError, match=rf"{name}=.*outside its physical range"):
        DeviceParams().replace(**{name: lo - 1})


@pytest.mark.parametrize("bad", ["1.0", None, True, [1.0]])
def test_wrong_type_is_named(bad):
    with pytest.raises(ParameterError, match=r"device parameter tau0 must be a number"):
        DeviceParams(tau0=bad)


def test_consistency_rules():
    with pytest.raises(ParameterError, match="n_levels must be an integer"):
        DeviceParams(n_levels=2.5)
    with pytest.raises(ParameterError, match="n_levels must be 0"):
        DeviceParams(n_levels=1)
    with pytest.raises(ParameterError, match="g_min .* must be below g_max"):
        DeviceParams(g_min=5e-9, g_max=5e-9)
    with pytest.raises(ParameterError, match="v_bias_min .* must not exceed v_bias_max"):
        DeviceParams(v_bias_min=0.5, v_bias_max=0.4)
    with pytest.raises(ParameterError, match="unknown provenance tag 'measured' for tau0"):
        DeviceParams(provenance={"tau0": "measured"})
    with pytest.raises(ParameterError, match="provenance names unknown parameter 'tau9'"):
        DeviceParams(provenance={"tau9": "assumption"})


def test_json_round_trip_is_lossless(tmp_path):
    p = DeviceParams().replace(tau0=3.3, a_st=0.123456789012345, n_levels=0, v_tau=1 / 3,
                               provenance={"tau0": "fitted-to-user-data", "a_st": "fitted-to-user-data",
                                           "v_bias_max": "assumption"})
    path = tmp_path / "p.json"
    p.save(path)
    q = DeviceParams.load(path)
    assert q == p and q.provenance == p.provenance
    for name in NAMES:
        assert getattr(q, name) == getattr(p, name) and type(getattr(q, name)) is type(getattr(p, name))
        assert q.source(name) == p.source(name)
    assert q.source("v_bias_max") == "assumption" and q.source("g_max") == "assumption"
    text = path.read_text()
    q.save(path)
    assert path.read_text() == text  # re-saving is byte-identical


def _doc():
    return DeviceParams().to_dict()


@pytest.mark.parametrize("mutate, match", [
    (lambda d: d.update(schema="other"), "not a device parameter file"),
    (lambda d: d.update(version=SCHEMA_VERSION + 1), "version .* is not supported"),
    (lambda d: d["parameters"]["tau0"].update(unit="ms"), "parameter 'tau0' has unit 'ms', expected 's'"),
    (lambda d: d["parameters"].update(tau_x={"value": 1.0}), r"unknown device parameters: \['tau_x'\]"),
    (lambda d: d["parameters"].update(tau0=10.0), "parameter 'tau0' must be an object with a 'value'"),
    (lambda d: d["parameters"]["a_st"].update(source="guess"), "unknown source tag 'guess'"),
    (lambda d: d.pop("parameters"), "no 'parameters' object"),
])
def test_wrong_schema_is_a_data_format_error(tmp_path, mutate, match):
    d = _doc()
    mutate(d)
    path = tmp_path / "p.json"
    path.write_text(json.dumps(d))
    with pytest.raises(DataFormatError, match=match):
        DeviceParams.load(path)


def test_invalid_json_and_invalid_values(tmp_path):
    path = tmp_path / "p.json"
    path.write_text('{"schema": ')
    with pytest.raises(DataFormatError, match="not valid JSON"):
        DeviceParams.load(path)
    d = _doc()
    d["parameters"]["tau0"]["value"] = -1.0
    path.write_text(json.dumps(d))
    with pytest.raises(ParameterError, match="tau0"):
        DeviceParams.load(path)
    assert d["schema"] == SCHEMA


def test_save_is_atomic(tmp_path, monkeypatch):
    path = tmp_path / "p.json"
    DeviceParams().save(path)
    before = path.read_bytes()
    new = DeviceParams().replace(tau0=2.0)

    def fail_serialise(*a, **k):
        raise RuntimeError("serialisation failed")

    monkeypatch.setattr(json, "dumps", fail_serialise)
    with pytest.raises(RuntimeError):
        new.save(path)
    monkeypatch.undo()
    assert path.read_bytes() == before

    def fail_fsync(fd):  # the new content has been written to the temporary file: fail mid-way
        raise OSError("disk full")

    monkeypatch.setattr(os, "fsync", fail_fsync)
    with pytest.raises(OSError, match="disk full"):
        new.save(path)
    monkeypatch.undo()
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["p.json"], "the temporary file must be removed"
    new.save(path)
    assert DeviceParams.load(path).tau0 == 2.0


def test_tau_of_bias():
    p = DeviceParams()
    v = np.linspace(p.v_bias_min, p.v_bias_max, 7)
    tau = p.tau(v)
    assert tau[0] == pytest.approx(p.tau0, rel=1e-15)
    assert tau[-1] == pytest.approx(1.0, rel=1e-12)  # default spans 10 s .. 1 s over 0 .. 0.6 V
    assert np.all(np.diff(tau) < 0)
    assert np.allclose(np.log(tau), np.log(p.tau0) - v / p.v_tau, rtol=0, atol=1e-14)
    for bad in (-0.1, 0.7, math.nan):
        with pytest.raises(ParameterError, match="v_bias must lie in"):
            p.tau(bad)


def test_lambda_range_and_bias_for_lambda_are_consistent():
    p = DeviceParams()
    dt = 0.01
    lo, hi = p.lambda_range(dt)
    assert lo == pytest.approx(math.exp(-dt / float(p.tau(p.v_bias_max))), rel=1e-15)
    assert hi == pytest.approx(math.exp(-dt / p.tau0), rel=1e-15)
    v = np.linspace(p.v_bias_min, p.v_bias_max, 11)
    lam = np.exp(-dt / p.tau(v))
    assert np.all((lam >= lo - 1e-15) & (lam <= hi + 1e-15))
    assert np.allclose(p.bias_for_lambda(lam, dt), v, rtol=0, atol=1e-9)
    assert float(p.bias_for_lambda(lo, dt)) == pytest.approx(p.v_bias_max, abs=1e-9)
    assert float(p.bias_for_lambda(hi, dt)) == pytest.approx(p.v_bias_min, abs=1e-9)
    with pytest.raises(ParameterError, match="lambda must lie in"):
        p.bias_for_lambda(0.5, dt)
    for bad in (0.0, -1.0, math.nan):
        with pytest.raises(ParameterError, match="dt must be a positive"):
            p.lambda_range(bad)


def test_leak_conductance_gives_the_published_idle_power():
    p = DeviceParams()
    assert p.g_leak * p.v_bias_max**2 == pytest.approx(4.3e-9, rel=1e-12)


def test_docs_parameter_table_matches_the_code():
    """docs/device_model.md lists every parameter with the code's default, unit, range and source."""
    from pathlib import Path

    text = (Path(__file__).resolve().parents[1] / "docs" / "device_model.md").read_text(encoding="utf-8")
    rows = {}
    for line in text.splitlines():
        if line.startswith("| `"):
            cells = [c.strip() for c in line.strip("|").split(" | ")]
            rows[cells[0].strip("`")] = cells
    import contextlib
    import io

    from mstpn.cli import main

    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert main(["device", "params", "--markdown"]) == 0
    assert out.getvalue().strip() in text      # the table is exactly the generated one
    for r in DeviceParams.describe():
        cells = rows.get(r["name"])
        assert cells is not None, f"{r['name']} missing from docs/device_model.md"
        lo, hi = r["range"]
        assert cells[1:5] == [f"{r['default']:.6g}", r["unit"], f"[{lo:g}, {hi:g}]", r["source"]], r["name"]
