"""What the computing node kinds of the network IR mean, written once.

Plain functions of an ops object (:mod:`mstpn_base.ops`), like the device equations: the NumPy
reference simulator evaluates them on arrays (float, and the sigma-delta rule also on integers),
the PyTorch STPN and the snnTorch form on tensors, and the Brian2 backend generates its code from
them (:mod:`brian_models.codegen`).  Shapes are the caller's: each function is elementwise, so a
caller passes broadcastable operands (e.g. F (B, H, K), N[..., None], h[..., None], z[..., None, :]).

SigmaDelta (a unit that sends the change of its activation y when it exceeds a threshold)::

    y = act(u)                          identity, relu = max(u, 0), or tanh
    e = y - sent;  fire = |e| > threshold;  e <- fire ? e : 0;  sent <- sent + e

PlasticSTPN (Rodriguez, Guo & Moraitis, ICML 2022; z = [x ; h_sent of the previous frame])::

    N = sqrt(sum_f (W + F)_hf^2) + eps                 row norm
    a = sum_f (W + F)_hf z_f / N + b                   pre-activation; h = tanh(a)
    F <- clip(lam F / N + gamma (h z^T) [x noise], -f_max, f_max)
"""
from __future__ import annotations

ACTIVATIONS = ("identity", "relu", "tanh")


def activation(ops, kind: str, u):
    """y = act(u) of a SigmaDelta (or rate-coded) neuron."""
    if kind == "relu":
        return ops.maximum(u, 0.0)
    if kind == "tanh":
        return ops.tanh(u)
    return u


def change(y, sent):
    """What a sigma-delta unit would send: e = y - sent (the payload of its event)."""
    return y - sent


def sigma_delta(ops, y, sent, threshold):
    """The sender: returns (events e, new sent value, fire mask); integers stay integers."""
    e = change(y, sent)
    fire = ops.abs(e) > threshold
    e = ops.where(fire, e, 0)
    return e, sent + e, fire


def stpn_norm(ops, sum_sq, eps):
    """N = sqrt(sum_f G_hf^2) + eps (``sum_sq``: the row sums of G^2)."""
    return ops.sqrt(sum_sq) + eps


def stpn_preactivation(dot, norm, b):
    """a = (G z) / N + b (``dot``: the row products G z)."""
    return dot / norm + b


def stpn_plasticity(ops, F, norm, lam, gamma, h, z, f_max=None, noise=None):
    """F <- clip(lam F / N + gamma h z^T, +-f_max) (``noise``: a factor on the Hebbian term, the
    update pulses' cycle-to-cycle variability; ``f_max`` None: unbounded)."""
    hebb = gamma * (h * z)
    if noise is not None:
        hebb = hebb * noise
    F_new = lam * (F / norm) + hebb
    return F_new if f_max is None else ops.clip(F_new, -f_max, f_max)
