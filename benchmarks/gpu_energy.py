"""Measure the GPU energy of the STPN layer step (169,984 synapses, batch 1, fp32) and of the
whole Pong policy step, eager PyTorch and CUDA graph, with NVML's total-energy counter; the idle
draw is measured separately.  Writes a small JSON file (schema ``mstpn.gpu-energy``) that
``mstpn energy --gpu-results FILE`` reads, with the command that produced it.

    python benchmarks/gpu_energy.py --out results/gpu_energy.json     # ~1 minute on a GPU

Needs an NVIDIA GPU (Volta or newer), a CUDA build of PyTorch and ``pip install nvidia-ml-py``;
otherwise it exits with status 2 and says which is missing.  Method: mstpn/energy/gpu.py.
"""
from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mstpn.energy.gpu import run_benchmark  # noqa: E402
from mstpn_base.errors import MstpnError  # noqa: E402
from mstpn_base.io import atomic_write_json  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=10.0, help="measuring window per case [s] (default 10)")
    ap.add_argument("--idle-seconds", type=float, default=10.0, help="idle window [s] (default 10)")
    ap.add_argument("--gpu", type=int, default=0, help="GPU index (default 0)")
    ap.add_argument("--out", default="results/gpu_energy.json", help="output JSON (default %(default)s)")
    args = ap.parse_args(argv)
    command = shlex.join(["python", "benchmarks/gpu_energy.py", *(sys.argv[1:] if argv is None else argv)])
    try:
        res = run_benchmark(args.seconds, args.idle_seconds, args.gpu, command)
    except MstpnError as exc:
        print(f"gpu_energy: error: {exc}", file=sys.stderr)
        return 2
    atomic_write_json(args.out, res)
    print(f"idle {res['idle_w']:.1f} W on {res['gpu']}")
    for case, modes in res["cases"].items():
        for mode, r in modes.items():
            print(f"{case:<11} {mode:<10} {r['total_j_per_step'] * 1e3:8.3f} mJ/step total "
                  f"{r['dynamic_j_per_step'] * 1e3:8.3f} mJ/step dynamic {r['steps_per_s']:9.0f} steps/s")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
