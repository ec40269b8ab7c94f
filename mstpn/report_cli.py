"""``mstpn run`` (the main job) and ``mstpn report`` (re-render a run folder's report)."""
from __future__ import annotations

from pathlib import Path

from mstpn_base.checks import check_seed


def register(subparsers) -> None:
    p = subparsers.add_parser("run", help="main job: play Pong event-driven, compare simulators, energy, report",
                              description="Play Pong with the shipped policy on the event-driven backend, "
                                          "compare simulators on a recorded sequence, account for energy, "
                                          "and write a report folder (Markdown + HTML, plots, GIF).")
    p.add_argument("--checkpoint", default=None, help="policy checkpoint (default: the shipped STPN policy)")
    p.add_argument("--out", default="out/run", help="report folder (default out/run)")
    p.add_argument("--seed", type=int, default=0, help="game and calibration seed")
    p.add_argument("--max-frames", type=int, default=None, help="cap the game at this many frames")
    p.add_argument("--compare-frames", type=int, default=100,
                   help="frames of the recorded sequence run on every backend (0: skip)")
    p.add_argument("--backends", default=None, help="comma-separated backends for the comparison")
    p.add_argument("--no-gif", action="store_true", help="do not write the game GIF")
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--artifacts", default=None, help="folder of shipped policies for the score table and "
                                                     "training curves (default: the project's artifacts/)")
    p.set_defaults(func=cmd_run)

    r = subparsers.add_parser("report", help="re-render the report (README.md, report.html) of a run folder")
    r.add_argument("run_dir", help="folder written by `mstpn run`")
    r.add_argument("--artifacts", default=None, help="folder of shipped policies (default: artifacts/)")
    r.set_defaults(func=cmd_report)


def cmd_run(args) -> int:
    from mstpn.report import check_artifacts
    from mstpn.run import run_main_job

    check_seed(args.seed)
    check_artifacts(args.artifacts)  # before the game, not when the report is written
    backends = [b.strip() for b in args.backends.split(",") if b.strip()] if args.backends else None
    s = run_main_job(args.checkpoint, args.out, seed=args.seed, max_frames=args.max_frames,
                     compare_frames=args.compare_frames, backends=backends, gif=not args.no_gif,
                     progress=not args.no_progress, artifacts=args.artifacts)
    game = s["game"]
    print(f"score {game['score']:+.0f} in {game['steps']} agent steps "
          f"({'finished' if game['finished'] else 'capped'}); {game['steps_per_s']:.1f} steps/s event-driven")
    if s.get("comparison"):
        print(s["comparison"].get("table_md", ""))
    print(s["energy"]["table"])
    print(f"report: {Path(args.out) / 'README.md'} and {Path(args.out) / 'report.html'}")
    return 0


def cmd_report(args) -> int:
    from mstpn.report import check_artifacts, validate_summary, write_report
    from mstpn.run import load_run

    check_artifacts(args.artifacts)
    summary = validate_summary(load_run(args.run_dir), str(Path(args.run_dir) / "run.json"))
    files = write_report(args.run_dir, summary, artifacts=args.artifacts)
    print(f"wrote {files['markdown']} and {files['html']}")
    return 0
