"""The report of a run folder (``mstpn run`` writes it, ``mstpn report`` re-renders it).

Two renderings of one content: ``README.md`` (Markdown, readable on GitHub) and ``report.html``
(the same text, self-contained: figures embedded, opens in any browser).  Sections:

* the game the converted, event-driven network played (score, events, GIF);
* scores of the shipped policies (``artifacts/*/eval.json``: greedy PyTorch play) beside the
  converted network's game;
* training curves of the shipped policies (``artifacts/*/curve.csv``);
* device curves: the four characterisation protocols on the NumPy reference device model;
* cross-simulator agreement and speed on a recorded sequence;
* the energy account of the game;
* the devices-in-the-loop experiments committed under ``results/`` (:mod:`mstpn.experiments`).

Figures are regenerated on every render from their sources (``run.json``, the artifacts folder,
the device model), so ``mstpn report`` reflects newly trained artifacts.
"""
from __future__ import annotations

import base64
import re
from pathlib import Path

from mstpn_base.checks import is_number
from mstpn_base.errors import DataFormatError, ParameterError
from mstpn.experiments import experiment_lines
from mstpn_base.io import atomic_path, atomic_write_text, read_json
from snn_agent.curves import read_curve_csv

#: the shipped policies, one folder per model (policy.safetensors, eval.json, curve.csv)
DEFAULT_ARTIFACTS = Path(__file__).resolve().parent.parent / "artifacts"
#: characterisation protocols shown in the report (memristor.protocols names)
DEVICE_PROTOCOLS = ("pulse_train", "relaxation", "ppf", "metaplasticity")
MODEL_NAMES = {"stpn": "STPN", "mstpn": "m-STPN", "lstm": "LSTM"}


def check_artifacts(artifacts) -> Path:
    """The folder of shipped policies: it must exist (a mistyped --artifacts is an error, not an
    empty score table)."""
    path = Path(artifacts) if artifacts else DEFAULT_ARTIFACTS
    if not path.is_dir():
        raise ParameterError(f"--artifacts {path}: no such folder (give the folder holding */policy.safetensors, "
                             f"default {DEFAULT_ARTIFACTS})")
    return path


def validate_summary(s, where="run.json") -> dict:
    """Check a run summary (``run.json``, written by ``mstpn run``) before rendering it: the
    fields the report reads, with their JSON types.  Raises DataFormatError naming the field."""
    def need(d, key, kinds, ctx):
        v = d.get(key) if isinstance(d, dict) else None
        if not isinstance(v, kinds) or isinstance(v, bool) and bool not in kinds:
            raise DataFormatError(f"{where}: {ctx}{key} is missing or not {_kind_names(kinds)}, got {v!r:.60}; "
                                  "re-create the folder with `mstpn run`")
        return v
    if not isinstance(s, dict):
        raise DataFormatError(f"{where}: must be a JSON object (the summary `mstpn run` writes), "
                              f"got {type(s).__name__}")
    need(s, "checkpoint", (str,), "")
    need(s, "model", (dict,), "")
    need(s, "seed", (int,), "")
    if s.get("trained_frames") is not None:
        need(s, "trained_frames", (int, float), "")
    game = need(s, "game", (dict,), "")
    for key in ("score", "steps", "frames", "steps_per_s"):
        need(game, key, (int, float), "game.")
        if not is_number(game[key]):
            raise DataFormatError(f"{where}: game.{key} must be a finite number, got {game[key]!r}")
    need(game, "finished", (bool,), "game.")
    epf = need(game, "events_per_frame", (dict,), "game.")
    for key in ("events", "synops_ratio"):
        if epf.get(key) is not None:
            need(epf, key, (int, float), "game.events_per_frame.")
    energy = need(s, "energy", (dict,), "")
    need(energy, "table", (str,), "energy.")
    if s.get("synapses") is not None:
        need(s, "synapses", (str,), "")
    if energy.get("measured") is not None:
        _check_measured(need(energy, "measured", (dict,), "energy."), need, where)
    if s.get("comparison") is not None:
        comp = need(s, "comparison", (dict,), "")
        if comp.get("table_md") is not None:
            need(comp, "table_md", (str,), "comparison.")
    return s


def _check_measured(m: dict, need, where: str) -> None:
    """energy.measured (mstpn.energy.report.EnergyReport.measured_summary): the numbers the report shows."""
    for part in ("assumed", "measured"):
        d = need(m, part, (dict,), "energy.measured.")
        for key in ("pulses", "pulse_energy_J", "bias_energy_J", "energy_J"):
            need(d, key, (int, float), f"energy.measured.{part}.")
            if not is_number(d[key]) or d[key] < 0:
                raise DataFormatError(f"{where}: energy.measured.{part}.{key} must be a finite number >= 0, "
                                      f"got {d[key]!r}")
        per = need(d, "per_step", (dict,), f"energy.measured.{part}.")
        for key, v in per.items():
            if v is not None and not (is_number(v) and v >= 0):
                raise DataFormatError(f"{where}: energy.measured.{part}.per_step.{key} must be a finite number "
                                      f">= 0, got {v!r}")
    ratio = need(m, "measured_over_assumed", (dict,), "energy.measured.")
    for key, v in ratio.items():
        if v is not None and not (is_number(v) and v >= 0):
            raise DataFormatError(f"{where}: energy.measured.measured_over_assumed.{key} must be a finite number "
                                  f">= 0 or null, got {v!r}")


def measured_lines(s: dict) -> list[str]:
    """The memristive layer measured in the device run beside the assumption (a run with
    ``--synapses device``; empty otherwise)."""
    m = (s.get("energy") or {}).get("measured")
    if not m:
        return []
    f = lambda x, scale=1.0, fmt=".4g": "-" if x is None else format(x * scale, fmt)  # noqa: E731
    lines = ["### Memristive synapses: measured in the device run vs the assumption", "",
             f"Layer `{m.get('layer', '?')}`, device seed {m.get('seed')}, {m.get('devices_per_synapse', 2)} devices "
             f"per synapse, {m.get('steps', '?')} agent steps. Measured: the pulses the device pairs were sent, "
             "their energy as the counted sum of V^2 G t_p, and the counted bias energy of every device; assumed: "
             "the energy model's operating point (docs/energy.md). The device parameters are the model's.", "",
             "| memristive synapses | pulses | pulse energy [mJ] | bias energy [mJ] | total [mJ] | "
             "pulses / step | total / step [uJ] |", "|---|---|---|---|---|---|---|"]
    for label, key in (("assumed (energy model)", "assumed"), ("measured in the device run", "measured")):
        d = m[key]
        per = d["per_step"]
        lines.append(f"| {label} | {d['pulses']:,} | {f(d['pulse_energy_J'], 1e3)} | {f(d['bias_energy_J'], 1e3)} | "
                     f"{f(d['energy_J'], 1e3)} | {f(per.get('pulses'), 1.0, '.6g')} | {f(per.get('energy_J'), 1e6)} |")
    r = m["measured_over_assumed"]
    lines += [f"| measured / assumed | {f(r.get('pulses'))}x | {f(r.get('pulse_energy_J'))}x | "
              f"{f(r.get('bias_energy_J'))}x | {f(r.get('energy_J'))}x | | |", ""]
    return lines


def synapse_line(s: dict) -> list[str]:
    """The synapse model of the run's plastic layer (older runs: the ideal rule)."""
    if s.get("synapses") != "device":
        return ["- synapse model: ideal (the STPN rule)"]
    block = s.get("device_mapping") if isinstance(s.get("device_mapping"), dict) else {}
    return [f"- synapse model: device (the plastic layer's synapses as memristor device pairs; device seed "
            f"{block.get('seed', '?')}, the file's device block)"]


def _kind_names(kinds) -> str:
    names = {str: "a string", dict: "an object", int: "a number", float: "a number", bool: "true/false"}
    return " or ".join(dict.fromkeys(names[k] for k in kinds))


def collect_models(artifacts: Path) -> list[dict]:
    """One dict per shipped policy folder: name, kind, trained frames/wall time, greedy score."""
    from snn_agent.checkpoint import read_metadata

    artifacts = check_artifacts(artifacts)
    models = []
    for folder in sorted(p for p in Path(artifacts).glob("*") if (p / "policy.safetensors").is_file()):
        meta = read_metadata(folder / "policy.safetensors")
        kind = meta.get("architecture", {}).get("kind", folder.name)
        row = {"folder": folder.name, "kind": kind, "name": MODEL_NAMES.get(kind, kind),
               "frames": meta.get("progress", {}).get("frames"), "wall_s": meta.get("progress", {}).get("wall_s")}
        for name in ("eval.json", "eval_sticky.json"):     # `mstpn evaluate -o` results
            if not (folder / name).is_file():
                continue
            ev = read_json(folder / name)
            if not (isinstance(ev, dict) and all(is_number(ev.get(k)) for k in ("mean", "std", "episodes"))):
                raise DataFormatError(f"{folder / name}: needs numbers mean, std, episodes "
                                      "(write it with `mstpn evaluate -o`)")
            protocol = ev.get("protocol") if isinstance(ev.get("protocol"), dict) else {}
            sticky = protocol.get("repeat_action_probability", 0.0)   # older results: the deterministic emulator
            key = "sticky" if is_number(sticky) and sticky > 0 else "deterministic"
            row[key] = dict(mean=ev["mean"], std=ev["std"], episodes=ev["episodes"], ci=ev.get("ci95"))
        if (folder / "curve.csv").is_file():
            row["curve"] = folder / "curve.csv"
        train = meta.get("train") or {}
        algo = str(train.get("algo") or "a2c")         # checkpoints before PPO: A2C
        row["how"] = "distilled" if train.get("teacher") else algo
        row["curve_label"] = (f"{row['name']}, distilled from LSTM (greedy training games)" if train.get("teacher")
                              else f"{row['name']}, {algo.upper()} (sampled-action training games)")
        models.append(row)
    return models


def _savefig(fig, path: Path) -> None:
    import matplotlib.pyplot as plt

    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)


def plot_training_curves(models: list[dict], path: Path) -> bool:
    """Training score (mean of the last 20 games) against emulator frames, one line per run.

    Each line says how the run trained and what its score is: A2C and PPO runs score the games of
    the sampling policy (sampled actions), distillation runs the student's greedy games; solid
    lines are distilled runs, dashed ones RL."""
    curves = [(m.get("curve_label", m["name"]), *read_curve_csv(m["curve"])) for m in models if "curve" in m]
    curves = [c for c in curves if len(c[1])]
    if not curves:
        return False
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4.6))
    for name, f, s in curves:
        ax.plot(f / 1e6, s, label=name, ls="-" if "distilled" in name else "--")
    ax.axhline(20, color="grey", ls=":", lw=1)
    ax.set_xlabel("emulator frames [millions]")
    ax.set_ylabel("game score (points won - lost),\nmean of the last 20 training games")
    ax.set_ylim(-21.5, 21.5)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    _savefig(fig, path)
    return True


def plot_device_curves(folder: Path) -> list[str]:
    """The characterisation protocols on the NumPy reference with the default (published) device
    parameters; returns the written file names (relative to the report folder)."""
    from memristor import protocols as pr

    names = []
    for name in DEVICE_PROTOCOLS:
        res = pr.run_protocol(name, "numpy")
        rel = f"device/{name}.png"
        (folder / "device").mkdir(parents=True, exist_ok=True)
        pr.plot_protocol(res, folder / rel)
        names.append(rel)
    return names


#: the still of the game shown in the report: a mid-game frame of game.gif (its first frame is
#: the nearly empty court before the serve)
GAME_FRAME = "game_frame.png"


def write_game_frame(folder: Path) -> bool:
    """Write the middle frame of ``folder/game.gif`` as ``folder/game_frame.png``; False without a GIF."""
    from PIL import Image

    gif = Path(folder) / "game.gif"
    if not gif.is_file():
        return False
    with Image.open(gif) as im:
        im.seek(im.n_frames // 2)
        frame = im.convert("RGB")
    with atomic_path(Path(folder) / GAME_FRAME) as tmp:
        frame.save(tmp, format="PNG")
    return True


def game_figure(figures: dict) -> str:
    """The game in the report: the mid-game still, linked to the animated GIF (a run without a GIF
    says so rather than linking to a file that is not there)."""
    if figures.get("game_frame"):
        return (f"[![the agent's game, a mid-game frame; click for the animation]({figures['game_frame']})]"
                "(game.gif) (agent: right, green paddle; the animated game: `game.gif`)")
    return "(no animation of the game: the run was made with `--no-gif`)"


def network_line(s: dict) -> list[str]:
    """The converted network the run kept (``network.nir``; older runs did not keep one)."""
    net = s.get("network")
    if not isinstance(net, dict) or not isinstance(net.get("file"), str):
        return []
    fixed = ", Loihi-style fixed point" if net.get("fixed_point") else ""
    return [f"- converted network: [`{net['file']}`]({net['file']}) ({net.get('nodes', '?')} nodes{fixed}; "
            f"run it on every simulator with `mstpn compare {net['file']}`)"]


def _score(ev: dict | None) -> str:
    if not ev:
        return "not evaluated"
    ci = ev.get("ci")
    interval = f", CI [{ci[0]:+.2f}, {ci[1]:+.2f}]" if isinstance(ci, list) and len(ci) == 2 else ""
    return f"{ev['mean']:+.2f} +- {ev['std']:.2f} ({ev['episodes']} games{interval})"


def render_markdown(s: dict, models: list[dict], figures: dict, results=None) -> str:
    game = s["game"]
    epf = game["events_per_frame"]
    trained = f"{s['trained_frames']:,}" if s.get("trained_frames") else "?"
    lines = [
        "# mstpn run", "",
        f"Checkpoint `{s['checkpoint']}` ({s['model'].get('kind', '?')} core, "
        f"trained {trained} frames), seed {s['seed']}.", "",
        "## Game (event-driven sigma-delta network, NumPy reference simulator)", "",
        f"- score: **{game['score']:+.0f}** over {game['steps']} agent steps ({game['frames']} frames, "
        f"{'finished' if game['finished'] else 'capped before the end'})",
        f"- speed: {game['steps_per_s']:.1f} agent steps/s",
        f"- events per frame: {epf.get('events', float('nan')):.0f}; synaptic ops per "
        f"frame vs dense MACs: {epf.get('synops_ratio', float('nan')):.3f}",
        *synapse_line(s), *network_line(s), "",
        game_figure(figures), "",
        "## Scores", "",
        "Greedy games on seeds never used in training: first under the standard protocol (sticky actions "
        "0.25, Machado et al. 2018), then in the deterministic emulator. Mean +- sample std (games), 95 % CI.", "",
        "| policy | how it played | trained frames | sticky actions 0.25 (standard) | deterministic emulator |",
        "|---|---|---|---|---|",
    ]
    for m in models:
        frames = f"{m['frames']:,}" if m.get("frames") else "?"
        lines.append(f"| {m['name']} (`artifacts/{m['folder']}`) | PyTorch, greedy | {frames} | "
                     f"{_score(m.get('sticky'))} | {_score(m.get('deterministic'))} |")
    sticky = s.get("game", {}).get("repeat_action_probability")
    how = "event-driven NumPy simulator, device synapses, greedy" if s.get("synapses") == "device" else \
        "event-driven NumPy simulator, greedy"
    lines += [f"| this run's checkpoint, converted | {how} | {trained} | "
              + (f"{game['score']:+.0f} (1 game) | - |" if is_number(sticky) and sticky > 0 else
                 f"- | {game['score']:+.0f} (1 game) |"), ""]
    if figures.get("training"):
        lines += ["## Training curves", "", f"![training curves]({figures['training']})", ""]
    if figures.get("device"):
        lines += ["## Device model (NumPy reference, default parameters)", "",
                  " ".join(f"![{Path(f).stem}]({f})" for f in figures["device"]), ""]
    comp = s.get("comparison")
    if comp:
        lines += ["## Cross-simulator agreement and speed (recorded sequence)", "",
                  f"{comp.get('frames', '?')} frames recorded from the {comp.get('reference', 'PyTorch policy')}.",
                  "", comp.get("table_md", ""), ""]
    lines += ["## Energy of this game", "", *measured_lines(s), "```", s["energy"]["table"], "```", "",
              "![energy](energy/energy.png)", "", *experiment_lines(results)]
    return "\n".join(lines)


def _embed_images(html: str, folder: Path) -> str:
    """Replace ``src="relative.png|gif"`` with data URIs so the HTML file stands alone."""
    def repl(m):
        path = folder / m.group(1)
        if not path.is_file():
            return m.group(0)
        mime = "image/gif" if path.suffix == ".gif" else "image/png"
        return f'src="data:{mime};base64,{base64.b64encode(path.read_bytes()).decode()}"'

    return re.sub(r'src="([^":]+\.(?:png|gif))"', repl, html)


def render_html(markdown_text: str, folder: Path) -> str:
    import markdown

    body = markdown.markdown(markdown_text, extensions=["tables", "fenced_code"])
    style = ("body{font-family:sans-serif;max-width:980px;margin:2em auto;padding:0 1em;line-height:1.4}"
             "table{border-collapse:collapse}td,th{border:1px solid #bbb;padding:2px 8px}"
             "pre{background:#f4f4f4;padding:.6em;white-space:pre-wrap;overflow-wrap:anywhere;font-size:90%}"
             "img{max-width:100%}")
    return (f"<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>mstpn run</title>"
            f"<style>{style}</style></head><body>\n{_embed_images(body, folder)}\n</body></html>\n")


def write_report(folder, summary: dict, artifacts=None, device_curves: bool = True, results=None) -> dict:
    """Write figures, ``README.md`` and ``report.html`` into ``folder``; returns the file map.
    ``results``: the folder of committed experiment results (default: the project's results/)."""
    folder = Path(folder)
    summary = validate_summary(summary, str(folder / "run.json"))
    models = collect_models(artifacts)
    figures = {}
    if write_game_frame(folder):
        figures["game_frame"] = GAME_FRAME
    if plot_training_curves(models, folder / "training_curves.png"):
        figures["training"] = "training_curves.png"
    if device_curves:
        figures["device"] = plot_device_curves(folder)
    text = render_markdown(summary, models, figures, results)
    atomic_write_text(folder / "README.md", text)
    atomic_write_text(folder / "report.html", render_html(text, folder))
    return {"markdown": folder / "README.md", "html": folder / "report.html", **figures}
