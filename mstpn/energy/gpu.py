"""GPU energy measurement with NVML's total-energy counter (used by benchmarks/gpu_energy.py).

NVML (pynvml, from the ``nvidia-ml-py`` package) is imported lazily; without it, without an
NVIDIA GPU, or without CUDA in PyTorch, every entry point raises
:class:`~mstpn_base.errors.BackendUnavailableError` with the reason.

Method: ``nvmlDeviceGetTotalEnergyConsumption`` (mJ since the driver loaded; Volta and newer) is
read before and after a timed loop of at least ``seconds`` seconds, with the GPU synchronised at
both ends; the counter updates about every 100 ms, so windows of several seconds keep its
resolution error below ~1%.  Idle power is measured the same way over a window with no work.
Dynamic energy per step = (E_window - P_idle * t_window) / steps.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path

from mstpn.energy.models import GpuStepFigures
from mstpn_base.io import read_json
from mstpn_base.errors import BackendUnavailableError, DataFormatError, ParameterError

SCHEMA = "mstpn.gpu-energy"
SCHEMA_VERSION = 1


def open_nvml(index: int = 0):
    """Initialise NVML and return the handle of GPU ``index`` (raises BackendUnavailableError)."""
    try:
        import pynvml
    except ImportError:
        raise BackendUnavailableError(
            "GPU energy measurement needs NVML bindings: pip install nvidia-ml-py (module pynvml)") from None
    try:
        pynvml.nvmlInit()
        count = pynvml.nvmlDeviceGetCount()
    except Exception as exc:  # pynvml.NVMLError and driver-library errors
        raise BackendUnavailableError(f"NVML is unavailable (no NVIDIA driver or GPU?): {exc}") from None
    if not 0 <= index < count:
        raise BackendUnavailableError(f"no NVIDIA GPU with index {index} (NVML sees {count})")
    handle = pynvml.nvmlDeviceGetHandleByIndex(index)
    try:
        pynvml.nvmlDeviceGetTotalEnergyConsumption(handle)
    except Exception as exc:
        raise BackendUnavailableError(f"this GPU has no NVML total-energy counter (Volta or newer "
                                      f"needed): {exc}") from None
    return handle


def read_energy_j(handle) -> float:
    """NVML total energy counter [J] (NVML reports mJ)."""
    import pynvml

    return pynvml.nvmlDeviceGetTotalEnergyConsumption(handle) * 1e-3


def require_cuda():
    """Return torch with CUDA available, or raise BackendUnavailableError."""
    import torch

    if not torch.cuda.is_available():
        raise BackendUnavailableError("PyTorch sees no CUDA GPU (torch.cuda.is_available() is False); "
                                      "GPU energy can only be measured on a machine with an NVIDIA GPU")
    return torch


@dataclass(frozen=True)
class Window:
    """One measured window: energy [J], wall time [s], steps run."""

    energy_j: float
    seconds: float
    steps: int


def measure_window(handle, step_fn, sync, seconds: float, chunk: int = 100) -> Window:
    """Run ``step_fn`` in chunks of ``chunk`` calls until ``seconds`` have passed; energy from NVML."""
    if not (math.isfinite(seconds) and seconds > 0):
        raise ParameterError(f"seconds must be positive, got {seconds!r}")
    sync()
    e0, t0, n = read_energy_j(handle), time.perf_counter(), 0
    while True:
        for _ in range(chunk):
            step_fn()
        n += chunk
        sync()
        t = time.perf_counter() - t0
        if t >= seconds:
            break
    return Window(read_energy_j(handle) - e0, t, n)


def measure_idle(handle, sync, seconds: float) -> float:
    """Idle power [W]: energy over a window with no work, divided by its length."""
    sync()
    e0, t0 = read_energy_j(handle), time.perf_counter()
    time.sleep(seconds)
    return (read_energy_j(handle) - e0) / (time.perf_counter() - t0)


def stpn_layer_step(torch, n_in: int = 2592, hidden: int = 64, batch: int = 1, seed: int = 0):
    """(step_fn, graph_step_fn) of one STPN layer step on the GPU, fp32, state carried over.
    The graph version replays a captured CUDA graph on static buffers."""
    from snn_agent.stpn import stpn_step

    dev = torch.device("cuda")
    g = torch.Generator(device="cpu").manual_seed(seed)
    k = n_in + hidden
    s = 1.0 / math.sqrt(hidden)
    W = ((torch.rand(hidden, k, generator=g) * 2 - 1) * s).to(dev)
    b = ((torch.rand(hidden, generator=g) * 2 - 1) * s).to(dev)
    lam = torch.rand(hidden, k, generator=g).to(dev)
    gamma = ((torch.rand(hidden, k, generator=g) * 2 - 1) * 1e-3 * s).to(dev)
    x = torch.rand(batch, n_in, generator=g).to(dev)
    h = torch.zeros(batch, hidden, device=dev)
    F = torch.zeros(batch, hidden, k, device=dev)
    state = {"h": h, "F": F}

    @torch.no_grad()
    def eager():
        state["h"], state["F"], _ = stpn_step(W, b, lam, gamma, x, state["h"], state["F"])

    return eager, _graph(torch, lambda: stpn_step(W, b, lam, gamma, x, h, F)[:2], (h, F))


def policy_step(torch, n_actions: int = 6, batch: int = 1, seed: int = 0):
    """(step_fn, graph_step_fn) of one whole-policy step (conv torso + STPN + heads), fp32."""
    from snn_agent.config import ModelConfig
    from snn_agent.policy import Policy

    torch.manual_seed(seed)
    pol = Policy(ModelConfig(kind="stpn", n_actions=n_actions)).cuda().eval()
    obs = torch.randint(0, 256, (batch, 1, 84, 84), dtype=torch.uint8, device="cuda")
    st = pol.init_state(batch, device=torch.device("cuda"))
    holder = {"state": st}

    @torch.no_grad()
    def eager():
        _, _, holder["state"], _ = pol(obs, holder["state"])

    static = tuple(st)
    return eager, _graph(torch, lambda: tuple(pol(obs, type(st)(*static))[2]), static)


def _graph(torch, fn, static_state):
    """Capture ``fn`` (returns the new state tuple) in a CUDA graph; replay copies the new state
    into the static inputs so that the state is carried from step to step."""
    with torch.no_grad():
        stream = torch.cuda.Stream()
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream):
            for _ in range(3):  # warm-up on a side stream, as torch.cuda.graphs requires
                fn()
        torch.cuda.current_stream().wait_stream(stream)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            out = fn()
            for dst, src in zip(static_state, out):
                dst.copy_(src)

    def replay():
        graph.replay()

    return replay


def step_figures(w: Window, idle_w: float) -> dict:
    """Per-step figures of a window: total [J/step], dynamic = (E - P_idle t) / steps [J/step]."""
    return dict(total_j_per_step=w.energy_j / w.steps,
                dynamic_j_per_step=(w.energy_j - idle_w * w.seconds) / w.steps,
                steps_per_s=w.steps / w.seconds, steps=w.steps, seconds=w.seconds, energy_j=w.energy_j)


def run_benchmark(seconds: float = 10.0, idle_seconds: float = 10.0, index: int = 0,
                  command: str = "") -> dict:
    """Measure idle power, then the STPN layer step and the whole policy step, eager and CUDA
    graph. Returns the results dict (schema ``mstpn.gpu-energy``)."""
    handle = open_nvml(index)
    torch = require_cuda()
    import pynvml

    sync = torch.cuda.synchronize
    name = pynvml.nvmlDeviceGetName(handle)
    cases = {}
    try:
        idle_w = measure_idle(handle, sync, idle_seconds)
        for case, build in (("stpn_layer", stpn_layer_step), ("policy", policy_step)):
            eager, graph = build(torch)
            for mode, fn in (("eager", eager), ("cudagraph", graph)):
                for _ in range(50):  # warm-up: kernels loaded, clocks up
                    fn()
                w = measure_window(handle, fn, sync, seconds)
                cases.setdefault(case, {})[mode] = step_figures(w, idle_w)
    finally:
        pynvml.nvmlShutdown()
    return {
        "schema": SCHEMA, "version": SCHEMA_VERSION, "command": command,
        "gpu": name if isinstance(name, str) else name.decode(), "torch": torch.__version__,
        "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "idle_w": idle_w, "idle_seconds": idle_seconds,
        "window_seconds": seconds, "batch": 1, "dtype": "float32", "synapses": 64 * (2592 + 64),
        "cases": cases,
    }


def load_measurement(path, case: str = "stpn_layer") -> dict[str, GpuStepFigures]:
    """Per-step figures (mode -> GpuStepFigures) of ``case`` from a benchmarks/gpu_energy.py file."""
    path = Path(path)
    if not path.is_file():
        raise DataFormatError(f"{path}: no such GPU measurement file")
    data = read_json(path)
    if not isinstance(data, dict) or data.get("schema") != SCHEMA or data.get("version") != SCHEMA_VERSION:
        raise DataFormatError(f"{path}: not a GPU measurement file (schema {SCHEMA!r} v{SCHEMA_VERSION})")
    try:
        modes = data["cases"][case]
        return {m: GpuStepFigures(float(v["total_j_per_step"]), float(v["dynamic_j_per_step"]),
                                  float(v["steps_per_s"]), float(data["idle_w"]),
                                  f"{path.name}: {data.get('gpu', '?')} ({data.get('command', '')})")
                for m, v in modes.items()}
    except (KeyError, TypeError, ValueError) as exc:
        raise DataFormatError(f"{path}: missing or bad field {exc} for case {case!r}") from None
