"""Parameters of the SrTiO3 compact memristor model: one dataclass, the single source of truth.

Every parameter carries a unit, a physical range, and a provenance tag:

* ``published``: read from Weilenmann et al., Nat. Commun. 15, 6898 (2024) (values taken from
  the related SrTiO3 study arXiv:2509.22767, another device, are tagged ``assumption``);
* ``fitted-to-published-figure``: chosen so that the model reproduces a published number;
* ``assumption``: a plausible value chosen by this project (replace it with your own fit,
  ``mstpn device fit``);
* ``fitted-to-user-data``: set by :mod:`memristor.fit` from a user's measurements.

The model itself (equations) is documented in :mod:`memristor.reference` and docs/device_model.md.

A parameter file (:meth:`DeviceParams.load`) must give every parameter: a missing one is an error,
not a silent preset value carrying the preset's provenance tag (``mstpn device params --out FILE``
writes a complete file to start from).
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from mstpn_base.errors import DataFormatError, ParameterError
from mstpn_base.io import atomic_write_json, read_json

PROVENANCE_TAGS = ("published", "fitted-to-published-figure", "assumption", "fitted-to-user-data")
SCHEMA = "mstpn.device-params"
SCHEMA_VERSION = 1
INF = math.inf


def _p(default, unit: str, lo: float, hi: float, source: str, doc: str, integer: bool = False):
    """A parameter field: default, unit, closed physical range [lo, hi], provenance, doc."""
    assert source in PROVENANCE_TAGS, source
    return field(default=default, metadata=dict(unit=unit, range=(lo, hi), source=source,
                                                 doc=doc, integer=integer))


@dataclass(frozen=True)
class DeviceParams:
    """SrTiO3 memristive synapse, compact model (all SI units).

    State per device: long-term conductance ``g_lt`` in [g_min, g_max], volatile conductance
    ``g_st`` in [0, g_st_max], paired-pulse facilitation trace ``r`` >= 0, metaplastic
    depletion ``q`` in [0, 1).  See :mod:`memristor.reference` for the equations.
    """

    # -- long-term (non-volatile) conductance: the weight W ----------------------------------
    g_min: float = _p(0.1e-9, "S", 0.0, 1e-3, "assumption",
                      "lowest long-term conductance (low-conductance interface regime)")
    g_max: float = _p(10e-9, "S", 0.0, 1e-3, "assumption", "highest long-term conductance")
    n_levels: int = _p(64, "1", 0, 2**16, "assumption",
                       "distinguishable long-term levels (0 = continuous)", integer=True)
    eta_lt: float = _p(0.05, "1", 0.0, 1.0, "assumption",
                       "fraction of the remaining range a reference SET/RESET pulse moves g_lt")
    v_lt_threshold: float = _p(1.2, "V", 0.0, 10.0, "assumption",
                               "pulses with |V| >= this also program the long-term conductance")
    # -- volatile conductance: short-term memory F -------------------------------------------
    g_st_max: float = _p(5e-9, "S", 0.0, 1e-3, "assumption", "largest volatile conductance")
    a_st: float = _p(0.1, "1", 0.0, 1.0, "assumption",
                     "fraction of the remaining volatile range a reference pulse adds (soft bound)")
    tau0: float = _p(10.0, "s", 1e-6, 1e6, "assumption",
                     "relaxation time constant at zero bias; informed by arXiv:2509.22767 (related "
                     "device, photoresponse: decay time constants of 1-10 s, controllable by bias)")
    v_tau: float = _p(0.6 / math.log(10.0), "V", 1e-3, 100.0, "assumption",
                      "bias scale of tau(V)=tau0*exp(-V/v_tau); spans 10 s..1 s over 0..0.6 V, informed by "
                      "arXiv:2509.22767 (related device, photoresponse)")
    v_bias_min: float = _p(0.0, "V", 0.0, 5.0, "assumption", "lowest usable relaxation bias")
    v_bias_max: float = _p(0.6, "V", 0.0, 5.0, "published",
                           "highest relaxation bias: 0.6 V, the worst case applied to every synapse "
                           "(Weilenmann et al., Nat. Commun. 15, 6898 (2024))")
    # -- pulse efficacy s(V, t_p) -------------------------------------------------------------
    v_ref: float = _p(1.0, "V", 1e-3, 10.0, "assumption", "reference pulse amplitude (s = 1)")
    t_ref: float = _p(400e-6, "s", 1e-12, 1.0, "assumption",
                    "reference pulse width (s = 1 at v_ref); the default t_pulse is 427 us, not 400 us")
    v0: float = _p(0.25, "V", 1e-3, 10.0, "assumption",
                   "voltage nonlinearity: s ~ (exp(|V|/v0)-1) (ionic hopping, exponential in V)")
    beta_t: float = _p(0.5, "1", 0.0, 2.0, "assumption", "width dependence: s ~ (t_p/t_ref)^beta_t")
    # -- paired-pulse facilitation and history dependence (meta-plasticity) --------------------
    ppf_gain: float = _p(1.0, "1", 0.0, 100.0, "assumption",
                         "extra efficacy per unit facilitation trace: f = 1 + ppf_gain * r")
    tau_ppf: float = _p(0.1, "s", 1e-6, 1e4, "assumption", "decay time of the facilitation trace r")
    meta_depletion: float = _p(0.2, "1", 0.0, 1.0, "assumption",
                               "fraction of remaining efficacy each pulse depletes: q += c (1 - q)")
    tau_meta: float = _p(5.0, "s", 1e-6, 1e6, "assumption", "recovery time of the depletion q")
    # -- variability ----------------------------------------------------------------------------
    d2d_sigma: float = _p(0.05, "1", 0.0, 1.0, "assumption",
                          "device-to-device relative spread (lognormal) of tau0, a_st, eta_lt")
    c2c_sigma: float = _p(0.02, "1", 0.0, 1.0, "assumption",
                          "cycle-to-cycle relative spread of each pulse's efficacy")
    # -- electrical / energy ---------------------------------------------------------------------
    v_read: float = _p(0.1, "V", 0.0, 10.0, "assumption", "read voltage (weight multiplication I = V G)")
    p_leak_ref: float = _p(4.3e-9, "W", 0.0, 1e-3, "published",
                           "idle power per synapse at G = 0 under v_bias_max: 4.3 nW at 0.6 V "
                           "(Weilenmann et al., Nat. Commun. 15, 6898 (2024))")
    v_pulse: float = _p(1.0, "V", 0.0, 10.0, "assumption", "default update pulse amplitude")
    t_pulse: float = _p(427e-6, "s", 1e-12, 1.0, "fitted-to-published-figure",
                        "default update pulse width; with v_pulse and a mid-range G it gives ~3.2 pJ per "
                        "pulse, i.e. the 0.4 mJ of update pulses per Pong game of Weilenmann et al., "
                        "Nat. Commun. 15, 6898 (2024) (see mstpn.energy)")
    provenance: dict = field(default_factory=dict, compare=False, repr=False,
                             metadata=dict(doc="overrides of the per-parameter source tags"))

    # ---------------------------------------------------------------------------------------
    def __post_init__(self):
        validate(self)

    @classmethod
    def parameter_names(cls) -> list[str]:
        return [f.name for f in fields(cls) if f.name != "provenance"]

    @classmethod
    def describe(cls) -> list[dict]:
        """One row per parameter: name, default, unit, range, source, doc (for docs and the CLI)."""
        out = []
        for f in fields(cls):
            if f.name == "provenance":
                continue
            out.append(dict(name=f.name, default=f.default, **f.metadata))
        return out

    def source(self, name: str) -> str:
        """Provenance tag of one parameter (override in ``provenance`` wins)."""
        if name in self.provenance:
            return self.provenance[name]
        return _field(name).metadata["source"]

    def replace(self, **changes) -> "DeviceParams":
        """Copy with changes (validated). Use ``provenance=`` to retag changed parameters."""
        return dataclasses.replace(self, **changes)

    # -- derived quantities ------------------------------------------------------------------
    def tau(self, v_bias):
        """Relaxation time constant [s] of the volatile conductance: tau0 * exp(-V_bias / v_tau)."""
        import numpy as np

        v = np.asarray(v_bias, dtype=float)
        if np.any(~np.isfinite(v)) or np.any(v < self.v_bias_min - 1e-12) or np.any(v > self.v_bias_max + 1e-12):
            raise ParameterError(
                f"v_bias must lie in [{self.v_bias_min}, {self.v_bias_max}] V, got {v_bias!r}")
        return self.tau0 * np.exp(-v / self.v_tau)

    def lambda_range(self, dt: float) -> tuple[float, float]:
        """Per-step retention lambda = exp(-dt / tau) reachable over the bias range: (min, max)."""
        if not (math.isfinite(dt) and dt > 0):
            raise ParameterError(f"step duration dt must be a positive number of seconds, got {dt!r}")
        tau_min = float(self.tau(self.v_bias_max))
        tau_max = float(self.tau(self.v_bias_min))
        return math.exp(-dt / tau_min), math.exp(-dt / tau_max)

    def bias_for_lambda(self, lam, dt: float):
        """Inverse of exp(-dt/tau(V)): the bias [V] that gives retention ``lam`` per step ``dt``."""
        import numpy as np

        lam = np.asarray(lam, dtype=float)
        lo, hi = self.lambda_range(dt)
        if np.any(lam < lo - 1e-12) or np.any(lam > hi + 1e-12):
            raise ParameterError(f"lambda must lie in [{lo:.6g}, {hi:.6g}] for dt={dt} s, got {lam!r}")
        tau = -dt / np.log(lam)
        return -self.v_tau * np.log(tau / self.tau0)

    @property
    def g_leak(self) -> float:
        """Leakage conductance [S] that gives ``p_leak_ref`` at ``v_bias_max`` (ohmic assumption)."""
        return self.p_leak_ref / self.v_bias_max**2 if self.v_bias_max > 0 else 0.0

    # -- JSON ----------------------------------------------------------------------------------
    def to_dict(self) -> dict:
        return {
            "schema": SCHEMA,
            "version": SCHEMA_VERSION,
            "parameters": {
                n: {"value": getattr(self, n), "unit": _field(n).metadata["unit"], "source": self.source(n)}
                for n in self.parameter_names()
            },
        }

    @classmethod
    def from_dict(cls, data: Any) -> "DeviceParams":
        if not isinstance(data, dict) or data.get("schema") != SCHEMA:
            raise DataFormatError(f"not a device parameter file (expected schema {SCHEMA!r})")
        if data.get("version") != SCHEMA_VERSION:
            raise DataFormatError(
                f"device parameter file version {data.get('version')!r} is not supported (expected {SCHEMA_VERSION})")
        params = data.get("parameters")
        if not isinstance(params, dict):
            raise DataFormatError("device parameter file has no 'parameters' object")
        names = set(cls.parameter_names())
        unknown = set(params) - names
        if unknown:
            raise DataFormatError(f"unknown device parameters: {sorted(unknown)}")
        missing = [n for n in cls.parameter_names() if n not in params]
        if missing:
            raise DataFormatError(f"device parameter file lacks {', '.join(missing)} (every parameter is "
                                  "required; `mstpn device params --out FILE` writes a complete file to edit)")
        values, provenance = {}, {}
        for name, entry in params.items():
            if not isinstance(entry, dict) or "value" not in entry:
                raise DataFormatError(f"parameter {name!r} must be an object with a 'value'")
            unit = _field(name).metadata["unit"]
            if entry.get("unit", unit) != unit:
                raise DataFormatError(f"parameter {name!r} has unit {entry['unit']!r}, expected {unit!r}")
            values[name] = entry["value"]
            src = entry.get("source")
            if src is not None:
                if src not in PROVENANCE_TAGS:
                    raise DataFormatError(f"parameter {name!r} has unknown source tag {src!r}")
                if src != _field(name).metadata["source"]:
                    provenance[name] = src
        return cls(**values, provenance=provenance)

    def save(self, path) -> None:
        """Write as JSON atomically."""
        atomic_write_json(path, self.to_dict())

    @classmethod
    def load(cls, path) -> "DeviceParams":
        path = Path(path)
        return cls.from_dict(read_json(path))


def _field(name: str):
    for f in fields(DeviceParams):
        if f.name == name:
            return f
    raise KeyError(name)


def validate(p: DeviceParams) -> None:
    """Raise :class:`ParameterError` naming the first parameter that is NaN/inf or out of range."""
    for f in fields(p):
        if f.name == "provenance":
            continue
        v = getattr(p, f.name)
        meta = f.metadata
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            raise ParameterError(f"device parameter {f.name} must be a number, got {v!r}")
        if isinstance(v, int) and abs(v) > 2**53:
            raise ParameterError(f"device parameter {f.name} = {_short(v)} is outside its physical range "
                                 f"[{meta['range'][0]}, {meta['range'][1]}]")
        if not math.isfinite(v):
            raise ParameterError(f"device parameter {f.name} must be finite, got {v!r}")
        if meta["integer"] and int(v) != v:
            raise ParameterError(f"device parameter {f.name} must be an integer, got {v!r}")
        lo, hi = meta["range"]
        if not lo <= v <= hi:
            raise ParameterError(
                f"device parameter {f.name}={v!r} {meta['unit']} is outside its physical range [{lo}, {hi}]")
    if not p.g_min < p.g_max:
        raise ParameterError(f"g_min ({p.g_min}) must be below g_max ({p.g_max})")
    if not p.v_bias_min <= p.v_bias_max:
        raise ParameterError(f"v_bias_min ({p.v_bias_min}) must not exceed v_bias_max ({p.v_bias_max})")
    if p.n_levels == 1:
        raise ParameterError("n_levels must be 0 (continuous) or at least 2")
    for name, tag in p.provenance.items():
        if name not in DeviceParams.parameter_names():
            raise ParameterError(f"provenance names unknown parameter {name!r}")
        if tag not in PROVENANCE_TAGS:
            raise ParameterError(f"unknown provenance tag {tag!r} for {name}; use one of {PROVENANCE_TAGS}")


def _short(v) -> str:
    text = repr(v)
    return text if len(text) <= 24 else f"{text[:10]}...({len(text)} digits)"


def published_preset() -> DeviceParams:
    """The default preset: published figures where they exist, documented assumptions elsewhere."""
    return DeviceParams()
