"""Cross-simulator comparison of the converted Pong policy (issue #5).

Every backend is a *runner* built from one :class:`mstpn.netspec.NetSpec`::

    runner = make_runner(name, spec)
    runner.reset()                        # new episode: F = 0, h = 0, sigma-delta state = 0
    out = runner.step(obs)                # obs uint8 (84, 84); one frame
    out.logits, out.acts[layer], out.events[layer], out.synops[layer]
    runner.close()

Backends (``BACKENDS``): ``torch`` (the PyTorch policy, float64), ``numpy`` (float sigma-delta
reference, :mod:`mstpn.sd_kernels`), ``numpy-fixed`` (conversion's fixed-point simulator),
``snntorch`` (rate-coded IF, :mod:`snn_agent.snntorch_backend`), ``brian2`` / ``brian2-cython``
(:mod:`brian_models.network`), ``lava`` / ``lava-fixed`` (:mod:`lava_procs.network`, floating_pt
and bit-accurate fixed_pt), ``loihi2`` (Lava on Loihi 2 hardware; needs lava-loihi + a board).

:func:`compare_sequence` runs one recorded observation sequence on each backend and measures,
against the PyTorch policy (and, for ``lava-fixed``, against ``numpy-fixed``): action agreement,
the error of every layer's activation, events and synaptic operations per layer, frames per
second.  :func:`play_game` plays Pong frame by frame on one backend.  :func:`write_report` writes
a Markdown report with plots (matplotlib Agg, atomic writes).
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from mstpn.errors import BackendUnavailableError, DataFormatError, MstpnError
from mstpn.netspec import NetSpec, UnsupportedNetworkError, spec_from_policy  # noqa: F401

#: every backend name -> (module, factory); imported lazily so a missing optional package only
#: disables its own backend
BACKENDS = {
    "torch": ("mstpn.compare", "_torch_runner"),
    "numpy": ("mstpn.compare", "_numpy_runner"),
    "numpy-fixed": ("mstpn.compare", "_numpy_fixed_runner"),
    "snntorch": ("snn_agent.snntorch_backend", "make_runner"),
    "brian2": ("brian_models.network", "make_runner"),
    "brian2-cython": ("brian_models.network", "make_cython_runner"),
    "lava": ("lava_procs.network", "make_float_runner"),
    "lava-fixed": ("lava_procs.network", "make_fixed_runner"),
    "loihi2": ("lava_procs.network", "make_loihi2_runner"),
}
DEFAULT_BACKENDS = ("torch", "numpy", "numpy-fixed", "snntorch", "brian2", "lava", "lava-fixed")
#: backends compared bit for bit (raw integers) instead of with a float tolerance
FIXED_BACKENDS = ("numpy-fixed", "lava-fixed", "loihi2")

#: acceptance thresholds of issue #5
FLOAT_ACTION_AGREEMENT = 0.99
FIXED_ACTION_AGREEMENT = 0.97


@dataclass
class StepOut:
    logits: np.ndarray
    acts: dict = field(default_factory=dict)      # layer -> activation (float) after this frame
    events: dict = field(default_factory=dict)    # layer -> number of graded events / spikes sent
    synops: dict = field(default_factory=dict)    # layer -> synaptic operations
    raw: dict = field(default_factory=dict)       # fixed point: layer -> integer state (bit-exact checks)


def make_runner(name: str, spec: NetSpec, **options):
    """Build backend ``name`` for ``spec`` (BackendUnavailableError if its package is missing,
    UnsupportedNetworkError if it cannot express the network)."""
    import importlib

    if name not in BACKENDS:
        raise MstpnError(f"unknown backend {name!r}; choose from {', '.join(BACKENDS)}")
    module, factory = BACKENDS[name]
    try:
        mod = importlib.import_module(module)
    except ImportError as exc:
        raise BackendUnavailableError(f"backend {name!r} is not available: {exc}") from None
    return getattr(mod, factory)(spec, **options)


# -- reference runners ---------------------------------------------------------------------------
class NumpyRunner:
    """Float64 sigma-delta reference (layer kernels of :mod:`mstpn.sd_kernels`)."""

    name = "numpy"

    def __init__(self, spec: NetSpec):
        from mstpn.sd_kernels import LayerKernel

        self.spec = spec
        self.kernels = {}
        for layer in spec.layers:
            in_shape = None if layer.source is None else spec[layer.source].shape
            self.kernels[layer.name] = LayerKernel(layer, in_shape)

    def reset(self):
        for k in self.kernels.values():
            k.reset()

    def step(self, obs) -> StepOut:
        deltas, out = {}, StepOut(None)
        for layer in self.spec.layers:
            inp = obs if layer.source is None else deltas[layer.source]
            a, delta, syn = self.kernels[layer.name].step(inp)
            deltas[layer.name] = delta
            out.acts[layer.name] = a
            out.events[layer.name] = int(np.count_nonzero(delta))
            out.synops[layer.name] = syn
        out.logits = out.acts[self.spec.outputs["logits"]].copy()
        return out

    def close(self):
        pass


def _numpy_runner(spec, **_):
    return NumpyRunner(spec)


def policy_from_spec(spec: NetSpec):
    """A float64 :class:`snn_agent.policy.Policy` carrying the weights of ``spec``."""
    import torch

    from snn_agent.config import ModelConfig
    from snn_agent.policy import Policy

    stpn = [layer for layer in spec.layers if layer.kind == "stpn"]
    if [layer.kind for layer in spec.layers] != ["input", "conv", "conv", "stpn", "dense", "dense"] or len(stpn) != 1:
        raise UnsupportedNetworkError("the torch backend expects input-conv-conv-stpn-heads (the Pong policy)")
    policy = Policy(ModelConfig(kind="stpn", hidden=stpn[0].size, n_actions=spec.n_actions)).double().eval()
    conv1, conv2, core = spec.layers[1:4]
    pi, v = spec[spec.outputs["logits"]], spec[spec.outputs.get("value", spec.layers[5].name)]
    t = lambda a: torch.as_tensor(np.asarray(a, np.float64))  # noqa: E731
    with torch.no_grad():
        for mod, layer in ((policy.torso[0], conv1), (policy.torso[2], conv2), (policy.pi, pi), (policy.v, v)):
            mod.weight.copy_(t(layer.params["weight"]))
            mod.bias.copy_(t(layer.params["bias"]))
        for key in ("W", "b", "lam", "gamma"):
            getattr(policy.core, key).copy_(t(core.params[key]))
    return policy


class TorchRunner:
    """The PyTorch policy (float64), one frame at a time."""

    name = "torch"

    def __init__(self, spec: NetSpec, policy=None):
        self.spec = spec
        self.policy = policy.double().eval() if policy is not None else policy_from_spec(spec)
        self.state = None

    def reset(self):
        self.state = None

    def step(self, obs) -> StepOut:
        import torch

        with torch.no_grad():
            x = torch.as_tensor(np.asarray(obs, np.float64)).reshape(1, 1, 84, 84)
            feats1 = torch.relu(self.policy.torso[0](x / 255.0))
            logits, value, self.state, extras = self.policy(x, self.state)
        L = self.spec.layers
        vals = [(x / 255.0).reshape(-1), feats1.reshape(-1), extras["features"][0], extras["h"][0]]
        acts = {layer.name: v.numpy().copy() for layer, v in zip(L[:4], vals)}
        acts[self.spec.outputs["logits"]] = logits[0].numpy().copy()
        if "value" in self.spec.outputs:
            acts[self.spec.outputs["value"]] = value.reshape(-1).numpy().copy()
        return StepOut(logits[0].numpy().copy(), acts)

    def close(self):
        pass


def _torch_runner(spec, policy=None, **_):
    return TorchRunner(spec, policy)


def _numpy_fixed_runner(spec, **options):
    try:
        from conversion import simulator  # noqa: F401
    except ImportError as exc:
        raise BackendUnavailableError(f"the numpy-fixed backend needs conversion.simulator ({exc})") from None
    from lava_procs.network import conversion_fixed_runner  # adapter lives next to its Lava twin

    return conversion_fixed_runner(spec, **options)


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
    for obs in frames:
        out = runner.step(obs)
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


def record_frames(spec: NetSpec, n_frames: int, seed: int = 0, policy=None) -> np.ndarray:
    """Observations (T, 84, 84) uint8 of the PyTorch policy playing Pong greedily from ``seed``."""
    from snn_agent.config import EnvConfig
    from snn_agent.envs import PongVecEnv

    runner = TorchRunner(spec, policy)
    env = PongVecEnv(EnvConfig(action_set=spec.meta.get("action_set", "minimal")), 1, seed=seed)
    try:
        obs = env.reset()
        frames = []
        for _ in range(n_frames):
            frames.append(obs[0, 0].copy())
            out = runner.step(obs[0, 0])
            obs, _, done, _ = env.step([int(np.argmax(out.logits))])
            if done[0]:
                runner.reset()
        return np.stack(frames)
    finally:
        env.close()


def play_game(runner, spec: NetSpec, seed: int = 0, max_steps: int | None = None, progress=None) -> dict:
    """One full Pong game on ``runner``, frame by frame (set input, run one frame, read the action).
    Returns score (points won - lost), agent steps, seconds, truncated."""
    import dataclasses

    from snn_agent.config import EnvConfig
    from snn_agent.envs import PongVecEnv

    cfg = dataclasses.replace(EnvConfig(action_set=spec.meta.get("action_set", "minimal")), reward_clipping=False)
    limit = max_steps or cfg.max_episode_frames // cfg.frameskip
    env = PongVecEnv(cfg, 1, seed=seed)
    score, steps, done = 0.0, 0, False
    t0 = time.perf_counter()
    try:
        obs = env.reset()
        runner.reset()
        while steps < limit:
            out = runner.step(obs[0, 0])
            obs, reward, d, _ = env.step([int(np.argmax(out.logits))])
            score += float(reward[0])
            steps += 1
            if progress and steps % 500 == 0:
                progress(f"  {getattr(runner, 'name', '?')}: {steps} steps, score {score:+.0f}")
            if d[0]:
                done = True
                break
    finally:
        env.close()
    return dict(score=score, steps=steps, seconds=time.perf_counter() - t0, truncated=not done)


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
        if self.backend in FIXED_BACKENDS:
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
        f = lambda x, fmt: "-" if x is None else format(x, fmt)  # noqa: E731
        for c in self.comparisons:
            status = c.error or ("ok" if c.ok else "FAIL")
            lines.append(f"| {c.backend} | {c.frames} | {f(c.fps, '.1f')} | {f(c.agreement_torch, '.1%')} | "
                         f"{f(c.agreement_fixed_ref, '.1%')} | {f(c.bit_exact, '')} | {f(c.logit_max_abs, '.2e')} | "
                         f"{f(c.score, '+.0f')} | {status} |")
        return "\n".join(lines)


def load_spec(path) -> NetSpec:
    """NetSpec of a converted network file (or of a policy checkpoint, converted on the fly)."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such file")
    if path.is_dir():
        raise DataFormatError(f"{path}: is a folder, expected a converted network file")
    try:
        from conversion.adapter_for_backends import spec_from_file  # noqa: F401  (if conversion provides it)
    except ImportError:
        spec_from_file = None
    if spec_from_file is not None:
        return spec_from_file(path)
    from mstpn.netspec import spec_from_file as _from_file

    return _from_file(path)


def compare_sequence(spec: NetSpec, frames: np.ndarray, backends, policy=None, progress=None,
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
            runner = make_runner(name, spec, **({"policy": policy} if name == "torch" else {}),
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
    comps = [compare_runs(results[n], ref, fixed_ref if n in FIXED_BACKENDS else None)
             for n in names if n in backends or n == "torch"]
    return comps, results


def run_comparison(net_path, frames: int = 100, backends=DEFAULT_BACKENDS, obs_path=None, game: bool = False,
                   max_game_steps=None, seed: int = 0, out_dir="compare_out", progress=None) -> Summary:
    """The ``mstpn compare`` command: sequence comparison (+ games), report in ``out_dir``."""
    unknown = [b for b in backends if b not in BACKENDS]
    if unknown:
        raise MstpnError(f"unknown backend(s) {', '.join(unknown)}; choose from {', '.join(BACKENDS)}")
    if frames < 1:
        raise MstpnError("--frames must be >= 1")
    spec = load_spec(net_path)
    if obs_path is not None:
        obs = np.load(obs_path)
        if obs.ndim != 3 or obs.shape[1:] != (84, 84):
            raise DataFormatError(f"{obs_path}: expected (T, 84, 84) frames, got {obs.shape}")
        obs = obs[:frames]
    else:
        obs = record_frames(spec, frames, seed)
    comps, results = compare_sequence(spec, obs, backends, progress=progress)
    if game:
        for c in comps:
            if c.error:
                continue
            try:
                runner = make_runner(c.backend, spec)
                try:
                    g = play_game(runner, spec, seed=seed, max_steps=max_game_steps, progress=progress)
                finally:
                    runner.close()
                c.score, c.game_steps, c.game_fps = g["score"], g["steps"], g["steps"] / g["seconds"]
            except MstpnError as exc:
                c.error = f"game failed: {exc}"
    summary = Summary(comps, out_dir=Path(out_dir))
    write_report(summary, results, Path(out_dir), spec)
    return summary


# -- report --------------------------------------------------------------------------------------
def _plots(results: dict, comps: list, out: Path, spec: NetSpec) -> list:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from mstpn.io import atomic_path

    files = []
    ok = {n: r for n, r in results.items() if not r.error}
    ref = ok.get("torch")
    # activity rasters (events per unit over time) of the NumPy reference, per layer
    src = ok.get("numpy")
    if src is not None and src.acts:
        layers = [n for n in spec.names if n in src.acts]
        fig, axes = plt.subplots(1, len(layers), figsize=(3 * len(layers), 3), squeeze=False)
        for ax, name in zip(axes[0], layers):
            a = src.acts[name]
            changed = np.abs(np.diff(a, axis=0, prepend=0.0)) > spec[name].threshold
            ax.imshow(changed.T, aspect="auto", interpolation="nearest", cmap="Greys")
            ax.set_title(f"{name} ({int(changed.sum())} events)", fontsize=8)
            ax.set_xlabel("frame")
        axes[0][0].set_ylabel("unit")
        fig.tight_layout()
        with atomic_path(out / "activity_raster.png") as p:
            fig.savefig(p, dpi=80)
        plt.close(fig)
        files.append("activity_raster.png")
    if ref is not None:
        fig, ax = plt.subplots(figsize=(6, 3))
        for n, r in ok.items():
            if n == "torch":
                continue
            m = min(r.frames, ref.frames)
            err = np.abs(r.logits[:m] - ref.logits[:m]).max(axis=1)
            ax.semilogy(np.maximum(err, 1e-17), label=n)
        ax.set_xlabel("frame")
        ax.set_ylabel("max |logit - torch|")
        ax.legend(fontsize=7)
        fig.tight_layout()
        with atomic_path(out / "error_over_time.png") as p:
            fig.savefig(p, dpi=80)
        plt.close(fig)
        files.append("error_over_time.png")
    fig, ax = plt.subplots(figsize=(6, 3))
    names = [c.backend for c in comps if not c.error]
    ax.bar(names, [c.fps for c in comps if not c.error])
    ax.set_yscale("log")
    ax.set_ylabel("frames / s")
    ax.tick_params(axis="x", rotation=30, labelsize=7)
    fig.tight_layout()
    with atomic_path(out / "speed.png") as p:
        fig.savefig(p, dpi=80)
    plt.close(fig)
    files.append("speed.png")
    return files


def write_report(summary: Summary, results: dict, out: Path, spec: NetSpec) -> None:
    from mstpn.io import atomic_write_json, atomic_write_text

    out.mkdir(parents=True, exist_ok=True)
    files = _plots(results, summary.comparisons, out, spec)
    np_fps = next((c.fps for c in summary.comparisons if c.backend == "numpy" and not c.error), None)
    lines = ["# Cross-simulator comparison", "",
             f"Recorded sequence: {max((c.frames for c in summary.comparisons), default=0)} frames; "
             "reference: the PyTorch policy (float64). Actions are the argmax of the logits.", "",
             summary.table(), "", "## Speed (frames per second, ratio to the NumPy reference)", ""]
    for c in summary.comparisons:
        if not c.error:
            ratio = f"{c.fps / np_fps:.3f}x" if np_fps else "-"
            lines.append(f"- {c.backend}: {c.fps:.2f} fps ({ratio})")
    lines += ["", "## Per-layer activation error (max |a - a_torch|, relative to max |a_torch|)", "",
              "| backend | " + " | ".join(spec.names) + " |", "|---|" + "---|" * len(spec.names)]
    for c in summary.comparisons:
        if c.layer_max_abs:
            lines.append(f"| {c.backend} | " + " | ".join(
                f"{c.layer_max_abs[n]:.1e} ({c.layer_rel[n]:.1e})" if n in c.layer_max_abs else "-"
                for n in spec.names) + " |")
    lines += ["", "## Events and synaptic operations per frame (mean)", "",
              "| backend | " + " | ".join(f"{n} ev / syn" for n in spec.names) + " |",
              "|---|" + "---|" * len(spec.names)]
    for c in summary.comparisons:
        if c.events:
            lines.append(f"| {c.backend} | " + " | ".join(
                f"{c.events.get(n, float('nan')):.0f} / {c.synops.get(n, float('nan')):.0f}" for n in spec.names) + " |")
    lines += [""] + [f"![{f}]({f})" for f in files] + [""]
    atomic_write_text(out / "report.md", "\n".join(lines))
    payload = [{k: v for k, v in c.__dict__.items()} for c in summary.comparisons]
    atomic_write_json(out / "results.json", json.loads(json.dumps(payload, default=float)))
