"""The main job: play Pong with the shipped policy on the event-driven backend, compare simulators,
account for energy, and write a report folder.

Steps (each result also lands in ``OUT/run.json``)::

    checkpoint --load_policy--> PyTorch policy (float64)
               --record-------> calibration frames (the policy playing, fixed seed)
               --convert------> sigma-delta network, thresholds + Loihi-style fixed point calibrated,
                                kept as OUT/network.nir (for mstpn compare)
    game:      event-driven NumPy simulator in closed loop with ale-py Pong -> score, GIF, counts
    compare:   the same recorded sequence on every requested backend -> agreement, errors, speed
    energy:    counts of the game -> memristive vs GPU vs Loihi-style table and bar chart
"""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from mstpn_base.errors import ParameterError
from mstpn_base.io import atomic_write_json
from mstpn_base.lock import lock_folder
from mstpn.report import write_report

DEFAULT_CHECKPOINT = Path(__file__).resolve().parent.parent / "artifacts" / "stpn" / "policy.safetensors"
CALIBRATION_FRAMES = 200
#: the converted network of a run, kept in its folder (``mstpn compare OUT/network.nir``)
NETWORK_FILE = "network.nir"


def prepare_network(policy, env_cfg, seed: int = 0, calibration_frames: int = CALIBRATION_FRAMES,
                    log=print):
    """Convert ``policy`` exactly as ``mstpn convert`` does (thresholds tuned for 99% action
    agreement and Loihi-style fixed point, calibrated on frames the policy plays itself)."""
    from snn_agent.export import convert_with_calibration

    return convert_with_calibration(policy, env_cfg, calib_frames=calibration_frames, seed=seed, log=log)


def play_event_driven(net, env_cfg, seed: int = 0, max_frames: int | None = None, fixed: bool = False,
                      progress: bool = True, synapses: str = "ideal", device=None) -> dict:
    """One greedy game of the converted network in closed loop; returns score, steps, frames,
    the observations and per-step rewards (for the GIF) and the simulator (for its event counters
    and, with ``synapses="device"``, its counted device pulses; ``device``: the mapping, None: the
    file's device block)."""
    from snn_agent.play import play_loop
    from conversion.simulator import Simulator

    check_max_frames(max_frames, env_cfg)
    max_steps = (env_cfg.max_episode_frames if max_frames is None else max_frames) // env_cfg.frameskip
    sim = Simulator(net, batch=1, fixed=fixed, synapses=synapses, device=device)
    bar = None
    if progress:
        from tqdm import tqdm
        how = "event-driven, device synapses" if synapses == "device" else "event-driven"
        bar = tqdm(total=max_steps, unit="step", desc=f"playing Pong ({how})", dynamic_ncols=True)

    scores = []   # running score after each step: the GIF's score banner

    def show(steps, score):
        scores.append(score)
        if bar is not None:
            bar.update(1)
            bar.set_postfix(score=f"{score:+.0f}", refresh=False)

    try:
        game = play_loop(lambda obs: sim.step(obs).actions[0], env_cfg, seed, max_steps,
                         keep_observations=True, on_step=show)
    finally:
        if bar is not None:
            bar.close()
    wall = game.pop("seconds")
    game["rewards"] = np.diff([0.0] + scores).tolist()
    del game["actions"]
    return dict(game, wall_s=wall, steps_per_s=game["steps"] / wall if wall > 0 else float("nan"), simulator=sim)


def check_max_frames(max_frames, env_cfg) -> None:
    """``max_frames``: None (the game's own limit) or at least one agent step (as ``evaluate``)."""
    if max_frames is not None and max_frames < env_cfg.frameskip:
        raise ParameterError(f"--max-frames must be at least one agent step ({env_cfg.frameskip} frames), "
                             f"got {max_frames}")


def counts_from_simulator(sim, steps: int, frames: int):
    """Energy counts (:class:`mstpn.energy.counts.RunCounts`) of a run of the event-driven simulator.

    Per synaptic layer: events delivered into it and event-driven synaptic ops (the simulator's
    counters), dense MACs for comparison, neuron updates (every unit, every step); for the plastic
    STPN layer (the memristive one), update pulses = the Hebbian increments the simulator performed
    (at most one per plastic synapse per step: what the assumption-based memristive row prices).
    A device run (``synapses="device"``) adds what its device pairs counted
    (:class:`mstpn.energy.counts.DeviceCounts`: pulses sent, sum of V^2 G t_p, bias energy).
    """
    from conversion import graph as g
    from mstpn.energy.counts import DeviceCounts, LayerCounts, RunCounts

    layers, measured = [], None
    for name in sim.order:
        node = sim.net.nodes[name]
        st = sim.stats[name]
        if isinstance(node, (g.Conv2d, g.Affine)):
            n_syn = int(node.weight.size)
            layers.append(LayerCounts(name, n_synapses=n_syn, dense_macs=st["dense"], synaptic_ops=st["synops"],
                                      events=st["events"], neuron_updates=int(np.prod(node.out_shape)) * steps))
        elif isinstance(node, g.PlasticSTPN):
            n_syn = int(node.W.size)
            # the assumption-based row prices the Hebbian increments as programming pulses (relaxation
            # is the device's own physics, the row norm neuron-side); a device run (synapses="device")
            # also gives the pulses its device pairs were actually sent, with their energy
            layers.append(LayerCounts(name, n_synapses=n_syn, plastic_synapses=n_syn, dense_macs=st["dense"],
                                      synaptic_ops=st["synops"], events=st["events"], update_pulses=st["hebbian"],
                                      neuron_updates=int(node.W.shape[0]) * steps, memristive=True))
            dev = (getattr(sim, "device_stats", None) or {}).get(name)
            if dev and measured is None:
                measured = DeviceCounts.from_stats(name, dev, seed=sim.devices[name].mapping.seed,
                                                   backend="numpy")
    source = "event-driven NumPy simulator, one game" + (", device synapses" if measured else "")
    return RunCounts(tuple(layers), steps=steps, frames=frames, source=source, device=measured)


def run_main_job(checkpoint=None, out="out/run", seed: int = 0, max_frames: int | None = None,
                 compare_frames: int = 100, backends=None, gif: bool = True, progress: bool = True,
                 artifacts=None, synapses: str = "ideal", device_seed: int | None = None) -> dict:
    """The whole main job; returns the summary written to ``OUT/run.json``.  One run per folder at a
    time (a second one gets MstpnError); a file of an earlier run that this run does not write again
    (the GIF and its still with ``gif=False``) is removed, so the report shows only this run.

    ``synapses="device"``: the game and the comparison run the plastic layer as memristor device
    pairs (the checkpoint must be an m-STPN; device draws from ``device_seed``, None: the device
    block's seed); backends that do not run them are reported "not run", and the energy table
    gets the row measured in the device run beside the assumption-based one."""
    import torch

    from snn_agent.checkpoint import config_from_metadata, load_policy

    from mstpn import compare
    from mstpn_base import registry

    torch.set_num_threads(1)
    if synapses not in registry.SYNAPSE_MODELS:
        raise ParameterError(f"--synapses must be one of {', '.join(registry.SYNAPSE_MODELS)}, got {synapses!r}")
    if device_seed is not None and synapses != "device":
        raise ParameterError("--device-seed needs --synapses device")
    named = bool(backends)
    backends = compare.check_backends(backends or [b for b in registry.default_backends() if b != "torch"])
    if synapses == "device" and compare_frames:
        backends = compare.device_backends(backends, named)
    if compare_frames < 0:
        raise ParameterError(f"--compare-frames must be >= 0 (0: no comparison), got {compare_frames}")
    out = Path(out)
    checkpoint = Path(checkpoint) if checkpoint else DEFAULT_CHECKPOINT
    if not checkpoint.exists():
        raise FileNotFoundError(f"checkpoint {checkpoint} not found")
    policy, meta = load_policy(checkpoint, dtype=torch.float64)
    env_cfg = config_from_metadata(meta).env
    check_max_frames(max_frames, env_cfg)
    if synapses == "device":   # before any work: an m-STPN, a valid device seed
        _check_device_policy(policy, meta, checkpoint, device_seed)
    with lock_folder(out, "run"):
        return _main_job(policy, meta, env_cfg, checkpoint, out, seed, max_frames, compare_frames, backends,
                         gif, progress, artifacts, synapses, device_seed)


def _check_device_policy(policy, meta, checkpoint, device_seed) -> None:
    """The policy converts to a network with a device block, and ``device_seed`` is a valid seed."""
    from conversion import device_layer as dl
    from snn_agent.evaluate import policy_device_block

    block = policy_device_block(policy)
    if block is None:
        raise ParameterError(f"{checkpoint} ({meta.get('architecture', {}).get('kind', '?')} checkpoint) has no device "
                             "block: the device synapse model runs an m-STPN (train one with --model mstpn) or use "
                             "--synapses ideal")
    if device_seed is not None:
        if isinstance(device_seed, bool) or not isinstance(device_seed, int) or not 0 <= device_seed < 2**63:
            raise ParameterError(f"--device-seed must be an integer in [0, 2^63), got {device_seed!r}")
        dl.Mapping.from_block(block).replace(seed=device_seed)


def _main_job(policy, meta, env_cfg, checkpoint, out, seed, max_frames, compare_frames, backends, gif,
              progress, artifacts, synapses="ideal", device_seed=None) -> dict:
    from conversion.nirfile import write_network
    from mstpn.energy.report import energy_report

    from mstpn import compare
    from mstpn.report import GAME_FRAME

    summary = {"checkpoint": str(checkpoint), "model": meta.get("architecture", {}), "seed": seed,
               "trained_frames": meta.get("progress", {}).get("frames")}

    t0 = time.perf_counter()
    net = prepare_network(policy, env_cfg, seed=seed, log=lambda msg: print(f"convert: {msg}") if progress else None)
    summary["conversion"] = {"calibration_frames": CALIBRATION_FRAMES, "wall_s": time.perf_counter() - t0,
                             "thresholds": net.metadata.get("thresholds", {}).get("values", {})}
    write_network(out / NETWORK_FILE, net)
    summary["network"] = {"file": NETWORK_FILE, "nodes": len(net.nodes), "edges": len(net.edges),
                          "fixed_point": bool(net.fixed)}
    mapping = None
    if synapses == "device":
        from snn_agent.evaluate import device_mapping

        _, mapping = device_mapping(net, device_seed, what=str(checkpoint))
    summary["synapses"] = synapses
    summary["device_mapping"] = None if mapping is None else mapping.to_block()

    game = play_event_driven(net, env_cfg, seed=seed, max_frames=max_frames, progress=progress,
                             synapses=synapses, device=mapping)
    sim = game.pop("simulator")
    observations = game.pop("observations")
    rewards = game.pop("rewards", None)
    summary["game"] = game
    summary["game"]["repeat_action_probability"] = env_cfg.repeat_action_probability
    summary["game"]["events_per_frame"] = sim.totals_per_frame()
    if sim.device_stats:   # the counted pulses and energies of the device pairs, and the devices
        summary["game"]["device_stats"] = {n: dict(c) for n, c in sim.device_stats.items()}
        summary["game"]["devices"] = {n: d.summary() for n, d in sim.devices.items()}
    if gif and observations:
        from snn_agent.evaluate import write_gif
        write_gif(out / "game.gif", observations, fps=60.0 / env_cfg.frameskip, rewards=rewards)
    else:   # an earlier run's game must not appear in this run's report
        for name in ("game.gif", GAME_FRAME):
            (out / name).unlink(missing_ok=True)

    if compare_frames:
        summary["comparison"] = compare_backends(net, policy, env_cfg, seed, compare_frames, backends, out, progress,
                                                 synapses=synapses, device=mapping)

    counts = counts_from_simulator(sim, game["steps"], game["frames"])
    report = energy_report(counts)
    report.write(out / "energy")
    counts.save(out / "energy" / "counts.json")
    summary["energy"] = {"table": report.format_table(), "files": "energy/"}
    if counts.device is not None:
        summary["energy"]["measured"] = report.measured_summary()
    summary = compare.jsonable(summary)
    atomic_write_json(out / "run.json", summary)
    write_report(out, summary, artifacts=artifacts)
    return summary


def compare_backends(net, policy, env_cfg, seed: int, n_frames: int, backends, out: Path, progress: bool,
                     synapses: str = "ideal", device=None) -> dict:
    """Record ``n_frames`` of the PyTorch policy playing (its float64 logits are the reference) and
    run them on each backend of ``backends`` in one comparison: action
    agreement, max |logit error|, frames per second.  Backends that are missing or cannot express
    the network are reported as such, not hidden.  ``synapses="device"``: every backend (and the
    reference, the PyTorch policy rebuilt from the network) runs the plastic layer on the device
    pairs of ``device``; the backends that do not run them are reported "not run"."""
    from mstpn import compare
    from snn_agent.play import record_frames

    frames = record_frames(net, n_frames, seed=seed + 1, policy=policy)
    comps, _ = compare.compare_sequence(net, frames, backends, policy=policy, synapses=synapses, device=device)
    rows = []
    for c in comps:
        if c.backend == "torch" and "torch" not in backends:
            continue
        if c.error:
            rows.append(dict(backend=c.backend, error=c.error.splitlines()[0][:200]))
        else:
            rows.append(dict(backend=c.backend, frames=c.frames, fps=c.fps, action_agreement=c.agreement_torch,
                             max_logit_error=c.logit_max_abs,
                             **({"device_stats": c.device_stats} if c.device_stats else {})))
    table = ["| backend | frames | frames/s | actions = PyTorch | max abs logit error |", "|---|---|---|---|---|"]
    f = lambda x, fmt: "-" if x is None else format(x, fmt)  # noqa: E731 - no reference: None
    for r in rows:
        if "error" in r:
            err = r["error"] if r["error"].startswith("not run:") else f"not run: {r['error']}"
            table.append(f"| {r['backend']} | - | - | - | {err} |")
        else:
            table.append(f"| {r['backend']} | {r['frames']} | {r['fps']:.1f} | {f(r['action_agreement'], '.1%')} | "
                         f"{f(r['max_logit_error'], '.2e')} |")
    ref = "PyTorch policy, float64" + (", the same device pairs" if synapses == "device" else "")
    return {"frames": int(len(frames)), "reference": ref, "synapses": synapses, "rows": rows,
            "table_md": "\n".join(table)}


def load_run(out) -> dict:
    from mstpn_base.io import read_json

    return read_json(Path(out) / "run.json")
