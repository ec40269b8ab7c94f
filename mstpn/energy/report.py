"""Energy report of a run (all backends, per layer and component) and the reproduction of the
publication's energy table.  Energies in joules inside; tables print millijoules.

Comparison scope: the publication compares the synaptic operations of the STPN layer only, so the
ratios are taken over the memristive layers (``scope = "synaptic"``).  Loihi-style and digital
figures are also given for the whole network (``scope = "network"``); the GPU figures exist only
for the STPN layer.
"""
from __future__ import annotations

import csv
import io
import math
from dataclasses import dataclass, field
from pathlib import Path

from memristor.params import DeviceParams
from mstpn.energy import constants as C
from mstpn.energy import models as M
from mstpn.energy.counts import RunCounts, published_game_counts
from mstpn_base.errors import ParameterError
from mstpn_base.io import atomic_path, atomic_write_json, atomic_write_text

MEMRISTIVE = "memristive"
#: the memristive synapses as the device run counted them (RunCounts.device): pulses sent, sum of V^2 G t_p, bias
MEASURED = "memristive-measured"
LOIHI = "loihi-style"
DIGITAL = "digital-fp32-45nm"
EVENT_INT = "event-int32-45nm"
A100 = {v: f"gpu-a100-{v}" for v in M.A100_VARIANTS}
H200 = {m: f"gpu-h200-{m}" for m in M.H200_FIGURES}
SCOPES = ("synaptic", "network")

#: relative tolerance of the published-table reproduction: the published figures carry 3
#: significant digits (35.6, 36.0 mJ) or 1 (0.4 mJ), and the game length is inferred as a whole
#: number of agent steps (730 for 730.6: 0.08%); 2% covers that rounding and nothing more
PUBLISHED_RTOL = 0.02


@dataclass(frozen=True)
class EnergyRow:
    """One energy term [J] of one backend in one layer; ``in_scope``: a memristive (compared) layer."""

    backend: str
    layer: str
    component: str
    energy_j: float
    in_scope: bool


@dataclass
class EnergyReport:
    """Per backend / layer / component energies of one run, with the assumptions behind them."""

    counts: RunCounts
    rows: list[EnergyRow]
    assumptions: list[str] = field(default_factory=list)

    @property
    def backends(self) -> list[str]:
        return list(dict.fromkeys(r.backend for r in self.rows))

    def total(self, backend: str, scope: str = "synaptic") -> float:
        """Total energy [J] of ``backend`` over the memristive layers (``synaptic``) or all layers
        it covers (``network``)."""
        if backend not in self.backends:
            raise ParameterError(f"unknown backend {backend!r}; this report has {self.backends}")
        if scope not in SCOPES:
            raise ParameterError(f"unknown scope {scope!r}; use one of {SCOPES}")
        return sum(r.energy_j for r in self.rows
                   if r.backend == backend and (scope == "network" or r.in_scope))

    def component(self, backend: str, component: str, scope: str = "synaptic") -> float:
        """Energy [J] of one component (e.g. memristive ``bias``) summed over layers."""
        comps = {r.component for r in self.rows if r.backend == backend}
        if backend not in self.backends or component not in comps:
            raise ParameterError(f"unknown component {component!r} of backend {backend!r}; "
                                 f"known: {sorted(comps) if comps else self.backends}")
        return sum(r.energy_j for r in self.rows if r.backend == backend and r.component == component
                   and (scope == "network" or r.in_scope))

    def measured_summary(self) -> dict | None:
        """The memristive layer measured in the device run beside the assumption-based row: pulses,
        pulse / bias / total energy [J] per game (this run) and per agent step, energy per pulse,
        and measured / assumed (None where the assumption gives 0).  None for an ideal run."""
        d = self.counts.device
        if d is None:
            return None
        steps = self.counts.steps

        def part(pulses, pulse_j, bias_j):
            total = pulse_j + bias_j
            per = (lambda x: x / steps) if steps else (lambda x: None)
            return {"pulses": pulses, "pulse_energy_J": pulse_j, "bias_energy_J": bias_j, "energy_J": total,
                    "energy_per_pulse_J": pulse_j / pulses if pulses else None,
                    "per_step": {"pulses": per(pulses), "pulse_energy_J": per(pulse_j),
                                 "bias_energy_J": per(bias_j), "energy_J": per(total)}}

        rows = [r for r in self.rows if r.backend == MEMRISTIVE and r.layer == d.layer]
        assumed = part(self.counts.layer(d.layer).update_pulses,
                       sum(r.energy_j for r in rows if r.component == "pulse"),
                       sum(r.energy_j for r in rows if r.component == "bias"))
        measured = part(d.pulses, d.pulse_energy_J, d.bias_energy_J)
        measured.update(potentiating=d.potentiating, depressing=d.depressing, duration_s=d.duration_s)
        ratio = {k: (measured[k] / assumed[k] if assumed[k] else None)
                 for k in ("pulses", "pulse_energy_J", "bias_energy_J", "energy_J")}
        return {"layer": d.layer, "backend": d.backend, "seed": d.seed, "devices_per_synapse": d.devices_per_synapse,
                "steps": steps, "assumed": assumed, "measured": measured, "measured_over_assumed": ratio}

    def format_measured(self) -> list[str]:
        """The measured-vs-assumed block of :meth:`format_table` (empty for an ideal run)."""
        m = self.measured_summary()
        if m is None:
            return []
        g = lambda x, fmt: "-" if x is None else format(x, fmt)  # noqa: E731
        seed = "" if m["seed"] is None else f", device seed {m['seed']}"
        lines = ["", f"Memristive layer {m['layer']}: assumption vs measured in the device run "
                     f"({m['backend'] or 'device run'}{seed}, {m['devices_per_synapse']} devices per synapse)",
                 f"{'':<34} {'pulses':>14} {'pulse [mJ]':>12} {'bias [mJ]':>12} {'total [mJ]':>12} {'pJ/pulse':>9}"]
        for label, key, per in (("assumed, per game", "assumed", False), ("measured, per game", "measured", False),
                                ("assumed, per step", "assumed", True), ("measured, per step", "measured", True)):
            v = m[key]["per_step"] if per else m[key]
            e_pp = m[key]["energy_per_pulse_J"]
            lines.append(f"{label:<34} {g(v['pulses'], '>14,.6g' if per else '>14,'):>14} "
                         f"{g(v['pulse_energy_J'] and v['pulse_energy_J'] * 1e3, '>12.4g')} "
                         f"{g(v['bias_energy_J'] and v['bias_energy_J'] * 1e3, '>12.4g')} "
                         f"{g(v['energy_J'] and v['energy_J'] * 1e3, '>12.4g')} {g(e_pp and e_pp * 1e12, '>9.4g')}")
        r = m["measured_over_assumed"]
        lines.append(f"{'measured / assumed':<34} {g(r['pulses'], '>13.4g') + 'x':>14} "
                     f"{g(r['pulse_energy_J'], '>11.4g') + 'x':>12} {g(r['bias_energy_J'], '>11.4g') + 'x':>12} "
                     f"{g(r['energy_J'], '>11.4g') + 'x':>12}")
        return lines

    def ratios(self) -> dict[str, float]:
        """Each backend's synaptic-scope total over the memristive total (x times more energy)."""
        ref = self.total(MEMRISTIVE) if MEMRISTIVE in self.backends else 0.0
        return {b: (self.total(b) / ref if ref > 0 else math.inf) for b in self.backends}

    # -- output --------------------------------------------------------------------------------
    def to_dict(self) -> dict:
        return {
            "schema": "mstpn.energy-report", "version": 1,
            "counts": self.counts.to_dict(),
            "rows": [dict(backend=r.backend, layer=r.layer, component=r.component,
                          energy_j=r.energy_j, in_scope=r.in_scope) for r in self.rows],
            "totals_j": {b: {s: self.total(b, s) for s in SCOPES} for b in self.backends},
            "ratios_vs_memristive": {b: (v if math.isfinite(v) else None) for b, v in self.ratios().items()},
            "measured": self.measured_summary(),
            "assumptions": list(self.assumptions),
        }

    def to_csv(self) -> str:
        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        w.writerow(["backend", "layer", "component", "energy_j", "in_scope"])
        for r in self.rows:
            w.writerow([r.backend, r.layer, r.component, f"{r.energy_j:.6e}", int(r.in_scope)])
        return buf.getvalue()

    def format_table(self) -> str:
        c = self.counts
        lines = [f"Energy of {c.steps} agent steps, {c.frames} frames = {c.duration_s:.2f} s "
                 f"({c.source or 'counts'})", "",
                 f"{'backend':<24} {'layer':<12} {'component':<15} {'energy [mJ]':>14}"]
        for r in self.rows:
            mark = "" if r.in_scope else "  (outside comparison)"
            lines.append(f"{r.backend:<24} {r.layer:<12} {r.component:<15} {r.energy_j * 1e3:>14.4f}{mark}")
        lines += ["", f"{'backend':<24} {'synaptic [mJ]':>14} {'network [mJ]':>14} {'x memristive':>13}"]
        ratios = self.ratios()
        for b in self.backends:
            ratio = f"{ratios[b]:>12.4g}x" if math.isfinite(ratios[b]) else f"{'-':>13}"
            lines.append(f"{b:<24} {self.total(b) * 1e3:>14.4f} {self.total(b, 'network') * 1e3:>14.4f} {ratio}")
        lines += self.format_measured()
        lines += ["", "Assumptions:"] + [f"  - {a}" for a in self.assumptions]
        return "\n".join(lines)

    def plot(self, path) -> None:
        """The energy figure, written atomically as PNG.

        Left: the memristive synapses of this run, bias and update-pulse energy stacked (linear
        mJ), beside the published game (Weilenmann et al. 2024: 35.6 mJ bias + 0.4 mJ pulses =
        36.0 mJ, hatched).  Right: every backend over the compared scope (the STPN layer's
        synaptic operations), its components stacked (log mJ), each bar labelled with what it
        includes; the publication's A100 figures as hatched reference bars; a whole-network bar
        only for the backends that model the whole network.
        """
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        from matplotlib.patches import Patch

        mj = 1e3
        wide = MEASURED in self.backends   # a third column: the device run's counted energy
        fig, (ax0, ax1) = plt.subplots(1, 2, figsize=(12.8 if wide else 12, 8.2),
                                       gridspec_kw=dict(width_ratios=[1.5 if wide else 1, 3.2]))
        small = 6.5 if wide else 8
        # -- memristive: bias vs pulses, this run against the published game -------------------
        bias_c, pulse_c, ref_c = "#4c72b0", "#dd8452", "white"
        cols = []
        if MEMRISTIVE in self.backends:
            comps = {r.component for r in self.rows if r.backend == MEMRISTIVE}
            b = self.component(MEMRISTIVE, "bias") * mj if "bias" in comps else 0.0
            q = self.component(MEMRISTIVE, "pulse") * mj if "pulse" in comps else 0.0
            cols.append((f"model, this run\n({self.counts.duration_s:.1f} s)", b, q, None))
        if MEASURED in self.backends:
            cols.append((f"measured in\nthe device run\n({self.counts.duration_s:.1f} s)",
                         self.component(MEASURED, "bias") * mj, self.component(MEASURED, "pulse") * mj, None))
        cols.append((f"published game\n({C.PUB_GAME_SECONDS.value:.1f} s)", C.PUB_BIAS_J.value * mj,
                     C.PUB_PULSE_J.value * mj, "//"))
        for i, (label, b, q, hatch) in enumerate(cols):
            ax0.bar(i, b, color=bias_c, hatch=hatch, edgecolor="black" if hatch else bias_c, alpha=0.55 if hatch else 1)
            ax0.bar(i, q, bottom=b, color=pulse_c, hatch=hatch, edgecolor="black" if hatch else pulse_c,
                    alpha=0.55 if hatch else 1)
            ax0.annotate(f"{b + q:.1f} mJ\n= {b:.1f} bias\n+ {q:.2f} pulses", (i, b + q), ha="center",
                         va="bottom", fontsize=small, xytext=(0, 2), textcoords="offset points")
        ax0.set_xticks(range(len(cols)))
        ax0.set_xticklabels([c[0] for c in cols], fontsize=small)
        ax0.set_ylabel("energy [mJ]")
        ax0.set_ylim(0, max(c[1] + c[2] for c in cols) * 1.35)
        ax0.set_title("memristive STPN synapses", fontsize=10)
        ax0.legend(handles=[Patch(color=bias_c, label="decay bias (0.6 V, whole game)"),
                            Patch(color=pulse_c, label="update pulses"),
                            Patch(facecolor=ref_c, edgecolor="black", hatch="//",
                                  label="published (Weilenmann et al. 2024)")],
                   fontsize=7, loc="upper left")
        # -- every backend, compared scope, components stacked (log) ------------------------------
        palette = {"bias": bias_c, "pulse": pulse_c, "synaptic": "#8c8c8c", "dynamic": "#c44e52",
                   "idle": "#f0b0b0", "synaptic_ops": "#55a868", "transport": "#a6d8b5",
                   "neuron_updates": "#2f6b3f", "plasticity": "#8172b3", "macs": "#937860",
                   "accumulate": "#da8bc3"}
        includes = {
            MEMRISTIVE: "STPN layer: bias + pulses (model)",
            MEASURED: "STPN layer: bias + pulses counted in the device run",
            LOIHI: "STPN layer: synops, transport, neuron + plastic updates",
            DIGITAL: "STPN layer: fp32 MACs + plastic updates",
            EVENT_INT: "STPN layer: one int32 add per synop",
        }
        for name in A100.values():
            includes[name] = "STPN layer synops: published A100, scaled"
        for name in self.backends:
            if name.startswith("gpu-h200") or name.startswith("gpu-measured"):
                includes[name] = "STPN layer step, measured: dynamic + idle"
        floor = 1e-3
        rows = []   # (label, [(component, mJ)], hatch, note)
        for name in self.backends:
            parts = {}
            for r in self.rows:
                if r.backend == name and r.in_scope:
                    parts[r.component] = parts.get(r.component, 0.0) + r.energy_j * mj
            rows.append((name, list(parts.items()), None, includes.get(name, "STPN layer")))
            if self.total(name, "network") > self.total(name) * (1 + 1e-9):
                rows.append((f"{name}, whole network", [("network", self.total(name, "network") * mj)], "..",
                             "conv layers, STPN, heads"))
        refs = [("published memristive, per game", [("bias", C.PUB_BIAS_J.value * mj), ("pulse", C.PUB_PULSE_J.value * mj)]),
                ("published A100 fp16 optimal, per game", [("synaptic", C.A100_FP16_OPTIMAL_J.value * mj)]),
                ("published A100 fp16 standard, per game", [("synaptic", C.A100_FP16_STANDARD_J.value * mj)])]
        for label, parts in refs:
            rows.append((label, parts, "//", f"Weilenmann et al. 2024, {C.PUB_GAME_SECONDS.value:.1f} s game"))
        ymax = max(sum(v for _, v in parts) for _, parts, _, _ in rows)
        for y, (label, parts, hatch, note) in enumerate(rows):
            done = 0.0
            for comp, v in parts:
                if v <= 0:
                    continue
                color = palette.get(comp, "#cccccc") if comp != "network" else "#e8e8e8"
                lo = max(done, floor)
                ax1.barh(y, done + v - lo, left=lo, height=0.7, color=color if hatch != "//" else "white",
                         hatch=hatch, edgecolor="black" if hatch else color)
                done += v
            txt = f"{done:,.1f}" if hatch == "//" else (f"{done:,.0f}" if done >= 100 else f"{done:.3g}")
            ax1.text(max(done, floor) * 1.3, y, f"{txt} mJ", va="center", fontsize=7)
        ax1.set_yticks(range(len(rows)))
        ax1.set_yticklabels([f"{r[0]}\n{r[3]}" for r in rows], fontsize=7)
        ax1.invert_yaxis()
        ax1.set_xscale("log")
        ax1.set_xlim(floor, ymax * 30)
        ax1.set_xlabel("energy [mJ] (log scale)")
        ax1.set_title(f"every backend, this run ({self.counts.steps} agent steps, {self.counts.duration_s:.1f} s "
                      "of game)\ncompared scope: the STPN layer's synaptic operations", fontsize=10)
        used = [c for c in palette if any(c == comp for _, parts, _, _ in rows for comp, _ in parts)]
        handles = [Patch(color=palette[c], label=c.replace("_", " ")) for c in used]
        handles += [Patch(facecolor="#e8e8e8", edgecolor="black", hatch="..",
                          label="whole network (where modelled)"),
                    Patch(facecolor="white", edgecolor="black", hatch="//", label="published reference")]
        ax1.legend(handles=handles, fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.08), ncol=5)
        ax1.grid(axis="x", alpha=0.3)
        fig.tight_layout()
        with atomic_path(path) as tmp:
            fig.savefig(tmp, format="png", dpi=110)
        plt.close(fig)

    def write(self, out_dir, stem: str = "energy") -> dict[str, Path]:
        """Write ``stem``.json, .csv, .txt and .png into ``out_dir`` (atomically); return the paths."""
        out = Path(out_dir)
        paths = {k: out / f"{stem}.{k}" for k in ("json", "csv", "txt", "png")}
        atomic_write_json(paths["json"], self.to_dict())
        atomic_write_text(paths["csv"], self.to_csv())
        atomic_write_text(paths["txt"], self.format_table() + "\n")
        self.plot(paths["png"])
        return paths


def energy_report(counts: RunCounts, params: DeviceParams | None = None,
                  settings: M.MemristiveSettings | None = None,
                  gpu_measured: dict[str, M.GpuStepFigures] | None = None) -> EnergyReport:
    """Energy of a run on every backend, per layer and component.

    ``params``: device parameters (default: the published preset); ``settings``: the memristive
    operating point (default: worst-case bias 0.6 V, G = 0 in the bias term, pulses at the
    reference conductance); ``gpu_measured``: per-step figures from benchmarks/gpu_energy.py
    (mode -> :class:`GpuStepFigures`), reported as ``gpu-measured-<mode>`` next to the H200 figures.
    """
    if not isinstance(counts, RunCounts):
        raise ParameterError(f"counts must be RunCounts, got {type(counts).__name__}")
    params = params or DeviceParams()
    s = (settings or M.MemristiveSettings()).resolved(params)
    rows: list[EnergyRow] = []
    scope = [l for l in counts.layers if l.memristive]
    for layer in scope:
        for comp, e in M.memristive_layer_energy(layer, counts.duration_s, params, s).items():
            rows.append(EnergyRow(MEMRISTIVE, layer.name, comp, e, True))
    if counts.device is not None:   # what the device run counted: sum of V^2 G t_p, and the bias
        rows += [EnergyRow(MEASURED, counts.device.layer, "bias", counts.device.bias_energy_J, True),
                 EnergyRow(MEASURED, counts.device.layer, "pulse", counts.device.pulse_energy_J, True)]
    for variant, name in A100.items():
        for layer in scope:
            rows.append(EnergyRow(name, layer.name, "synaptic",
                                  M.gpu_a100_energy(layer.n_synapses, counts.steps, variant), True))
    gpu_figs = {name: fig for mode, name in H200.items() for fig in [M.H200_FIGURES[mode]]}
    for mode, fig in (gpu_measured or {}).items():
        gpu_figs[f"gpu-measured-{mode}"] = fig
    for name, fig in gpu_figs.items():
        for layer in scope:
            for comp, e in M.gpu_step_energy(layer.n_synapses, counts.steps, fig).items():
                rows.append(EnergyRow(name, layer.name, comp, e, True))
    for name, fn in ((LOIHI, M.loihi_layer_energy), (DIGITAL, M.digital_layer_energy),
                     (EVENT_INT, M.event_accumulate_energy)):
        for layer in counts.layers:
            for comp, e in fn(layer).items():
                if comp == "plasticity" and layer.plastic_synapses == 0 and layer.update_pulses == 0:
                    continue  # not a plastic layer: no such component
                rows.append(EnergyRow(name, layer.name, comp, e, layer.memristive))
    return EnergyReport(counts, rows, assumptions(params, s, counts))


def assumptions(params: DeviceParams, s: M.MemristiveSettings, counts: RunCounts) -> list[str]:
    """The assumptions behind a report, in words (printed by the CLI, written to the JSON)."""
    out = [
        f"game duration = {counts.frames} frames / {counts.frame_rate_hz:g} Hz = {counts.duration_s:.3f} s; "
        f"bias energy scales with it",
        f"memristive bias: every device biased at V_b = {s.v_bias:g} V for the whole game; bias term "
        f"V_b^2 (G + g_leak) with G = {s.g_bias * 1e9:g} nS and g_leak = p_leak_ref / v_bias_max^2 = "
        f"{params.g_leak * 1e9:.3f} nS ({params.p_leak_ref * 1e9:g} nW at {params.v_bias_max:g} V, published)",
        f"memristive pulses: one pulse per plastic synapse per agent step in the dense STPN (fewer if the "
        f"counts say so), each V_p^2 G t_p with V_p = {s.v_pulse:g} V, t_p = {s.t_pulse * 1e6:g} us, "
        f"G = {s.g_pulse * 1e9:.3f} nS (reference conductance: mid-range g_lt + g_st_max/2)",
        f"{s.devices_per_synapse} device(s) per synapse",
        "GPU A100 (published, per game of 730 steps, 169,984 synapses) scaled linearly in steps and synapses",
        "GPU H200 (measured, STPN layer step, batch 1, fp32) scaled linearly in steps and synapses; "
        "'idle' = measured total - dynamic",
        "GPU, memristive: synaptic operations of the STPN layer only (conv, heads, neuron-side ops, "
        "peripherals, ADCs, array parasitics excluded, as the publication)",
        "Loihi-style: 23.6 pJ/synaptic op, 3.5 pJ/event transport, 81 pJ/neuron update (Davies 2018); "
        "plastic updates costed as the STPN rule's fp32 arithmetic (5 mult + 3 add at 45 nm = 21.2 pJ)",
        "digital fp32 45 nm: arithmetic only (MAC 4.6 pJ, update 21.2 pJ, Horowitz 2014), no memory "
        "access, so a lower bound (memory is >98% of the GPU's energy per the publication)",
        "event int32 45 nm: one int32 add (0.1 pJ) per synaptic op, a floor for event-driven digital",
    ]
    if counts.device is not None:
        d = counts.device
        out.append(f"memristive-measured: counted in the device run ({d.backend or 'device run'}, device seed "
                   f"{d.seed}, {d.devices_per_synapse} devices per synapse): pulse energy = sum of V_p^2 G t_p over "
                   f"the {d.pulses:,} pulses sent (G = g_lt + g_st just before each, width from its efficacy), bias "
                   "energy = sum over every device and step of its own bias energy (its V_b, its G, the relaxation "
                   "integrated exactly); the device parameters are the model's (the device block's DeviceParams), "
                   "not fitted to a device beyond what memristor.fit does")
    sizes = {l.n_synapses for l in counts.layers if l.memristive}
    if sizes - {int(C.PONG_SYNAPSES.value)}:
        out.append(f"memristive layer size(s) {sorted(sizes)} differ from the published 169,984: GPU "
                   f"figures extrapolated linearly")
    return out


# -- the publication's table -----------------------------------------------------------------------
@dataclass(frozen=True)
class ReproRow:
    """One published figure next to the model's value (same unit)."""

    quantity: str
    unit: str
    published: float
    model: float

    @property
    def rel_err(self) -> float:
        return (self.model - self.published) / self.published

    @property
    def ok(self) -> bool:
        return abs(self.rel_err) <= PUBLISHED_RTOL


@dataclass
class PublishedReproduction:
    """The publication's energy table reproduced from the model (``rows``), with extra figures
    the model gives that the publication does not state (``extra``: name -> (value, unit))."""

    rows: list[ReproRow]
    extra: dict[str, tuple[float, str]]
    report: EnergyReport

    @property
    def ok(self) -> bool:
        return all(r.ok for r in self.rows)

    def row(self, quantity: str) -> ReproRow:
        for r in self.rows:
            if r.quantity == quantity:
                return r
        raise ParameterError(f"no row {quantity!r}")

    def format_table(self) -> str:
        lines = [f"Published energy table ({C.WEILENMANN}) reproduced from the model; "
                 f"tolerance {PUBLISHED_RTOL:.0%}", "",
                 f"{'quantity':<42} {'published':>11} {'model':>11} {'unit':<5} {'rel. err':>9}  ok"]
        for r in self.rows:
            lines.append(f"{r.quantity:<42} {r.published:>11.1f} {r.model:>11.2f} {r.unit:<5} "
                         f"{r.rel_err:>+9.2%}  {'yes' if r.ok else 'NO'}")
        lines += ["", "Model figures the publication does not state:"]
        for k, (v, unit) in self.extra.items():
            lines.append(f"  {k:<60} {v:>12.4g} {unit}")
        lines += ["", "Assumptions:"] + [f"  - {a}" for a in self.report.assumptions]
        return "\n".join(lines)

    def to_dict(self) -> dict:
        return {
            "schema": "mstpn.energy-published", "version": 1, "tolerance": PUBLISHED_RTOL,
            "ok": self.ok,
            "rows": [dict(quantity=r.quantity, unit=r.unit, published=r.published, model=r.model,
                          rel_err=r.rel_err, ok=r.ok) for r in self.rows],
            "extra": {k: {"value": v, "unit": u} for k, (v, u) in self.extra.items()},
            "assumptions": self.report.assumptions,
        }


def published_reproduction(params: DeviceParams | None = None) -> PublishedReproduction:
    """Reproduce 35.6 mJ bias + 0.4 mJ pulses = 36.0 mJ and the 96x / 966x ratios for the
    169,984-synapse STPN layer over the publication's game (730 steps, 48.67 s)."""
    params = params or DeviceParams()
    counts = published_game_counts(stpn_only=True)
    rep = energy_report(counts, params)
    bias, pulse, total = rep.component(MEMRISTIVE, "bias"), rep.component(MEMRISTIVE, "pulse"), rep.total(MEMRISTIVE)
    opt, std = rep.total(A100["fp16-optimal"]), rep.total(A100["fp16-standard"])
    rows = [
        ReproRow("memristive bias (G = 0, 0.6 V)", "mJ", C.PUB_BIAS_J.value * 1e3, bias * 1e3),
        ReproRow("memristive update pulses", "mJ", C.PUB_PULSE_J.value * 1e3, pulse * 1e3),
        ReproRow("memristive total", "mJ", C.PUB_TOTAL_J.value * 1e3, total * 1e3),
        ReproRow("A100 fp16 optimal", "mJ", C.A100_FP16_OPTIMAL_J.value * 1e3, opt * 1e3),
        ReproRow("A100 fp16 standard", "mJ", C.A100_FP16_STANDARD_J.value * 1e3, std * 1e3),
        ReproRow("ratio A100 fp16 optimal / memristive", "x", C.PUB_RATIO_OPTIMAL.value, opt / total),
        ReproRow("ratio A100 fp16 standard / memristive", "x", C.PUB_RATIO_STANDARD.value, std / total),
    ]
    s = M.MemristiveSettings().resolved(params)
    g_ref = s.g_pulse
    layer = counts.layers[0]
    bias_g = M.memristive_layer_energy(layer, counts.duration_s, params,
                                       M.MemristiveSettings(g_bias=g_ref))["bias"]
    extra = {
        "game duration [s] (730 steps x 4 frames / 60 Hz)": (counts.duration_s, "s"),
        "game duration implied by 35.6 mJ / (4.3 nW x 169,984)": (C.PUB_GAME_SECONDS.value, "s"),
        "update pulses (one per synapse per step)": (float(layer.update_pulses), "pulses"),
        "reference conductance at pulse time": (g_ref * 1e9, "nS"),
        "energy per pulse": (M.pulse_energy(s.v_pulse, g_ref, s.t_pulse) * 1e12, "pJ"),
        "bias power per synapse (G = 0)": (M.bias_power(params, s.v_bias) * 1e9, "nW"),
        f"bias energy with V_b^2 G included, G = {g_ref * 1e9:.2f} nS": (bias_g * 1e3, "mJ"),
        "A100 fp32 standard / memristive": (rep.total(A100["fp32-standard"]) / total, "x"),
        "A100 fp32 optimal / memristive": (rep.total(A100["fp32-optimal"]) / total, "x"),
        "H200 eager (measured, incl. idle) / memristive": (rep.total(H200["eager"]) / total, "x"),
        "H200 CUDA graph (measured, incl. idle) / memristive": (rep.total(H200["cudagraph"]) / total, "x"),
        "H200 CUDA graph dynamic only / memristive": (rep.component(H200["cudagraph"], "dynamic") / total, "x"),
        "Loihi-style / memristive": (rep.total(LOIHI) / total, "x"),
        "digital fp32 45 nm arithmetic / memristive": (rep.total(DIGITAL) / total, "x"),
    }
    return PublishedReproduction(rows, extra, rep)
