"""The training run on Pong: A2C (:mod:`snn_agent.a2c`), recurrent PPO (``train.algo = "ppo"``,
:mod:`snn_agent.ppo`) or, with ``train.teacher``, distillation (:mod:`snn_agent.distill`), with
periodic atomic checkpoints, snapshots, a training curve and tensorboard event files.

Files in the output folder ``OUT``::

    config.json                      the RunConfig of the run
    checkpoint_latest.safetensors    resume point (every ``checkpoint_every_s`` seconds and at exit)
    checkpoint_latest.resume.pt      optimiser + RNG state for ``--resume``
    checkpoint_best.safetensors      best mean score over the last 20 episodes (>= 10 episodes)
    snapshots/frames_<N>.safetensors kept every ``snapshot_every_frames`` emulator frames
    curve.csv, curve.png             training curve (frames, episodes, score, losses, speed)
    tb/                              tensorboard event files, the curve's scalars vs emulator frames

Frames are emulator frames: one agent step = ``frameskip`` (4) frames.  Resuming continues the
schedule (learning rate decay, frame count) from the latest checkpoint; the environments start
new games (their emulator state is not saved) and the plastic state starts from zero.

Environment seeds: the training envs of a (re)start after ``updates`` updates are seeded
:func:`snn_agent.config.train_env_seed` = (train.seed * 100_003 + updates) mod 10^9 (sub-env i:
that + i), always below 10^9 + num_envs; evaluation uses seeds from 1.5 * 10^9 by default
(:data:`snn_agent.config.EVAL_SEED_BASE`).
"""
from __future__ import annotations

import csv
import io
import json
import signal
import time
from collections import deque
from pathlib import Path

import numpy as np
import torch

from mstpn_base import signals
from mstpn_base.errors import DataFormatError, MstpnError
from mstpn_base.io import atomic_path, atomic_write_json, atomic_write_text
from snn_agent.a2c import A2C
from mstpn_base.lock import lock_folder
from snn_agent.checkpoint import build_policy, load_policy, load_resume_state, save_checkpoint
from snn_agent.config import RunConfig, train_env_seed

CURVE_FIELDS = ("frames", "agent_steps", "updates", "wall_s", "episodes", "score_mean20", "score_last",
                "loss", "policy_loss", "value_loss", "entropy", "grad_norm", "lr", "steps_per_s", "agreement",
                "approx_kl", "clip_frac")
_INT_FIELDS = ("frames", "agent_steps", "updates", "episodes")
LATEST = "checkpoint_latest.safetensors"
BEST = "checkpoint_best.safetensors"


def write_curve(out: Path, rows: list[dict], png: bool = True) -> None:
    """curve.csv (all rows) and, if ``png``, curve.png (score and entropy vs frames), atomically."""
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=CURVE_FIELDS)
    w.writeheader()
    for r in rows:
        w.writerow({k: r.get(k, "") for k in CURVE_FIELDS})
    atomic_write_text(out / "curve.csv", buf.getvalue())
    if not png or not rows:
        return
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    f = np.array([r["frames"] for r in rows], float)
    s = np.array([np.nan if r["score_mean20"] in ("", None) else r["score_mean20"] for r in rows], float)
    e = np.array([r["entropy"] for r in rows], float)
    fig, ax = plt.subplots(2, 1, figsize=(7, 6), sharex=True)
    ax[0].plot(f, s)
    ax[0].set_ylabel("score, mean of last 20 games")
    ax[0].set_ylim(-21.5, 21.5)
    ax[0].grid(alpha=0.3)
    ax[1].plot(f, e)
    ax[1].set_ylabel("policy entropy [nats]")
    ax[1].set_xlabel("emulator frames")
    ax[1].grid(alpha=0.3)
    fig.tight_layout()
    with atomic_path(out / "curve.png") as tmp:
        fig.savefig(tmp, dpi=100)
    plt.close(fig)


def read_curve(out: Path) -> list[dict]:
    path = out / "curve.csv"
    if not path.exists():
        return []
    rows = []
    with open(path, newline="", encoding="utf-8") as fh:
        for r in csv.DictReader(fh):
            rows.append({k: ("" if v in ("", None) else int(float(v)) if k in _INT_FIELDS else float(v))
                         for k, v in r.items()})
    return rows


#: glibc mallopt parameters (malloc.h) and the values :func:`keep_freed_memory` sets
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3
#: blocks up to this size come from the heap, not from fresh mmap'd pages (glibc's own maximum)
MMAP_THRESHOLD_BYTES = 32 * 2**20


def keep_freed_memory() -> bool:
    """Let glibc's malloc keep freed memory for reuse instead of handing it back to the kernel.

    Every STPN step allocates its new F (B x H x K floats: 2.7 MB for 4 environments, 10.9 MB for
    16) and PPO's update frees a whole sequence of them after each backward pass.  glibc serves
    such blocks with mmap or trims them from the heap top, so the next sequence page-faults and
    zero-fills the same memory again: a fresh (4, 64, 2656) tensor costs ~1.5 ms instead of ~0.2 ms
    for a reused one.  With the trim threshold at its maximum and blocks below
    :data:`MMAP_THRESHOLD_BYTES` taken from the heap, the process keeps its peak memory and reuses
    it.  Values computed are unchanged (allocation only).  Returns False where the C library is
    not glibc (nothing done)."""
    import ctypes
    import ctypes.util

    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    return bool(mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES)) and bool(mallopt(_M_TRIM_THRESHOLD, 2**31 - 1))


class _Stop(BaseException):
    """SIGTERM, raised wherever the main thread is.  A BaseException like KeyboardInterrupt, so
    that no ``except Exception`` on the way (the compiled step's fallback, for one) swallows it."""


def train(cfg: RunConfig, out, *args, **kwargs) -> dict:
    """Train in ``out`` while holding its lock (:mod:`mstpn_base.lock`: a second run on the same
    folder is refused); arguments and result as :func:`_train`."""
    with lock_folder(out, "training run"):
        return _train(cfg, out, *args, **kwargs)


def _train(cfg: RunConfig, out, device: str = "cpu", resume: bool = False, progress: bool = True,
          max_updates: int | None = None, time_limit_s: float | None = None, init_from=None,
          env_factory=None, log=print) -> dict:
    """Train (or resume) a policy; returns the final progress dict.  Stops at ``cfg.train.frames``,
    after ``max_updates`` updates or ``time_limit_s`` seconds of this call, whichever comes first,
    and always leaves a resume checkpoint.

    ``init_from``: a new run in ``out`` that starts from that checkpoint's weights, model and env
    settings and continues its progress counters (frames, updates, wall time, so the learning-rate
    schedule goes on), with a fresh optimiser state: how a shipped policy (weights only, no
    ``.resume.pt``) is trained further.  ``env_factory(cfg, seed)`` replaces the Pong environment
    (tests)."""
    out = Path(out)
    cfg.validate()
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise MstpnError("--device cuda requested but no CUDA device is available")
    torch.set_num_threads(cfg.train.threads)
    keep_freed_memory()
    latest = out / LATEST
    prog = {"frames": 0, "agent_steps": 0, "updates": 0, "episodes": 0, "wall_s": 0.0,
            "recent_score": None, "best_score": None, "next_snapshot": cfg.train.snapshot_every_frames}
    rows: list[dict] = []
    scores: deque = deque(maxlen=20)
    if resume and init_from is not None:
        raise MstpnError("--resume continues a run in --out; --init-from starts a new one: use one of them")
    if resume:
        if not latest.exists():
            raise DataFormatError(f"cannot resume: {latest} does not exist")
        policy, meta = load_policy(latest, device=device)
        saved = meta["config"]
        if saved.to_dict()["model"] != cfg.to_dict()["model"] or saved.to_dict()["env"] != cfg.to_dict()["env"]:
            log("resume: using the model and env settings stored in the checkpoint")
        cfg = RunConfig(saved.model, saved.env, cfg.train).validate()
        prog.update(meta["progress"])
        rst = load_resume_state(latest)
        scores.extend(rst["extra"].get("scores", []))
        rows = [r for r in read_curve(out) if r["frames"] <= prog["frames"]]  # drop rows past the checkpoint
    else:
        if latest.exists():
            raise MstpnError(f"{out} already holds a run; use --resume to continue it or another --out")
        torch.manual_seed(cfg.train.seed)
        if init_from is not None:
            policy, meta = load_policy(init_from, device=device)
            saved = meta["config"]
            cfg = RunConfig(saved.model, saved.env, cfg.train).validate()
            prog.update({k: v for k, v in meta["progress"].items() if k in prog})
            prog["next_snapshot"] = (prog["frames"] // cfg.train.snapshot_every_frames + 1) \
                * cfg.train.snapshot_every_frames
            log(f"starting from the weights of {init_from} ({prog['frames']} frames trained); "
                "fresh optimiser state")
        else:
            policy = build_policy(cfg, seed=cfg.train.seed).to(device)
    if prog["frames"] >= cfg.train.frames:
        log(f"nothing to train: {prog['frames']} frames already >= --frames {cfg.train.frames}; raise --frames")
    np.random.seed(cfg.train.seed + prog["updates"])
    atomic_write_json(out / "config.json", cfg.to_dict())
    if cfg.train.compile and hasattr(policy.core, "compile_step"):
        policy.core.compile_step()
    if cfg.train.teacher:
        from snn_agent.distill import Distill, check_teacher

        teacher, tmeta = load_policy(cfg.train.teacher, device=device)
        check_teacher(tmeta["config"].env, cfg.env, cfg.train.teacher)
        learner = Distill(policy, teacher.to(policy.dtype), cfg.train, frames_per_step=cfg.env.frameskip,
                          seed=cfg.train.seed + prog["updates"])
        log(f"distilling from teacher {cfg.train.teacher} ({tmeta['architecture']['kind']})")
    elif cfg.train.algo == "ppo":
        from snn_agent.ppo import PPO

        learner = PPO(policy, cfg.train, frames_per_step=cfg.env.frameskip)
    else:
        learner = A2C(policy, cfg.train, frames_per_step=cfg.env.frameskip)
    if resume:
        learner.opt.load_state_dict(rst["optimizer"])
        torch.set_rng_state(rst["torch_rng"])
    env_seed = train_env_seed(cfg.train, prog["updates"])
    if env_factory is None:
        from snn_agent.envs import PongVecEnv
        env = PongVecEnv(cfg.env, cfg.train.num_envs, seed=env_seed, num_threads=cfg.train.env_threads)
    else:
        env = env_factory(cfg, env_seed)

    def checkpoint(path):
        save_checkpoint(path, policy, cfg, progress=prog)

    def save_latest():  # checkpoint + resume state as one pair (save_checkpoint with optimizer=)
        save_checkpoint(latest, policy, cfg, progress=prog, optimizer=learner.opt,
                        resume_extra={"scores": list(scores)})
        write_curve(out, rows, png=True)
        tb.flush()

    tb = _tensorboard(out, purge_step=prog["frames"] if resume else None)

    old_handler = signal.getsignal(signal.SIGTERM)

    def on_term(signum, frame):
        raise _Stop()

    try:
        signal.signal(signal.SIGTERM, on_term)
    except ValueError:  # not in the main thread
        old_handler = None
    bar = None
    if progress:
        from tqdm import tqdm
        bar = tqdm(total=cfg.train.frames, initial=min(prog["frames"], cfg.train.frames), unit="frame",
                   unit_scale=True, dynamic_ncols=True, mininterval=5.0)
    obs = env.reset()
    state = policy.init_state(cfg.train.num_envs)
    t_ckpt = time.monotonic()
    t_log, steps_log = time.monotonic(), 0
    wall0 = prog["wall_s"]
    t_start = time.monotonic()
    n_updates = 0
    try:
        while prog["frames"] < cfg.train.frames and (max_updates is None or n_updates < max_updates) \
                and (time_limit_s is None or time.monotonic() - t_start < time_limit_s):
            obs, state, st, n = learner.step(env, obs, state, prog["frames"])
            n_updates += 1
            prog["updates"] += 1
            prog["agent_steps"] += n
            prog["frames"] += n * cfg.env.frameskip
            prog["wall_s"] = wall0 + time.monotonic() - t_start
            steps_log += n
            for _, score, _ in env.finished:
                scores.append(score)
                prog["episodes"] += 1
            env.finished.clear()
            if scores:
                prog["recent_score"] = float(np.mean(scores))
            if bar is not None:
                bar.update(n * cfg.env.frameskip)
            if prog["updates"] % cfg.train.log_every_updates == 0:
                now = time.monotonic()
                row = {"frames": prog["frames"], "agent_steps": prog["agent_steps"], "updates": prog["updates"],
                       "wall_s": round(prog["wall_s"], 1), "episodes": prog["episodes"],
                       "score_mean20": prog["recent_score"] if scores else "",
                       "score_last": scores[-1] if scores else "", "loss": st.loss,
                       "policy_loss": st.policy_loss, "value_loss": st.value_loss, "entropy": st.entropy,
                       "grad_norm": st.grad_norm, "lr": st.lr, "steps_per_s": round(steps_log / (now - t_log), 1),
                       "agreement": "" if st.agreement is None else st.agreement,
                       "approx_kl": "" if st.approx_kl is None else st.approx_kl,
                       "clip_frac": "" if st.clip_frac is None else st.clip_frac}
                rows.append(row)
                _log_scalars(tb, row)
                t_log, steps_log = now, 0
                write_curve(out, rows, png=False)
                if bar is not None:
                    bar.set_postfix(score=f"{prog['recent_score']:.2f}" if scores else "-",
                                    ep=prog["episodes"], sps=row["steps_per_s"], refresh=False)
                else:
                    log(json.dumps(row))
                if len(scores) >= 10 and (prog["best_score"] is None or prog["recent_score"] > prog["best_score"]):
                    prog["best_score"] = prog["recent_score"]
                    checkpoint(out / BEST)
            if prog["frames"] >= prog["next_snapshot"]:
                checkpoint(out / "snapshots" / f"frames_{prog['frames']:011d}.safetensors")
                while prog["next_snapshot"] <= prog["frames"]:
                    prog["next_snapshot"] += cfg.train.snapshot_every_frames
            if time.monotonic() - t_ckpt >= cfg.train.checkpoint_every_s:
                save_latest()
                t_ckpt = time.monotonic()
    except (KeyboardInterrupt, _Stop) as exc:
        save_latest()
        log(f"stopped at {prog['frames']} frames; checkpoint saved to {latest} (continue with --resume)")
        if bar is not None:
            bar.close()
        env.close()
        # the command then ends with the status of the signal that stopped it (143 for SIGTERM)
        raise (signals.Interrupted(signal.SIGTERM) if isinstance(exc, _Stop) else exc) from None
    finally:
        if old_handler is not None:
            signal.signal(signal.SIGTERM, old_handler)
        tb.close()
    save_latest()
    if bar is not None:
        bar.close()
    env.close()
    return prog


class _NoWriter:
    """Stands in for the SummaryWriter when tensorboard is not installed."""

    def add_scalar(self, *a, **k):
        pass

    flush = close = add_scalar


def _tensorboard(out: Path, purge_step=None):
    """A SummaryWriter on ``out/tb`` (``purge_step``: on resume, tensorboard hides the events of
    the first run logged after the checkpoint's frame count)."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:  # pragma: no cover - tensorboard is a dependency
        return _NoWriter()
    return SummaryWriter(str(out / "tb"), purge_step=purge_step)


def _log_scalars(tb, row: dict) -> None:
    """Every numeric curve column as ``train/<name>`` against emulator frames."""
    for k, v in row.items():
        if k != "frames" and isinstance(v, (int, float)) and not isinstance(v, bool):
            tb.add_scalar(f"train/{k}", v, global_step=row["frames"])
