"""Bad input and interruptions at the command line: every case is a one-line error with exit 2
(or, for a signal, one line and exit 130 / 143), nothing is half-written, no temporary file stays.

The CLI's ``main`` is called in-process (it installs the same signal handling as the ``mstpn``
executable); a subprocess is used only where a separate process is the point (a killed writer).
"""
import json
import os
import signal
import struct
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

from conversion import nirfile
from conversion.calibrate import calibrate, set_thresholds
from conversion.convert import convert_policy
from conversion.quantise import quantise
from conversion.synthetic import pong_like_frames
from memristor.params import DeviceParams
from mstpn import cli
from mstpn_base import signals
from mstpn_base.errors import DataFormatError, MstpnError
from mstpn_base.io import atomic_write_text
from mstpn_base.lock import lock_folder
from snn_agent.checkpoint import (build_policy, load_policy, load_resume_state, read_metadata, save_checkpoint,
                                  tensor_digest)
from snn_agent.config import RunConfig

torch.set_num_threads(1)
ROOT = Path(__file__).resolve().parent.parent
SHIPPED = ROOT / "artifacts" / "stpn" / "policy.safetensors"


# -- helpers ------------------------------------------------------------------------------------------
def run(capsys, *argv):
    rc = cli.main([str(a) for a in argv])
    cap = capsys.readouterr()
    return rc, cap.err.strip().splitlines()


def error(capsys, *argv, match=None):
    """Assert a one-line error with exit 2 (and ``match`` in it); returns the line."""
    rc, err = run(capsys, *argv)
    assert rc == 2, err
    assert len(err) == 1 and ": error: " in err[0], err
    assert "Traceback" not in err[0]
    if match is not None:
        assert match in err[0], err[0]
    return err[0]


def no_temp_files(folder: Path) -> bool:
    return not [p for p in Path(folder).rglob(".*") if ".tmp" in p.name]


def header(path: Path) -> tuple[dict, bytes]:
    raw = path.read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    return json.loads(raw[8:8 + n]), raw[8 + n:]


def write_header(path: Path, hdr: dict, payload: bytes) -> None:
    text = json.dumps(hdr).encode()
    path.write_bytes(struct.pack("<Q", len(text)) + text + payload)


def with_meta(src: Path, dst: Path, change) -> Path:
    """Copy of checkpoint ``src`` whose mstpn metadata is changed by ``change(meta)``."""
    hdr, payload = header(src)
    meta = json.loads(hdr["__metadata__"]["mstpn"])
    change(meta)
    hdr["__metadata__"]["mstpn"] = json.dumps(meta)
    write_header(dst, hdr, payload)
    return dst


def rewrite_network(src: Path, dst: Path, change) -> Path:
    """Copy of network file ``src`` changed by ``change(h5py.File)``, with a matching manifest (a
    consistent file whose content is wrong: only the reader's validation can catch it)."""
    dst.write_bytes(src.read_bytes())
    with h5py.File(dst, "r+") as f:
        change(f)
        del f["mstpn/manifest_json"]
        manifest = {name: nirfile._digest(ds[()]) for name, ds in nirfile._datasets(f).items()}
        f["mstpn"].create_dataset("manifest_json", data=json.dumps(manifest, sort_keys=True),
                                  dtype=h5py.string_dtype())
    return dst


def replace(f, name, value):
    del f[name]
    f.create_dataset(name, data=value)


# -- fixtures --------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("good")
    cfg = RunConfig.from_dict({"model": {"kind": "stpn", "hidden": 8}, "env": {"action_set": "updown"}})
    ck = d / "policy.safetensors"
    save_checkpoint(ck, build_policy(cfg, seed=1), cfg, progress={"frames": 0})
    net = convert_policy(build_policy(cfg, seed=1))
    frames = pong_like_frames(4)
    cal = calibrate(net, frames)
    set_thresholds(net, cal, 0.01)
    quantise(net, cal)
    nir = d / "net.nir"
    nirfile.write_network(nir, net)
    params = d / "params.json"
    DeviceParams().save(params)
    csv = d / "data.csv"
    rows = ["kind,trace_id,v_bias_V,t_s,pulse_v_V,pulse_width_s,g_S"]
    rows += [f"relaxation,r1,0.3,{t * 0.5},0,0,{1e-9 + 2e-9 * np.exp(-t * 0.5 / 4.0):.6e}" for t in range(12)]
    csv.write_text("\n".join(rows) + "\n", encoding="utf-8")
    blocker = d / "a_file"
    blocker.write_text("x")
    return {"ck": ck, "cfg": cfg, "nir": nir, "params": params, "csv": csv, "file": blocker, "dir": d}


# -- 4, 5: interruptions ------------------------------------------------------------------------------------
@pytest.mark.parametrize("sig, status", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_signal_while_convert_writes_leaves_nothing(capsys, tmp_path, monkeypatch, sig, status):
    """The signal arrives inside the h5py write (where h5py may swallow exceptions): the command
    still stops with the signal's status and neither the file nor a temporary file is left."""
    real = nirfile._datasets

    def interrupted_datasets(f):
        os.kill(os.getpid(), sig)
        return real(f)

    monkeypatch.setattr(nirfile, "_datasets", interrupted_datasets)
    out = tmp_path / "n.nir"
    rc, err = run(capsys, "convert", "random", "-o", out, "--calib-frames", 0)
    assert rc == status
    assert err[-1].startswith("mstpn: interrupted by " + signal.Signals(sig).name)
    assert not out.exists() and list(tmp_path.iterdir()) == []


def test_swallowed_interrupt_still_ends_the_command_interrupted(capsys):
    class Args:
        command = "x"

        @staticmethod
        def func(args):
            try:
                os.kill(os.getpid(), signal.SIGTERM)
                for _ in range(1000):
                    pass
            except KeyboardInterrupt:
                pass  # as a library callback would
            return 0

    with signals.handled():
        assert cli.dispatch(Args()) == 143
    assert "interrupted by SIGTERM" in capsys.readouterr().err


def test_signal_handlers_are_restored_after_main(capsys):
    before = signal.getsignal(signal.SIGTERM)
    run(capsys, "device", "params")
    assert signal.getsignal(signal.SIGTERM) is before


def test_temp_files_of_killed_writers_are_swept(tmp_path):
    """SIGKILL cannot be caught: the next write of the same target deletes a dead writer's temp file."""
    target = tmp_path / "p.json"
    child = subprocess.Popen([sys.executable, "-c", "import os, sys; from mstpn_base.io import atomic_path\n"
                              f"with atomic_path({str(target)!r}) as t:\n"
                              "    t.write_text('half'); print(t, flush=True); os.kill(os.getpid(), 9)"],
                             stdout=subprocess.PIPE, text=True, cwd=ROOT)
    stale = Path(child.stdout.readline().strip())
    child.wait()
    assert child.returncode == -9 and stale.exists() and str(child.pid) in stale.name
    live = tmp_path / f".p.json.{os.getppid()}.abcd.tmp.json"  # a writer that still runs
    live.write_text("busy")
    DeviceParams().save(target)
    assert not stale.exists() and live.exists() and target.exists()


# -- 6, 18: output paths --------------------------------------------------------------------------------------
@pytest.mark.parametrize("argv", [
    ["device", "params", "--out", "{file}/p.json"],
    ["device", "characterize", "--protocols", "ppf", "--out", "{file}/sub"],
    ["device", "fit", "{csv}", "--out", "{file}/fit.json"],
    ["convert", "random", "-o", "{file}/n.nir", "--calib-frames", "0"],
    ["train", "--out", "{file}/run", "--frames", "4"],
    ["evaluate", "{ck}", "--episodes", "1", "--json", "{file}/e.json"],
    ["evaluate", "{ck}", "--episodes", "1", "--gif", "{file}/g.gif"],
    ["energy", "pong", "--out", "{file}/e"],
    ["report", "{file}/run"],
])
def test_output_path_inside_a_regular_file(capsys, files, argv):
    error(capsys, *[a.format(**files) for a in argv])


def test_output_is_an_existing_folder_names_the_target(capsys, files, tmp_path):
    line = error(capsys, "device", "params", "--out", tmp_path)
    assert str(tmp_path) in line and ".tmp" not in line
    assert list(tmp_path.iterdir()) == []


def test_evaluate_gif_folder_fails_before_playing(capsys, files, tmp_path, monkeypatch):
    import snn_agent.evaluate as ev

    monkeypatch.setattr(ev, "evaluate", lambda *a, **k: pytest.fail("played before checking --gif"))
    error(capsys, "evaluate", files["ck"], "--episodes", "1", "--gif", tmp_path, match="--gif")


# -- 7: seeds ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("seed", [-1, 2**32, 10**30])
@pytest.mark.parametrize("argv", [
    ["train", "--out", "{dir}/seedrun", "--frames", "4"],
    ["evaluate", "{ck}", "--episodes", "1"],
    ["device", "characterize", "--protocols", "ppf", "--out", "{dir}/ch"],
    ["run", "--checkpoint", "{ck}", "--out", "{dir}/runseed"],
    ["convert", "random", "-o", "{dir}/s.nir", "--calib-frames", "0"],
])
def test_seed_out_of_range(capsys, files, argv, seed):
    error(capsys, *[a.format(**files) for a in argv], "--seed", seed, match="seed")
    assert not (files["dir"] / "seedrun").exists() and not (files["dir"] / "ch").exists()


# -- 8, 15: checkpoint metadata and payload ------------------------------------------------------------------
def _arch_list(m):
    m["architecture"] = list(m["architecture"].items())


def _progress_str(m):
    m["progress"] = "many"


def _game(m):
    m["env"]["game"] = "breakout"


def _episode(m):
    m["env"]["max_episode_frames"] = -5


def _noop(m):
    m["env"]["noop_max"] = 10**9


BAD_META = {"architecture-list": _arch_list, "progress-string": _progress_str, "breakout": _game,
            "episode-frames": _episode, "noop-max": _noop}
CK_COMMANDS = {
    "evaluate": ["evaluate", "{bad}", "--episodes", "1"],
    "convert": ["convert", "{bad}", "-o", "{tmp}/n.nir", "--calib-frames", "0"],
    "energy": ["energy", "{bad}"],
    "run": ["run", "--checkpoint", "{bad}", "--out", "{tmp}/run"],
    "teacher": ["train", "--teacher", "{bad}", "--out", "{tmp}/t", "--frames", "4", "--num-envs", "1"],
}


@pytest.mark.parametrize("command", sorted(CK_COMMANDS))
@pytest.mark.parametrize("kind", sorted(BAD_META))
def test_bad_checkpoint_metadata(capsys, files, tmp_path, command, kind):
    bad = with_meta(files["ck"], tmp_path / "bad.safetensors", BAD_META[kind])
    error(capsys, *[a.format(bad=bad, tmp=tmp_path) for a in CK_COMMANDS[command]])
    assert not (tmp_path / "n.nir").exists()


def test_flipped_bytes_fail_the_checksum(capsys, files, tmp_path):
    hdr, payload = header(files["ck"])
    payload = bytearray(payload)
    start = hdr["stpn.W"]["data_offsets"][0] if "stpn.W" in hdr else 0
    for i in range(64):
        payload[start + 4 * i + 1] ^= 0x01  # small changes: finite values, plausible sizes
    bad = tmp_path / "flip.safetensors"
    write_header(bad, hdr, bytes(payload))
    error(capsys, "evaluate", bad, "--episodes", "1", match="checksum")


def test_huge_weights_are_rejected_even_with_a_matching_checksum(capsys, files, tmp_path):
    from safetensors.torch import load_file, save_file

    tensors = load_file(str(files["ck"]))
    name = sorted(tensors)[0]
    tensors[name].view(-1)[:100] = 3e38
    meta = json.loads(header(files["ck"])[0]["__metadata__"]["mstpn"])
    meta["sha256"] = tensor_digest(tensors)
    bad = tmp_path / "huge.safetensors"
    save_file(tensors, str(bad), metadata={"mstpn": json.dumps(meta)})
    error(capsys, "evaluate", bad, "--episodes", "1", match="beyond")


def test_checksum_is_written_and_old_checkpoints_still_load(files, tmp_path):
    meta = read_metadata(files["ck"])
    assert len(meta["sha256"]) == 64
    old = with_meta(files["ck"], tmp_path / "old.safetensors", lambda m: m.pop("sha256"))
    load_policy(old)


# -- 9: huge integers in parameter files ---------------------------------------------------------------------
@pytest.fixture
def huge_params(tmp_path):
    d = DeviceParams().to_dict()
    d["parameters"]["n_levels"]["value"] = 10**400
    p = tmp_path / "huge.json"
    p.write_text(json.dumps(d))
    return p


@pytest.mark.parametrize("argv", [
    ["device", "params", "--params", "{p}"],
    ["device", "characterize", "--params", "{p}", "--protocols", "ppf", "--out", "{tmp}/ch"],
    ["energy", "pong", "--params", "{p}"],
    ["device", "fit", "{csv}", "--init", "{p}", "--out", "{tmp}/fit.json"],
])
def test_400_digit_parameter(capsys, files, huge_params, tmp_path, argv):
    error(capsys, *[a.format(p=huge_params, tmp=tmp_path, csv=files["csv"]) for a in argv], match="n_levels")


def test_params_file_missing_a_parameter_is_an_error(capsys, tmp_path):
    d = DeviceParams().to_dict()
    del d["parameters"]["tau0"]
    p = tmp_path / "partial.json"
    p.write_text(json.dumps(d))
    error(capsys, "device", "params", "--params", p, match="lacks tau0")


# -- 10, 18: device fit data -----------------------------------------------------------------------------------
def test_fit_non_utf8(capsys, files, tmp_path):
    p = tmp_path / "latin1.csv"
    p.write_bytes(files["csv"].read_bytes().replace(b"relaxation,r1", b"relaxation,r\xe91"))
    error(capsys, "device", "fit", p, "--out", tmp_path / "f.json", match="UTF-8")


def test_fit_conductance_1e300(capsys, files, tmp_path):
    p = tmp_path / "huge.csv"
    lines = files["csv"].read_text().splitlines()
    lines[3] = ",".join(lines[3].split(",")[:-1] + ["1e300"])
    p.write_text("\n".join(lines) + "\n")
    error(capsys, "device", "fit", p, "--out", tmp_path / "f.json", match="g_S")
    assert not (tmp_path / "f.json").exists()


def test_fit_constant_trace_is_not_identifiable(capsys, tmp_path):
    p = tmp_path / "flat.csv"
    rows = ["kind,trace_id,v_bias_V,t_s,pulse_v_V,pulse_width_s,g_S"]
    rows += [f"relaxation,r1,0.3,{t},0,0,2e-9" for t in range(10)]
    p.write_text("\n".join(rows) + "\n")
    error(capsys, "device", "fit", p, "--out", tmp_path / "f.json", match="not identifiable")
    assert not (tmp_path / "f.json").exists()


def test_fit_csv_with_byte_order_mark(capsys, files, tmp_path):
    p = tmp_path / "bom.csv"
    p.write_bytes(b"\xef\xbb\xbf" + files["csv"].read_bytes())
    rc, err = run(capsys, "device", "fit", p, "--out", tmp_path / "f.json")
    assert rc == 0, err
    assert (tmp_path / "f.json").exists()


def test_characterize_writes_nothing_when_a_protocol_fails(capsys, tmp_path):
    d = DeviceParams().to_dict()
    d["parameters"]["tau0"]["value"] = 1e-6  # in range, but too fast for the relaxation protocol
    p = tmp_path / "fast.json"
    p.write_text(json.dumps(d))
    error(capsys, "device", "characterize", "--params", p, "--out", tmp_path / "ch", match="nothing written")
    assert list((tmp_path / "ch").iterdir()) == []


# -- 11: network files whose content is wrong (consistent checksums) ------------------------------------------
def _set(name, value):
    return lambda f: replace(f, name, value)


def _meta(change):
    def fn(f):
        meta = json.loads(f["mstpn/metadata_json"][()])
        meta = change(meta)
        replace(f, "mstpn/metadata_json", json.dumps(meta))
    return fn


def _del(name):
    def fn(f):
        del f[name]
    return fn


def _six_outputs(f):
    w = f["node/nodes/pi/weight"][()]
    b = f["node/nodes/pi/bias"][()]
    replace(f, "node/nodes/pi/weight", np.concatenate([w, w]))
    replace(f, "node/nodes/pi/bias", np.concatenate([b, b]))
    replace(f, "node/nodes/logits/shape", np.array([6]))
    for k in ("weight_mant", "bias"):
        a = f[f"mstpn/fixed_point/pi/{k}"][()]
        replace(f, f"mstpn/fixed_point/pi/{k}", np.concatenate([a, a]))


def _scaled(name, factor):
    return lambda f: replace(f, name, f[name][()] * factor)


BAD_NETWORKS = {
    "missing-w_mant": _del("mstpn/fixed_point/stpn/w_mant"),
    "mantissa-shape": _set("mstpn/fixed_point/stpn/w_mant", np.zeros((3, 3), np.int8)),
    "negative-lut_shift": _set("mstpn/fixed_point/h/lut_shift", np.int64(-2)),
    "stride-0": _set("node/nodes/conv1/stride", np.array([0, 0])),
    "metadata-list": _meta(lambda m: [m]),
    "six-outputs": _six_outputs,
    "norm_eps-nan": _set("node/nodes/stpn/metadata/norm_eps", np.float64("nan")),
    "norm_eps-negative": _set("node/nodes/stpn/metadata/norm_eps", np.float64(-1.0)),
    "threshold-1e30": _set("node/nodes/sd1/metadata/threshold", np.full((16, 20, 20), 1e30)),
    "lam_q12-1e15": _scaled("mstpn/fixed_point/stpn/lam_q12", 10**12),
    "w_exp-80": _set("mstpn/fixed_point/stpn/w_exp", np.int64(80)),
    "hebb_shift-negative": _set("mstpn/fixed_point/stpn/hebb_shift", np.int64(-3)),
    "W-1e300": _scaled("node/nodes/stpn/metadata/W", 1e300),
    "lam-1e300": _scaled("node/nodes/stpn/metadata/lam", 1e300),
    "u_exp": lambda f: replace(f, "mstpn/fixed_point/conv2/u_exp", f["mstpn/fixed_point/conv2/u_exp"][()] + 1),
    "n_actions": _meta(lambda m: dict(m, n_actions=6)),
}


@pytest.mark.parametrize("kind", sorted(BAD_NETWORKS))
def test_network_with_wrong_content(capsys, files, tmp_path, kind):
    bad = rewrite_network(files["nir"], tmp_path / "bad.nir", BAD_NETWORKS[kind])
    with pytest.raises(DataFormatError):
        nirfile.read_network(bad)
    error(capsys, "compare", bad, "--frames", 2, "--backends", "numpy", "--out", tmp_path / "cmp")


# -- 12: recorded observations --------------------------------------------------------------------------------
def _obs_files(d: Path) -> dict:
    (d / "empty.npy").write_bytes(b"")
    np.save(d / "good.npy", np.zeros((3, 84, 84), np.uint8))
    (d / "truncated.npy").write_bytes((d / "good.npy").read_bytes()[:200])
    np.save(d / "object.npy", np.array([{"a": 1}], dtype=object))
    (d / "text.npy").write_text("frames\n")
    np.save(d / "bright.npy", np.full((3, 84, 84), 10**6, np.int64))
    return {k: d / f"{k}.npy" for k in ("empty", "truncated", "object", "text", "bright")}


@pytest.mark.parametrize("kind", ["empty", "truncated", "object", "text", "bright"])
def test_bad_observation_file(capsys, files, tmp_path, kind):
    obs = _obs_files(tmp_path)[kind]
    error(capsys, "compare", files["nir"], "--obs", obs, "--frames", 2, "--backends", "numpy",
          "--out", tmp_path / "cmp", match=str(obs))


# -- 13: run summaries ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("content", ["{}", "[]", "game", "energy", "model"])
def test_report_bad_run_json(capsys, tmp_path, content):
    if content in ("{}", "[]"):
        text = content
    else:
        d = json.loads((ROOT / "results" / "run_stpn" / "run.json").read_text())
        d[content] = None
        text = json.dumps(d)
    (tmp_path / "run.json").write_text(text)
    error(capsys, "report", tmp_path, match="run.json")
    assert not (tmp_path / "README.md").exists()


# -- 14, 16: flags ------------------------------------------------------------------------------------------------
def test_train_unknown_device(capsys, tmp_path):
    error(capsys, "train", "--device", "tpu9", "--out", tmp_path / "r", match="--device")
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize("flag, value", [("--model", "lstm"), ("--hidden", "16"), ("--action-set", "minimal")])
def test_train_init_from_contradicting_flag(capsys, files, tmp_path, flag, value):
    error(capsys, "train", "--init-from", files["ck"], flag, value, "--out", tmp_path / "r", match=flag)


def test_convert_negative_calib_frames(capsys, tmp_path):
    error(capsys, "convert", "random", "-o", tmp_path / "n.nir", "--calib-frames", -5, match="--calib-frames")


@pytest.mark.parametrize("command", [["report", "{run}"], ["run", "--out", "{tmp}/r"]])
def test_artifacts_folder_must_exist(capsys, tmp_path, command):
    run_dir = ROOT / "results" / "run_stpn"
    error(capsys, *[a.format(run=run_dir, tmp=tmp_path) for a in command], "--artifacts", tmp_path / "nonexistent",
          match="--artifacts")


# -- 17: one writer per output folder, checkpoint + resume state as a pair -----------------------------------------
def test_second_training_run_on_the_same_folder_is_refused(capsys, tmp_path):
    out = tmp_path / "run"
    with lock_folder(out, "training run"):
        error(capsys, "train", "--out", out, "--frames", "4", match="in use")
    assert sorted(p.name for p in out.iterdir()) == [".mstpn.lock"]


def test_lock_is_free_again_after_release(tmp_path):
    with lock_folder(tmp_path):
        with pytest.raises(MstpnError, match="in use"):
            lock_folder(tmp_path)
    lock_folder(tmp_path).release()


def test_checkpoint_and_resume_state_are_a_pair(files, tmp_path):
    cfg = files["cfg"]
    pol = build_policy(cfg, seed=3)
    opt = torch.optim.Adam(pol.parameters(), lr=1e-3)
    ck = tmp_path / "checkpoint_latest.safetensors"
    save_checkpoint(ck, pol, cfg, progress={"frames": 8}, optimizer=opt, resume_extra={"scores": [1.0]})
    assert load_resume_state(ck)["extra"]["scores"] == [1.0]
    with torch.no_grad():
        next(pol.parameters()).add_(0.5)
    save_checkpoint(ck, pol, cfg, progress={"frames": 16})  # a save killed before the resume state
    with pytest.raises(DataFormatError, match="belongs to another"):
        load_resume_state(ck)
    assert no_temp_files(tmp_path)


def test_atomic_write_text_refuses_a_folder_target(tmp_path):
    from mstpn_base.errors import ParameterError

    with pytest.raises(ParameterError, match="is a folder"):
        atomic_write_text(tmp_path, "x")


def test_signal_during_a_paired_save_publishes_neither_file(files, tmp_path, monkeypatch):
    """Checkpoint and resume state: an interrupt while they are written leaves both old files."""
    import snn_agent.checkpoint as ckmod

    cfg = files["cfg"]
    pol = build_policy(cfg, seed=4)
    opt = torch.optim.Adam(pol.parameters(), lr=1e-3)
    ck = tmp_path / "checkpoint_latest.safetensors"
    save_checkpoint(ck, pol, cfg, progress={"frames": 8}, optimizer=opt)
    before = (ck.read_bytes(), ckmod.resume_path(ck).read_bytes())
    real = torch.save

    def save_then_signal(*a, **k):
        real(*a, **k)
        os.kill(os.getpid(), signal.SIGTERM)

    monkeypatch.setattr(torch, "save", save_then_signal)
    with signals.handled(), pytest.raises(KeyboardInterrupt):
        save_checkpoint(ck, pol, cfg, progress={"frames": 16}, optimizer=opt)
    assert (ck.read_bytes(), ckmod.resume_path(ck).read_bytes()) == before
    assert no_temp_files(tmp_path)


@pytest.mark.parametrize("sig, status", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_real_process_signalled_as_its_temp_file_appears(tmp_path, sig, status):
    """The ``mstpn`` process gets the signal the moment its temporary file exists (the narrowest
    window: between creating the file and writing it); it exits with the signal's status and leaves
    nothing in the folder."""
    proc = subprocess.Popen([sys.executable, "-m", "mstpn.cli", "convert", "random", "-o", str(tmp_path / "n.nir"),
                             "--calib-frames", "0"], cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            text=True)
    while proc.poll() is None and not list(tmp_path.glob(".n.nir.*")):
        pass
    proc.send_signal(sig)
    err = proc.communicate()[1].strip().splitlines()
    assert proc.returncode == status, err
    assert err and err[-1].startswith("mstpn: interrupted by")
    assert no_temp_files(tmp_path)
    if (tmp_path / "n.nir").exists():  # the signal came after the file was published: it is whole
        nirfile.read_network(tmp_path / "n.nir")
