"""`mstpn sweep` on Ray (mstpn.sweep) and the stuck-at faults and retention drift of the device
layer (conversion.device_layer, memristor.equations.lt_drift).

Tiny trials: a random-init m-STPN checkpoint with a decisive head, 1 game of at most 30 agent steps.
Scores of 30-step games are mostly 0, so trials are compared on their action sequences
(SHA-256 of every action), steps and counted pulses as well: exact equality, no tolerance.
One local Ray session (2 CPUs) is shared by the tests that run in-process sweeps; the SIGINT test
runs the command in subprocesses (their own embedded Ray) and comes first, before that session starts.
"""
from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from conversion import device_layer as dl
from mstpn import sweep
from mstpn_base.errors import DataFormatError, ParameterError
from mstpn_base.ops import NUMPY

ray = pytest.importorskip("ray")


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    sys.path.insert(0, str(Path(__file__).parent))
    from random_policies import decisive_policy
    from snn_agent.checkpoint import save_checkpoint
    from snn_agent.config import ModelConfig, RunConfig

    cfg = RunConfig(model=ModelConfig(kind="mstpn")).validate()
    path = tmp_path_factory.mktemp("ck") / "mstpn.safetensors"
    save_checkpoint(path, decisive_policy(cfg, seed=3), cfg)
    return path


@pytest.fixture(scope="module")
def ray_session():
    ray.init(address="local", num_cpus=2, include_dashboard=False, logging_level="ERROR", log_to_driver=False)
    yield
    ray.shutdown()


def spec_for(ck, **changes):
    data = {"checkpoint": str(ck), "games": 1, "max_steps": 30, "seeds": [0, 1], "protocol": "sticky",
            "grid": {"d2d_sigma": [0.0, 0.3]}}
    data.update(changes)
    return sweep.validate_spec(data)


def game_keys(rec):
    return [(g["seed"], g["score"], g["steps"], g["truncated"], g["actions_sha256"]) for g in rec["games"]]


# -- the command, interrupted and resumed (first: no shared Ray session yet) ------------------------
def test_sigint_then_restart_runs_only_the_missing_trials(checkpoint, tmp_path):
    spec = tmp_path / "spec.json"
    spec.write_text(json.dumps({"checkpoint": str(checkpoint), "games": 2, "max_steps": 40, "seeds": [0, 1],
                                "grid": {"d2d_sigma": [0.0, 0.3]}}))
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "mstpn.cli", "sweep", str(spec), "-o", str(out), "--workers", "1", "--no-progress"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 180    # generous: Ray starts slowly on a loaded 2-core machine
    while time.time() < deadline and not list((out / "trials").glob("*.json")):
        time.sleep(0.2)
    assert list((out / "trials").glob("*.json")), "no trial completed within 180 s"
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    first = {f.name: f.stat().st_mtime_ns for f in (out / "trials").glob("*.json")}
    assert 1 <= len(first) < 4
    assert not [f for f in (out / "trials").iterdir() if f.suffix != ".json"], "a temporary file was left"
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert f"4 trials ({len(first)} already done, running {4 - len(first)})" in r.stdout
    files = sorted((out / "trials").iterdir())
    assert len(files) == 4 and all(f.suffix == ".json" for f in files)
    assert {f.name: f.stat().st_mtime_ns for f in files if f.name in first} == first   # not run again
    ids = {t["id"] for t in json.loads((out / "spec.json").read_text())["trials"]}
    assert {f.stem for f in files} == ids
    summary = json.loads((out / "summary.json").read_text())
    assert summary["trials_done"] == 4 and all(row["n"] == 4 for row in summary["by_value"])   # 2 seeds x 2 games


# -- Ray = in-process --------------------------------------------------------------------------------
def test_ray_with_two_workers_equals_in_process_trials(checkpoint, tmp_path, ray_session):
    spec = spec_for(checkpoint)
    summary = sweep.run_sweep(spec, tmp_path / "out", workers=2, progress=False, log=lambda *a: None)
    net, sha = sweep.load_network(checkpoint)
    trials = sweep.make_trials(spec, sha)
    records, other = sweep.read_records(tmp_path / "out", trials)
    assert len(trials) == 4 and set(records) == {t["id"] for t in trials} and not other
    pids = set()
    for t in trials:
        local = sweep.run_trial(t, net)      # one after another, in this process, same seeds
        assert game_keys(records[t["id"]]) == game_keys(local)
        assert records[t["id"]]["device_stats"] == local["device_stats"]
        assert local["device_stats"]["pulses"] > 0
        pids.add(records[t["id"]]["pid"])
    assert os.getpid() not in pids
    assert summary["trials_done"] == 4
    for name in ("summary.csv", "summary.json", "score_vs_d2d_sigma.png"):
        assert (tmp_path / "out" / name).stat().st_size > 0
    # a second run finds every record and runs nothing
    lines = []
    sweep.run_sweep(spec, tmp_path / "out", workers=2, progress=False, log=lines.append)
    assert "(4 already done, running 0)" in lines[0]


def test_a_trial_whose_worker_dies_is_retried_and_recorded_once(checkpoint, tmp_path, ray_session):
    marker = tmp_path / "died"
    spec = spec_for(checkpoint, seeds=[0], grid={"d2d_sigma": [0.0, 0.3]})
    net, sha = sweep.load_network(checkpoint)
    victim = sweep.make_trials(spec, sha)[1]["id"]

    def dies_once(trial, net, marker=str(marker), victim=victim):
        import os as _os

        from mstpn import sweep as _sweep

        if trial["id"] == victim and not _os.path.exists(marker):
            with open(marker, "w") as fh:
                fh.write(str(_os.getpid()))
            _os._exit(1)      # the worker process dies mid-trial
        return _sweep.run_trial(trial, net)

    sweep.run_sweep(spec, tmp_path / "out", workers=2, trial_fn=dies_once, progress=False, log=lambda *a: None)
    assert marker.exists()
    files = sorted((tmp_path / "out" / "trials").iterdir())
    assert [f.stem for f in files] == sorted(t["id"] for t in sweep.make_trials(spec, sha))
    rec = json.loads((tmp_path / "out" / "trials" / f"{victim}.json").read_text())
    assert rec["pid"] != int(marker.read_text())            # completed by another worker
    t = next(t for t in sweep.make_trials(spec, sha) if t["id"] == victim)
    assert game_keys(rec) == game_keys(sweep.run_trial(t, net))


def test_torch_backend_trials_play_the_numpy_trials(checkpoint, tmp_path, ray_session):
    """backend "torch" (compiled device step) on 2 Ray workers: the same games as the NumPy
    reference in this process (actions, scores, steps), the same counted pulses over two games
    per trial (the noise step counter goes on across games on both); other trial ids."""
    spec = spec_for(checkpoint, backend="torch", games=2, seeds=[0], fixed={"c2c_sigma": 0.05})
    ref = spec_for(checkpoint, games=2, seeds=[0], fixed={"c2c_sigma": 0.05})
    sweep.run_sweep(spec, tmp_path / "out", workers=2, progress=False, log=lambda *a: None)
    net, sha = sweep.load_network(checkpoint)
    trials, ref_trials = sweep.make_trials(spec, sha), sweep.make_trials(ref, sha)
    assert not {t["id"] for t in trials} & {t["id"] for t in ref_trials}
    records, _ = sweep.read_records(tmp_path / "out", trials)
    assert len(records) == 2
    for t, r in zip(trials, ref_trials):
        rec, local = records[t["id"]], sweep.run_trial(r, net)
        assert rec["trial"]["backend"] == "torch" and local["trial"]["backend"] == "numpy"
        assert {k: v for k, v in rec["trial"].items() if k != "backend"} == \
            {k: v for k, v in local["trial"].items() if k != "backend"}
        assert game_keys(rec) == game_keys(local) and len(rec["games"]) == 2
        for k, v in local["device_stats"].items():
            if isinstance(v, int):
                assert rec["device_stats"][k] == v, k
            else:
                assert rec["device_stats"][k] == pytest.approx(v, rel=1e-9), k
        assert local["device_stats"]["device_steps"] == sum(g["steps"] for g in local["games"])
        assert rec["devices"] == local["devices"]


# -- the spec ---------------------------------------------------------------------------------------
def test_spec_validation_and_trial_ids(checkpoint, tmp_path):
    spec = spec_for(checkpoint, protocol=["sticky", "deterministic"])
    trials = sweep.make_trials(spec, "0" * 64)
    assert len(trials) == 2 * 2 * 2 and len({t["id"] for t in trials}) == 8
    assert [t["id"] for t in sweep.make_trials(spec, "0" * 64)] == [t["id"] for t in trials]   # deterministic
    assert not {t["id"] for t in sweep.make_trials(spec, "1" * 64)} & {t["id"] for t in trials}
    # the default backend keeps the ids of specs written without the key
    assert [sweep.trial_id({k: v for k, v in t.items() if k not in ("id", "backend")}) for t in trials] == \
        [t["id"] for t in trials]
    rnd = sweep.validate_spec({"checkpoint": "c", "games": 1, "max_steps": 5, "seeds": 2,
                               "random": {"n": 6, "seed": 4, "distributions": {
                                   "tau0": {"loguniform": [1, 100]}, "n_levels": {"choice": [8, 64]},
                                   "c2c_sigma": {"uniform": [0, 0.1]}}}})
    sets = sweep.parameter_sets(rnd)
    assert len(sets) == 6 and sets == sweep.parameter_sets(rnd)
    assert all(1 <= s["tau0"] <= 100 and s["n_levels"] in (8, 64) and 0 <= s["c2c_sigma"] <= 0.1 for s in sets)
    bad = [({"games": 0}, "games must be an integer >= 1"), ({"protocol": "sometimes"}, "protocol must be one of"),
           ({"grid": {"d2d": [0.1]}}, "unknown parameter 'd2d'"), ({"grid": {"d2d_sigma": []}}, "non-empty list"),
           ({"random": {"n": 2, "distributions": {}}}, "exactly one of 'grid' or 'random'"),
           ({"seeds": [1, 1]}, "seeds must not repeat"), ({"color": 1}, "unknown keys ['color']"),
           ({"backend": "jax"}, "backend must be one of ['numpy', 'torch']")]
    for change, msg in bad:
        with pytest.raises(ParameterError, match=msg.replace("[", r"\[").replace("]", r"\]").replace("(", r"\(")):
            spec_for(checkpoint, **change)
    # out-of-range values are refused before any trial runs, with one line
    (tmp_path / "s.json").write_text(json.dumps({"checkpoint": str(checkpoint), "games": 1, "max_steps": 5,
                                                 "seeds": [0], "grid": {"d2d_sigma": [2.0]}}))
    r = subprocess.run([sys.executable, "-m", "mstpn.cli", "sweep", str(tmp_path / "s.json"), "-o",
                        str(tmp_path / "o")], capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1 and "d2d_sigma" in r.stderr
    (tmp_path / "s.yaml").write_text("checkpoint: c\ngames: [1\n")
    with pytest.raises(DataFormatError, match="not valid YAML"):
        sweep.read_spec(tmp_path / "s.yaml")


# -- stuck-at faults and drift in the device layer ---------------------------------------------------
def small_layer(**changes):
    rng = np.random.default_rng(0)
    W = rng.uniform(-0.8, 0.8, (6, 10))
    lam = np.full(W.shape, 0.95)
    return dl.build(dl.Mapping(**changes), W, lam), W


def test_stuck_devices_ignore_pulses_and_are_frozen_from_the_seed():
    devs, W = small_layer(stuck_fraction=0.3, seed=5)
    m = devs.mapping
    stuck = dl.stuck_devices(m, W.shape)
    assert np.array_equal(stuck, dl.stuck_devices(m, W.shape))                        # same seed, same faults
    assert not np.array_equal(stuck, dl.stuck_devices(m.replace(seed=6), W.shape))
    big = dl.stuck_devices(m.replace(stuck_fraction=0.1), (400, 400))
    assert abs(big.mean() - 0.1) < 0.005          # binomial, 320,000 devices: sd 0.0005
    arrays = devs.arrays()
    state = dl.init_state((1, *W.shape))
    rng = np.random.default_rng(1)
    moved = np.zeros((2, *W.shape), bool)
    for step in range(12):
        h, z = rng.uniform(-1, 1, (1, 6, 1)), rng.uniform(-1, 1, (1, 1, 10))
        state, F, pulses = dl.plasticity(NUMPY, m, arrays, state, np.full((1, 6, 1), 1.5), h, z,
                                         np.full(W.shape, 0.5), dl.c2c_noise(m, step, (1, *W.shape)))
        for i, side in enumerate(dl.SIDES):
            assert np.all(state[side]["g_st"][0][stuck[i]] == 0)      # holds its conductance (fresh: 0)
            assert np.all(state[side]["r"][0][stuck[i]] == 0)
            moved[i] |= state[side]["g_st"][0] > 0
    assert moved[~stuck].mean() > 0.5                               # the others take pulses
    assert devs.summary()["stuck_devices"] == int(stuck.sum())
    # no faults: no mask, and the default block is unchanged (no 'faults' entry)
    assert "live" not in small_layer()[0].sides["p"] and "faults" not in dl.Mapping().to_block()


def test_retention_drift_decays_the_long_term_weights():
    tau = 3600.0
    devs0, W = small_layer()
    devs, _ = small_layer(lt_drift_tau=tau, lt_age=tau * math.log(2.0))
    p = devs.mapping.params
    # g_lt - g_min halves after tau ln 2, so does the read-back weight (the pair's g_min cancels)
    np.testing.assert_allclose(devs.W, 0.5 * devs0.W, rtol=1e-12, atol=1e-15)
    for side in dl.SIDES:
        np.testing.assert_allclose(devs.sides[side]["g_lt"] - p.g_min, 0.5 * (devs0.sides[side]["g_lt"] - p.g_min),
                                   rtol=1e-12)
    assert np.array_equal(small_layer(lt_drift_tau=tau, lt_age=0.0)[0].W, devs0.W)
    block = dl.Mapping(stuck_fraction=0.01, lt_drift_tau=tau, lt_age=60.0).to_block()
    back = dl.Mapping.from_block(json.loads(json.dumps(block)))
    assert (back.stuck_fraction, back.lt_drift_tau, back.lt_age) == (0.01, tau, 60.0)
    with pytest.raises(ParameterError, match="stuck_fraction"):
        dl.Mapping(stuck_fraction=1.5)
    with pytest.raises(ParameterError, match="lt_drift_tau"):
        dl.Mapping(lt_drift_tau=0.0)
    block["faults"]["lt_age_s"] = "soon"
    with pytest.raises(DataFormatError, match="lt_age_s"):
        dl.Mapping.from_block(block)
