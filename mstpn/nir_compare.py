"""``mstpn nir-run GRAPH``: a plain NIR graph on several backends, spike-time agreement per node.

The NumPy executor (:mod:`conversion.nir_graph`) is the reference; every other backend runs the
same graph and input and is compared to the reference run in that backend's own conventions
(docs/nir.md): snnTorch through its importer (dt = 1e-4, forward Euler, reset to zero), Brian2
in the asked dt / integration / reset, Lava (its LIF, Dense and Conv processes) in the asked dt /
integration with reset to v_reset and its synapses' one-step delay (``delay="synapse"``).  Reports, per backend and node, spike counts, mismatching
(step, unit) entries, the first step that differs, and the largest voltage difference (absolute
and relative to the node's largest |v|).  Writes ``nir_run.md`` and ``nir_run.json`` atomically.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from conversion import nir_semantics as sem
from conversion.nir_graph import DELAYS, NirProgram, agreement, synthetic_input
from mstpn_base.cliargs import add_list, add_out
from mstpn_base.errors import DataFormatError, MstpnError, ParameterError
from mstpn_base.io import atomic_write_json, atomic_write_text, ensure_dir

BACKENDS = ("numpy", "snntorch", "brian2", "lava")
#: voltage tolerance, relative to the node's largest |v| (or 1): float64 backends
#: (Brian2, Lava: another summation order) / float32 backends (snnTorch)
REL_TOL = {"brian2": 1e-9, "lava": 1e-9, "snntorch": 1e-5}


def run_backend(name: str, program: NirProgram, x, dt, integration, reset, delay):
    """One backend's record (numpy: the reference in the asked conventions)."""
    if name == "numpy":
        return program.run(x, dt=dt, integration=integration, reset=reset, delay=delay)
    if name == "snntorch":
        from snn_agent.nir_snntorch import run_snntorch

        return run_snntorch(program, x)
    if name == "brian2":
        from brian_models.nir_brian2 import run_brian2

        return run_brian2(program, x, dt=dt, integration=integration, reset=reset, delay=delay)
    if name == "lava":
        from lava_procs.nir_lava import run_lava

        return run_lava(program, x, dt=dt, integration=integration)
    raise ParameterError(f"backend {name!r}: choose from {', '.join(BACKENDS)}")


def compare(program: NirProgram, x, backends, dt, integration="exact", reset="zero", delay="none",
            records: dict | None = None) -> dict:
    """{backend: {"conventions", "nodes": agreement rows, "agrees"} or {"error"}}; each backend is
    compared to the NumPy reference run in that backend's conventions.  ``records``, if given, is
    filled with {backend: (reference record, backend record)}."""
    result = {}
    for name in backends:
        try:
            rec = run_backend(name, program, x, dt, integration, reset, delay)
        except MstpnError as exc:
            result[name] = {"error": str(exc)}
            continue
        ref = program.run(x, dt=rec.dt, integration=rec.integration, reset=rec.reset, delay=rec.delay)
        if records is not None:
            records[name] = (ref, rec)
        rows = agreement(ref, rec)
        tol = REL_TOL.get(name, 0.0)
        ok = True
        for row in rows.values():
            for var in ("v", "i", "out"):
                if f"max_abs_err_{var}" in row:
                    rel = row[f"max_abs_err_{var}"] / max(1.0, row[f"max_abs_{var}"])
                    row[f"rel_err_{var}"] = rel
                    ok &= rel <= tol
            ok &= row.get("spike_mismatches", 0) == 0
        result[name] = {"backend": rec.backend, "dt": rec.dt, "integration": rec.integration, "reset": rec.reset,
                        "delay": rec.delay, "rel_tolerance_v": tol, "agrees": bool(ok), "nodes": rows,
                        "built": dict(rec.built)}
    return result


def markdown(graph_name: str, program: NirProgram, steps: int, result: dict) -> str:
    lines = [f"# NIR graph `{graph_name}` on {', '.join(result)}", "",
             f"{len(program.nodes)} nodes ({', '.join(sorted(set(program.kinds.values())))}), input "
             f"{program.input_shape}, {steps} steps; back edges (one step of delay): "
             f"{', '.join(f'{a} -> {b}' for a, b in sorted(program.back_edges)) or 'none'}.", "",
             "Each backend is compared to the NumPy reference run in the backend's conventions.", ""]
    for name, res in result.items():
        lines.append(f"## {name}")
        lines.append("")
        if "error" in res:
            lines += [f"not run: {res['error']}", ""]
            continue
        lines += [f"{res['backend']}: dt = {res['dt']:g}, {res['integration']}, reset {res['reset']}, delay "
                  f"{res['delay']}; voltages within {res['rel_tolerance_v']:g} of max(1, max |v|): "
                  f"**{'agrees' if res['agrees'] else 'DISAGREES'}**", "",
                  "| node | kind | spikes (ref / backend) | mismatching (step, unit) | first differing step | max abs err v | rel err v |",
                  "|---|---|---|---|---|---|---|"]
        for node, row in res["nodes"].items():
            if row["kind"] not in sem.NEURONS and row["kind"] != "Output":
                continue
            var = "v" if row["kind"] in sem.NEURONS and "max_abs_err_v" in row else "out"
            spikes = f"{row['spikes_ref']} / {row['spikes_other']}" if "spikes_ref" in row else "-"
            first = row.get("first_mismatch_step")
            lines.append(f"| {node} | {row['kind']} | {spikes} | {row.get('spike_mismatches', '-')} | "
                         f"{'-' if first is None else first} | {row.get(f'max_abs_err_{var}', float('nan')):.3g}"
                         f"{'' if var == 'v' else ' (out)'} | {row.get(f'rel_err_{var}', float('nan')):.3g} |")
        if res.get("built") and name != "numpy":
            runs = {}
            for node, how in res["built"].items():
                runs.setdefault(how, []).append(node)
            lines += ["", "Runs as: " + "; ".join(f"{how}: {', '.join(nodes)}" for how, nodes in runs.items())]
        lines.append("")
    return "\n".join(lines)


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "nir-run", help="run a plain NIR graph on several backends and compare spike times",
        description="Run a plain NIR graph (nir.read) on the NumPy reference and other backends with the "
                    "same input; report spike-time agreement and voltage errors per node (Markdown + JSON).")
    p.add_argument("graph", type=Path, help="NIR file (HDF5, nir.write)")
    p.add_argument("--input", type=Path, help="input .npy (T, *input shape); default: Bernoulli spike trains")
    p.add_argument("--steps", type=int, default=200, help="steps of the default input")
    p.add_argument("--rate", type=float, default=0.2, help="spike probability per step of the default input")
    p.add_argument("--seed", type=int, default=0, help="seed of the default input")
    add_list(p, "--backends", default=list(BACKENDS), choices=BACKENDS, metavar="B",
             help=f"backends to run the graph on, of {', '.join(BACKENDS)}")
    p.add_argument("--dt", type=float, default=1e-4, help="time step [s] (snnTorch's importer uses 1e-4)")
    p.add_argument("--integration", choices=sem.INTEGRATIONS, default="exact",
                   help="exact (exponential Euler) or euler (forward Euler) integration of the neuron ODEs")
    p.add_argument("--reset", choices=sem.RESETS, default="zero",
                   help="after a spike: zero (to v_reset, as NIR states) or subtract (v -= v_threshold)")
    p.add_argument("--delay", choices=DELAYS, default="none",
                   help="none: no delay on feed-forward edges (a cycle's back edge carries the previous step); "
                        "step: one step on every edge; synapse: one step on the edges leaving Affine / "
                        "Linear / Conv (Lava's convention, which the lava backend always uses)")
    add_out(p, default=Path("out/nir_run"), metavar="DIR", help="folder for nir_run.md / nir_run.json")
    p.set_defaults(func=cmd_nir_run)


def cmd_nir_run(args: argparse.Namespace) -> int:
    if args.steps < 1:
        raise ParameterError(f"--steps must be >= 1, got {args.steps}")
    if not 0 <= args.rate <= 1:
        raise ParameterError(f"--rate must be a probability in [0, 1], got {args.rate}")
    program = NirProgram(args.graph)
    if args.input is not None:
        try:
            x = np.load(args.input, allow_pickle=False)
        except (OSError, ValueError) as exc:
            raise DataFormatError(f"{args.input}: not a .npy array ({exc})") from None
    else:
        x = synthetic_input(program.input_shape, args.steps, args.rate, args.seed)
    result = compare(program, x, list(dict.fromkeys(args.backends)), args.dt, args.integration, args.reset, args.delay)
    out = ensure_dir(args.out)
    text = markdown(args.graph.name, program, int(np.shape(x)[0]), result)
    atomic_write_text(out / "nir_run.md", text + "\n")
    atomic_write_json(out / "nir_run.json", {"graph": str(args.graph), "steps": int(np.shape(x)[0]),
                                             "input_shape": list(program.input_shape), "backends": result})
    print(text)
    return 0



# -- mstpn compare GRAPH.nir: a plain NIR graph given to the comparison command ---------------------------
PLOTS = ("spike_raster.png", "voltage.png", "voltage_error.png")


def is_plain_graph(path) -> bool:
    """True for an HDF5 file holding a NIR graph (``/node``) without the project's extension (``/mstpn``)."""
    import h5py

    try:
        with h5py.File(path, "r") as f:
            return "node" in f and "mstpn" not in f
    except (OSError, ValueError):
        return False


def add_graph_options(p) -> None:
    """The options of ``mstpn compare`` that apply when NET is a plain NIR graph."""
    g = p.add_argument_group("a plain NIR graph as NET (no project nodes: compared as by mstpn nir-run)")
    g.add_argument("--input", type=Path, help="input .npy (T, *input shape): spike trains or currents "
                                              "(default: Bernoulli spike trains of --frames steps, seed --seed)")
    g.add_argument("--rate", type=float, default=0.2, help="spike probability per step of the default input")
    g.add_argument("--dt", type=float, default=1e-4, help="time step [s] (snnTorch's importer uses 1e-4)")
    g.add_argument("--integration", choices=sem.INTEGRATIONS, default="exact",
                   help="exact (exponential Euler) or euler (forward Euler) integration of the neuron ODEs")
    g.add_argument("--reset", choices=sem.RESETS, default="zero",
                   help="after a spike: zero (to v_reset, as NIR states) or subtract (v -= v_threshold)")


def load_input(path, program: NirProgram, steps: int, rate: float, seed: int):
    """The input array: ``path`` (.npy) or the default Bernoulli spike trains."""
    if path is None:
        if steps < 1:
            raise ParameterError(f"the number of steps must be >= 1, got {steps}")
        if not 0 <= rate <= 1:
            raise ParameterError(f"--rate must be a probability in [0, 1], got {rate}")
        return synthetic_input(program.input_shape, steps, rate, seed)
    try:
        x = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise DataFormatError(f"{path}: not a .npy array ({exc})") from None
    if x.dtype.kind not in "biuf":
        raise DataFormatError(f"{path}: a numeric array is needed, got dtype {x.dtype}")
    if x.ndim < 1 or tuple(x.shape[1:]) != program.input_shape or x.shape[0] < 1:
        raise DataFormatError(f"{path}: input of shape {x.shape}, expected (T, "
                              f"{', '.join(map(str, program.input_shape))})")
    if not np.all(np.isfinite(x)):
        raise DataFormatError(f"{path}: the input holds NaN or inf")
    return x.astype(np.float64)


def plots(records: dict, out: Path) -> list:
    """Spike rasters, voltage traces and voltage errors of each backend against its reference."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from mstpn_base.io import atomic_path

    files = []
    runs = {b: rr for b, rr in records.items() if b != "numpy"} or dict(records)
    if not runs:
        return files
    ref0 = next(iter(runs.values()))[0]
    spiking = [n for n, k in ref0.kinds.items() if k in sem.SPIKING and n in ref0.data][:4]
    with_v = [n for n, k in ref0.kinds.items() if "v" in ref0.data.get(n, {})]

    def save(fig, name):
        fig.tight_layout()
        with atomic_path(out / name) as p:
            fig.savefig(p, dpi=80)
        plt.close(fig)
        files.append(name)

    if spiking:
        fig, axes = plt.subplots(len(runs), len(spiking), figsize=(3.2 * len(spiking), 2.4 * len(runs)), squeeze=False)
        for row, (b, (ref, rec)) in zip(axes, runs.items()):
            for ax, n in zip(row, spiking):
                t_ms = 1e3 * ref.dt
                sr = ref.data[n]["out"].reshape(len(ref.data[n]["out"]), -1) > 0.5
                tr, ur = np.nonzero(sr)
                ax.scatter(tr * t_ms, ur, s=12, facecolors="none", edgecolors="0.6", label="numpy (reference)")
                if n in rec.data:
                    so = np.asarray(rec.data[n]["out"]).reshape(sr.shape) > 0.5
                    to, uo = np.nonzero(so)
                    ax.scatter(to * t_ms, uo, s=3, c="C3", label=b)
                    ax.set_title(f"{b}: {n} ({int((so != sr).sum())} mismatches)", fontsize=8)
                ax.set_xlabel("time [ms]")
                ax.set_ylabel("neuron")
        axes[0][0].legend(fontsize=6, loc="upper right")
        save(fig, "spike_raster.png")
    if with_v:
        n = with_v[0]
        fig, ax = plt.subplots(figsize=(6, 3))
        for k, (b, (ref, rec)) in enumerate(runs.items()):
            t = 1e3 * ref.dt * np.arange(len(ref.data[n]["v"]))
            vr = ref.data[n]["v"].reshape(len(t), -1)[:, :3]
            ax.plot(t, vr, color=f"C{k}", ls="--", lw=0.8)
            if n in rec.data and "v" in rec.data[n]:
                ax.plot(t, np.asarray(rec.data[n]["v"]).reshape(len(t), -1)[:, :3], color=f"C{k}", lw=1.5,
                        alpha=0.6, label=f"{b} (dashed: its numpy reference)")
        ax.set_xlabel("time [ms]")
        ax.set_ylabel(f"v of {n} [NIR voltage units]")
        ax.set_title(f"membrane voltage, first 3 neurons of {n}", fontsize=8)
        handles, labels = ax.get_legend_handles_labels()
        ax.legend(dict(zip(labels, handles)).values(), dict(zip(labels, handles)).keys(), fontsize=6)
        save(fig, "voltage.png")
        fig, ax = plt.subplots(figsize=(6, 3))
        for b, (ref, rec) in runs.items():
            errs = [np.abs(ref.data[m]["v"] - np.asarray(rec.data[m]["v"]).reshape(ref.data[m]["v"].shape))
                    .reshape(len(ref.data[m]["v"]), -1).max(axis=1) for m in with_v if "v" in rec.data.get(m, {})]
            if errs:
                t = 1e3 * ref.dt * np.arange(len(errs[0]))
                ax.semilogy(t, np.maximum(np.max(errs, axis=0), 1e-17), label=b)
        ax.set_xlabel("time [ms]")
        ax.set_ylabel("max |v - v_numpy| [NIR voltage units]")
        ax.set_title("voltage error against the NumPy reference (1e-17: equal)", fontsize=8)
        ax.legend(fontsize=7)
        save(fig, "voltage_error.png")
    for name in PLOTS:
        if name not in files:
            (out / name).unlink(missing_ok=True)
    return files


def cmd_compare_graph(args: argparse.Namespace) -> int:
    """``mstpn compare GRAPH.nir``: the plain graph on the NIR backends; report.md, results.json, plots."""
    from mstpn_base.cliargs import json_output, print_json

    backends = list(dict.fromkeys(args.backends or BACKENDS))
    bad = [b for b in backends if b not in BACKENDS]
    if bad:
        raise ParameterError(f"backend(s) {', '.join(bad)} cannot run a plain NIR graph (choose from "
                             f"{', '.join(BACKENDS)})")
    program = NirProgram(args.net)
    x = load_input(args.input, program, args.frames, args.rate, args.seed)
    with json_output(args.json):
        records = {}
        result = compare(program, x, backends, args.dt, args.integration, args.reset, "none", records)
        out = ensure_dir(args.out)
        files = plots(records, out)
        ok = all(r.get("agrees", True) for r in result.values())
        text = markdown(Path(args.net).name, program, int(x.shape[0]), result)
        text += "\n" + "\n".join(f"![{f}]({f})" for f in files) + "\n"
        atomic_write_text(out / "report.md", text)
        payload = {"net": str(args.net), "kind": "nir-graph", "ok": ok, "steps": int(x.shape[0]),
                   "input": str(args.input) if args.input else f"bernoulli(rate={args.rate}, seed={args.seed})",
                   "input_shape": list(program.input_shape), "plots": files, "backends": result}
        atomic_write_json(out / "results.json", payload)
        if not args.json:
            print(text)
        print(f"report: {out / 'report.md'}")
    if args.json:
        print_json(payload)
    return 0 if ok else 1
