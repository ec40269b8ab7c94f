"""The few array operations the project's equations use, as one object per kind of array.

The device equations (:mod:`memristor.equations`) and the network node semantics
(:mod:`conversion.semantics`) are written once against an ``ops`` object: NumPy arrays
(:data:`NUMPY`), PyTorch tensors (:func:`torch_ops`), or Brian2 code
(:class:`brian_models.codegen.Brian2Ops`, which turns the same functions into equation strings).
Arithmetic and comparisons are the operands' own operators; ``let`` names an intermediate (a
no-op on arrays, a statement in generated code); ``straight_through(x, q)`` is quantisation (q
forward; PyTorch passes the gradient of x).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np


def _quantised_forward(x, quantised):
    return quantised


@dataclass(frozen=True)
class Ops:
    where: Callable
    clip: Callable
    abs: Callable
    floor: Callable
    exp: Callable
    sqrt: Callable
    maximum: Callable
    tanh: Callable
    straight_through: Callable = _quantised_forward

    @staticmethod
    def let(name, x):
        return x


NUMPY = Ops(np.where, np.clip, np.abs, np.floor, np.exp, np.sqrt, np.maximum, np.tanh)

_TORCH = []


def torch_ops() -> Ops:
    """The operations on tensors (imports torch on first use); quantisation is straight-through."""
    if not _TORCH:
        import torch

        _TORCH.append(Ops(torch.where, torch.clamp, torch.abs, torch.floor, torch.exp, torch.sqrt, torch.maximum,
                          torch.tanh, straight_through=lambda x, quantised: x + (quantised - x).detach()))
    return _TORCH[0]
