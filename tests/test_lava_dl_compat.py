"""lava_procs.lava_dl_compat: lava-dl's netx importable without torchvision / OpenCV, and the
stand-in used only where they are missing."""
import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

from lava_procs import lava_dl_compat

HAVE_LAVA_DL = importlib.util.find_spec("lava.lib.dl") is not None
ROOT = Path(__file__).resolve().parent.parent
needs_lava_dl = pytest.mark.skipif(not HAVE_LAVA_DL, reason="lava-dl not installed (scripts/setup.sh installs it)")


def _run(code: str, env_extra: dict | None = None) -> subprocess.CompletedProcess:
    env = dict(os.environ, **(env_extra or {}))
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, env=env)


@needs_lava_dl
def test_netx_imports():
    code = ("from lava_procs.lava_dl_compat import require_netx, installed, needed; netx = require_netx(); "
            "import sys; print(netx.hdf5.Network.__name__, installed() == needed(), "
            "'torchvision' in sys.modules and not needed())")
    out = _run(code)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split()[-3:] == ["Network", "True", "False"]


@needs_lava_dl
def test_stand_in_only_for_the_object_detection_package():
    if not lava_dl_compat.needed():
        pytest.skip("torchvision and cv2 are installed: no stand-in is used")
    code = ("from lava_procs.lava_dl_compat import require_netx; require_netx()\n"
            "import sys, lava.lib.dl.slayer as s\n"
            "print(type(sys.modules['lava.lib.dl.slayer.object_detection']).__name__)\n"
            "print(type(sys.modules['lava.lib.dl.slayer.neuron']).__name__)\n"
            "print('torchvision' in sys.modules, 'cv2' in sys.modules)\n"
            "try:\n    s.obd.YOLOBase\nexcept ImportError as e:\n    print('ImportError', 'not installed' in str(e))\n")
    out = _run(code)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.splitlines() == ["_StandIn", "module", "False False", "ImportError True"]


def test_not_installed_when_torchvision_and_cv2_exist(tmp_path):
    # importable (empty) torchvision and cv2 packages: the hook must not be installed
    for name in lava_dl_compat.OPTIONAL:
        (tmp_path / name).mkdir()
        (tmp_path / name / "__init__.py").write_text("")
    code = ("import sys; from lava_procs import lava_dl_compat as c; "
            "print(c.needed(), c.install(), c.installed())")
    out = _run(code, {"PYTHONPATH": os.pathsep.join([str(tmp_path), str(ROOT)])})
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split() == ["False", "False", "False"]


def test_installed_when_torchvision_is_missing(monkeypatch):
    monkeypatch.setattr(lava_dl_compat, "missing", lambda: ("torchvision",))
    before = list(sys.meta_path)
    try:
        assert lava_dl_compat.install() is True
        assert lava_dl_compat.installed()
        assert lava_dl_compat.install() is True      # once only
        assert sum(isinstance(f, lava_dl_compat._Finder) for f in sys.meta_path) - sum(
            isinstance(f, lava_dl_compat._Finder) for f in before) <= 1
    finally:
        sys.meta_path[:] = before
