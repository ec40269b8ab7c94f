"""The plastic layer on device pairs (conversion.device_layer) in the reference simulator and in
PyTorch (snn_agent.device_stpn).

Tolerances: 1e-9 (absolute, weight units) for the ideal limit and for NumPy vs PyTorch, both in
float64; the differences are float rounding of the conductance round trip (w -> G -> w, relative
~1e-16 per step).
"""
import numpy as np
import pytest
import torch

from conversion import device_layer as dl
from conversion import nirfile
from conversion.convert import convert_policy
from conversion.simulator import Simulator, run_sequence
from conversion.synthetic import pong_like_frames
from mstpn_base.ops import NUMPY
from snn_agent.checkpoint import build_policy
from snn_agent.config import ModelConfig
from snn_agent.device_stpn import DeviceSTPN

from device_scenarios import small_mstpn

torch.set_num_threads(1)
TOL = 1e-9
FRAMES = pong_like_frames(100, seed=1)[:, None]


@pytest.fixture(scope="module")
def mstpn():
    """A small m-STPN (H = 8) with large plasticity, so that F reaches the bound f_max."""
    pol = small_mstpn()
    net = convert_policy(pol)
    net.nodes["stpn"].gamma = net.nodes["stpn"].gamma * 40.0   # beyond the device's pulse range
    return pol, net


def _ideal_mapping(net):
    mp = net.nodes["stpn"].device["mapping"]
    p = dl.ideal_params(lam_lo=0.5, lam_hi=0.999, dt=mp["dt_s"], g_st_max=5e-9)
    return dl.Mapping(p, dt=mp["dt_s"], w_max=mp["w_max"])


def test_ideal_device_equals_the_ideal_rule(mstpn):
    _, net = mstpn
    m = _ideal_mapping(net)
    assert m.f_max == pytest.approx(net.nodes["stpn"].f_max, rel=1e-15)
    ideal, dev = Simulator(net), Simulator(net, synapses="device", device=m)
    a = run_sequence(ideal, FRAMES, record=("stpn",))
    b = run_sequence(dev, FRAMES, record=("stpn",))
    F_i, F_d = ideal.state["stpn"]["F"], dev.state["stpn"]["F"]
    assert np.max(np.abs(a["stpn"] - b["stpn"])) < TOL
    assert np.max(np.abs(a["logits"] - b["logits"])) < TOL
    assert np.max(np.abs(F_i - F_d)) < TOL
    assert np.isclose(np.abs(F_i).max(), net.nodes["stpn"].f_max)     # the bound was reached and equals
    assert dev.devices["stpn"].n_lam_clipped == 0


def test_default_device_differs_and_respects_bounds(mstpn):
    _, net = mstpn
    m = dl.Mapping.from_block(net.nodes["stpn"].device)
    sim = Simulator(net, synapses="device")
    run_sequence(sim, FRAMES[:40])
    st, p = sim.state["stpn"], m.params
    for side in dl.SIDES:
        assert st[f"g_st_{side}"].min() >= 0 and st[f"g_st_{side}"].max() <= p.g_st_max
    assert np.abs(st["F"]).max() <= m.f_max * (1 + 1e-12)
    ideal = Simulator(net)
    run_sequence(ideal, FRAMES[:40])
    assert np.max(np.abs(ideal.state["stpn"]["F"] - st["F"])) > 1e-3     # facilitation, history, noise


def test_same_seed_same_result_other_seed_differs(mstpn):
    _, net = mstpn
    m = dl.Mapping.from_block(net.nodes["stpn"].device)
    runs = {}
    for key, seed in (("a", 5), ("b", 5), ("c", 6)):
        sim = Simulator(net, synapses="device", device=m.replace(seed=seed))
        runs[key] = (run_sequence(sim, FRAMES[:20])["logits"], sim.state["stpn"]["F"], sim.devices["stpn"])
    assert np.array_equal(runs["a"][1], runs["b"][1]) and np.array_equal(runs["a"][0], runs["b"][0])
    assert np.array_equal(runs["a"][2].sides["p"]["a_st"], runs["b"][2].sides["p"]["a_st"])
    assert not np.array_equal(runs["a"][2].sides["p"]["a_st"], runs["c"][2].sides["p"]["a_st"])
    assert np.max(np.abs(runs["a"][1] - runs["c"][1])) > 0


def test_finite_levels_give_discrete_conductances():
    p = dl.ideal_params(n_levels=5)
    m = dl.Mapping(p)
    W = np.linspace(-1.2, 1.2, 41).reshape(1, -1)
    g = dl.long_term(NUMPY, m, W)
    levels = p.g_min + np.arange(5) * (p.g_max - p.g_min) / 4
    for side in dl.SIDES:
        assert np.all(np.min(np.abs(g[side][..., None] - levels), axis=-1) < 1e-22)
    w = dl.read_weight(m, g["p"], g["m"])
    assert np.allclose(w / 0.25, np.round(w / 0.25), atol=1e-9) and np.abs(w).max() == pytest.approx(1.0)


def test_numpy_and_torch_device_layers_agree(mstpn):
    pol, net = mstpn
    net2 = convert_policy(pol)                           # the policy's own gamma (not scaled)
    m = dl.Mapping.from_block(net2.nodes["stpn"].device)
    sim = Simulator(net2, synapses="device", device=m)
    r = run_sequence(sim, FRAMES, record=("flatten", "stpn"))
    layer, st, pre = DeviceSTPN(pol.core, m), None, []
    n_pulses = 0
    with torch.no_grad():
        for t in range(len(FRAMES)):
            _, st, ex = layer(torch.as_tensor(r["flatten"][t]), st)
            pre.append(ex["pre"].numpy())
            n_pulses += int(ex["potentiating"] + ex["depressing"])
    assert np.max(np.abs(np.stack(pre) - r["stpn"])) < TOL
    assert np.max(np.abs(st.F.numpy() - sim.state["stpn"]["F"])) < TOL
    assert n_pulses == sim.device_stats["stpn"]["pulses"] > 0


def test_torch_layer_is_differentiable_in_w_and_gamma(mstpn):
    pol, net = mstpn
    layer = DeviceSTPN(pol.core, dl.Mapping.from_block(net.nodes["stpn"].device))
    x = torch.rand(2, pol.core.input_size, dtype=torch.float64)
    h, st, _ = layer(x)
    h, st, _ = layer(x, st)
    (h.sum() + st.F.sum()).backward()
    assert pol.core.gamma_raw.grad.abs().sum() > 0 and pol.core.w_raw.grad.abs().sum() > 0
    pol.core.zero_grad()


def test_file_round_trip_keeps_the_device_block(mstpn, tmp_path):
    _, net = mstpn
    block = dl.Mapping.from_block(net.nodes["stpn"].device).replace(seed=17, compensate_history=True).to_block()
    net.nodes["stpn"].device = block
    nirfile.write_network(tmp_path / "net.nir", net)
    back = nirfile.read_network(tmp_path / "net.nir").nodes["stpn"].device
    import json

    assert json.dumps(back, sort_keys=True) == json.dumps(block, sort_keys=True)
    assert dl.Mapping.from_block(back) == dl.Mapping.from_block(block)


def test_bad_device_block_is_a_format_error():
    from mstpn_base.errors import DataFormatError

    good = dl.Mapping().to_block()
    for bad in ({**good, "version": 99}, {**good, "seed": -1}, {**good, "mapping": {**good["mapping"], "f_max": 3.0}},
                {**good, "extra": 1}, "x"):
        with pytest.raises(DataFormatError):
            dl.Mapping.from_block(bad)


def test_counted_pulses_equal_nonzero_hebbian_updates():
    """From fresh devices (F = 0) the only change is gamma h z^T: one pulse per nonzero product."""
    m = dl.Mapping(dl.ideal_params())
    H, K = 3, 5
    W = np.full((H, K), 0.2)
    devs = dl.build(m, W, np.full((H, K), 0.9))
    gamma = np.array([[0.01, 0.0, -0.02, 0.01, 0.0]] * H)
    h = np.array([[0.5, -0.5, 0.0]])[:, :, None]
    z = np.array([[1.0, 1.0, 1.0, 0.0, -1.0]])[:, None, :]
    norm = np.ones((1, H, 1)) * 2.0
    new, F, pulses = dl.plasticity(NUMPY, m, devs.arrays(), dl.init_state((1, H, K)), norm, h, z, gamma)
    hebb = gamma * h * z
    tally = dl.pulse_tally(m, pulses)
    assert int(tally["potentiating"] + tally["depressing"]) == np.count_nonzero(hebb) == 4
    # fresh pairs: a positive change potentiates the plus device, a negative one the minus device
    assert int(tally["potentiating"]) == 4 and int(tally["depressing"]) == 0
    assert np.array_equal(pulses["p"][0] > 0, hebb > 0) and np.array_equal(pulses["m"][0] > 0, hebb < 0)
    assert np.max(np.abs(F - hebb)) < 1e-15
    assert float(tally["energy_J"]) > 0


def test_simulator_rejects_device_mode_without_block():
    pol = build_policy(ModelConfig(kind="stpn", hidden=4, n_actions=3), seed=0)
    from mstpn_base.errors import ParameterError

    with pytest.raises(ParameterError):
        Simulator(convert_policy(pol), synapses="device")
    with pytest.raises(ParameterError):
        Simulator(convert_policy(pol), synapses="exotic")


@pytest.mark.parametrize("compile", [False, True], ids=["eager", "compiled"])
def test_torch_runner_runs_the_device_model_like_numpy(mstpn, compile):
    """The registry's runners with synapses="device": torch (eager and torch.compile'd device step)
    equals the NumPy reference on 100 frames: logits and read-back F within 1e-9, same actions,
    the same counted pulses and energies (1e-12 relative)."""
    from mstpn_base import registry

    pol, net = mstpn
    net = convert_policy(pol)
    a = registry.make_runner("numpy", net, synapses="device")
    b = registry.make_runner("torch", net, synapses="device", compile=compile)
    for r in (a, b):
        r.reset()
    la, lb = zip(*((a.step(f).logits, b.step(f).logits) for f in FRAMES))
    assert np.max(np.abs(np.array(la) - np.array(lb))) < TOL
    assert np.array_equal(np.argmax(la, -1), np.argmax(lb, -1))
    F_torch = b.state.F.numpy()
    assert np.max(np.abs(F_torch - a.sim.state["stpn"]["F"])) < TOL and np.abs(F_torch).max() > 0
    sa, sb = a.device_stats["stpn"], b.device_stats["stpn"]
    assert sa["pulses"] == sb["pulses"] > 0 and sa["device_steps"] == sb["device_steps"] == len(FRAMES)
    for k in ("pulse_energy_J", "bias_energy_J", "duration_s"):
        assert sb[k] == pytest.approx(sa[k], rel=1e-12)


def test_backends_without_the_device_model_say_so(mstpn):
    from mstpn_base import registry

    _, net = mstpn
    assert {"numpy", "torch"} <= set(registry.synapse_backends("device"))
    no = [n for n in registry.network_backends() if n not in registry.synapse_backends("device")]
    with pytest.raises(registry.SynapseModelError, match="does not run the 'device' synapse model"):
        registry.make_runner(no[0], net, synapses="device")
