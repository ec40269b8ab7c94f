"""Real Pong (ale-py ships the ROM): env wrapper, greedy evaluation with fixed seeds, the CLI."""
import json

import numpy as np
import pytest
import torch

from snn_agent.checkpoint import build_policy, save_checkpoint
from snn_agent.cli import main
from snn_agent.config import EnvConfig, RunConfig
from snn_agent.envs import PongVecEnv
from snn_agent.evaluate import evaluate

torch.set_num_threads(1)


def test_pong_env_observations_actions_and_scores():
    env = PongVecEnv(EnvConfig(action_set="updown"), 2, seed=0)
    try:
        obs = env.reset()
        assert obs.shape == (2, 1, 84, 84) and obs.dtype == np.uint8 and obs.max() > 0
        assert env.n_actions == 3
        total = np.zeros(2)
        for _ in range(300):
            obs, r, done, _ = env.step(np.zeros(2, dtype=int))
            assert set(np.unique(r)) <= {-1.0, 0.0, 1.0}
            total += r
        assert total.min() < 0   # NOOP loses points against the built-in player
    finally:
        env.close()


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    cfg = RunConfig.from_dict({"model": {"kind": "stpn", "hidden": 16}})
    path = tmp_path_factory.mktemp("ck") / "p.safetensors"
    save_checkpoint(path, build_policy(cfg, seed=0), cfg)
    return path, cfg


def test_evaluate_is_deterministic_and_caps_frames(ckpt, tmp_path):
    from snn_agent.checkpoint import load_policy

    pol, meta = load_policy(ckpt[0])
    kw = dict(episodes=3, seed=5, max_frames=400, num_envs=2, progress=False)
    a = evaluate(pol, meta["config"].env, gif=tmp_path / "g.gif", **kw)
    b = evaluate(pol, meta["config"].env, **kw)
    assert a["scores"] == b["scores"] and len(a["scores"]) == 3
    assert all(a["truncated"]) and a["frames"] == [400] * 3     # capped: Pong lasts much longer
    assert a["mean"] == pytest.approx(np.mean(a["scores"])) and a["mean"] <= 0
    gif = (tmp_path / "g.gif").read_bytes()
    assert gif[:3] == b"GIF" and len(gif) > 1000


def test_evaluate_builds_no_autograd_graph(ckpt, monkeypatch):
    """A graph kept across a game's steps holds every step's F: a long sticky-action game of the
    Pong STPN with 8 games in parallel ran out of 24 GB that way."""
    from snn_agent.checkpoint import load_policy

    pol, meta = load_policy(ckpt[0])
    seen = []
    forward = type(pol.core).forward

    def spy(self, *a, **k):
        h, state, extras = forward(self, *a, **k)
        seen.append(torch.is_grad_enabled() or h.requires_grad or state.F.requires_grad)
        return h, state, extras

    monkeypatch.setattr(type(pol.core), "forward", spy)
    evaluate(pol, meta["config"].env, episodes=1, seed=5, max_frames=40, num_envs=1, progress=False)
    assert seen and not any(seen)


def test_cli_evaluate_and_errors(ckpt, tmp_path, capsys):
    out = tmp_path / "e.json"
    rc = main(["evaluate", str(ckpt[0]), "--episodes", "2", "--max-frames", "200", "--json", str(out),
               "--no-progress"])
    assert rc == 0
    res = json.loads(out.read_text())
    assert res["episodes"] == 2 and res["model"] == "stpn" and len(res["scores"]) == 2
    assert "2 games" in capsys.readouterr().out
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(ckpt[0].read_bytes()[:1000])
    assert main(["evaluate", str(bad), "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert "truncated" in err and "\n" not in err


def test_cli_train_tiny_run_and_resume(tmp_path):
    out = tmp_path / "run"
    args = ["train", "--model", "stpn", "--hidden", "8", "--num-envs", "2", "--n-steps", "5",
            "--frames", "80", "--out", str(out), "--no-progress", "--action-set", "updown"]
    assert main(args) == 0
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["model"]["hidden"] == 8 and cfg["env"]["action_set"] == "updown"
    assert main(args) == 2                       # existing run, no --resume
    assert main(args[:9] + ["--frames", "160", "--out", str(out), "--resume", "--no-progress"]) == 0
    from snn_agent.checkpoint import read_metadata
    assert read_metadata(out / "checkpoint_latest.safetensors")["progress"]["frames"] == 160
    assert main(["train", "--out", str(tmp_path / "x"), "--lr", "-1", "--no-progress"]) == 2


def test_vector_env_seeds_sub_envs_consecutively():
    """evaluate() relies on it: game i of a batch seeded s equals a single game seeded s + i."""
    def final_obs(n, seed):
        env = PongVecEnv(EnvConfig(), n, seed=seed)
        try:
            env.reset()
            for a in np.random.default_rng(0).integers(0, 6, 40):
                obs, _, _, _ = env.step(np.full(n, a))
            return obs
        finally:
            env.close()

    both = final_obs(2, 7)
    assert not np.array_equal(both[0], both[1])
    assert np.array_equal(both[0], final_obs(1, 7)[0]) and np.array_equal(both[1], final_obs(1, 8)[0])
