"""Cross-simulator comparison of the converted Pong policy (issue #5).

Every backend is a *runner* built from one converted :class:`conversion.graph.Network` (the file
of ``mstpn convert``, read by :func:`load_network`)::

    runner = make_runner(name, net)
    runner.reset()                        # new episode: F = 0, h = 0, sigma-delta state = 0
    out = runner.step(obs)                # obs uint8 (84, 84); one frame
    out.logits, out.acts[layer], out.events[layer], out.synops[layer]
    runner.close()

Backends (``BACKENDS``): ``torch`` (the PyTorch policy rebuilt from the file's weights, float64),
``numpy`` / ``numpy-fixed`` (conversion's reference simulator, float / fixed point: the oracle),
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

from mstpn_base.errors import BackendUnavailableError, DataFormatError, MstpnError


class UnsupportedNetworkError(MstpnError, ValueError):
    """The network contains something a backend cannot express (the message says what)."""

#: every backend name -> (module, factory); imported lazily so a missing optional package only
#: disables its own backend
BACKENDS = {
    "torch": ("mstpn.compare", "_torch_runner"),
    "numpy": ("mstpn.compare", "_numpy_runner"),
    "numpy-fixed": ("mstpn.compare", "_numpy_fixed_runner"),
    "snntorch": ("snn_agent.snntorch_backend", "make_runner"),
    "brian2": ("brian_models.network", "make_runner"),
    "brian2-cython": ("brian_models.network", "make_cython_runner"),
    "brian2-standalone": ("brian_models.network", "make_standalone_runner"),
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


def make_runner(name: str, net, **options):
    """Build backend ``name`` for ``net`` (BackendUnavailableError if its package is missing,
    UnsupportedNetworkError if it cannot express the network)."""
    import importlib

    if name not in BACKENDS:
        raise MstpnError(f"unknown backend {name!r}; choose from {', '.join(BACKENDS)}")
    module, factory = BACKENDS[name]
    try:
        mod = importlib.import_module(module)
    except ImportError as exc:
        raise BackendUnavailableError(f"backend {name!r} is not available: {exc}") from None
    return getattr(mod, factory)(net, **options)


# -- reference runners ---------------------------------------------------------------------------
#: the layers whose values are compared: the nodes that send events or outputs (see
#: lava_procs.network.layers_of); torch gives the same quantities under these names
def layer_names(net) -> list:
    from conversion import graph as g

    return [n for n in net.order if isinstance(net.nodes[n], (g.SigmaDelta, g.RateIF, g.Output))]


def logits_node(net) -> str:
    from conversion import graph as g

    outs = net.of_type(g.Output)
    if not outs:
        raise DataFormatError("network has no Output node")
    return "logits" if "logits" in outs else outs[0]


class SimRunner:
    """conversion's NumPy reference simulator (batch 1): ``numpy`` (float64) / ``numpy-fixed``."""

    def __init__(self, net, fixed: bool = False):
        from conversion.simulator import Simulator
        from mstpn_base.errors import ParameterError

        try:
            self.sim = Simulator(net, batch=1, fixed=fixed)
        except ParameterError as exc:
            raise UnsupportedNetworkError(str(exc)) from None
        self.net, self.fixed = net, fixed
        self.name = "numpy-fixed" if fixed else "numpy"
        self.layers = layer_names(net)
        self.logits = logits_node(net)

    def reset(self):
        self.sim.reset()

    def step(self, obs) -> StepOut:
        from lava_procs.network import layers_of, value_exponent

        sim = self.sim
        before = {n: dict(c) for n, c in sim.stats.items()}
        shape = sim.net.nodes[sim.order[0]].shape
        sim.step(np.asarray(obs).reshape((1, *shape)))
        out = StepOut(None)
        groups = {name: nodes for name, nodes, _ in layers_of(self.net)} if self.net.mode == "sigma_delta" else \
            {n: [n] for n in self.layers}
        for name in self.layers:
            v = np.asarray(sim.values[name]).reshape(-1)
            if self.fixed:
                out.raw[name] = v.astype(np.int64)
                v = v * 2.0 ** value_exponent(self.net, name)
            out.acts[name] = v.astype(np.float64)
            nodes = groups.get(name, [name])
            out.events[name] = sum(sim.stats[n]["events"] - before[n]["events"] for n in nodes)
            out.synops[name] = sum(sim.stats[n]["synops"] - before[n]["synops"] for n in nodes)
        out.logits = out.acts[self.logits].copy()
        return out

    def close(self):
        pass


def _numpy_runner(net, **_):
    return SimRunner(net, fixed=False)


def _numpy_fixed_runner(net, **_):
    if net.fixed is None:
        raise UnsupportedNetworkError("numpy-fixed needs a network with fixed-point parameters "
                                      "(mstpn convert with calibration)")
    return SimRunner(net, fixed=True)


def policy_from_network(net):
    """A float64 :class:`snn_agent.policy.Policy` carrying the weights of the converted ``net``
    (nodes conv1, conv2, stpn, pi, v of conversion.convert.build_network)."""
    import torch

    from conversion import graph as g
    from snn_agent.config import ModelConfig
    from snn_agent.policy import Policy

    need = {"conv1": g.Conv2d, "conv2": g.Conv2d, "stpn": g.PlasticSTPN, "pi": g.Affine, "v": g.Affine}
    for k, kind in need.items():
        if not isinstance(net.nodes.get(k), kind):
            raise UnsupportedNetworkError(f"the torch backend rebuilds the Pong policy and needs node {k!r} "
                                          f"of kind {kind.__name__}")
    st = net.nodes["stpn"]
    if np.isfinite(st.f_max):
        raise UnsupportedNetworkError("the torch backend rebuilds a plain STPN; this network bounds F (m-STPN)")
    policy = Policy(ModelConfig(kind="stpn", hidden=st.hidden_size, n_actions=net.nodes["pi"].weight.shape[0]))
    policy = policy.double().eval()
    t = lambda a: torch.as_tensor(np.asarray(a, np.float64))  # noqa: E731
    with torch.no_grad():
        for mod, k in ((policy.torso[0], "conv1"), (policy.torso[2], "conv2"), (policy.pi, "pi"), (policy.v, "v")):
            mod.weight.copy_(t(net.nodes[k].weight))
            mod.bias.copy_(t(net.nodes[k].bias))
        for key in ("W", "b", "lam", "gamma"):
            getattr(policy.core, key).copy_(t(getattr(st, key)))
    return policy


class TorchRunner:
    """The PyTorch policy (float64), one frame at a time."""

    name = "torch"

    def __init__(self, net, policy=None):
        self.net = net
        self.policy = policy.double().eval() if policy is not None else policy_from_network(net)
        self.state = None
        self.logits_name = logits_node(net)

    def reset(self):
        self.state = None

    def step(self, obs) -> StepOut:
        import torch

        with torch.no_grad():
            x = torch.as_tensor(np.asarray(obs, np.float64)).reshape(1, 1, 84, 84)
            feats1 = torch.relu(self.policy.torso[0](x / 255.0))
            logits, value, self.state, extras = self.policy(x, self.state)
        acts = {"sd_in": x.reshape(-1), "sd1": feats1.reshape(-1), "sd2": extras["features"][0],
                "if1": feats1.reshape(-1), "if2": extras["features"][0],
                "h": extras["h"][0], self.logits_name: logits[0], "value": value.reshape(-1)}
        names = set(layer_names(self.net))
        acts = {k: v.numpy().astype(np.float64).copy() for k, v in acts.items() if k in names}
        return StepOut(logits[0].numpy().copy(), acts)

    def close(self):
        pass


def _torch_runner(net, policy=None, **_):
    return TorchRunner(net, policy)


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


def env_config(net):
    """The Pong environment the network was converted for (metadata "env"), else the default."""
    import dataclasses

    from snn_agent.config import EnvConfig

    env = net.metadata.get("env") or {}
    fields = {f.name for f in dataclasses.fields(EnvConfig)}
    return EnvConfig(**{k: (tuple(v) if isinstance(v, list) else v) for k, v in env.items() if k in fields})


def record_frames(net, n_frames: int, seed: int = 0, policy=None) -> np.ndarray:
    """Observations (T, 84, 84) uint8 of the PyTorch policy playing Pong greedily from ``seed``
    (conversion.pong.record; the recording continues into the next game if one ends)."""
    from conversion import pong

    policy = policy if policy is not None else policy_from_network(net)
    rec = pong.record(policy, env_config(net), n_frames=n_frames, seed=seed)
    if rec.starts[1:].any():
        cut = int(np.flatnonzero(rec.starts[1:])[0]) + 1   # keep one episode: no reset mid-sequence
        return rec.frames[:cut, 0]
    return rec.frames[:, 0]


def play_game(runner, net, seed: int = 0, max_steps: int | None = None, progress=None) -> dict:
    """One full Pong game on ``runner``, frame by frame (set input, run one frame, read the action).
    Returns score (points won - lost), agent steps, seconds, truncated."""
    from conversion.pong import play_loop

    def report(steps, score):
        if progress and steps % 500 == 0:
            progress(f"  {getattr(runner, 'name', '?')}: {steps} steps, score {score:+.0f}")

    runner.reset()
    g = play_loop(lambda obs: np.argmax(runner.step(obs[0, 0]).logits), env_config(net), seed, max_steps,
                  on_step=report)
    return dict(score=g["score"], steps=g["steps"], seconds=g["seconds"], truncated=not g["finished"])


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
            runner = make_runner(name, net, **({"policy": policy} if name == "torch" else {}),
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
    net = load_network(net_path)
    if obs_path is not None:
        obs = np.load(obs_path)
        if obs.ndim != 3 or obs.shape[1:] != (84, 84):
            raise DataFormatError(f"{obs_path}: expected (T, 84, 84) frames, got {obs.shape}")
        obs = obs[:frames]
    else:
        obs = record_frames(net, frames, seed)
    comps, results = compare_sequence(net, obs, backends, progress=progress)
    if game:
        for c in comps:
            if c.error:
                continue
            try:
                runner = make_runner(c.backend, net)
                try:
                    g = play_game(runner, net, seed=seed, max_steps=max_game_steps, progress=progress)
                finally:
                    runner.close()
                c.score, c.game_steps, c.game_fps = g["score"], g["steps"], g["steps"] / g["seconds"]
            except MstpnError as exc:
                c.error = f"game failed: {exc}"
    summary = Summary(comps, out_dir=Path(out_dir))
    write_report(summary, results, Path(out_dir), net)
    return summary


# -- report --------------------------------------------------------------------------------------
def _plots(results: dict, comps: list, out: Path, net) -> list:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from mstpn_base.io import atomic_path

    files = []
    ok = {n: r for n, r in results.items() if not r.error}
    ref = ok.get("torch")
    # activity rasters (events per unit over time) of the NumPy reference, per layer
    src = ok.get("numpy")
    if src is not None and src.acts:
        layers = [n for n in layer_names(net) if n in src.acts]
        fig, axes = plt.subplots(1, len(layers), figsize=(3 * len(layers), 3), squeeze=False)
        for ax, name in zip(axes[0], layers):
            a = src.acts[name]
            changed = np.diff(a, axis=0, prepend=0.0) != 0     # a unit's sent value changed: an event
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


def write_report(summary: Summary, results: dict, out: Path, net) -> None:
    from mstpn_base.io import atomic_write_json, atomic_write_text

    out.mkdir(parents=True, exist_ok=True)
    files = _plots(results, summary.comparisons, out, net)
    names_ = layer_names(net)
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
              "| backend | " + " | ".join(names_) + " |", "|---|" + "---|" * len(names_)]
    for c in summary.comparisons:
        if c.layer_max_abs:
            lines.append(f"| {c.backend} | " + " | ".join(
                f"{c.layer_max_abs[n]:.1e} ({c.layer_rel[n]:.1e})" if n in c.layer_max_abs else "-"
                for n in names_) + " |")
    lines += ["", "## Events and synaptic operations per frame (mean)", "",
              "| backend | " + " | ".join(f"{n} ev / syn" for n in names_) + " |",
              "|---|" + "---|" * len(names_)]
    for c in summary.comparisons:
        if c.events:
            lines.append(f"| {c.backend} | " + " | ".join(
                f"{c.events.get(n, float('nan')):.0f} / {c.synops.get(n, float('nan')):.0f}" for n in names_) + " |")
    lines += [""] + [f"![{f}]({f})" for f in files] + [""]
    atomic_write_text(out / "report.md", "\n".join(lines))
    payload = [{k: v for k, v in c.__dict__.items()} for c in summary.comparisons]
    atomic_write_json(out / "results.json", json.loads(json.dumps(payload, default=float)))
