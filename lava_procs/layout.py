"""The project's array layouts in Lava's: (C, H, W) arrays as Lava's (X, Y, C), and correlation
kernels (C_out, C_in, H, W) as the kernels of Lava's Conv, which convolves: (C_out, W, H, C_in),
flipped in W and H."""
from __future__ import annotations

import numpy as np


def lava_shape(shape) -> tuple:
    """Lava's (X, Y, C) order of a project (C, H, W) shape (1-D shapes unchanged)."""
    return tuple(reversed(tuple(int(s) for s in shape)))


def to_lava(a) -> np.ndarray:
    """A project (C, H, W) array in Lava's (X, Y, C) layout (its inverse too: the axes reversed)."""
    a = np.asarray(a)
    return a.transpose(*reversed(range(a.ndim)))


def conv_kernel(w) -> np.ndarray:
    """A correlation kernel (C_out, C_in, H, W) (PyTorch, NIR) as Lava Conv's (C_out, W, H, C_in),
    flipped (Lava's Conv convolves), contiguous."""
    return np.ascontiguousarray(np.asarray(w).transpose(0, 3, 2, 1)[:, ::-1, ::-1, :])
