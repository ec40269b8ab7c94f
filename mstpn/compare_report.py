"""The ``mstpn compare`` job (:func:`run_comparison`) and its Markdown report with plots
(matplotlib Agg, atomic writes)."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from conversion.backend import layer_names
from mstpn import compare as C
from mstpn.observations import load_observations
from mstpn_base import registry
from mstpn_base.errors import MstpnError, ParameterError
from mstpn_base.io import atomic_path, atomic_write_json, atomic_write_text
from mstpn_base.lock import lock_folder


#: every plot the report can show; those a run does not draw are removed from its folder
PLOTS = ("activity_raster.png", "error_over_time.png", "speed.png")


def _plots(results: dict, comps: list, out: Path, net) -> list:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt


    files = []
    ok = {n: r for n, r in results.items() if not r.error}
    ref = ok.get("torch")
    # activity rasters (events per unit over time) of the NumPy reference, per layer
    src = ok.get("numpy")
    if src is not None and src.acts:
        layers = [n for n in layer_names(net) if n in src.acts]
        fig, axes = plt.subplots(1, len(layers), figsize=(3 * len(layers), 3), squeeze=False)
        for ax, name in zip(axes[0], layers):
            a = src.acts[name]
            changed = np.diff(a, axis=0, prepend=0.0) != 0     # a unit's sent value changed: an event
            ax.imshow(changed.T, aspect="auto", interpolation="nearest", cmap="Greys")
            ax.set_title(f"{name} ({int(changed.sum())} events)", fontsize=8)
            ax.set_xlabel("frame")
        axes[0][0].set_ylabel("unit")
        fig.tight_layout()
        with atomic_path(out / "activity_raster.png") as p:
            fig.savefig(p, dpi=80)
        plt.close(fig)
        files.append("activity_raster.png")
    others = {n: r for n, r in ok.items() if n != "torch"}
    if ref is not None and others:
        fig, ax = plt.subplots(figsize=(6, 3))
        for n, r in others.items():
            m = min(r.frames, ref.frames)
            err = np.abs(r.logits[:m] - ref.logits[:m]).max(axis=1)
            ax.semilogy(np.maximum(err, 1e-17), label=n)
        ax.set_xlabel("frame")
        ax.set_ylabel("max |logit - torch|")
        ax.legend(fontsize=7)
        fig.tight_layout()
        with atomic_path(out / "error_over_time.png") as p:
            fig.savefig(p, dpi=80)
        plt.close(fig)
        files.append("error_over_time.png")
    fig, ax = plt.subplots(figsize=(6, 3))
    names = [c.backend for c in comps if not c.error]
    ax.bar(names, [c.fps for c in comps if not c.error])
    ax.set_yscale("log")
    ax.set_ylabel("frames / s")
    ax.tick_params(axis="x", rotation=30, labelsize=7)
    fig.tight_layout()
    with atomic_path(out / "speed.png") as p:
        fig.savefig(p, dpi=80)
    plt.close(fig)
    files.append("speed.png")
    for name in PLOTS:
        if name not in files:   # an earlier run's plot that this run has no data for
            (out / name).unlink(missing_ok=True)
    return files


def write_report(summary: C.Summary, results: dict, out: Path, net) -> None:
    """``results.json`` first, then the plots, then ``report.md`` (each atomic): a report is never
    beside another run's results, and a run that fails while writing leaves no report of it."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "report.md").unlink(missing_ok=True)   # an earlier run's report must not outlive its results
    atomic_write_json(out / "results.json", C.jsonable([dict(c.__dict__) for c in summary.comparisons]))
    files = _plots(results, summary.comparisons, out, net)
    names_ = layer_names(net)
    np_fps = next((c.fps for c in summary.comparisons if c.backend == "numpy" and not c.error), None)
    lines = ["# Cross-simulator comparison", "",
             f"Recorded sequence: {max((c.frames for c in summary.comparisons), default=0)} frames; "
             f"reference: the PyTorch policy (float64){' with the same device pairs' if summary.device_mapping else ''}. "
             "Actions are the argmax of the logits.", "", synapse_line(summary), "",
             summary.table(), "", "## Speed (frames per second, ratio to the NumPy reference)", ""]
    for c in summary.comparisons:
        if not c.error:
            ratio = f"{c.fps / np_fps:.3f}x" if np_fps else "-"
            lines.append(f"- {c.backend}: {c.fps:.2f} fps ({ratio})")
    lines += ["", "## Per-layer activation error (max |a - a_torch|, relative to max |a_torch|)", "",
              "| backend | " + " | ".join(names_) + " |", "|---|" + "---|" * len(names_)]
    for c in summary.comparisons:
        if c.layer_max_abs:
            lines.append(f"| {c.backend} | " + " | ".join(
                f"{c.layer_max_abs[n]:.1e} ({c.layer_rel[n]:.1e})" if n in c.layer_max_abs else "-"
                for n in names_) + " |")
    lines += ["", "## Events and synaptic operations per frame (mean)", "",
              "| backend | " + " | ".join(f"{n} ev / syn" for n in names_) + " |",
              "|---|" + "---|" * len(names_)]
    for c in summary.comparisons:
        if c.events:
            lines.append(f"| {c.backend} | " + " | ".join(
                f"{c.events.get(n, float('nan')):.0f} / {c.synops.get(n, float('nan')):.0f}" for n in names_) + " |")
    counted = [c for c in summary.comparisons if c.device_stats]
    if counted:
        lines += ["", "## Device pulses counted (plastic layer, whole sequence)", "",
                  "| backend | layer | pulses | potentiating | depressing | pulse energy [J] | bias energy [J] | "
                  "device steps |", "|---|---|---|---|---|---|---|---|"]
        for c in counted:
            for layer, d in c.device_stats.items():
                lines.append(f"| {c.backend} | {layer} | {d['pulses']} | {d['potentiating']} | {d['depressing']} | "
                             f"{d['pulse_energy_J']:.4e} | {d['bias_energy_J']:.4e} | {d['device_steps']} |")
    lines += [""] + [f"![{f}]({f})" for f in files] + [""]
    atomic_write_text(out / "report.md", "\n".join(lines))


def synapse_line(summary: C.Summary) -> str:
    """The report's line on the plastic layer's synapse model."""
    block = summary.device_mapping
    if not block:
        return "Synapse model: ideal (the STPN rule of the plastic layer)."
    return (f"Synapse model: device (the plastic layer's synapses as memristor device pairs, "
            f"conversion.device_layer; device seed {block.get('seed')}, variability "
            f"{'on' if block.get('variability') else 'off'}, cycle-to-cycle noise {'on' if block.get('noise') else 'off'}); "
            "backends that do not run it are listed as not run.")


def run_comparison(net_path, frames: int = 100, backends=None, obs_path=None, game: bool = False,
                   max_game_steps=None, seed: int = 0, out_dir="compare_out", progress=None,
                   synapses: str = "ideal", device_seed: int | None = None) -> C.Summary:
    """The ``mstpn compare`` command: sequence comparison (+ games), report in ``out_dir``
    (``backends``: default the registry's default set).  ``synapses="device"`` runs the plastic
    layer as memristor device pairs on every backend that runs them (the others are reported "not
    run"; ParameterError if the user named only such backends), with the file's device block and
    the device draws from ``device_seed`` (None: the block's seed)."""
    from snn_agent.evaluate import device_mapping
    from snn_agent.play import play_game, record_frames

    named = backends is not None
    backends = C.check_backends(registry.default_backends() if backends is None else backends)
    if frames < 1:
        raise MstpnError("--frames must be >= 1")
    if synapses not in registry.SYNAPSE_MODELS:
        raise ParameterError(f"--synapses must be one of {', '.join(registry.SYNAPSE_MODELS)}, got {synapses!r}")
    if device_seed is not None and synapses != "device":
        raise ParameterError("--device-seed needs --synapses device")
    if synapses == "device":
        backends = C.device_backends(backends, named)
    net = C.load_network(net_path)
    mapping = device_mapping(net, device_seed, what=str(net_path))[1] if synapses == "device" else None
    model = {} if mapping is None else {"synapses": synapses, "device": mapping}
    obs = load_observations(obs_path, frames) if obs_path is not None else None
    with lock_folder(out_dir, "compare"):   # one writer per report folder
        if obs is None:
            obs = record_frames(net, frames, seed)
        comps, results = C.compare_sequence(net, obs, backends, progress=progress, synapses=synapses, device=mapping)
        if game:
            for c in comps:
                if c.error:
                    continue
                try:
                    runner = registry.make_runner(c.backend, net, **model)
                    try:
                        g = play_game(runner, net, seed=seed, max_steps=max_game_steps, progress=progress)
                    finally:
                        runner.close()
                    c.score, c.game_steps, c.game_fps = g["score"], g["steps"], g["steps"] / g["seconds"]
                except MstpnError as exc:
                    c.error = f"game failed: {exc}"
        summary = C.Summary(comps, out_dir=Path(out_dir), synapses=synapses,
                            device_mapping=None if mapping is None else mapping.to_block())
        write_report(summary, results, Path(out_dir), net)
    return summary
