"""The package layers and the backend registry.

Layers, imports only downward (pyproject.toml [tool.importlinter]):
mstpn_base -> memristor -> conversion -> {snn_agent, brian_models, lava_procs} -> mstpn.
"""
from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import grimp
import numpy as np
import pytest

from mstpn_base import registry

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("mstpn_base", "memristor", "conversion", "snn_agent", "brian_models", "lava_procs", "mstpn")


def test_import_contract_is_kept():
    exe = shutil.which("lint-imports", path=str(Path(sys.executable).parent))
    assert exe, "import-linter is a test dependency (pip install -e .[test])"
    r = subprocess.run([exe, "--no-cache"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0 and "1 kept, 0 broken" in r.stdout, r.stdout[-3000:] + r.stderr[-2000:]


@pytest.fixture(scope="module")
def graph():
    return grimp.build_graph(*PACKAGES, include_external_packages=False, cache_dir=None)


def test_no_import_cycles_between_modules(graph):
    """No module imports (directly or not) a module that imports it back, lazy imports included
    (``import`` inside functions counts: grimp reads every import statement).  Packages importing
    their own submodules from ``__init__`` are not cycles of modules and are left out."""
    cycles = []
    modules = sorted(m for m in graph.modules if not _is_package(m))
    for m in modules:
        for imported in graph.find_modules_directly_imported_by(m):
            if imported == m or _is_package(imported):
                continue
            if graph.chain_exists(importer=imported, imported=m):
                cycles.append((m, imported))
    assert not cycles, f"import cycles: {cycles}"


def _is_package(name: str) -> bool:
    path = ROOT.joinpath(*name.split("."))
    return path.is_dir()


def test_no_library_layer_imports_the_app(graph):
    for pkg in PACKAGES[:-1]:
        assert not graph.chain_exists(importer=pkg, imported="mstpn", as_packages=True), pkg


def test_the_contract_catches_an_upward_import(tmp_path):
    """The checker can fail: an upward import (device physics importing the app) breaks it."""
    bad = ROOT / "memristor" / "_upward_probe.py"
    bad.write_text("import mstpn.compare  # noqa: F401\n")
    try:
        g = grimp.build_graph(*PACKAGES, include_external_packages=False, cache_dir=None)
        assert g.chain_exists(importer="memristor", imported="mstpn", as_packages=True)
    finally:
        bad.unlink()


def test_registry_names_every_backend_once():
    names = [s.name for s in registry.BUILTIN]
    assert len(names) == len(set(names))
    assert {"torch", "numpy", "numpy-fixed", "snntorch", "brian2", "lava", "lava-fixed"} <= set(
        registry.default_backends())
    assert set(registry.fixed_backends()) == {"numpy-fixed", "lava-fixed", "loihi2"}
    assert {"numpy", "torch", "brian2", "brian2-cython", "lava", "lava-fixed"} == set(registry.device_backends())
    # every factory string names a module:attribute
    for s in registry.BUILTIN:
        for target in (s.runner, s.device):
            assert target is None or re.fullmatch(r"[\w.]+:\w+", target), target


def test_no_backend_list_is_typed_outside_the_registry():
    """The default backend set stands in one place: no module spells it out again."""
    pattern = re.compile(r"[\"']numpy-fixed[\"']\s*,\s*[\"']lava[\"']")
    hits = [str(p.relative_to(ROOT)) for pkg in PACKAGES for p in (ROOT / pkg).rglob("*.py")
            if p.name != "registry.py" and pattern.search(p.read_text())]
    assert not hits, hits


def test_docs_worked_backend_runs_and_registers(tmp_path):
    """docs/backends.md's minimal backend: extract it, register it, compare it with numpy."""
    text = (ROOT / "docs" / "backends.md").read_text()
    block = re.search(r"<!-- worked-backend -->\s*```python\n(.*?)```", text, re.S)
    assert block, "docs/backends.md lost its worked backend example"
    mod = tmp_path / "my_backend.py"
    mod.write_text(block.group(1))
    sys.path.insert(0, str(tmp_path))
    try:
        import my_backend  # noqa: F401  (registers itself)

        from conversion.convert import build_network
        from mstpn import compare
        from snn_agent.checkpoint import build_policy
        from snn_agent.config import RunConfig

        cfg = RunConfig().validate()
        policy = build_policy(cfg, seed=4).double()
        from conversion.convert import convert_policy
        net = convert_policy(policy)
        frames = np.random.default_rng(0).integers(0, 256, (5, 84, 84)).astype(np.uint8)
        comps, results = compare.compare_sequence(net, frames, ["numpy", "dense-numpy"], policy=policy)
        by = {c.backend: c for c in comps}
        assert by["dense-numpy"].error is None, by["dense-numpy"].error
        assert by["dense-numpy"].agreement_torch == 1.0
        np.testing.assert_allclose(results["dense-numpy"].logits, results["numpy"].logits, rtol=1e-9, atol=1e-12)
        assert build_network  # the example may use it
    finally:
        registry.unregister("dense-numpy")
        sys.path.remove(str(tmp_path))
        sys.modules.pop("my_backend", None)


def test_third_party_backend_through_an_entry_point(tmp_path, monkeypatch):
    """A package that declares [project.entry-points."mstpn.backends"] adds a backend without any
    change here: a distribution on sys.path whose entry point names a BackendSpec."""
    dist = tmp_path / "mysim_mstpn-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: mysim-mstpn\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text("[mstpn.backends]\nmysim = mysim_mstpn:BACKEND\n")
    (tmp_path / "mysim_mstpn.py").write_text(
        "from mstpn_base.registry import BackendSpec\n"
        "BACKEND = BackendSpec('mysim', 'a plug-in simulator', runner='conversion.numpy_backend:make_runner')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    known = registry.backends()
    assert known["mysim"].description == "a plug-in simulator"
    assert "mysim" in registry.network_backends() and "mysim" not in registry.default_backends()
    (tmp_path / "mysim_mstpn.py").write_text("BACKEND = 42\n")
    sys.modules.pop("mysim_mstpn", None)
    with pytest.raises(Exception, match="does not give a BackendSpec"):
        registry.backends()
    sys.modules.pop("mysim_mstpn", None)
