"""The one registry of simulator backends that every command reads.

A backend is named once, with what it can do (:class:`BackendSpec`): a *network runner* factory
(runs a converted network, see :mod:`conversion.backend` for the runner contract) and/or a
*device simulator* (runs memristor devices under a pulse drive, see :mod:`memristor.reference`).
Factories are given as ``"module:attribute"`` strings and imported only when used, so a missing
optional package disables only its own backend, and this module imports nothing of the project.

Third-party packages add backends through the entry-point group ``mstpn.backends``: each entry
point names a :class:`BackendSpec` (or a callable returning one)::

    # pyproject.toml of the other package
    [project.entry-points."mstpn.backends"]
    mysim = "mysim_mstpn:BACKEND"

A minimal worked backend is in docs/backends.md (and run by the test suite).
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import Callable

from mstpn_base.errors import BackendUnavailableError, MstpnError, ParameterError

ENTRY_POINT_GROUP = "mstpn.backends"
#: the synapse models of the plastic layer (BackendSpec.synapses)
SYNAPSE_MODELS = ("ideal", "device")


class SynapseModelError(ParameterError):
    """A backend was asked for a synapse model it does not run."""


@dataclass(frozen=True)
class BackendSpec:
    """What a backend is and can do.

    ``runner``: ``"module:factory"``, ``factory(net, **options) -> runner`` (None: no networks).
    ``device``: ``"module:function"``, ``simulate(batch, drive, g_lt0=None, **device_options)``
    (None: no device simulator); ``device_options`` are passed to it.
    ``precision``: "float" or "fixed" (fixed-point backends are checked bit for bit against
    ``numpy-fixed``).  ``closed_loop``: it can play a game frame by frame (else recorded
    sequences only).  ``default``: part of the default set of ``mstpn compare`` / ``mstpn run``.
    ``install``: what to install when it is missing.  ``synapses``: the synapse models of the
    plastic layer its runner can run, ``"ideal"`` (the STPN rule) and/or ``"device"`` (memristor
    device pairs, conversion.device_layer); a runner that offers ``"device"`` takes the options
    ``synapses`` and ``device`` (a conversion.device_layer.Mapping, None: the file's device block).
    """

    name: str
    description: str
    runner: str | None = None
    device: str | None = None
    device_options: dict = field(default_factory=dict)
    precision: str = "float"
    closed_loop: bool = True
    default: bool = False
    install: str = ""
    synapses: tuple = ("ideal",)

    @property
    def fixed(self) -> bool:
        return self.precision == "fixed"


_LAVA = "lava-nc (scripts/setup.sh)"
BUILTIN = (
    BackendSpec("torch", "the PyTorch policy rebuilt from the file's weights (float64), the reference",
                runner="snn_agent.torch_backend:make_runner", device="memristor.torch_model:simulate",
                default=True, install="torch==2.13.0", synapses=("ideal", "device")),
    BackendSpec("numpy", "NumPy event-driven reference simulator (float64)",
                runner="conversion.numpy_backend:make_runner", device="memristor.reference:simulate",
                default=True, install="numpy", synapses=("ideal", "device")),
    BackendSpec("numpy-fixed", "NumPy reference in Loihi-style fixed point (the bit-exact oracle)",
                runner="conversion.numpy_backend:make_fixed_runner", precision="fixed", default=True,
                install="numpy", synapses=("ideal", "device")),
    BackendSpec("snntorch", "rate-coded integrate-and-fire form in snnTorch",
                runner="snn_agent.snntorch_backend:make_runner", default=True, install="snntorch"),
    BackendSpec("brian2", "Brian2 runtime, numpy code-generation target",
                runner="brian_models.network:make_runner", device="brian_models.memristor_synapse:simulate",
                default=True, install="brian2", synapses=("ideal", "device")),
    BackendSpec("brian2-cython", "Brian2 runtime, cython code-generation target",
                runner="brian_models.network:make_cython_runner",
                device="brian_models.memristor_synapse:simulate", device_options={"target": "cython"},
                install="brian2 with cython and a C++ compiler", synapses=("ideal", "device")),
    BackendSpec("brian2-standalone", "Brian2 cpp_standalone device (recorded sequences only)",
                runner="brian_models.network:make_standalone_runner", closed_loop=False,
                install="brian2 with a C++ compiler"),
    BackendSpec("lava", "Lava processes, floating_pt models", runner="lava_procs.network:make_float_runner",
                device="lava_procs.memristor:simulate", device_options={"fixed_point": False},
                default=True, install=_LAVA, synapses=("ideal", "device")),
    BackendSpec("lava-fixed", "Lava processes, bit-accurate fixed_pt models",
                runner="lava_procs.network:make_fixed_runner", device="lava_procs.memristor:simulate",
                device_options={"fixed_point": True}, precision="fixed", default=True, install=_LAVA,
                synapses=("ideal", "device")),
    BackendSpec("loihi2", "Lava on Loihi 2 hardware (needs lava-loihi and a board)",
                runner="lava_procs.network:make_loihi2_runner", precision="fixed",
                install="lava-loihi (Intel INRC) and a Loihi 2 system"),
)


def _entry_point_specs() -> list[BackendSpec]:
    from importlib.metadata import entry_points

    specs = []
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        try:
            obj = ep.load()
            spec = obj() if callable(obj) and not isinstance(obj, BackendSpec) else obj
        except Exception as exc:  # a broken plug-in must not break the built-in backends
            raise BackendUnavailableError(f"backend plug-in {ep.name!r} ({ep.value}) failed to load: {exc}") from None
        if not isinstance(spec, BackendSpec):
            raise MstpnError(f"backend plug-in {ep.name!r} does not give a BackendSpec")
        specs.append(spec)
    return specs


_EXTRA: dict[str, BackendSpec] = {}


def register(spec: BackendSpec) -> None:
    """Add (or replace) a backend at run time (tests, notebooks); plug-ins use the entry points."""
    if not isinstance(spec, BackendSpec):
        raise MstpnError("register() takes a BackendSpec")
    _EXTRA[spec.name] = spec


def unregister(name: str) -> None:
    _EXTRA.pop(name, None)


def backends() -> dict[str, BackendSpec]:
    """Every known backend by name: built-in, then entry points, then :func:`register`-ed."""
    out = {s.name: s for s in BUILTIN}
    out.update({s.name: s for s in _entry_point_specs()})
    out.update(_EXTRA)
    return out


def spec(name: str) -> BackendSpec:
    known = backends()
    if name not in known:
        raise MstpnError(f"unknown backend {name!r}; choose from {', '.join(known)}")
    return known[name]


def network_backends() -> list[str]:
    return [n for n, s in backends().items() if s.runner]


def device_backends() -> list[str]:
    return [n for n, s in backends().items() if s.device]


def default_backends() -> list[str]:
    return [n for n, s in backends().items() if s.default and s.runner]


def fixed_backends() -> list[str]:
    return [n for n, s in backends().items() if s.fixed]


def _load(name: str, target: str, install: str) -> Callable:
    module, _, attr = target.partition(":")
    try:
        mod = importlib.import_module(module)
    except ImportError as exc:
        raise BackendUnavailableError(f"backend {name!r} is not available ({exc}); install {install}") from None
    return getattr(mod, attr)


def synapse_backends(model: str) -> list[str]:
    """The network backends whose runner runs the plastic layer with synapse model ``model``."""
    return [n for n, s in backends().items() if s.runner and model in s.synapses]


def make_runner(name: str, net, synapses: str = "ideal", device=None, **options):
    """Build backend ``name``'s runner for the converted network ``net`` with the plastic layer's
    synapse model ``synapses`` ("ideal" or "device"; ``device``: the device mapping, None: the
    file's device block).

    Raises BackendUnavailableError if its package is missing, SynapseModelError if it does not run
    that synapse model and ``conversion.backend.UnsupportedNetworkError`` if it cannot express the
    network."""
    s = spec(name)
    if not s.runner:
        raise MstpnError(f"backend {name!r} runs devices only, not networks; choose from "
                         f"{', '.join(network_backends())}")
    if synapses not in s.synapses:
        raise SynapseModelError(f"backend {name!r} does not run the {synapses!r} synapse model; backends that "
                                f"do: {', '.join(synapse_backends(synapses)) or 'none'}")
    factory = _load(name, s.runner, s.install)
    if synapses == "ideal" and device is None:
        return factory(net, **options)
    return factory(net, synapses=synapses, device=device, **options)


def device_simulator(name: str, **options) -> Callable:
    """``simulate(batch, drive, g_lt0=None) -> Trace`` of backend ``name``'s device model."""
    s = backends().get(name)
    if s is None or not s.device:
        raise MstpnError(f"unknown device backend {name!r}; choose one of {', '.join(device_backends())}")
    fn = _load(name, s.device, s.install)
    kwargs = {**s.device_options, **options}
    return (lambda batch, drive, g_lt0=None: fn(batch, drive, g_lt0=g_lt0, **kwargs)) if kwargs else fn
