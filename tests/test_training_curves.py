"""Training curves over runs (snn_agent.curves, ``mstpn curves``): the curve.csv reader against the
writer and against corrupted files (property-based), the aggregation over seeds against hand
computed means and Student-t intervals, and the command's output and errors."""
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mstpn_base.errors import DataFormatError, MstpnError
from snn_agent import curves
from snn_agent.train import write_curve

ROOT = Path(__file__).resolve().parents[1]
SETTINGS = dict(derandomize=True, deadline=None, database=None, max_examples=60)


def _config(kind="stpn", algo="ppo", sticky=0.25, seed=1):
    return {"model": {"kind": kind}, "env": {"repeat_action_probability": sticky, "frameskip": 4},
            "train": {"algo": algo, "seed": seed, "teacher": None}}


def _run_folder(root: Path, name: str, frames, scores, **config) -> Path:
    folder = root / name
    folder.mkdir(parents=True)
    rows = [{"frames": f, "score_mean20": s, "entropy": 1.0} for f, s in zip(frames, scores)]
    write_curve(folder, rows, png=False)
    (folder / "config.json").write_text(json.dumps(_config(**config)))
    return folder


score_cells = st.one_of(st.none(), st.floats(min_value=-21, max_value=21, allow_nan=False))


@settings(**SETTINGS)
@given(steps=st.lists(st.integers(min_value=0, max_value=10**6), max_size=30), scores=st.data())
def test_reader_returns_what_the_writer_wrote(tmp_path_factory, steps, scores):
    frames = np.cumsum(steps).tolist()
    s = [scores.draw(score_cells) for _ in frames]
    folder = tmp_path_factory.mktemp("run")
    write_curve(folder, [{"frames": f, "score_mean20": "" if v is None else v, "entropy": 0.5}
                         for f, v in zip(frames, s)], png=False)
    got_f, got_s = curves.read_curve_csv(folder / "curve.csv")
    keep = [v is not None for v in s]
    np.testing.assert_array_equal(got_f, np.asarray(frames, float)[keep])
    np.testing.assert_array_equal(got_s, np.asarray([v for v in s if v is not None], float))


@settings(**SETTINGS)
@given(data=st.data())
def test_corrupted_curves_raise_only_data_format_errors(tmp_path_factory, data):
    folder = tmp_path_factory.mktemp("bad")
    write_curve(folder, [{"frames": 1000 * i, "score_mean20": -20 + i, "entropy": 1.0} for i in range(6)],
                png=False)
    raw = bytearray((folder / "curve.csv").read_bytes())
    for _ in range(data.draw(st.integers(1, 6))):
        kind = data.draw(st.sampled_from(["flip", "cut", "insert"]))
        pos = data.draw(st.integers(0, max(len(raw) - 1, 0)))
        if kind == "flip" and raw:
            raw[pos] = data.draw(st.integers(0, 255))
        elif kind == "cut":
            del raw[pos:pos + data.draw(st.integers(1, 40))]
        else:
            raw[pos:pos] = data.draw(st.binary(min_size=1, max_size=8))
    (folder / "curve.csv").write_bytes(bytes(raw))
    try:
        frames, score = curves.read_curve_csv(folder / "curve.csv")
    except DataFormatError:
        return
    assert frames.shape == score.shape
    assert np.all(np.diff(frames) >= 0) and np.all(np.abs(score) <= 21)


@pytest.mark.parametrize("text, match", [
    ("frames,score\n1,2\n", "no column score_mean20"),
    ("frames,score_mean20\n10,abc\n", "line 2: .*must be numbers"),
    ("frames,score_mean20\n10,-3\n5,-2\n", "line 3: frames go back from 10 to 5"),
    ("frames,score_mean20\n10,25\n", "line 2: score_mean20 25.0 outside"),
    ("frames,score_mean20\nnan,2\n", "line 2: frames must be a finite number"),
    ("frames,score_mean20\n-4,2\n", "line 2: frames must be a finite number >= 0"),
])
def test_bad_curves_are_named(tmp_path, text, match):
    path = tmp_path / "curve.csv"
    path.write_text(text)
    with pytest.raises(DataFormatError, match=match):
        curves.read_curve_csv(path)


def test_runs_group_by_what_they_train_and_aggregate_to_the_mean_and_t_interval(tmp_path):
    a = curves.load_run(_run_folder(tmp_path, "s1", [0, 100, 200], [-21, -1, 19], seed=1))
    b = curves.load_run(_run_folder(tmp_path, "s2", [0, 200], [-19, 11], seed=2))
    c = curves.load_run(_run_folder(tmp_path, "lstm", [0, 400], [-21, 0], kind="lstm", seed=1))
    assert a.group == b.group == "STPN, PPO, sticky 0.25" and c.group == "LSTM, PPO, sticky 0.25"
    assert (a.seed, b.seed) == (1, 2)
    assert list(curves.group_runs([a, c, b])) == [a.group, c.group]

    agg = curves.aggregate([a, b], points=5)          # grid 0, 50, 100, 150, 200
    np.testing.assert_allclose(agg["frames"], [0, 50, 100, 150, 200])
    sa = np.array([-21, -11, -1, 9, 19.0])
    sb = np.array([-19, -11.5, -4, 3.5, 11.0])
    np.testing.assert_allclose(agg["mean"], (sa + sb) / 2)
    t_975 = np.tan(np.pi * 0.475)    # Student t quantile, 1 degree of freedom (Cauchy): tan(pi (p - 1/2))
    half = t_975 * np.abs(sa - sb) / np.sqrt(2) / np.sqrt(2)      # t s / sqrt(n), s = |a - b| / sqrt(2)
    # rtol 1e-9: scipy's numerical t quantile differs from the closed form by ~2e-11 (relative)
    np.testing.assert_allclose(agg["hi"] - agg["mean"], half, rtol=1e-9, atol=0)
    np.testing.assert_array_equal(agg["n"], 2)

    agg = curves.aggregate([a, c], points=5)         # grid 0..400: run a stops at 200, no extrapolation
    np.testing.assert_array_equal(agg["n"], [2, 2, 2, 1, 1])
    assert np.isnan(agg["lo"][3]) and agg["mean"][4] == 0.0


def test_frames_to_reach_is_the_first_logged_crossing(tmp_path):
    run = curves.load_run(_run_folder(tmp_path, "r", [0, 100, 200, 300], [-21, 19, 12, 20]))
    assert curves.frames_to_reach(run, 19) == 100
    assert curves.frames_to_reach(run, 20) == 300
    assert curves.frames_to_reach(run, 20.5) is None
    (summary,) = curves.summarise([run], 19)
    assert summary["reached"] == 1 and summary["runs"][0]["final_score_mean20"] == 20


def _cli(*args):
    return subprocess.run([sys.executable, "-m", "mstpn.cli", "curves", *map(str, args)], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)


def test_cli_prints_groups_and_writes_plot_and_json(tmp_path):
    r1 = _run_folder(tmp_path, "s1", [0, 100, 200], [-21, 19.5, 20], seed=1)
    r2 = _run_folder(tmp_path, "s2", [0, 100, 200], [-21, -5, 19], seed=2)
    proc = _cli(r1, r2, "--plot", tmp_path / "c.png", "--out", tmp_path / "c.json")
    assert proc.returncode == 0, proc.stderr
    assert "STPN, PPO, sticky 0.25: 2 run(s)" in proc.stdout
    assert "final score +19.50 (95% CI [" in proc.stdout and "reached +19: 2 of 2" in proc.stdout
    assert (tmp_path / "c.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    summary = json.loads((tmp_path / "c.json").read_text())
    (group,) = summary["groups"]
    assert [r["frames_to_threshold"] for r in group["runs"]] == [100.0, 200.0]
    assert group["final_score"]["mean"] == pytest.approx(19.5)


@pytest.mark.parametrize("args, message", [
    (["nowhere"], "no training curve (curve.csv) there"),
    (["{run}", "--threshold", "30"], "--threshold must lie in Pong's score range"),
])
def test_cli_errors_are_one_line_exit_2(tmp_path, args, message):
    run = _run_folder(tmp_path, "s1", [0, 100], [-21, -20])
    proc = _cli(*[a.format(run=run) for a in args])
    assert proc.returncode == 2
    assert message in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
    assert "Traceback" not in proc.stderr


def test_bad_config_is_named(tmp_path):
    run = _run_folder(tmp_path, "s1", [0, 100], [-21, -20])
    (run / "config.json").write_text('{"model": 3}')
    with pytest.raises(MstpnError, match="config.json"):
        curves.load_run(run)
