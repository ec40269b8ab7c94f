"""`mstpn energy` and the GPU measuring path (which must fail clearly without a GPU)."""
import argparse
import json
import runpy
import sys
import types
from pathlib import Path

import pytest

from mstpn.energy import cli
from mstpn.energy import gpu
from mstpn.energy.counts import pong_policy_counts
from mstpn.energy.report import energy_report
from mstpn_base.errors import BackendUnavailableError, DataFormatError, ParameterError

ROOT = Path(__file__).resolve().parents[1]


def _run(argv):
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest="command")
    cli.register(sub)
    args = ap.parse_args(["energy", *argv])
    return args.func(args)


def test_published_prints_the_table_and_writes_files(tmp_path, capsys):
    assert _run(["--published", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "35.6" in out and "3463.9" in out and "Assumptions" in out
    data = json.loads((tmp_path / "energy_published.json").read_text())
    assert data["ok"] and data["tolerance"] == 0.02
    for name in ("energy.json", "energy.csv", "energy.txt", "energy.png"):
        assert (tmp_path / name).stat().st_size > 0
    assert (tmp_path / "energy.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_pong_frames_scale_the_bias(tmp_path, capsys):
    assert _run(["pong", "--frames", "600", "--out", str(tmp_path)]) == 0
    rep = json.loads((tmp_path / "energy.json").read_text())
    assert rep["counts"]["duration_s"] == pytest.approx(10.0)
    bias = sum(r["energy_j"] for r in rep["rows"] if r["backend"] == "memristive" and r["component"] == "bias")
    assert bias == pytest.approx(4.3e-9 * 169_984 * 10.0, rel=1e-12)
    header = (tmp_path / "energy.csv").read_text().splitlines()[0]
    assert header == "backend,layer,component,energy_j,in_scope"


def test_counts_file_source(tmp_path, capsys):
    pong_policy_counts(steps=15).save(tmp_path / "c.json")
    assert _run([str(tmp_path / "c.json"), "--g-bias-ns", "5"]) == 0
    assert "G = 5 nS" in capsys.readouterr().out
    with pytest.raises(ParameterError, match="carries its own game length"):
        _run([str(tmp_path / "c.json"), "--frames", "10"])


def test_bad_cli_inputs(tmp_path):
    with pytest.raises(DataFormatError, match="no such file"):
        _run([str(tmp_path / "nope.json")])
    with pytest.raises(ParameterError, match="SOURCE"):
        _run([])
    with pytest.raises(ParameterError, match="--frames"):
        _run(["pong", "--frames", "0"])
    with pytest.raises(ParameterError, match="--published takes no"):
        _run(["--published", "pong"])
    with pytest.raises(ParameterError, match="g-bias-ns"):
        _run(["pong", "--g-bias-ns", "-1"])


def test_checkpoint_source(tmp_path, capsys):
    """A saved STPN policy: layer sizes from the checkpoint, game length from --frames."""
    from snn_agent.checkpoint import build_policy, save_checkpoint
    from snn_agent.config import RunConfig

    cfg = RunConfig()
    ckpt = tmp_path / "policy.safetensors"
    save_checkpoint(ckpt, build_policy(cfg), cfg)
    assert _run([str(ckpt), "--frames", "120", "--out", str(tmp_path / "o")]) == 0
    rep = json.loads((tmp_path / "o" / "energy.json").read_text())
    layers = {l["name"]: l for l in rep["counts"]["layers"]}
    assert layers["stpn"]["update_pulses"] == 30 * 169_984 and rep["counts"]["steps"] == 30
    assert "policy.safetensors" in rep["counts"]["source"]


def test_bad_checkpoint_fails_clearly(tmp_path):
    ckpt = tmp_path / "policy.pt"
    ckpt.write_bytes(b"not a checkpoint")
    with pytest.raises(DataFormatError):
        _run([str(ckpt)])


# -- GPU measuring path ---------------------------------------------------------------------------
def test_no_pynvml_is_a_clear_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "pynvml", None)  # import fails
    with pytest.raises(BackendUnavailableError, match="nvidia-ml-py"):
        gpu.open_nvml()


def test_no_driver_is_a_clear_error(monkeypatch):
    def fail():
        raise RuntimeError("NVML Shared Library Not Found")

    monkeypatch.setitem(sys.modules, "pynvml", types.SimpleNamespace(nvmlInit=fail))
    with pytest.raises(BackendUnavailableError, match="NVML is unavailable.*Not Found"):
        gpu.open_nvml()


def test_no_cuda_is_a_clear_error(monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(BackendUnavailableError, match="no CUDA GPU"):
        gpu.require_cuda()


def test_benchmark_script_exits_2_without_gpu(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "pynvml", None)
    out = tmp_path / "g.json"
    mod = runpy.run_path(str(ROOT / "benchmarks" / "gpu_energy.py"))
    assert mod["main"](["--out", str(out), "--seconds", "1"]) == 2
    assert "nvidia-ml-py" in capsys.readouterr().err
    assert not out.exists()


def test_measurement_file_feeds_the_report(tmp_path):
    f = tmp_path / "g.json"
    f.write_text(json.dumps({"schema": "mstpn.gpu-energy", "version": 1, "idle_w": 100.0, "gpu": "X",
                             "command": "python benchmarks/gpu_energy.py",
                             "cases": {"stpn_layer": {"eager": {"total_j_per_step": 0.02,
                                                                "dynamic_j_per_step": 0.001,
                                                                "steps_per_s": 5000}}}}))
    figs = gpu.load_measurement(f)
    rep = energy_report(pong_policy_counts(100), gpu_measured=figs)
    assert rep.component("gpu-measured-eager", "dynamic") == pytest.approx(0.1)
    assert rep.total("gpu-measured-eager") == pytest.approx(2.0)
    with pytest.raises(DataFormatError, match="no such GPU measurement"):
        gpu.load_measurement(tmp_path / "none.json")
    (tmp_path / "bad.json").write_text(json.dumps({"schema": "mstpn.gpu-energy", "version": 1, "cases": {}}))
    with pytest.raises(DataFormatError, match="missing or bad field"):
        gpu.load_measurement(tmp_path / "bad.json")


def test_measuring_loop_with_a_fake_counter(monkeypatch):
    """The window logic against a fake NVML counter drawing 100 W idle + 1 mJ per step."""
    clock = {"t": 0.0, "steps": 0}

    def energy_mj(_handle):
        return 1e3 * (100.0 * clock["t"]) + 1.0 * clock["steps"]

    def step():
        clock["steps"] += 1
        clock["t"] += 1e-4      # 10,000 steps/s

    monkeypatch.setitem(sys.modules, "pynvml", types.SimpleNamespace(nvmlDeviceGetTotalEnergyConsumption=energy_mj))
    monkeypatch.setattr(gpu.time, "perf_counter", lambda: clock["t"])
    monkeypatch.setattr(gpu.time, "sleep", lambda s: clock.__setitem__("t", clock["t"] + s))
    idle = gpu.measure_idle(None, lambda: None, 2.0)
    assert idle == pytest.approx(100.0)
    w = gpu.measure_window(None, step, lambda: None, seconds=0.5)
    assert w.steps >= 5000 and w.steps % 100 == 0
    fig = gpu.step_figures(w, idle)
    assert fig["dynamic_j_per_step"] == pytest.approx(1e-3)
    assert fig["total_j_per_step"] == pytest.approx(1e-3 + 100.0 * 1e-4)
    assert fig["steps_per_s"] == pytest.approx(1e4)
    with pytest.raises(ParameterError, match="seconds"):
        gpu.measure_window(None, step, lambda: None, seconds=0)
