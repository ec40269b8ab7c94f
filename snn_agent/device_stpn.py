"""The STPN layer on SrTiO3 device pairs in PyTorch (hardware in the loop).

:class:`DeviceSTPN` wraps a trained :class:`~snn_agent.stpn.STPN` / :class:`~snn_agent.device_constrained.MSTPN`
core and runs its plastic synapses through :mod:`conversion.device_layer`, the same functions the
NumPy reference simulator evaluates (``Simulator(net, synapses="device")``), on tensors: batched,
any float dtype, and differentiable where the devices are -- through the long-term weights W (the
level quantisation passes the gradient straight through), gamma, b and the pulse response (soft
bounds, facilitation, history); not through lambda, which sets the devices' biases once at
construction.  The device draws (device-to-device factors) and the cycle-to-cycle noise are those
of :func:`conversion.device_layer.build` and :func:`conversion.device_layer.c2c_noise` (drawn in
NumPy from the mapping's seed), so both implementations see the same devices and the same noise;
the noise of a step is indexed by the layer's step counter ``t`` (as the simulator's).
"""
from __future__ import annotations

from typing import NamedTuple

import numpy as np
import torch
from torch import nn

from conversion import device_layer as dl
from mstpn_base.ops import torch_ops
from snn_agent.stpn import stpn_step


class DeviceSTPNState(NamedTuple):
    """``h`` (B, H), the read-back ``F`` (B, H, K) and per device side the volatile state (B, H, K)."""

    h: torch.Tensor
    F: torch.Tensor
    g_st_p: torch.Tensor
    r_p: torch.Tensor
    q_p: torch.Tensor
    g_st_m: torch.Tensor
    r_m: torch.Tensor
    q_m: torch.Tensor

    def sides(self) -> dict:
        return {side: {v: getattr(self, f"{v}_{side}") for v in dl.DEVICE_STATE} for side in dl.SIDES}


class DeviceSTPN(nn.Module):
    """``DeviceSTPN(core, mapping)``; ``h, state, extras = layer(x, state)``.  ``extras`` holds
    ``z``, ``norm``, ``pre`` (as :func:`stpn_step`) and the step's counted pulses ``potentiating``,
    ``depressing``, ``pulse_energy_J`` and ``bias_energy_J`` (tensors)."""

    def __init__(self, core, mapping: dl.Mapping, dtype=torch.float64, compile: bool = False):
        super().__init__()
        self.core, self.mapping, self.dtype = core, mapping, dtype
        # the device step (relaxation, pulse inversion, pulses, their tally and the bias energy) is
        # elementwise over 2 H K devices: torch.compile fuses it into one loop (~2.5x on one CPU core)
        self._device_step = torch.compile(self._device_step_eager, dynamic=False) if compile else self._device_step_eager
        p = core.effective_params()
        self.devices = dl.build(mapping, p["W"].detach().double().cpu().numpy(), p["lam"].detach().double().cpu().numpy())
        self._arrays = self.devices.arrays(lambda a: torch.as_tensor(np.asarray(a), dtype=dtype))
        self.t = 0
        self.input_size, self.hidden_size = core.input_size, core.hidden_size

    def init_state(self, batch_size: int, dtype=None, device=None) -> DeviceSTPNState:
        """Fresh devices for ``batch_size`` games (the layer's own dtype; ``dtype``/``device`` are
        accepted for the Policy interface)."""
        H, K = self.hidden_size, self.input_size + self.hidden_size
        z = lambda *s: torch.zeros(*s, dtype=self.dtype)  # noqa: E731
        return DeviceSTPNState(z(batch_size, H), *(z(batch_size, H, K) for _ in range(7)))

    def reset_state(self, state: DeviceSTPNState, done) -> DeviceSTPNState:
        """Fresh devices (g_st = r = q = 0) and h = 0 for the batch elements with ``done``."""
        keep = (~torch.as_tensor(done, dtype=torch.bool)).to(self.dtype)
        return DeviceSTPNState(state.h * keep[:, None], *(s * keep[:, None, None] for s in state[1:]))

    def weights(self) -> torch.Tensor:
        """The read-back long-term weights (H, K), differentiable in the core's W."""
        g = dl.long_term(torch_ops(), self.mapping, self.core.effective_params()["W"].to(self.dtype))
        return dl.read_weight(self.mapping, g["p"], g["m"]), g

    def _device_step_eager(self, dev, sides, norm, h, z, gamma, noise):
        m = self.mapping
        bias = dl.bias_energy(m, dev, sides)
        new, F, pulses = dl.plasticity(torch_ops(), m, dev, sides, norm, h, z, gamma, noise)
        tally = dl.pulse_tally(m, pulses)
        return new, F, tally, bias

    def forward(self, x, state: DeviceSTPNState | None = None, energy: bool = False):
        m = self.mapping
        if state is None:
            state = self.init_state(x.shape[0])
        p = self.core.effective_params()
        W, g_lt = self.weights()
        b, lam, gamma = (p[k].to(self.dtype) for k in ("b", "lam", "gamma"))
        h, _, extras = stpn_step(W, b, lam, gamma, x.to(self.dtype), state.h, state.F)
        dev = {side: dict(self._arrays[side], g_lt=g_lt[side]) for side in dl.SIDES}
        noise = dl.c2c_noise(m, self.t, tuple(state.F.shape))
        if noise is not None:
            noise = {side: torch.as_tensor(a, dtype=self.dtype) for side, a in noise.items()}
        new, F, tally, bias = self._device_step(dev, state.sides(), extras["norm"].unsqueeze(-1), h.unsqueeze(-1),
                                                extras["z"].unsqueeze(-2), gamma, noise)
        self.t += 1
        extras.update(potentiating=tally["potentiating"], depressing=tally["depressing"],
                      pulse_energy_J=tally["energy_J"], bias_energy_J=bias)
        flat = {f"{v}_{side}": new[side][v] for side in dl.SIDES for v in dl.DEVICE_STATE}
        return h, DeviceSTPNState(h, F, **flat), extras
