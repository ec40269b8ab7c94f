"""memristor.fixed_point: integer golden cases, overflow reporting, and the derived error bound."""
import numpy as np
import pytest

from memristor import fixed_point as fp
from memristor import reference as ref
from memristor.params import DeviceParams
from mstpn_base.errors import ParameterError

SPEC = fp.DEFAULT_SPEC
SMAX = 2**23 - 1
# a_st 0.1, eta_lt 0.05 (Q16, rounded), ppf_gain 1, meta_depletion 0.2; g in LSB: g_max = 2**22
CONSTS = {k: np.array([v], np.int64) for k, v in dict(
    a=6554, eta=3277, ppf=65536, md=13107, g_min=0, g_max=2**22, g_st_max=2**21).items()}


def state(g_lt=1_000_000, g_st=1_000_000, r=0, q=0):
    return {k: np.array([v], np.int64) for k, v in dict(g_lt=g_lt, g_st=g_st, r=r, q=q).items()}


def pulse(st, s, lt=False, noise=4096, consts=CONSTS, n_levels=0):
    return fp.pulse_int(st, consts, np.array([s]), np.array([lt]), np.array([noise]), n_levels, SPEC)


from device_scenarios import scenario  # noqa: E402


# -- golden integer cases (expected values worked out in the comments) -----------------------------
def test_decay_golden():
    # 1000 * (4096 - 4) = 4_092_000; >> 12 = floor(999.02) = 999
    assert fp.decay_int(np.array([1000]), np.array([4]))[0] == 999
    # (2**23 - 1) * 1 >> 12 = floor(2047.9998) = 2047 ; 1 * 4095 >> 12 = 0 (a state always decays to 0)
    assert fp.decay_int(np.array([SMAX, 1]), np.array([4095, 1])).tolist() == [2047, 0]


def test_potentiating_pulse_golden():
    new, ovf = pulse(state(), s=4096)  # |s| = 1.0 in Q12, noise 1.0, r = q = 0
    # k = (6554 * 4096) >> 4 = 1_677_824 (Q24, 0.100006); * noise, * mu, * f are exact multiplications by 1
    # g_st += 1_677_824 * (2_097_152 - 1_000_000) >> 24 = 1_840_827_957_248 >> 24 = 109_721
    assert new["g_st"][0] == 1_109_721
    assert new["g_lt"][0] == 1_000_000          # not an LT pulse
    assert new["r"][0] == 65536                  # r += 1 (Q16)
    assert new["q"][0] == 13107                  # q += 13107 * 65536 >> 16
    assert not any(m.any() for m in ovf.values())


def test_facilitated_and_depleted_pulse_golden():
    new, _ = pulse(state(r=32768, q=13107), s=4096)  # r = 0.5, q = 0.2
    # f = 65536 + (65536 * 32768 >> 16) = 98304 ; mu = 65536 - 13107 = 52429
    # x = 1_677_824 -> * 4096 >> 12 = 1_677_824 -> * 52429 >> 16 = 1_342_264 -> * 98304 >> 16 = 2_013_396
    # g_st += 2_013_396 * 1_097_152 >> 24 = 131_666
    assert new["g_st"][0] == 1_131_666
    # q += 13107 * (65536 - 13107) >> 16 = 10485
    assert new["q"][0] == 23592 and new["r"][0] == 98304


def test_depression_golden():
    new, _ = pulse(state(), s=-4096)
    # g_st -= 1_677_824 * 1_000_000 >> 24 = 100_006
    assert new["g_st"][0] == 899_994 and new["g_lt"][0] == 1_000_000
    new, _ = pulse(state(), s=-8192, lt=True)  # |s| = 2: k_lt = (3277 * 8192) >> 4 = 1_677_824
    # g_lt -= 1_677_824 * (1_000_000 - 0) >> 24 = 100_006
    # k_st = (6554 * 8192) >> 4 = 3_355_648 ; g_st -= 3_355_648 * 1_000_000 >> 24 = floor(200_012.2)
    assert new["g_lt"][0] == 899_994 and new["g_st"][0] == 1_000_000 - 200_012


def test_quantisation_golden():
    q = lambda g, hi, n: fp.snap_levels_int(np.array(g), 0, hi, n).tolist()  # noqa: E731
    # span 630, 64 levels -> step 10: 14 -> 10, 15 -> 20 (half up), 24 -> 20, 25 -> 30
    assert q([14, 15, 24, 25, 630], 630, 64) == [10, 20, 20, 30, 630]
    # span 100, 4 levels: grid floor(L * 100 / 3) = 0, 33, 66, 100 ; boundary at 16.67
    assert q([16, 17, 50, 84], 100, 4) == [0, 33, 66, 100]
    assert q([17], 100, 0) == [17]  # continuous


def test_lt_pulse_is_quantised():
    new, _ = pulse(state(g_lt=0), s=4096, lt=True, consts={**CONSTS, "g_max": np.array([630])}, n_levels=64)
    # k_lt = (3277 * 4096) >> 4 = 838_912 ; 838_912 * 630 >> 24 = 31 -> level (31*63*2+630)//1260 = 3 -> 30
    assert new["g_lt"][0] == 30


def test_saturation_at_24_bits_reports_variable_and_device():
    st = {k: np.repeat(v, 3) for k, v in state(r=SMAX - 100).items()}
    c = {k: np.repeat(v, 3) for k, v in {**CONSTS, "ppf": np.array([0])}.items()}
    new, ovf = fp.pulse_int(st, c, np.array([0, 4096, 0]), np.zeros(3, bool), np.full(3, 4096), 0, SPEC)
    assert new["r"].tolist() == [SMAX - 100, SMAX, SMAX - 100]  # SMAX - 100 + 65536 clipped
    assert fp.first_overflow(ovf) == ("r", 1)


def _first_r_overflow_step(d_r, pulse_steps):
    """Independent Python-int oracle: first step at which r (Q16, +65536 per pulse) exceeds 2**23-1."""
    r = 0
    for k in range(max(pulse_steps) + 1):
        r = r * (4096 - d_r) // 4096 if k else r
        if k in pulse_steps:
            r += 65536
            if r > SMAX:
                return k
    return None


def test_overflow_is_reported_with_step_and_device():
    p = DeviceParams().replace(tau_ppf=10.0, ppf_gain=0.0, c2c_sigma=0.0)
    batch = ref.make_devices(p, [0.0] * 3, variability=False)
    drive = ref.make_drive(p, 300, 3, 0.01, [(k, 1, 0.5, p.t_ref) for k in range(300)])
    d_r = fp.integer_problem(batch, drive).consts["d_r"][0]
    assert d_r == 4  # round(4096 * (1 - exp(-0.001)))
    step = _first_r_overflow_step(int(d_r), set(range(300)))
    assert step is not None
    with pytest.raises(fp.FixedPointOverflowError, match=f"r at step {step}, device 1") as exc:
        fp.simulate_fixed(batch, drive)
    assert (exc.value.variable, exc.value.step, exc.value.device) == ("r", step, 1)
    tr = fp.simulate_fixed(batch, drive, spec=fp.FixedPointSpec(strict=False))
    assert tr.meta["overflows"][0] == ("r", step, 1)
    assert tr.meta["raw"]["r"][step, 1] == SMAX and tr.meta["raw"]["r"][:, [0, 2]].max() == 0


def test_drive_outside_budget_is_rejected_with_step_and_device():
    p = DeviceParams()
    batch = ref.make_devices(p, [0.0, 0.0])
    drive = ref.make_drive(p, 5, 2, 0.01, [(3, 1, 4.0, p.t_ref)])
    assert drive.s[3, 1] > 2048  # |s| budget: 24-bit signed Q12
    with pytest.raises(fp.FixedPointOverflowError, match="s at step 3, device 1"):
        fp.integer_problem(batch, drive)


def test_decay_too_fine_for_12_bits_is_rejected():
    p = DeviceParams()
    batch = ref.make_devices(p, [0.0])
    drive = ref.make_drive(p, 3, 1, 1e-4, [])  # 4096 * (1 - exp(-1e-5)) = 0.04 -> 0
    with pytest.raises(ParameterError, match="decay of g_st rounds to 0"):
        fp.integer_problem(batch, drive)


def test_spec_products_fit_int64():
    assert SPEC.worst_product_bits() == 62
    with pytest.raises(ParameterError, match="int64"):
        fp.FixedPointSpec(k_frac=30, drive_frac=14)


# -- fixed point vs float, within the derived bound ----------------------------------------------
def test_fixed_vs_float_within_derived_bounds():
    batch, drive, g0 = scenario()
    fixed = fp.simulate_fixed(batch, drive, g0)
    flt = ref.simulate(batch, drive, g0)
    quant = ref.simulate(*fp.quantised_model(batch, drive, g0))
    b_ref = fp.error_bound(batch, drive, g0)
    b_q = fp.error_bound(batch, drive, g0, against="quantised")
    lsb = fixed.meta["lsb_g"]
    for v in ref.STATE_VARS:
        assert np.all(np.abs(getattr(fixed, v) - getattr(flt, v)) <= b_ref[v]), v
        assert np.all(np.abs(getattr(fixed, v) - getattr(quant, v)) <= b_q[v]), v
    # raw integers and SI values agree
    np.testing.assert_array_equal(fixed.g_st, fixed.meta["raw"]["g_st"] * lsb)
    # the 12-bit decays are a real error source: vs the true reference the fixed model leaves the
    # (much tighter) quantised-parameter bound
    assert np.any(np.abs(fixed.g_st - flt.g_st) > b_q["g_st"])
    # against the quantised float model: a few LSB per step (400 steps, <= 2 floors each + k rounding)
    assert b_q["g_st"].max() <= 4 * drive.n_steps * lsb
    # against the reference: well below 1 % of the volatile range here
    assert b_ref["g_st"].max() <= 0.01 * batch.params.g_st_max


def test_relaxation_bound_closed_form():
    """Pure relaxation at tau = 10 s, dt = 10 ms (d = round(4.096) = 4, decay rate 2.3 % too slow):
    e_n = lq^n e_0 + x_0 |lq^n - l^n| + lsb (1 - lq^n) / (1 - lq)  (+ float rounding terms)."""
    p = DeviceParams().replace(c2c_sigma=0.0)
    batch = ref.make_devices(p, [0.0], variability=False)
    drive = ref.make_drive(p, 1001, 1, 0.01, [(0, 0, 1.3, 4 * p.t_ref)])  # s = 6.7: k = 0.67
    fixed, flt = fp.simulate_fixed(batch, drive), ref.simulate(batch, drive)
    bound = fp.error_bound(batch, drive)["g_st"][:, 0]
    n = np.arange(1001)
    lam, lq = np.exp(-0.01 / 10.0), 1 - 4 / 4096
    x0, lsb = flt.g_st[0, 0], fixed.meta["lsb_g"]
    closed = lq**n * bound[0] + x0 * np.abs(lq**n - lam**n) + lsb * (1 - lq**n) / (1 - lq)
    np.testing.assert_allclose(bound, closed, rtol=1e-6)
    err = np.abs(fixed.g_st[:, 0] - flt.g_st[:, 0])
    assert np.all(err <= bound)
    # after one tau: 0.86 % of g_st(0) from the decay rate + 1024 LSB of floors (0.07 %)
    assert 0.0086 < bound[1000] / x0 < 0.0095
    assert err[1000] >= 0.9 * x0 * abs(lq**1000 - lam**1000)  # the bound is tight, not vacuous


def test_bad_against_is_rejected():
    batch, drive, g0 = scenario()
    with pytest.raises(ParameterError, match="against"):
        fp.error_bound(batch, drive, g0, against="nonsense")
