"""Recorded observation sequences (``mstpn compare --obs FILE.npy``): read and validate.

The file is a NumPy ``.npy`` array of Pong frames as the agents see them: shape (T, 84, 84),
T >= 1, an integer dtype with pixel values 0..255 (uint8 as written by the recorder).  Pickled
objects are never loaded.  Every problem raises :class:`DataFormatError` naming the file.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from mstpn_base.errors import DataFormatError

FRAME_SHAPE = (84, 84)


def load_observations(path, frames: int | None = None) -> np.ndarray:
    """The first ``frames`` frames (all if None) of ``path`` as a uint8 (T, 84, 84) array."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"observation file not found: {path}")
    if path.is_dir():
        raise DataFormatError(f"{path}: is a folder, expected a .npy file of (T, 84, 84) frames")
    try:
        arr = np.load(path, mmap_mode="r", allow_pickle=False)
    except (ValueError, OSError, EOFError, UnicodeDecodeError) as exc:
        raise DataFormatError(f"{path}: not a readable .npy array of frames (empty, truncated, pickled "
                              f"objects or text?): {exc}") from None
    if not isinstance(arr, np.ndarray):
        raise DataFormatError(f"{path}: holds several arrays (.npz?); expected one (T, 84, 84) array")
    if arr.ndim != 3 or tuple(arr.shape[1:]) != FRAME_SHAPE or arr.shape[0] < 1:
        raise DataFormatError(f"{path}: expected (T, 84, 84) frames with T >= 1, got shape {arr.shape}")
    if arr.dtype.kind not in "iu":
        raise DataFormatError(f"{path}: expected integer pixel values (uint8), got dtype {arr.dtype}")
    try:
        arr = np.array(arr[:frames] if frames is not None else arr)
    except (ValueError, OSError) as exc:
        raise DataFormatError(f"{path}: cannot read the frames ({exc})") from None
    if arr.size and (int(arr.min()) < 0 or int(arr.max()) > 255):
        raise DataFormatError(f"{path}: pixel values must lie in 0..255, found {int(arr.min())}..{int(arr.max())}")
    return arr.astype(np.uint8)
