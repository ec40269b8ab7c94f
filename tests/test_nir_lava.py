"""Plain NIR graphs on Lava (lava_procs.nir_lava), the standard part of the project's files on
snnTorch, and ``mstpn compare GRAPH.nir`` (docs/nir.md).

Lava runs every graph in its own conventions (reset to v_reset, ``delay="synapse"``: a Dense /
Conv delivers one step later); the NumPy reference is run in those conventions and the spike
trains must be identical, the voltages / currents / outputs within ``TOL_LAVA`` of
``max(1, max |v|)`` (both float64, another order of operations; measured <= 1e-15).
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import nir
import numpy as np
import pytest

from conversion import nir_semantics as sem
from conversion.nir_graph import NirProgram, agreement, synthetic_input
from mstpn_base.errors import DataFormatError, ParameterError

sys.path.insert(0, str(Path(__file__).resolve().parent))
from lava_available import needs_lava  # noqa: E402
from test_nir_graphs import DATA, _graph, _primitive_graph, _rec_max_rel  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
DT = 1e-4
#: voltage tolerance relative to max(1, max |v|): float64 on both sides
TOL_LAVA = 1e-9


def _run_lava(p, x, **kw):
    from lava_procs.nir_lava import run_lava
    return run_lava(p, x, **kw)


def _assert_agrees(ref, other, tol=TOL_LAVA):
    rows = agreement(ref, other)
    for name, row in rows.items():
        assert row.get("spike_mismatches", 0) == 0, (name, row)
    for var in ("v", "i", "out"):
        assert _rec_max_rel(rows, var) <= tol, (var, rows)
    return rows


# -- the NumPy convention Lava runs in --------------------------------------------------------------------
def test_synapse_delay_convention():
    """delay='synapse': an Affine sends at step t what it computed at t - 1 (its bias at step 0);
    in LIF <-> Linear the loop carries one step (the synapse's), not two."""
    one = np.ones(1)
    g = _graph(nir.Affine(weight=np.array([[2.0]]), bias=np.array([0.5])), input_shape=[1])
    rec = NirProgram(g).run(np.array([[1.0], [3.0], [0.0]]), dt=1.0, delay="synapse")
    assert rec.data["output"]["out"][:, 0].tolist() == [0.5, 2.5, 6.5]
    lif = nir.LIF(tau=one, r=one, v_leak=0 * one, v_threshold=0.5 * one, v_reset=0 * one)
    g = nir.NIRGraph(nodes={"in": nir.Input(input_type={"input": np.array([1])}), "lif": lif,
                            "rec": nir.Linear(weight=np.array([[1e6]])),
                            "out": nir.Output(output_type={"output": np.array([1])})},
                     edges=[("in", "lif"), ("lif", "rec"), ("rec", "lif"), ("lif", "out")])
    x = np.zeros((4, 1))
    x[0] = 1e3
    rec = NirProgram(g).run(x, dt=1e-3, integration="euler", delay="synapse")
    assert rec.data["lif"]["out"][:, 0].tolist() == [1, 1, 1, 1]


# -- published graphs --------------------------------------------------------------------------------------
PUBLISHED = [("lif_norse", DT), ("lif_rockpool", DT), ("two_lif_neurons", DT), ("braille_noDelay_bias_zero", DT),
             ("braille_noDelay_noBias_subtract", DT)]


@needs_lava
@pytest.mark.lava
@pytest.mark.parametrize("name, dt", PUBLISHED)
@pytest.mark.parametrize("integration", sem.INTEGRATIONS)
def test_published_graph_numpy_equals_lava(name, dt, integration):
    from lava.proc.dense.process import Dense
    from lava.proc.lif.process import LIF

    from lava_procs.nir_lava import build

    p = NirProgram(DATA / f"{name}.nir")
    x = synthetic_input(p.input_shape, 300, 0.3, seed=1)
    net = build(p, x, dt, integration)
    procs = [q for qs in net.procs.values() for q in qs]
    neurons = [n for n, k in p.kinds.items() if k in sem.NEURONS]
    assert all(any(isinstance(q, LIF) for q in net.procs[n]) for n in neurons)   # Lava's own LIF
    assert any(isinstance(q, Dense) for q in procs)
    rec = net.run()
    ref = p.run(x, dt=dt, integration=integration, delay="synapse")
    rows = _assert_agrees(ref, rec)
    assert sum(r.get("spikes_ref", 0) for r in rows.values()) >= 2
    # the convention matters: against the no-delay reference the spikes differ
    if name == "lif_norse":
        rows = agreement(p.run(x, dt=dt, integration=integration, delay="none"), rec)
        assert rows["1"]["spike_mismatches"] > 0


@needs_lava
@pytest.mark.lava
def test_sinabs_cnn_on_lava_conv():
    """The NIR paper's sinabs CNN (Conv2d, IF, SumPool2d, Flatten, Affine) at dt = 1: Lava's Conv
    and Dense feed Lava LIFs (IF), SumPool2d / Flatten run as NirNode processes."""
    from lava.proc.conv.process import Conv
    from lava.proc.lif.process import LIF

    from lava_procs.nir_lava import build

    p = NirProgram(DATA / "cnn_sinabs.nir")
    x = synthetic_input(p.input_shape, 12, 0.3, seed=2)
    net = build(p, x, 1.0, "exact")
    assert isinstance(net.procs["0"][0], Conv) and isinstance(net.procs["1"][0], LIF)
    assert net.how["4"].startswith("NirNode")
    rec = net.run()
    rows = _assert_agrees(p.run(x, dt=1.0, delay="synapse"), rec)
    assert all(rows[n]["spikes_ref"] > 0 for n in ("1", "3", "6"))


# -- one primitive at a time ----------------------------------------------------------------------------------
LAVA_PROCESS = {"LIF": "LIF", "CubaLIF": "LIF", "IF": "LIF", "LI": "LIF", "CubaLI": "LIF", "I": "LIF",
                "Affine": "Dense", "Linear": "Dense", "Conv2d": "Conv", "Conv1d": "Conv"}


@needs_lava
@pytest.mark.lava
@pytest.mark.parametrize("kind", ["LIF", "CubaLIF", "IF", "LI", "CubaLI", "I", "Threshold", "Affine", "Linear",
                                  "Scale", "Flatten", "Conv1d", "Conv2d", "SumPool2d", "AvgPool2d", "Delay"])
@pytest.mark.parametrize("integration", sem.INTEGRATIONS)
def test_primitive_numpy_equals_lava(kind, integration):
    from lava_procs.nir_lava import build

    g, shape = _primitive_graph(kind)
    p = NirProgram(g)
    x = synthetic_input(shape, 40, 0.4, seed=4)
    net = build(p, x, DT, integration)
    node = "n1" if kind in sem.NEURONS or kind in ("Scale", "Delay", "Linear", "Affine") else "n0"
    want = LAVA_PROCESS.get(kind, "NirNode")
    assert type(net.procs[node][0]).__name__ == want, net.how
    rec = net.run()
    ref = p.run(x, dt=DT, integration=integration, delay="synapse")
    _assert_agrees(ref, rec)
    if kind in sem.SPIKING:
        assert ref.data["n1"]["out"].sum() > 0


@needs_lava
@pytest.mark.lava
def test_conv_layout_stride_padding_and_lif_units():
    """Conv2d with H != W, stride (2, 1), padding (1, 0), a bias; then a LIF with v_leak, v_reset != 0
    and per-neuron r (its input scale folded into the Conv: constant per channel)."""
    rng = np.random.default_rng(5)
    conv = nir.Conv2d(input_shape=(5, 7), weight=rng.normal(size=(2, 3, 3, 2)), stride=(2, 1), padding=(1, 0),
                      dilation=1, groups=1, bias=np.array([0.3, -0.2]))
    shape = (2, 3, 6)
    r = np.ones(shape) * np.array([20.0, 35.0])[:, None, None]
    lif = nir.LIF(tau=1e-3 * np.ones(shape), r=r, v_leak=0.2 * np.ones(shape), v_threshold=np.ones(shape),
                  v_reset=-0.1 * np.ones(shape))
    g = _graph(conv, lif, input_shape=[3, 5, 7])
    p = NirProgram(g)
    x = rng.normal(size=(30, 3, 5, 7))
    from lava_procs.nir_lava import build
    net = build(p, x, DT, "exact")
    assert type(net.procs["n1"][0]).__name__ == "LIF" and net.lif["n1"]["gain"] is not None
    rows = _assert_agrees(p.run(x, dt=DT, delay="synapse"), net.run())
    assert rows["n1"]["spikes_ref"] > 0


@needs_lava
@pytest.mark.lava
def test_lava_refuses_what_it_cannot_run():
    p = NirProgram(DATA / "lif_norse.nir")
    with pytest.raises(ParameterError, match="synapse"):
        _run_lava(p, np.zeros((2, 1)), dt=DT, delay="none")
    with pytest.raises(ParameterError, match="reset"):
        _run_lava(p, np.zeros((2, 1)), dt=DT, reset="subtract")
    one = np.ones(1)
    lif = nir.LIF(tau=one, r=one, v_leak=0 * one, v_threshold=0.5 * one, v_reset=0 * one)
    g = nir.NIRGraph(nodes={"in": nir.Input(input_type={"input": np.array([1])}), "lif": lif,
                            "s": nir.Scale(scale=one), "out": nir.Output(output_type={"output": np.array([1])})},
                     edges=[("in", "lif"), ("lif", "s"), ("s", "lif"), ("lif", "out")])
    with pytest.raises(DataFormatError, match="cycle without a synapse"):
        _run_lava(NirProgram(g), np.zeros((2, 1)), dt=DT)


# -- snnTorch on the standard part of the project's own file ------------------------------------------------
@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    from conversion import nirfile
    from conversion.convert import convert_policy
    from snn_agent.checkpoint import build_policy
    from snn_agent.config import ModelConfig

    net = convert_policy(build_policy(ModelConfig(kind="mstpn", hidden=8, n_actions=3), seed=2))
    path = tmp_path_factory.mktemp("std") / "net.nir"
    nirfile.write_network(path, net)
    return path


def test_snntorch_imports_the_standard_part_of_a_converted_file(converted):
    """snntorch.import_from_nir loads the standard part (input scale folded into conv1, the identity
    input SigmaDelta dropped, cut before the ReLU SigmaDelta sd1); on a frame its output is conv1's
    pre-activation of the NumPy simulator (float32: within 1e-5 of max(1, max |u|))."""
    import torch

    from conversion import nirfile
    from conversion.simulator import Simulator
    from conversion.synthetic import pong_like_frames
    from snn_agent.nir_snntorch import import_standard_part

    with pytest.raises(DataFormatError, match="project's own nodes"):
        NirProgram(converted)          # the whole file is not a plain graph
    module, part = import_standard_part(converted)
    assert [type(n).__name__ for n in part.nodes.values()].count("Conv2d") == 1
    assert "sd1_input" in part.nodes and not any("mstpn_type" in (n.metadata or {}) for n in part.nodes.values())
    frame = pong_like_frames(2)[1]
    with torch.no_grad():
        out = module(torch.tensor(frame[None].astype(np.float32)))
    out = (out[0] if isinstance(out, tuple) else out).double().numpy()
    sim = Simulator(nirfile.read_network(converted), batch=1)
    sim.step(frame[None])
    ref = sim.values["conv1"]
    assert out.shape == ref.shape
    assert np.abs(out - ref).max() <= 1e-5 * max(1.0, np.abs(ref).max())
    assert np.abs(ref).max() > 0.1


# -- mstpn compare GRAPH.nir --------------------------------------------------------------------------------
def test_compare_routes_a_plain_graph(tmp_path, capsys):
    from mstpn import cli

    x = synthetic_input((1,), 120, 0.3, seed=3)
    np.save(tmp_path / "x.npy", x)
    backends = ["numpy", "snntorch", "lava"]
    rc = cli.main(["compare", str(DATA / "lif_norse.nir"), "--input", str(tmp_path / "x.npy"), "--integration",
                   "euler", "--backends", *backends, "--out", str(tmp_path / "out")])
    capsys.readouterr()
    res = json.loads((tmp_path / "out" / "results.json").read_text())
    assert res["kind"] == "nir-graph" and res["steps"] == 120
    from lava_available import HAVE_LAVA
    ran = [b for b in backends if "error" not in res["backends"][b]]
    assert ran == (backends if HAVE_LAVA else backends[:2])
    assert rc == 0 and res["ok"]
    for b in ran:
        assert res["backends"][b]["nodes"]["1"]["spike_mismatches"] == 0
    text = (tmp_path / "out" / "report.md").read_text()
    assert "| 1 | LIF |" in text and "spike_raster.png" in text
    for f in ("spike_raster.png", "voltage.png", "voltage_error.png"):
        assert (tmp_path / "out" / f).stat().st_size > 1000


@pytest.mark.parametrize("bad", ["shape", "nan", "backend"])
def test_compare_graph_bad_input_is_one_line(tmp_path, capsys, bad):
    from mstpn import cli

    args = ["compare", str(DATA / "lif_norse.nir"), "--out", str(tmp_path / "out")]
    if bad == "shape":
        np.save(tmp_path / "x.npy", np.zeros((5, 3)))
        args += ["--input", str(tmp_path / "x.npy")]
    elif bad == "nan":
        np.save(tmp_path / "x.npy", np.full((5, 1), np.nan))
        args += ["--input", str(tmp_path / "x.npy")]
    else:
        args += ["--backends", "torch"]
    rc = cli.main(args)
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and ": error: " in err[0] and "Traceback" not in err[0], err
