"""Checkpoints: round trip (weights, metadata, outputs), and clear failures on corruption."""
import json
import struct

import pytest
import torch
from safetensors.torch import save_file

from memristor.params import DeviceParams
from mstpn_base.errors import DataFormatError
from snn_agent.checkpoint import (build_policy, load_policy, load_resume_state, read_metadata,
                                  save_checkpoint, save_resume_state)
from snn_agent.config import RunConfig

torch.set_num_threads(1)


def _cfg(kind="stpn", hidden=8):
    return RunConfig.from_dict({"model": {"kind": kind, "hidden": hidden}, "env": {"action_set": "updown"},
                                "train": {"seed": 3}})


@pytest.mark.parametrize("kind", ["stpn", "mstpn", "lstm"])
def test_round_trip_same_outputs_and_metadata(tmp_path, kind):
    cfg = _cfg(kind)
    pol = build_policy(cfg, seed=1)
    path = tmp_path / "a.safetensors"
    save_checkpoint(path, pol, cfg, progress={"frames": 1234})
    loaded, meta = load_policy(path)
    assert not loaded.training
    obs = torch.randint(0, 256, (4, 2, 1, 84, 84), dtype=torch.uint8)
    pol.eval()
    s1, s2 = pol.init_state(2), loaded.init_state(2)
    for t in range(4):
        l1, v1, s1, _ = pol(obs[t], s1)
        l2, v2, s2, _ = loaded(obs[t], s2)
        assert torch.equal(l1, l2) and torch.equal(v1, v2)
    assert meta["architecture"]["kind"] == kind and meta["architecture"]["n_actions"] == 3
    assert meta["progress"]["frames"] == 1234 and meta["seed"] == 3
    assert DeviceParams.from_dict(meta["device_params"]) == DeviceParams()
    assert meta["config"].env.action_set == "updown"
    # float64 on request
    p64, _ = load_policy(path, dtype=torch.float64)
    assert p64.pi.weight.dtype == torch.float64
    # build_policy is deterministic in its seed and leaves the global RNG alone
    torch.manual_seed(0)
    a = torch.rand(1)
    b1 = build_policy(cfg, seed=1)
    torch.manual_seed(0)
    assert torch.equal(torch.rand(1), a)
    assert all(torch.equal(x, y) for x, y in zip(b1.state_dict().values(), pol.state_dict().values()))


def test_mstpn_device_params_travel_with_checkpoint(tmp_path):
    custom = DeviceParams().replace(tau0=5.0, n_levels=16)
    cfg = RunConfig.from_dict({"model": {"kind": "mstpn", "hidden": 8, "device_params": custom.to_dict()}})
    save_checkpoint(tmp_path / "m.safetensors", build_policy(cfg), cfg)
    pol, meta = load_policy(tmp_path / "m.safetensors")
    assert DeviceParams.from_dict(meta["device_params"]).tau0 == 5.0
    assert pol.core.mapping.params.n_levels == 16


@pytest.fixture
def saved(tmp_path):
    cfg = _cfg()
    path = tmp_path / "c.safetensors"
    save_checkpoint(path, build_policy(cfg), cfg)
    return path, cfg


def _rewrite(path, tensors=None, meta_edit=None):
    """Rewrite a checkpoint with edited tensors/metadata (simulating another writer)."""
    from safetensors import safe_open
    with safe_open(str(path), "pt") as f:
        meta = json.loads(f.metadata()["mstpn"])
        ts = {k: f.get_tensor(k) for k in f.keys()}
    if tensors:
        ts.update(tensors)
        meta["tensors"] = {k: list(v.shape) for k, v in ts.items()}
    if meta_edit:
        meta_edit(meta)
    save_file(ts, str(path), metadata={"mstpn": json.dumps(meta)})


def test_truncated_file(saved):
    path, _ = saved
    data = path.read_bytes()
    path.write_bytes(data[: len(data) - 100])
    with pytest.raises(DataFormatError, match="truncated"):
        load_policy(path)
    path.write_bytes(data[:5])
    with pytest.raises(DataFormatError, match="truncated"):
        load_policy(path)


def test_wrong_version_and_schema(saved):
    path, _ = saved
    _rewrite(path, meta_edit=lambda m: m.update(version=99))
    with pytest.raises(DataFormatError, match="version 99"):
        load_policy(path)
    _rewrite(path, meta_edit=lambda m: m.update(version=1, schema="something.else"))
    with pytest.raises(DataFormatError, match="not an mstpn policy checkpoint"):
        read_metadata(path)


def test_nan_weights(saved):
    path, _ = saved
    bad = torch.zeros(3, 8)
    bad[1, 2] = float("nan")
    _rewrite(path, tensors={"pi.weight": bad})
    with pytest.raises(DataFormatError, match="NaN"):
        load_policy(path)


def test_shape_and_architecture_mismatch(saved):
    path, _ = saved
    _rewrite(path, tensors={"pi.weight": torch.zeros(5, 8)})
    with pytest.raises(DataFormatError, match="wrong shape.*pi.weight"):
        load_policy(path)
    _rewrite(path, tensors={"pi.weight": torch.zeros(3, 8)},
             meta_edit=lambda m: m["architecture"].update(hidden=16))
    with pytest.raises(DataFormatError, match="do not match the architecture"):
        load_policy(path)
    _rewrite(path, meta_edit=lambda m: m["architecture"].update(hidden=8, kind="gru"))
    with pytest.raises(DataFormatError, match="model kind"):
        load_policy(path)


def test_not_a_checkpoint(tmp_path):
    p = tmp_path / "x.safetensors"
    p.write_bytes(struct.pack("<Q", 2) + b"{}")
    with pytest.raises(DataFormatError, match="not an mstpn policy checkpoint"):
        load_policy(p)
    p.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00not json at all!")
    with pytest.raises(DataFormatError, match="corrupted"):
        load_policy(p)
    with pytest.raises(FileNotFoundError):
        load_policy(tmp_path / "missing.safetensors")


def test_refuses_to_save_nan_and_keeps_old_file(saved):
    path, cfg = saved
    before = path.read_bytes()
    pol = build_policy(cfg)
    with torch.no_grad():
        pol.v.bias.fill_(float("nan"))
    with pytest.raises(DataFormatError, match="NaN"):
        save_checkpoint(path, pol, cfg)
    assert path.read_bytes() == before
    assert [p.name for p in path.parent.iterdir()] == [path.name]   # no temp files left


def test_resume_state_round_trip(saved):
    path, cfg = saved
    pol = build_policy(cfg)
    opt = torch.optim.Adam(pol.parameters(), lr=1e-3)
    pol(torch.zeros(1, 1, 84, 84))[1].sum().backward()
    opt.step()
    save_resume_state(path, opt, extra={"scores": [1.0, -2.0]})
    st = load_resume_state(path)
    opt2 = torch.optim.Adam(pol.parameters(), lr=1e-3)
    opt2.load_state_dict(st["optimizer"])
    assert st["extra"]["scores"] == [1.0, -2.0]
    assert opt2.state_dict()["state"][0]["step"] == 1
    rp = path.with_name("c.resume.pt")
    rp.write_bytes(b"garbage")
    with pytest.raises(DataFormatError, match="resume"):
        load_resume_state(path)
