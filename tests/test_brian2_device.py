"""The plastic layer as memristor device pairs inside the converted Brian2 network
(``brian_models.network``, ``synapses="device"``) against the NumPy reference
(``registry.make_runner("numpy", net, synapses="device")``).

Network: the small m-STPN of tests/test_device_layer.py (H = 8, K = 2600: 20,800 synapses, 41,600
devices) with gamma x 40, so that both devices of a pair get pulses and F nears f_max.  Frames:
synthetic Pong-like frames (conversion.synthetic.pong_like_frames, seed 1): **all 100 on Brian2's
numpy target in this test** (about 30 s of CPU); the cython target runs 20 here (its first run
compiles the network); scripts/brian2_device_check.py runs all 100 frames on both targets and times
the shipped m-STPN (results/brian2_device).

Tolerances: every g_st (per side, per device) within 1e-6 relative (element by element, atol 0),
r and q likewise; the read-back F and the logits within 1e-9 absolute; the same action on every
frame; the same pulse counts (exact); energies within 1e-9 relative.  What differs is float
rounding: Brian2 sums the row norm and G z in another order than NumPy's BLAS (~1e-16 relative in
N); the exact inversion of a change that nearly empties a device (g_st - k g_st with k ~ 1)
magnifies it in the smallest conductances (1e-28 S) to ~3e-8 relative; energies are summed per
synapse first (~1e-11).  A modelling difference (a missed or doubled relaxation, another split,
another draw) shows up at >= 1e-3.
"""
import numpy as np
import pytest

from conversion import device_layer as dl
from conversion.backend import UnsupportedNetworkError
from conversion.convert import convert_policy
from conversion.simulator import DEVICE_COUNTERS
from conversion.synthetic import pong_like_frames
from memristor import equations as eq
from mstpn_base import registry
from snn_agent.checkpoint import build_policy
from snn_agent.config import ModelConfig

from device_scenarios import small_mstpn

brian2 = pytest.importorskip("brian2")
from brian_models import network as bnet  # noqa: E402
from brian_models.memristor_synapse import pair_equations  # noqa: E402

pytestmark = pytest.mark.brian2

FRAMES = pong_like_frames(100, seed=1)
RTOL, ATOL_F, RTOL_ENERGY = 1e-6, 1e-9, 1e-9


@pytest.fixture(scope="module")
def net():
    """The small m-STPN of tests/test_device_layer.py (gamma x 40)."""
    net = convert_policy(small_mstpn())
    net.nodes["stpn"].gamma = net.nodes["stpn"].gamma * 40.0
    return net


def _mapping(net, **changes):
    return dl.Mapping.from_block(net.nodes["stpn"].device).replace(**changes)


def _run_both(net, frames, backend="brian2", mapping=None, reset_at=None):
    """The NumPy reference and ``backend`` with the device model on ``frames`` (reset before frame
    ``reset_at``); returns (reference runner, Brian2 runner, logits of both)."""
    a = registry.make_runner("numpy", net, synapses="device", device=mapping)
    b = registry.make_runner(backend, net, synapses="device", device=mapping)
    la, lb = [], []
    for t, f in enumerate(frames):
        if t == reset_at:
            a.reset()
            b.reset()
        la.append(a.step(f).logits)
        lb.append(b.step(f).logits)
    return a, b, np.array(la), np.array(lb)


def _assert_equal(a, b, la, lb, n_frames):
    """Every device's state, F, logits, actions and the counted pulses and energies agree."""
    st, got = a.sim.state["stpn"], b.device_state()
    for side in dl.SIDES:
        for v in dl.DEVICE_STATE:
            want = st[f"{v}_{side}"][0]
            np.testing.assert_allclose(got[side][v], want, rtol=RTOL, atol=0, err_msg=f"{v}_{side}")
    assert np.abs(st["g_st_p"]).max() > 0 and np.abs(st["g_st_m"]).max() > 0
    np.testing.assert_allclose(b.read_back_F(), st["F"][0], rtol=0, atol=ATOL_F)
    np.testing.assert_allclose(lb, la, rtol=0, atol=ATOL_F)
    assert np.array_equal(np.argmax(la, -1), np.argmax(lb, -1))
    sa, sb = a.device_stats["stpn"], b.device_stats["stpn"]
    assert set(sb) == set(DEVICE_COUNTERS)
    for k in ("pulses", "potentiating", "depressing", "device_steps"):
        assert sb[k] == sa[k], k
    assert sa["pulses"] > 0 and sa["device_steps"] == n_frames
    for k in ("pulse_energy_J", "bias_energy_J", "duration_s"):
        assert sb[k] == pytest.approx(sa[k], rel=RTOL_ENERGY), k


def test_numpy_target_equals_the_reference_on_100_frames(net):
    a, b, la, lb = _run_both(net, FRAMES)
    _assert_equal(a, b, la, lb, len(FRAMES))
    split = (a.sim.state["stpn"]["g_st_p"] > 0) & (a.sim.state["stpn"]["g_st_m"] > 0)
    assert split.any()                                   # pairs whose both devices hold a volatile part
    assert np.abs(a.sim.state["stpn"]["F"]).max() > 0.5 * a.sim.devices["stpn"].mapping.f_max


@pytest.mark.slow
def test_cython_target_equals_the_reference(net):
    a, b, la, lb = _run_both(net, FRAMES[:20], backend="brian2-cython")
    assert b.name == "brian2-cython"
    _assert_equal(a, b, la, lb, 20)


@pytest.mark.parametrize("changes", [
    dict(compensate_history=True, t_pulse_max=1e-3, stuck_fraction=0.05),   # history in the inversion, cap, stuck
    dict(noise=False, variability=False, seed=7),                            # no draws at all
], ids=["history-cap-stuck", "no-variability"])
def test_mapping_variants_and_reset(net, changes):
    """Other branches of the one definition (each a different generated code), and a reset in the
    middle: the state starts afresh, the counts and the c2c step index run on, as NumPy's."""
    m = _mapping(net, **changes)
    a, b, la, lb = _run_both(net, FRAMES[:12], mapping=m, reset_at=6)
    _assert_equal(a, b, la, lb, 12)
    if m.stuck_fraction:
        assert a.sim.devices["stpn"].summary()["stuck_devices"] > 0


def test_brian2_code_is_generated_from_the_device_layer(net, monkeypatch):
    """The pathway code names what conversion.device_layer.plasticity computes; a changed
    definition or parameter changes it, and both the reference and Brian2 follow the change."""
    m = _mapping(net)
    st = net.nodes["stpn"]
    devs = dl.build(m, st.W, st.lam)
    code = pair_equations(devs, z="sent_pre").code
    for piece in ("ret_g_st_p", "rownorm_post", "gamma", "dev_g_st_max", "map_s_ref", "dev_beta_t", "map_t_max",
                  "map_s_max", "a_st_p", "dev_ppf_gain", "dev_meta_depletion", "c2c_p", "e_pulse +=", "g_st_m ="):
        assert piece in code, piece
    # a parameter: the namespace the code reads, and the structure where a parameter shapes the code
    other = pair_equations(dl.build(m.replace(params=m.params.replace(g_st_max=4e-9)), st.W, st.lam))
    assert other.namespace["dev_g_st_max"] == 4e-9 and other.code == code
    assert "live_p" in pair_equations(dl.build(m.replace(stuck_fraction=0.1), st.W, st.lam)).code
    assert "c2c_p" not in pair_equations(dl.build(m.replace(noise=False), st.W, st.lam)).code
    # a definition: availability mu = 1 - q becomes 1 - 0.5 q in memristor.equations only
    before = registry.make_runner("numpy", net, synapses="device")
    for f in FRAMES[:8]:
        before.step(f)
    monkeypatch.setattr(eq, "availability", lambda p, q: 1.0 - 0.5 * q)
    changed = pair_equations(devs, z="sent_pre").code
    assert changed != code and "(1.0 - (0.5 * " in changed
    a, b, la, lb = _run_both(net, FRAMES[:8])
    _assert_equal(a, b, la, lb, 8)
    diff = np.abs(a.sim.state["stpn"]["g_st_p"] - before.sim.state["stpn"]["g_st_p"]).max()
    assert diff > 1e-3 * np.abs(before.sim.state["stpn"]["g_st_p"]).max()      # the change is real


def test_registry_declares_the_device_model_on_brian2(net):
    assert {"brian2", "brian2-cython"} <= set(registry.synapse_backends("device"))
    assert "brian2-standalone" not in registry.synapse_backends("device")
    with pytest.raises(registry.SynapseModelError):
        registry.make_runner("brian2-standalone", net, synapses="device")
    with pytest.raises(UnsupportedNetworkError, match="ideal synapse model only"):
        bnet.make_standalone_runner(net, synapses="device")
    plain = convert_policy(build_policy(ModelConfig(kind="stpn", hidden=4, n_actions=3), seed=0))
    with pytest.raises(UnsupportedNetworkError, match="no device block"):
        registry.make_runner("brian2", plain, synapses="device")
    ideal = registry.make_runner("brian2", net)
    assert ideal.device_stats == {} and ideal.synapses == "ideal"


def test_common_subexpressions_keep_the_values():
    """The CSE pass of brian_models.codegen binds repeated groups, never a call's argument list,
    and the statements compute the same values (evaluated here as Python)."""
    from brian_models.codegen import Brian2Ops, Sym, common_subexpressions

    lines = ["a = ((x + y) * (x - y)) + abs(x + y)", "b = (x + y) / ((x + y) * (x - y))", "c = a * b"]
    out = common_subexpressions(lines, min_length=1)
    assert out[0] == "cse_2 = (x + y)" and any("abs(x + y)" in line for line in out)

    def run(code):
        env = {"x": 1.7, "y": -0.4, "abs": abs}
        for line in code:
            name, expr = line.split(" = ", 1)
            env[name] = eval(expr, {}, env)
        return env["a"], env["b"], env["c"]

    assert run(out) == run(lines)
    ops = Brian2Ops(bind=True)
    w = ops.where(Sym("u") > 0, Sym("u"), 0.0)
    assert ops.where(Sym("u") > 0, Sym("u"), 0.0).code == w.code         # the same operation: one temporary
    assert ops.let("k", w).code == "k" and ops.let("k", w).code == "k_2"  # unique names
