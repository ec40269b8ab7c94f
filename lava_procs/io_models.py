"""A fixed_pt ProcessModel for lava's Injector: the same model with an int32 OutPort, so that the
host's frames reach Lava's fixed_pt processes (int32 InPorts) as integers."""
from __future__ import annotations

import numpy as np

import lava_procs  # noqa: F401  (Python 3.11 compatibility hook before lava)
from lava.magma.core.model.py.ports import PyOutPort
from lava.magma.core.model.py.type import LavaPyType
from lava.proc.io.injector import PyLoihiInjectorModel


class PyLoihiInjectorModelInt(PyLoihiInjectorModel):
    """lava's PyLoihiInjectorModel sending int32 (24-bit) values."""

    out_port: PyOutPort = LavaPyType(PyOutPort.VEC_DENSE, np.int32, precision=24)
