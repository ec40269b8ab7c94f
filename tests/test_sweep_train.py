"""Training trials of `mstpn sweep` (``"trial": "train"``, mstpn.sweep.train_trial): each trial
trains an m-STPN from scratch with its device parameters and seed in OUT/runs/<trial_id>/, then
evaluates the trained checkpoint with the devices in the loop.

Tiny runs: 1,000 emulator frames (2 environments, eager PyTorch), 1 game of at most 20 agent steps.
The interrupted run comes first and runs the command in subprocesses (their own embedded Ray),
before the module's Ray session starts.
"""
from __future__ import annotations

import json
import signal
import subprocess
import sys
import time

import pytest

from mstpn import sweep
from mstpn_base.errors import ParameterError
from mstpn_base.lock import lock_folder
from snn_agent.checkpoint import read_metadata
from snn_agent.train import LATEST, read_curve

ray = pytest.importorskip("ray")

TRAIN = {"frames": 1000, "num_envs": 2, "compile": False, "checkpoint_every": 1}


def train_spec(**changes):
    data = {"trial": "train", "games": 1, "max_steps": 20, "seeds": [0], "grid": {"d2d_sigma": [0.0, 0.2]},
            "train": dict(TRAIN)}
    data.update(changes)
    return data


def game_keys(rec):
    return [(g["seed"], g["score"], g["steps"], g["truncated"], g["actions_sha256"]) for g in rec["games"]]


# -- interrupted and resumed (first: no Ray session in this process yet) ------------------------------
def test_an_interrupted_training_trial_resumes_from_its_checkpoint(tmp_path):
    frames = 1600
    spec = tmp_path / "spec.json"
    spec.write_text(json.dumps(train_spec(grid={"d2d_sigma": [0.1]}, train={**TRAIN, "frames": frames})))
    out = tmp_path / "out"
    tid = sweep.make_trials(sweep.read_spec(spec))[0]["id"]
    run = out / "runs" / tid
    cmd = [sys.executable, "-m", "mstpn.cli", "sweep", str(spec), "-o", str(out), "--workers", "1", "--no-progress"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 180
    while time.time() < deadline and not (run / LATEST).is_file():
        time.sleep(0.1)
    assert (run / LATEST).is_file(), "no training checkpoint within 180 s"
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert not (out / "trials").exists() or not list((out / "trials").glob("*.json"))   # no record yet
    lock_folder(run, "check").release()          # the worker that trained is gone (its lock is free)
    before = int(read_metadata(run / LATEST)["progress"]["frames"])
    assert 0 < before < frames
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert "1 trials (0 already done, running 1)" in r.stdout
    rec = json.loads((out / "trials" / f"{tid}.json").read_text())
    tr = rec["training"]
    assert tr["resumed_from_frames"] == before and tr["frames"] == frames   # continued, not restarted
    assert tr["checkpoint"] == f"runs/{tid}/{LATEST}" and tr["checkpoint_sha256"] == sweep.file_sha256(run / LATEST)
    curve = [row["frames"] for row in read_curve(run)]
    assert curve == sorted(set(curve)) and curve[-1] == frames                # one run, no frames trained twice
    assert [f.name for f in (out / "trials").iterdir()] == [f"{tid}.json"]
    # started again: nothing to run, the finished run is not trained again
    mtime = (run / LATEST).stat().st_mtime_ns
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0 and "(1 already done, running 0)" in r.stdout
    assert (run / LATEST).stat().st_mtime_ns == mtime


# -- two trials on two Ray workers ----------------------------------------------------------------
def test_training_trials_on_two_ray_workers(tmp_path):
    spec = sweep.validate_spec(train_spec())
    lines = []
    ray.init(address="local", num_cpus=2, include_dashboard=False, logging_level="ERROR", log_to_driver=False)
    try:
        summary = sweep.run_sweep(spec, tmp_path / "out", workers=2, progress=False, log=lines.append)
    finally:
        ray.shutdown()
    trials = sweep.make_trials(spec)
    records, other = sweep.read_records(tmp_path / "out", trials)
    assert len(records) == 2 and not other
    pids = set()
    for t in trials:
        rec = records[t["id"]]
        tr = rec["training"]
        assert rec["trial"]["kind"] == "train" and rec["trial"]["train"] == TRAIN | {"checkpoint_every": 1.0}
        assert tr["frames"] == TRAIN["frames"] and tr["resumed_from_frames"] is None and tr["wall_s"] > 0
        ck = tmp_path / "out" / tr["checkpoint"]
        assert tr["checkpoint_sha256"] == sweep.file_sha256(ck)
        cfg = tr["config"]
        # the trial's devices and seed trained the m-STPN
        assert cfg["model"]["kind"] == "mstpn" and cfg["train"]["seed"] == t["seed"]
        assert cfg["model"]["device_params"]["parameters"]["d2d_sigma"]["value"] == t["params"]["d2d_sigma"]
        meta = read_metadata(ck)
        assert meta["device_params"]["parameters"]["d2d_sigma"]["value"] == t["params"]["d2d_sigma"]
        # evaluated like an evaluate trial of that checkpoint (same games, same pulses)
        net, sha = sweep.load_network(ck)
        local = sweep.evaluate_trial({**t, "checkpoint_sha256": sha}, net)
        assert game_keys(rec) == game_keys(local) and rec["device_stats"] == local["device_stats"]
        assert rec["device_stats"]["pulses"] > 0
        pids.add(rec["pid"])
    ck = [records[t["id"]]["training"]["checkpoint_sha256"] for t in trials]
    assert ck[0] != ck[1]                     # other devices, another trained network
    assert summary["trials_done"] == 2 and all(row["train_frames"] == TRAIN["frames"] for row in summary["by_value"])
    assert any("sweep: training 0 of 2000 frames" in line for line in lines)
    assert any("sweep: training 2000 of 2000 frames (2 of 2 trials trained)" in line for line in lines)


def test_training_spec_validation(tmp_path):
    s = sweep.validate_spec(train_spec(train={"frames": 2e3, "algo": "ppo", "num_envs": 4, "minibatches": 2}))
    assert s["train"] == {"frames": 2000, "algo": "ppo", "num_envs": 4, "minibatches": 2}
    cfg = sweep.train_config(s["train"], {"n_levels": 16.0, "stuck_fraction": 0.1}, 7)
    assert cfg.train.n_steps == 128 and cfg.train.seed == 7 and cfg.train.threads == 1   # PPO defaults, as mstpn train
    assert cfg.model.device_params["parameters"]["n_levels"]["value"] == 16
    t = sweep.make_trials(s)
    assert all("checkpoint_sha256" not in x for x in t)
    other = sweep.make_trials(sweep.validate_spec(train_spec(train={**TRAIN, "lr": 1e-3})))
    assert not {x["id"] for x in t} & {x["id"] for x in other}
    bad = [({"train": {"frames": 0}}, "train.frames must be a positive integer"),
           ({"train": {"frames": 10, "seed": 1}}, "unknown keys ['seed'] in train (seed: the trial's seed"),
           ({"train": {"frames": 10, "algo": "dqn"}}, "train.algo must be one of"),
           ({"checkpoint": "c.safetensors"}, "leave out 'checkpoint'"),
           ({"protocol": ["sticky", "deterministic"]}, "evaluates under one protocol"),
           ({"trial": "fit"}, "trial must be one of ['evaluate', 'train']"),
           ({"train": None}, "train must be an object")]
    for change, msg in bad:
        with pytest.raises(ParameterError, match=msg.replace("[", r"\[").replace("]", r"\]").replace("(", r"\(")):
            sweep.validate_spec(train_spec(**change))
    with pytest.raises(ParameterError, match='a train block needs "trial": "train"'):
        sweep.validate_spec({k: v for k, v in train_spec(checkpoint="c").items() if k != "trial"})
    # out-of-range device parameters of a training sweep: one line, exit 2, before anything trains
    (tmp_path / "s.json").write_text(json.dumps(train_spec(grid={"d2d_sigma": [2.0]})))
    r = subprocess.run([sys.executable, "-m", "mstpn.cli", "sweep", str(tmp_path / "s.json"), "-o",
                        str(tmp_path / "o")], capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1 and "d2d_sigma" in r.stderr, r.stderr
    assert not (tmp_path / "o" / "runs").exists()
