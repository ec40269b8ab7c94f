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
