"""Energy models: memristive synapses, GPU (published A100 and measured H200), Loihi-style chip,
45 nm dense digital arithmetic.  All energies in joules, powers in watts, conductances in
siemens, times in seconds.  Every constant comes from :mod:`mstpn.energy.constants`.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from memristor.params import DeviceParams
from mstpn.energy import constants as C
from mstpn.energy.counts import LayerCounts
from mstpn_base.errors import ParameterError


def _nonneg(name: str, v) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float, np.floating, np.integer)) or not math.isfinite(v):
        raise ParameterError(f"{name} must be a finite number, got {v!r}")
    if v < 0:
        raise ParameterError(f"{name} must be >= 0, got {v!r}")
    return float(v)


# -- memristive synapses --------------------------------------------------------------------------
def reference_conductance(params: DeviceParams) -> float:
    """Conductance at pulse time assumed for the pulse energy [S]: the middle of the total
    conductance range, (g_min + g_max)/2 + g_st_max/2 (a weight mid-range plus a volatile part
    half-way to its bound; 7.55 nS for the default parameters).  An assumption: the publication
    does not state G at pulse time (docs/energy.md)."""
    return 0.5 * (params.g_min + params.g_max) + 0.5 * params.g_st_max


def mean_conductance(g_lt, g_st=0.0) -> float:
    """Mean total conductance G = g_lt + g_st [S] of a device state (arrays of any shape)."""
    g = np.asarray(g_lt, dtype=float) + np.asarray(g_st, dtype=float)
    if g.size == 0 or not np.all(np.isfinite(g)) or np.any(g < 0):
        raise ParameterError("conductances must be a non-empty array of finite values >= 0 S")
    return float(g.mean())


@dataclass(frozen=True)
class MemristiveSettings:
    """Operating point of the memristive layer.

    v_bias [V]   relaxation bias on every device (None: params.v_bias_max, the worst case 0.6 V)
    g_bias [S]   conductance in the V_b^2 G bias term; 0 as the publication's worst case (only the
                 leakage floor g_leak counts); use :func:`mean_conductance` of a state for the rest
    g_pulse [S]  conductance at pulse time (None: :func:`reference_conductance`)
    v_pulse [V], t_pulse [s]  update pulse (None: params.v_pulse, params.t_pulse)
    devices_per_synapse  1 as the publication (one device per synapse); 2 for a differential pair
                 (snn_agent.device_constrained): doubles the bias energy, pulses go to one device
    """

    v_bias: float | None = None
    g_bias: float = 0.0
    g_pulse: float | None = None
    v_pulse: float | None = None
    t_pulse: float | None = None
    devices_per_synapse: int = 1

    def resolved(self, params: DeviceParams) -> "MemristiveSettings":
        """Defaults filled in from ``params``, every value checked."""
        vb = params.v_bias_max if self.v_bias is None else _nonneg("v_bias", self.v_bias)
        if not params.v_bias_min - 1e-12 <= vb <= params.v_bias_max + 1e-12:
            raise ParameterError(f"v_bias {vb} V is outside the device's bias range "
                                 f"[{params.v_bias_min}, {params.v_bias_max}] V")
        if self.devices_per_synapse not in (1, 2):
            raise ParameterError(f"devices_per_synapse must be 1 or 2, got {self.devices_per_synapse!r}")
        return MemristiveSettings(
            v_bias=vb, g_bias=_nonneg("g_bias", self.g_bias),
            g_pulse=reference_conductance(params) if self.g_pulse is None else _nonneg("g_pulse", self.g_pulse),
            v_pulse=params.v_pulse if self.v_pulse is None else _nonneg("v_pulse", self.v_pulse),
            t_pulse=params.t_pulse if self.t_pulse is None else _nonneg("t_pulse", self.t_pulse),
            devices_per_synapse=self.devices_per_synapse)


def bias_power(params: DeviceParams, v_bias: float, g: float = 0.0) -> float:
    """Idle power of one device under bias [W]: V_b^2 (G + g_leak); 4.3 nW at G = 0, 0.6 V."""
    v_bias, g = _nonneg("v_bias", v_bias), _nonneg("G", g)
    return v_bias**2 * (g + params.g_leak)


def pulse_energy(v_pulse: float, g: float, t_pulse: float) -> float:
    """Energy of one update pulse [J]: V_p^2 G t_p."""
    return _nonneg("v_pulse", v_pulse) ** 2 * _nonneg("G", g) * _nonneg("t_pulse", t_pulse)


def memristive_layer_energy(layer: LayerCounts, duration_s: float, params: DeviceParams,
                            settings: MemristiveSettings | None = None) -> dict[str, float]:
    """Synaptic energy of a memristive layer over a run [J]: ``bias`` (idle power of every device
    over the physical duration) and ``pulse`` (one pulse energy per update pulse)."""
    s = (settings or MemristiveSettings()).resolved(params)
    duration_s = _nonneg("duration_s", duration_s)
    n_dev = layer.n_synapses * s.devices_per_synapse
    bias = n_dev * bias_power(params, s.v_bias, s.g_bias) * duration_s
    pulse = layer.update_pulses * pulse_energy(s.v_pulse, s.g_pulse, s.t_pulse)
    return {"bias": bias, "pulse": pulse}


# -- GPU -----------------------------------------------------------------------------------------
A100_VARIANTS = {
    "fp16-optimal": C.A100_FP16_OPTIMAL_J,
    "fp16-standard": C.A100_FP16_STANDARD_J,
    "fp32-standard": C.A100_FP32_STANDARD_J,
    "fp32-optimal": C.A100_FP32_OPTIMAL_J,
}


def gpu_a100_energy(n_synapses: int, steps: int, variant: str) -> float:
    """Published A100 synaptic energy scaled to a run [J]: E_game * (steps / 730) *
    (n_synapses / 169,984).  Linear in steps (same work every step) and in synapses (the
    publication itself scaled 'optimal' linearly from ~2^21 synapses): an assumption."""
    if variant not in A100_VARIANTS:
        raise ParameterError(f"unknown A100 variant {variant!r}; use one of {sorted(A100_VARIANTS)}")
    e_game = A100_VARIANTS[variant].value
    return (e_game * _nonneg("steps", steps) / C.PUB_GAME_STEPS.value
            * _nonneg("n_synapses", n_synapses) / C.PONG_SYNAPSES.value)


@dataclass(frozen=True)
class GpuStepFigures:
    """Energy per STPN step on a GPU [J/step], total (incl. idle) and dynamic, for 169,984 synapses."""

    total_j_per_step: float
    dynamic_j_per_step: float
    steps_per_s: float
    idle_w: float
    source: str


H200_FIGURES = {
    "eager": GpuStepFigures(C.H200_EAGER_J_PER_STEP.value, C.H200_EAGER_DYN_J_PER_STEP.value,
                            C.H200_EAGER_STEPS_PER_S.value, C.H200_IDLE_W.value, C.H200_RUN),
    "cudagraph": GpuStepFigures(C.H200_GRAPH_J_PER_STEP.value, C.H200_GRAPH_DYN_J_PER_STEP.value,
                                C.H200_GRAPH_STEPS_PER_S.value, C.H200_IDLE_W.value, C.H200_RUN),
}


def gpu_step_energy(n_synapses: int, steps: int, fig: GpuStepFigures) -> dict[str, float]:
    """Measured per-step GPU figures scaled to a run [J]: ``dynamic`` and ``idle`` (= total -
    dynamic), each * steps * n_synapses / 169,984 (linear in synapses: an assumption, exact only
    at 169,984)."""
    k = _nonneg("steps", steps) * _nonneg("n_synapses", n_synapses) / C.PONG_SYNAPSES.value
    dyn = _nonneg("dynamic_j_per_step", fig.dynamic_j_per_step)
    idle = _nonneg("total - dynamic", fig.total_j_per_step - dyn)
    return {"dynamic": dyn * k, "idle": idle * k}


# -- Loihi-style and dense digital ---------------------------------------------------------------
def stpn_update_arith_j() -> float:
    """fp32 arithmetic of one plastic synapse update of the STPN rule at 45 nm [J]:
    5 mult + 3 add = 21.2 pJ (constants.STPN_UPDATE_*, Horowitz 2014)."""
    return C.STPN_UPDATE_MULTS.value * C.FP32_MULT_J.value + C.STPN_UPDATE_ADDS.value * C.FP32_ADD_J.value


def loihi_layer_energy(layer: LayerCounts) -> dict[str, float]:
    """Loihi-style energy of a layer [J]: 23.6 pJ per synaptic op, 3.5 pJ per delivered event,
    81 pJ per neuron update (Davies 2018); plastic updates costed as the rule's 45 nm fp32
    arithmetic (an assumption: no per-update Loihi figure is used here)."""
    return {
        "synaptic_ops": layer.synaptic_ops * C.LOIHI_SYNOP_J.value,
        "transport": layer.events * C.LOIHI_TRANSPORT_J.value,
        "neuron_updates": layer.neuron_updates * C.LOIHI_NEURON_UPDATE_J.value,
        "plasticity": layer.update_pulses * stpn_update_arith_j(),
    }


def digital_layer_energy(layer: LayerCounts) -> dict[str, float]:
    """Dense digital reference [J], arithmetic only (no memory access: a lower bound): fp32 MAC
    (3.7 + 0.9 pJ) per dense MAC, the rule's fp32 arithmetic per plastic update (Horowitz 2014)."""
    mac = C.STPN_MAC_MULTS.value * C.FP32_MULT_J.value + C.STPN_MAC_ADDS.value * C.FP32_ADD_J.value
    return {"macs": layer.dense_macs * mac, "plasticity": layer.update_pulses * stpn_update_arith_j()}


def event_accumulate_energy(layer: LayerCounts) -> dict[str, float]:
    """Event-driven fixed-point accumulate, int32 add per synaptic op (0.1 pJ, Horowitz 2014): the
    floor of any digital event-driven implementation (no memory, no neuron, no plasticity)."""
    return {"accumulate": layer.synaptic_ops * C.INT32_ADD_J.value}
