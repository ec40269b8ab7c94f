"""lava_procs.lava_compat: lava-nc 0.10.0 importable on Python 3.11 without editing site-packages."""
import hashlib
import importlib.util
import subprocess
import sys

import pytest

from lava_procs import lava_compat

SRC_SNIPPET = '''
from dataclasses import dataclass, InitVar

@dataclass
class ByteEncoder:
    base: int = 0

@dataclass
class CoreEncoder:
    x: ByteEncoder = ByteEncoder()
    y: ByteEncoder  =  ByteEncoder()
'''


def test_patch_source_gives_fresh_defaults():
    ns = {}
    exec(compile(lava_compat.patch_source(SRC_SNIPPET), "<snippet>", "exec"), ns)
    a, b = ns["CoreEncoder"](), ns["CoreEncoder"]()
    assert a.x == ns["ByteEncoder"]() and a.x is not b.x and a.y is not b.y


@pytest.mark.skipif(sys.version_info < (3, 11), reason="the failure only exists on Python >= 3.11")
def test_unpatched_source_fails_on_this_python():
    with pytest.raises(ValueError, match="mutable default"):
        exec(compile(SRC_SNIPPET, "<snippet>", "exec"), {})


def test_patch_refuses_unknown_source():
    with pytest.raises(ImportError, match="unexpected source"):
        lava_compat.patch_source("x = 1\n")


def test_noop_on_python_310(monkeypatch):
    monkeypatch.setattr(sys, "version_info", (3, 10, 14))
    before = list(sys.meta_path)
    assert lava_compat.install() is False
    assert sys.meta_path == before


def test_lava_imports_and_site_packages_untouched():
    spec = importlib.util.find_spec(lava_compat.TARGET)
    if spec is None:
        pytest.skip("lava-nc not installed")
    digest = hashlib.sha256(open(spec.origin, "rb").read()).hexdigest()
    code = ("import lava_procs; from lava.magma.compiler.var_model import CoreEncoder; "
            "a, b = CoreEncoder(), CoreEncoder(); assert a.x is not b.x; print('ok')")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == "ok"
    assert hashlib.sha256(open(spec.origin, "rb").read()).hexdigest() == digest


@pytest.mark.parametrize("before, expect", [
    ("from tqdm import tqdm; list(tqdm(range(2), disable=False))", "ok fork"),   # tqdm fixes 'fork'
    ("", "ok fork"),                                                             # nothing fixed yet
    ("import multiprocessing as mp; mp.set_start_method('spawn')", "RuntimeError 'fork'"),
])
def test_lava_runtime_imports_after_the_start_method_was_fixed(before, expect):
    """lava's messaging module calls mp.set_start_method('fork') at import; after tqdm (which fixes
    the start method through its multiprocessing lock) that raised 'context has already been set'
    and the main job's Lava comparison did not run."""
    if importlib.util.find_spec(lava_compat.TARGET) is None:
        pytest.skip("lava-nc not installed")
    code = (f"{before}\nimport multiprocessing as mp, lava_procs\ntry:\n    lava_procs.require_lava()\n"
            f"    import lava.magma.runtime.message_infrastructure.multiprocessing\n"
            f"    print('ok', mp.get_start_method())\nexcept RuntimeError as e:\n"
            f"    print('RuntimeError', \"'fork'\" if \"'fork'\" in str(e) else str(e))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().splitlines()[-1] == expect
