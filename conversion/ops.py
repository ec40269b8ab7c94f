"""Vectorised NumPy operators shared by the simulators: strided 2-d convolution (float or int64)
and the fan-out of every presynaptic unit (for counting synaptic operations)."""
from __future__ import annotations

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view


def conv2d(x: np.ndarray, w: np.ndarray, stride=(1, 1), padding=(0, 0)) -> np.ndarray:
    """Cross-correlation as torch.nn.functional.conv2d without bias: x (B, C, H, W), w (O, C, kh, kw)
    -> (B, O, Ho, Wo); dtype follows the inputs (int64 stays exact)."""
    ph, pw = padding
    if ph or pw:
        x = np.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw)))
    kh, kw = w.shape[2:]
    win = sliding_window_view(x, (kh, kw), axis=(2, 3))[:, :, :: stride[0], :: stride[1]]  # B C Ho Wo kh kw
    return np.einsum("bchwij,ocij->bohw", win, w, optimize=True)


def conv_fanout(in_shape, w_shape, stride, padding) -> np.ndarray:
    """Number of synapses leaving each input unit (C, H, W) of a conv layer: C_out x (number of
    output positions whose window covers the unit's position)."""
    C, H, W = in_shape
    kh, kw = w_shape[2:]
    (sh, sw), (ph, pw) = stride, padding
    Ho, Wo = (H + 2 * ph - kh) // sh + 1, (W + 2 * pw - kw) // sw + 1
    cover = np.zeros((H + 2 * ph, W + 2 * pw), np.int64)
    for i in range(Ho):
        for j in range(Wo):
            cover[i * sh: i * sh + kh, j * sw: j * sw + kw] += 1
    cover = cover[ph: ph + H, pw: pw + W] * int(w_shape[0])
    return np.broadcast_to(cover, (C, H, W)).copy()


#: float64 represents every integer of magnitude below 2**53 exactly; integer sums and products kept
#: below EXACT_FLOAT (with a margin of 2 for the last rounding) are computed exactly in float64
EXACT_FLOAT = float(2**52)


def exact_in_float(bound) -> bool:
    """Whether integer arithmetic whose every operand, product and partial sum is at most ``bound``
    in magnitude is exact in float64 (``bound`` < 2**52)."""
    return bool(bound < EXACT_FLOAT)


def row_dots(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """sum_k a[..., h, k] b[..., h, k] for float arrays (..., H, K), one BLAS dot per row."""
    return np.matmul(a[..., :, None, :], b[..., :, :, None])[..., 0, 0]


def matvec(a: np.ndarray, x: np.ndarray) -> np.ndarray:
    """sum_k a[b, h, k] x[b, k] for float arrays (BLAS); (B, H, K), (B, K) -> (B, H)."""
    return np.matmul(a, x[:, :, None])[:, :, 0]


class EventConv2d:
    """One Conv2d synapse layer (weight (O, C, kh, kw), input (C, H, W)), built once, applied to a
    batch of flat inputs (B, C*H*W) -> (B, O*Ho*Wo) (no bias); the arithmetic of :func:`conv2d`.

    Two kernels:
    - :meth:`dense`: im2col with a precomputed gather index and one matrix product;
    - :meth:`scatter`: event-driven, only the active (non-zero) inputs: each adds w * e over its
      output window (``fan`` entries of a precomputed (input, fan-out) table; sums by bincount).
    :meth:`__call__` takes whichever does less work for the number of active inputs.

    Integer inputs stay exact: they are computed in float64 when every partial sum is below 2**52
    (max |x| times the largest sum of |w| over one output's window), else in int64.
    """

    #: the scatter kernel costs about this many dense multiply-accumulates per event synapse
    #: (NumPy gather + bincount against one BLAS product; measured on the Pong convs on the 2-core
    #: CPU machine, 2026-12: 3.5 ns per event synapse, 0.1 ns per dense MAC)
    SCATTER_COST = 32

    def __init__(self, weight, in_shape, stride=(1, 1), padding=(0, 0)):
        w = np.asarray(weight)
        self.integer = np.issubdtype(w.dtype, np.integer)
        O, C, kh, kw = w.shape
        Cin, H, W = in_shape
        if Cin != C:
            raise ValueError(f"weight has {C} input channels, input shape {tuple(in_shape)}")
        (sh, sw), (ph, pw) = stride, padding
        Ho, Wo = (H + 2 * ph - kh) // sh + 1, (W + 2 * pw - kw) // sw + 1
        self.in_shape, self.out_shape = (C, H, W), (O, Ho, Wo)
        self.n_in, self.n_out = C * H * W, O * Ho * Wo
        # im2col: for output position (i, j) and kernel entry (c, a, b) the flat input index, or
        # n_in (a zero appended to the input) where the window lies in the padding
        c, a, b = np.meshgrid(np.arange(C), np.arange(kh), np.arange(kw), indexing="ij")
        i, j = np.meshgrid(np.arange(Ho), np.arange(Wo), indexing="ij")
        y = i.reshape(-1, 1) * sh + a.reshape(1, -1) - ph                  # (Ho*Wo, C*kh*kw)
        x = j.reshape(-1, 1) * sw + b.reshape(1, -1) - pw
        inside = (y >= 0) & (y < H) & (x >= 0) & (x < W)
        src = np.where(inside, (c.reshape(1, -1) * H + y) * W + x, self.n_in)
        self.cols = src.astype(np.intp)
        self.padded = not bool(inside.all())                                   # a window reaches the padding
        self.cols_t = np.ascontiguousarray(self.cols.T)                       # (C*kh*kw, Ho*Wo)
        self.wmat = np.ascontiguousarray(w.reshape(O, -1).T)                 # (C*kh*kw, O)
        self.wmat_f = self.wmat.astype(np.float64)
        self.wrow, self.wrow_f = np.ascontiguousarray(self.wmat.T), np.ascontiguousarray(self.wmat_f.T)  # (O, C*kh*kw)
        self.dense_macs = self.n_out * C * kh * kw
        # scatter table: for each input unit the output units it reaches and the weights, padded to
        # the largest fan-out with the sink index n_out and weight 0
        pos = np.repeat(np.arange(Ho * Wo), C * kh * kw)[inside.reshape(-1)]
        ent = np.tile(np.arange(C * kh * kw), Ho * Wo)[inside.reshape(-1)]
        inp = src.reshape(-1)[inside.reshape(-1)]
        inp_all = np.repeat(inp, O)
        out_all = (np.arange(O)[None, :] * (Ho * Wo) + pos[:, None]).reshape(-1)
        w_all = self.wmat_f[ent].reshape(-1)
        order = np.argsort(inp_all, kind="stable")
        inp_all, out_all, w_all = inp_all[order], out_all[order], w_all[order]
        fan = np.bincount(inp_all, minlength=self.n_in)
        self.fan_max = int(fan.max()) if fan.size else 0
        slot = np.arange(inp_all.size) - np.repeat(np.cumsum(fan) - fan, fan)
        self.idx = np.full((self.n_in, self.fan_max), self.n_out, np.intp)
        self.wtab = np.zeros((self.n_in, self.fan_max))
        self.idx[inp_all, slot] = out_all
        self.wtab[inp_all, slot] = w_all
        # the largest sum of |w| into one output: bounds every partial sum by max|x| times it
        self.wabs_max = float(np.abs(self.wmat_f).sum(axis=0).max()) if self.wmat.size else 0.0

    def _float_ok(self, x) -> bool:
        return (not self.integer) or exact_in_float(float(np.max(np.abs(x), initial=0)) * self.wabs_max)

    def dense(self, x: np.ndarray) -> np.ndarray:
        """(B, n_in) -> (B, n_out), every input read: (O, C kh kw) @ im2col (C kh kw, Ho Wo)."""
        B = x.shape[0]
        exact = self._float_ok(x)
        dt = np.float64 if exact else x.dtype
        if self.padded:
            ext = np.zeros((B, self.n_in + 1), dt)
            ext[:, : self.n_in] = x
        else:
            ext = x.astype(dt, copy=False)
        out = (self.wrow_f if exact else self.wrow) @ np.take(ext, self.cols_t, axis=1)   # (B, O, Ho*Wo)
        out = out.reshape(B, self.n_out)
        return out.astype(np.int64) if self.integer else out

    def scatter(self, x: np.ndarray, active=None) -> np.ndarray:
        """(B, n_in) -> (B, n_out), only the non-zero inputs (``active``: their flat indices into x)."""
        B = x.shape[0]
        flat = x.reshape(-1)
        active = np.flatnonzero(flat) if active is None else active
        unit = active % self.n_in
        e = flat[active]
        dest = self.idx[unit] + (active // self.n_in * (self.n_out + 1))[:, None]
        if self._float_ok(e):
            out = np.bincount(dest.reshape(-1), (self.wtab[unit] * e[:, None].astype(np.float64)).reshape(-1),
                              minlength=B * (self.n_out + 1))
            out = out.reshape(B, self.n_out + 1)[:, : self.n_out]   # (bincount of no events: int zeros)
            return out.astype(np.int64 if self.integer else np.float64, copy=False)
        out = np.zeros(B * (self.n_out + 1), np.int64)
        np.add.at(out, dest.reshape(-1), (self.wtab[unit].astype(np.int64) * e[:, None]).reshape(-1))
        return out.reshape(B, self.n_out + 1)[:, : self.n_out]

    def __call__(self, x: np.ndarray, active=None) -> np.ndarray:
        """The events ``x`` (B, n_in) through the layer, by the cheaper kernel (``active``: the
        flat indices of the non-zero entries of x, if known)."""
        active = np.flatnonzero(x) if active is None else active
        if active.size * self.fan_max * self.SCATTER_COST < self.dense_macs * x.shape[0]:
            return self.scatter(x, active)
        return self.dense(x)
