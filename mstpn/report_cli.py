"""``mstpn run`` (the main job) and ``mstpn report`` (re-render a run folder's report)."""
from __future__ import annotations

from pathlib import Path

from mstpn_base.checks import check_seed
from mstpn_base.cliargs import add_json, add_list, add_out, json_output, print_json
from mstpn_base.errors import ParameterError


def register(subparsers) -> None:
    p = subparsers.add_parser("run", help="main job: play Pong event-driven, compare simulators, energy, report",
                              description="Play Pong with the shipped policy on the event-driven backend, "
                                          "compare simulators on a recorded sequence, account for energy, "
                                          "and write a report folder (Markdown + HTML, plots, GIF).")
    p.add_argument("--checkpoint", default=None, help="policy checkpoint (default: the shipped STPN policy)")
    add_out(p, type=str, default="out/run", metavar="DIR",
            help="report folder (README.md, report.html, run.json, network.nir, plots)")
    p.add_argument("--seed", type=int, default=0, help="game and calibration seed")
    p.add_argument("--max-frames", type=int, default=None,
                   help="cap the game at this many frames (default: the game's own limit)")
    p.add_argument("--compare-frames", type=int, default=100,
                   help="frames of the recorded sequence run on every backend (0: skip)")
    add_list(p, "--backends", metavar="B",
             help="backends for the comparison (default: the default backends but torch, the reference)")
    p.add_argument("--no-gif", action="store_true", help="do not write the game GIF (default: written)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar (default: a progress bar on stderr)")
    p.add_argument("--artifacts", default=None, help="folder of shipped policies for the score table and "
                                                     "training curves (default: the project's artifacts/)")
    from mstpn.compare_cli import add_synapse_args

    add_synapse_args(p, "in the game and the comparison (an m-STPN checkpoint); energy: the row measured in "
                        "the device run beside the assumption-based one")
    add_json(p, "the run's summary (run.json's content)")
    p.set_defaults(func=cmd_run)

    r = subparsers.add_parser("report", help="re-render the report (README.md, report.html) of a run folder")
    r.add_argument("run_dir", nargs="?", default=None, metavar="RUN_DIR",
                   help="folder written by `mstpn run`, re-rendered in place (default: --out)")
    add_out(r, type=str, metavar="DIR", help="the same as RUN_DIR (default: RUN_DIR)")
    r.add_argument("--artifacts", default=None, help="folder of shipped policies (default: artifacts/)")
    r.set_defaults(func=cmd_report)


def cmd_run(args) -> int:
    from mstpn.report import check_artifacts
    from mstpn.run import run_main_job

    check_seed(args.seed)
    check_artifacts(args.artifacts)  # before the game, not when the report is written
    with json_output(args.json):
        s = run_main_job(args.checkpoint, args.out, seed=args.seed, max_frames=args.max_frames,
                         compare_frames=args.compare_frames, backends=args.backends or None, gif=not args.no_gif,
                         progress=not args.no_progress, artifacts=args.artifacts, synapses=args.synapses,
                         device_seed=args.device_seed)
        if not args.json:
            _print_run(args, s)
    if args.json:
        print_json(s)
    return 0


def _print_run(args, s) -> None:
    game = s["game"]
    how = ", device synapses" if s.get("synapses") == "device" else ""
    print(f"score {game['score']:+.0f} in {game['steps']} agent steps "
          f"({'finished' if game['finished'] else 'capped'}); {game['steps_per_s']:.1f} steps/s event-driven{how}")
    if s.get("comparison"):
        print(s["comparison"].get("table_md", ""))
    print(s["energy"]["table"])
    if s.get("network"):
        print(f"network: {Path(args.out) / s['network']['file']} (mstpn compare / mstpn nir-run take it)")
    print(f"report: {Path(args.out) / 'README.md'} and {Path(args.out) / 'report.html'}")


def cmd_report(args) -> int:
    from mstpn.report import check_artifacts, validate_summary, write_report
    from mstpn.run import load_run

    if args.run_dir is not None and args.out is not None and Path(args.run_dir) != Path(args.out):
        raise ParameterError(f"give the run folder once: RUN_DIR {args.run_dir} and --out {args.out} differ")
    run_dir = args.run_dir if args.run_dir is not None else args.out
    if run_dir is None:
        raise ParameterError("give the run folder to re-render: mstpn report RUN_DIR")
    check_artifacts(args.artifacts)
    summary = validate_summary(load_run(run_dir), str(Path(run_dir) / "run.json"))
    files = write_report(run_dir, summary, artifacts=args.artifacts)
    print(f"wrote {files['markdown']} and {files['html']}")
    return 0
