"""m-STPN: the STPN layer whose synapses obey the SrTiO3 device model (hardware-aware training).

Same equations as :mod:`snn_agent.stpn` (it calls :func:`snn_agent.stpn.stpn_step`); what changes
is which values W, F, lambda and gamma can take.

Mapping between weights (dimensionless) and conductances [S] -- a differential pair per synapse,
two devices (+, -) each with a long-term part g_lt in [g_min, g_max] and a volatile part g_st in
[0, g_st_max]; one weight unit is ``g_unit = (g_max - g_min) / w_max`` siemens::

    W = (g_lt+ - g_lt-) / g_unit   in [-w_max, w_max]        long-term weight
    F = (g_st+ - g_st-) / g_unit   in [-f_max, f_max],  f_max = g_st_max / g_unit
    lambda = exp(-dt / tau(V_bias)) in [lam_min, lam_max] = DeviceParams.lambda_range(dt)
    |gamma| <= gamma_max = a_st * s_pulse * f_max            largest change of one update pulse
                                                              (s_pulse: efficacy of the default
                                                              pulse v_pulse, t_pulse)

dt is the physical duration of one agent step (default 4 frames at 60 Hz = 1/15 s).  The offsets
g_min cancel in the difference; a weight w maps to g_lt+ = g_min + max(w, 0) g_unit and
g_lt- = g_min + max(-w, 0) g_unit (:meth:`MSTPN.conductances`).

Reparametrisations keep every constrained value inside its range at all times:
``W = w_max tanh(w_raw / w_max)``, ``gamma = gamma_max tanh(gamma_raw / gamma_max)`` (slope 1 at
0, so Adam moves them as in the plain STPN) and ``lambda = lam_min + (lam_max - lam_min)
sigmoid(lam_raw)``.  F is clipped to [-f_max, f_max] after every update (saturation).

Hardware-aware options: ``quantise`` snaps both long-term conductances of the pair to the device's
``n_levels`` levels (the device's own quantiser, :func:`memristor.equations.quantise_lt`; in weight
units a grid of step w_max / (n_levels - 1)) with a straight-through estimator (forward quantised,
backward identity); ``noise`` (training only) multiplies each Hebbian increment by the
cycle-to-cycle factor max(0, 1 + c2c_sigma N(0, 1)), as :func:`memristor.reference.make_drive`.
"""
from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from memristor import equations as eq
from memristor.params import DeviceParams
from memristor.reference import pulse_efficacy
from mstpn_base.errors import MstpnError, ParameterError
from mstpn_base.ops import torch_ops
from snn_agent.stpn import STPN, STPNState

#: physical duration of one agent step: 4 emulator frames at 60 Hz [s]
DEFAULT_DT = 4.0 / 60.0


class DeviceMapping:
    """Weight-unit bounds derived from :class:`DeviceParams` (see module docstring)."""

    def __init__(self, params: DeviceParams | None = None, dt: float = DEFAULT_DT, w_max: float = 1.0):
        self.params = params or DeviceParams()
        if not (math.isfinite(w_max) and w_max > 0):
            raise ParameterError(f"w_max must be a positive number of weight units, got {w_max!r}")
        self.dt = float(dt)
        self.w_max = float(w_max)
        p = self.params
        self.lam_min, self.lam_max = p.lambda_range(self.dt)
        self.g_unit = (p.g_max - p.g_min) / self.w_max                  # S per weight unit
        self.f_max = p.g_st_max / self.g_unit
        self.s_pulse = float(pulse_efficacy(p, p.v_pulse, p.t_pulse))
        self.gamma_max = p.a_st * self.s_pulse * self.f_max
        if self.gamma_max <= 0 or self.f_max <= 0:
            raise ParameterError("device parameters give no short-term plasticity (a_st, g_st_max or v_pulse is 0)")
        self.w_step = self.w_max / (p.n_levels - 1) if p.n_levels >= 2 else 0.0

    def pair(self, w):
        """Long-term conductances [S] (g_plus, g_minus) of the differential pair for weights ``w``
        (array or tensor): g_min + max(+-w, 0) g_unit."""
        return self.params.g_min + (w * (w > 0)) * self.g_unit, self.params.g_min + (-w * (w < 0)) * self.g_unit

    def quantised(self, w: torch.Tensor) -> torch.Tensor:
        """``w`` on the device grid: both conductances of the pair snapped to the device's levels
        (:func:`memristor.equations.quantise_lt`, straight-through gradient), read back as a weight."""
        g_plus, g_minus = self.pair(w)
        ops = torch_ops()
        return (eq.quantise_lt(ops, self.params, g_plus) - eq.quantise_lt(ops, self.params, g_minus)) / self.g_unit

    def summary(self) -> dict:
        return {"dt_s": self.dt, "w_max": self.w_max, "g_unit_S": self.g_unit, "f_max": self.f_max,
                "gamma_max": self.gamma_max, "lam_min": self.lam_min, "lam_max": self.lam_max,
                "w_step": self.w_step}


def _atanh_init(values: torch.Tensor, bound: float) -> torch.Tensor:
    """raw such that bound * tanh(raw / bound) = values (values clipped to 0.99 bound)."""
    v = values.clamp(-0.99 * bound, 0.99 * bound)
    return bound * torch.atanh(v / bound)


@dataclass
class NoiseTape:
    """The cycle-to-cycle factors of successive training forward passes, one (H, K) tensor each:
    recorded as they are drawn, or replayed in order (``replay``; ``used`` counts the replayed)."""

    factors: list = field(default_factory=list)
    replay: bool = False
    used: int = 0


class MSTPN(STPN):
    """STPN layer with device-constrained synapses. Same interface as :class:`STPN`; the trainable
    tensors are ``w_raw``, ``b``, ``lam_raw``, ``gamma_raw`` and :meth:`effective_params` gives the
    constrained W, b, lam, gamma that :func:`stpn_step` uses (with ``f_max``)."""

    def __init__(self, input_size: int, hidden_size: int, params: DeviceParams | None = None,
                 dt: float = DEFAULT_DT, w_max: float = 1.0, quantise: bool = True, noise: bool = True):
        nn.Module.__init__(self)
        self.input_size, self.hidden_size = int(input_size), int(hidden_size)
        self.mapping = DeviceMapping(params, dt, w_max)
        self.quantise = bool(quantise) and self.mapping.w_step > 0
        self.noise = bool(noise) and self.mapping.params.c2c_sigma > 0
        m = self.mapping
        H, K = self.hidden_size, self.input_size + self.hidden_size
        bound = 1.0 / math.sqrt(H)
        self.w_raw = nn.Parameter(_atanh_init(torch.empty(H, K).uniform_(-bound, bound), m.w_max))
        self.b = nn.Parameter(torch.empty(H).uniform_(-bound, bound))
        u = torch.empty(H, K).uniform_(0.01, 0.99)
        self.lam_raw = nn.Parameter(torch.log(u) - torch.log1p(-u))           # logit
        g = 1e-3 / math.sqrt(H)
        self.gamma_raw = nn.Parameter(_atanh_init(torch.empty(H, K).uniform_(-g, g), m.gamma_max))

    @property
    def f_max(self) -> float:  # type: ignore[override]
        return self.mapping.f_max

    @property
    def W(self) -> torch.Tensor:  # type: ignore[override]
        m = self.mapping
        w = m.w_max * torch.tanh(self.w_raw / m.w_max)
        return m.quantised(w) if self.quantise else w

    @property
    def lam(self) -> torch.Tensor:  # type: ignore[override]
        m = self.mapping
        return m.lam_min + (m.lam_max - m.lam_min) * torch.sigmoid(self.lam_raw)

    @property
    def gamma(self) -> torch.Tensor:  # type: ignore[override]
        m = self.mapping
        return m.gamma_max * torch.tanh(self.gamma_raw / m.gamma_max)

    def effective_params(self) -> dict:
        """W, b, lam, gamma, f_max as :meth:`STPN.effective_params`, computed once and reused by
        the steps of a sequence: the reparametrisation and quantiser of W cost ~4x the fused step
        itself at the Pong layer's size.  The cached values are recomputed when a raw parameter
        changes (its version counter: an optimiser step, a load), when the grad mode differs, or
        once a backward pass has gone through them (their graph is freed then)."""
        raw = (self.w_raw, self.b, self.lam_raw, self.gamma_raw)
        key = (torch.is_grad_enabled(), self.quantise, tuple((id(t), t._version, t.dtype, t.device) for t in raw))
        cached = self.__dict__.get("_param_cache")
        if cached is not None and cached[0] == key:
            return cached[1]
        params = {"W": self.W, "b": self.b, "lam": self.lam, "gamma": self.gamma, "f_max": self.f_max}
        self.__dict__["_param_cache"] = (key, params)
        if key[0]:
            def forget(grad):
                self.__dict__.pop("_param_cache", None)
                return grad

            for name in ("W", "lam", "gamma"):
                if params[name].requires_grad:
                    params[name].register_hook(forget)
        return params

    def __getstate__(self):
        state = dict(super().__getstate__())
        state.pop("_param_cache", None)       # tensors in a graph cannot be deep-copied or pickled
        state.pop("_noise_tape", None)
        return state

    @contextlib.contextmanager
    def noise_tape(self, replay: list | None = None):
        """Inside the block, record the cycle-to-cycle factors of every training forward pass
        (yields the list they are appended to) or, given ``replay``, use its i-th entry in the i-th
        pass instead of a fresh draw.  PPO records a rollout's factors and replays them when it
        re-runs the rollout's sequences, so the probability ratios compare parameters under the
        same device noise, not two noise draws."""
        tape = NoiseTape(factors=[] if replay is None else replay, replay=replay is not None)
        self.__dict__["_noise_tape"] = tape
        try:
            yield tape.factors
        finally:
            self.__dict__.pop("_noise_tape", None)

    def _hebb_noise(self, like: torch.Tensor) -> torch.Tensor:
        """This step's factors max(0, 1 + c2c_sigma N(0, 1)), (H, K): drawn, or from the tape."""
        tape = self.__dict__.get("_noise_tape")
        if tape is not None and tape.replay:
            if tape.used >= len(tape.factors):
                raise MstpnError(f"the noise tape holds {len(tape.factors)} steps; step {tape.used + 1} asked")
            tape.used += 1
            return tape.factors[tape.used - 1]
        # one factor per synapse and step, shared by the batch's games: each pulse's factor has
        # the device's distribution; drawing (H, K) instead of (B, H, K) normals is B times
        # cheaper (the draw cost as much as the whole compiled STPN step at B = 16)
        noise = torch.clamp(1.0 + self.mapping.params.c2c_sigma * torch.randn_like(like), min=0.0)
        if tape is not None:
            tape.factors.append(noise)
        return noise

    def forward(self, x, state: STPNState | None = None, energy: bool = False):
        if state is None:
            state = self.init_state(x.shape[0], x.dtype, x.device)
        p = self.effective_params()
        noise = self._hebb_noise(state.F[0]) if self.training and self.noise else None
        h, F, extras = self.step_fn(p["W"], p["b"], p["lam"], p["gamma"], x, state.h, state.F,
                                    f_max=p["f_max"], hebb_noise=noise, energy=energy)
        return h, STPNState(h, F), extras

    # -- hardware view -------------------------------------------------------------------------
    @torch.no_grad()
    def conductances(self) -> dict:
        """Long-term conductances [S] of the differential pair, numpy arrays (H, K): g_plus, g_minus."""
        g_plus, g_minus = self.mapping.pair(self.W.double().cpu().numpy())
        return {"g_plus": g_plus, "g_minus": g_minus}

    @torch.no_grad()
    def bias_voltages(self) -> np.ndarray:
        """Relaxation bias [V] per synapse (H, K) that realises each lambda at the step duration dt."""
        lam = self.lam.double().cpu().numpy()
        lam = np.clip(lam, self.mapping.lam_min, self.mapping.lam_max)
        return np.asarray(self.mapping.params.bias_for_lambda(lam, self.mapping.dt))
