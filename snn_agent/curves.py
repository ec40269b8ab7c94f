"""Training curves of several runs of a model (seeds): read, align, aggregate, plot.

A run folder holds ``curve.csv`` (:func:`snn_agent.train.write_curve`: one row per logged update)
and ``config.json``.  The curve used here is ``score_mean20`` against ``frames``: the mean game
score (points won - points lost, -21..+21) of the last 20 training games, against emulator
frames (agent steps x frameskip).  Runs are grouped by what they train (model, algorithm,
sticky-action probability, frameskip, from ``config.json``); the seed tells runs of a group apart.

Aggregation over the n runs of a group: each run's score is interpolated linearly onto a common
grid of frames, only inside the frames that run has logged (no extrapolation), and at each grid
point the mean over the runs that reach it is given with the 95 % confidence interval of that
mean (Student t with n - 1 degrees of freedom, :func:`snn_agent.stats.mean_ci`; none for n = 1).
``frames_to_reach`` is the first logged frame count at which a run's score_mean20 is at least the
threshold (+19 by default: the target the STPN must reach under sticky actions).
"""
from __future__ import annotations

import csv
import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mstpn_base.errors import DataFormatError, ParameterError
from mstpn_base.io import atomic_path
from snn_agent.stats import mean_ci

#: Pong's game score lies in [-21, +21] (points won - points lost)
SCORE_RANGE = (-21.0, 21.0)
#: default threshold of :func:`frames_to_reach` [points]
THRESHOLD = 19.0
_MODEL_NAMES = {"stpn": "STPN", "mstpn": "m-STPN", "lstm": "LSTM"}


@dataclass(frozen=True)
class Run:
    """One training run's curve: ``frames`` [emulator frames], ``score`` [points], both 1-D and
    of one length, frames non-decreasing; ``group`` says what was trained, ``seed`` which run."""
    name: str
    group: str
    seed: int | None
    frames: np.ndarray
    score: np.ndarray


def read_curve_csv(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """(frames, score_mean20) of a curve.csv; rows without a score (before 20 games ended) are
    skipped.  Raises DataFormatError naming the file and line of the first bad value."""
    path = Path(path)
    frames, score = [], []
    try:
        with open(path, newline="", encoding="utf-8-sig") as fh:
            reader = csv.DictReader(fh)
            missing = {"frames", "score_mean20"} - set(reader.fieldnames or ())
            if missing:
                raise DataFormatError(f"{path}: not a training curve, no column {', '.join(sorted(missing))}")
            for line, row in enumerate(reader, start=2):
                f, s = row.get("frames"), row.get("score_mean20")
                if s in (None, ""):
                    continue
                try:
                    f, s = float(f), float(s)
                except (TypeError, ValueError):
                    raise DataFormatError(f"{path}, line {line}: frames {f!r} and score_mean20 {s!r} must be "
                                          "numbers") from None
                if not (math.isfinite(f) and f >= 0):
                    raise DataFormatError(f"{path}, line {line}: frames must be a finite number >= 0, got {f!r}")
                if not SCORE_RANGE[0] <= s <= SCORE_RANGE[1]:   # NaN fails this too
                    raise DataFormatError(f"{path}, line {line}: score_mean20 {s!r} outside the game's range "
                                          f"[{SCORE_RANGE[0]:g}, {SCORE_RANGE[1]:g}]")
                if frames and f < frames[-1]:
                    raise DataFormatError(f"{path}, line {line}: frames go back from {frames[-1]:g} to {f:g}")
                frames.append(f)
                score.append(s)
    except (UnicodeDecodeError, csv.Error) as exc:
        raise DataFormatError(f"{path}: not a readable CSV file ({exc})") from None
    return np.asarray(frames, float), np.asarray(score, float)


def _describe(config: dict) -> tuple[str, int | None]:
    """(group label, seed) from a run's config.json contents."""
    try:
        model, env, train = config["model"], config["env"], config["train"]
        kind = model["kind"]
        algo = "distilled" if train.get("teacher") else str(train.get("algo", "a2c")).upper()
        sticky = float(env.get("repeat_action_probability", 0.0))
        frameskip = int(env.get("frameskip", 4))
        seed = train.get("seed")
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise DataFormatError(f"config.json lacks what a training run's config has ({exc})") from None
    label = f"{_MODEL_NAMES.get(kind, kind)}, {algo}, sticky {sticky:g}" + (
        f", frameskip {frameskip}" if frameskip != 4 else "")
    return label, seed if isinstance(seed, int) and not isinstance(seed, bool) else None


def load_run(path: Path) -> Run:
    """A run from its folder (curve.csv and, if present, config.json) or from a curve.csv."""
    path = Path(path)
    folder = path if path.is_dir() else path.parent
    csv_path = path / "curve.csv" if path.is_dir() else path
    if not csv_path.is_file():
        raise DataFormatError(f"{path}: no training curve (curve.csv) there")
    frames, score = read_curve_csv(csv_path)
    group, seed = folder.name, None
    cfg_path = folder / "config.json"
    if cfg_path.is_file():
        try:
            config = json.loads(cfg_path.read_text(encoding="utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise DataFormatError(f"{cfg_path}: not JSON ({exc})") from None
        try:
            group, seed = _describe(config)
        except DataFormatError as exc:
            raise DataFormatError(f"{cfg_path}: {exc}") from None
    return Run(name=folder.name, group=group, seed=seed, frames=frames, score=score)


def frames_to_reach(run: Run, threshold: float = THRESHOLD) -> float | None:
    """First logged frame count at which score_mean20 >= ``threshold``; None if never."""
    hit = np.flatnonzero(run.score >= threshold)
    return float(run.frames[hit[0]]) if hit.size else None


def aggregate(runs: list[Run], points: int = 200) -> dict:
    """Mean and 95 % CI of the runs' scores on a common frame grid (see the module docstring):
    arrays ``frames``, ``mean``, ``lo``, ``hi`` (NaN where fewer than 2 runs reach) and ``n``."""
    runs = [r for r in runs if r.frames.size]
    if not runs:
        raise ParameterError("no run has a logged score yet (each needs 20 finished training games)")
    grid = np.linspace(0.0, max(float(r.frames[-1]) for r in runs), points)
    table = np.full((len(runs), points), np.nan)
    for i, r in enumerate(runs):
        inside = (grid >= r.frames[0]) & (grid <= r.frames[-1])
        table[i, inside] = np.interp(grid[inside], r.frames, r.score)
    mean, lo, hi = (np.full(points, np.nan) for _ in range(3))
    n = np.sum(np.isfinite(table), axis=0)
    for j in np.flatnonzero(n):
        ci = mean_ci(table[np.isfinite(table[:, j]), j])
        mean[j] = ci["mean"]
        if ci["ci"] is not None:
            lo[j], hi[j] = ci["ci"]
    return {"frames": grid, "mean": mean, "lo": lo, "hi": hi, "n": n}


def group_runs(runs: list[Run]) -> dict[str, list[Run]]:
    """Runs by group label, in the order first given."""
    groups: dict[str, list[Run]] = {}
    for r in runs:
        groups.setdefault(r.group, []).append(r)
    return groups


def summarise(runs: list[Run], threshold: float = THRESHOLD) -> list[dict]:
    """Per group: the runs (seed, frames logged, final score_mean20, frames to reach the threshold),
    the final scores' mean and 95 % CI, and how many runs reached the threshold."""
    out = []
    for group, members in group_runs(runs).items():
        rows = [{"run": r.name, "seed": r.seed, "frames": float(r.frames[-1]) if r.frames.size else 0.0,
                 "final_score_mean20": float(r.score[-1]) if r.score.size else None,
                 "frames_to_threshold": frames_to_reach(r, threshold)} for r in members]
        finals = [row["final_score_mean20"] for row in rows if row["final_score_mean20"] is not None]
        reached = [row["frames_to_threshold"] for row in rows if row["frames_to_threshold"] is not None]
        out.append({"group": group, "n_runs": len(rows), "threshold": threshold, "runs": rows,
                    "final_score": mean_ci(finals) if finals else None,
                    "reached": len(reached), "frames_to_threshold": mean_ci(reached) if reached else None})
    return out


def plot(runs: list[Run], path: Path, threshold: float = THRESHOLD) -> None:
    """Per group: the mean score against frames with its 95 % CI band, each run as a thin line,
    and the threshold as a dotted line; written atomically as PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4.6))
    for k, (group, members) in enumerate(group_runs(runs).items()):
        colour = f"C{k % 10}"
        for r in members:
            ax.plot(r.frames / 1e6, r.score, color=colour, lw=0.6, alpha=0.35)
        agg = aggregate(members)
        ax.plot(agg["frames"] / 1e6, agg["mean"], color=colour, lw=1.8,
                label=f"{group} (n = {len(members)} run{'s' if len(members) != 1 else ''})")
        if len(members) > 1:
            ax.fill_between(agg["frames"] / 1e6, agg["lo"], agg["hi"], color=colour, alpha=0.2, lw=0)
    ax.axhline(threshold, color="grey", ls=":", lw=1)
    ax.set_xlabel("emulator frames [millions]")
    ax.set_ylabel("game score [points won - lost],\nmean of the last 20 training games")
    ax.set_ylim(SCORE_RANGE[0] - 0.5, SCORE_RANGE[1] + 0.5)
    ax.set_title("training curves: mean over runs, 95 % CI of the mean (Student t) shaded", fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)
