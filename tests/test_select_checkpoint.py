"""scripts/select_checkpoint.py: which snapshot it picks, what it replays, how it fails."""
from __future__ import annotations

import importlib.util
import json
import shutil
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def select(monkeypatch):
    spec = importlib.util.spec_from_file_location("select_checkpoint", ROOT / "scripts" / "select_checkpoint.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    played = []

    def fake_evaluate(policy, env_cfg, episodes, seed, num_envs, progress):
        assert env_cfg.repeat_action_probability == 0.25 and seed == mod.SELECTION_SEED_BASE
        played.append(type(policy.core).__name__)
        mean = fake_evaluate.means.pop(0)
        return {"mean": mean, "std": 0.0, "ci95": None, "scores": [mean] * episodes}

    fake_evaluate.means = []
    monkeypatch.setattr(mod, "evaluate", fake_evaluate)
    mod.played, mod.means = played, fake_evaluate.means
    return mod


def _run(tmp_path, names):
    run = tmp_path / "run"
    (run / "snapshots").mkdir(parents=True, exist_ok=True)
    for src, dest in names:
        shutil.copy(ROOT / "artifacts" / src / "policy.safetensors", run / dest)
    return run


def test_picks_the_highest_mean_and_replays_only_new_checkpoints(select, tmp_path, capsys):
    run = _run(tmp_path, [("stpn", "snapshots/frames_a.safetensors"), ("stpn_a2c", "checkpoint_latest.safetensors")])
    select.means += [5.0, 7.0]
    assert select.main([str(run), "--episodes", "2"]) == 0
    assert "best: " + str(run / "checkpoint_latest.safetensors") in capsys.readouterr().out
    rows = json.loads((run / "selection.json").read_text())["rows"]
    assert sorted(r["mean"] for r in rows) == [5.0, 7.0] and len(select.played) == 2
    # a new latest checkpoint: only it is played, and the old latest's row (same path) no longer competes
    shutil.copy(ROOT / "artifacts" / "mstpn" / "policy.safetensors", run / "checkpoint_latest.safetensors")
    select.means += [1.0]
    assert select.main([str(run), "--episodes", "2"]) == 0
    assert len(select.played) == 3
    assert "best: " + str(run / "snapshots/frames_a.safetensors") in capsys.readouterr().out
    # another number of games is another selection: everything is played again
    select.means += [1.0, 2.0]
    assert select.main([str(run), "--episodes", "3"]) == 0 and len(select.played) == 5


def test_ties_go_to_the_more_trained_checkpoint(select, tmp_path, capsys):
    run = _run(tmp_path, [("stpn_a2c", "snapshots/a.safetensors"), ("stpn", "snapshots/b.safetensors")])
    select.means += [4.0, 4.0]     # stpn_a2c: 25M frames; stpn: 3.7M
    assert select.main([str(run)]) == 0
    assert "best: " + str(run / "snapshots/a.safetensors") in capsys.readouterr().out


def test_bad_paths_are_one_line_errors(select, tmp_path, capsys):
    assert select.main([str(tmp_path / "missing")]) == 2
    assert "no such run folder or checkpoint" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert select.main([str(tmp_path / "empty")]) == 2
    assert "no checkpoints in" in capsys.readouterr().err
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"not a checkpoint")
    assert select.main([str(bad)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err
