"""Loihi-style integer primitives, hand-computed integer networks and overflow detection.

Every expected integer below is worked out by hand in the comments (no tolerance)."""
import math

import numpy as np
import pytest
import torch

from conversion import fixed_point as fx
from conversion import graph as g
from conversion.simulator import Simulator
from mstpn_base.errors import ParameterError

torch.set_num_threads(1)
I64 = np.int64


def test_rshift_round_half_up_and_left_shift():
    x = np.array([5, -5, 7, 6, -6, 4], I64)
    # 2.5 -> 3, -2.5 -> -2, 3.5 -> 4, 3 -> 3, -3 -> -3, 2 -> 2   (shift 1)
    assert fx.rshift_round(x, 1).tolist() == [3, -2, 4, 3, -3, 2]
    # 1.75 -> 2, 1.5 -> 2, -1.5 -> -1 (shift 2)
    assert fx.rshift_round(np.array([7, 6, -6]), 2).tolist() == [2, 2, -1]
    assert fx.rshift_round(np.array([3, -3]), 0).tolist() == [3, -3]
    assert fx.rshift_round(np.array([3, -3]), -3).tolist() == [24, -24]


def test_round_div_half_up():
    # 7/2 = 3.5 -> 4; -7/2 = -3.5 -> -3; 10/4 = 2.5 -> 3; 1/3 -> 0; 2/3 -> 1; -2/3 -> -1
    assert fx.round_div(np.array([7, -7, 10, 1, 2, -2]), np.array([2, 2, 4, 3, 3, 3])).tolist() == [4, -3, 3, 0, 1, -1]


def test_isqrt_exact_floor():
    s = np.array([0, 1, 2, 3, 4, 15, 16, 17, 3328, 3524, (2**31 - 1) ** 2, 2**62 - 1, 2**62], I64)
    assert fx.isqrt(s).tolist() == [0, 1, 1, 1, 2, 3, 4, 4, 57, 59, 2**31 - 1, 2**31 - 1, 2**31]
    with pytest.raises(ParameterError):
        fx.isqrt(np.array([-1]))


def test_loihi_decay_and_q12_multiplier():
    # (1000 * 3072) >> 12 = 750; towards zero for negatives; (1001 * 4095) >> 12 = 4099095 >> 12 = 1000;
    # (3 * 1) >> 12 = 0
    assert fx.decay(np.array([1000, -1000, 1001, -3]), np.array([1024, 1024, 1, 4095])).tolist() == [750, -750, 1000, 0]
    assert fx.decay_code(np.array([0.75, 1.0, 0.0])).tolist() == [1024, 0, 4095]
    assert fx.lam_code(np.array([0.75, -0.5, 1.5])).tolist() == [3072, -2048, 6144]
    # -1000 * 2048 / 4096 = -500;  -(7 * 6144) >> 12 = -(43008 >> 12) = -10
    assert fx.mul_q12(np.array([1000, -7]), np.array([-2048, 6144])).tolist() == [-500, -10]
    x = np.arange(-5000, 5000, 37)
    assert np.array_equal(fx.mul_q12(x, 3072), fx.decay(x, 1024))   # same op for lambda in [0, 1]
    with pytest.raises(ParameterError, match="outside the Q12 range"):
        fx.lam_code(np.array([0.5, 2.5]))


def test_weight_quantisation_8bit_mantissa_per_layer_exponent():
    # max 0.5: 2**-8 would need mantissa 128 > 127, so e = -7: 0.5 -> 64, -0.25 -> -32, 0.1 -> 12.8 -> 13
    m, e = fx.quantise_weights(np.array([0.5, -0.25, 0.1]))
    assert (m.tolist(), e) == ([64, -32, 13], -7)
    # -1.0 fits the asymmetric range: -128 * 2**-7
    assert fx.quantise_weights(np.array([-1.0, 0.3]))[0].tolist() == [-128, 38] and fx.weight_exponent([-1.0]) == -7
    m, e = fx.quantise_weights(np.zeros(3))
    assert m.tolist() == [0, 0, 0] and e == 0


def test_tanh_table_hand_values_and_bound():
    lut, shift = fx.tanh_table(a_exp=-8, h_exp=-12)
    assert shift == 2 and len(lut) == 513                   # step 2**-6 = 4 LSBs of a, 8 / 2**-6 + 1 entries
    # tanh(1) * 4096 = 3119.49 -> 3119; tanh(65/64) * 4096 = 3146.05 -> 3146
    assert lut[0] == 0 and lut[64] == 3119 and lut[65] == 3146
    a = np.array([256, 257, 258, -258, 2048, 5000, -5000])
    # a = 257: i = 64, f = 1: 3119 + ((27 * 1) >> 2) = 3125; a = 258: 3119 + (54 >> 2) = 3132; beyond 8: T[-1] = 4096
    assert fx.tanh_int(a, lut, shift).tolist() == [3119, 3125, 3132, -3132, 4096, 4096, -4096]
    a = np.arange(-3000, 3001)
    err = np.abs(fx.tanh_int(a, lut, shift) * 2.0**-12 - np.tanh(a * 2.0**-8))
    assert err.max() <= fx.tanh_lut_error_bound(-8, -12)


def test_overflow_monitor_saturates_and_reports_where_and_when():
    mon = fx.OverflowMonitor()
    x = np.array([[0, 2**23, -(2**24)]], I64)
    y = mon.check("conv1", "u", x, fx.STATE_MAX, step=7)
    assert y.tolist() == [[0, fx.STATE_MAX, -fx.STATE_MAX]]
    ev = mon.first
    assert (ev.node, ev.variable, ev.index, ev.step, ev.value, ev.budget, ev.count) == \
        ("conv1", "u", (0, 1), 7, 2**23, fx.STATE_MAX, 2)
    assert "node 'conv1', variable 'u', index (0, 1), step 7" in str(ev)
    with pytest.raises(fx.FixedPointOverflowError, match="variable 'payload'.*step 3"):
        fx.OverflowMonitor(strict=True).check("sd1", "payload", x, fx.STATE_MAX, step=3)


# -- hand-computed integer networks -----------------------------------------------------------------
def conv_net(bias_int=0, threshold=5, fc_mant=(2, -1)):
    """input (1,2,2) -> sd_in -> conv 1x1 (mantissa 3, exp 0) -> sd1 relu (threshold 5) -> fc -> logits."""
    nodes = {"input": g.Input((1, 2, 2)), "sd_in": g.SigmaDelta("identity", np.zeros((1, 2, 2))),
             "conv": g.Conv2d(np.full((1, 1, 1, 1), 3.0), np.zeros(1), (2, 2)),
             "sd1": g.SigmaDelta("relu", np.full((1, 2, 2), 5.0)), "flat": g.Flatten((1, 2, 2)),
             "fc": g.Affine(np.array([[2.0, 0, 0, 0], [0, 0, 0, -1.0]]), np.zeros(2)), "logits": g.Output((2,))}
    order = list(nodes)
    net = g.Network(nodes, list(zip(order[:-1], order[1:])))
    net.fixed = {"sd_in": {"in_exp": 0, "out_exp": 0, "threshold": np.zeros((1, 2, 2), I64)},
                 "conv": {"weight_mant": np.full((1, 1, 1, 1), 3, I64), "weight_exp": 0, "in_exp": 0, "u_exp": 0,
                          "bias": np.array([bias_int], I64)},
                 "sd1": {"in_exp": 0, "out_exp": 0, "threshold": np.full((1, 2, 2), threshold, I64)},
                 "fc": {"weight_mant": np.array([[fc_mant[0], 0, 0, 0], [0, 0, 0, fc_mant[1]]], I64), "weight_exp": 0, "in_exp": 0,
                        "u_exp": 0, "bias": np.zeros(2, I64)}}
    return net


def frame(p00, p11=0):
    return np.array([[[[p00, 0], [0, p11]]]])


def test_integer_sigma_delta_events_and_payloads():
    sim = Simulator(conv_net(), fixed=True)
    # pixel 10 -> u = 30 -> event 30;  12 -> u = 36, |36 - 30| = 6 > 5 -> event 6;
    # 13 -> u = 39, |39 - 36| = 3 <= 5 -> no event, y_sent stays 36; 4 -> u = 12, event -24
    expect_sent = [30, 36, 36, 12]
    expect_logits = [[60, 0], [72, 0], [72, 0], [24, 0]]
    for t, (p, s, lo) in enumerate(zip([10, 12, 13, 4], expect_sent, expect_logits)):
        r = sim.step(frame(p))
        assert sim.state["sd1"]["sent"][0, 0, 0, 0] == s and r.logits_int.tolist() == [lo]
    assert sim.stats["sd1"]["events"] == 3
    assert sim.stats["fc"]["synops"] == 3 * 2        # 3 events x fan-out 2


def test_overflow_detected_with_node_variable_index_and_step():
    mon = fx.OverflowMonitor()
    sim = Simulator(conv_net(bias_int=fx.STATE_MAX - 100, fc_mant=(0, 0)), fixed=True, monitor=mon)
    sim.step(frame(0, 0))                         # u = bias: fits
    sim.step(frame(0, 20))                        # u[1,1] = bias + 60: fits (100 of room)
    assert mon.first is None
    sim.step(frame(0, 40))                        # u[1,1] = bias + 120 > 2**23 - 1 at step 2
    ev = mon.first
    assert (ev.node, ev.variable, ev.index, ev.step, ev.value) == ("conv", "u", (0, 0, 1, 1), 2, fx.STATE_MAX + 20)
    assert sim.state["conv"]["u"][0, 0, 1, 1] == fx.STATE_MAX        # saturated
    strict = Simulator(conv_net(bias_int=fx.STATE_MAX - 100, fc_mant=(0, 0)), fixed=True,
                       monitor=fx.OverflowMonitor(strict=True))
    strict.step(frame(0, 0))
    with pytest.raises(fx.FixedPointOverflowError, match="'conv', variable 'u', index \\(0, 0, 1, 1\\), step 1"):
        strict.step(frame(0, 40))


def stpn_net():
    """input (1,1,1) -> sd_in -> flatten -> stpn (H=1, K=2) <-> h (tanh) -> pi -> logits, hand-set integers."""
    nodes = {"input": g.Input((1, 1, 1)), "sd_in": g.SigmaDelta("identity", np.zeros((1, 1, 1))),
             "flatten": g.Flatten((1, 1, 1)),
             "stpn": g.PlasticSTPN(np.array([[0.75, -0.5]]), np.zeros(1), np.array([[0.5, 1.0]]),
                                   np.array([[5.0, 7.0]]) * 2**-8, post="h"),
             "h": g.SigmaDelta("tanh", np.zeros(1)), "pi": g.Affine(np.array([[1.0], [-1.0]]), np.zeros(2)),
             "logits": g.Output((2,))}
    edges = [("input", "sd_in"), ("sd_in", "flatten"), ("flatten", "stpn"), ("stpn", "h"), ("h", "stpn"),
             ("h", "pi"), ("pi", "logits")]
    net = g.Network(nodes, edges)
    lut, shift = fx.tanh_table(-4, -4)
    net.fixed = {
        "sd_in": {"in_exp": 0, "out_exp": 0, "threshold": np.zeros((1, 1, 1), I64)},
        "stpn": {"w_mant": np.array([[3, -2]]), "w_exp": -2, "f_exp": -6, "gamma_mant": np.array([[5, 7]]),
                 "gamma_exp": -8, "lam_q12": np.array([[2048, 4096]]), "bias": np.zeros(1, I64), "x_exp": 0,
                 "h_exp": -4, "z_exp": -4, "a_exp": -4, "hebb_shift": 10, "f_max": -1},
        "h": {"in_exp": -4, "out_exp": -4, "threshold": np.zeros(1, I64), "lut": lut, "lut_shift": shift},
        "pi": {"weight_mant": np.array([[1], [-1]]), "weight_exp": 0, "in_exp": -4, "u_exp": -4,
               "bias": np.zeros(2, I64)}}
    return net


def test_plastic_layer_integer_steps_by_hand():
    """W = [3, -2] 2**-2, F LSB 2**-6 (shift sG = 4), z LSB 2**-4, pixel x = 2 -> z_x = 32.

    step 0: z = [32, 0]; uW = 3*32 = 96; G = [48, -32]; sum G^2 = 3328; N = isqrt = 57;
            a = round(96*16 / 57) = round(26.95) = 27; h = T[27] = round(16 tanh(27/16)) = 15;
            F: q = 0; Hebbian 5*15*32 = 2400 (LSB 2**-16) -> (2400 + 512) >> 10 = 2; 7*15*0 = 0 -> F = [2, 0]
    step 1: z = [32, 15]; uW = 96 - 2*15 = 66; G = [50, -32]; sum = 3524; N = 59;
            dot = 66*16 + 2*32 = 1120; a = round(18.98) = 19; h = round(16 tanh(19/16)) = 13;
            q = round(2*64 / 59) = 2 -> (2*2048) >> 12 = 1, 0; Hebbian 5*13*32 = 2080 -> 2, 7*13*15 = 1365 -> 1;
            F = [3, 1]
    """
    sim = Simulator(stpn_net(), fixed=True)
    expect = [(57, 27, [2, 0], [15, -15]), (59, 19, [3, 1], [13, -13])]
    for N, a, F, logits in expect:
        r = sim.step(np.full((1, 1, 1, 1), 2))
        st = sim.state["stpn"]
        assert (st["N"][0, 0], st["a"][0, 0], st["F"][0, 0].tolist(), r.logits_int[0].tolist()) == (N, a, F, logits)
    assert r.logits.tolist() == [[13 / 16, -13 / 16]]      # u LSB 2**-4


def test_quantised_policy_respects_budgets():
    from conversion.calibrate import calibrate
    from conversion.convert import convert_policy
    from conversion.quantise import quantise_checked
    from conversion.synthetic import pong_like_frames
    from snn_agent.checkpoint import build_policy
    from snn_agent.config import ModelConfig

    net = convert_policy(build_policy(ModelConfig(hidden=8, n_actions=3), seed=0))
    frames = pong_like_frames(6)
    cal = calibrate(net, frames)
    fx_ = quantise_checked(net, cal, frames)     # what mstpn convert does (the lava rule checks its Conv steps)
    for n in ("conv1", "conv2", "pi", "v"):
        e = fx_[n]
        assert e["weight_mant"].min() >= -128 and e["weight_mant"].max() <= 127
        assert e["u_exp"] == e["weight_exp"] + e["in_exp"] and np.abs(e["bias"]).max() <= fx.STATE_MAX
    s = fx_["stpn"]
    assert s["z_exp"] == min(s["x_exp"], s["h_exp"]) and s["hebb_shift"] == s["f_exp"] - (s["gamma_exp"] + s["h_exp"] + s["z_exp"])
    K = 2600
    assert K * (127 * 2 ** (s["w_exp"] - s["f_exp"]) + fx.STATE_MAX) ** 2 <= fx.WIDE_MAX   # sum G^2 fits 64 bits
    assert fx_["conv1"]["in_exp"] == 0 and fx_["sd_in"]["out_exp"] == 0                  # raw pixels, scale folded
    # the conv1 mantissas quantise weight / 255
    assert fx_["conv1"]["weight_mant"].tolist() == fx.quantise_weights(net.nodes["conv1"].weight / 255.0)[0].tolist()
    mon = fx.OverflowMonitor()
    sim = Simulator(net, fixed=True, monitor=mon)
    for f in frames:                                  # the calibration frames themselves stay within budget
        sim.step(f[None])
    assert mon.first is None and math.isfinite(sim.values["logits"].sum())
