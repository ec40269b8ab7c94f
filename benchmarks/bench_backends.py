"""Speed of every backend on the same recorded Pong sequence, as ratios to the NumPy reference,
and (``--games``) one full Pong game on every backend, frame by frame.

    python benchmarks/bench_backends.py [NET.nir | --checkpoint CKPT] [--frames 100] [--games]
                                        [--backends B ...] [--quick] [--profile] [--repeats R] [--out DIR]

The default run covers every backend but brian2-cython: torch, numpy, numpy-fixed, snntorch,
brian2 (runtime mode, numpy target, the whole sequence in one run()), brian2-standalone (one C++ compilation; its compile
time is reported apart from its run time, and ``run frames/s`` counts the compiled run alone),
lava, lava-fixed and loihi2; a backend that cannot run here is listed as unavailable, with why.
``--profile``: DIR/profile_<backend>.txt, the top functions by cumulative time of each backend's
run (cProfile).

``--repeats R``: R rounds over the backends (each round runs every backend once, in the order
given); frames/s is the median over the rounds and each ratio to numpy the median of the ratios
measured within one round, so a change of the machine's load between rounds cancels.

``--quick``: the fast backends only (torch, numpy, numpy-fixed, snntorch, lava, lava-fixed) on 200
recorded frames (unless --frames / --backends say otherwise).  Pin it to one core for stable numbers
(``taskset -c 0``); the header gives the date, the machine and the CPU affinity.

Without NET, the shipped STPN checkpoint (artifacts/stpn) is converted with calibration on 300
frames (sigma-delta with fixed point; snnTorch runs its rate form with the calibrated thresholds).
``--frames 20000`` records one whole game of the PyTorch policy (the recording stops at the game's
end), so every backend is compared on a full game's frames (brian2-standalone runs the whole
recording in one compiled run).  brian2-cython (Cython code objects, compiled on first use and
cached by Brian2) runs when named.  Prints a
table: backend, frames/s, ratio to numpy, action agreement with PyTorch, bit-exactness (fixed
point), and with --games the score and length of the game; writes DIR/bench_backends.json after
every backend (atomically), with the checkpoint's SHA-256 and the conversion's thresholds.
"""
from __future__ import annotations

import argparse
import datetime
import hashlib
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from mstpn import compare as C  # noqa: E402
from mstpn_base import registry  # noqa: E402
from snn_agent.play import play_game, record_frames  # noqa: E402
from mstpn_base.errors import MstpnError  # noqa: E402
from mstpn_base.io import atomic_write_json  # noqa: E402

ALL = ("torch", "numpy", "numpy-fixed", "snntorch", "brian2", "brian2-cython", "brian2-standalone", "lava",
       "lava-fixed", "loihi2")
QUICK = ("torch", "numpy", "numpy-fixed", "snntorch", "lava", "lava-fixed")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("net", nargs="?", type=Path, help="converted network (default: convert the shipped STPN)")
    ap.add_argument("--checkpoint", type=Path, default=ROOT / "artifacts" / "stpn" / "policy.safetensors")
    ap.add_argument("--frames", type=int, default=None, help="recorded frames (default 100; --quick: 200)")
    ap.add_argument("--backends", nargs="+", default=None)
    ap.add_argument("--quick", action="store_true", help="fast backends only, 200 frames")
    ap.add_argument("--games", action="store_true", help="play one full game on every backend")
    ap.add_argument("--profile", action="store_true", help="write DIR/profile_<backend>.txt (cProfile, top functions)")
    ap.add_argument("--repeats", type=int, default=1,
                    help="rounds over all backends; frames/s is the median over rounds and each ratio the median of "
                         "the per-round ratios (robust to a machine whose load changes)")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--out", type=Path, default=Path("bench_out"))
    args = ap.parse_args(argv)
    if args.frames is None:
        args.frames = 200 if args.quick else 100
    if args.backends is None:
        args.backends = list(QUICK) if args.quick else [b for b in ALL if b != "brian2-cython"]
    print(machine_header(argv))

    from snn_agent.export import convert_with_calibration
    from snn_agent.checkpoint import load_policy

    policy, meta = load_policy(args.checkpoint)
    if args.net:
        net = C.load_network(args.net)
    else:
        net = convert_with_calibration(policy, meta["config"].env, calib_frames=300, seed=0, log=print)
    frames = record_frames(net, args.frames, seed=args.seed, policy=policy)
    print(f"recorded {len(frames)} frames")
    args.out.mkdir(parents=True, exist_ok=True)
    info = {"checkpoint": str(args.checkpoint), "sha256": sha256_file(args.checkpoint), "net": str(args.net or ""),
            "frames": len(frames), "seed": args.seed, "thresholds": net.metadata.get("thresholds", {}),
            "command": " ".join(sys.argv)}
    ref = C.run_sequence(registry.make_runner("torch", net, policy=policy), frames, "torch")
    oracle = C.run_sequence(registry.make_runner("numpy-fixed", net), frames, "numpy-fixed") if net.fixed else None
    rounds = []
    for k in range(args.repeats):      # each round runs every backend once, in the order given
        rows = [bench_one(name, args, net, policy, frames, ref, oracle, games=args.games and k == 0)
                for name in args.backends]
        rounds.append(rows)
        save(args.out / "bench_backends.json", info, combine(rounds))
    rows = combine(rounds)
    print("\n| backend | frames | frames/s | x numpy | actions = torch | bit-exact | game score | game steps | game steps/s |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        if "error" in r:
            print(f"| {r['backend']} | - | - | - | - | - | - | - | {r['error'][:90]} |")
            continue
        ratio = r["ratio_to_numpy"] if r.get("ratio_to_numpy") is not None else float("nan")
        print(f"| {r['backend']} | {r['frames']} | {r['fps']:.1f} | {ratio:.3f} | {r['agreement']:.1%} | "
              f"{'-' if r['bit_exact'] is None else r['bit_exact']} | {r.get('score', '-')} | "
              f"{r.get('game_steps', '-')} | {r.get('game_fps', float('nan')):.1f} |")
    if args.repeats > 1:
        print(f"# {args.repeats} rounds: frames/s is the median over rounds, x numpy the median of the per-round ratios")
        for r in rows:
            if r.get("ratio_rounds"):
                print(f"#   {r['backend']}: x numpy per round " + " ".join(f"{x:.3f}" for x in r["ratio_rounds"]))
    for r in rows:
        if "compile_s" in r:
            print(f"{r['backend']}: compile {r['compile_s']:.1f} s, compiled run {r.get('run_s', 0):.2f} s "
                  f"({r.get('run_fps', float('nan')):.1f} frames/s without the compilation)")
    missing = [r for r in rows if "error" in r]
    if missing:
        print("unavailable: " + "; ".join(f"{r['backend']} ({r['error']})" for r in missing))
    save(args.out / "bench_backends.json", info, rows)
    return 0


def bench_one(name, args, net, policy, frames, ref, oracle, games: bool) -> dict:
    """One backend: build its runner, run the recorded ``frames`` (timed), optionally one game;
    frames/s, agreement with torch, bit-exactness; ``error`` where it cannot run here."""
    row = dict(backend=name)
    try:
        n = len(frames)
        t0 = time.perf_counter()
        runner = registry.make_runner(name, net, **({"policy": policy} if name == "torch" else {}))
        row["build_s"] = time.perf_counter() - t0
        try:
            res = profiled(lambda: C.run_sequence(runner, frames[:n], name),
                           args.out / f"profile_{name}.txt" if args.profile else None)
            for key in ("compile_s", "run_s"):                # brian2-standalone: compilation apart
                if getattr(runner, key, None) is not None:
                    row[key] = float(getattr(runner, key))
            if row.get("run_s"):
                row["run_fps"] = n / row["run_s"]
            if games and not getattr(runner, "standalone", False):   # standalone: sequences only
                g = play_game(runner, net, seed=args.seed, progress=print)
                row.update(score=g["score"], game_steps=g["steps"], game_s=g["seconds"],
                           game_fps=g["steps"] / g["seconds"], finished=not g["truncated"])
        finally:
            runner.close()
        sub = C.RunResult("torch", logits=ref.logits[:n])
        c = C.compare_runs(res, sub, oracle if name in registry.fixed_backends() else None)
        row.update(frames=n, fps=res.fps, agreement=c.agreement_torch, bit_exact=c.bit_exact,
                   max_logit_err=c.logit_max_abs)
    except MstpnError as exc:
        row["error"] = f"{type(exc).__name__}: {exc}"
    print(row, flush=True)
    return row


def combine(rounds: list[list[dict]]) -> list[dict]:
    """One row per backend from the rounds: the median frames/s over rounds, and the ratio to the
    numpy row as the median of the per-round ratios (each measured minutes apart at most, so a
    change of the machine's load between rounds cancels); with several rounds, every round's
    frames/s and ratio as well.  Errors come from the first round."""
    out = []
    for i, first in enumerate(rounds[0]):
        if "error" in first:
            out.append(first)
            continue
        runs = [r[i] for r in rounds if "error" not in r[i]]
        row = dict(first)
        row["fps"] = float(np.median([r["fps"] for r in runs]))
        ratios = []
        for rnd in rounds:
            base = next((r["fps"] for r in rnd if r["backend"] == "numpy" and "fps" in r), None)
            if base and "fps" in rnd[i]:
                ratios.append(rnd[i]["fps"] / base)
        row["ratio_to_numpy"] = float(np.median(ratios)) if ratios else None   # no numpy row: no ratio
        if len(rounds) > 1:
            row["fps_rounds"] = [r["fps"] for r in runs]
            row["ratio_rounds"] = ratios
        if any("run_fps" in r for r in runs):
            row["run_fps"] = float(np.median([r["run_fps"] for r in runs if "run_fps" in r]))
        out.append(row)
    return out


def profiled(fn, path: Path | None, top: int = 25):
    """``fn()``; with ``path``, under cProfile, writing the ``top`` functions by cumulative time."""
    if path is None:
        return fn()
    import cProfile
    import io
    import pstats

    prof = cProfile.Profile()
    out = prof.runcall(fn)
    buf = io.StringIO()
    pstats.Stats(prof, stream=buf).strip_dirs().sort_stats("cumulative").print_stats(top)
    path.write_text(buf.getvalue())
    return out


def machine_header(argv=None) -> str:
    """Date, command, CPU and the cores this process may run on."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")), cpu)
    except OSError:
        pass
    cores = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else "?"
    import numpy
    import torch
    cmd = " ".join(["python", "benchmarks/bench_backends.py", *(sys.argv[1:] if argv is None else argv)])
    return (f"# {datetime.datetime.now().astimezone().isoformat(timespec='seconds')}\n# command: {cmd}\n"
            f"# machine: {cpu}, {os.cpu_count()} logical cores, running on cores {cores}; "
            f"python {platform.python_version()}, numpy {numpy.__version__}, torch {torch.__version__} "
            f"({torch.get_num_threads()} threads)")


def sha256_file(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def save(path: Path, info: dict, rows: list) -> None:
    plain = json.loads(json.dumps({"info": info, "rows": rows},
                                  default=lambda o: o.item() if isinstance(o, np.generic) else str(o)))
    atomic_write_json(path, plain)


if __name__ == "__main__":
    sys.exit(main())
