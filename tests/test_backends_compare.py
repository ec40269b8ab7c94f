"""Issue #5: the converted Pong policy on every backend, compared on a recorded sequence.

Network: the shipped STPN checkpoint (artifacts/stpn), converted with calibration on 100 frames
(sigma-delta, tuned thresholds, fixed point) and in rate form.  Sequence: 100 Pong frames played
by the PyTorch policy (seed 1; all 100 on Brian2's numpy target too, ~25 s at ~4 frames/s: with
fewer, one near-tie frame would already fall below 99 %; 20 for Brian2's cpp_standalone, whose C++
compilation dominates and which is checked for equality with NumPy).
Tolerances asserted: float backends pick the PyTorch action on >= 99 % of the frames; Lava fixed
point equals the NumPy fixed-point simulator bit for bit and agrees with PyTorch on >= 97 %; Lava
float and Brian2 equal the NumPy float simulator to 1e-9 (same operations, different order of
summation); snnTorch equals the NumPy rate-coded simulator to 1e-9 and, rate-coded with T = 256
sub-steps and per-channel thresholds, picks the PyTorch action on >= 99 % of the frames.
"""
from pathlib import Path

import numpy as np
import pytest

from conversion.backend import UnsupportedNetworkError
from mstpn import compare as C
from mstpn_base import registry
from snn_agent.play import record_frames
from mstpn_base.errors import BackendUnavailableError, DataFormatError, MstpnError

ROOT = Path(__file__).resolve().parents[1]
CKPT = ROOT / "artifacts" / "stpn" / "policy.safetensors"
N_FRAMES = 100
N_FRAMES_STANDALONE = 20   # one C++ compilation (~40-70 s on 2 cores) dominates

from lava_available import HAVE_LAVA, needs_lava  # noqa: E402,F401


@pytest.fixture(scope="module")
def setup():
    if not CKPT.exists():
        pytest.skip("shipped checkpoint artifacts/stpn/policy.safetensors is missing")
    from snn_agent.export import convert_with_calibration
    from snn_agent.checkpoint import load_policy

    policy, meta = load_policy(CKPT)
    env = meta["config"].env
    net = convert_with_calibration(policy, env, calib_frames=100, seed=0, log=lambda *_: None)
    rate = convert_with_calibration(policy, env, mode="rate", calib_frames=100, seed=0, log=lambda *_: None)
    frames = record_frames(net, N_FRAMES, seed=1, policy=policy)
    ref = C.run_sequence(registry.make_runner("torch", net, policy=policy), frames, "torch")
    return dict(policy=policy, net=net, rate=rate, frames=frames, ref=ref)


def _run(name, net, frames):
    runner = registry.make_runner(name, net)
    try:
        return C.run_sequence(runner, frames, name)
    finally:
        runner.close()


def test_numpy_reference_agrees_with_torch(setup):
    res = _run("numpy", setup["net"], setup["frames"])
    assert len(setup["frames"]) == N_FRAMES and res.frames == N_FRAMES
    c = C.compare_runs(res, setup["ref"])
    assert c.agreement_torch >= C.FLOAT_ACTION_AGREEMENT
    assert sum(c.events.values()) > 0 and sum(c.synops.values()) > 0


@needs_lava
def test_lava_float_equals_numpy_and_agrees_with_torch(setup):
    frames = setup["frames"]
    lava = _run("lava", setup["net"], frames)
    ref_np = _run("numpy", setup["net"], frames)
    np.testing.assert_allclose(lava.logits, ref_np.logits, rtol=0, atol=1e-9)
    for k in ref_np.acts:
        np.testing.assert_allclose(lava.acts[k], ref_np.acts[k], rtol=0, atol=1e-9, err_msg=k)
        assert np.array_equal(lava.events[k], ref_np.events[k]), k
    assert C.compare_runs(lava, setup["ref"]).agreement_torch >= C.FLOAT_ACTION_AGREEMENT


@needs_lava
def test_lava_fixed_is_bit_exact_and_agrees_with_torch(setup):
    frames = setup["frames"]
    lava = _run("lava-fixed", setup["net"], frames)
    oracle = _run("numpy-fixed", setup["net"], frames)
    assert set(lava.raw) == set(oracle.raw)
    for k in oracle.raw:
        assert lava.raw[k].dtype == np.int64
        assert np.array_equal(lava.raw[k], oracle.raw[k]), k
    c = C.compare_runs(lava, setup["ref"], oracle)
    assert c.bit_exact is True and c.agreement_fixed_ref == 1.0
    assert c.agreement_torch >= C.FIXED_ACTION_AGREEMENT


@pytest.mark.brian2
def test_brian2_equals_numpy_and_agrees_with_torch(setup):
    frames = setup["frames"]   # all 100: >= 99 % must be measurable (1 differing frame in 30 is 96.7 %)
    b2 = _run("brian2", setup["net"], frames)
    ref_np = _run("numpy", setup["net"], frames)
    np.testing.assert_allclose(b2.logits, ref_np.logits, rtol=0, atol=1e-9)
    for k in ("sd1", "sd2", "h"):
        np.testing.assert_allclose(b2.acts[k], ref_np.acts[k], rtol=0, atol=1e-9, err_msg=k)
        assert np.array_equal(b2.events[k], ref_np.events[k]), k
    assert C.compare_runs(b2, setup["ref"]).agreement_torch >= C.FLOAT_ACTION_AGREEMENT


@pytest.mark.brian2
def test_brian2_cpp_standalone_runs_a_recorded_sequence_like_numpy(setup, tmp_path):
    """The recorded sequence as one compiled C++ run (TimedArray input, monitors read at each
    frame's last step): same values as the NumPy simulator to 1e-9 and the same events."""
    frames = setup["frames"][:N_FRAMES_STANDALONE]
    runner = registry.make_runner("brian2-standalone", setup["net"], directory=tmp_path / "b2")
    sa = C.run_sequence(runner, frames, "brian2-standalone")
    assert (tmp_path / "b2" / "main.cpp").is_file()          # a real C++ project was built
    ref_np = _run("numpy", setup["net"], frames)
    np.testing.assert_allclose(sa.logits, ref_np.logits, rtol=0, atol=1e-9)
    for k in ("sd1", "sd2", "h"):
        np.testing.assert_allclose(sa.acts[k], ref_np.acts[k], rtol=0, atol=1e-9, err_msg=k)
        assert np.array_equal(sa.events[k], ref_np.events[k]), k
    with pytest.raises(UnsupportedNetworkError, match="closed-loop"):
        runner.step(frames[0])
    # the runtime device is back: a frame-by-frame Brian2 run still works in the same process
    assert _run("brian2", setup["net"], frames[:2]).frames == 2


@pytest.fixture(scope="module")
def snntorch_run(setup):
    return _run("snntorch", setup["rate"], setup["frames"])


def test_snntorch_rate_form_equals_numpy_rate_simulator(setup, snntorch_run):
    ref_np = _run("numpy", setup["rate"], setup["frames"])
    np.testing.assert_allclose(snntorch_run.logits, ref_np.logits, rtol=0, atol=1e-9)
    for k in ("if1", "if2"):
        assert np.array_equal(snntorch_run.events[k], ref_np.events[k]), k


def test_snntorch_rate_form_agrees_with_torch(setup, snntorch_run):
    """T = 256 sub-steps, per-channel thresholds (conversion.calibrate.rate_thresholds)."""
    assert setup["rate"].nodes["if1"].steps == 256
    assert C.compare_runs(snntorch_run, setup["ref"]).agreement_torch >= C.FLOAT_ACTION_AGREEMENT


def test_snntorch_module_is_batched_and_differentiable(setup):
    import torch

    from snn_agent.snntorch_backend import RateSTPNPolicy

    mod = RateSTPNPolicy(setup["rate"], steps=4)
    obs = torch.as_tensor(setup["frames"][:3]).unsqueeze(1)
    logits, value, state, _ = mod(obs)
    logits2, _, _, _ = mod(obs, state)
    assert logits.shape == (3, setup["net"].nodes["pi"].weight.shape[0]) and value.shape == (3,)
    (logits2.sum() + value.sum()).backward()
    assert mod.conv1.weight.grad is not None and mod.conv1.weight.grad.abs().sum() > 0  # surrogate gradient
    assert mod.W.grad is not None and mod.lam.grad is not None


def test_clear_errors(setup, tmp_path, monkeypatch):
    net, rate = setup["net"], setup["rate"]
    with pytest.raises(MstpnError, match="unknown backend"):
        registry.make_runner("nest", net)
    bad = tmp_path / "bad.nir"
    bad.write_text("not a network")
    with pytest.raises(DataFormatError):
        C.load_network(bad)
    with pytest.raises(DataFormatError):
        C.load_network(tmp_path)
    with pytest.raises(FileNotFoundError):
        C.load_network(tmp_path / "missing.nir")
    with pytest.raises(UnsupportedNetworkError, match="rate"):
        registry.make_runner("brian2", rate)
    with pytest.raises(UnsupportedNetworkError, match="fixed-point"):
        registry.make_runner("numpy-fixed", rate)
    # a backend whose package is missing
    import importlib

    real = importlib.import_module

    def fake(name, *a, **k):
        if name == "brian_models.network":
            raise ImportError("No module named 'brian2'")
        return real(name, *a, **k)

    monkeypatch.setattr(importlib, "import_module", fake)
    with pytest.raises(BackendUnavailableError, match="brian2"):
        registry.make_runner("brian2", net)


@needs_lava
def test_lava_errors(setup):
    with pytest.raises(UnsupportedNetworkError, match="rate"):
        registry.make_runner("lava", setup["rate"])
    with pytest.raises(BackendUnavailableError, match="loihi2"):
        registry.make_runner("loihi2", setup["net"])


def test_cli_writes_report(setup, tmp_path, capsys):
    from conversion.nirfile import write_network
    from mstpn.cli import main

    path = tmp_path / "net.nir"
    write_network(path, setup["net"])
    np.save(tmp_path / "obs.npy", setup["frames"][:20])
    rc = main(["compare", str(path), "--frames", "20", "--obs", str(tmp_path / "obs.npy"),
               "--backends", "numpy", "numpy-fixed", "snntorch", "--out", str(tmp_path / "out")])
    report = (tmp_path / "out" / "report.md").read_text()
    assert "numpy-fixed" in report and "snntorch" in report
    # exit 1 exactly when a backend misses its tolerance (the rate-coded snnTorch form may: see
    # test_snntorch_rate_form_agrees_with_torch)
    assert rc == (1 if "FAIL" in report else 0), rc
    for f in ("activity_raster.png", "error_over_time.png", "speed.png", "results.json"):
        assert (tmp_path / "out" / f).stat().st_size > 0
    assert main(["compare", str(tmp_path / "nope.nir"), "--backends", "numpy"]) == 2
    assert main(["compare", str(path), "--backends", "nest"]) == 2
    assert "unknown backend" in capsys.readouterr().err
