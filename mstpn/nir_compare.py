"""``mstpn nir-run GRAPH``: a plain NIR graph on several backends, spike-time agreement per node.

The NumPy executor (:mod:`conversion.nir_graph`) is the reference; every other backend runs the
same graph and input and is compared to the reference run in that backend's own conventions
(docs/nir.md): snnTorch through its importer (dt = 1e-4, forward Euler, reset to zero), Brian2
in the asked dt / integration / reset.  Reports, per backend and node, spike counts, mismatching
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

BACKENDS = ("numpy", "snntorch", "brian2")
#: voltage tolerance, relative to the node's largest |v| (or 1): float64 backends
#: (Brian2: another summation order) / float32 backends (snnTorch)
REL_TOL = {"brian2": 1e-9, "snntorch": 1e-5}


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
    raise ParameterError(f"backend {name!r}: choose from {', '.join(BACKENDS)}")


def compare(program: NirProgram, x, backends, dt, integration="exact", reset="zero", delay="none") -> dict:
    """{backend: {"conventions", "nodes": agreement rows, "agrees"} or {"error"}}; each backend is
    compared to the NumPy reference run in that backend's conventions."""
    result = {}
    for name in backends:
        try:
            rec = run_backend(name, program, x, dt, integration, reset, delay)
        except MstpnError as exc:
            result[name] = {"error": str(exc)}
            continue
        ref = program.run(x, dt=rec.dt, integration=rec.integration, reset=rec.reset, delay=rec.delay)
        rows = agreement(ref, rec)
        tol = REL_TOL.get(name, 0.0)
        ok = True
        for row in rows.values():
            for var in ("v", "i"):
                if f"max_abs_err_{var}" in row:
                    rel = row[f"max_abs_err_{var}"] / max(1.0, row[f"max_abs_{var}"])
                    row[f"rel_err_{var}"] = rel
                    ok &= rel <= tol
            ok &= row.get("spike_mismatches", 0) == 0
        result[name] = {"backend": rec.backend, "dt": rec.dt, "integration": rec.integration, "reset": rec.reset,
                        "delay": rec.delay, "rel_tolerance_v": tol, "agrees": bool(ok), "nodes": rows}
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
            if row["kind"] not in sem.NEURONS:
                continue
            spikes = f"{row['spikes_ref']} / {row['spikes_other']}" if "spikes_ref" in row else "-"
            first = row.get("first_mismatch_step")
            lines.append(f"| {node} | {row['kind']} | {spikes} | {row.get('spike_mismatches', '-')} | "
                         f"{'-' if first is None else first} | {row.get('max_abs_err_v', float('nan')):.3g} | "
                         f"{row.get('rel_err_v', float('nan')):.3g} |")
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
                        "step: one step on every edge (NumPy only)")
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

