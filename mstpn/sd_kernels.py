"""Float sigma-delta kernels shared by the NumPy runner and the Lava floating_pt models.

Semantics (one call of ``step`` = one frame), for every layer with output activation a_t:

* the receiver side integrates the incoming graded events:  sigma += W * delta_in
  (conv: the transposed-free "conv of the deltas", which is exact by linearity);
* the neuron computes a_t = act(sigma + b);
* the sender emits delta = a_t - ref on the units where |a_t - ref| > threshold and sets ref = a_t
  there (threshold 0: every change is sent and the network equals the dense one).

The STPN layer reconstructs its input x_t from the events (x_hat = sum of received deltas) and
computes, exactly as :func:`snn_agent.stpn.stpn_step` in float64:
z = [x_hat; h_sent] (h_sent: what its own sigma-delta sender sent up to the previous frame),
G = W + F, N = ||G||_row + norm_eps, h' = tanh(G z / N + b), F' = clip(lam * F / N + gamma * h' z^T,
+-f_max) (conversion.graph.PlasticSTPN).  Its output h' goes through its own sigma-delta sender.
"""
from __future__ import annotations

import numpy as np

NORM_EPS = 1e-16


def act_fn(name: str, x: np.ndarray) -> np.ndarray:
    if name == "relu":
        return np.maximum(x, 0.0)
    if name == "tanh":
        return np.tanh(x)
    return x


def conv_indices(in_shape, weight_shape, stride):
    """(pre, post, widx) of every synapse of a valid conv: flat input index, flat output index and
    flat weight index, in C order."""
    ci_n, h, w = in_shape
    co_n, ci_w, k, k2 = weight_shape
    assert ci_w == ci_n and k == k2
    ho, wo = (h - k) // stride + 1, (w - k) // stride + 1
    co, oy, ox, ci, ky, kx = np.meshgrid(np.arange(co_n), np.arange(ho), np.arange(wo), np.arange(ci_n),
                                         np.arange(k), np.arange(k), indexing="ij")
    pre = ((ci * h + oy * stride + ky) * w + ox * stride + kx).ravel()
    post = ((co * ho + oy) * wo + ox).ravel()
    widx = (((co * ci_n + ci) * k + ky) * k + kx).ravel()
    return pre, post, widx


def conv2d(x: np.ndarray, weight: np.ndarray, stride: int) -> np.ndarray:
    """Valid cross-correlation of x (Ci, H, W) with weight (Co, Ci, k, k): (Co, Ho, Wo)."""
    ci, h, w = x.shape
    co, _, k, _ = weight.shape
    ho, wo = (h - k) // stride + 1, (w - k) // stride + 1
    s0, s1, s2 = x.strides
    patches = np.lib.stride_tricks.as_strided(x, (ci, k, k, ho, wo), (s0, s1, s2, s1 * stride, s2 * stride))
    return np.tensordot(weight, patches, axes=([1, 2, 3], [0, 1, 2]))


def fan_out(in_shape, weight_shape, stride) -> np.ndarray:
    """Number of synapses leaving each input unit of a valid conv (for synop counts)."""
    pre, _, _ = conv_indices(in_shape, weight_shape, stride)
    return np.bincount(pre, minlength=int(np.prod(in_shape))).astype(np.int64)


class SigmaDeltaSender:
    """ref (last sent value) and the threshold rule."""

    def __init__(self, n: int, threshold: float):
        self.ref = np.zeros(n)
        self.threshold = np.broadcast_to(np.asarray(threshold, np.float64), (n,)).copy()

    def reset(self):
        self.ref[:] = 0.0

    def send(self, a: np.ndarray) -> np.ndarray:
        diff = a - self.ref
        fire = np.abs(diff) > self.threshold
        delta = np.where(fire, diff, 0.0)
        self.ref = np.where(fire, a, self.ref)
        return delta


class LayerKernel:
    """One layer of a NetSpec in float64: ``step(delta_in) -> (a, delta_out, synops)``."""

    def __init__(self, layer, in_shape):
        self.layer = layer
        self.kind = layer.kind
        self.in_shape = in_shape
        p = layer.params
        n_in = int(np.prod(in_shape)) if in_shape is not None else 0
        self.sender = SigmaDeltaSender(layer.size, layer.threshold)
        if self.kind == "conv":
            self.weight, self.stride = p["weight"], int(p["stride"])
            self.bias = np.repeat(np.asarray(p["bias"], np.float64), int(np.prod(layer.shape[1:])))
            self.fan = fan_out(in_shape, self.weight.shape, self.stride)
        elif self.kind == "dense":
            self.weight, self.bias = p["weight"], p["bias"]
        elif self.kind == "stpn":
            self.W, self.b, self.lam, self.gamma = p["W"], p["b"], p["lam"], p["gamma"]
            self.n_in = n_in
            self.f_max = float(p.get("f_max", np.inf))
            self.norm_eps = float(p.get("norm_eps", NORM_EPS))
        self.reset()

    def reset(self):
        self.sender.reset()
        n = self.layer.size
        if self.kind in ("conv", "dense"):
            self.sigma = np.zeros(n)
        elif self.kind == "stpn":
            self.x_hat = np.zeros(self.n_in)
            self.h = np.zeros(n)
            self.F = np.zeros_like(self.W)

    def step(self, inp: np.ndarray):
        """``inp``: the frame (input layer, pixels) or the incoming delta vector (flat)."""
        layer = self.layer
        if self.kind == "input":
            a = inp.reshape(-1).astype(np.float64) * layer.params["scale"]
            synops = 0
        elif self.kind == "conv":
            nz = inp != 0
            if nz.any():
                self.sigma += conv2d(inp.reshape(self.in_shape), self.weight, self.stride).reshape(-1)
            a = act_fn(layer.act, self.sigma + self.bias)
            synops = int(self.fan[nz].sum())
        elif self.kind == "dense":
            nz = inp != 0
            if nz.any():
                self.sigma += self.weight[:, nz] @ inp[nz]
            a = act_fn(layer.act, self.sigma + self.bias)
            synops = int(nz.sum()) * layer.size
        else:  # stpn
            self.x_hat += inp
            z = np.concatenate([self.x_hat, self.sender.ref])   # h_sent of the previous frame
            G = self.W + self.F
            norm = np.sqrt(np.einsum("hk,hk->h", G, G)) + self.norm_eps
            pre = (G @ z) / norm + self.b
            h = act_fn(layer.act, pre)
            F = self.lam * (self.F / norm[:, None]) + self.gamma * (h[:, None] * z[None, :])
            self.F = F if not np.isfinite(self.f_max) else np.clip(F, -self.f_max, self.f_max)
            self.h = h
            a = h
            synops = int(np.count_nonzero(inp)) * layer.size + 3 * self.W.size  # integrate + norm, G z, Hebbian
        delta = self.sender.send(a)
        return a, delta, synops
