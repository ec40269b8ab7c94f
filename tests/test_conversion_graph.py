"""Conversion of small random policies to the declarative graph, and graph validation."""
import copy
import math

import numpy as np
import pytest
import torch

from conversion import graph as g
from conversion.convert import convert_policy, policy_arrays
from mstpn_base.errors import DataFormatError, ParameterError
from snn_agent.checkpoint import build_policy
from snn_agent.config import ModelConfig

torch.set_num_threads(1)


def small(kind="stpn", seed=0):
    return build_policy(ModelConfig(kind=kind, hidden=8, n_actions=3), seed=seed)


def test_sigma_delta_structure_and_parameters_copied_exactly():
    pol = small()
    net = convert_policy(pol)
    assert net.order == ["input", "sd_in", "scale", "conv1", "sd1", "conv2", "sd2", "flatten", "stpn", "h",
                         "pi", "v", "logits", "value"]
    assert ("h", "stpn") in net.edges and ("flatten", "stpn") in net.edges
    assert net.nodes["sd1"].out_shape == (16, 20, 20) and net.nodes["sd2"].out_shape == (32, 9, 9)
    st = net.nodes["stpn"]
    assert st.W.shape == (8, 2592 + 8) and st.post == "h" and math.isinf(st.f_max) and st.device is None
    # float64 copies of exactly the tensors the policy computes with
    for name, t in (("W", pol.core.W), ("b", pol.core.b), ("lam", pol.core.lam), ("gamma", pol.core.gamma)):
        assert np.array_equal(getattr(st, name), t.detach().double().numpy())
    assert np.array_equal(net.nodes["conv1"].weight, pol.torso[0].weight.detach().double().numpy())
    assert net.nodes["conv2"].stride == (2, 2) and net.nodes["conv1"].stride == (4, 4)
    assert np.array_equal(net.nodes["pi"].bias, pol.pi.bias.detach().double().numpy())
    assert net.metadata["n_actions"] == 3 and net.metadata["mode"] == "sigma_delta"
    assert all(np.all(net.nodes[n].threshold == 0) for n in net.of_type(g.SigmaDelta))


def test_mstpn_carries_bounds_and_device_parameters():
    pol = small("mstpn")
    net = convert_policy(pol)
    st = net.nodes["stpn"]
    m = pol.core.mapping
    assert st.f_max == pytest.approx(m.f_max) and math.isfinite(st.f_max)
    assert st.device["mapping"]["lam_min"] == m.lam_min
    assert st.device["params"]["schema"]  # DeviceParams.to_dict()
    assert np.all(st.lam >= m.lam_min - 1e-12) and np.all(st.lam <= m.lam_max + 1e-12)
    # the constrained (quantised) W, evaluated in float64 like the float64 reference policy
    assert np.array_equal(st.W, copy.deepcopy(pol).double().core.W.detach().numpy())


def test_rate_mode_structure():
    net = convert_policy(small(), mode="rate", rate_steps=16)
    assert [n for n in net.order if isinstance(net.nodes[n], g.RateIF)] == ["if1", "if2"]
    assert net.nodes["if1"].steps == 16 and "sd_in" not in net.nodes


def test_lstm_policy_is_rejected():
    with pytest.raises(ParameterError, match="only STPN"):
        policy_arrays(build_policy(ModelConfig(kind="lstm", hidden=8, n_actions=3)))


def _tiny_nodes():
    return {"input": g.Input((1, 2, 2)), "sd": g.SigmaDelta("relu", np.zeros((1, 2, 2))), "flat": g.Flatten((1, 2, 2)),
            "fc": g.Affine(np.ones((2, 4)), np.zeros(2)), "out": g.Output((2,))}


def test_validation_errors_name_the_problem():
    edges = [("input", "sd"), ("sd", "flat"), ("flat", "fc"), ("fc", "out")]
    g.Network(_tiny_nodes(), edges)
    with pytest.raises(DataFormatError, match="does not exist: 'nope'"):
        g.Network(_tiny_nodes(), edges + [("fc", "nope")])
    with pytest.raises(DataFormatError, match="goes backwards"):
        g.Network(_tiny_nodes(), edges + [("out", "sd")])
    with pytest.raises(DataFormatError, match="duplicate edge"):
        g.Network(_tiny_nodes(), edges + [("fc", "out")])
    nodes = _tiny_nodes()
    nodes["fc"] = g.Affine(np.ones((2, 5)), np.zeros(2))
    with pytest.raises(DataFormatError, match=r"'fc' expects input shape \(5,\).*gives \(4,\)"):
        g.Network(nodes, edges)
    with pytest.raises(DataFormatError, match="exactly one feed-forward input"):
        g.Network(_tiny_nodes(), edges[1:])


def test_node_parameter_errors():
    with pytest.raises(ParameterError, match=r"NaN/inf \(first at index \(0, 1\)\)"):
        g.Affine(np.array([[1.0, np.nan]]), np.zeros(1))
    with pytest.raises(ParameterError, match="bias has shape"):
        g.Affine(np.ones((2, 3)), np.zeros(3))
    with pytest.raises(ParameterError, match="activation"):
        g.SigmaDelta("sigmoid", np.zeros(2))
    with pytest.raises(ParameterError, match=">= 0"):
        g.SigmaDelta("relu", -np.ones(2))
    with pytest.raises(ParameterError, match="lam has shape"):
        g.PlasticSTPN(np.ones((2, 5)), np.zeros(2), np.ones((2, 4)), np.ones((2, 5)), post="h")
    with pytest.raises(ParameterError, match="f_max"):
        g.PlasticSTPN(np.ones((2, 5)), np.zeros(2), np.ones((2, 5)), np.ones((2, 5)), post="h", f_max=0.0)
