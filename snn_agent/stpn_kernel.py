"""Fused CPU kernels (numba) for one STPN step, forward and backward, as a ``torch.autograd.Function``.

Same equations as :func:`snn_agent.stpn.stpn_step` (without ``energy``); per batch element,
z = [x; h] (K), G = W + F (H x K):

    s[h] = ||G[h, :]||_2,  N = s + eps,  d = G z,  a = d / N + b,  y = tanh(a),
    u    = lam (.) (F / N) + gamma (.) (y z^T),   F' = clip(u, -f_max, f_max)

(f_max = inf for the plain STPN).  The m-STPN's cycle-to-cycle factor on the Hebbian term, one
per synapse shared by the batch (H x K), enters as gamma (.) noise in place of gamma (autograd
takes the product's gradient); the clip's gradient passes where -f_max <= u <= f_max, as
torch.clamp's, so the backward first zeroes P = dL/dF' elsewhere (:func:`_unclipped_row`, one row
at a time inside the backward kernel).

The training step is bandwidth-bound on the (B, H, K) short-term weights.  The forward kernel
visits one row G[h, :] at a time: a first loop over k reads F for both the row norm and the row
product G z, a second loop writes F' (the row is still in the L1 cache, so F comes from memory
once).  It saves only F (an input, not copied), z and the (B, H)-sized s, N, d, y; G is recomputed
in the backward.  The backward, derived by hand from the equations above (incoming gradients
P = dL/dF', gy = dL/dy, and dL/dN, dL/da where the extras ``norm``, ``pre`` are used):

    r1 = sum_k P gamma z,   r2 = sum_k P lam F                    (row reductions, first loop)
    ga = (gy + r1)(1 - y^2) + dL/da,   gd = ga / N
    gN = dL/dN - (ga d + r2) / N^2,    c = gN / s   (c = 0 where s = 0: the subgradient 0 of
                                                    ||G|| at a zero row, as torch.linalg.vector_norm)
    dG = gd z^T + c G                                              (elementwise, second loop)
    dF = P lam / N + dG,   dz = G^T gd + (P gamma)^T y,   db = sum_b ga,
    dW = sum_b dG,   dlam = sum_b P F / N,   dgamma = sum_b P y z^T.

The parameter gradients are summed over the batch inside the kernel; the loops run h outer and b
inner so that the rows of W, lam, gamma and of their gradients stay in cache across the batch.
Sums are reassociated (``fastmath={"reassoc"}``: vector partial sums, a fixed order for a given
build and CPU, so results are deterministic); no other fast-math flag.  Equal to autograd of the
eager step to ~1e-13 relative in float64 and ~1e-5 in float32 (tests/test_stpn_kernel.py).

:data:`AVAILABLE` is False where numba cannot be imported; :func:`kernel_step` wraps a fallback
step (the torch.compile'd one in training) and sends it every call the kernel does not cover.
"""
from __future__ import annotations

import warnings

import numpy as np
import torch

try:
    from numba import njit
    AVAILABLE = True
except ImportError:          # pragma: no cover - numba is a dependency
    AVAILABLE = False

_JIT = njit(cache=True, nogil=True, fastmath={"reassoc"}) if AVAILABLE else (lambda f: f)


@_JIT
def _forward(W, bias, lam, gamma, z, F, eps, one, f_max, F_new, s_out, N_out, d_out, pre_out, y_out):
    """Fills F_new (B, H, K) and s, N, d, pre, y (B, H) from W, lam, gamma (H, K), bias (H),
    z (B, K), F (B, H, K); ``eps``, ``one`` and ``f_max`` (inf: no clip) are scalars of the
    arrays' dtype."""
    B, H, K = F.shape
    for h in range(H):
        for b in range(B):
            ss = eps - eps          # zeros of the arrays' dtype (eps * 0 would be float64)
            dd = eps - eps
            for k in range(K):
                g = W[h, k] + F[b, h, k]
                ss += g * g
                dd += g * z[b, k]
            s = np.sqrt(ss)
            n = s + eps
            a = dd / n + bias[h]
            y = np.tanh(a)
            s_out[b, h] = s
            N_out[b, h] = n
            d_out[b, h] = dd
            pre_out[b, h] = a
            y_out[b, h] = y
            inv = one / n
            for k in range(K):
                u = lam[h, k] * (F[b, h, k] * inv) + gamma[h, k] * (y * z[b, k])
                F_new[b, h, k] = min(max(u, -f_max), f_max)


@_JIT
def _unclipped_row(lr, gr, zr, Fr, inv, y, f_max, zero, Pr, out):
    """out[k] = Pr[k] where -f_max <= u[k] <= f_max, else 0: the clip's gradient on one row, u
    recomputed by the same operations as in :func:`_forward` (so bit for bit the same u)."""
    for k in range(Pr.shape[0]):
        u = lr[k] * (Fr[k] * inv) + gr[k] * (y * zr[k])
        out[k] = Pr[k] if (u >= -f_max and u <= f_max) else zero


@_JIT
def _backward(W, lam, gamma, z, F, s_in, N_in, d_in, y_in, gy, gpre, gnorm, P, one, f_max,
              dF, dz, db, dW, dlam, dgamma):
    """Gradients of one step (module docstring).  Inputs as saved by :func:`_forward` plus the
    incoming gradients gy, gpre, gnorm (B, H) and P (B, H, K), and ``f_max`` (inf: no clip);
    writes dF (B, H, K) and, summed over the batch, db (H), dW, dlam, dgamma (H, K); dz (B, K).
    Every output is overwritten.  With a clip, P is first zeroed where u lies outside
    [-f_max, f_max] (:func:`_unclipped_row`), row by row into a (B, K) scratch."""
    B, H, K = F.shape
    zero = one - one            # of the arrays' dtype (one * 0 would be float64)
    clip = f_max < np.inf
    gd = np.empty(B, dtype=F.dtype)
    c = np.empty(B, dtype=F.dtype)
    inv = np.empty(B, dtype=F.dtype)
    Pm = np.empty((B, K) if clip else (0, K), dtype=F.dtype)
    for b in range(B):
        for k in range(K):
            dz[b, k] = zero
    for h in range(H):
        db[h] = zero
        # first pass: the row reductions, per batch element
        for b in range(B):
            y = y_in[b, h]
            s = s_in[b, h]
            inv[b] = one / N_in[b, h]
            if clip:
                Pr = Pm[b]
                _unclipped_row(lam[h], gamma[h], z[b], F[b, h], inv[b], y, f_max, zero, P[b, h], Pr)
            else:
                Pr = P[b, h]
            r1 = zero
            r2 = zero
            for k in range(K):
                p = Pr[k]
                r1 += p * gamma[h, k] * z[b, k]
                r2 += p * lam[h, k] * F[b, h, k]
            ga = (gy[b, h] + r1) * (one - y * y) + gpre[b, h]
            db[h] += ga
            gd[b] = ga * inv[b]
            gN = gnorm[b, h] - (ga * d_in[b, h] + r2) * (inv[b] * inv[b])
            c[b] = gN / s if s > zero else zero
        # second pass: elementwise, with the batch inside (the rows of W, lam, gamma and of their
        # gradients stay in cache across the batch); one simple loop per output, so that each
        # vectorises (one fused loop over ten arrays does not: too many possible aliases)
        Wr, lr, gr = W[h], lam[h], gamma[h]
        dWr, dlr, dgr = dW[h], dlam[h], dgamma[h]
        for k in range(K):
            dWr[k] = zero
            dlr[k] = zero
            dgr[k] = zero
        for b in range(B):
            gdb, cb, ib, y = gd[b], c[b], inv[b], y_in[b, h]
            Pr = Pm[b] if clip else P[b, h]         # the scratch still holds row h
            Fr, zr, dFr, dzr = F[b, h], z[b], dF[b, h], dz[b]
            for k in range(K):
                dFr[k] = Pr[k] * lr[k] * ib + (gdb * zr[k] + cb * (Wr[k] + Fr[k]))
            for k in range(K):
                dWr[k] += gdb * zr[k] + cb * (Wr[k] + Fr[k])
            for k in range(K):
                dlr[k] += Pr[k] * (Fr[k] * ib)
            for k in range(K):
                dgr[k] += Pr[k] * (y * zr[k])
            for k in range(K):
                dzr[k] += gdb * (Wr[k] + Fr[k]) + Pr[k] * gr[k] * y


def _np(t: torch.Tensor) -> np.ndarray:
    return t.detach().contiguous().numpy()


class STPNStepFunction(torch.autograd.Function):
    """``h_new, F_new, norm, pre = STPNStepFunction.apply(W, b, lam, gamma, z, F, eps, f_max)``:
    one STPN step on contiguous CPU tensors of one dtype (float32 or float64); ``f_max`` None: no
    clip.  Every output is differentiable (``norm`` and ``pre`` too); gradients for W, b, lam,
    gamma, z, F."""

    @staticmethod
    def forward(ctx, W, b, lam, gamma, z, F, eps, f_max=None):
        B, H, K = F.shape
        dt = np.dtype(str(F.dtype).replace("torch.", ""))
        F_new = torch.empty_like(F, memory_format=torch.contiguous_format)
        s, N, d, pre, y = (torch.empty(B, H, dtype=F.dtype) for _ in range(5))
        ctx.f_max = None if f_max is None else dt.type(f_max)
        _forward(_np(W), _np(b), _np(lam), _np(gamma), _np(z), _np(F), dt.type(eps), dt.type(1),
                 dt.type(np.inf) if f_max is None else ctx.f_max,
                 F_new.numpy(), s.numpy(), N.numpy(), d.numpy(), pre.numpy(), y.numpy())
        ctx.save_for_backward(W, lam, gamma, z, F, s, N, d, y)
        ctx.set_materialize_grads(False)
        return y, F_new, N, pre

    @staticmethod
    def backward(ctx, gy, gF_new, gnorm, gpre):
        W, lam, gamma, z, F, s, N, d, y = ctx.saved_tensors
        B, H, K = F.shape
        dt = np.dtype(str(F.dtype).replace("torch.", ""))

        def bh(g):
            return torch.zeros(B, H, dtype=F.dtype) if g is None else g

        P = torch.zeros_like(F) if gF_new is None else gF_new
        dF = torch.empty(B, H, K, dtype=F.dtype)
        dz = torch.empty(B, K, dtype=F.dtype)
        db = torch.empty(H, dtype=F.dtype)
        dW, dlam, dgamma = (torch.empty(H, K, dtype=F.dtype) for _ in range(3))
        _backward(_np(W), _np(lam), _np(gamma), _np(z), _np(F), s.numpy(), N.numpy(), d.numpy(),
                  y.numpy(), _np(bh(gy)), _np(bh(gpre)), _np(bh(gnorm)), _np(P), dt.type(1),
                  dt.type(np.inf) if ctx.f_max is None or gF_new is None else ctx.f_max,
                  dF.numpy(), dz.numpy(), db.numpy(), dW.numpy(), dlam.numpy(), dgamma.numpy())
        need = ctx.needs_input_grad
        return (dW if need[0] else None, db if need[1] else None, dlam if need[2] else None,
                dgamma if need[3] else None, dz if need[4] else None, dF if need[5] else None, None, None)


def fused_stpn_step(W, b, lam, gamma, x, h, F, *, norm_eps: float, f_max=None, hebb_noise=None):
    """:func:`snn_agent.stpn.stpn_step` without energy, through the kernels: ``(h_new, F_new,
    {"z", "norm", "pre"})``, every value differentiable; ``hebb_noise`` of shape (H, K) or
    (1, H, K) (one factor per synapse, shared by the batch)."""
    z = torch.cat([x, h], dim=-1)
    if hebb_noise is not None:
        gamma = gamma * hebb_noise.reshape(gamma.shape)
    h_new, F_new, norm, pre = STPNStepFunction.apply(W, b, lam, gamma, z, F, norm_eps, f_max)
    return h_new, F_new, {"z": z, "norm": norm, "pre": pre}


def covers(tensors, hebb_noise, energy) -> bool:
    """Whether the kernel computes this call: no energy proxy, Hebbian noise (if any) one factor
    per synapse shared by the batch ((H, K) or (1, H, K)), all tensors on the CPU in one dtype,
    float32 or float64.  With or without gradients: PPO's no-grad rollout then runs the same
    forward kernel as its re-run with gradients, so the plain STPN's first-pass probability
    ratios are exactly 1."""
    if energy:
        return False
    if hebb_noise is not None:
        if tuple(hebb_noise.shape) not in (tuple(tensors[0].shape), (1, *tensors[0].shape)):
            return False
        tensors = (*tensors, hebb_noise)
    dtype = tensors[0].dtype
    return (dtype in (torch.float32, torch.float64)
            and all(t.device.type == "cpu" and t.dtype == dtype for t in tensors))


_READY: dict = {}


def _compiles(dtype) -> bool:
    """Compile (or load from numba's cache) the kernels for ``dtype`` and run them once on tiny
    tensors; False, with one RuntimeWarning, where that raises."""
    if dtype not in _READY:
        try:
            g = torch.Generator().manual_seed(0)
            args = [torch.rand(s, dtype=dtype, generator=g, requires_grad=True)
                    for s in ((2, 3), (2,), (2, 3), (2, 3), (1, 1), (1, 2), (1, 2, 3))]
            with torch.enable_grad():      # the first call may come from a no-grad rollout
                for f_max in (None, 0.5):          # the plain step, and the clipped one
                    h, F, ex = fused_stpn_step(*args, norm_eps=1e-16, f_max=f_max)
                    torch.autograd.grad((h.sum() + F.sum() + ex["norm"].sum() + ex["pre"].sum()), args)
            _READY[dtype] = True
        except Exception as exc:  # noqa: BLE001 - any numba failure: fall back, visibly
            warnings.warn(f"the numba STPN kernel failed ({type(exc).__name__}: {exc}); using the "
                          "torch step", RuntimeWarning, stacklevel=3)
            _READY[dtype] = False
    return _READY[dtype]


def kernel_step(fallback, default_eps: float = 1e-16):
    """A step function with :func:`snn_agent.stpn.stpn_step`'s signature: the kernels where
    :func:`covers` holds (and they compile), ``fallback`` for every other call; ``default_eps``:
    the row-norm epsilon where the call gives none (the STPN's NORM_EPS)."""

    def step(W, b, lam, gamma, x, h, F, *, f_max=None, hebb_noise=None, energy=False,
             norm_eps=None):
        kw = {} if norm_eps is None else {"norm_eps": norm_eps}
        tensors = (W, b, lam, gamma, x, h, F)
        if covers(tensors, hebb_noise, energy) and _compiles(F.dtype):
            return fused_stpn_step(*tensors, norm_eps=default_eps if norm_eps is None else norm_eps,
                                   f_max=f_max, hebb_noise=hebb_noise)
        return fallback(*tensors, f_max=f_max, hebb_noise=hebb_noise, energy=energy, **kw)

    return step
