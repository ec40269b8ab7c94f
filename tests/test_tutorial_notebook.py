"""examples/tutorial.ipynb runs top to bottom in a fresh kernel and is committed without outputs.

The kernel is this test's own interpreter (a kernel spec written to a temporary JUPYTER_PATH, which
takes precedence over any user-installed ``python3`` kernel), so the notebook runs in the project's
environment wherever the test suite runs.  Its cells assert what they show (fit provenance, a
facilitating Brian2 synapse, NumPy-backend agreement with PyTorch, Lava equal to NumPy, the
published energy table reproduced).
"""
from __future__ import annotations

import importlib
import json
import os
import re
import sys
from pathlib import Path

import pytest

from lava_available import needs_lava


def _require(module: str):
    """The notebook tools come with the test extra; a missing one skips (fails under CI's
    MSTPN_REQUIRE_ALL_BACKENDS=1)."""
    try:
        return importlib.import_module(module)
    except ImportError:
        msg = f"running the tutorial needs {module}: pip install -e '.[test]' (scripts/setup.sh)"
        if os.environ.get("MSTPN_REQUIRE_ALL_BACKENDS") == "1":
            pytest.fail(msg, pytrace=False)
        pytest.skip(msg, allow_module_level=True)


nbformat = _require("nbformat")
nbclient = _require("nbclient")
_require("ipykernel")

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK = ROOT / "examples" / "tutorial.ipynb"
KERNEL = "mstpn-test-python"


def _kernel_spec(tmp_path: Path) -> Path:
    d = tmp_path / "jupyter" / "kernels" / KERNEL
    d.mkdir(parents=True)
    (d / "kernel.json").write_text(json.dumps({
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "mstpn (test)", "language": "python"}), encoding="utf-8")
    return tmp_path / "jupyter"


def test_notebook_is_committed_without_outputs():
    nb = nbformat.read(NOTEBOOK, as_version=4)
    nbformat.validate(nb)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert len(code) >= 5
    assert all(not c.outputs and c.execution_count is None for c in code)
    text = "\n".join(c.source for c in nb.cells)
    for needle in ("fit_file", "synapse_equations", "compare_sequence", 'device_simulator("lava")',
                   "lava_processes", "published_reproduction", "energy_report"):
        assert needle in text, needle


@pytest.mark.slow
@pytest.mark.brian2
@needs_lava   # the tutorial's Lava step
def test_tutorial_notebook_executes(tmp_path, monkeypatch):
    monkeypatch.setenv("JUPYTER_PATH", str(_kernel_spec(tmp_path)))
    nb = nbformat.read(NOTEBOOK, as_version=4)
    client = nbclient.NotebookClient(nb, kernel_name=KERNEL, timeout=120,
                                     resources={"metadata": {"path": str(ROOT / "examples")}})
    client.execute()      # raises CellExecutionError (with the traceback) if any cell fails
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    text = "".join(o.get("text", "") for o in outputs if o.output_type == "stream")
    assert "fitted-to-user-data" in text                    # provenance of the fitted parameters
    assert "numpy-fixed" in text and "| torch |" in text    # the comparison table
    # own Lava graph (Lava's Conv and Dense sum in another order than NumPy: the float tolerance 1e-9)
    lava = re.search(r"Lava graph: 4 frames x \d+ steps; max \|logit difference\| to NumPy: (\S+)\n", text)
    assert lava and float(lava.group(1)) < 1e-9, text
    assert "memristive total" in text                       # the published energy table
    assert any("image/png" in o.get("data", {}) for o in outputs)   # the figures rendered
