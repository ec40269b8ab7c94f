"""The integer device layer (conversion.device_layer_fixed): exact integers on hand-made cases,
the ideal-device limit, seeds, the overflow monitor, the stated one-step bound against the float
layer, and the numpy-fixed device runner."""
import numpy as np
import pytest

from conversion import device_layer as dl
from conversion import device_layer_fixed as dlf
from conversion import fixed_point as fx
from conversion.calibrate import calibrate
from conversion.convert import convert_policy
from conversion.quantise import quantise
from conversion.simulator import Simulator
from conversion.synthetic import pong_like_frames
from mstpn_base import registry
from mstpn_base.errors import FixedPointOverflowError
from mstpn_base.ops import NUMPY

from device_scenarios import small_mstpn

FP = {"f_exp": -20, "w_exp": -8, "hebb_shift": 2}
FP6 = dict(FP, hebb_shift=6)      # gamma h z of the random cases within the volatile range


def _ideal(K=2, lam=(0.9, 0.5), **kw):
    m = dl.Mapping(params=dl.ideal_params(), variability=False, noise=False, **kw)
    return dl.build(m, np.zeros((1, K)), np.array([lam[:K]]))


def _state(gp, gm, r=0, q=0):
    return {"p": {"g_st": np.array([[gp]]), "r": np.full((1, 1, len(gp)), r), "q": np.full((1, 1, len(gp)), q)},
            "m": {"g_st": np.array([[gm]]), "r": np.full((1, 1, len(gm)), r), "q": np.full((1, 1, len(gm)), q)}}


def test_formats_of_the_ideal_layer():
    fd = dlf.build_fixed(_ideal(), FP)
    # f_max = g_st_max / g_unit = 0.50505 weight units = 529583.4 F LSB: two more bits fit 2**22
    assert (fd.g_frac, fd.g_max, fd.a_nom, fd.hebb_shift) == (2, 2118335, 6554, 0)
    assert fd.width_table[0] == 0 and fd.width_table[-1] == 1 << 16 and fd.width_table[2048] == 1 << 14   # beta 0.5


def test_hand_made_potentiation_then_depression():
    """Step 1 from fresh devices, gamma h z = 3 * 5 * 2 = 30 lsb_g on synapse 0 (hebb shift 0):
    k = round(30 2**24 / 2118335) = 238, |s| = round(238 2**10 / 6554) = 37; pulse_int:
    (6554 * 37) >> 10 = 236 = k_dev, G_p = (236 * 2118335) >> 24 = 29, F = (29 + 2) >> 2 = 7.
    Step 2 (gamma 0, N = 2**21, i.e. 2 weight units, d_g = 410): G_p = (29 * 3686) >> 12 = 26,
    target 26 / 2 = 13, dD = -13 from the plus device: k = 2**23, |s| = round(2**33 / 6554) =
    1310640, k_dev = (6554 * 1310640) >> 10 = 8388607, G_p = 26 - ((8388607 * 26) >> 24) = 14,
    F = (14 + 2) >> 2 = 4."""
    fd = dlf.build_fixed(_ideal(), FP)
    for side in dl.SIDES:
        fd.consts[side]["d_g"] = np.array([[410, 410]])
    st = _state([0, 0], [0, 0])
    gamma = np.array([[3, 3]])
    new, F, pulses = dlf.plasticity_int(fd, st, np.array([[[1]]]), np.array([[[5]]]), np.array([[[2, 0]]]), gamma)
    assert new["p"]["g_st"].tolist() == [[[29, 0]]] and new["m"]["g_st"].tolist() == [[[0, 0]]]
    assert F.tolist() == [[[7, 0]]] and pulses["p"][0].tolist() == [[[37, 0]]]
    assert new["p"]["r"].tolist() == [[[65536, 0]]] and new["p"]["q"].tolist() == [[[0, 0]]]   # md = 0
    new, F, pulses = dlf.plasticity_int(fd, new, np.array([[[1 << 21]]]), np.array([[[0]]]), np.array([[[0, 0]]]),
                                        gamma)
    assert new["p"]["g_st"].tolist() == [[[14, 0]]] and F.tolist() == [[[4, 0]]]
    assert pulses["p"][0].tolist() == [[[-1310640, 0]]] and pulses["m"][0].tolist() == [[[0, 0]]]


def test_a_negative_change_depresses_the_plus_device_first():
    """D = 100 - 0, target -51 (hebb -150 at N = 2**20): the plus device goes to exactly 0 (k =
    2**24, its efficacy rounded up), the rest (51) potentiates the minus device."""
    fd = dlf.build_fixed(_ideal(K=1, lam=(0.999,)), dict(FP, hebb_shift=2))
    for side in dl.SIDES:
        fd.consts[side]["d_g"] = np.array([[1]])       # (100 * 4095) >> 12 = 99
    st = _state([100], [0])
    new, F, pulses = dlf.plasticity_int(fd, st, np.array([[[1 << 20]]]), np.array([[[-5]]]), np.array([[[10]]]),
                                        np.array([[3]]))
    assert pulses["p"][0][0, 0, 0] < 0 and pulses["m"][0][0, 0, 0] > 0
    assert new["p"]["g_st"][0, 0, 0] == 0
    # target = 99 - 150 = -51; the minus device gets 51 within its drive rounding (1 lsb_g)
    assert abs(int(new["m"]["g_st"][0, 0, 0]) - 51) <= 1


def _random_case(rng, devs, fp, B=1):
    H, K = devs.W.shape
    fd = dlf.build_fixed(devs, fp)
    st = {side: {"g_st": rng.integers(0, fd.g_max // 4, (B, H, K)), "r": rng.integers(0, 1 << 16, (B, H, K)),
                 "q": rng.integers(0, 1 << 15, (B, H, K))} for side in dl.SIDES}
    N = rng.integers(1 << 20, 1 << 21, (B, H, 1))      # row norms 1 .. 2 weight units
    h = rng.integers(-200, 200, (B, H, 1))
    z = rng.integers(-300, 300, (B, 1, K))
    gamma = rng.integers(-127, 128, (H, K))
    return fd, st, N, h, z, gamma


def test_ideal_device_limit_is_the_ideal_integer_rule():
    """Ideal devices (no variability, facilitation, depletion or noise): one device step from a
    signed F equals the ideal integer rule F <- lam F / N + gamma h z (simulator's
    _plasticity_int arithmetic: round_div, mul_q12, rshift_round) within 2 F LSB (two roundings of
    the rule, the decay floor of lsb_g / 4, the drive rounding)."""
    rng = np.random.default_rng(1)
    H, K = 4, 6
    lam = rng.uniform(0.5, 0.99, (H, K))
    devs = dl.build(dl.Mapping(params=dl.ideal_params(), variability=False, noise=False), np.zeros((H, K)), lam)
    fd, st, N, h, z, gamma = _random_case(rng, devs, FP6, B=3)
    F0 = np.rint((st["p"]["g_st"] - st["m"]["g_st"]) / 4).astype(np.int64)   # on the F grid: G = F << 2
    st = {"p": dict(st["p"], g_st=np.maximum(F0, 0) << 2, r=0 * F0, q=0 * F0),
          "m": dict(st["m"], g_st=np.maximum(-F0, 0) << 2, r=0 * F0, q=0 * F0)}
    _, F, _ = dlf.plasticity_int(fd, st, N, h, z, gamma)
    L = 4096 - fd.consts["p"]["d_g"]
    want = fx.mul_q12(fx.round_div(F0 << 20, N), L) + fx.rshift_round(gamma * h * z, FP6["hebb_shift"])
    assert np.abs(F - want).max() <= 2
    assert np.abs(want - F0).max() > 1000          # the step changed F


def test_seeds_reproduce_and_differ():
    rng = np.random.default_rng(2)
    H, K = 3, 5
    lam = rng.uniform(0.94, 0.99, (H, K))
    W = rng.uniform(-0.3, 0.3, (H, K))

    def run(seed):
        devs = dl.build(dl.Mapping(seed=seed), W, lam)
        fd, st, N, h, z, gamma = _random_case(np.random.default_rng(3), devs, FP)
        for t in range(5):
            st, F, _ = dlf.plasticity_int(fd, st, N, h, z, gamma, dlf.c2c_noise_int(fd.mapping, t, F_shape(H, K)))
        return st, F

    def F_shape(H, K):
        return (1, H, K)

    a, b, c = run(5), run(5), run(6)
    assert np.array_equal(a[1], b[1]) and all(np.array_equal(a[0][s][v], b[0][s][v]) for s in dl.SIDES
                                              for v in dl.DEVICE_STATE)
    assert not np.array_equal(a[1], c[1])


def test_monitor_catches_the_read_back_overflow():
    """F LSB 2**-30: g_frac = -8, the read-back G << 8 leaves 24 bits."""
    fd = dlf.build_fixed(_ideal(K=1, lam=(0.99,)), dict(FP, f_exp=-30, hebb_shift=-10))
    assert fd.g_frac == -8
    st = _state([fd.g_max // 2], [0])
    args = (fd, st, np.array([[[1 << 30]]]), np.array([[[0]]]), np.array([[[0]]]), np.array([[0]]))
    mon = fx.OverflowMonitor()
    _, F, _ = dlf.plasticity_int(*args, monitor=mon, node="stpn", step=4)
    assert F[0, 0, 0] == fx.STATE_MAX and mon.first.variable == "F" and mon.first.step == 4
    with pytest.raises(FixedPointOverflowError, match="'F'"):
        dlf.plasticity_int(*args, monitor=fx.OverflowMonitor(strict=True), node="stpn", step=4)


def test_float_layer_within_the_stated_bound():
    """30 steps with variability, facilitation, depletion and cycle-to-cycle noise; at each step the
    float layer on the quantised parameters starts from the integer state and its F stays within
    step_error_bound of the integer F (in F LSB), and the bound is not vacuous (< 64 LSB)."""
    rng = np.random.default_rng(4)
    H, K = 4, 6
    devs = dl.build(dl.Mapping(seed=9), rng.uniform(-0.4, 0.4, (H, K)), rng.uniform(0.94, 0.99, (H, K)))
    fd, st, N, h, z, gamma = _random_case(rng, devs, FP6)
    mq, arrays = dlf.quantised_reference(fd)
    u = 2.0 ** FP["f_exp"]
    worst = 0.0
    for t in range(30):
        h = rng.integers(-200, 200, (1, H, 1))
        noise = dlf.c2c_noise_int(fd.mapping, t, (1, H, K))
        bound = dlf.step_error_bound(fd, st, N, noise)
        fs = dlf.to_float_state(fd, st)
        _, Ff, _ = dl.plasticity(NUMPY, mq, arrays, fs, N * u, h * 2.0**-8, z * 2.0**-10, gamma * 2.0**-8,
                                 {s: a / 4096.0 for s, a in noise.items()})
        st, F, _ = dlf.plasticity_int(fd, st, N, h, z, gamma, noise)   # hebb shift 6 = f_exp - (-8 - 8 - 10)
        err = np.abs(F - Ff / u)
        assert np.all(err <= bound), (t, float(err.max()), float(bound.min()))
        assert bound.max() < 64
        worst = max(worst, float(err.max()))
    assert worst > 0.1      # the two layers are different arithmetic


@pytest.fixture(scope="module")
def fixed_net():
    net = convert_policy(small_mstpn())
    frames = pong_like_frames(20, seed=2)
    quantise(net, calibrate(net, frames))
    return net


def test_numpy_fixed_runs_the_device_model(fixed_net):
    """The registry lists numpy-fixed for the device model; 30 frames: integer device state,
    counted pulses, the same action as the float device run on at least 28 frames."""
    assert "numpy-fixed" in registry.synapse_backends("device")
    frames = pong_like_frames(30, seed=1)
    got = registry.make_runner("numpy-fixed", fixed_net, synapses="device")
    want = registry.make_runner("numpy", fixed_net, synapses="device")
    same = sum(int(np.argmax(got.step(f).logits) == np.argmax(want.step(f).logits)) for f in frames)
    st = got.sim.state["stpn"]
    assert st["g_st_p"].dtype == np.int64 and st["g_st_p"].max() > 0 and st["g_st_m"].max() > 0
    s = got.device_stats["stpn"]
    assert s["pulses"] > 0 and s["device_steps"] == 30 and s["pulse_energy_J"] > 0
    assert same >= 28
    assert got.sim.monitor.report() == "no fixed-point overflow"


def test_fixed_device_simulator_keeps_the_ideal_path(fixed_net):
    """fixed=True with the ideal synapse model is unchanged by the device path (same F as before)."""
    a, b = Simulator(fixed_net, fixed=True), Simulator(fixed_net, fixed=True, synapses="ideal")
    for f in pong_like_frames(5, seed=1):
        a.step(f[None]), b.step(f[None])
    assert np.array_equal(a.state["stpn"]["F"], b.state["stpn"]["F"]) and not a.devices
