"""Synthetic Pong-like frames (no emulator needed): a static background with two paddles and a
ball that move a few pixels per frame, as uint8 (T, 1, 84, 84).  For tests and quick demos."""
from __future__ import annotations

import numpy as np


def pong_like_frames(n: int, seed: int = 0, size: int = 84) -> np.ndarray:
    rng = np.random.default_rng(seed)
    frames = np.full((n, 1, size, size), 87, np.uint8)       # background grey
    frames[:, :, :6, :] = 236                                  # top wall
    frames[:, :, -6:, :] = 236                                 # bottom wall
    pos = rng.uniform(10, size - 20, 2)
    left, right = pos
    bx, by = rng.uniform(20, size - 20, 2)
    vx, vy = rng.choice([-2.0, 2.0]), rng.uniform(-2, 2)
    for t in range(n):
        left = np.clip(left + rng.integers(-3, 4), 6, size - 22)
        right = np.clip(right + rng.integers(-3, 4), 6, size - 22)
        bx, by = bx + vx, by + vy
        if not 8 <= bx <= size - 10:
            vx = -vx
        if not 8 <= by <= size - 10:
            vy = -vy
        f = frames[t, 0]
        f[int(left): int(left) + 16, 4:7] = 147
        f[int(right): int(right) + 16, size - 7: size - 4] = 147
        f[int(np.clip(by, 0, size - 2)): int(np.clip(by, 0, size - 2)) + 2,
          int(np.clip(bx, 0, size - 2)): int(np.clip(bx, 0, size - 2)) + 2] = 236
    return frames
