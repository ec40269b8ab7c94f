"""Backpropagation through time of a whole STPN sequence in one autograd node (training speed).

The forward pass runs the layer's own step (:func:`snn_agent.stpn.stpn_step`, compiled or eager)
without an autograd graph and keeps, per step t, the input state F_t and the step's z_t, N_t,
a_t, h_{t+1}.  The backward pass walks the sequence in reverse with the chain rule of that step
(:func:`stpn_step_backward`), accumulating the gradients of W, b, lambda, gamma.  Same
equations, same gradients as autograd through the step loop up to float rounding (reductions
summed in another order); on one CPU core it avoids the per-step autograd graph (a dozen saved
(B, H, K) intermediates and the engine's bookkeeping per step).

Gradient of one step, with G = W + F_t, P = F_t / N, y = h_{t+1}, g_X = dLoss/dX::

    g_lam   += sum_B g_Fn (.) P                 g_gamma += sum_B g_Fn (.) (y z^T)
    g_y     += sum_f g_Fn gamma z               g_a      = g_y (1 - y^2)        (tanh)
    g_dot    = g_a / N                          g_b     += sum_B g_a
    g_N      = -sum_f (g_Fn lam) P / N - g_dot (a - b)
    g_G      = g_dot z^T + G g_N / (N - eps)                     (N = sqrt(sum_f G^2) + eps)
    g_W     += sum_B g_G                        g_F      = g_Fn lam / N + g_G
    g_z      = sum_h (g_Fn gamma y + g_dot G)   (split into g_x and g_h of the previous step)

A state reset after step t (episode end: h, F multiplied by keep_t = 1 - done_t) multiplies the
gradients flowing into step t's outputs by keep_t.  Only the plain STPN (no F clipping, no
Hebbian noise) takes this path; :func:`core_sequence` runs any other core step by step.
"""
from __future__ import annotations

import numpy as np
import torch

from snn_agent.policy import reset_state
from snn_agent.stpn import NORM_EPS, STPN, STPNState, stpn_step, with_eager_fallback


def stpn_step_backward(W, b, lam, gamma, F, z, norm, pre, h_new, g_F_new, g_h_new, acc, norm_eps: float = NORM_EPS):
    """Chain rule of one :func:`snn_agent.stpn.stpn_step` (module docstring).  Shapes as
    ``stpn_step``; ``norm``, ``pre``, ``h_new``, ``z``: that step's outputs; ``g_F_new`` (B, H, K),
    ``g_h_new`` (B, H): gradients of its outputs; ``acc``: the gradients (g_W, g_b, g_lam, g_gamma)
    of the later steps.  Returns ``(g_F, g_z, acc + this step's share)``.

    Written as broadcasts and sums (no matmul) so that ``torch.compile`` fuses it into a few loops
    over the (B, H, K) tensors; with the accumulation inside, no per-step parameter-sized adds."""
    acc_W, acc_b, acc_lam, acc_gamma = acc
    n3 = norm.unsqueeze(-1)
    zz, yy = z.unsqueeze(-2), h_new.unsqueeze(-1)
    P = F / n3
    g_hebb = g_F_new * gamma
    g_pre = (g_h_new + (g_hebb * zz).sum(-1)) * (1.0 - h_new * h_new)
    g_dot = g_pre / norm
    g_P = g_F_new * lam
    c = (-(g_P * P).sum(-1) / norm - g_dot * (pre - b)) / (norm - norm_eps)      # g_N / (N - eps)
    d3, G = g_dot.unsqueeze(-1), W.unsqueeze(0) + F
    g_G = d3 * zz + c.unsqueeze(-1) * G
    g_z = (g_hebb * yy + d3 * G).sum(-2)
    acc = (acc_W + g_G.sum(0), acc_b + g_pre.sum(0), acc_lam + (g_F_new * P).sum(0),
           acc_gamma + (g_F_new * (yy * zz)).sum(0))
    return g_P / n3 + g_G, g_z, acc


_COMPILED_BACKWARD = None


def compiled_step_backward():
    """:func:`stpn_step_backward` compiled by ``torch.compile`` (eager on a compiler failure)."""
    global _COMPILED_BACKWARD
    if _COMPILED_BACKWARD is None:
        _COMPILED_BACKWARD = with_eager_fallback(torch.compile(stpn_step_backward, dynamic=False),
                                                 stpn_step_backward)
    return _COMPILED_BACKWARD


class _Sequence(torch.autograd.Function):
    """hs (T, B, H) of the STPN over ``x`` (T, B, I) from (h0, F0), the state reset after every
    step whose ``dones`` row (numpy bool) has a true entry.  Autograd is off inside ``forward``."""

    @staticmethod
    def forward(ctx, step_fn, backward_fn, dones, W, b, lam, gamma, x, h0, F0):
        state, saved, hs = STPNState(h0, F0), [], []
        for t in range(x.shape[0]):
            h_new, F_new, ex = step_fn(W, b, lam, gamma, x[t], state.h, state.F)
            saved.append((state.F, ex["z"], ex["norm"], ex["pre"], h_new))
            hs.append(h_new)
            state = STPNState(h_new, F_new)
            if dones[t].any():
                state = reset_state(state, dones[t])
        ctx.saved_steps, ctx.backward_fn, ctx.dones = saved, backward_fn, dones
        ctx.save_for_backward(W, b, lam, gamma)
        ctx.input_size = x.shape[-1]
        return torch.stack(hs)

    @staticmethod
    def backward(ctx, g_hs):
        W, b, lam, gamma = ctx.saved_tensors
        saved, bwd, I, dones = ctx.saved_steps, ctx.backward_fn, ctx.input_size, ctx.dones
        acc = tuple(torch.zeros_like(p) for p in (W, b, lam, gamma))       # g_W, g_b, g_lam, g_gamma
        T = len(saved)
        g_x = g_hs.new_empty((T,) + saved[0][1][:, :I].shape)
        g = STPNState(torch.zeros_like(g_hs[0]), torch.zeros_like(saved[0][0]))   # gradients of (h, F)
        for t in range(T - 1, -1, -1):
            if dones[t].any():
                g = reset_state(g, dones[t])        # the reset is a product: same factor on the gradient
            F, z, norm, pre, h_new = saved[t]
            g_F, g_z, acc = bwd(W, b, lam, gamma, F, z, norm, pre, h_new, g.F, g.h + g_hs[t], acc)
            g_x[t] = g_z[:, :I]
            g = STPNState(g_z[:, I:], g_F)
            saved[t] = None                         # free the step's tensors during the walk
        ctx.saved_steps = None
        return (None, None, None) + acc + (g_x, g.h, g.F)


def fast_path(core) -> bool:
    """True where :func:`core_sequence` uses the one-node BPTT: the plain :class:`STPN` (its own
    forward, no F clipping)."""
    return isinstance(core, STPN) and type(core).forward is STPN.forward and core.f_max is None


def core_sequence(core, x, state, dones):
    """hs (T, B, H) of ``core`` over features ``x`` (T, B, I) from ``state``, the state zeroed
    after every step whose ``dones`` (T, B; numpy bool) is true, exactly as a step loop with
    :func:`snn_agent.policy.reset_state`; gradients flow through the whole sequence.  The plain
    STPN runs as one autograd node (module docstring), any other core step by step."""
    dones = np.asarray(dones, dtype=bool)
    if not (fast_path(core) and torch.is_grad_enabled()):
        hs = []
        for t, xt in enumerate(x.unbind(0)):   # unbind: no T zero-filled (T, B, I) gradients
            h, state, _ = core(xt, state)
            hs.append(h)
            if dones[t].any():
                state = reset_state(state, dones[t])
        return torch.stack(hs)
    p = core.effective_params()
    backward_fn = stpn_step_backward if core.step_fn is stpn_step else compiled_step_backward()
    return _Sequence.apply(core.step_fn, backward_fn, dones, p["W"], p["b"], p["lam"], p["gamma"], x,
                           state.h, state.F)
