"""``mstpn energy``: the published energy table, or the energy of a run on every backend.

    mstpn energy --published [-o DIR]
    mstpn energy --analytic [--frames N | --game] [-o DIR]      analytic dense Pong policy
    mstpn energy COUNTS.json [-o DIR]                           counts from a simulator / a run
    mstpn energy CHECKPOINT [--frames N | --game] [-o DIR]      a trained policy (snn_agent)

``--game`` means the publication's game length (730 agent steps) for ``--analytic``, and one
played game for a checkpoint.  ``-o/--out DIR`` writes energy.json/.csv/.txt/.png (published:
energy_published.json/.txt as well); ``--json`` prints the table's data as JSON instead.
``mstpn energy pong`` is the older spelling of ``--analytic``.
"""
from __future__ import annotations

import argparse
from pathlib import Path

from memristor.params import DeviceParams
from mstpn.energy import constants as C
from mstpn.energy.counts import RunCounts, pong_policy_counts, published_game_counts, steps_for_frames
from mstpn.energy.models import MemristiveSettings
from mstpn.energy.report import energy_report, published_reproduction
from mstpn_base.cliargs import add_json, add_out, json_output, print_json
from mstpn_base.errors import BackendUnavailableError, DataFormatError, ParameterError
from mstpn_base.io import atomic_write_json, atomic_write_text


def register(subparsers) -> None:
    p = subparsers.add_parser("energy", help="energy accounting: memristive vs GPU vs Loihi-style",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("source", nargs="?", metavar="SOURCE",
                   help="a counts JSON file or a policy checkpoint (default: none; give SOURCE, --analytic or "
                        "--published)")
    what = p.add_mutually_exclusive_group()
    what.add_argument("--published", action="store_true",
                      help="reproduce the publication's energy table (default: the table of SOURCE)")
    what.add_argument("--analytic", action="store_true",
                      help="the analytic dense Pong policy (the publication's layer sizes) instead of a SOURCE "
                           "(older spelling: SOURCE 'pong') (default: off)")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--frames", type=int, help="game length in emulator frames (60 Hz) (default: the publication's "
                                              "game, 730 agent steps)")
    g.add_argument("--game", action="store_true",
                   help="the publication's game (--analytic) or one played game (checkpoint) "
                        "(default: the publication's game length)")
    p.add_argument("--params", help="device parameter JSON (default: the published preset)")
    p.add_argument("--gpu-results", help="JSON from benchmarks/gpu_energy.py, reported as gpu-measured-* "
                                         "(default: none)")
    p.add_argument("--v-bias", type=float, help="relaxation bias [V] (default: v_bias_max, 0.6 V)")
    p.add_argument("--g-bias-ns", type=float, default=0.0,
                   help="conductance in the V_b^2 G bias term [nS] (default: 0, as the publication)")
    p.add_argument("--devices-per-synapse", type=int, default=1, choices=(1, 2),
                   help="memristors per synapse (2: a differential pair)")
    add_out(p, type=str, metavar="DIR", help="folder for energy.json/.csv/.txt/.png (default: print only)")
    add_json(p, "the energy table (energy.json's content)")
    p.set_defaults(func=run)


def run(args) -> int:
    with json_output(args.json):
        status, data = _run(args)
    if args.json:
        print_json(data)
    return status


def _run(args) -> tuple[int, dict]:
    from memristor.cli import load_params

    params = load_params(args.params) if args.params else DeviceParams()
    if args.published:
        if args.source or args.frames is not None or args.game:
            raise ParameterError("--published takes no SOURCE, --frames or --game")
        repro = published_reproduction(params)
        if not args.json:
            print(repro.format_table())
        if args.out:
            out = Path(args.out)
            atomic_write_json(out / "energy_published.json", repro.to_dict())
            atomic_write_text(out / "energy_published.txt", repro.format_table() + "\n")
            paths = repro.report.write(out)
            print(f"\nwrote {out / 'energy_published.json'}, {out / 'energy_published.txt'}, "
                  + ", ".join(str(v) for v in paths.values()))
        return (0 if repro.ok else 1), repro.to_dict()
    if args.analytic:
        if args.source:
            raise ParameterError(f"--analytic takes no SOURCE (got {args.source!r})")
        args.source = "pong"
    if not args.source:
        raise ParameterError("give a SOURCE (a counts JSON or a checkpoint), --analytic (the dense Pong "
                             "policy) or --published (the publication's table)")
    counts = load_counts(args.source, args.frames, args.game)
    gpu = None
    if args.gpu_results:
        from mstpn.energy.gpu import load_measurement

        gpu = load_measurement(args.gpu_results)
    settings = MemristiveSettings(v_bias=args.v_bias, g_bias=_ns(args.g_bias_ns),
                                  devices_per_synapse=args.devices_per_synapse)
    rep = energy_report(counts, params, settings, gpu)
    if not args.json:
        print(rep.format_table())
    if args.out:
        paths = rep.write(args.out)
        print("\nwrote " + ", ".join(str(v) for v in paths.values()))
    return 0, rep.to_dict()


def _ns(v: float) -> float:
    if v is None or not v == v or v < 0:
        raise ParameterError(f"--g-bias-ns must be a number >= 0, got {v!r}")
    return v * 1e-9


def load_counts(source: str, frames: int | None = None, game: bool = False) -> RunCounts:
    """Counts of a run from 'pong' (analytic), a counts JSON file, or a checkpoint."""
    if frames is not None and frames < 1:
        raise ParameterError(f"--frames must be a positive number of frames, got {frames}")
    if source == "pong":
        if frames is None:
            return published_game_counts(stpn_only=False)
        return pong_policy_counts(steps_for_frames(frames), frames, source=f"analytic dense Pong policy, {frames} frames")
    path = Path(source)
    if not path.exists():
        raise DataFormatError(f"{path}: no such file (give a counts JSON, a checkpoint, or --analytic for the "
                              "dense Pong policy)")
    if path.suffix == ".json" and _is_counts(path):
        if frames is not None or game:
            raise ParameterError("a counts file carries its own game length: drop --frames / --game")
        return RunCounts.load(path)
    return counts_from_checkpoint(path, frames, game)


def _is_counts(path: Path) -> bool:
    import json

    try:
        return json.loads(path.read_text(encoding="utf-8")).get("schema") == "mstpn.energy-counts"
    except (json.JSONDecodeError, UnicodeDecodeError, AttributeError):
        raise DataFormatError(f"{path}: not a counts JSON file") from None


def counts_from_checkpoint(path: Path, frames: int | None, game: bool, seed: int = 0) -> RunCounts:
    """Dense counts of a trained STPN / m-STPN policy (``snn_agent.checkpoint.load_policy``): its
    layer sizes, and the game length from ``frames``, one greedy game played with
    ``snn_agent.evaluate.evaluate`` (``game``, seed ``seed``) or, by default, the publication's
    game.  Event counts of the converted network come as a counts JSON (conversion)."""
    try:
        from snn_agent.checkpoint import load_policy
    except ModuleNotFoundError as exc:
        raise BackendUnavailableError(f"reading checkpoints needs snn_agent ({exc}); pass --analytic or a "
                                      f"counts JSON instead") from None
    policy, meta = load_policy(path, device="cpu")
    cfg = policy.cfg
    if cfg.kind not in ("stpn", "mstpn"):
        raise ParameterError(f"{path.name}: energy accounting models STPN / m-STPN policies, this is {cfg.kind!r}")
    tag = f"{path.name} ({cfg.kind}), dense"
    if game:
        from snn_agent.evaluate import evaluate

        res = evaluate(policy, meta["config"].env, episodes=1, seed=seed, progress=False)
        steps, frames = int(res["agent_steps"][0]), int(res["frames"][0])
        return pong_policy_counts(steps, frames, n_actions=cfg.n_actions, hidden=cfg.hidden,
                                  source=f"{tag}, one greedy game (seed {seed}, score {res['scores'][0]:+.0f})")
    if frames is None:
        return pong_policy_counts(int(C.PUB_GAME_STEPS.value), n_actions=cfg.n_actions, hidden=cfg.hidden,
                                  source=f"{tag}, the publication's game length")
    return pong_policy_counts(steps_for_frames(frames), frames, n_actions=cfg.n_actions, hidden=cfg.hidden,
                              source=f"{tag}, {frames} frames")
