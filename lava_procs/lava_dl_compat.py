"""Make lava-dl 0.6.0's ``lava.lib.dl.netx`` importable here, without touching site-packages.

lava-dl 0.6.0 declares Python < 3.11 and is installed by scripts/setup.sh with
``--ignore-requires-python --no-deps`` (its declared dependencies would replace this project's
pinned torch and numpy).  Two of those dependencies are then missing, torchvision and OpenCV
(``cv2``), and importing netx fails although netx uses neither::

    lava.lib.dl.netx -> netx.hdf5 -> lava.lib.dl.slayer.neuron.rf -> lava.lib.dl.slayer/__init__
      -> slayer.object_detection (YOLO utilities) -> boundingbox/utils.py: import cv2, torchvision

Only ``lava.lib.dl.slayer.object_detection`` (and its submodules: boxes, datasets, YOLO models)
imports torchvision or cv2.  :func:`install` puts an import hook in front of ``sys.meta_path``
that, *only when torchvision or cv2 is not importable*, loads a stand-in for that one subpackage:
an empty package whose attributes raise ImportError naming what is missing.  Nothing else is
replaced: no fake ``torchvision`` or ``cv2`` module is created (other libraries probe for them),
every other lava-dl module is the installed one, and where both are installed the hook is not
installed at all and the real subpackage loads.  :func:`require_netx` installs the hook, imports
lava-nc the way :mod:`lava_procs` does, and returns the ``lava.lib.dl.netx`` module.
"""
from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import importlib.util
import sys
import types

#: the lava-dl subpackage that imports torchvision and cv2 (the YOLO object-detection utilities)
TARGET = "lava.lib.dl.slayer.object_detection"
#: what TARGET imports that lava-dl is installed without here
OPTIONAL = ("torchvision", "cv2")
NETX = "lava.lib.dl.netx"
INSTALL_HINT = ("pip install --ignore-requires-python --no-deps lava-dl==0.6.0 (scripts/setup.sh)")


def missing() -> tuple[str, ...]:
    """The modules of :data:`OPTIONAL` that are not importable."""
    return tuple(m for m in OPTIONAL if importlib.util.find_spec(m) is None)


def needed() -> bool:
    """True where the stand-in is needed (torchvision or cv2 missing)."""
    return bool(missing())


class _StandIn(types.ModuleType):
    """An empty package in place of TARGET or one of its submodules."""

    def __getattr__(self, name):
        if name.startswith("__"):
            raise AttributeError(name)
        raise ImportError(f"{self.__name__}.{name} is not available: lava-dl's object-detection utilities need "
                          f"{' and '.join(self.__missing__)}, which are not installed (netx does not use them)")


class _Loader(importlib.abc.Loader):
    def __init__(self, absent: tuple[str, ...]):
        self.absent = absent

    def create_module(self, spec):
        mod = _StandIn(spec.name)
        mod.__missing__ = self.absent
        return mod

    def exec_module(self, module):
        module.__path__ = []      # a package: its submodules also resolve to stand-ins
        module.__all__ = []


class _Finder(importlib.abc.MetaPathFinder):
    def __init__(self, absent: tuple[str, ...]):
        self.absent = absent

    def find_spec(self, fullname, path, target=None):
        if fullname != TARGET and not fullname.startswith(TARGET + "."):
            return None
        return importlib.machinery.ModuleSpec(fullname, _Loader(self.absent), is_package=True)


def installed() -> bool:
    return any(isinstance(f, _Finder) for f in sys.meta_path)


def install() -> bool:
    """Install the hook once, where :func:`needed`.  Returns True if the stand-in is active."""
    absent = missing()
    if not absent:
        return False
    if not installed():
        if TARGET in sys.modules and not isinstance(sys.modules[TARGET], _StandIn):
            return False  # the real subpackage is already loaded
        sys.meta_path.insert(0, _Finder(absent))
    return True


def require_netx():
    """``lava.lib.dl.netx``, or BackendUnavailableError with the install hint."""
    from mstpn_base.errors import BackendUnavailableError
    import lava_procs

    lava_procs.require_lava()
    if importlib.util.find_spec("lava.lib.dl") is None:
        raise BackendUnavailableError(f"lava-dl is not installed; install it with {INSTALL_HINT}")
    install()
    try:
        return importlib.import_module(NETX)
    except ImportError as exc:
        raise BackendUnavailableError(f"lava-dl's netx is not importable ({exc}); install it with "
                                      f"{INSTALL_HINT}") from None
