"""Registry of the device-model implementations; each runs ``simulate(batch, drive, g_lt0=None)``.

| name        | implementation                                   | arithmetic          |
|-------------|--------------------------------------------------|---------------------|
| numpy       | memristor.reference (the reference)              | float64             |
| torch       | memristor.torch_model (differentiable twin)      | float64 by default  |
| brian2      | brian_models.memristor_synapse (Synapses, exact event-driven decay) | float64 |
| brian2-cython | the same, Brian2 cython code-generation target  | float64             |
| lava        | lava_procs.memristor, floating_pt ProcessModel   | float64             |
| lava-fixed  | lava_procs.memristor, bit-accurate fixed_pt model| Loihi-style integers|

Optional backends are imported lazily; a missing one raises
:class:`mstpn_base.errors.BackendUnavailableError` naming what to install.
"""
from __future__ import annotations

import importlib
from typing import Callable

from mstpn_base.errors import BackendUnavailableError, MstpnError

#: name -> (module, function name, extra keyword arguments, what to install if missing)
BACKENDS: dict[str, tuple[str, str, dict, str]] = {
    "numpy": ("memristor.reference", "simulate", {}, "numpy"),
    "torch": ("memristor.torch_model", "simulate", {}, "torch==2.13.0"),
    "brian2": ("brian_models.memristor_synapse", "simulate", {}, "brian2"),
    "brian2-cython": ("brian_models.memristor_synapse", "simulate", {"target": "cython"},
                      "brian2 with cython and a C++ compiler"),
    "lava": ("lava_procs.memristor", "simulate", {"fixed_point": False}, "lava-nc (scripts/setup.sh)"),
    "lava-fixed": ("lava_procs.memristor", "simulate", {"fixed_point": True}, "lava-nc (scripts/setup.sh)"),
}


def get_simulator(name: str, **options) -> Callable:
    """Return ``simulate(batch, drive, g_lt0=None) -> Trace`` for backend ``name``."""
    if name not in BACKENDS:
        raise MstpnError(f"unknown device backend {name!r}; choose one of {', '.join(BACKENDS)}")
    module_name, func, extra, install = BACKENDS[name]
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise BackendUnavailableError(
            f"backend {name!r} is not available ({exc}); install {install}") from None
    fn = getattr(module, func)
    kwargs = {**extra, **options}
    return (lambda batch, drive, g_lt0=None: fn(batch, drive, g_lt0=g_lt0, **kwargs)) if kwargs else fn
