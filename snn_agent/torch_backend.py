"""Backend ``torch``: the PyTorch policy rebuilt from a converted network's weights (float64).

It is the reference every other backend is compared against (:mod:`conversion.backend` gives the
runner contract).  The layer values it reports are named after the converted network's layers.
With ``synapses="device"`` the plastic layer runs on device pairs (:class:`snn_agent.device_stpn.DeviceSTPN`,
the equations of :mod:`conversion.device_layer`, the devices and noise draws of the mapping's seed);
``compile=True`` fuses its elementwise device step with torch.compile.
"""
from __future__ import annotations

import numpy as np
import torch

from conversion import device_layer as dl
from conversion import graph as g
from conversion.backend import StepOut, UnsupportedNetworkError, layer_names, logits_node
from conversion.simulator import DEVICE_COUNTERS
from snn_agent.config import ModelConfig
from snn_agent.device_stpn import DeviceSTPN
from snn_agent.policy import Policy

#: converted-network node -> the policy module that carries its weights
_NODES = {"conv1": g.Conv2d, "conv2": g.Conv2d, "stpn": g.PlasticSTPN, "pi": g.Affine, "v": g.Affine}


def policy_from_network(net, synapses: str = "ideal", device=None, compile: bool = False) -> Policy:
    """A float64 :class:`snn_agent.policy.Policy` carrying the weights of the converted ``net``
    (nodes conv1, conv2, stpn, pi, v of conversion.convert.build_network).  The STPN rule bounds F
    by the node's f_max (m-STPN); ``synapses="device"`` puts the plastic layer on device pairs
    with ``device`` (a Mapping or block; None: the node's device block)."""
    for k, kind in _NODES.items():
        if not isinstance(net.nodes.get(k), kind):
            raise UnsupportedNetworkError(f"the torch backend rebuilds the Pong policy and needs node {k!r} "
                                          f"of kind {kind.__name__}")
    st = net.nodes["stpn"]
    policy = Policy(ModelConfig(kind="stpn", hidden=st.hidden_size, n_actions=net.nodes["pi"].weight.shape[0]))
    policy = policy.double().eval()
    t = lambda a: torch.as_tensor(np.asarray(a, np.float64))  # noqa: E731
    with torch.no_grad():
        for mod, k in ((policy.torso[0], "conv1"), (policy.torso[2], "conv2"), (policy.pi, "pi"), (policy.v, "v")):
            mod.weight.copy_(t(net.nodes[k].weight))
            mod.bias.copy_(t(net.nodes[k].bias))
        for key in ("W", "b", "lam", "gamma"):
            getattr(policy.core, key).copy_(t(getattr(st, key)))
    if np.isfinite(st.f_max):
        policy.core.f_max = float(st.f_max)
    if synapses == "device":
        block = device if device is not None else st.device
        if block is None:
            raise UnsupportedNetworkError("node 'stpn' has no device block: the device synapse model needs one "
                                          "(an m-STPN file, or a device mapping)")
        mapping = block if isinstance(block, dl.Mapping) else dl.Mapping.from_block(block)
        policy.core = DeviceSTPN(policy.core, mapping, compile=compile)
    elif synapses != "ideal":
        raise UnsupportedNetworkError(f"unknown synapse model {synapses!r}")
    return policy


class TorchRunner:
    """The PyTorch policy (float64), one frame at a time."""

    name = "torch"

    def __init__(self, net, policy=None, synapses: str = "ideal", device=None, compile: bool = False):
        self.net, self.synapses = net, synapses
        self.policy = (policy.double().eval() if policy is not None
                       else policy_from_network(net, synapses, device, compile))
        self.device_stats = ({"stpn": dict.fromkeys(DEVICE_COUNTERS, 0)}
                             if isinstance(self.policy.core, DeviceSTPN) else {})
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
        if self.device_stats:
            self._count(extras)
        # the same quantities under the converted network's layer names (sigma-delta or rate form)
        acts = {"sd_in": x.reshape(-1), "sd1": feats1.reshape(-1), "sd2": extras["features"][0],
                "if1": feats1.reshape(-1), "if2": extras["features"][0],
                "h": extras["h"][0], self.logits_name: logits[0], "value": value.reshape(-1)}
        acts = {k: v.numpy().astype(np.float64).copy() for k, v in acts.items() if k in self.layers}
        return StepOut(logits[0].numpy().copy(), acts)

    def _count(self, extras):
        """Accumulate a device step's counted pulses and energies (as Simulator.device_stats)."""
        tally = {"potentiating": extras["potentiating"], "depressing": extras["depressing"],
                 "energy_J": extras["pulse_energy_J"]}
        dl.add_step_counts(self.device_stats["stpn"], tally, extras["bias_energy_J"], self.policy.core.mapping.dt)

    def close(self):
        pass



def make_runner(net, policy=None, synapses: str = "ideal", device=None, compile: bool = False, **_):
    return TorchRunner(net, policy, synapses, device, compile)
