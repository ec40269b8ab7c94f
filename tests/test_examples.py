"""The examples run as a researcher would run them, and print what they claim."""
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def run(*args):
    return subprocess.run([sys.executable, *map(str, args)], capture_output=True, text=True, timeout=300, cwd=ROOT)


def test_brian2_example(tmp_path):
    png = tmp_path / "g.png"
    r = run("examples/brian2_memristive_synapses.py", "--duration", "0.5", "--out", png)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "output spikes" in r.stdout and png.stat().st_size > 0


def test_lava_example():
    pytest.importorskip("lava_procs.memristor")
    r = run("examples/lava_memristor_array.py")
    assert r.returncode == 0, r.stderr[-2000:]
    lines = [l for l in r.stdout.splitlines() if "G after the burst" in l]
    assert [l.split()[0] for l in lines] == ["floating_pt", "fixed_pt"]


@pytest.mark.parametrize("flag", [[], ["--fixed-point"]])
def test_converted_network_in_ones_own_lava_graph(flag):
    """lava_processes: the converted network wired to a user's own RingBuffer source and sink plays
    the same actions as the NumPy reference; fixed point: the same logits exactly; floating point:
    within 1e-9 (the Lava float tolerance of tests/test_backends_compare.py: Lava's own Conv and
    Dense sum in another order than the reference's kernels)."""
    pytest.importorskip("lava_procs.memristor")
    r = run("examples/lava_converted_network.py", "--frames", "6", *flag)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "actions equal to the NumPy reference on 100% of the frames" in r.stdout
    diff = float(r.stdout.split("max |logit difference|")[1].split()[0])
    assert diff == 0.0 if flag else diff < 1e-9
