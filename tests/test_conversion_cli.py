"""`mstpn convert`: end to end on a random policy, and clear errors for bad input."""
import numpy as np
import torch

from conversion import nirfile
from conversion.simulator import Simulator
from mstpn.cli import main
from snn_agent.checkpoint import build_policy, save_checkpoint
from snn_agent.config import RunConfig

torch.set_num_threads(1)


def test_convert_random_policy_with_calibration(tmp_path, capsys):
    out = tmp_path / "net.nir"
    assert main(["convert", "random:3", "-o", str(out), "--calib-frames", "12", "--rel", "0.01"]) == 0
    assert "wrote" in capsys.readouterr().out
    net = nirfile.read_network(out)
    assert net.metadata["source"] == "random STPN policy (seed 3)"
    assert net.metadata["thresholds"]["rel"] == 0.01 and net.metadata["calibration"]["frames"] == 12
    assert net.metadata["env"]["action_set"] == "minimal" and net.fixed is not None
    assert np.all(net.nodes["sd1"].threshold == 0.01 * net.metadata["calibration"]["p999"]["sd1"])
    obs = np.full((1, 1, 84, 84), 87, np.uint8)
    assert Simulator(net, fixed=True).step(obs).logits.shape == (1, 6)


def test_convert_checkpoint_rate_mode_without_calibration(tmp_path):
    cfg = RunConfig.from_dict({"model": {"hidden": 8}, "env": {"action_set": "updown"}})
    ckpt = tmp_path / "p.safetensors"
    save_checkpoint(ckpt, build_policy(cfg, seed=1), cfg)
    out = tmp_path / "rate.nir"
    assert main(["convert", str(ckpt), "-o", str(out), "--mode", "rate", "--calib-frames", "0"]) == 0
    net = nirfile.read_network(out)
    assert net.mode == "rate" and net.fixed is None and net.metadata["n_actions"] == 3


def test_errors_are_one_line_and_exit_2(tmp_path, capsys):
    assert main(["convert", str(tmp_path / "missing.safetensors"), "-o", str(tmp_path / "o.nir")]) == 2
    assert "checkpoint not found" in capsys.readouterr().err
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"\x01\x02")
    assert main(["convert", str(bad), "-o", str(tmp_path / "o.nir")]) == 2
    assert "truncated" in capsys.readouterr().err
    assert main(["convert", "random:x", "-o", str(tmp_path / "o.nir")]) == 2
    assert "seed must be an integer" in capsys.readouterr().err
    assert not (tmp_path / "o.nir").exists()
