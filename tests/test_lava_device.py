"""The plastic layer on memristor device pairs inside the converted Lava graph (backends ``lava`` and
``lava-fixed``, ``synapses="device"``), against the NumPy reference runners (``numpy`` and
``numpy-fixed``, ``synapses="device"``).

Network: a small m-STPN (H = 8, the ``mstpn`` network of tests/test_device_layer.py); sequence: 100
frames of conversion.synthetic.pong_like_frames; devices with variability and cycle-to-cycle
noise (the file's device block, or a mapping with stuck devices).  Tolerances: every device
state (g_st, r, q per side, read from the Lava Vars of the DeviceLayer process) within 1e-6
relative of the reference (the project's cross-backend tolerance; same float64 operations, so
observed equal), logits within 1e-9 absolute, the same action on every frame, the same counted
pulses (exactly) and energies (1e-6 relative).  Fixed point (the same network calibrated on 20
frames and quantised, 24 frames in one Lava run): every integer exactly.
"""
import numpy as np
import pytest

from conversion import device_layer as dl
from conversion.backend import UnsupportedNetworkError
from conversion.convert import convert_policy
from conversion.synthetic import pong_like_frames
from mstpn_base import registry
from snn_agent.checkpoint import build_policy
from snn_agent.config import ModelConfig

from device_scenarios import small_mstpn
from lava_available import needs_lava

pytestmark = needs_lava
FRAMES = pong_like_frames(100, seed=1)
RTOL = 1e-6
LOGIT_TOL = 1e-9
RESET_AT = 60           # a new episode here: fresh devices, the cycle-to-cycle step index goes on


@pytest.fixture(scope="module")
def net():
    """The small m-STPN of tests/test_device_layer.py (large plasticity)."""
    return convert_policy(small_mstpn())


def _state_numpy(runner) -> dict:
    st = runner.sim.state["stpn"]
    return {f"{v}_{side}": st[f"{v}_{side}"][0] for side in dl.SIDES for v in dl.DEVICE_STATE}


def _check_stats(got, want):
    assert set(got) == set(want)
    for k in ("pulses", "potentiating", "depressing", "device_steps"):
        assert got[k] == want[k], k
    for k in ("pulse_energy_J", "bias_energy_J", "duration_s"):
        assert got[k] == pytest.approx(want[k], rel=RTOL), k


def test_lava_device_runner_equals_numpy(net):
    """100 frames with a reset at frame 60: same action on every frame, logits within 1e-9, every
    conductance g_st (and r, q) per side within 1e-6 relative, the same pulses and energies."""
    m = dl.Mapping.from_block(net.nodes["stpn"].device)
    assert m.variability and dl.c2c_noise(m, 0, (1, 1)) is not None      # d2d and c2c draws both matter
    want = registry.make_runner("numpy", net, synapses="device")
    got = registry.make_runner("lava", net, synapses="device")
    try:
        la, lb = [], []
        for t, frame in enumerate(FRAMES):
            if t == RESET_AT:
                want.reset()
                got.reset()
            la.append(want.step(frame).logits)
            lb.append(got.step(frame).logits)
        la, lb = np.array(la), np.array(lb)
        assert np.array_equal(np.argmax(la, -1), np.argmax(lb, -1))
        assert np.max(np.abs(la - lb)) < LOGIT_TOL
        ref, lava = _state_numpy(want), got.device_state("stpn")
        assert set(lava) == set(ref)
        for k, v in ref.items():
            np.testing.assert_allclose(lava[k], v, rtol=RTOL, atol=0, err_msg=k)
        assert ref["g_st_p"].max() > 0 and ref["g_st_m"].max() > 0
        sa, sb = want.device_stats["stpn"], got.device_stats["stpn"]
        _check_stats(sb, sa)
        assert sa["pulses"] > 0 and sb["device_steps"] == len(FRAMES)
    finally:
        got.close()
    _check_stats(got.device_stats["stpn"], want.device_stats["stpn"])   # kept after close


def test_device_state_is_held_in_lava_vars(net):
    """The device state lives in the Vars of the DeviceLayer process: after 30 frames they hold
    the reference's state (1e-6 relative); zeroing g_st of both sides through Var.set() changes
    the next frames exactly as zeroing it in the reference does (1e-6 relative, 1e-9 logits),
    and differently from an untouched reference.  Mapping with 10 % stuck devices."""
    from lava_procs.memristor.layer import DeviceLayer

    m = dl.Mapping.from_block(net.nodes["stpn"].device).replace(seed=7, stuck_fraction=0.1)
    want = registry.make_runner("numpy", net, synapses="device", device=m)
    plain = registry.make_runner("numpy", net, synapses="device", device=m)
    got = registry.make_runner("lava", net, synapses="device", device=m)
    try:
        for frame in FRAMES[:30]:
            want.step(frame), plain.step(frame), got.step(frame)
        proc = got.device_layers["stpn"]
        assert isinstance(proc, DeviceLayer)
        live = np.asarray(proc.live_p.get())
        assert 0 < np.count_nonzero(live == 0) < live.size      # stuck devices are there
        for side in dl.SIDES:
            for v in dl.DEVICE_STATE:
                np.testing.assert_allclose(getattr(proc, f"{v}_{side}").get(), want.sim.state["stpn"][f"{v}_{side}"][0],
                                           rtol=RTOL, atol=0, err_msg=f"{v}_{side}")
        for side in dl.SIDES:
            getattr(proc, f"g_st_{side}").set(np.zeros(proc.g_st_p.shape))
            want.sim.state["stpn"][f"g_st_{side}"][:] = 0.0
        la, lb, lp = [], [], []
        for frame in FRAMES[30:40]:
            la.append(want.step(frame).logits)
            lb.append(got.step(frame).logits)
            lp.append(plain.step(frame).logits)
        assert np.max(np.abs(np.array(la) - np.array(lb))) < LOGIT_TOL
        assert np.max(np.abs(np.array(la) - np.array(lp))) > 1e-6      # the zeroed state mattered
        for k, v in _state_numpy(want).items():
            np.testing.assert_allclose(got.device_state("stpn")[k], v, rtol=RTOL, atol=0, err_msg=k)
        _check_stats(got.device_stats["stpn"], want.device_stats["stpn"])
    finally:
        got.close()


@pytest.fixture(scope="module")
def fixed_net():
    """The small m-STPN with fixed-point parameters (calibrated and quantised as conversion does)."""
    from conversion.calibrate import calibrate
    from conversion.quantise import quantise

    net = convert_policy(small_mstpn())
    quantise(net, calibrate(net, pong_like_frames(20, seed=2)))
    return net


def test_lava_fixed_runs_the_device_model(fixed_net):
    """lava-fixed runs synapses="device" (the registry lists it), and keeps a one-line error for an
    unknown synapse model."""
    from lava_procs.network import make_fixed_runner

    assert {"lava", "lava-fixed"} <= set(registry.synapse_backends("device"))
    runner = make_fixed_runner(fixed_net, synapses="device")
    try:
        assert set(runner.device_layers) == {"stpn"}
    finally:
        runner.close()
    with pytest.raises(registry.SynapseModelError) as exc:
        make_fixed_runner(fixed_net, synapses="memristor")
    assert "\n" not in str(exc.value)


FIXED_FRAMES = 24


def test_lava_fixed_device_equals_numpy_fixed_bit_for_bit(fixed_net):
    """24 frames in one Lava run, 10 % stuck devices, variability and cycle-to-cycle noise: every
    layer's integers on every frame, F and z (the plastic layer's Vars), every device state integer
    (the DeviceLayer's Vars) and the pulse counters equal numpy-fixed with synapses="device"."""
    net = fixed_net
    m = dl.Mapping.from_block(net.nodes["stpn"].device).replace(seed=7, stuck_fraction=0.1)
    frames = FRAMES[:FIXED_FRAMES]
    want = registry.make_runner("numpy-fixed", net, synapses="device", device=m)
    ref = [want.step(f) for f in frames]
    got = registry.make_runner("lava-fixed", net, synapses="device", device=m)
    try:
        out = got.run_frames(frames)
        st = want.sim.state["stpn"]
        for k in ref[0].raw:
            for t, (a, b) in enumerate(zip(out, ref)):
                assert a.raw[k].dtype == np.int64
                assert np.array_equal(a.raw[k], b.raw[k]), (k, t)
        for v in ("F", "z"):
            assert np.array_equal(np.asarray(got.plastic_state(v), np.int64), st[v][0]), v
        assert np.count_nonzero(st["F"][0]) > 0
        lava = got.device_state("stpn")
        for k, v in _state_numpy(want).items():
            assert np.array_equal(np.asarray(lava[k], np.int64), v), k
        assert st["g_st_p"].max() > 0 and st["g_st_m"].max() > 0
        sa, sb = want.device_stats["stpn"], got.device_stats["stpn"]
        for k in ("pulses", "potentiating", "depressing", "device_steps"):
            assert sb[k] == sa[k], k
        for k in ("pulse_energy_J", "bias_energy_J", "duration_s"):
            assert sb[k] == pytest.approx(sa[k], rel=RTOL), k
        assert sa["pulses"] > 0 and sb["device_steps"] == FIXED_FRAMES
    finally:
        got.close()


def test_device_model_needs_a_device_block():
    net = convert_policy(build_policy(ModelConfig(kind="stpn", hidden=8, n_actions=3), seed=3).double())
    with pytest.raises(UnsupportedNetworkError, match="no device block"):
        registry.make_runner("lava", net, synapses="device")
