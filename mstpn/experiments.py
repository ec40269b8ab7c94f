"""The devices-in-the-loop experiments, as a section of the run report.

Each experiment is a committed result under the project's ``results/`` folder, written by a
command (listed with it); the report reads and tabulates it, so ``mstpn report`` shows what was
measured, with n, mean, std and the 95 % confidence interval (Student t over games):

a. the m-STPN with the ideal plasticity rule vs its synapses as memristor devices, under sticky
   actions 0.25 and in the deterministic emulator (``device_in_the_loop/summary.json``);
b. plasticity ablations of the STPN and the m-STPN: gamma = 0 (F = 0, long-term weights only) and
   lambda = 0 (``plasticity_ablations/summary.json``);
c. synaptic energy per game from the device run's counted pulses and biases, beside the
   assumption-based figure (one pulse per plastic synapse per agent step at the reference
   conductance, every device at the worst-case bias), from the games of (a);
d. score vs device-to-device variability and vs the number of conductance levels
   (``sweep_full/{d2d,levels}/summary.json``, the Ray sweep).

A missing result is listed with the command that writes it; a malformed one is an error naming
the file.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from mstpn_base.checks import is_number
from mstpn_base.errors import DataFormatError
from mstpn_base.io import read_json

#: the committed results of the experiments
DEFAULT_RESULTS = Path(__file__).resolve().parent.parent / "results"


@dataclass(frozen=True)
class Experiment:
    key: str
    title: str
    files: tuple          # paths relative to the results folder
    command: str


EXPERIMENTS = (
    Experiment("a", "m-STPN: ideal plasticity rule vs memristor devices in the loop",
               ("device_in_the_loop/summary.json",),
               "python scripts/device_in_the_loop.py --games 20 --minutes 170 --out results/device_in_the_loop"),
    Experiment("b", "Plasticity ablations", ("plasticity_ablations/summary.json",),
               "python scripts/plasticity_ablations.py --episodes 30 --out results/plasticity_ablations"),
    Experiment("c", "Synaptic energy per game: counted in the device run vs assumed",
               ("device_in_the_loop/games.json",),
               "python scripts/device_in_the_loop.py --games 20 --minutes 170 --out results/device_in_the_loop"),
    Experiment("d", "Score vs device-to-device variability and number of levels (sticky actions 0.25)",
               ("sweep_full/d2d/summary.json", "sweep_full/levels/summary.json"),
               "mstpn sweep results/sweep_full/d2d.json -o results/sweep_full/d2d (and levels.json)"),
)


def _stat(row: dict, where: str) -> str:
    """'mean +- std [lo, hi]' of a row with n, mean, std, ci95."""
    if not (isinstance(row, dict) and is_number(row.get("n")) and is_number(row.get("mean"))):
        raise DataFormatError(f"{where}: a result row needs numbers n and mean")
    std = f" +- {row['std']:.2f}" if is_number(row.get("std")) else ""
    ci = row.get("ci95")
    ci = f" [{ci[0]:+.2f}, {ci[1]:+.2f}]" if isinstance(ci, list) and len(ci) == 2 and all(map(is_number, ci)) else ""
    return f"{row['mean']:+.2f}{std}{ci}"


def _ideal_vs_device(summary: dict, where: str) -> list[str]:
    rows = summary.get("summary")
    if not isinstance(rows, dict):
        raise DataFormatError(f"{where}: needs an object 'summary' of condition/env rows")
    envs = {"sticky0.25": "sticky actions 0.25 (standard)", "deterministic": "deterministic emulator"}
    out = ["| synapses | " + " | ".join(envs.values()) + " |", "|---|---|---|"]
    for syn in dict.fromkeys(k.split("/")[0] for k in rows):
        cells = []
        for env in envs:
            r = rows.get(f"{syn}/{env}")
            cells.append(f"{_stat(r, where)} (n = {r['n']})" if r and r.get("n") else "-")
        out.append(f"| {syn} | " + " | ".join(cells) + " |")
    seeds = next((r.get("seeds") for r in rows.values() if isinstance(r, dict) and r.get("seeds")), None)
    if seeds:
        out += ["", f"Greedy full games on the evaluation seeds {seeds[0]}..{seeds[-1]} (never used in training), "
                    "the same seeds for both synapse models; device model: the file's device block, device seed "
                    f"{(summary.get('device') or {}).get('seed', '?')}."]
    return out


def _ablations(summary: dict, where: str) -> list[str]:
    rows = summary.get("rows")
    if not isinstance(rows, list):
        raise DataFormatError(f"{where}: needs a list 'rows'")
    conds = summary.get("conditions") or {}
    out = ["| model | condition | sticky actions 0.25 | deterministic |", "|---|---|---|---|"]
    keys = list(dict.fromkeys((r.get("model"), r.get("condition")) for r in rows))
    for model, cond in keys:
        cell = {}
        for r in rows:
            if (r.get("model"), r.get("condition")) == (model, cond):
                cell[r.get("protocol")] = f"{_stat(r, where)} (n = {r['n']})"
        name = {"stpn": "STPN", "mstpn": "m-STPN"}.get(model, model)
        out.append(f"| {name} | {conds.get(cond, cond)} | {cell.get('sticky', '-')} | "
                   f"{cell.get('deterministic', '-')} |")
    return out


def _energy(games: dict, where: str) -> list[str]:
    from memristor.params import DeviceParams
    from mstpn.energy.counts import LayerCounts
    from mstpn.energy.models import memristive_layer_energy, reference_conductance

    rows = [g for g in games.get("games", []) if isinstance(g, dict) and g.get("synapses") == "device"]
    dev = games.get("device") or {}
    dt = (games.get("mapping") or {}).get("dt_s")
    if not rows or not is_number(dev.get("synapses")) or not is_number(dt):
        return ["No device game recorded yet."]
    need = ("steps", "pulses", "pulse_energy_J", "bias_energy_J")
    if not all(all(is_number(g.get(k)) for k in need) for g in rows):
        raise DataFormatError(f"{where}: every device game needs numbers {', '.join(need)}")
    p, n_syn = DeviceParams(), int(dev["synapses"])
    out = ["| env | games | agent steps / game | pulses / synapse / step | counted pulse [mJ/game] | "
           "counted bias [mJ/game] | assumed pulse [mJ/game] | assumed bias [mJ/game] |",
           "|---|---|---|---|---|---|---|---|"]
    for env in dict.fromkeys(g.get("env") for g in rows):
        sel = [g for g in rows if g.get("env") == env]
        n, steps = len(sel), sum(g["steps"] for g in sel)
        per_game = steps / n
        # the energy account's assumption: one pulse per plastic synapse per step, default settings
        layer = LayerCounts("stpn", n_synapses=n_syn, plastic_synapses=n_syn, update_pulses=n_syn * steps,
                            memristive=True)
        assumed = memristive_layer_energy(layer, steps * dt, p)
        assumed_pulse, assumed_bias = assumed["pulse"] / n, assumed["bias"] / n
        out.append(f"| {env} | {n} | {per_game:,.0f} | {sum(g['pulses'] for g in sel) / steps / n_syn:.2f} | "
                   f"{1e3 * sum(g['pulse_energy_J'] for g in sel) / n:.2f} | "
                   f"{1e3 * sum(g['bias_energy_J'] for g in sel) / n:.1f} | {1e3 * assumed_pulse:.2f} | "
                   f"{1e3 * assumed_bias:.1f} |")
    out += ["", f"Counted: the pulses each device received and their V^2 G t energy, and every device "
                f"({dev.get('devices', '?')} = two per synapse) at its own bias for the game's physical duration "
                f"({dt:.4g} s per agent step). Assumed: one pulse per plastic synapse ({n_syn:,}) per step at "
                f"{reference_conductance(p) * 1e9:.2f} nS, one device per synapse at {p.v_bias_max} V."]
    return out


def _sweep(summaries: list, where: str) -> list[str]:
    out = ["| parameter | value | n | mean +- std [95 % CI] | mean agent steps |", "|---|---|---|---|---|"]
    for s, w in summaries:
        rows = s.get("by_value")
        if not isinstance(rows, list):
            raise DataFormatError(f"{w}: needs a list 'by_value'")
        for r in rows:
            steps = f"{r['mean_steps']:,.0f}" if is_number(r.get("mean_steps")) else "-"
            out.append(f"| {r.get('parameter')} | {r.get('value')} | {r.get('n')} | {_stat(r, w)} | {steps} |")
    return out


def experiment_lines(results=None) -> list[str]:
    """The Markdown section of the experiments (a)-(d) read from ``results`` (default: the
    project's results/ folder)."""
    root = Path(results) if results else DEFAULT_RESULTS
    lines = ["## Devices in the loop: experiments", "",
             f"Committed results (folder `{root.name}/`), each with the command that wrote it. Scores: points won "
             "minus points lost per greedy game; mean +- sample std, 95 % CI (Student t).", ""]
    for ex in EXPERIMENTS:
        paths = [root / f for f in ex.files]
        lines += [f"### ({ex.key}) {ex.title}", ""]
        if not all(p.is_file() for p in paths):
            missing = ", ".join(str(p.relative_to(root)) for p in paths if not p.is_file())
            lines += [f"Not measured yet ({missing} is missing): `{ex.command}`", ""]
            continue
        docs = [(read_json(p), str(p)) for p in paths]
        for d, w in docs:
            if not isinstance(d, dict):
                raise DataFormatError(f"{w}: expected a JSON object")
        if ex.key == "a":
            body = _ideal_vs_device(*docs[0])
        elif ex.key == "b":
            body = _ablations(*docs[0])
        elif ex.key == "c":
            body = _energy(*docs[0])
        else:
            body = _sweep(docs, "sweep")
        lines += [*body, "", f"Command: `{ex.command}`", ""]
    return lines
