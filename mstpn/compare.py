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
from mstpn_base.errors import BackendUnavailableError, DataFormatError, MstpnError, ParameterError

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
    device_stats: dict = field(default_factory=dict)   # synapses="device": the runner's counted pulses

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
    synapses: str = "ideal"                  # the plastic layer's synapse model (registry.SYNAPSE_MODELS)
    device_mapping: dict | None = None       # synapses="device": the mapping block the run used
    device_stats: dict = field(default_factory=dict)   # synapses="device": counted pulses and energy

    @property
    def ok(self) -> bool:
        if self.error:
            return False
        if registry.spec(self.backend).fixed:
            ok = self.agreement_torch is None or self.agreement_torch >= FIXED_ACTION_AGREEMENT
            return ok and self.bit_exact is not False
        return self.agreement_torch is None or self.agreement_torch >= FLOAT_ACTION_AGREEMENT


def compare_runs(res: RunResult, ref: RunResult, fixed_ref: RunResult | None = None) -> Comparison:
    c = Comparison(res.backend, res.frames, res.fps, device_stats=res.device_stats)
    if res.error:
        c.error = res.error
        return c
    n = min(res.frames, ref.frames)
    if n:   # the reference ran (it is not run when it does not run the synapse model)
        c.agreement_torch = float(np.mean(res.actions[:n] == ref.actions[:n]))
        c.logit_max_abs = float(np.max(np.abs(res.logits[:n] - ref.logits[:n])))
    for k, a in res.acts.items():
        if n and k in ref.acts:
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
    synapses: str = "ideal"
    device_mapping: dict | None = None   # synapses="device": the mapping block every backend ran

    @property
    def ok(self) -> bool:
        return all(c.ok for c in self.comparisons if not skipped(c.error))

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
                     options: dict | None = None, synapses: str = "ideal", device=None) -> tuple[list, dict]:
    """Run ``frames`` on each backend; returns (comparisons, results by backend).

    ``synapses``: the plastic layer's synapse model on every backend ("device": memristor device
    pairs with the mapping ``device``, None: the file's device block; the reference is then the
    PyTorch policy with the same device pairs, and ``policy`` is not used).  A backend that does
    not run it (:func:`mstpn_base.registry.synapse_backends`) is reported "not run", as an
    unavailable one."""
    results = {}
    options = options or {}
    names = list(dict.fromkeys(["torch", *backends]))
    if "lava-fixed" in names and "numpy-fixed" not in names:
        names.insert(names.index("lava-fixed"), "numpy-fixed")
    able = registry.synapse_backends(synapses)
    model = {} if synapses == "ideal" and device is None else {"synapses": synapses, "device": device}
    for name in names:
        if name not in able:
            results[name] = RunResult(name, error=not_run_reason(name, synapses))
            continue
        if progress:
            progress(f"{name}: {len(frames)} frames ...")
        try:
            t0 = time.perf_counter()
            given = {"policy": policy} if name == "torch" and policy is not None and not model else {}
            runner = registry.make_runner(name, net, **given, **model, **options.get(name, {}))
            build = time.perf_counter() - t0
            try:
                res = run_sequence(runner, frames, name)
                res.device_stats = {n: dict(c) for n, c in (getattr(runner, "device_stats", None) or {}).items()}
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
    block = None if device is None else (device.to_block() if hasattr(device, "to_block") else device)
    for c in comps:
        c.synapses = synapses
        if synapses == "device" and not c.error:
            c.device_mapping = block if block is not None else _file_block(net)
    return comps, results


#: how an error of a backend that was not run on purpose starts (not a failure of the comparison)
SKIPPED = ("unavailable", "not run")


def skipped(error: str | None) -> bool:
    """A backend that was not run (missing, or not running the synapse model): not a failure."""
    return bool(error) and error.startswith(SKIPPED)


def not_run_reason(name: str, synapses: str) -> str:
    """The report line of a backend that does not run synapse model ``synapses``."""
    return (f"not run: {name} does not run the {synapses!r} synapse model (backends that do: "
            f"{', '.join(registry.synapse_backends(synapses)) or 'none'})")


def device_backends(backends, named: bool, synapses: str = "device") -> list:
    """``backends`` checked for synapse model ``synapses``: when the user ``named`` them and none of
    them runs it, a one-line ParameterError; otherwise the list (those that do not run it are
    reported "not run" by :func:`compare_sequence`)."""
    able = registry.synapse_backends(synapses)
    if named and backends and not [b for b in backends if b in able]:
        raise ParameterError(f"none of the backends {', '.join(backends)} runs the {synapses!r} synapse model; "
                             f"backends that do: {', '.join(able) or 'none'}")
    return list(backends)


def _file_block(net) -> dict | None:
    blocks = [node.device for node in net.nodes.values() if getattr(node, "device", None)]
    return blocks[0] if blocks else None


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
