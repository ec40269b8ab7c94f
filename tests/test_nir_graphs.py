"""Plain NIR graphs on the NumPy executor, snnTorch (its own importer) and Brian2 (docs/nir.md).

The primitives' discrete-time equations (conversion.nir_semantics) are checked against their
closed forms; published NIR graphs (tests/data/nir/README.md: the NIR paper's graphs, one of them
also snnTorch's test graph) run on every backend that can express them, with identical spike
times and voltages within the stated tolerances; the primitive x backend table of docs/nir.md is
measured here.
"""
from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import nir
import numpy as np
import pytest

from conversion import nir_semantics as sem
from lava_available import HAVE_LAVA
from conversion.nir_graph import NirProgram, agreement, load, synthetic_input
from mstpn_base.errors import DataFormatError, ParameterError

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "tests" / "data" / "nir"
DT = 1e-4
#: voltage tolerance relative to max(1, max |v|): Brian2 and Lava float64 (order of operations),
#: snnTorch float32
TOL = {"brian2": 1e-9, "lava": 1e-9, "snntorch": 1e-5}


def _rec_max_rel(rows, var="v"):
    return max((r[f"max_abs_err_{var}"] / max(1.0, r[f"max_abs_{var}"]) for r in rows.values()
                if f"max_abs_err_{var}" in r), default=0.0)


def _assert_agrees(ref, other, tol):
    rows = agreement(ref, other)
    for name, row in rows.items():
        assert row.get("spike_mismatches", 0) == 0, (name, row)
    for var in ("v", "i", "out"):
        assert _rec_max_rel(rows, var) <= tol, rows
    return rows


def _run_snntorch(p, x):
    from snn_agent.nir_snntorch import run_snntorch
    return run_snntorch(p, x)


def _run_lava(p, x, **kw):
    from lava_procs.nir_lava import run_lava
    return run_lava(p, x, **kw)


def _run_brian2(p, x, **kw):
    from brian_models.nir_brian2 import run_brian2
    return run_brian2(p, x, **kw)


def _graph(*nodes, input_shape):
    names = ["input"] + [f"n{k}" for k in range(len(nodes))] + ["output"]
    return nir.NIRGraph(nodes={"input": nir.Input(input_type={"input": np.array(input_shape)}),
                               **{f"n{k}": n for k, n in enumerate(nodes)},
                               "output": nir.Output(output_type={"output": np.array([1])})},
                        edges=list(zip(names[:-1], names[1:])), type_check=False)


# -- the primitives' equations --------------------------------------------------------------------
def test_lif_exact_is_the_closed_form_and_euler_its_first_order():
    tau, r, vl, I = 2e-3, 3.0, 0.1, 0.5
    p = {"tau": np.array([tau]), "r": np.array([r]), "v_leak": np.array([vl]), "v_threshold": np.array([1e9]),
         "v_reset": np.array([0.0])}
    from mstpn_base.ops import NUMPY
    for integration in sem.INTEGRATIONS:
        q = sem.neuron_factors(NUMPY, "LIF", p, DT, integration)
        state, vs = {"v": np.array([0.0])}, []
        for _ in range(50):
            state = sem.lif_step(NUMPY, state, np.array([I]), q, "zero")
            vs.append(state["v"][0])
        t = DT * np.arange(1, 51)
        exact = vl + r * I + (0.0 - vl - r * I) * np.exp(-t / tau)
        if integration == "exact":
            assert np.max(np.abs(np.array(vs) - exact)) < 1e-12
        else:
            euler = vl + r * I + (0.0 - vl - r * I) * (1 - DT / tau) ** np.arange(1, 51)
            assert np.max(np.abs(np.array(vs) - euler)) < 1e-12
            assert np.max(np.abs(np.array(vs) - exact)) > 1e-4   # Euler is not exact at this dt


def test_spike_is_strictly_above_threshold_and_resets_zero_or_subtract():
    from mstpn_base.ops import NUMPY
    v = np.array([1.0, 1.5, 0.2])
    z = sem.fire(v, 1.0)
    assert z.tolist() == [False, True, False]
    assert sem.reset(NUMPY, v, z, 1.0, 0.25, "zero").tolist() == [1.0, 0.25, 0.2]
    assert sem.reset(NUMPY, v, z, 1.0, 0.25, "subtract").tolist() == [1.0, 0.75, 0.2]


def test_integrator_cuba_threshold_and_leak_on_a_graph():
    """I integrates dt r I; CubaLI's current and voltage follow their two leaky equations
    (synapse first); Threshold is x > threshold; LI leaks to v_leak."""
    one = np.ones(1)
    x = np.zeros((30, 1))
    x[0] = 1.0
    x[10] = 1.0
    g_i = _graph(nir.I(r=2 * one), input_shape=[1])
    assert np.allclose(NirProgram(g_i).run(np.ones((3, 1)), dt=0.5).data["n0"]["v"][:, 0], [1, 2, 3])
    tau_s, tau_m = 1e-3, 2e-3
    g_c = _graph(nir.CubaLI(tau_syn=tau_s * one, tau_mem=tau_m * one, r=one, v_leak=0 * one, w_in=2 * one),
                 input_shape=[1])
    rec = NirProgram(g_c).run(x, dt=DT, integration="euler")
    i, v = 0.0, 0.0
    for t in range(30):
        i = i + DT / tau_s * (-i + 2 * x[t, 0])
        v = v + DT / tau_m * (-v + i)
        assert abs(rec.data["n0"]["i"][t, 0] - i) < 1e-12 and abs(rec.data["n0"]["v"][t, 0] - v) < 1e-12
    g_t = _graph(nir.Threshold(threshold=np.array([0.5, 1.0])), input_shape=[2])
    assert NirProgram(g_t).run(np.array([[0.7, 1.0]]), dt=1.0).data["n0"]["out"].tolist() == [[1.0, 0.0]]
    g_li = _graph(nir.LI(tau=one, r=one, v_leak=2 * one), input_shape=[1])
    assert abs(NirProgram(g_li).run(np.zeros((1, 1)), dt=1.0).data["n0"]["v"][0, 0] - 2 * (1 - np.exp(-1))) < 1e-12


def test_if_counts_steps():
    one = np.ones(1)
    g = _graph(nir.IF(r=2 * one, v_threshold=3.5 * one, v_reset=0 * one), input_shape=[1])
    rec = NirProgram(g).run(np.ones((6, 1)), dt=1.0)
    assert rec.data["n0"]["out"][:, 0].tolist() == [0, 1, 0, 1, 0, 1]   # v: 2, 4 -> 0, 2, 4 -> 0 ...


def test_static_primitives_match_torch():
    import torch
    rng = np.random.default_rng(0)
    x = rng.normal(size=(2, 3, 7, 7))
    w = rng.normal(size=(4, 3, 3, 3))
    b = rng.normal(size=4)
    conv = nir.Conv2d(input_shape=(7, 7), weight=w, stride=(2, 1), padding=(1, 0), dilation=1, groups=1, bias=b)
    p = NirProgram(_graph(conv, input_shape=[3, 7, 7]))
    got = p.run(x, dt=1.0).data["n0"]["out"]
    ref = torch.nn.functional.conv2d(torch.tensor(x), torch.tensor(w), torch.tensor(b), stride=(2, 1), padding=(1, 0))
    assert np.allclose(got, ref.numpy(), atol=1e-12)
    for kind, fn in (("SumPool2d", lambda t: 4 * torch.nn.functional.avg_pool2d(t, 2, 2)),
                     ("AvgPool2d", lambda t: torch.nn.functional.avg_pool2d(t, 2, 2))):
        node = getattr(nir, kind)(kernel_size=np.array([2, 2]), stride=np.array([2, 2]), padding=np.array([0, 0]))
        got = NirProgram(_graph(node, input_shape=[3, 7, 7])).run(x, dt=1.0).data["n0"]["out"]
        assert np.allclose(got, fn(torch.tensor(x)).numpy(), atol=1e-12), kind
    w1 = rng.normal(size=(2, 3, 3))
    c1 = nir.Conv1d(input_shape=8, weight=w1, stride=1, padding=1, dilation=1, groups=1, bias=np.zeros(2))
    got = NirProgram(_graph(c1, input_shape=[3, 8])).run(rng.normal(size=(2, 3, 8)), dt=1.0)
    assert got.data["n0"]["out"].shape == (2, 2, 8)
    delay = nir.Delay(delay=np.array([0.0, 2e-4]))
    rec = NirProgram(_graph(delay, input_shape=[2])).run(np.eye(4, 2), dt=DT)
    assert rec.data["n0"]["out"].tolist() == [[1, 0], [0, 0], [0, 0], [0, 1]]
    with pytest.raises(ParameterError, match="multiples of dt"):
        NirProgram(_graph(delay, input_shape=[2])).run(np.eye(4, 2), dt=3e-4)


def test_back_edge_of_a_cycle_carries_the_previous_step():
    """LIF <-> Linear: the Linear's output reaches the LIF one step later; feed-forward edges none."""
    one = np.ones(1)
    lif = nir.LIF(tau=one, r=one, v_leak=0 * one, v_threshold=0.5 * one, v_reset=0 * one)
    g = nir.NIRGraph(nodes={"in": nir.Input(input_type={"input": np.array([1])}), "lif": lif,
                            "rec": nir.Linear(weight=np.array([[1e6]])),
                            "out": nir.Output(output_type={"output": np.array([1])})},
                     edges=[("in", "lif"), ("lif", "rec"), ("rec", "lif"), ("lif", "out")])
    p = NirProgram(g)
    assert p.back_edges == {("rec", "lif")}
    x = np.zeros((4, 1))
    x[0] = 1e3      # one input pulse -> spike at step 0, then the recurrent kick keeps it firing
    rec = p.run(x, dt=1e-3, integration="euler")
    assert rec.data["lif"]["out"][:, 0].tolist() == [1, 1, 1, 1]
    step = p.run(x, dt=1e-3, integration="euler", delay="step")   # every edge one step: in -> lif at t = 1
    assert step.data["lif"]["out"][:, 0].tolist() == [0, 1, 0, 1]


def test_project_network_files_and_bad_graphs_are_refused():
    d = nir.Scale(scale=np.ones(2)).to_dict()
    node = nir.dict2NIRNode(d)
    node.metadata = {"mstpn_type": "SigmaDelta"}
    g = _graph(node, input_shape=[2])
    with pytest.raises(DataFormatError, match="read_network"):
        load(g)
    bad = _graph(nir.Affine(weight=np.ones((2, 3)), bias=np.zeros(2)), input_shape=[2])
    with pytest.raises(DataFormatError, match="does not take input"):
        NirProgram(bad)
    with pytest.raises(DataFormatError, match="expected"):
        NirProgram(DATA / "lif_norse.nir").run(np.zeros((3, 2)), dt=DT)


# -- published graphs ---------------------------------------------------------------------------
PUBLISHED = ["lif_norse", "lif_rockpool", "two_lif_neurons", "braille_noDelay_bias_zero",
             "braille_noDelay_noBias_subtract"]


@pytest.fixture(scope="module")
def inputs():
    return {name: synthetic_input(NirProgram(DATA / f"{name}.nir").input_shape, 300, 0.3, seed=1) for name in PUBLISHED}


@pytest.mark.parametrize("name", ["lif_norse", "lif_rockpool", "braille_noDelay_bias_zero",
                                  "braille_noDelay_noBias_subtract"])
def test_published_graph_numpy_equals_snntorch(name, inputs):
    p = NirProgram(DATA / f"{name}.nir")
    ref = p.run(inputs[name], dt=DT, integration="euler", reset="zero")
    rows = _assert_agrees(ref, _run_snntorch(p, inputs[name]), TOL["snntorch"])
    assert sum(r.get("spikes_ref", 0) for r in rows.values()) > 10   # the comparison has spikes to compare


#: the reset each published graph was written for (NIR's own "zero" unless its name says otherwise)
RESET = {"braille_noDelay_noBias_subtract": "subtract"}


@pytest.mark.brian2
@pytest.mark.parametrize("name", ["lif_norse", "lif_rockpool", "two_lif_neurons", "braille_noDelay_bias_zero",
                                  "braille_noDelay_noBias_subtract"])
@pytest.mark.parametrize("integration", sem.INTEGRATIONS)
def test_published_graph_numpy_equals_brian2(name, integration, inputs):
    p = NirProgram(DATA / f"{name}.nir")
    reset = RESET.get(name, "zero")
    ref = p.run(inputs[name], dt=DT, integration=integration, reset=reset)
    rows = _assert_agrees(ref, _run_brian2(p, inputs[name], dt=DT, integration=integration, reset=reset),
                          TOL["brian2"])
    assert sum(r.get("spikes_ref", 0) for r in rows.values()) >= 2


@pytest.mark.brian2
def test_sinabs_cnn_numpy_equals_brian2():
    """The NIR paper's sinabs CNN (Conv2d, IF, SumPool2d, Flatten, Affine) at dt = 1, 12 steps."""
    p = NirProgram(DATA / "cnn_sinabs.nir")
    x = synthetic_input(p.input_shape, 12, 0.3, seed=2)
    rows = _assert_agrees(p.run(x, dt=1.0), _run_brian2(p, x, dt=1.0), TOL["brian2"])
    assert all(rows[n]["spikes_ref"] > 0 for n in ("1", "3", "6"))


def test_snntorch_refuses_what_its_importer_cannot_express():
    with pytest.raises(DataFormatError, match=r"IF: .*nodes 1, 10, 12, 3, 6.*SumPool2d"):
        _run_snntorch(NirProgram(DATA / "cnn_sinabs.nir"), np.zeros((2, 2, 34, 34)))
    with pytest.raises(DataFormatError, match="v_leak != 0"):
        _run_snntorch(NirProgram(DATA / "two_lif_neurons.nir"), np.zeros((2, 1)))
    from snn_agent.nir_snntorch import run_snntorch
    with pytest.raises(ParameterError, match="dt = 0.0001"):
        run_snntorch(DATA / "lif_norse.nir", np.zeros((2, 1)), dt=1e-3)


def test_sinabs_cnn_runs_on_numpy():
    """The NIR paper's sinabs CNN (Conv2d, IF, SumPool2d, Flatten, Affine) in discrete time (dt = 1)."""
    p = NirProgram(DATA / "cnn_sinabs.nir")
    x = synthetic_input(p.input_shape, 10, 0.3, seed=2)
    rec = p.run(x, dt=1.0)
    counts = [int(rec.data[n]["out"].sum()) for n in ("1", "3", "6", "10")]
    assert all(c > 0 for c in counts)
    # the IF layers are exact integrators: layer 1's voltage is the running sum of its input minus resets
    u = rec.data["0"]["out"]
    z = rec.data["1"]["out"]
    v = np.zeros_like(u[0])
    for t in range(len(u)):
        v = v + u[t]
        assert np.array_equal(z[t] > 0, v > 1.0)
        v = np.where(v > 1.0, 0.0, v)


# -- the table of docs/nir.md -----------------------------------------------------------------------
def _primitive_graph(kind):
    """Input -> [Affine] -> primitive -> Output, parameters inside what every importer accepts."""
    rng = np.random.default_rng(3)
    n = 4
    one = np.ones(n)
    aff = nir.Affine(weight=rng.normal(1.0, 0.5, size=(n, 3)), bias=np.zeros(n))
    neurons = {
        "LIF": nir.LIF(tau=1e-3 * one, r=10 * one, v_leak=0 * one, v_threshold=one, v_reset=0 * one),
        "CubaLIF": nir.CubaLIF(tau_syn=5e-4 * one, tau_mem=1e-3 * one, r=10 * one, v_leak=0 * one,
                               v_threshold=one, v_reset=0 * one, w_in=5 * one),
        "IF": nir.IF(r=1e4 * one, v_threshold=one, v_reset=0 * one),   # dt r = 1
        "LI": nir.LI(tau=1e-3 * one, r=10 * one, v_leak=0 * one),
        "CubaLI": nir.CubaLI(tau_syn=5e-4 * one, tau_mem=1e-3 * one, r=10 * one, v_leak=0 * one, w_in=5 * one),
        "I": nir.I(r=1e3 * one),
        "Threshold": nir.Threshold(threshold=0.5 * one),
        "Scale": nir.Scale(scale=np.arange(1.0, n + 1)),
        "Delay": nir.Delay(delay=np.array([0, 1e-4, 2e-4, 3e-4])),
        "Linear": nir.Linear(weight=rng.normal(size=(n, n))),
        "Affine": nir.Affine(weight=rng.normal(size=(n, n)), bias=rng.normal(size=n)),
    }
    lif = nir.LIF(tau=1e-3 * one, r=10 * one, v_leak=0 * one, v_threshold=one, v_reset=0 * one)
    if kind in neurons:
        return _graph(aff, neurons[kind], input_shape=[3]), [3]
    if kind == "Conv2d":
        conv = nir.Conv2d(input_shape=(4, 4), weight=rng.normal(size=(2, 1, 3, 3)), stride=1, padding=1,
                          dilation=1, groups=1, bias=np.zeros(2))
        return _graph(conv, input_shape=[1, 4, 4]), [1, 4, 4]
    if kind == "Conv1d":
        conv = nir.Conv1d(input_shape=6, weight=rng.normal(size=(2, 1, 3)), stride=1, padding=1, dilation=1,
                          groups=1, bias=np.zeros(2))
        return _graph(conv, input_shape=[1, 6]), [1, 6]
    if kind in ("SumPool2d", "AvgPool2d"):
        pool = getattr(nir, kind)(kernel_size=np.array([2, 2]), stride=np.array([2, 2]), padding=np.array([0, 0]))
        return _graph(pool, input_shape=[1, 4, 4]), [1, 4, 4]
    if kind == "Flatten":
        flat = nir.Flatten(input_type={"input": np.array([2, 2, 2])}, start_dim=0, end_dim=-1)
        lin = nir.Affine(weight=rng.normal(1.0, 0.5, size=(n, 8)), bias=np.zeros(n))
        return _graph(flat, lin, lif, input_shape=[2, 2, 2]), [2, 2, 2]
    raise KeyError(kind)


def _doc_table():
    text = (ROOT / "docs" / "nir.md").read_text()
    block = text.split("<!-- primitive-table -->")[1]
    rows = {}
    for line in block.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 5 and cells[0].startswith("`"):
            rows[cells[0].strip("`")] = {b: c.split()[0] for b, c in zip(("numpy", "snntorch", "brian2", "lava"),
                                                                        cells[1:])}
    return rows


def test_docs_table_is_what_the_backends_do():
    """Each cell 'yes' iff the backend runs that primitive and agrees with the NumPy reference
    (spike times identical, voltages within TOL); 'no' iff it refuses with a DataFormatError."""
    table = _doc_table()
    from conversion.nir_graph import SUPPORTED
    assert set(table) == set(SUPPORTED) - {"Input", "Output"}
    for kind, cells in table.items():
        g, shape = _primitive_graph(kind)
        p = NirProgram(g)
        x = synthetic_input(shape, 40, 0.4, seed=4)
        assert cells["numpy"] == "yes", kind
        for backend, run, kw, conv in (("snntorch", _run_snntorch, {}, dict(integration="euler")),
                                       ("brian2", _run_brian2, dict(dt=DT), dict(integration="exact")),
                                       ("lava", _run_lava, dict(dt=DT), dict(integration="exact", delay="synapse"))):
            if backend == "lava" and not HAVE_LAVA:
                continue
            if cells[backend] == "yes":
                other = run(p, x, **kw)
                ref = p.run(x, dt=DT, **conv)
                _assert_agrees(ref, other, TOL[backend])
                if kind in sem.SPIKING:
                    assert ref.data["n1"]["out"].sum() > 0, (kind, backend)
            else:
                assert cells[backend] == "no", (kind, backend, cells[backend])
                with pytest.raises((DataFormatError, ParameterError)):
                    run(p, x, **kw)


# -- the app -----------------------------------------------------------------------------------------
def test_nir_run_command_writes_the_report(tmp_path):
    r = subprocess.run([sys.executable, "-m", "mstpn.cli", "nir-run", str(DATA / "lif_norse.nir"), "--backends",
                        "numpy", "snntorch", "--integration", "euler", "--steps", "100", "--out", str(tmp_path)],
                       capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    report = json.loads((tmp_path / "nir_run.json").read_text())
    assert report["backends"]["snntorch"]["agrees"] is True
    assert report["backends"]["snntorch"]["nodes"]["1"]["spike_mismatches"] == 0
    assert "| 1 | LIF |" in (tmp_path / "nir_run.md").read_text()
    bad = subprocess.run([sys.executable, "-m", "mstpn.cli", "nir-run", str(tmp_path / "nir_run.json")],
                         capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert bad.returncode == 2 and len(bad.stderr.strip().splitlines()) == 1 and "nir-run: error:" in bad.stderr
    assert re.search(r"not (an HDF5|a readable)", bad.stderr)
