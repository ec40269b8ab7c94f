"""The fixed-point sigma-delta rule "lava" (Lava's SigmaDelta, lava.proc.sdn fixed_pt) against
hand-computed integers, the old rule "round" kept bit for bit, and Lava's own processes (Delta,
Dense, SigmaDelta, fixed_pt) run on a small layer: the ground truth the specification must match.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from conversion import fixed_point as fx
from conversion import graph as g
from conversion.sd_reset import lava_nodes
from conversion.simulator import prephase_state
from conversion.simulator import Simulator
from lava_available import needs_lava

I64 = np.int64
LAVA = fx.SD_RULE_CODE["lava"]
SHIPPED = Path(__file__).resolve().parent.parent / "artifacts" / "stpn" / "policy.safetensors"


def small_net(bias=0, vth=9, state_exp=2, rule=LAVA, w=(3,), fc=((2, 0, 0, 0), (0, 0, 0, -1))):
    """input (4) -> sd_in (identity) -> fc1 (1 x 1 per pixel: mantissa w, exp 0, bias) -> sd1 (relu,
    state_exp) -> fc2 -> logits.  ``rule=None``: a version-1 entry (no rule key)."""
    nodes = {"input": g.Input((4,)), "sd_in": g.SigmaDelta("identity", np.zeros(4)),
             "fc1": g.Affine(np.eye(4) * w[0], np.full(4, float(bias))),
             "sd1": g.SigmaDelta("relu", np.zeros(4)),
             "fc2": g.Affine(np.array(fc, float), np.zeros(2)), "logits": g.Output((2,))}
    order = list(nodes)
    net = g.Network(nodes, list(zip(order[:-1], order[1:])))
    sd_in = {"in_exp": 0, "out_exp": 0, "threshold": np.zeros(4, I64)}
    sd1 = {"in_exp": 0, "out_exp": state_exp, "threshold": np.zeros(4, I64)}
    if rule is not None:
        sd_in.update(rule=rule, state_exp=0, step_exp=0, vth=1)
        sd1.update(rule=rule, state_exp=state_exp, step_exp=0, vth=vth)
    net.fixed = {"sd_in": sd_in, "sd1": sd1,
                 "fc1": {"weight_mant": (np.eye(4) * w[0]).astype(I64), "weight_exp": 0, "in_exp": 0, "u_exp": 0,
                         "bias": np.full(4, bias, I64)},
                 "fc2": {"weight_mant": np.array(fc, I64), "weight_exp": 0, "in_exp": state_exp,
                         "u_exp": state_exp, "bias": np.zeros(2, I64)},
                 "_spec": {"version": 2 if rule is not None else 1}}
    return net


def test_rule_function_floor_equality_residue():
    # delta 30 >= 9: sent, payload 30 >> 2 = 7; delta -27: payload floor(-6.75) = -7; |delta| = 9 = vth fires
    pay, bel, fire = fx.sigma_delta_lava(np.array([30, 12, 48, 5]), np.array([0, 39, 39, 0]), 9, 2)
    assert pay.tolist() == [7, -7, 2, 0] and bel.tolist() == [30, 12, 48, 0] and fire.tolist() == [1, 1, 1, 0]
    assert fx.sd_rule({}) == "round" and fx.sd_rule({"rule": 1}) == "lava"


def test_lava_rule_hand_sequence():
    sim = Simulator(small_net(), fixed=True)
    # pixel 10 -> u = 30, delta 30 >= 9 -> payload 7;  12 -> u 36, delta 6 < 9: none (residue 6)
    # 13 -> u 39, delta 9 >= 9 (equality) -> payload 2;  4 -> u 12, delta -27 -> payload -7 (floor)
    sent, logits = [], []
    for p in (10, 12, 13, 4):
        r = sim.step(np.array([[p, 0, 0, 0]]))
        sent.append(int(sim.state["sd1"]["sent"][0, 0]))
        logits.append(r.logits_int[0].tolist())
    assert sent == [7, 7, 9, 2]
    assert logits == [[14, 0], [14, 0], [18, 0], [4, 0]]
    st = sim.state["sd1"]
    assert st["act"][0, 0] == 12 and st["residue"][0, 0] == 0          # believed 12 = act: nothing pending
    assert sim.stats["sd1"]["events"] == 3
    # the receivers' sum (2) drifts below act >> 2 (3): the floor is not tracked, as in Lava


def test_scalar_vth_and_residue_pending():
    sim = Simulator(small_net(vth=20), fixed=True)
    sim.step(np.array([[5, 6, 7, 0]]))       # u 15, 18, 21: only 21 >= 20 fires
    assert sim.state["sd1"]["sent"][0].tolist() == [0, 0, 5, 0]
    assert sim.state["sd1"]["residue"][0].tolist() == [15, 18, 0, 0]
    sim.step(np.array([[7, 6, 7, 0]]))       # unit 0: 21 - 0 >= 20 fires the whole pending 21
    assert sim.state["sd1"]["sent"][0].tolist() == [5, 0, 5, 0]


def test_first_frame_fires_relu_bias_before_input():
    net = small_net(bias=20)
    pre = prephase_state(net)
    # sd1 (depth 2) runs sub-step 0 before the frame: act = relu(20) >= 9 -> payload 5 in every unit;
    # fc2 (depth 3) integrates it: u = W (5, 5, 5, 5) = (10, -5)
    assert pre["sd1"]["sent"][0].tolist() == [5] * 4 and pre["sd1"]["act"][0].tolist() == [20] * 4
    assert pre["fc2"]["u"][0].tolist() == [10, -5]
    sim = Simulator(net, fixed=True, batch=2)
    assert sim.state["sd1"]["sent"].tolist() == [[5] * 4] * 2
    r = sim.step(np.zeros((2, 4)))           # u = 20 unchanged: no event, logits as after the pre-phase
    assert r.logits_int.tolist() == [[10, -5]] * 2 and sim.stats["sd1"]["events"] == 0
    sim.step(np.array([[1, 0, 0, 0], [0, 0, 0, 0]]))
    sim.reset(np.array([True, False]))
    assert sim.state["sd1"]["sent"][0].tolist() == [5] * 4 and sim.state["sd1"]["act"][0].tolist() == [20] * 4
    # below vth nothing is sent and the bias waits as residue
    low = Simulator(small_net(bias=5), fixed=True)
    assert low.state["sd1"]["sent"][0].tolist() == [0] * 4 and low.state["sd1"]["residue"][0].tolist() == [5] * 4
    r = low.step(np.array([[1, 0, 0, 0]]))   # u = 5 + 3 = 8: delta 8 < 9, still pending
    assert low.state["sd1"]["sent"][0].tolist() == [0] * 4 and low.state["sd1"]["residue"][0, 0] == 8
    r = low.step(np.array([[2, 0, 0, 0]]))   # u = 11: delta 11 >= 9 -> payload 11 >> 2 = 2
    assert low.state["sd1"]["sent"][0].tolist() == [2, 0, 0, 0] and r.logits_int[0].tolist() == [4, 0]


def test_round_rule_and_old_files_unchanged():
    old, explicit = small_net(rule=None), small_net(rule=fx.SD_RULE_CODE["round"])
    explicit.fixed["sd_in"] = {k: v for k, v in explicit.fixed["sd_in"].items()
                               if k in ("in_exp", "out_exp", "threshold", "rule")}
    explicit.fixed["sd1"] = {k: v for k, v in explicit.fixed["sd1"].items()
                             if k in ("in_exp", "out_exp", "threshold", "rule")}
    assert lava_nodes(old) == [] and prephase_state(old) == {} and prephase_state(small_net(), fixed=False) == {}
    a, b = Simulator(old, fixed=True), Simulator(explicit, fixed=True)
    for p in (10, 12, 13, 4, 0):
        ra, rb = a.step(np.array([[p, 1, 0, 0]])), b.step(np.array([[p, 1, 0, 0]]))
        # round rule: y = rshift_round(u, 2); threshold 0: every change of y is sent
        assert ra.logits_int.tolist() == rb.logits_int.tolist()
        assert a.state["sd1"]["sent"][0, 0] == fx.rshift_round(np.array(3 * p), 2)
    assert "act" not in a.state["sd1"]


def test_quantise_rules_and_file_round_trip(tmp_path):
    from conversion.calibrate import calibrate, set_thresholds
    from conversion.convert import convert_policy
    from conversion.nirfile import read_network, write_network
    from conversion.quantise import quantise
    from conversion.synthetic import pong_like_frames
    from snn_agent.checkpoint import build_policy
    from snn_agent.config import ModelConfig

    net = convert_policy(build_policy(ModelConfig(hidden=8, n_actions=3), seed=0))
    frames = pong_like_frames(8, seed=0)
    cal = calibrate(net, frames)
    set_thresholds(net, cal, rel=0.01)
    fl = quantise(net, cal, sd_rule="lava-netx")
    assert fl["_spec"]["version"] == 2 and fl["_spec"]["sd_rule"] == fx.SD_SPEC_CODE["lava-netx"] == 1
    assert lava_nodes(net) == ["sd_in", "sd1", "sd2"] and fx.sd_rule(fl["h"]) == "round"
    se = fl["_spec"]["spike_exp"]
    assert fl["sd1"]["state_exp"] == fx.LAVA_STATE_EXP - se and fl["sd2"]["state_exp"] == fx.LAVA_STATE_EXP
    for sd, conv in (("sd1", "conv1"), ("sd2", "conv2")):
        k, S = fl[sd]["step_exp"], fl[sd]["state_exp"]
        assert fl[sd]["out_exp"] - fl[sd]["in_exp"] == S
        assert fl[sd]["vth"] % (1 << k) == 0 and np.all(fl[conv]["bias"] % (1 << k) == 0)
        assert np.abs(fl[conv]["bias"] >> S).max() <= fx.LAVA_BIAS_MAX
    write_network(tmp_path / "n.nir", net)
    back = read_network(tmp_path / "n.nir")
    r1 = Simulator(net, fixed=True).step(frames[:1]).logits_int
    r2 = Simulator(back, fixed=True).step(frames[:1]).logits_int
    assert r1.tolist() == r2.tolist()
    dflt = quantise(net, cal)
    assert dflt["_spec"]["sd_rule"] == fx.SD_SPEC_CODE["lava"] and "spike_exp" not in dflt["_spec"]
    assert all(fx.sd_rule(dflt[n]) == "lava" and dflt[n]["step_exp"] == 0 for n in ("sd_in", "sd1", "sd2"))
    assert set(net.metadata["sd_state_exp"]) == {"sd_in", "sd1", "sd2"}
    write_network(tmp_path / "d.nir", net)
    back = read_network(tmp_path / "d.nir")
    assert fx.spec_sd_rule(back.fixed["_spec"]) == "lava"
    assert Simulator(back, fixed=True).step(frames[:1]).logits_int.tolist() == \
        Simulator(net, fixed=True).step(frames[:1]).logits_int.tolist()
    fr = quantise(net, cal, sd_rule="round")
    assert fr["_spec"]["version"] == 1 and not any("rule" in e for e in fr.values())
    assert "sd_state_exp" not in net.metadata
    from mstpn_base.errors import ParameterError
    with pytest.raises(ParameterError, match="sd_rule"):
        quantise(net, cal, sd_rule="floor")


# -- Lava's own processes: the ground truth -------------------------------------------------------
def _lava_small(net, frames):
    """sd_in as lava Delta (the frame held at its input), fc1 as lava Dense (mantissas doubled,
    weight_exp -1), sd1 as lava SigmaDelta (relu); returns sd1's s_out per step (T + 1 steps)."""
    import lava_procs
    from lava.magma.core.run_conditions import RunSteps
    from lava.proc.dense.process import Dense
    from lava.proc.io.sink import RingBuffer as Sink
    from lava.proc.io.source import RingBuffer as Source
    from lava.proc.sdn.process import ActivationMode, Delta, SigmaDelta

    f = net.fixed
    S, vth = int(f["sd1"]["state_exp"]), int(f["sd1"]["vth"])
    data = np.concatenate([frames, frames[-1:]]).T          # (4, T + 1): frame t at step t
    src = Source(data=data)
    enc = Delta(shape=(4,), vth=int(f["sd_in"]["vth"]), state_exp=0, spike_exp=0)
    syn = Dense(weights=2 * f["fc1"]["weight_mant"], weight_exp=-1, num_message_bits=24)
    sd = SigmaDelta(shape=(4,), vth=vth / 2**S, bias=f["fc1"]["bias"] / 2**S, state_exp=S,
                    act_mode=ActivationMode.RELU)
    sink = Sink(shape=(4,), buffer=data.shape[1])
    src.s_out.connect(enc.a_in)
    enc.s_out.connect(syn.s_in)
    syn.a_out.connect(sd.a_in)
    sd.s_out.connect(sink.a_in)
    try:
        src.run(condition=RunSteps(num_steps=data.shape[1]), run_cfg=lava_procs.run_config(fixed_point=True))
        return np.rint(sink.data.get()).astype(I64).T
    finally:
        src.stop()


@needs_lava
@pytest.mark.parametrize("bias,state_exp", [(20, 3), (5, 3), (-7, 3), (20, 0), (-7, 0)])
def test_lava_processes_reproduce_the_reference(bias, state_exp):
    """Lava's Delta -> Dense -> SigmaDelta (fixed_pt) = the reference's payloads at every step;
    state_exp 0 (the "lava" rule's choice where the budgets allow it): no payload is floored."""
    rng = np.random.default_rng(bias + 100)
    net = small_net(bias=bias, vth=12, state_exp=state_exp, w=(-5,) if bias < 0 else (7,))
    net.fixed["fc1"]["weight_mant"] = rng.integers(-128, 128, (4, 4)).astype(I64)
    frames = rng.integers(0, 40, (12, 4))
    frames[3:6] = frames[2]                                   # static frames: residues must not fire
    got = _lava_small(net, frames)
    sim = Simulator(net, fixed=True)
    pre = prephase_state(net)
    want0 = pre.get("sd1", {}).get("sent", np.zeros((1, 4), I64))[0]
    assert got[0].tolist() == want0.tolist()                 # step 0: relu(bias) fired before any input
    for t in range(len(frames)):
        sim.step(frames[t][None])
        assert got[t + 1].tolist() == sim.deltas["sd1"][0].tolist(), t   # frame t reaches sd1 at step t + 1
    if state_exp == 0:       # payloads are whole deltas: the receivers' sum is the believed act, exactly
        st = sim.state["sd1"]
        assert np.array_equal(st["sent"], st["act"] - st["residue"])


# -- the exponents of the two Lava-rule variants ----------------------------------------------------
def hand_stpn(b2=0.0):
    """input (4) -> sd_in -> fc1 (eye, w_exp -6) -> sd1 (relu) -> fc2 (0.5, w_exp -7, bias b2) -> sd2
    (relu) -> stpn (H 2) <-> h (tanh) -> pi -> logits, with a hand-made calibration (headroom 4,
    24-bit budget 2**23 - 1: _exp_for(m) = ceil(log2(4 m / (2**23 - 1))))."""
    from conversion.calibrate import Calibration

    nodes = {"input": g.Input((4,)), "sd_in": g.SigmaDelta("identity", np.zeros(4)),
             "fc1": g.Affine(np.eye(4), np.zeros(4)), "sd1": g.SigmaDelta("relu", np.zeros(4)),
             "fc2": g.Affine(np.full((3, 4), 0.5), np.full(3, float(b2))), "sd2": g.SigmaDelta("relu", np.zeros(3)),
             "stpn": g.PlasticSTPN(np.full((2, 5), 0.25), np.zeros(2), np.full((2, 5), 0.9), np.full((2, 5), 0.1),
                                   post="h"),
             "h": g.SigmaDelta("tanh", np.zeros(2)), "pi": g.Affine(np.eye(2), np.zeros(2)),
             "logits": g.Output((2,))}
    order = list(nodes)
    edges = list(zip(order[:7], order[1:8])) + [("h", "stpn"), ("h", "pi"), ("pi", "logits")]
    net = g.Network(nodes, edges)
    # sd1 100: own exp -14; fc2 800: ceil(log2(3200 / 8388607)) = -11, + 7 (w_exp) = -4;
    # sd2 50: -15; stpn 10: -17 (the plastic layer's pre-activation bound on sd2's exponent)
    maxabs = {"sd_in": 255.0, "fc1": 255.0, "sd1": 100.0, "fc2": 800.0, "sd2": 50.0, "stpn": 10.0, "h": 1.0,
              "pi": 1.0}
    return net, Calibration(10, maxabs, dict(maxabs), 0.5, {})


def test_lava_chooses_the_smallest_state_exp():
    from conversion.quantise import quantise

    net, cal = hand_stpn()
    assert quantise(*hand_stpn())["_spec"]["headroom_x1000"] == 1500     # the "lava" rule's default headroom
    f = quantise(net, cal, headroom=4.0)       # "lava", the default rule; the exponents below are for headroom 4
    # sd1: in_exp = fc1's u_exp -6; conv2's budget needs out_exp -4: S = 2.  sd2: in_exp = -7 - 4 = -11;
    # its budgets need -15 (own) and -17 (stpn): S = 0, out_exp = in_exp (no payload floored)
    got = {n: (f[n]["in_exp"], f[n]["out_exp"], f[n]["state_exp"], f[n]["step_exp"], f[n]["vth"])
           for n in ("sd_in", "sd1", "sd2")}
    assert got == {"sd_in": (0, 0, 0, 0, 1), "sd1": (-6, -4, 2, 0, 1), "sd2": (-11, -11, 0, 0, 1)}
    why = {n: v["why"] for n, v in net.metadata["sd_state_exp"].items()}
    assert "fc2" in why["sd1"] and why["sd2"].startswith("the budgets allow it")
    assert f["fc2"]["u_exp"] == -11 and f["stpn"]["x_exp"] == -11 and f["_spec"]["sd_rule"] == 2
    # fc2's bias 20 = 40960 u-LSBs (2**-11) > 16 bits: sd2 needs state_exp 1 for Lava's bias
    net_b, cal = hand_stpn(b2=20.0)
    fb = quantise(net_b, cal, headroom=4.0)
    assert fb["fc2"]["bias"].tolist() == [40960] * 3 and fb["sd2"]["state_exp"] == 1 and fb["sd2"]["out_exp"] == -10
    assert "16-bit" in net_b.metadata["sd_state_exp"]["sd2"]["why"]
    # "lava-netx": netx's exponents (first hidden layer S1 = 2 -> spike_exp 4, then 6), vth in netx steps
    net_n, cal = hand_stpn()
    fn = quantise(net_n, cal, sd_rule="lava-netx")
    assert [fn[n]["state_exp"] for n in ("sd_in", "sd1", "sd2")] == [0, 2, 6] and fn["_spec"]["spike_exp"] == 4
    assert [fn[n]["step_exp"] for n in ("sd1", "sd2")] == [6, 10] and fn["sd1"]["vth"] == 64
    # all three run with the sigma-delta layers' values in their budgets (the hand calibration's F
    # is not the plastic layer's real range: its budget is checked on the shipped STPN below)
    for n_ in (net, net_b, net_n):
        mon = fx.OverflowMonitor()
        sim = Simulator(n_, fixed=True, monitor=mon)
        for p in (0, 40, 255, 7):
            sim.step(np.array([[p, 255 - p, 3, 0]]))
        assert not [k for k in mon.counts if k[0] != "stpn"], mon.report()


@pytest.fixture(scope="module")
def shipped():
    """The shipped STPN, converted, calibrated on 60 synthetic frames (rel 0.002), not quantised."""
    import torch

    from conversion.calibrate import calibrate, set_thresholds
    from conversion.convert import convert_policy
    from conversion.synthetic import pong_like_frames
    from snn_agent.checkpoint import load_policy

    torch.set_num_threads(1)
    policy, _ = load_policy(SHIPPED)
    n = convert_policy(policy)
    cal = calibrate(n, pong_like_frames(60, seed=0))
    set_thresholds(n, cal, rel=0.002)
    return n, cal


def _digest(fixed) -> str:
    import hashlib

    h = hashlib.sha256()
    for k in sorted(fixed):
        for kk in sorted(fixed[k]):
            v = np.asarray(fixed[k][kk])
            h.update(f"{k}.{kk}:{v.dtype.kind}:{v.shape}:".encode())
            h.update(np.ascontiguousarray(v.astype(np.int64)).tobytes())
    return h.hexdigest()


#: sha256 (``_digest``) of the shipped STPN's ``net.fixed`` as the previous default rule (code 1, the
#: netx exponents) wrote it for the ``shipped`` fixture: the files of that version
PREVIOUS_DEFAULT_DIGEST = "7b5dd90e404e59cff52e98b8f65edc550ff2361f2492d17ca119613a0535e0b9"


def test_lava_netx_is_the_previous_default_bit_for_bit(shipped):
    import copy

    from conversion.quantise import quantise

    net = copy.deepcopy(shipped[0])
    f = quantise(net, shipped[1], sd_rule="lava-netx")
    assert [f[n]["state_exp"] for n in ("sd_in", "sd1", "sd2")] == [0, 2, 6] and f["_spec"]["sd_rule"] == 1
    assert _digest(f) == PREVIOUS_DEFAULT_DIGEST


def test_default_lava_keeps_the_budgets_on_the_shipped_stpn(shipped):
    import copy

    from conversion.quantise import quantise
    from conversion.synthetic import pong_like_frames

    net = copy.deepcopy(shipped[0])
    f = quantise(net, shipped[1])
    S = [f[n]["state_exp"] for n in ("sd_in", "sd1", "sd2")]
    # at the rule's headroom 1.5 (at 4 sd1 would need 2): sd1 for conv2's accumulator, sd2 for the plastic
    # layer's pre-activation
    assert S == [0, 1, 1], S
    mon = fx.OverflowMonitor()
    sim = Simulator(net, fixed=True, monitor=mon)
    for frame in pong_like_frames(50, seed=1):
        sim.step(frame[None])
    assert mon.counts == {}, mon.report()


def test_wrap_signed_is_lavas_24_bit_conv_clamp():
    lo, hi = -(1 << 23), (1 << 23) - 1
    x = np.array([0, 5, -5, hi, hi + 1, lo, lo - 1, 3 * (1 << 24) + 7, -(1 << 25) - 9], np.int64)
    assert fx.wrap_signed(x, 24).tolist() == [0, 5, -5, hi, lo, lo, hi, 7, -9]
    lava_utils = pytest.importorskip("lava.proc.conv.utils")
    assert np.array_equal(fx.wrap_signed(x, 24), lava_utils.signed_clamp(x, bits=24))


def test_reference_wraps_the_conv_output_of_lava_rule_layers_and_flags_it():
    """A random policy calibrated on 30 frames: its first frame's conv2 output leaves 24 bits; the
    reference wraps it as Lava's Conv does (so lava-fixed stays bit-identical) and the monitor
    records the step; the 'round' rule does not wrap."""
    from snn_agent.export import convert_with_calibration, load_source
    from conversion.synthetic import pong_like_frames

    from conversion.calibrate import Calibration
    from conversion.quantise import quantise

    policy, env_cfg, _ = load_source("random:0")
    net = convert_with_calibration(policy, env_cfg, calib_frames=30, log=lambda m: None)
    quantise(net, Calibration.from_dict(net.metadata["calibration"]), 1.5)     # the rule's first headroom
    mon = fx.OverflowMonitor()
    sim = Simulator(net, fixed=True, monitor=mon)
    assert sim.wrap_conv == {"conv1", "conv2"}
    for frame in pong_like_frames(3, seed=1):
        sim.step(frame[None])
    assert any(v == "du" for (_, v) in mon.counts), mon.report()
    assert all(abs(e.value) > fx.STATE_MAX for e in mon.events if e.variable == "du")
    assert not Simulator(net).wrap_conv                       # float: no wrap
    import copy

    round_net = copy.deepcopy(net)
    quantise(round_net, Calibration.from_dict(net.metadata["calibration"]), sd_rule="round")
    assert Simulator(round_net, fixed=True).wrap_conv == set()


def test_conversion_raises_the_headroom_where_a_conv_step_would_wrap():
    """The random policy wraps conv2's first-frame output at the lava rule's headroom 1.5 (previous
    test); mstpn convert's quantisation checks the calibration frames and takes the next headroom."""
    from conversion.quantise import LAVA_HEADROOMS, conv_wraps
    from conversion.synthetic import pong_like_frames
    from snn_agent.export import convert_with_calibration, load_source

    policy, env_cfg, _ = load_source("random:0")
    logs = []
    net = convert_with_calibration(policy, env_cfg, calib_frames=30, log=logs.append)
    hr = net.fixed["_spec"]["headroom_x1000"] / 1000
    assert hr in LAVA_HEADROOMS[1:] and any("leaves 24 bits" in m for m in logs)
    assert conv_wraps(net, pong_like_frames(3, seed=1)) == 0
