"""The plastic STPN layer on SrTiO3 devices: the synapses as device pairs, defined once.

Each synapse (h, f) is a **differential pair** of devices, ``p`` (+) and ``m`` (-), both under the
synapse's relaxation bias.  One weight unit is ``g_unit = (g_max - g_min) / w_max`` siemens, for
the long-term and the volatile part alike, so that the column current of the pair reads W + F::

    w = (g_lt,p - g_lt,m) / g_unit            long-term weight (the partner device is the reference)
    F = (g_st,p - g_st,m) / g_unit            short-term weight, |F| <= f_max = g_st_max / g_unit

* **W** is written once into the long-term conductances (write-verify before the run, not counted
  as game pulses): g_lt,p = g_min + max(w, 0) g_unit, g_lt,m = g_min + max(-w, 0) g_unit, clipped
  to [g_min, g_max] and snapped to the device's ``n_levels`` (:func:`memristor.equations.quantise_lt`);
  the forward pass uses the read-back weight.  Sub-threshold update pulses never change g_lt.
* **lambda** is the retention of the volatile conductance: each synapse gets the bias
  V_bias = DeviceParams.bias_for_lambda(lambda) that realises its trained lambda at the step
  duration dt, after clipping lambda to DeviceParams.lambda_range(dt) (the clipped synapses are
  counted); each device then relaxes with its own exp(-dt / tau_i), tau_i including the
  device-to-device factor (:func:`memristor.reference.make_devices` draws it from the seed).
* **the rule.**  Per agent step, after the neuron phase: (1) every device relaxes over dt
  (:func:`memristor.equations.relax`); (2) the neuron side reads F' = (g_st,p - g_st,m) / g_unit
  and the row norm N (it already read both for the pre-activation) and computes the target
  F' / N + gamma h z^T (:func:`conversion.semantics.stpn_plasticity` with lambda = 1: the device
  has applied its own retention); (3) the change dG = (target - F') g_unit is sent as programming
  pulses: a positive change first depresses the minus device (down to 0), the rest potentiates the
  plus device; a negative change the mirror image.  So each device gets at most one pulse per step,
  and a pair with one device at 0 keeps it there (sign-magnitude).
* **pulse inversion.**  The controller inverts the soft bound exactly, in closed form
  (:func:`memristor.equations.soft_bound_fraction`: k = dG / (g_st_max - g_st) to potentiate,
  k = -dG / g_st to depress, k <= 1), from the conductance it reads, and divides by the nominal
  efficacy ``a_st`` (not the device's own draw, which it does not know) -- and, with
  ``compensate_history``, by the facilitation f and availability mu of the device's own pulse
  history.  The pulse has the fixed amplitude ``v_pulse`` (below ``v_lt_threshold``) and the width
  that gives that efficacy (:func:`memristor.equations.width_for_efficacy`), at most
  ``t_pulse_max``.  The device then applies :func:`memristor.equations.pulse` with its own a_st,
  facilitation, history and the pulse's cycle-to-cycle factor.  With an ideal device (no
  variability, no facilitation or depletion, continuous levels, every lambda reachable) the layer
  therefore equals the ideal rule F <- clip(lambda F / N + gamma h z^T, +-f_max) up to float
  rounding: the bound of the ideal rule is the device's g_st_max.
* **cycle-to-cycle noise** is drawn in one place, :func:`c2c_noise`, from (seed, step), so every
  implementation sees the same draws.
* **counted energy**: per pulse V^2 G t_p with G = g_lt + g_st just before it
  (:func:`memristor.equations.pulse_energy`), and the bias energy of every device over each step
  (:func:`memristor.equations.bias_energy`, exact for the relaxation).

The step functions take an ops object (:mod:`mstpn_base.ops`): the NumPy simulator
(:mod:`conversion.simulator`) and the PyTorch layer (:mod:`snn_agent.device_stpn`) evaluate the
same code.  Device parameters, mapping and seed travel in the PlasticSTPN node's ``device`` field
as a versioned block (:meth:`Mapping.to_block`).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from conversion import semantics as sem
from memristor import equations as eq
from memristor import reference as ref
from memristor.params import DeviceParams
from mstpn_base.errors import DataFormatError, MstpnError, ParameterError
from mstpn_base.ops import NUMPY

SCHEMA = "mstpn.device-layer"
VERSION = 1
#: the two devices of a synapse: plus and minus
SIDES = ("p", "m")
#: the volatile state of a device, per batch element
DEVICE_STATE = ("g_st", "r", "q")
#: physical duration of one agent step: 4 emulator frames at 60 Hz [s] (as snn_agent's m-STPN)
DEFAULT_DT = 4.0 / 60.0
_MAPPING_KEYS = {"signed", "devices_per_synapse", "dt_s", "w_max", "g_unit_S", "f_max", "lam_min", "lam_max",
                 "inversion", "compensate_history", "pulse", "t_pulse_max_s", "read"}


@dataclass(frozen=True)
class Mapping:
    """Weights to device pairs (module docstring).  ``dt`` [s] agent step, ``w_max`` weight units
    at full long-term range, ``t_pulse_max`` [s] longest update pulse (None: dt), ``seed`` of the
    device-to-device and cycle-to-cycle draws, ``variability`` / ``noise`` switch them."""

    params: DeviceParams = field(default_factory=DeviceParams)
    dt: float = DEFAULT_DT
    w_max: float = 1.0
    compensate_history: bool = False
    t_pulse_max: float | None = None
    seed: int = 0
    variability: bool = True
    noise: bool = True
    #: fraction of devices with a stuck-at fault (drawn per device from ``seed``): they ignore pulses
    stuck_fraction: float = 0.0
    #: time constant [s] of the long-term retention drift (inf: none) and the weights' age [s]
    #: since they were written, at which the run starts (:func:`memristor.equations.lt_drift`)
    lt_drift_tau: float = math.inf
    lt_age: float = 0.0

    def __post_init__(self):
        p = self.params
        if not isinstance(p, DeviceParams):
            raise ParameterError("Mapping.params must be DeviceParams")
        for name in ("dt", "w_max"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v <= 0:
                raise ParameterError(f"device mapping {name} must be a positive number, got {v!r}")
        tmax = self.dt if self.t_pulse_max is None else self.t_pulse_max
        if isinstance(tmax, bool) or not isinstance(tmax, (int, float)) or not 0 < tmax <= self.dt:
            raise ParameterError(f"t_pulse_max must lie in (0, dt = {self.dt}] s, got {self.t_pulse_max!r}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or not 0 <= self.seed < 2**63:
            raise ParameterError(f"device seed must be an integer in [0, 2^63), got {self.seed!r}")
        for name, lo, hi in (("stuck_fraction", 0.0, 1.0), ("lt_age", 0.0, math.inf)):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not (lo <= v <= hi) or math.isnan(v) \
                    or v == math.inf:
                raise ParameterError(f"device mapping {name} must be a number in [{lo}, {hi}], got {v!r}")
        v = self.lt_drift_tau
        if isinstance(v, bool) or not isinstance(v, (int, float)) or math.isnan(v) or not v > 0:
            raise ParameterError(f"device mapping lt_drift_tau must be a positive number of seconds (inf: no "
                                 f"drift), got {v!r}")

    @property
    def faults(self) -> dict | None:
        """The fault and drift block entries, None when there are none (no stuck devices, no drift)."""
        if self.stuck_fraction == 0 and (self.lt_drift_tau == math.inf or self.lt_age == 0):
            return None
        return {"stuck_fraction": self.stuck_fraction,
                "lt_drift_tau_s": None if self.lt_drift_tau == math.inf else self.lt_drift_tau,
                "lt_age_s": self.lt_age}

    def check_runnable(self) -> None:
        """The parameters can run the layer: sub-threshold pulses whose width sets the efficacy."""
        p = self.params
        if not (0 < p.v_pulse < p.v_lt_threshold):
            raise ParameterError(f"v_pulse ({p.v_pulse} V) must lie in (0, v_lt_threshold = {p.v_lt_threshold} V): "
                                 "update pulses must not reprogram the long-term weights")
        if p.beta_t <= 0 or p.a_st <= 0 or p.g_st_max <= 0:
            raise ParameterError("device parameters give no width-controlled short-term update "
                                 "(beta_t, a_st and g_st_max must be > 0)")

    # -- derived -------------------------------------------------------------------------------
    @property
    def g_unit(self) -> float:
        """Siemens per weight unit, long-term and volatile."""
        return (self.params.g_max - self.params.g_min) / self.w_max

    @property
    def f_max(self) -> float:
        """Largest |F| the volatile range holds [weight units]: g_st_max / g_unit."""
        return self.params.g_st_max / self.g_unit

    @property
    def lam_range(self) -> tuple[float, float]:
        return self.params.lambda_range(self.dt)

    @property
    def t_max(self) -> float:
        return float(self.dt if self.t_pulse_max is None else self.t_pulse_max)

    @property
    def s_ref(self) -> float:
        """Efficacy of a v_pulse pulse of width t_ref."""
        return float(ref.pulse_efficacy(self.params, self.params.v_pulse, self.params.t_ref))

    @property
    def s_max(self) -> float:
        """Efficacy of the longest pulse (v_pulse, t_pulse_max)."""
        return float(ref.pulse_efficacy(self.params, self.params.v_pulse, self.t_max))

    # -- the file block ------------------------------------------------------------------------
    def to_block(self) -> dict:
        """The versioned JSON block of the PlasticSTPN ``device`` field."""
        lo, hi = self.lam_range
        return {"schema": SCHEMA, "version": VERSION, "params": self.params.to_dict(),
                "mapping": {"signed": "differential_pair", "devices_per_synapse": 2, "dt_s": self.dt,
                            "w_max": self.w_max, "g_unit_S": self.g_unit, "f_max": self.f_max,
                            "lam_min": lo, "lam_max": hi, "inversion": "exact",
                            "compensate_history": self.compensate_history,
                            "pulse": "amplitude v_pulse, width from the efficacy",
                            "t_pulse_max_s": self.t_max, "read": "w = (G_p - G_m) / g_unit_S"},
                "seed": self.seed, "variability": self.variability, "noise": self.noise,
                **({"faults": self.faults} if self.faults else {})}

    @classmethod
    def from_block(cls, block) -> "Mapping":
        """Read a ``device`` block (this versioned form, or the earlier {params, mapping} form of
        an m-STPN file, whose missing entries take the defaults); DataFormatError names a problem."""
        if not isinstance(block, dict):
            raise DataFormatError("device block must be a JSON object")
        legacy = "schema" not in block
        if not legacy and block.get("schema") != SCHEMA:
            raise DataFormatError(f"device block schema {block.get('schema')!r} is not {SCHEMA!r}")
        if not legacy and block.get("version") != VERSION:
            raise DataFormatError(f"device block version {block.get('version')!r} is not supported (expected {VERSION})")
        known = {"params", "mapping"} | (set() if legacy else {"schema", "version", "seed", "variability", "noise",
                                                              "faults"})
        if set(block) - known:
            raise DataFormatError(f"device block has unknown keys {sorted(set(block) - known)}")
        if "params" not in block or not isinstance(block.get("mapping"), dict):
            raise DataFormatError("device block needs 'params' and a 'mapping' object")
        mp = block["mapping"]
        if not legacy and set(mp) != _MAPPING_KEYS:
            raise DataFormatError(f"device mapping keys {sorted(mp)} differ from {sorted(_MAPPING_KEYS)}")
        try:
            params = DeviceParams.from_dict(block["params"])
            kw = dict(params=params, dt=_num(mp, "dt_s"), w_max=_num(mp, "w_max"))
            if not legacy:
                if mp["signed"] != "differential_pair" or mp["devices_per_synapse"] != 2 or mp["inversion"] != "exact":
                    raise DataFormatError("device mapping: only the exact-inversion differential pair is defined")
                for name in ("variability", "noise"):
                    if not isinstance(block.get(name), bool):
                        raise DataFormatError(f"device block {name} must be true or false")
                if not isinstance(mp["compensate_history"], bool):
                    raise DataFormatError("device mapping compensate_history must be true or false")
                kw.update(compensate_history=mp["compensate_history"], t_pulse_max=_num(mp, "t_pulse_max_s"),
                          seed=block.get("seed"), variability=block["variability"], noise=block["noise"])
                if "faults" in block:   # optional: absent = no stuck devices, no drift
                    fb = block["faults"]
                    if not isinstance(fb, dict) or set(fb) != {"stuck_fraction", "lt_drift_tau_s", "lt_age_s"}:
                        raise DataFormatError("device block faults must be an object with stuck_fraction, "
                                              "lt_drift_tau_s (null: no drift) and lt_age_s")
                    tau = fb["lt_drift_tau_s"]
                    kw.update(stuck_fraction=_num(fb, "stuck_fraction"), lt_age=_num(fb, "lt_age_s"),
                              lt_drift_tau=math.inf if tau is None else _num(fb, "lt_drift_tau_s"))
            m = cls(**kw)
        except DataFormatError:
            raise
        except MstpnError as exc:
            raise DataFormatError(f"device block: {exc}") from None
        for key, value in (("g_unit_S", m.g_unit), ("f_max", m.f_max)):
            if key in mp and not math.isclose(_num(mp, key), value, rel_tol=1e-12):
                raise DataFormatError(f"device mapping {key} = {mp[key]!r} does not follow from the parameters ({value!r})")
        return m

    def replace(self, **changes) -> "Mapping":
        import dataclasses

        return dataclasses.replace(self, **changes)


def _num(d: dict, key: str) -> float:
    v = d.get(key)
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
        raise DataFormatError(f"device mapping {key} must be a finite number, got {v!r}")
    return float(v)


def ideal_params(lam_lo: float = 1e-3, lam_hi: float = 0.999, dt: float = DEFAULT_DT, **changes) -> DeviceParams:
    """An ideal device: no variability, no facilitation or depletion, continuous levels, and a bias
    range [0, 1] V whose retention covers [lam_lo, lam_hi] at step ``dt``; ``changes`` override fields."""
    tau_hi, tau_lo = -dt / math.log(lam_hi), -dt / math.log(lam_lo)
    v_max = 1.0
    v_tau = v_max / math.log(tau_hi / tau_lo)
    p = dict(d2d_sigma=0.0, c2c_sigma=0.0, ppf_gain=0.0, meta_depletion=0.0, n_levels=0, tau0=tau_hi,
             v_tau=v_tau, v_bias_min=0.0, v_bias_max=v_max)
    p.update(changes)
    return DeviceParams().replace(**p)


# -- long-term part -------------------------------------------------------------------------------
def long_term(ops, m: Mapping, W) -> dict:
    """Long-term conductances [S] of the pair for weights ``W`` (clipped to +-w_max, on the levels),
    after ``m.lt_age`` seconds of retention drift (:func:`memristor.equations.lt_drift`)."""
    p = m.params
    Wc = ops.clip(W, -m.w_max, m.w_max)
    return {side: eq.lt_drift(ops, p, eq.quantise_lt(ops, p, ops.clip(p.g_min + ops.clip(sign * Wc, 0.0, m.w_max)
                                                                      * m.g_unit, p.g_min, p.g_max)),
                              m.lt_age, m.lt_drift_tau)
            for side, sign in (("p", 1.0), ("m", -1.0))}


def stuck_devices(m: Mapping, shape) -> np.ndarray | None:
    """The stuck-at faults: a boolean array (2, *shape) (plus, minus device), each device stuck with
    probability ``m.stuck_fraction``, drawn from the mapping's seed (the one place they are drawn);
    None without faults.  A stuck device ignores every pulse: its volatile conductance holds its
    value (0 from fresh devices); its long-term conductance is the written one (with drift)."""
    if m.stuck_fraction == 0:
        return None
    return np.random.default_rng([m.seed, 4099]).random((2, *shape)) < m.stuck_fraction


def read_weight(m: Mapping, g_p, g_m):
    """The linear read-back w = (G_p - G_m) / g_unit [weight units]."""
    return (g_p - g_m) / m.g_unit


# -- the frozen devices ---------------------------------------------------------------------------
@dataclass
class Devices:
    """The devices of one layer (NumPy, float64): per side ``g_lt``, ``a_st``, ``eta_lt``, ``tau``
    [s], ``v_bias`` [V] (H, K) and the retention factors ``ret``; the read-back ``W``; the number
    of synapses whose lambda lies outside the bias range (``n_lam_clipped``) and of weights beyond
    +-w_max (``n_w_clipped``)."""

    mapping: Mapping
    sides: dict
    W: np.ndarray
    v_bias: np.ndarray
    n_lam_clipped: int
    n_w_clipped: int

    def arrays(self, convert=lambda a: a) -> dict:
        """Per side the arrays the step functions read, converted by ``convert`` (e.g. to tensors)."""
        out = {}
        for side, d in self.sides.items():
            out[side] = {k: convert(d[k]) for k in ("g_lt", "a_st", "eta_lt", "tau", "v_bias") + ("live",) * ("live" in d)}
            out[side]["ret"] = {v: (convert(f) if isinstance(f, np.ndarray) else f) for v, f in d["ret"].items()}
        return out

    def summary(self) -> dict:
        H, K = self.W.shape
        stuck = sum(int(np.count_nonzero(d["live"] == 0)) for d in self.sides.values() if "live" in d)
        return {"synapses": H * K, "devices": 2 * H * K, "stuck_devices": stuck, "lam_clipped": self.n_lam_clipped,
                "w_clipped": self.n_w_clipped, "v_bias_min_V": float(self.v_bias.min()),
                "v_bias_max_V": float(self.v_bias.max()), "seed": self.mapping.seed}


def build(m: Mapping, W, lam) -> Devices:
    """The devices for weights ``W`` and retentions ``lam`` (H, K): biases, draws, g_lt."""
    m.check_runnable()
    W, lam = np.asarray(W, np.float64), np.asarray(lam, np.float64)
    if W.shape != lam.shape or W.ndim != 2:
        raise ParameterError(f"W {W.shape} and lam {lam.shape} must be the same (H, K) shape")
    p = m.params
    lo, hi = m.lam_range
    n_clip = int(np.count_nonzero((lam < lo) | (lam > hi)))
    v_bias = np.clip(p.bias_for_lambda(np.clip(lam, lo, hi), m.dt), p.v_bias_min, p.v_bias_max)
    n = W.size
    batch = ref.make_devices(p, np.concatenate([v_bias.ravel()] * 2), seed=m.seed, variability=m.variability)
    g_lt = long_term(NUMPY, m, W)
    stuck = stuck_devices(m, W.shape)
    sides = {}
    for i, side in enumerate(SIDES):
        cut = slice(i * n, (i + 1) * n)
        tau = batch.tau[cut].reshape(W.shape)
        sides[side] = {"g_lt": g_lt[side], "a_st": batch.a_st[cut].reshape(W.shape),
                       "eta_lt": batch.eta_lt[cut].reshape(W.shape), "tau": tau, "v_bias": v_bias,
                       "ret": eq.retention(NUMPY, p, tau, m.dt)}
        if stuck is not None:   # 1.0: the device takes pulses, 0.0: stuck (stuck_devices)
            sides[side]["live"] = (~stuck[i]).astype(np.float64)
    return Devices(m, sides, read_weight(m, g_lt["p"], g_lt["m"]), v_bias, n_clip,
                   int(np.count_nonzero(np.abs(W) > m.w_max)))


def network_devices(net, device=None, error=ParameterError) -> dict:
    """{node: Devices} for every PlasticSTPN node of ``net`` with ``device`` (a :class:`Mapping` or
    block) or, if None, the node's own device block: the one place a network's devices are built,
    so every backend gets the same draws.  A node without a block raises ``error``."""
    from conversion import graph as g

    out = {}
    for n in net.of_type(g.PlasticSTPN):
        node = net.nodes[n]
        block = device if device is not None else node.device
        if block is None:
            raise error(f"node {n!r} has no device block: the device synapse model needs one "
                        "(an m-STPN file, or device=Mapping(...))")
        m = block if isinstance(block, Mapping) else Mapping.from_block(block)
        out[n] = build(m, node.W, node.lam)
    return out


def init_state(shape, zeros=np.zeros) -> dict:
    """Fresh devices: g_st = r = q = 0, per side, arrays of ``shape`` (B, H, K)."""
    return {side: {v: zeros(shape) for v in DEVICE_STATE} for side in SIDES}


def c2c_noise(m: Mapping, step: int, shape) -> dict | None:
    """The cycle-to-cycle factors of every device's pulse at agent step ``step`` (per side, arrays
    of ``shape``), drawn from (seed, step); None without noise.  The one place they are drawn."""
    if not (m.noise and m.params.c2c_sigma > 0):
        return None
    f = ref.c2c_factors(m.params, np.random.default_rng([m.seed, 7919, int(step)]), (2, *shape))
    return {side: f[i] for i, side in enumerate(SIDES)}


# -- one step -------------------------------------------------------------------------------------
def plasticity(ops, m: Mapping, dev: dict, state: dict, norm, h, z, gamma, noise=None):
    """One plasticity step of the device layer (module docstring).

    ``dev``: :meth:`Devices.arrays`; ``state``: per side {g_st, r, q} (B, H, K); ``norm`` and ``h``
    broadcastable as (B, H, 1), ``z`` as (B, 1, K), ``gamma`` (H, K); ``noise``: :func:`c2c_noise`.
    Returns ``(state, F, pulses)``: the new device state, the read-back F (B, H, K) and per side
    ``(s, width, g_before)``: the signed efficacy (0: no pulse), width [s] and conductance just
    before each pulse [S].
    """
    p = m.params
    relaxed = {side: eq.relax({"g_lt": dev[side]["g_lt"], **state[side]}, dev[side]["ret"]) for side in SIDES}
    gp, gm = relaxed["p"]["g_st"], relaxed["m"]["g_st"]
    F_read = read_weight(m, gp, gm)
    target = sem.stpn_plasticity(ops, F_read, norm, 1.0, gamma, h, z)   # the device has relaxed by lambda
    dG = (target - F_read) * m.g_unit
    up, down = dG > 0, dG < 0
    take_m = ops.where(up, ops.where(dG < gm, dG, gm), 0.0)      # depression of the opposite device first
    take_p = ops.where(down, ops.where(-dG < gp, -dG, gp), 0.0)
    change = {"p": ops.where(up, dG - take_m, -take_p), "m": ops.where(down, -dG - take_p, -take_m)}
    new, pulses = {}, {}
    for side in SIDES:
        st, d = relaxed[side], change[side]
        k = eq.soft_bound_fraction(ops, p, st["g_st"], d)
        gain = p.a_st
        if m.compensate_history:
            gain = gain * eq.facilitation(p, st["r"]) * eq.availability(p, st["q"])
        safe = ops.where(gain > 0, gain, 1.0) if m.compensate_history else gain
        mag = k / safe
        width = eq.width_for_efficacy(p, mag, m.s_ref)
        capped = width > m.t_max
        width = ops.where(capped, m.t_max, width)
        mag = ops.where(capped, m.s_max, mag)
        s = ops.where(d > 0, mag, ops.where(d < 0, -mag, 0.0))
        width = ops.where(s != 0, width, 0.0)
        applied = s if dev[side].get("live") is None else s * dev[side]["live"]   # a stuck device ignores it
        out = eq.pulse(ops, p, dev[side]["a_st"], dev[side]["eta_lt"], st, applied, False,
                       1.0 if noise is None else noise[side])
        new[side] = {v: out[v] for v in DEVICE_STATE}
        pulses[side] = (s, width, st["g_lt"] + st["g_st"])
    return new, read_weight(m, new["p"]["g_st"], new["m"]["g_st"]), pulses


def pulse_tally(m: Mapping, pulses: dict) -> dict:
    """Counted pulses of one step: ``potentiating``, ``depressing`` (numbers) and ``energy_J``
    (sum of V^2 G t_p), as 0-d arrays / tensors of the step's kind."""
    pot = dep = energy = 0
    for s, width, g_before in pulses.values():
        pot = pot + (s > 0).sum()
        dep = dep + (s < 0).sum()
        energy = energy + eq.pulse_energy(m.params.v_pulse, g_before, width).sum()
    return {"potentiating": pot, "depressing": dep, "energy_J": energy}


def add_step_counts(c: dict, tally: dict, bias_energy_J, dt: float, steps: int = 1) -> None:
    """Accumulate ``steps`` device steps of ``dt`` [s] into the counters ``c``
    (:data:`conversion.simulator.DEVICE_COUNTERS`): the pulses and pulse energy of their ``tally``
    (:func:`pulse_tally`) and their bias energy [J]."""
    pot, dep = int(tally["potentiating"]), int(tally["depressing"])
    c["potentiating"] += pot
    c["depressing"] += dep
    c["pulses"] += pot + dep
    c["pulse_energy_J"] += float(tally["energy_J"])
    c["bias_energy_J"] += float(bias_energy_J)
    c["device_steps"] += steps
    c["duration_s"] += steps * dt


def bias_energy(m: Mapping, dev: dict, state: dict):
    """Bias energy [J] of every device over one step that starts in ``state`` (summed)."""
    total = 0
    for side in SIDES:
        d = dev[side]
        total = total + eq.bias_energy(m.params, d["v_bias"], d["g_lt"], state[side]["g_st"], d["tau"], m.dt,
                                       d["ret"]["g_st"]).sum()
    return total
