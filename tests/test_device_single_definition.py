"""The device equations are defined once (memristor.equations): change one there, or one
parameter, and every implementation follows -- NumPy, PyTorch, Brian2 (its code is generated from
the same functions) and the Lava floating_pt model (it evaluates them on its Vars).

Tolerance: 1e-6 relative, the project's cross-backend tolerance for float64 device runs.
"""
import os

import numpy as np
import pytest

from memristor import equations as eq
from memristor import reference as ref
from mstpn_base.errors import BackendUnavailableError
from mstpn_base.registry import device_simulator

from device_scenarios import scenario  # noqa: E402
REQUIRE_ALL = os.environ.get("MSTPN_REQUIRE_ALL_BACKENDS") == "1"

FLOAT_BACKENDS = ("numpy", "torch", "brian2", "lava")
RTOL = 1e-6


def _run_all(batch, drive, g0):
    out = {}
    for name in FLOAT_BACKENDS:
        try:
            out[name] = device_simulator(name)(batch, drive, g_lt0=g0)
        except BackendUnavailableError:
            if REQUIRE_ALL:
                raise
    return out


def _assert_all_equal(traces):
    want = traces["numpy"]
    for name, got in traces.items():
        for v in eq.STATE_VARS:
            np.testing.assert_allclose(getattr(got, v), getattr(want, v), rtol=RTOL, atol=0, err_msg=f"{name} {v}")


def _changed(a, b) -> float:
    return float(np.max(np.abs(a.g_st - b.g_st)) / np.max(np.abs(a.g_st)))


def test_changing_one_equation_changes_every_backend(monkeypatch):
    """Facilitation f = 1 + ppf_gain r becomes f = 1 + ppf_gain r^2 in its one definition."""
    batch, drive, g0 = scenario(n_steps=150)
    before = ref.simulate(batch, drive, g0)
    monkeypatch.setattr(eq, "facilitation", lambda p, r: 1.0 + p.ppf_gain * r * r)
    after = _run_all(batch, drive, g0)
    assert set(after) == set(FLOAT_BACKENDS) or not REQUIRE_ALL, set(after)
    _assert_all_equal(after)
    assert _changed(after["numpy"], before) > 1e-3      # the change is real, and every backend has it


def test_changing_the_quantiser_changes_every_backend(monkeypatch):
    """Long-term levels rounded down instead of half up, in quantise_lt only."""
    batch, drive, g0 = scenario(n_steps=150)
    before = ref.simulate(batch, drive, g0)

    def floor_levels(ops, p, g_lt):
        step = (p.g_max - p.g_min) / (p.n_levels - 1)
        return ops.straight_through(g_lt, p.g_min + ops.floor((g_lt - p.g_min) / step) * step)

    monkeypatch.setattr(eq, "quantise_lt", floor_levels)
    after = _run_all(batch, drive, g0)
    _assert_all_equal(after)
    assert np.max(np.abs(after["numpy"].g_lt - before.g_lt)) > 0


def test_changing_one_parameter_changes_every_backend():
    batch, drive, g0 = scenario(n_steps=150)
    base = _run_all(batch, drive, g0)
    batch2, drive2, _ = scenario(n_steps=150, meta_depletion=0.6)
    changed = _run_all(batch2, drive2, g0)
    _assert_all_equal(changed)
    assert _changed(changed["numpy"], base["numpy"]) > 1e-3


def test_brian2_code_is_generated_from_the_equations(monkeypatch):
    """The on_pre code names what the equations compute; a changed equation changes the code."""
    pytest.importorskip("brian2")
    from brian_models.memristor_synapse import synapse_equations
    from memristor.params import DeviceParams

    code = synapse_equations(DeviceParams()).on_pre
    assert "(1.0 + (mem_ppf_gain * r))" in code and "(1.0 - q)" in code
    monkeypatch.setattr(eq, "availability", lambda p, q: 1.0 - q * q)
    assert "(1.0 - (q * q))" in synapse_equations(DeviceParams()).on_pre
