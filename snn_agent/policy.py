"""The Pong actor-critic network of the reference, with an STPN, m-STPN or LSTM recurrent core.

    obs uint8 (B, 1, 84, 84) -> /255 -> Conv2d(1,16,k8,s4) -> ReLU -> Conv2d(16,32,k4,s2) -> ReLU
    -> flatten (2592) -> core (H = 64) -> Linear(H, n_actions) logits, Linear(H, 1) value

The core carries an explicit state (STPN/m-STPN: (h, F); LSTM: (h, c)) that the caller passes in
and gets back; :func:`reset_state` zeroes it where an episode ended.  The whole module works in
float32 or float64 (``policy.double()``), on CPU or CUDA.
"""
from __future__ import annotations

import math
from typing import NamedTuple

import torch
from torch import nn

from memristor.params import DeviceParams
from mstpn_base.errors import DataFormatError
from snn_agent.config import ModelConfig
from snn_agent.device_constrained import MSTPN
from snn_agent.stpn import STPN

#: flattened conv output for an 84x84 frame: 32 channels x 9 x 9
CONV_FEATURES = 2592
#: grey level of Pong's playfield in ale-py's 84x84 grayscale frames (most frequent pixel value)
BACKGROUND_PIXEL = 87


class LSTMState(NamedTuple):
    h: torch.Tensor
    c: torch.Tensor


class ConvTorso(nn.Sequential):
    """Conv2d(1,16,8,s4)-ReLU-Conv2d(16,32,4,s2)-ReLU-flatten: (B,1,84,84) in [0,1] -> (B, 2592)."""

    def __init__(self):
        super().__init__(nn.Conv2d(1, 16, 8, stride=4), nn.ReLU(), nn.Conv2d(16, 32, 4, stride=2),
                         nn.ReLU(), nn.Flatten())


class LSTMCore(nn.Module):
    """Baseline: ``nn.LSTMCell(I, H)`` with the same explicit-state interface as :class:`STPN`."""

    def __init__(self, input_size: int, hidden_size: int):
        super().__init__()
        self.input_size, self.hidden_size = input_size, hidden_size
        self.cell = nn.LSTMCell(input_size, hidden_size)

    def init_state(self, batch_size: int, dtype=None, device=None) -> LSTMState:
        w = self.cell.weight_hh
        z = torch.zeros(batch_size, self.hidden_size, dtype=dtype or w.dtype, device=device or w.device)
        return LSTMState(z, z.clone())

    def forward(self, x, state=None, energy: bool = False):
        if state is None:
            state = self.init_state(x.shape[0], x.dtype, x.device)
        h, c = self.cell(x, (state.h, state.c))
        return h, LSTMState(h, c), {}


def build_core(cfg: ModelConfig, input_size: int = CONV_FEATURES) -> nn.Module:
    if cfg.kind == "stpn":
        return STPN(input_size, cfg.hidden)
    if cfg.kind == "mstpn":
        params = DeviceParams.from_dict(cfg.device_params) if cfg.device_params else DeviceParams()
        return MSTPN(input_size, cfg.hidden, params=params, dt=cfg.dt, w_max=cfg.w_max,
                     quantise=cfg.quantise, noise=cfg.noise)
    if cfg.kind == "lstm":
        return LSTMCore(input_size, cfg.hidden)
    raise ValueError(cfg.kind)


def _orthogonal(layer: nn.Module, gain: float) -> None:
    nn.init.orthogonal_(layer.weight, gain)
    nn.init.zeros_(layer.bias)


def init_actor_critic(policy: "Policy") -> None:
    """The usual actor-critic initialisation for Atari (baselines / CleanRL): orthogonal conv
    weights with gain sqrt(2) (ReLU), zero biases; policy head gain 0.01 (near-uniform start), value
    head gain 1; LSTM input/recurrent weights orthogonal, biases zero.  The STPN's W, b, lambda,
    gamma keep the reference initialisation (its row norm makes W's scale irrelevant).

    One data-dependent choice: conv1's bias starts at -(BACKGROUND_PIXEL/255) sum(W1) per channel,
    so the uniform playfield gives zero pre-activation and the features start out carrying the
    ball and paddles rather than the background (an initialisation only: the architecture, and so
    the conversion, is unchanged).  With PyTorch's default initialisation the features of Pong
    frames differed by ~3-5% across frames and A2C did not learn in 13M frames.
    """
    for layer in policy.torso:
        if isinstance(layer, nn.Conv2d):
            _orthogonal(layer, math.sqrt(2.0))
    conv1 = policy.torso[0]
    with torch.no_grad():
        conv1.bias.copy_(-(BACKGROUND_PIXEL / 255.0) * conv1.weight.sum(dim=(1, 2, 3)))
    _orthogonal(policy.pi, 0.01)
    _orthogonal(policy.v, 1.0)
    if isinstance(policy.core, LSTMCore):
        for name, p in policy.core.cell.named_parameters():
            (nn.init.orthogonal_ if name.startswith("weight") else nn.init.zeros_)(p)


def reset_state(state, done):
    """Zero every state tensor of batch elements with ``done`` (B,) true (new episode)."""
    ref = state[0]
    keep = (~torch.as_tensor(done, dtype=torch.bool, device=ref.device)).to(ref.dtype)
    return type(state)(*(s * keep.view((-1,) + (1,) * (s.dim() - 1)) for s in state))


def detach_state(state):
    return type(state)(*(s.detach() for s in state))


class Policy(nn.Module):
    """Actor-critic: ``logits, value, new_state, extras = policy(obs, state)``.

    ``obs``: uint8 or float frames (B, 1, 84, 84) with pixel values 0..255; ``value`` has shape (B,);
    ``extras`` holds the core's per-step intermediates and ``features`` (the conv output x_t).
    """

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        cfg.validate()
        self.cfg = cfg
        self.torso = ConvTorso()
        self.core = build_core(cfg)
        self.pi = nn.Linear(cfg.hidden, cfg.n_actions)
        self.v = nn.Linear(cfg.hidden, 1)
        init_actor_critic(self)

    @property
    def dtype(self):
        return self.pi.weight.dtype

    def init_state(self, batch_size: int, device=None):
        return self.core.init_state(batch_size, self.dtype, device or self.pi.weight.device)

    def features(self, obs):
        x = torch.as_tensor(obs, device=self.pi.weight.device)
        if x.dim() != 4 or tuple(x.shape[1:]) != (1, 84, 84):
            raise DataFormatError(f"observations must have shape (batch, 1, 84, 84), got {tuple(x.shape)}")
        x = x.to(self.dtype) / 255.0
        return self.torso(x)

    def forward(self, obs, state=None, energy: bool = False):
        x = self.features(obs)
        h, state, extras = self.core(x, state, energy=energy)
        extras = dict(extras, features=x, h=h)
        return self.pi(h), self.v(h).squeeze(-1), state, extras
