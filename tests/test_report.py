"""mstpn.report: the score table and training curves come from the artifacts folder, the HTML
report stands alone (figures embedded), and re-rendering is deterministic."""
import json
import re

import pytest

from mstpn.report import collect_models, render_html, write_report
from snn_agent.checkpoint import build_policy, save_checkpoint
from snn_agent.config import RunConfig
from snn_agent.train import write_curve


def _summary():
    return {"checkpoint": "x.safetensors", "model": {"kind": "stpn"}, "seed": 0, "trained_frames": 1234567,
            "game": {"score": -3.0, "steps": 10, "frames": 40, "finished": False, "steps_per_s": 5.0,
                     "events_per_frame": {"events": 12.0, "synops_ratio": 0.5}},
            "comparison": {"frames": 10, "reference": "PyTorch policy, float64",
                           "table_md": "| backend | frames |\n|---|---|\n| numpy | 10 |"},
            "energy": {"table": "memristive stpn bias 1.0"}}


@pytest.fixture
def artifacts(tmp_path):
    root = tmp_path / "artifacts"
    for kind in ("lstm", "stpn"):
        folder = root / kind
        folder.mkdir(parents=True)
        cfg = RunConfig.from_dict({"model": {"kind": kind}, "train": {"algo": "ppo" if kind == "lstm" else "a2c"}})
        save_checkpoint(folder / "policy.safetensors", build_policy(cfg, seed=1), cfg,
                        progress={"frames": 4000, "wall_s": 2.0})
        (folder / "eval.json").write_text(json.dumps({"episodes": 20, "mean": 20.5 if kind == "stpn" else 7.0,
                                                      "std": 0.5}))      # an older result: no protocol
        if kind == "stpn":      # a standard-protocol result
            (folder / "eval_sticky.json").write_text(json.dumps(
                {"episodes": 30, "mean": -4.0, "std": 6.0, "ci95": [-6.24, -1.76],
                 "protocol": {"repeat_action_probability": 0.25}}))
        write_curve(folder, [{"frames": 1000 * k, "score_mean20": -21 + k, "entropy": 1.0} for k in range(1, 5)],
                    png=False)
    (root / "not_a_policy").mkdir()
    return root


def test_collect_models_reads_scores_frames_and_curves(artifacts):
    models = {m["kind"]: m for m in collect_models(artifacts)}
    assert set(models) == {"lstm", "stpn"}
    assert models["stpn"]["name"] == "STPN" and models["stpn"]["frames"] == 4000
    assert models["stpn"]["deterministic"]["mean"] == 20.5 and models["lstm"]["deterministic"]["episodes"] == 20
    assert models["stpn"]["sticky"]["mean"] == -4.0 and "sticky" not in models["lstm"]
    assert models["lstm"]["curve"].name == "curve.csv"
    assert models["lstm"]["how"] == "ppo" and models["lstm"]["curve_label"] == "LSTM, PPO (sampled-action training games)"
    assert models["stpn"]["how"] == "a2c" and "STPN, A2C" in models["stpn"]["curve_label"]


def test_report_markdown_and_standalone_html(artifacts, tmp_path):
    out = tmp_path / "run"
    files = write_report(out, _summary(), artifacts=artifacts)
    md = files["markdown"].read_text()
    assert ("| STPN (`artifacts/stpn`) | PyTorch, greedy | 4,000 | -4.00 +- 6.00 (30 games, CI [-6.24, -1.76]) | "
            "+20.50 +- 0.50 (20 games) |") in md       # the standard protocol first
    assert "| LSTM (`artifacts/lstm`) | PyTorch, greedy | 4,000 | not evaluated | +7.00 +- 0.50 (20 games) |" in md
    assert "trained 1,234,567 frames" in md and "-3 (1 game)" in md
    for f in ("training_curves.png", "device/pulse_train.png", "device/ppf.png"):
        assert (out / f).is_file() and f"({f})" in md
    html = files["html"].read_text()
    assert "<table>" in html and "<h2>Scores</h2>" in html
    srcs = re.findall(r'src="([^"]+)"', html)
    # every figure that exists is embedded; this fake run has no GIF (the report says so instead of
    # linking to a missing file) and no energy plot (a link)
    assert [s for s in srcs if not s.startswith("data:image/")] == ["energy/energy.png"]
    assert "no animation of the game" in md
    assert sum(s.startswith("data:image/png;base64,") for s in srcs) >= 5
    # re-rendering from the same inputs gives the same text
    write_report(out, _summary(), artifacts=artifacts)
    assert files["markdown"].read_text() == md


def test_html_escapes_nothing_it_should_not(tmp_path):
    html = render_html("# t\n\n```\na < b\n```\n", tmp_path)
    assert "a &lt; b" in html and html.startswith("<!DOCTYPE html>")


def test_curve_labels_say_how_each_run_trained(artifacts, tmp_path):
    """A2C and distilled runs of one model get distinct legend labels that say what was scored."""
    src = artifacts / "stpn"
    dst = artifacts / "stpn_distilled"
    cfg = RunConfig.from_dict({"model": {"kind": "stpn"}, "train": {"teacher": "artifacts/lstm/policy.safetensors"}})
    dst.mkdir()
    save_checkpoint(dst / "policy.safetensors", build_policy(cfg, seed=1), cfg, progress={"frames": 4000})
    (dst / "curve.csv").write_bytes((src / "curve.csv").read_bytes())
    labels = {m["folder"]: m["curve_label"] for m in collect_models(artifacts)}
    assert labels["stpn"] == "STPN, A2C (sampled-action training games)"
    assert labels["stpn_distilled"] == "STPN, distilled from LSTM (greedy training games)"
    assert len(set(labels.values())) == len(labels)


def test_report_shows_a_mid_game_frame_and_wraps_the_energy_text(artifacts, tmp_path):
    import numpy as np
    from PIL import Image

    from snn_agent.evaluate import write_gif

    out = tmp_path / "run"
    out.mkdir()
    frames = [np.full((84, 84), 10 * k, np.uint8) for k in range(9)]
    write_gif(out / "game.gif", frames, fps=15)
    files = write_report(out, _summary(), artifacts=artifacts, device_curves=False)
    md = files["markdown"].read_text()
    assert "](game_frame.png)](game.gif)" in md
    with Image.open(out / "game.gif") as im:
        im.seek(4)
        mid = np.asarray(im.convert("RGB"))
    assert np.array_equal(np.asarray(Image.open(out / "game_frame.png").convert("RGB")), mid)
    html = files["html"].read_text()
    assert "white-space:pre-wrap" in html and '<a href="game.gif">' in html
