"""Cross-simulator comparison of a converted network (the ``mstpn compare`` job).

Every backend of :mod:`mstpn_base.registry` builds a runner from one converted network (the
contract is :mod:`conversion.backend`).  :func:`compare_sequence` runs one recorded observation
sequence on each backend and measures, against the PyTorch policy (and, for fixed-point
backends, against ``numpy-fixed``): action agreement, the error of every layer's activation,
events and synaptic operations per layer, frames per second.  Full games are played with
:func:`snn_agent.play.play_game`; :mod:`mstpn.compare_report` runs the whole job and writes its report.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from conversion.backend import UnsupportedNetworkError
from mstpn_base import registry
from mstpn_base.errors import BackendUnavailableError, DataFormatError, MstpnError

#: acceptance thresholds: fraction of frames on which a backend picks PyTorch's greedy action
FLOAT_ACTION_AGREEMENT = 0.99
FIXED_ACTION_AGREEMENT = 0.97


# -- runs ----------------------------------------------------------------------------------------
@dataclass
class RunResult:
    backend: str
    logits: np.ndarray | None = None          # (T, A)
    acts: dict = field(default_factory=dict)  # layer -> (T, n)
    events: dict = field(default_factory=dict)   # layer -> (T,)
    synops: dict = field(default_factory=dict)   # layer -> (T,)
    raw: dict = field(default_factory=dict)
    seconds: float = 0.0
    build_seconds: float = 0.0
    error: str | None = None

    @property
    def frames(self) -> int:
        return 0 if self.logits is None else len(self.logits)

    @property
    def fps(self) -> float:
        return self.frames / self.seconds if self.seconds > 0 else float("nan")

    @property
    def actions(self) -> np.ndarray:
        return np.argmax(self.logits, axis=1)


def run_sequence(runner, frames: np.ndarray, name: str | None = None, keep_acts: bool = True) -> RunResult:
    """Run ``frames`` (T, 84, 84) from a reset; collect logits, activations, events, synops."""
    res = RunResult(name or getattr(runner, "name", "?"))
    runner.reset()
    logits, acts, events, synops, raw = [], {}, {}, {}, {}
    t0 = time.perf_counter()
    # sequence backends (Brian2 cpp_standalone) run the whole recording at once
    outs = runner.run_frames(frames) if hasattr(runner, "run_frames") else map(runner.step, frames)
    for out in outs:
        logits.append(np.asarray(out.logits, np.float64))
        for store, src in ((acts, out.acts if keep_acts else {}), (events, out.events),
                           (synops, out.synops), (raw, out.raw)):
            for k, v in src.items():
                store.setdefault(k, []).append(np.asarray(v))
    res.seconds = time.perf_counter() - t0
    res.logits = np.stack(logits)
    res.acts = {k: np.stack(v) for k, v in acts.items()}
    res.events = {k: np.asarray(v) for k, v in events.items()}
    res.synops = {k: np.asarray(v) for k, v in synops.items()}
    res.raw = {k: np.stack(v) for k, v in raw.items()}
    return res


# -- comparison ----------------------------------------------------------------------------------
@dataclass
class Comparison:
    backend: str
    frames: int
    fps: float
    agreement_torch: float | None = None     # fraction of frames with the same greedy action
    agreement_fixed_ref: float | None = None
    bit_exact: bool | None = None            # lava-fixed vs numpy-fixed raw integers
    logit_max_abs: float | None = None
    layer_max_abs: dict = field(default_factory=dict)
    layer_rel: dict = field(default_factory=dict)   # max |a - a_ref| / max |a_ref|
    events: dict = field(default_factory=dict)       # layer -> events per frame (mean)
    synops: dict = field(default_factory=dict)       # layer -> synops per frame (mean)
    score: float | None = None
    game_steps: int | None = None
    game_fps: float | None = None
    error: str | None = None

    @property
    def ok(self) -> bool:
        if self.error:
            return False
        if registry.spec(self.backend).fixed:
            ok = self.agreement_torch is None or self.agreement_torch >= FIXED_ACTION_AGREEMENT
            return ok and self.bit_exact is not False
        return self.agreement_torch is None or self.agreement_torch >= FLOAT_ACTION_AGREEMENT


def compare_runs(res: RunResult, ref: RunResult, fixed_ref: RunResult | None = None) -> Comparison:
    c = Comparison(res.backend, res.frames, res.fps)
    if res.error:
        c.error = res.error
        return c
    n = min(res.frames, ref.frames)
    c.agreement_torch = float(np.mean(res.actions[:n] == ref.actions[:n]))
    c.logit_max_abs = float(np.max(np.abs(res.logits[:n] - ref.logits[:n])))
    for k, a in res.acts.items():
        if k in ref.acts:
            d = np.abs(a[:n] - ref.acts[k][:n])
            c.layer_max_abs[k] = float(d.max())
            c.layer_rel[k] = float(d.max() / max(np.abs(ref.acts[k][:n]).max(), 1e-300))
    c.events = {k: float(v.mean()) for k, v in res.events.items()}
    c.synops = {k: float(v.mean()) for k, v in res.synops.items()}
    if fixed_ref is not None and res.backend != fixed_ref.backend and fixed_ref.raw:
        m = min(res.frames, fixed_ref.frames)
        c.agreement_fixed_ref = float(np.mean(res.actions[:m] == fixed_ref.actions[:m]))
        if res.raw:
            c.bit_exact = all(k in res.raw and np.array_equal(res.raw[k][:m], v[:m]) for k, v in fixed_ref.raw.items())
    return c


@dataclass
class Summary:
    comparisons: list
    reference: str = "torch"
    out_dir: Path | None = None

    @property
    def ok(self) -> bool:
        return all(c.ok for c in self.comparisons if not (c.error or "").startswith("unavailable"))

    def table(self) -> str:
        head = "| backend | frames | fps | actions = torch | vs numpy-fixed | bit-exact | max logit err | score | status |"
        lines = [head, "|" + "---|" * 9]
        f = lambda x, fmt: "-" if x is None or x != x else format(x, fmt)  # noqa: E731 - None, NaN
        for c in self.comparisons:
            status = c.error or ("ok" if c.ok else "FAIL")
            lines.append(f"| {c.backend} | {c.frames} | {f(c.fps, '.1f')} | {f(c.agreement_torch, '.1%')} | "
                         f"{f(c.agreement_fixed_ref, '.1%')} | {f(c.bit_exact, '')} | {f(c.logit_max_abs, '.2e')} | "
                         f"{f(c.score, '+.0f')} | {status} |")
        return "\n".join(lines)


def load_network(path):
    """The converted network file (conversion.nirfile.read_network; DataFormatError if it is not one)."""
    from conversion.nirfile import read_network

    path = Path(path)
    if path.is_dir():
        raise DataFormatError(f"{path}: is a folder, expected a converted network file (mstpn convert)")
    return read_network(path)


def compare_sequence(net, frames: np.ndarray, backends, policy=None, progress=None,
                     options: dict | None = None) -> tuple[list, dict]:
    """Run ``frames`` on each backend; returns (comparisons, results by backend)."""
    results = {}
    options = options or {}
    names = list(dict.fromkeys(["torch", *backends]))
    if "lava-fixed" in names and "numpy-fixed" not in names:
        names.insert(names.index("lava-fixed"), "numpy-fixed")
    for name in names:
        if progress:
            progress(f"{name}: {len(frames)} frames ...")
        try:
            t0 = time.perf_counter()
            runner = registry.make_runner(name, net, **({"policy": policy} if name == "torch" else {}),
                                          **options.get(name, {}))
            build = time.perf_counter() - t0
            try:
                res = run_sequence(runner, frames, name)
            finally:
                runner.close()
            res.build_seconds = build
        except BackendUnavailableError as exc:
            res = RunResult(name, error=f"unavailable: {exc}")
        except UnsupportedNetworkError as exc:
            res = RunResult(name, error=f"cannot express the network: {exc}")
        results[name] = res
    ref = results["torch"]
    fixed_ref = results.get("numpy-fixed")
    fixed_ref = fixed_ref if fixed_ref is not None and not fixed_ref.error else None
    fixed = registry.fixed_backends()
    comps = [compare_runs(results[n], ref, fixed_ref if n in fixed else None)
             for n in names if n in backends or n == "torch"]
    return comps, results


def check_backends(backends) -> list:
    """The names, checked against the registry (one-line error naming the unknown ones)."""
    known = registry.network_backends()
    unknown = [b for b in backends if b not in known]
    if unknown:
        raise MstpnError(f"unknown backend(s) {', '.join(unknown)}; choose from {', '.join(known)}")
    return list(backends)


def jsonable(x):
    """``x`` with NumPy values as Python ones and NaN / inf as None (JSON has no NaN: a skipped
    backend's speed is written as null)."""
    if isinstance(x, dict):
        return {str(k): jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [jsonable(v) for v in x]
    if isinstance(x, np.ndarray):
        return jsonable(x.tolist())
    if isinstance(x, np.generic):
        return jsonable(x.item())
    if isinstance(x, float) and not np.isfinite(x):
        return None
    return x
