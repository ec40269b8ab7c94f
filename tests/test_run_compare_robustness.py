"""`mstpn run` and `mstpn compare` under bad input and interruptions.

* a backend that is skipped or unavailable (NaN speed) still gives a valid ``results.json`` (null
  for NaN) beside its ``report.md``; a report never outlives its results, stale plots go;
* Ctrl-C inside a Brian2 run ends the command interrupted (Brian2's own handler would stop the run
  early and return a partial frame as if it were complete);
* SIGTERM / Ctrl-C during a Lava run: exit 143 / 130, no Lava worker process left behind;
* ``--max-frames`` 0 or negative is a one-line error (as ``evaluate``);
* a run without a GIF removes the previous run's GIF and still; one run / compare per folder.

Networks: a random STPN policy converted without calibration (``random:0 --calib-frames 0``);
``mstpn run`` uses the shipped checkpoint with a short calibration.
"""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from conversion.synthetic import pong_like_frames
from lava_available import needs_lava
from test_cli_bad_input import run  # noqa: E402  (the shared CLI helper)
from mstpn import cli
from mstpn import compare_report
from mstpn_base import registry, signals
from mstpn_base.errors import MstpnError
from mstpn_base.lock import lock_folder

ROOT = Path(__file__).resolve().parent.parent
SHIPPED = ROOT / "artifacts" / "stpn" / "policy.safetensors"


def one_line_error(capsys, *argv, match):
    rc, err = run(capsys, *argv)
    assert rc == 2, err
    assert len(err) == 1 and ": error: " in err[0] and match in err[0], err
    return err[0]


def strict_json(path: Path):
    """Parse ``path``, refusing the NaN / Infinity that Python's json would accept."""
    def refuse(name):
        raise ValueError(f"{path}: {name} is not JSON")

    return json.loads(path.read_text(encoding="utf-8"), parse_constant=refuse)


def linked_files(report: Path) -> list:
    """The relative files a Markdown report shows: ![alt](file)."""
    import re

    return re.findall(r"!\[[^\]]*\]\(([^):]+)\)", report.read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def net(tmp_path_factory):
    """A random policy, converted without calibration: no fixed-point parameters."""
    path = tmp_path_factory.mktemp("net") / "random.nir"
    assert cli.main(["convert", "random:0", "-o", str(path), "--calib-frames", "0"]) == 0
    return path


# -- 1: skipped / unavailable backends, results.json beside report.md ---------------------------------------
@pytest.mark.parametrize("backends, status", [(["torch", "loihi2"], 0),      # loihi2: unavailable
                                              (["numpy-fixed"], 1)])         # cannot express (no fixed point)
def test_compare_with_a_backend_that_does_not_run_writes_valid_results(capsys, net, tmp_path, backends, status):
    out = tmp_path / "cmp"
    rc, err = run(capsys, "compare", net, "--frames", 3, "--backends", *backends, "--out", out)
    assert rc == status, err
    results = strict_json(out / "results.json")
    by_name = {r["backend"]: r for r in results}
    assert set(by_name) == {"torch", *backends}
    skipped = by_name[backends[-1]]
    assert skipped["error"] and skipped["frames"] == 0 and skipped["fps"] is None
    assert (out / "report.md").is_file()
    assert all((out / f).is_file() for f in linked_files(out / "report.md"))


def test_compare_leaves_no_report_or_plot_of_an_earlier_run(capsys, net, tmp_path, monkeypatch):
    out = tmp_path / "cmp"
    assert run(capsys, "compare", net, "--frames", 3, "--backends", "numpy", "--out", out)[0] == 0
    assert (out / "activity_raster.png").is_file()   # drawn from the numpy backend's activity
    # a second run without numpy: its report shows no raster, and the old one is gone
    assert run(capsys, "compare", net, "--frames", 3, "--backends", "torch", "--out", out)[0] == 0
    assert not (out / "activity_raster.png").exists()
    assert [r["backend"] for r in strict_json(out / "results.json")] == ["torch"]
    assert all((out / f).is_file() for f in linked_files(out / "report.md"))

    # a third run fails while drawing: its results are written, the earlier report is not left beside them
    def broken_plots(*a, **k):
        raise MstpnError("plotting failed")

    monkeypatch.setattr(compare_report, "_plots", broken_plots)
    one_line_error(capsys, "compare", net, "--frames", 2, "--backends", "numpy", "--out", out,
                   match="plotting failed")
    assert not (out / "report.md").exists()
    assert [r["backend"] for r in strict_json(out / "results.json")] == ["torch", "numpy"]


def test_second_compare_on_the_same_folder_is_refused(capsys, net, tmp_path):
    out = tmp_path / "cmp"
    with lock_folder(out, "compare"):
        one_line_error(capsys, "compare", net, "--frames", 2, "--backends", "numpy", "--out", out, match="in use")
    assert sorted(p.name for p in out.iterdir()) == [".mstpn.lock"]


# -- 2: Ctrl-C inside a Brian2 run ---------------------------------------------------------------------------
@pytest.mark.brian2
def test_ctrl_c_inside_a_brian2_run_raises_instead_of_returning_a_partial_frame(net):
    import brian2

    from conversion.nirfile import read_network

    runner = registry.make_runner("brian2", read_network(net))
    sent = []

    def ctrl_c():   # Ctrl-C arrives in the first Brian2 time step of the frame
        if not sent:
            sent.append(True)
            signal.raise_signal(signal.SIGINT)

    runner.network.add(brian2.NetworkOperation(ctrl_c, clock=runner.clock, when="start"))
    with signals.handled():
        # what importing brian2 inside a command does: its SIGINT handler wraps the command's
        signal.signal(signal.SIGINT, brian2._InterruptHandler(signal.getsignal(signal.SIGINT)))
        with pytest.raises(signals.Interrupted):
            runner.step(pong_like_frames(1)[0])
    assert sent


# -- 3: SIGTERM / Ctrl-C during a Lava run: no worker left --------------------------------------------------
def _descendants(pid: int) -> set:
    """Live (non-zombie) descendants of ``pid``, from /proc."""
    parent = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2:].split()
        if fields[0] != "Z":
            parent[int(entry)] = int(fields[1])
    found, frontier = set(), {pid}
    while frontier:
        frontier = {p for p, pp in parent.items() if pp in frontier} - found
        found |= frontier
    return found


def _kill_children_since(before) -> None:
    """SIGKILL the multiprocessing children started since ``before`` (a test's clean-up)."""
    import multiprocessing as mp

    for p in mp.active_children():
        if p not in before:
            p.kill()


def _alive(pids) -> set:
    left = set()
    for p in pids:
        try:
            state = Path(f"/proc/{p}/stat").read_text()
        except OSError:
            continue
        if state[state.rindex(")") + 2] != "Z":
            left.add(p)
    return left


@needs_lava
@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs /proc")
@pytest.mark.parametrize("target, sig, status", [("process", signal.SIGTERM, 143),
                                                 ("group", signal.SIGTERM, 143),
                                                 ("group", signal.SIGINT, 130)])   # Ctrl-C in a terminal
def test_signal_during_a_lava_run_stops_every_worker(net, tmp_path, target, sig, status):
    obs = tmp_path / "obs.npy"
    np.save(obs, pong_like_frames(200)[:, 0].astype(np.uint8))   # no recording: Lava starts sooner
    proc = subprocess.Popen([sys.executable, "-m", "mstpn.cli", "compare", str(net), "--frames", "200", "--obs",
                             str(obs), "--backends", "lava", "--out", str(tmp_path / "cmp")], cwd=ROOT,
                            env={**os.environ, "OMP_NUM_THREADS": "1"}, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        workers = set()
        deadline = time.monotonic() + 60
        while proc.poll() is None and len(workers) < 8 and time.monotonic() < deadline:
            time.sleep(0.05)
            workers = _descendants(proc.pid)
        assert len(workers) >= 8, "Lava did not start its worker processes"
        time.sleep(0.5)   # the run is under way
        workers |= _descendants(proc.pid)
        if target == "group":
            os.killpg(proc.pid, sig)
        else:
            proc.send_signal(sig)
        try:
            err = proc.communicate(timeout=30)[1].strip().splitlines()
        except subprocess.TimeoutExpired:
            pytest.fail("the command did not end after the signal")
        assert proc.returncode == status, err
        assert err[-1].startswith(f"mstpn: interrupted by {signal.Signals(sig).name}"), err
        assert not (tmp_path / "cmp" / "report.md").exists()
        end = time.monotonic() + 5
        while _alive(workers) and time.monotonic() < end:
            time.sleep(0.1)
        assert not _alive(workers), f"processes left: {sorted(_alive(workers))}"
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        for p in _alive(_descendants(proc.pid) | workers):
            os.kill(p, signal.SIGKILL)


@needs_lava
def test_signal_while_lava_starts_is_raised_once_started_and_nothing_is_left(net, monkeypatch):
    """The signal lands while Lava forks its workers: it is not lost (the start completes, then
    Interrupted), and close() ends the runtime that never ran and all its workers."""
    import multiprocessing as mp

    from conversion.nirfile import read_network

    runner = registry.make_runner("lava", read_network(net))
    cls = type(runner._root)
    real = cls.create_runtime

    def create_runtime_signalled(self, *a, **k):
        real(self, *a, **k)
        os.kill(os.getpid(), signal.SIGTERM)

    monkeypatch.setattr(cls, "create_runtime", create_runtime_signalled)
    before = set(mp.active_children())
    try:
        with signals.handled():
            with pytest.raises(signals.Interrupted):
                runner.step(pong_like_frames(1)[0])
            workers = {p.pid for p in mp.active_children() if p not in before}
            runner.close()
        assert len(workers) >= 8
        assert not _alive(workers)
    finally:
        _kill_children_since(before)


@needs_lava
def test_signal_in_the_middle_of_a_var_set_does_not_hang_the_stop(net, monkeypatch):
    """The interrupt cuts a Var.set message exchange in half (the float schedule switches biases on
    with Var.set): the runtime service waits for the rest forever, so close() must not ask it to stop
    but kill the workers; it returns and nothing is left."""
    import multiprocessing as mp
    import threading

    from lava.magma.runtime.runtime import Runtime
    from lava.magma.runtime.mgmt_token_enums import MGMT_COMMAND, enum_to_np

    from conversion.nirfile import read_network

    def set_var_cut_short(self, var_id, value, idx=None):
        port = self.runtime_to_service[0]
        port.send(MGMT_COMMAND.SET_DATA)      # the request starts, the data never follows
        port.send(enum_to_np(0))
        raise signals.Interrupted(signal.SIGTERM)

    monkeypatch.setattr(Runtime, "set_var", set_var_cut_short)
    runner = registry.make_runner("lava", read_network(net))
    assert runner.graph.pending_bias, "the float schedule sets no bias: this test would not cut anything"
    before = set(mp.active_children())
    try:
        with pytest.raises(signals.Interrupted):
            runner.step(pong_like_frames(1)[0])
        workers = {p.pid for p in mp.active_children() if p not in before}
        closing = threading.Thread(target=runner.close, daemon=True)
        closing.start()
        closing.join(timeout=60)
        assert not closing.is_alive(), "close() waits forever for the runtime service"
        assert len(workers) >= 8
        assert not _alive(workers)
    finally:
        _kill_children_since(before)


# -- 4: --max-frames / --compare-frames ------------------------------------------------------------------------
@pytest.mark.skipif(not SHIPPED.exists(), reason="shipped checkpoint missing")
@pytest.mark.parametrize("flag, value", [("--max-frames", 0), ("--max-frames", -8), ("--max-frames", 3),
                                         ("--compare-frames", -1)])
def test_run_refuses_a_frame_count_it_cannot_honour(capsys, tmp_path, monkeypatch, flag, value):
    from mstpn import run as run_mod

    monkeypatch.setattr(run_mod, "prepare_network", lambda *a, **k: pytest.fail("converted before the check"))
    one_line_error(capsys, "run", "--out", tmp_path / "r", flag, value, "--no-progress", match=flag)


# -- 5: no stale GIF, one run per folder ------------------------------------------------------------------------
@pytest.fixture
def quick_conversion(monkeypatch):
    """The main job's conversion with a short calibration (the point here is the output folder)."""
    from mstpn import run as run_mod

    real = run_mod.prepare_network
    monkeypatch.setattr(run_mod, "prepare_network", lambda policy, env_cfg, seed=0, log=print:
                        real(policy, env_cfg, seed=seed, calibration_frames=16, log=lambda *_: None))


@pytest.mark.skipif(not SHIPPED.exists(), reason="shipped checkpoint missing")
def test_run_without_gif_removes_the_previous_runs_game(capsys, tmp_path, quick_conversion):
    out = tmp_path / "r"
    out.mkdir()
    for old in ("game.gif", "game_frame.png"):   # an earlier run's game
        (out / old).write_bytes(b"old")
    rc, err = run(capsys, "run", "--out", out, "--no-gif", "--max-frames", 8, "--compare-frames", 0, "--no-progress")
    assert rc == 0, err
    assert not (out / "game.gif").exists() and not (out / "game_frame.png").exists()
    assert strict_json(out / "run.json")["game"]["frames"] == 8


@pytest.mark.skipif(not SHIPPED.exists(), reason="shipped checkpoint missing")
def test_second_run_on_the_same_folder_is_refused(capsys, tmp_path, monkeypatch):
    from mstpn import run as run_mod

    monkeypatch.setattr(run_mod, "prepare_network", lambda *a, **k: pytest.fail("ran despite the lock"))
    out = tmp_path / "r"
    with lock_folder(out, "run"):
        one_line_error(capsys, "run", "--out", out, "--max-frames", 8, "--no-progress", match="in use")
    assert sorted(p.name for p in out.iterdir()) == [".mstpn.lock"]
