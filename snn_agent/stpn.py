"""The STPN layer (Short-Term Plasticity Neuron, Rodriguez, Guo & Moraitis, ICML 2022), recurrent
variant, exactly as the reference Pong implementation computes it.

Per layer, input x_t (dim I), hidden h_t (dim H), z_t = [x_t ; h_t] (dim K = I + H):

    G_t      = W + F_t                                   (H x K, per batch element)
    N_t[h]   = || G_t[h, :] ||_2 + 1e-16                 row norm per postsynaptic neuron
    a_t[h]   = sum_f (G_t[h, f] / N_t[h]) z_t[f] + b[h]  pre-activation
    h_{t+1}  = tanh(a_t)
    F_{t+1}  = lambda (.) (F_t / N_t) + gamma (.) (h_{t+1} z_t^T)   Hebbian outer product

W, b: long-term weights and bias; lambda, gamma: per-synapse trainable retention and plasticity
(H x K); F: short-term weights, state, F_0 = 0 at every episode start.  All quantities are
dimensionless ("weight units").

The math lives in the pure function :func:`stpn_step` (no module state) so that other backends
(the event-driven conversion) can reproduce it operation by operation, in float32 or float64.
:class:`STPN` is a thin ``nn.Module`` wrapper with explicit state, in the style of snnTorch
(``init_state()`` then ``h, state = layer(x, state)``).
"""
from __future__ import annotations

import math
import warnings
from typing import NamedTuple

import torch
from torch import nn

from conversion import semantics as sem
from mstpn_base.ops import torch_ops

#: added to the row norm so that an all-zero row does not divide by zero (as the reference)
NORM_EPS = 1e-16


class STPNState(NamedTuple):
    """Plastic state of one layer: ``h`` (B, H) and ``F`` (B, H, K)."""

    h: torch.Tensor
    F: torch.Tensor


def stpn_step(W, b, lam, gamma, x, h, F, *, f_max: float | None = None, hebb_noise=None,
              energy: bool = False, norm_eps: float = NORM_EPS):
    """One STPN step (pure function). Shapes: W, lam, gamma (H, K); b (H); x (B, I); h (B, H);
    F (B, H, K) with K = I + H.

    Returns ``(h_new, F_new, extras)``; ``extras`` holds the per-step intermediates
    ``z`` (B, K), ``norm`` N_t (B, H), ``pre`` a_t (B, H) and, if ``energy``, the reference's
    energy proxy ``energy`` E_t = sum_h sum_f z_f^2 |G_hf / N_h| (B,).

    Device-constrained options (m-STPN): ``f_max`` clips F_{t+1} to [-f_max, f_max] (bounded
    volatile conductance); ``hebb_noise`` (broadcastable to (B, H, K)) multiplies the Hebbian
    increment (cycle-to-cycle variability of the update pulses).  The equations are those of
    :mod:`conversion.semantics` (the converted network's PlasticSTPN node), evaluated on tensors.
    """
    ops = torch_ops()
    z = torch.cat([x, h], dim=-1)                              # (B, K)
    G = W.unsqueeze(0) + F                                     # (B, H, K)
    norm = sem.stpn_norm(ops, G.square().sum(dim=-1), norm_eps)                   # (B, H)
    pre = sem.stpn_preactivation(torch.bmm(G, z.unsqueeze(-1)).squeeze(-1), norm, b)  # (B, H)
    h_new = sem.activation(ops, "tanh", pre)
    F_new = sem.stpn_plasticity(ops, F, norm.unsqueeze(-1), lam, gamma, h_new.unsqueeze(-1), z.unsqueeze(-2),
                                f_max=f_max, noise=hebb_noise)
    extras = {"z": z, "norm": norm, "pre": pre}
    if energy:
        extras["energy"] = (z.square().unsqueeze(1) * (G.abs() / norm.unsqueeze(-1))).sum(dim=(1, 2))
    return h_new, F_new, extras


def with_eager_fallback(compiled, eager):
    """``compiled``, or ``eager`` from the first time ``compiled`` raises an ``Exception`` (a
    compiler failure), with one RuntimeWarning.  BaseExceptions (Ctrl-C, the training run's SIGTERM
    stop) pass through untouched."""
    active = [compiled]

    def step(*args, **kwargs):
        if active[0] is eager:
            return eager(*args, **kwargs)
        try:
            return active[0](*args, **kwargs)
        except Exception as exc:  # noqa: BLE001 - any compiler failure: fall back, visibly
            warnings.warn(f"torch.compile of {getattr(eager, '__name__', 'the step')} failed "
                          f"({type(exc).__name__}: {exc}); using the eager implementation",
                          RuntimeWarning, stacklevel=2)
            active[0] = eager
            return eager(*args, **kwargs)

    return step


_COMPILED_STEP = None


def compiled_stpn_step():
    """:func:`stpn_step` compiled by ``torch.compile`` (inductor fuses the elementwise work on the
    (B, H, K) tensors into a few loops, forward and backward; same equations, float rounding may
    differ in the last bits).  On one CPU core the layer step alone runs ~4x faster and a whole
    A2C update of the Pong STPN ~2.5x (benchmarks/bench_training.py).  If compilation fails (no
    C++ compiler, unsupported platform) it falls back to the eager :func:`stpn_step`
    (:func:`with_eager_fallback`)."""
    global _COMPILED_STEP
    if _COMPILED_STEP is None:
        import torch._dynamo

        # the m-STPN's c2c-noise tensor and f_max, train/eval batch sizes: a few specialisations
        torch._dynamo.config.cache_size_limit = max(torch._dynamo.config.cache_size_limit, 32)
        _COMPILED_STEP = with_eager_fallback(torch.compile(stpn_step, dynamic=False), stpn_step)
    return _COMPILED_STEP


_TRAINING_STEP = None


def training_stpn_step():
    """The step that :meth:`STPN.compile_step` selects: on the CPU, where numba is installed, the
    fused forward/backward kernels of :mod:`snn_agent.stpn_kernel` for every call they cover
    (float32/float64 on the CPU, with or without gradients, the m-STPN's ``f_max`` clip and
    per-synapse ``hebb_noise`` too; no ``energy``) and :func:`compiled_stpn_step` for the others
    (the energy proxy, CUDA tensors); :func:`compiled_stpn_step` alone without numba."""
    global _TRAINING_STEP
    if _TRAINING_STEP is None:
        from snn_agent import stpn_kernel

        compiled = compiled_stpn_step()
        _TRAINING_STEP = stpn_kernel.kernel_step(compiled, NORM_EPS) if stpn_kernel.AVAILABLE else compiled
    return _TRAINING_STEP


def reset_state(state: STPNState, done) -> STPNState:
    """Zero the state of batch elements whose episode ended (``done`` (B,) bool): F_0 = 0, h_0 = 0."""
    keep = (~torch.as_tensor(done, dtype=torch.bool, device=state.h.device)).to(state.h.dtype)
    return STPNState(state.h * keep.unsqueeze(-1), state.F * keep.view(-1, 1, 1))


def detach_state(state):
    """Cut the autograd graph (truncated BPTT) without changing values."""
    return type(state)(*(s.detach() for s in state))


class STPN(nn.Module):
    """STPN layer with explicit state; parameters initialised as in the reference.

    ``lam`` ~ U(0, 1); ``gamma`` ~ U(-1e-3/sqrt(H), 1e-3/sqrt(H)); ``W``, ``b`` ~ U(-1/sqrt(H), 1/sqrt(H)).
    """

    #: no clipping of F in the plain STPN
    f_max = None
    #: the step function; :meth:`compile_step` swaps in the compiled one
    step_fn = staticmethod(stpn_step)

    def __init__(self, input_size: int, hidden_size: int):
        super().__init__()
        self.input_size, self.hidden_size = int(input_size), int(hidden_size)
        K, H = self.input_size + self.hidden_size, self.hidden_size
        bound = 1.0 / math.sqrt(H)
        self.W = nn.Parameter(torch.empty(H, K).uniform_(-bound, bound))
        self.b = nn.Parameter(torch.empty(H).uniform_(-bound, bound))
        self.lam = nn.Parameter(torch.empty(H, K).uniform_(0.0, 1.0))
        g = 1e-3 / math.sqrt(H)
        self.gamma = nn.Parameter(torch.empty(H, K).uniform_(-g, g))

    @property
    def n_synapses(self) -> int:
        return self.hidden_size * (self.input_size + self.hidden_size)

    def init_state(self, batch_size: int, dtype=None, device=None) -> STPNState:
        """Zero state at an episode start."""
        ref = next(self.parameters())          # dtype and device of the layer's parameters
        dtype = dtype or ref.dtype
        device = device or ref.device
        H, K = self.hidden_size, self.input_size + self.hidden_size
        return STPNState(torch.zeros(batch_size, H, dtype=dtype, device=device),
                         torch.zeros(batch_size, H, K, dtype=dtype, device=device))

    def compile_step(self) -> None:
        """Run this layer's step through :func:`training_stpn_step` (training speed): the numba
        kernels where they apply, else :func:`compiled_stpn_step`."""
        self.step_fn = training_stpn_step()

    def effective_params(self) -> dict:
        """The tensors W, b, lam, gamma exactly as :func:`stpn_step` uses them, and ``f_max``."""
        return {"W": self.W, "b": self.b, "lam": self.lam, "gamma": self.gamma, "f_max": self.f_max}

    def forward(self, x, state: STPNState | None = None, energy: bool = False):
        """``h_new, new_state, extras = layer(x, state)``; ``state=None`` starts from zero."""
        if state is None:
            state = self.init_state(x.shape[0], x.dtype, x.device)
        p = self.effective_params()
        h, F, extras = self.step_fn(p["W"], p["b"], p["lam"], p["gamma"], x, state.h, state.F,
                                    f_max=p["f_max"], energy=energy)
        return h, STPNState(h, F), extras
