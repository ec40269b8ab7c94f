"""What a run did, per layer: the activity counts every energy model consumes.

A run is a :class:`RunCounts`: the game's physical length (emulator ``frames`` at
``frame_rate_hz``, ``steps`` agent steps of ``frameskip`` frames) and one :class:`LayerCounts`
per layer.  Counts are totals over the whole run (not per step).

* the dense STPN (and any dense layer) is counted analytically: :func:`stpn_layer_counts`,
  :func:`pong_policy_counts`;
* an event-driven simulator (``conversion``) fills :class:`LayerCounts` itself, e.g. with
  :func:`event_layer_counts` from its per-layer event and update tallies.

A JSON counts file (schema ``mstpn.energy-counts``) carries a :class:`RunCounts` between tools;
a run with the device synapse model adds what its device pairs counted (:class:`DeviceCounts`,
the optional ``device`` block: pulses, their energy sum V^2 G t_p, the bias energy).
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path

from mstpn.energy import constants as C
from mstpn_base.errors import DataFormatError, ParameterError
from mstpn_base.io import atomic_write_json, read_json

SCHEMA = "mstpn.energy-counts"
SCHEMA_VERSION = 1

_COUNT_FIELDS = ("n_synapses", "plastic_synapses", "dense_macs", "synaptic_ops", "events",
                 "update_pulses", "neuron_updates")


def _count(name: str, v) -> int:
    """A non-negative integer count, or ParameterError naming it."""
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise ParameterError(f"count {name} must be a number, got {v!r}")
    if isinstance(v, float):
        if not math.isfinite(v):
            raise ParameterError(f"count {name} must be finite, got {v!r}")
        if v != int(v):
            raise ParameterError(f"count {name} must be a whole number, got {v!r}")
    if v < 0:
        raise ParameterError(f"count {name} must be >= 0, got {v!r}")
    return int(v)


@dataclass(frozen=True)
class LayerCounts:
    """Activity of one layer over a run (all totals, dimensionless counts).

    n_synapses       weights of the layer (connectivity, not activity)
    plastic_synapses synapses with short-term plasticity (the STPN's H*(I+H); 0 for conv/linear)
    dense_macs       multiply-accumulates of a dense, every-step evaluation
    synaptic_ops     event-driven synaptic ops: for each incoming event, one op per fan-out synapse
    events           events (spikes / graded deltas) delivered into the layer (spike transport)
    update_pulses    plastic-synapse updates (memristor pulses): one per plastic synapse per step
                     in the dense STPN, fewer with event-driven / thresholded updates
    neuron_updates   neuron state updates (one per neuron per step when every neuron is updated)
    memristive       True if the layer's synapses are memristive devices in the memristive scenario
    """

    name: str
    n_synapses: int
    plastic_synapses: int = 0
    dense_macs: int = 0
    synaptic_ops: int = 0
    events: int = 0
    update_pulses: int = 0
    neuron_updates: int = 0
    memristive: bool = False

    def __post_init__(self):
        if not isinstance(self.name, str) or not self.name:
            raise ParameterError(f"layer name must be a non-empty string, got {self.name!r}")
        for f in _COUNT_FIELDS:
            object.__setattr__(self, f, _count(f"{self.name}.{f}", getattr(self, f)))
        if not isinstance(self.memristive, bool):
            raise ParameterError(f"{self.name}.memristive must be true or false, got {self.memristive!r}")
        if self.plastic_synapses > self.n_synapses:
            raise ParameterError(f"{self.name}: plastic_synapses ({self.plastic_synapses}) exceeds "
                                 f"n_synapses ({self.n_synapses})")


def _energy(name: str, v) -> float:
    """A finite number >= 0 (joules, seconds), or ParameterError naming it."""
    try:
        ok = not isinstance(v, bool) and isinstance(v, (int, float)) and math.isfinite(v) and v >= 0
    except OverflowError:   # an integer beyond the float range
        ok = False
    if not ok:
        raise ParameterError(f"{name} must be a finite number >= 0, got {v!r:.40}")
    return float(v)


#: the counters of a device run (conversion.simulator.DEVICE_COUNTERS), as DeviceCounts fields
DEVICE_COUNTS = ("pulses", "potentiating", "depressing", "pulse_energy_J", "bias_energy_J", "device_steps",
                 "duration_s")


@dataclass(frozen=True)
class DeviceCounts:
    """What a run with the device synapse model counted in its memristive layer ``layer`` (the
    runner's ``device_stats``, :data:`conversion.simulator.DEVICE_COUNTERS`), totals over the run.

    pulses           update pulses its device pairs were sent (= potentiating + depressing)
    pulse_energy_J   counted sum of V_p^2 G t_p over those pulses (G = g_lt + g_st just before each)
    bias_energy_J    counted bias energy of every device over every step (its own V_b and G)
    device_steps     agent steps x batch the devices ran; ``duration_s`` their physical duration
    devices_per_synapse  2 (a differential pair); ``seed`` of the device draws; ``backend`` that ran it
    """

    layer: str
    pulses: int
    potentiating: int
    depressing: int
    pulse_energy_J: float
    bias_energy_J: float
    device_steps: int
    duration_s: float
    devices_per_synapse: int = 2
    seed: int | None = None
    backend: str = ""

    def __post_init__(self):
        if not isinstance(self.layer, str) or not self.layer:
            raise ParameterError(f"device.layer must be a layer name, got {self.layer!r}")
        for f in ("pulses", "potentiating", "depressing", "device_steps"):
            object.__setattr__(self, f, _count(f"device.{f}", getattr(self, f)))
        for f in ("pulse_energy_J", "bias_energy_J", "duration_s"):
            object.__setattr__(self, f, _energy(f"device.{f}", getattr(self, f)))
        if self.pulses != self.potentiating + self.depressing:
            raise ParameterError(f"device.pulses ({self.pulses}) must equal device.potentiating + device.depressing "
                                 f"({self.potentiating} + {self.depressing})")
        if isinstance(self.devices_per_synapse, bool) or self.devices_per_synapse not in (1, 2):
            raise ParameterError(f"device.devices_per_synapse must be 1 or 2, got {self.devices_per_synapse!r}")
        sd = self.seed
        if sd is not None and (isinstance(sd, bool) or not isinstance(sd, int) or not 0 <= sd < 2**63):
            raise ParameterError(f"device.seed must be null or an integer in [0, 2^63), got {sd!r}")
        if not isinstance(self.backend, str):
            raise ParameterError(f"device.backend must be a string, got {self.backend!r}")

    @classmethod
    def from_stats(cls, layer: str, stats: dict, seed: int | None = None, backend: str = "",
                   devices_per_synapse: int = 2) -> "DeviceCounts":
        """From a runner's ``device_stats[layer]`` (the counters of conversion.simulator.DEVICE_COUNTERS)."""
        missing = [k for k in DEVICE_COUNTS if k not in stats]
        if missing:
            raise ParameterError(f"device stats of {layer!r} lack {missing}")
        return cls(layer, **{k: stats[k] for k in DEVICE_COUNTS}, devices_per_synapse=devices_per_synapse,
                   seed=seed, backend=backend)

    def check_against(self, run: "RunCounts") -> None:
        """The block describes ``run``: a memristive layer of it, the same number of steps, at most one
        pulse per device per step."""
        names = [layer.name for layer in run.layers]
        if self.layer not in names:
            raise ParameterError(f"device.layer {self.layer!r} is not a layer of the run ({names})")
        layer = run.layer(self.layer)
        if not layer.memristive:
            raise ParameterError(f"device.layer {self.layer!r} is not a memristive layer")
        if self.device_steps != run.steps:
            raise ParameterError(f"device.device_steps ({self.device_steps}) must equal the run's steps ({run.steps})")
        most = self.devices_per_synapse * layer.n_synapses * self.device_steps
        if self.pulses > most:
            raise ParameterError(f"device.pulses ({self.pulses}) exceeds one pulse per device per step ({most})")

    @property
    def energy_J(self) -> float:
        return self.pulse_energy_J + self.bias_energy_J

    @classmethod
    def from_dict(cls, data) -> "DeviceCounts":
        """The ``device`` block of a counts file; DataFormatError names a missing or bad field."""
        if not isinstance(data, dict):
            raise DataFormatError(f"counts file: device must be an object, got {data!r:.40}")
        known = {f.name for f in fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise DataFormatError(f"counts file: unknown keys in device: {sorted(unknown)} (known: {sorted(known)})")
        missing = [k for k in ("layer", *DEVICE_COUNTS) if k not in data]
        if missing:
            raise DataFormatError(f"counts file: device.{missing[0]} is missing")
        try:
            return cls(**data)
        except ParameterError as exc:
            raise DataFormatError(f"counts file: {exc}") from None


@dataclass(frozen=True)
class RunCounts:
    """A run: its physical length and per-layer counts.

    ``frames`` emulator frames at ``frame_rate_hz`` [Hz] give the duration [s]; ``steps`` agent
    steps (policy evaluations) of ``frameskip`` frames each (the last one may be cut short when the
    game ends, so frames <= steps * frameskip).
    """

    layers: tuple[LayerCounts, ...]
    steps: int
    frames: int
    frameskip: int = int(C.FRAMESKIP.value)
    frame_rate_hz: float = C.FRAME_RATE_HZ.value
    source: str = ""
    #: what the device pairs counted, for a run with the device synapse model (None: an ideal run)
    device: DeviceCounts | None = None

    def __post_init__(self):
        object.__setattr__(self, "layers", tuple(self.layers))
        if not all(isinstance(layer, LayerCounts) for layer in self.layers):
            raise ParameterError("layers must be LayerCounts")
        names = [layer.name for layer in self.layers]
        if len(set(names)) != len(names):
            raise ParameterError(f"layer names must be unique, got {names}")
        for f in ("steps", "frames"):
            object.__setattr__(self, f, _count(f, getattr(self, f)))
        object.__setattr__(self, "frameskip", _count("frameskip", self.frameskip))
        if self.frameskip < 1:
            raise ParameterError("frameskip must be >= 1")
        fr = self.frame_rate_hz
        if isinstance(fr, bool) or not isinstance(fr, (int, float)) or not math.isfinite(fr) or fr <= 0:
            raise ParameterError(f"frame_rate_hz must be a positive number of Hz, got {fr!r}")
        if self.frames > self.steps * self.frameskip:
            raise ParameterError(f"{self.frames} frames do not fit in {self.steps} steps of "
                                 f"{self.frameskip} frames")
        if self.device is not None:
            if not isinstance(self.device, DeviceCounts):
                raise ParameterError("device must be DeviceCounts or None")
            self.device.check_against(self)

    @property
    def duration_s(self) -> float:
        """Physical duration of the run [s] = frames / frame_rate_hz."""
        return self.frames / self.frame_rate_hz

    def layer(self, name: str) -> LayerCounts:
        for layer in self.layers:
            if layer.name == name:
                return layer
        raise ParameterError(f"no layer {name!r}; layers are {[l.name for l in self.layers]}")

    # -- JSON ------------------------------------------------------------------------------
    def to_dict(self) -> dict:
        d = {"schema": SCHEMA, "version": SCHEMA_VERSION}
        d.update({f.name: getattr(self, f.name) for f in fields(self) if f.name not in ("layers", "device")})
        d["duration_s"] = self.duration_s
        d["layers"] = [asdict(layer) for layer in self.layers]
        if self.device is not None:   # optional: absent in an ideal run's file
            d["device"] = asdict(self.device)
        return d

    @classmethod
    def from_dict(cls, data) -> "RunCounts":
        if not isinstance(data, dict) or data.get("schema") != SCHEMA:
            raise DataFormatError(f"not an energy counts file (expected schema {SCHEMA!r})")
        if data.get("version") != SCHEMA_VERSION:
            raise DataFormatError(f"counts file version {data.get('version')!r} is not supported "
                                  f"(expected {SCHEMA_VERSION})")
        run_keys = {f.name for f in fields(cls)} | {"schema", "version", "duration_s"}
        unknown = set(data) - run_keys
        if unknown:
            raise DataFormatError(f"unknown keys in counts file: {sorted(unknown)}")
        layers = data.get("layers")
        if not isinstance(layers, list) or not layers:
            raise DataFormatError("counts file needs a non-empty 'layers' list")
        layer_keys = {f.name for f in fields(LayerCounts)}
        parsed = []
        for i, entry in enumerate(layers):
            if not isinstance(entry, dict):
                raise DataFormatError(f"layer {i} must be an object")
            bad = set(entry) - layer_keys
            if bad:
                raise DataFormatError(f"layer {i}: unknown keys {sorted(bad)} (known: {sorted(layer_keys)})")
            if "name" not in entry or "n_synapses" not in entry:
                raise DataFormatError(f"layer {i}: 'name' and 'n_synapses' are required")
            parsed.append(LayerCounts(**entry))
        for key in ("steps", "frames"):
            if key not in data:
                raise DataFormatError(f"counts file has no {key!r}")
        kw = {k: data[k] for k in ("steps", "frames", "frameskip", "frame_rate_hz", "source") if k in data}
        run = cls(layers=tuple(parsed), **kw)
        if data.get("device") is None:
            return run
        device = DeviceCounts.from_dict(data["device"])
        try:
            return replace(run, device=device)
        except ParameterError as exc:
            raise DataFormatError(f"counts file: {exc}") from None

    def save(self, path) -> None:
        atomic_write_json(path, self.to_dict())

    @classmethod
    def load(cls, path) -> "RunCounts":
        path = Path(path)
        if not path.is_file():
            raise DataFormatError(f"{path}: no such counts file")
        return cls.from_dict(read_json(path))


# -- time base ----------------------------------------------------------------------------------
def frames_for_steps(steps: int, frameskip: int = int(C.FRAMESKIP.value)) -> int:
    """Emulator frames of ``steps`` full agent steps."""
    return _count("steps", steps) * _count("frameskip", frameskip)


def steps_for_frames(frames: int, frameskip: int = int(C.FRAMESKIP.value)) -> int:
    """Agent steps needed to cover ``frames`` frames (the last step may be cut short)."""
    frames, frameskip = _count("frames", frames), _count("frameskip", frameskip)
    if frameskip < 1:
        raise ParameterError("frameskip must be >= 1")
    return -(-frames // frameskip)


# -- analytic counts of dense layers --------------------------------------------------------------
def stpn_synapses(n_in: int, n_hidden: int) -> int:
    """Synapses of a recurrent STPN layer: H * (I + H) (169,984 for I = 2592, H = 64)."""
    n_in, n_hidden = _count("n_in", n_in), _count("n_hidden", n_hidden)
    return n_hidden * (n_in + n_hidden)


def stpn_layer_counts(n_in: int, n_hidden: int, steps: int, name: str = "stpn",
                      memristive: bool = True) -> LayerCounts:
    """Dense recurrent STPN over ``steps`` agent steps (every synapse active every step).

    Per step: H*(I+H) MACs; I+H input values delivered (each a dense 'event', so synaptic ops =
    MACs); one update pulse per plastic synapse (:data:`constants.PULSES_PER_SYNAPSE_STEP`);
    H neuron updates.
    """
    steps = _count("steps", steps)
    n = stpn_synapses(n_in, n_hidden)
    per = int(C.PULSES_PER_SYNAPSE_STEP.value)
    return LayerCounts(name, n_synapses=n, plastic_synapses=n, dense_macs=n * steps,
                       synaptic_ops=n * steps, events=(n_in + n_hidden) * steps,
                       update_pulses=per * n * steps, neuron_updates=n_hidden * steps,
                       memristive=memristive)


def dense_layer_counts(name: str, n_synapses: int, macs_per_step: int, n_inputs: int,
                       n_outputs: int, steps: int) -> LayerCounts:
    """A non-plastic layer evaluated densely every step (conv: weights shared, so MACs > synapses)."""
    steps = _count("steps", steps)
    macs = _count("macs_per_step", macs_per_step) * steps
    return LayerCounts(name, n_synapses=n_synapses, dense_macs=macs, synaptic_ops=macs,
                       events=_count("n_inputs", n_inputs) * steps,
                       neuron_updates=_count("n_outputs", n_outputs) * steps)


def conv2d_counts(name: str, c_in: int, c_out: int, k: int, stride: int, h_in: int, w_in: int,
                  steps: int) -> LayerCounts:
    """Dense Conv2d (no padding): MACs per step = c_out * h_out * w_out * c_in * k * k."""
    h_out, w_out = (h_in - k) // stride + 1, (w_in - k) // stride + 1
    if h_out < 1 or w_out < 1:
        raise ParameterError(f"{name}: kernel {k} does not fit a {h_in}x{w_in} input")
    macs = c_out * h_out * w_out * c_in * k * k
    return dense_layer_counts(name, c_out * c_in * k * k, macs, c_in * h_in * w_in,
                              c_out * h_out * w_out, steps)


def linear_counts(name: str, n_in: int, n_out: int, steps: int) -> LayerCounts:
    """Dense Linear layer: n_in * n_out MACs per step."""
    return dense_layer_counts(name, n_in * n_out, n_in * n_out, n_in, n_out, steps)


def pong_policy_counts(steps: int, frames: int | None = None, n_actions: int = int(C.PONG_N_ACTIONS.value),
                       hidden: int = int(C.PONG_HIDDEN.value), source: str = "analytic dense Pong policy"
                       ) -> RunCounts:
    """The whole reference Pong policy, dense, over ``steps`` agent steps.

    84x84x1 -> Conv2d(1,16,k8,s4) -> Conv2d(16,32,k4,s2) -> flatten 2592 -> STPN(H) -> policy
    head Linear(H, n_actions) and value head Linear(H, 1).  Only the STPN is memristive.
    ``frames`` defaults to ``steps * frameskip``.
    """
    frames = frames_for_steps(steps) if frames is None else frames
    n_in = 32 * 9 * 9
    assert n_in == C.PONG_CONV_FEATURES.value
    layers = (
        conv2d_counts("conv1", 1, 16, 8, 4, 84, 84, steps),
        conv2d_counts("conv2", 16, 32, 4, 2, 20, 20, steps),
        stpn_layer_counts(n_in, hidden, steps, name="stpn"),
        linear_counts("policy_head", hidden, n_actions, steps),
        linear_counts("value_head", hidden, 1, steps),
    )
    return RunCounts(layers, steps=steps, frames=frames, source=source)


def published_game_counts(stpn_only: bool = True) -> RunCounts:
    """The publication's game (730 agent steps, 2,920 frames; see constants.PUB_GAME_STEPS): the
    STPN layer alone (``stpn_only``, the publication's comparison scope) or the whole policy."""
    steps = int(C.PUB_GAME_STEPS.value)
    src = "published Pong game (730 steps, inferred from 35.6 mJ / (4.3 nW x 169,984))"
    if stpn_only:
        layer = stpn_layer_counts(int(C.PONG_CONV_FEATURES.value), int(C.PONG_HIDDEN.value), steps)
        return RunCounts((layer,), steps=steps, frames=frames_for_steps(steps), source=src)
    return pong_policy_counts(steps, source=src)


# -- event-driven counts (for conversion's simulator) ---------------------------------------------
def event_layer_counts(name: str, n_synapses: int, fan_out: int, events: int, steps: int,
                       n_neurons: int, update_pulses: int = 0, plastic_synapses: int = 0,
                       neuron_updates: int | None = None, memristive: bool = False) -> LayerCounts:
    """Counts of an event-driven layer: synaptic ops = events * fan_out (each incoming event
    touches the ``fan_out`` synapses of its presynaptic unit); ``dense_macs`` stays the dense
    equivalent n_synapses * steps for comparison.  ``neuron_updates`` defaults to every neuron
    every step (Loihi updates all compartments each timestep)."""
    steps, events, fan_out = _count("steps", steps), _count("events", events), _count("fan_out", fan_out)
    nu = _count("n_neurons", n_neurons) * steps if neuron_updates is None else neuron_updates
    return LayerCounts(name, n_synapses=n_synapses, plastic_synapses=plastic_synapses,
                       dense_macs=_count("n_synapses", n_synapses) * steps, synaptic_ops=events * fan_out,
                       events=events, update_pulses=update_pulses, neuron_updates=nu, memristive=memristive)
