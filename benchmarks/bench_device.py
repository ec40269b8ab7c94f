"""Wall time of each characterisation protocol on each available device backend, in one process.

    .venv/bin/python benchmarks/bench_device.py [--backends B ...] [--protocols P ...] [--repeat N]

Each backend first runs one untimed warm-up (imports, Brian2 code generation / cython compilation,
Lava compilation of the process models), then each protocol is simulated ``--repeat`` times and the
fastest run is reported (simulate call only: build and analysis excluded), with the ratio to the
NumPy reference measured in the same process.  Unavailable backends are listed and skipped.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from memristor import protocols as pr  # noqa: E402
from mstpn_base.registry import device_backends, device_simulator  # noqa: E402
from memristor.params import DeviceParams  # noqa: E402
from mstpn_base.errors import BackendUnavailableError  # noqa: E402


def time_backend(backend: str, protocols, params, repeat: int) -> dict[str, float]:
    """Best-of-``repeat`` simulate wall time [s] per protocol (after one warm-up run)."""
    sim = device_simulator(backend)
    warm = pr.PROTOCOLS["ppf"].build(params, 0, True)
    sim(warm[0], warm[1], g_lt0=warm[2])
    out = {}
    for name in protocols:
        batch, drive, g0 = pr.PROTOCOLS[name].build(params, 0, True)
        best = float("inf")
        for _ in range(repeat):
            t0 = time.perf_counter()
            sim(batch, drive, g_lt0=g0)
            best = min(best, time.perf_counter() - t0)
        out[name] = best
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--backends", nargs="+", default=device_backends(), choices=device_backends())
    ap.add_argument("--protocols", nargs="+", default=list(pr.PROTOCOLS), choices=list(pr.PROTOCOLS))
    ap.add_argument("--repeat", type=int, default=3, help="runs per protocol, fastest reported (default 3)")
    args = ap.parse_args(argv)
    params = DeviceParams()
    backends = ["numpy"] + [b for b in args.backends if b != "numpy"]
    times = {}
    for b in backends:
        try:
            times[b] = time_backend(b, args.protocols, params, args.repeat)
        except BackendUnavailableError as exc:
            print(f"skipped {b}: {exc}", file=sys.stderr)
        print(f"timed {b}", file=sys.stderr, flush=True)
    sizes = {n: pr.PROTOCOLS[n].build(params, 0, False) for n in args.protocols}
    head = f"{'protocol':<15} {'steps x dev':>11} " + " ".join(f"{b:>22}" for b in times)
    print(head)
    print("-" * len(head))
    for n in args.protocols:
        batch, drive, _ = sizes[n]
        ref_t = times["numpy"][n]
        cells = " ".join(f"{times[b][n] * 1e3:>10.1f} ms ({times[b][n] / ref_t:>6.1f}x)" for b in times)
        print(f"{n:<15} {f'{drive.n_steps}x{batch.n}':>11} {cells}")
    total = {b: sum(t.values()) for b, t in times.items()}
    print(f"{'total':<15} {'':>11} " + " ".join(
        f"{total[b] * 1e3:>10.1f} ms ({total[b] / total['numpy']:>6.1f}x)" for b in times))
    print("(wall time of simulate per protocol, best of %d; ratio = time / NumPy reference)" % args.repeat)
    return 0


if __name__ == "__main__":
    sys.exit(main())
