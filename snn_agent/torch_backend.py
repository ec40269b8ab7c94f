"""Backend ``torch``: the PyTorch policy rebuilt from a converted network's weights (float64).

It is the reference every other backend is compared against (:mod:`conversion.backend` gives the
runner contract).  The layer values it reports are named after the converted network's layers.
"""
from __future__ import annotations

import numpy as np
import torch

from conversion import graph as g
from conversion.backend import StepOut, UnsupportedNetworkError, layer_names, logits_node
from snn_agent.config import ModelConfig
from snn_agent.policy import Policy

#: converted-network node -> the policy module that carries its weights
_NODES = {"conv1": g.Conv2d, "conv2": g.Conv2d, "stpn": g.PlasticSTPN, "pi": g.Affine, "v": g.Affine}


def policy_from_network(net) -> Policy:
    """A float64 :class:`snn_agent.policy.Policy` carrying the weights of the converted ``net``
    (nodes conv1, conv2, stpn, pi, v of conversion.convert.build_network)."""
    for k, kind in _NODES.items():
        if not isinstance(net.nodes.get(k), kind):
            raise UnsupportedNetworkError(f"the torch backend rebuilds the Pong policy and needs node {k!r} "
                                          f"of kind {kind.__name__}")
    st = net.nodes["stpn"]
    if np.isfinite(st.f_max):
        raise UnsupportedNetworkError("the torch backend rebuilds a plain STPN; this network bounds F (m-STPN)")
    policy = Policy(ModelConfig(kind="stpn", hidden=st.hidden_size, n_actions=net.nodes["pi"].weight.shape[0]))
    policy = policy.double().eval()
    t = lambda a: torch.as_tensor(np.asarray(a, np.float64))  # noqa: E731
    with torch.no_grad():
        for mod, k in ((policy.torso[0], "conv1"), (policy.torso[2], "conv2"), (policy.pi, "pi"), (policy.v, "v")):
            mod.weight.copy_(t(net.nodes[k].weight))
            mod.bias.copy_(t(net.nodes[k].bias))
        for key in ("W", "b", "lam", "gamma"):
            getattr(policy.core, key).copy_(t(getattr(st, key)))
    return policy


class TorchRunner:
    """The PyTorch policy (float64), one frame at a time."""

    name = "torch"

    def __init__(self, net, policy=None):
        self.net = net
        self.policy = policy.double().eval() if policy is not None else policy_from_network(net)
        self.state = None
        self.logits_name = logits_node(net)
        self.layers = set(layer_names(net))

    def reset(self):
        self.state = None

    def step(self, obs) -> StepOut:
        with torch.no_grad():
            x = torch.as_tensor(np.asarray(obs, np.float64)).reshape(1, 1, 84, 84)
            feats1 = torch.relu(self.policy.torso[0](x / 255.0))
            logits, value, self.state, extras = self.policy(x, self.state)
        # the same quantities under the converted network's layer names (sigma-delta or rate form)
        acts = {"sd_in": x.reshape(-1), "sd1": feats1.reshape(-1), "sd2": extras["features"][0],
                "if1": feats1.reshape(-1), "if2": extras["features"][0],
                "h": extras["h"][0], self.logits_name: logits[0], "value": value.reshape(-1)}
        acts = {k: v.numpy().astype(np.float64).copy() for k, v in acts.items() if k in self.layers}
        return StepOut(logits[0].numpy().copy(), acts)

    def close(self):
        pass


def make_runner(net, policy=None, **_):
    return TorchRunner(net, policy)
