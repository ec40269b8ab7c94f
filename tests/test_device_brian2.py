"""Brian2 memristive synapse (brian_models.memristor_synapse) against the NumPy reference."""
import math
import sys

import numpy as np
import pytest

from mstpn_base.registry import device_simulator
from memristor.params import DeviceParams
from memristor.reference import Drive, make_devices, make_drive, simulate as simulate_ref
from mstpn_base.errors import BackendUnavailableError, MstpnError

brian2 = pytest.importorskip("brian2")
from brian_models import memristor_synapse as ms  # noqa: E402

pytestmark = pytest.mark.brian2

# Brian2 relaxes in closed form, x * exp(-(t - lastupdate)/tau) with t = k dt, while the reference
# multiplies per-step factors exp(-dt/tau); in float64 each step adds ~1e-16..1e-15 relative
# rounding, so over a few hundred steps the two agree to ~1e-13.  The pulse updates are the same
# expressions (Brian2 may reorder products; cython compiles with -ffast-math), again ~1e-15 each.
# 1e-6 relative is therefore far above rounding, yet any modelling difference (a missed or doubled
# decay step, wrong order of update and record, a wrong factor) shows up at >= 1e-3.
RTOL = 1e-6
N_STEPS, DT = 400, 0.02          # 8 s: covers tau (1..10 s), tau_ppf (0.1 s), tau_meta (5 s)
BIASES = [0.0, 0.15, 0.3, 0.45, 0.6, 0.6]
T_REF = DeviceParams().t_ref    # pulse widths below are multiples of the reference width


def _pulses():
    """Hand-placed pulses (bursts for facilitation, LT pulses of both signs, long silences) plus
    a seeded random sprinkle; (step, device, V, width)."""
    hand = [(s, 0, 1.0, T_REF) for s in (5, 6, 7, 8, 200, 201, 202, 203)] + [(300, 0, -1.0, T_REF)]
    hand += [(s, 1, 1.5, T_REF) for s in (10, 11, 12)] + [(150, 1, -1.4, T_REF), (151, 1, -1.4, 2 * T_REF),
                                                       (250, 1, 1.0, T_REF)]
    hand += [(s, 2, 1.3, T_REF) for s in (20, 22, 24)] + [(s, 2, 1.0, 0.5 * T_REF) for s in (100, 101, 180, 185)]
    hand += [(350, 2, -1.0, T_REF), (351, 2, -1.0, T_REF)]
    hand += [(s, 4, 0.8, T_REF) for s in range(30, 41)]
    hand += [(0, 5, -1.4, T_REF), (60, 5, 1.2, T_REF), (61, 5, 1.25, T_REF), (320, 5, 1.0, T_REF)]
    taken = {(s, d) for s, d, _, _ in hand}
    rng = np.random.default_rng(11)
    extra = []
    while len(extra) < 40:
        s, d = int(rng.integers(0, N_STEPS)), int(rng.integers(0, len(BIASES)))
        if (s, d) not in taken:
            taken.add((s, d))
            extra.append((s, d, float(rng.choice([-1.4, -1.0, 0.7, 1.0, 1.3, 1.6])), T_REF))
    return hand + extra


@pytest.fixture(scope="module")
def case():
    p = DeviceParams().replace(d2d_sigma=0.2, c2c_sigma=0.1)
    batch = make_devices(p, BIASES, seed=4)
    drive = make_drive(p, N_STEPS, len(BIASES), DT, _pulses(), seed=5)
    g_lt0 = np.linspace(p.g_min, p.g_max, len(BIASES))
    ref = simulate_ref(batch, drive, g_lt0=g_lt0)
    return p, batch, drive, g_lt0, ref


@pytest.fixture(scope="module")
def brian_numpy(case):
    _, batch, drive, g_lt0, _ = case
    return ms.simulate(batch, drive, g_lt0=g_lt0, target="numpy")


def _assert_agree(trace, ref):
    assert trace.g_lt.shape == ref.g_lt.shape
    np.testing.assert_array_equal(trace.t, ref.t)
    for v in ("g_lt", "g_st", "r", "q"):
        np.testing.assert_allclose(getattr(trace, v), getattr(ref, v), rtol=RTOL, atol=0, err_msg=v)


def test_drive_exercises_the_model(case):
    """The comparison drive is nontrivial: clipped k, LT pulses of both signs, facilitation,
    several quantisation levels, long relaxations."""
    p, batch, drive, _, ref = case
    pulsed = drive.s != 0
    assert np.any(drive.lt & (drive.s > 0)) and np.any(drive.lt & (drive.s < 0))
    assert np.any(pulsed & ~drive.lt)
    assert np.any((batch.a_st * np.abs(drive.s) * drive.noise)[pulsed] > 1.0)   # clip of k active
    r_before = np.vstack([np.zeros((1, batch.n)), ref.r[:-1] * math.exp(-DT / p.tau_ppf)])
    assert np.max(r_before[pulsed]) > 1.0                                       # strong facilitation
    assert np.ptp(drive.noise[pulsed]) > 0.1                                    # c2c noise present
    assert np.ptp(batch.tau / p.tau(BIASES)) > 0.1                              # d2d variability
    # a silence of >= 2 s (100 steps) over which g_st relaxes to below half
    decays = [ref.g_st[b - 1, d] / ref.g_st[a, d]
              for d in range(batch.n) for a, b in _silences(pulsed[:, d]) if b - a >= 100 and ref.g_st[a, d] > 0]
    assert decays and min(decays) < 0.5


def _silences(pulsed):
    """(first, end) step ranges from a pulse up to (excluding) the next pulse or the end."""
    steps = list(np.flatnonzero(pulsed)) + [len(pulsed)]
    return list(zip(steps[:-1], steps[1:]))


def test_numpy_target_matches_reference(case, brian_numpy):
    _assert_agree(brian_numpy, case[4])
    assert brian_numpy.backend == "brian2"


def test_lt_quantisation_levels_hit_exactly(case, brian_numpy):
    p, _, _, _, ref = case
    step = (p.g_max - p.g_min) / (p.n_levels - 1)
    idx_ref = (ref.g_lt - p.g_min) / step
    idx_b2 = (brian_numpy.g_lt - p.g_min) / step
    # programmed values sit on a level up to rounding of g_min + n*step (~1e-16 S / 1.6e-10 S)
    programmed = np.vstack([np.zeros((1, ref.g_lt.shape[1]), bool), np.diff(ref.g_lt, axis=0) != 0])
    assert programmed.sum() >= 10
    np.testing.assert_allclose(idx_b2[programmed], np.round(idx_b2[programmed]), rtol=0, atol=1e-9)
    np.testing.assert_array_equal(np.round(idx_b2), np.round(idx_ref))
    assert len(np.unique(np.round(idx_ref[programmed]))) >= 5


def test_relaxation_is_exact_closed_form():
    """Independent of the reference: after one pulse, g_st(t_k) = g_st(t_p) exp(-(k-p) dt / tau)
    and r, q decay with tau_ppf, tau_meta (closed form, rtol 1e-12: only rounding)."""
    p = DeviceParams()
    batch = make_devices(p, [0.3], variability=False)
    drive = make_drive(p, 60, 1, 0.05, [(7, 0, p.v_ref, p.t_ref)], noise=False)   # s = 1
    tr = ms.simulate(batch, drive)
    k = np.arange(7, 60)
    assert np.all(tr.g_st[:7] == 0) and np.all(tr.r[:7] == 0)
    g0 = p.a_st * 1.0 * p.g_st_max                      # first pulse: k = a_st |s|, g_st = k g_st_max
    np.testing.assert_allclose(tr.g_st[k, 0], g0 * np.exp(-(k - 7) * 0.05 / batch.tau[0]), rtol=1e-12)
    np.testing.assert_allclose(tr.r[k, 0], np.exp(-(k - 7) * 0.05 / p.tau_ppf), rtol=1e-12)
    np.testing.assert_allclose(tr.q[k, 0], p.meta_depletion * np.exp(-(k - 7) * 0.05 / p.tau_meta),
                               rtol=1e-12)
    assert np.all(tr.g_lt == p.g_min)


def test_payload_from_presynaptic_variable():
    """The equations as data, built into another network: the pulse efficacy comes from a
    presynaptic variable of a NeuronGroup spiking every step (s = 0 on some steps: no change)."""
    b2 = brian2
    p = DeviceParams()
    batch = make_devices(p, [0.0, 0.6], seed=2)
    s = np.array([[0.5, -0.3], [0.0, 0.0], [1.2, 0.7], [0.0, -0.9], [0.8, 0.0], [0.0, 0.0]] * 5)
    drive = Drive(0.01, v=np.zeros_like(s), width=np.zeros_like(s), s=s,
                  lt=np.zeros(s.shape, bool), noise=np.ones_like(s))
    ref = simulate_ref(batch, drive)
    eqs = ms.synapse_equations(p, s="s_pre", lt="0", noise="1")
    clock = b2.Clock(dt=drive.dt * b2.second)
    s_arr = dict(s_arr=b2.TimedArray(s, dt=clock.dt))   # the synapses resolve s_pre's names too
    pre = b2.NeuronGroup(2, "s = s_arr(t, i) : 1", threshold="True", clock=clock, namespace=s_arr)
    post = b2.NeuronGroup(2, "", clock=clock)
    syn = b2.Synapses(pre, post, eqs.model, on_pre=eqs.on_pre, namespace={**eqs.namespace, **s_arr},
                      clock=clock)
    syn.connect(j="i")
    syn.tau, syn.a_st, syn.eta_lt = batch.tau * b2.second, batch.a_st, batch.eta_lt
    syn.g_lt = p.g_min * b2.siemens
    mon = b2.StateMonitor(syn, ["g_st_now", "r_now", "q_now"], record=True, when="end", clock=clock)
    before = b2.prefs.codegen.target
    b2.prefs.codegen.target = "numpy"                 # no compilation in this test
    try:
        b2.Network(pre, post, syn, mon).run(len(s) * clock.dt, namespace={})
    finally:
        b2.prefs.codegen.target = before
    np.testing.assert_allclose(mon.g_st_now_.T, ref.g_st, rtol=RTOL, atol=0)
    np.testing.assert_allclose(mon.r_now_.T, ref.r, rtol=RTOL, atol=0)
    np.testing.assert_allclose(mon.q_now_.T, ref.q, rtol=RTOL, atol=0)
    assert set(eqs.per_synapse) == {"tau", "a_st", "eta_lt", "g_lt"}


def test_continuous_lt_has_no_quantisation():
    eqs = ms.synapse_equations(DeviceParams(n_levels=0))
    assert "floor" not in eqs.on_pre and "mem_lt_step" not in eqs.namespace
    assert "floor" in ms.synapse_equations(DeviceParams()).on_pre


def test_bad_target_is_a_clear_error(case):
    _, batch, drive, _, _ = case
    with pytest.raises(MstpnError, match="unknown Brian2 code-generation target 'cuda'"):
        ms.simulate(batch, drive, target="cuda")


def test_missing_brian2_raises_backend_unavailable(case, monkeypatch):
    _, batch, drive, _, _ = case
    monkeypatch.setitem(sys.modules, "brian2", None)
    with pytest.raises(BackendUnavailableError, match="brian2"):
        ms.simulate(batch, drive)


def test_cython_target_matches_reference(case):
    """One run on the compiled target (first use compiles, ~30 s), via the backend registry."""
    _, batch, drive, g_lt0, ref = case
    before = brian2.prefs.codegen.target
    trace = device_simulator("brian2-cython")(batch, drive, g_lt0=g_lt0)
    assert brian2.prefs.codegen.target == before           # the global preference is restored
    _assert_agree(trace, ref)
    assert trace.backend == "brian2-cython"
