"""The Lava backends are built from Lava's own processes (lava.proc Conv, Dense, Delta, SigmaDelta,
Sigma); only the plastic STPN layer is a process of this project, with its state in Lava Vars.

Network: a random policy (seed 0) converted with calibration on 30 frames (fixed point with the
"lava" sigma-delta rule); sequence: 100 frames played by that policy.  Asserted exactly: every
layer's integers (lava-fixed vs the NumPy fixed-point reference) on all 100 frames, run as one
Lava run; the short-term weights F read from the plastic layer's Var after 5 frames equal the
reference's (integers, exactly).
"""
import inspect
import re

import numpy as np
import pytest

from lava_available import needs_lava
from mstpn_base import registry

pytestmark = needs_lava
N_FRAMES = 100


@pytest.fixture(scope="module")
def setup():
    from snn_agent.export import convert_with_calibration, load_source
    from snn_agent.play import record_frames

    policy, env_cfg, _ = load_source("random:0")
    net = convert_with_calibration(policy, env_cfg, calib_frames=30, log=lambda m: None)
    return net, record_frames(net, N_FRAMES, seed=0, policy=policy)


def test_graph_uses_lavas_own_processes(setup):
    from lava.proc.conv.process import Conv
    from lava.proc.dense.process import Dense
    from lava.proc.sdn.process import Delta, Sigma, SigmaDelta

    from lava_procs.network import lava_processes
    from lava_procs.stpn_layer import PlasticLayer

    net, _ = setup
    for fixed in (False, True):
        gr = lava_processes(net, fixed_point=fixed)
        p = gr.procs
        assert isinstance(p["sd_in"], Delta)
        assert isinstance(p["conv1"], Conv) and isinstance(p["conv2"], Conv)
        assert isinstance(p["sd1"], SigmaDelta) and isinstance(p["sd2"], SigmaDelta)
        assert isinstance(p["pi"], Dense) and isinstance(p["v"], Dense)
        assert isinstance(p["logits"], Sigma) and isinstance(p["value"], Sigma)
        assert isinstance(p["stpn"], PlasticLayer)
        assert gr.input_port is p["sd_in"].a_in and gr.period == 5
        own = [q for q in p.values() if not type(q).__module__.startswith("lava.proc.")]
        assert own == [p["stpn"]]      # the only process of the project's own


def test_static_layers_do_not_run_the_reference_simulator():
    """Lava's own ProcessModels carry the static layers; only the plastic layer's models call
    conversion's simulator kernels."""
    import lava.proc.conv.models as conv_models
    import lava.proc.dense.models as dense_models
    import lava.proc.sdn.models as sdn_models

    import lava_procs.network as network
    import lava_procs.stpn_layer as stpn_layer

    for mod in (conv_models, dense_models, sdn_models):
        assert "conversion" not in inspect.getsource(mod)
    code = re.sub(r"``Simulator\([^`]*\)``", "", inspect.getsource(network))   # docstrings naming the reference
    assert "Simulator(" not in code
    assert "import Simulator" not in inspect.getsource(network)
    assert "Simulator" in inspect.getsource(stpn_layer.LayerSim)


def test_lava_fixed_is_bit_identical_on_every_layer(setup):
    """100 frames in one Lava run (run_frames): every layer's sent integers, the heads' integer
    values and the actions equal the NumPy fixed-point reference exactly."""
    net, frames = setup
    ref = registry.make_runner("numpy-fixed", net)
    want = [ref.step(f) for f in frames]
    runner = registry.make_runner("lava-fixed", net)
    try:
        got = runner.run_frames(frames)
    finally:
        runner.close()
    assert len(got) == N_FRAMES
    for k in want[0].raw:
        for t, (a, b) in enumerate(zip(got, want)):
            assert a.raw[k].dtype == np.int64
            assert np.array_equal(a.raw[k], b.raw[k]), (k, t)
    assert [int(np.argmax(a.logits)) for a in got] == [int(np.argmax(b.logits)) for b in want]
    assert sum(a.events["sd1"] for a in got[1:]) == sum(b.events["sd1"] for b in want[1:])


def test_plastic_state_lives_in_vars(setup):
    """F read with Var.get() from the plastic layer after 5 closed-loop frames equals the
    reference's F (integers); F is nonzero (the plasticity ran)."""
    net, frames = setup
    ref = registry.make_runner("numpy-fixed", net)
    runner = registry.make_runner("lava-fixed", net)
    try:
        for f in frames[:5]:
            ref.step(f)
            runner.step(f)
        F = runner.plastic_state("F")
        z = runner.plastic_state("z")
    finally:
        runner.close()
    st = ref.sim.state["stpn"]
    assert np.array_equal(np.asarray(F, np.int64), st["F"][0])
    assert np.array_equal(np.asarray(z, np.int64), st["z"][0])
    assert np.count_nonzero(F) > 0
