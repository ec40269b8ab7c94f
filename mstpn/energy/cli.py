"""``mstpn energy``: the published energy table, or the energy of a run on every backend.

    mstpn energy --published [-o DIR]
    mstpn energy --analytic [--frames N | --game] [-o DIR]      analytic dense Pong policy
    mstpn energy COUNTS.json [-o DIR]                           counts from a simulator / a run
    mstpn energy CHECKPOINT [--frames N | --game] [-o DIR]      a trained policy (snn_agent)

``--game`` means the publication's game length (730 agent steps) for ``--analytic``, and one
played game for a checkpoint.  ``--synapses device`` plays a checkpoint's game on the converted
network with its synapses as memristor device pairs and adds the row measured in that run (a
counts file carries its own measured block: ``mstpn run --synapses device`` writes one).  ``-o/--out DIR`` writes energy.json/.csv/.txt/.png (published:
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
    from mstpn.compare_cli import add_synapse_args

    add_synapse_args(p, "for a checkpoint's game (an m-STPN; the game is played, and the table gets the row "
                        "measured in it); a counts file must then carry a measured device block")
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
    device_run = getattr(args, "synapses", "ideal") == "device"
    device_seed = getattr(args, "device_seed", None)
    if device_seed is not None and not device_run:
        raise ParameterError("--device-seed needs --synapses device")
    if device_run and (args.published or args.analytic or args.source == "pong"):
        raise ParameterError(f"{'--published' if args.published else '--analytic'} has no device run: --synapses "
                             "device needs a checkpoint (an m-STPN) or a counts file of a device run")
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
    counts = load_counts(args.source, args.frames, args.game, synapses="device" if device_run else "ideal",
                         device_seed=device_seed)
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


def load_counts(source: str, frames: int | None = None, game: bool = False, synapses: str = "ideal",
                device_seed: int | None = None) -> RunCounts:
    """Counts of a run from 'pong' (analytic), a counts JSON file, or a checkpoint.  ``synapses``
    "device": a checkpoint's game is played with device pairs (:func:`counts_from_checkpoint`); a
    counts file must carry a measured device block."""
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
        if device_seed is not None:
            raise ParameterError("a counts file carries its own device run: drop --device-seed")
        counts = RunCounts.load(path)
        if synapses == "device" and counts.device is None:
            raise ParameterError(f"{path} has no measured device block (an ideal run's counts); `mstpn run "
                                 "--synapses device` writes one as OUT/energy/counts.json")
        return counts
    return counts_from_checkpoint(path, frames, game, synapses=synapses, device_seed=device_seed)


def _is_counts(path: Path) -> bool:
    import json

    try:
        return json.loads(path.read_text(encoding="utf-8")).get("schema") == "mstpn.energy-counts"
    except (json.JSONDecodeError, UnicodeDecodeError, AttributeError):
        raise DataFormatError(f"{path}: not a counts JSON file") from None


def counts_from_checkpoint(path: Path, frames: int | None, game: bool, seed: int = 0, synapses: str = "ideal",
                           device_seed: int | None = None) -> RunCounts:
    """Dense counts of a trained STPN / m-STPN policy (``snn_agent.checkpoint.load_policy``): its
    layer sizes, and the game length from ``frames``, one greedy game played with
    ``snn_agent.evaluate.evaluate`` (``game``, seed ``seed``) or, by default, the publication's
    game.  Event counts of the converted network come as a counts JSON (conversion).

    ``synapses="device"``: the game (``frames`` frames, one whole game with ``game``, by default the
    publication's game length) is played by the converted network with its plastic layer on device
    pairs (``snn_agent.evaluate.evaluate_converted``, device draws from ``device_seed``, None: the
    device block's seed); the counts carry what the devices counted (:class:`DeviceCounts`)."""
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
    if synapses == "device":
        return _device_game_counts(path, policy, meta, frames, game, seed, device_seed, tag)
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


def _device_game_counts(path, policy, meta, frames, game, seed, device_seed, tag) -> RunCounts:
    """One game of the converted checkpoint with device synapses: dense layer counts of its length
    and the device pairs' counted pulses and energies."""
    import dataclasses

    from conversion.convert import convert_policy
    from mstpn.energy.counts import DeviceCounts
    from snn_agent.evaluate import device_mapping, evaluate_converted

    cfg, env = policy.cfg, meta["config"].env
    net = convert_policy(policy, metadata={"env": dataclasses.asdict(env)})
    node, mapping = device_mapping(net, device_seed, what=f"{path} ({cfg.kind} checkpoint)")
    cap = None if game else (frames if frames is not None else int(C.PUB_GAME_STEPS.value) * env.frameskip)
    res = evaluate_converted(net, env, episodes=1, seed=seed, max_frames=cap, device=mapping, progress=False)
    steps, n_frames = int(res["agent_steps"][0]), int(res["frames"][0])
    measured = DeviceCounts.from_stats(node, res["device_stats"][node], seed=mapping.seed, backend=res["backend"])
    what = "one game" if game else f"{n_frames} frames"
    counts = pong_policy_counts(steps, n_frames, n_actions=cfg.n_actions, hidden=cfg.hidden,
                                source=f"{tag}, {what} played with device synapses on {res['backend']} (seed {seed}, "
                                       f"score {res['scores'][0]:+.0f})")
    return dataclasses.replace(counts, device=measured)
