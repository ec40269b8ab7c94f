"""Render results/sweep_full/README.md from the sweeps' summary.json files and the ideal-rule games.

    .venv/bin/python scripts/render_sweep_results.py results/sweep_full

Reads OUT/d2d/summary.json, OUT/levels/summary.json (whichever exist), the trial records of the
default-parameter point, and results/ideal_vs_device/ideal/games.json (the ideal rule on the same
game seeds), and writes OUT/README.md atomically.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

from mstpn_base.io import atomic_write_text
from snn_agent.evaluate import mean_ci

DEFAULT = {"d2d_sigma": 0.05, "n_levels": 64}


def table(summary: dict) -> list[str]:
    name = summary["swept"][0]
    rows = [f"| {name} | n | mean | std | 95 % CI | mean steps | truncated |", "|---|---|---|---|---|---|---|"]
    for r in summary["by_value"]:
        mark = " (default)" if r["value"] == DEFAULT.get(name) else ""
        rows.append(f"| {r['value']:g}{mark} | {r['n']} | {r['mean']:+.2f} | {r['std']:.2f} | "
                    f"[{r['ci95'][0]:+.2f}, {r['ci95'][1]:+.2f}] | {r['mean_steps']:,.0f} | {r['truncated']} |")
    return rows


def device_games(folder: Path, name: str, value) -> dict:
    games = {}
    for f in (folder / "trials").glob("*.json"):
        rec = json.loads(f.read_text())
        if rec["trial"]["params"].get(name) == value:
            games.update({g["seed"]: g["score"] for g in rec["games"]})
    return games


def main(out: Path) -> int:
    lines = ["# The m-STPN with its synapses as memristor devices: full games vs device-to-device variability and "
             "number of levels", "",
             "Commands (2-core machine, no GPU; both Ray workers shared the machine with other jobs):", "",
             "    RAY_worker_niceness=0 .venv/bin/mstpn sweep results/sweep_full/d2d.json -o results/sweep_full/d2d --workers 2",
             "    RAY_worker_niceness=0 .venv/bin/mstpn sweep results/sweep_full/levels.json -o results/sweep_full/levels --workers 2",
             "    .venv/bin/python scripts/device_in_the_loop.py --conditions ideal --games 10 --minutes 60 "
             "--max-steps 27000 --out results/ideal_vs_device/ideal",
             "    .venv/bin/python scripts/render_sweep_results.py results/sweep_full", "",
             "* policy `artifacts/mstpn/policy.safetensors` (distilled, trained without sticky actions), converted with "
             "thresholds 0 (the event-driven network computes the dense policy), its plastic layer on device pairs "
             "(`synapses=\"device\"`, docs/device_model.md): default DeviceParams except the swept one, variability and "
             "cycle-to-cycle noise on, device seeds 0 and 1.",
             "* backend `torch` with the device step compiled (the same devices, noise draws, pulses and actions as the "
             "NumPy reference: tests/test_device_layer.py, tests/test_sweep.py).",
             "* protocol: **sticky actions 0.25** (Machado et al. 2018), greedy, **full games** (capped at 27,000 agent "
             "steps = the emulator's 108,000-frame limit; no game reached it). 5 games per device seed, game seeds "
             "1.5e9 + 5 s + i (evaluation seeds, never used in training), the same games for every value: "
             "**n = 10 games per value**. 95 % CI: Student t over the 10 games; games of one device seed share the "
             "devices, so the 10 are not fully independent samples of the device draw.", ""]
    for name in ("d2d", "levels"):
        path = out / name / "summary.json"
        if path.exists():
            s = json.loads(path.read_text())
            lines += [f"## Score vs {s['swept'][0]} ({s['trials_done']} of {s['trials_planned']} trials)", ""]
            lines += table(s) + ["", f"![score vs {s['swept'][0]}]({name}/score_vs_{s['swept'][0]}.png)", ""]
    ideal_path = Path("results/ideal_vs_device/ideal/games.json")
    if ideal_path.exists() and (out / "d2d").exists():
        ideal = {g["seed"]: g["score"] for g in json.loads(ideal_path.read_text())["games"] if g["env"] == "sticky0.25"}
        dev = device_games(out / "d2d", "d2d_sigma", DEFAULT["d2d_sigma"])
        seeds = sorted(set(ideal) & set(dev))
        if seeds:
            a, b = np.array([ideal[k] for k in seeds]), np.array([dev[k] for k in seeds])
            ci_i, ci_d, ci_p = mean_ci(a), mean_ci(b), mean_ci(b - a)
            fmt = lambda c: f"{c['mean']:+.2f} +- {c['std']:.2f} [{c['ci'][0]:+.2f}, {c['ci'][1]:+.2f}]"  # noqa: E731
            lines += ["## Ideal rule vs device model on the same games", "",
                      f"The same {len(seeds)} sticky-action games (seeds {seeds[0]}..{seeds[-1]}), default device "
                      "parameters (device seeds 0 and 1):", "",
                      "| synapses | n | mean +- std [95 % CI] |", "|---|---|---|",
                      f"| ideal rule (NumPy reference) | {len(seeds)} | {fmt(ci_i)} |",
                      f"| device model | {len(seeds)} | {fmt(ci_d)} |",
                      f"| device - ideal, paired per game | {len(seeds)} | {fmt(ci_p)} |", "",
                      "The ideal rule's games are those of `artifacts/mstpn/eval_sticky.json` (the same seeding: its "
                      "first 10 scores are identical); over all 30 games it scores -1.03 +- 5.29 [-3.01, +0.94].", ""]
    if (out / "d2d").exists():
        recs = [json.loads(f.read_text()) for f in (out / "d2d" / "trials").glob("*.json")]
        recs = [r for r in recs if r["trial"]["params"].get("d2d_sigma") == DEFAULT["d2d_sigma"]]
        if recs:
            games = sum(len(r["games"]) for r in recs)
            steps = sum(g["steps"] for r in recs for g in r["games"])
            tot = {k: sum(r["device_stats"][k] for r in recs) for k in ("pulses", "pulse_energy_J", "bias_energy_J")}
            lines += ["## Counted device activity (default parameters, the 10 games above)", "",
                      "| pulses per agent step | pulses per synapse per step | energy per pulse | pulse energy per game "
                      "| bias energy per game | mean game length |", "|---|---|---|---|---|---|",
                      f"| {tot['pulses'] / steps:,.0f} | {tot['pulses'] / steps / 169_984:.2f} | "
                      f"{tot['pulse_energy_J'] / tot['pulses'] * 1e12:.2f} pJ | {tot['pulse_energy_J'] / games * 1e3:.2f} mJ | "
                      f"{tot['bias_energy_J'] / games * 1e3:.1f} mJ | {steps / games:,.0f} steps ({steps / games / 15:.0f} s) |",
                      "", "Summed V^2 G t_p of every pulse sent and the bias energy of both devices of all 169,984 "
                      "synapses (conversion.device_layer); the energy tables' assumption is one 3.2 pJ pulse per "
                      "plastic synapse per step (docs/energy.md).", ""]
    lines += ["## What this shows", "", (out / "FINDINGS.md").read_text().strip() if (out / "FINDINGS.md").exists()
              else "(see the tables)", "",
              "Files: `*/summary.csv`, `*/summary.json`, `*/score_vs_*.png`; every game (score, steps, actions "
              "SHA-256, counted pulses and energies) in `*/trials/*.json`.", ""]
    atomic_write_text(out / "README.md", "\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(Path(sys.argv[1] if len(sys.argv) > 1 else "results/sweep_full")))
