"""Brian2 code generated from the project's equations.

The device equations (:mod:`memristor.equations`) and the network node semantics
(:mod:`conversion.semantics`) are plain functions of an ops object (:mod:`mstpn_base.ops`).
Evaluated on :class:`Sym` symbols with :class:`Brian2Ops` they return Brian2 expressions, so the
Brian2 backends never retype an equation: they generate it.
"""
from __future__ import annotations


class Sym:
    """A Brian2 expression built by evaluating :mod:`memristor.equations` on symbols.

    Arithmetic gives parenthesised expressions; comparisons give 0/1 masks (``int(...)``) and
    ``&`` their product, so that selections become sums of masks times candidates: exactly one
    term is non-zero and the chosen value is bit-identical to the candidate (x*1 + 0 == x), as
    np.where gives."""

    def __init__(self, code: str):
        self.code = code

    def __str__(self) -> str:
        return self.code

    __hash__ = object.__hash__

    def _bin(self, op, other, reverse=False):
        a, b = (other, self) if reverse else (self, other)
        return Sym(f"({code_of(a)} {op} {code_of(b)})")

    def __add__(self, o): return self._bin("+", o)                 # noqa: E704
    def __radd__(self, o): return self._bin("+", o, True)          # noqa: E704
    def __sub__(self, o): return self._bin("-", o)                 # noqa: E704
    def __rsub__(self, o): return self._bin("-", o, True)          # noqa: E704
    def __mul__(self, o): return self._bin("*", o)                 # noqa: E704
    def __rmul__(self, o): return self._bin("*", o, True)          # noqa: E704
    def __truediv__(self, o): return self._bin("/", o)             # noqa: E704
    def __rtruediv__(self, o): return self._bin("/", o, True)      # noqa: E704
    def __neg__(self): return Sym(f"(-{self.code})")                # noqa: E704
    def __gt__(self, o): return Sym(f"int({self._bin('>', o)})")    # noqa: E704
    def __lt__(self, o): return Sym(f"int({self._bin('<', o)})")    # noqa: E704
    def __ne__(self, o): return Sym(f"int({self._bin('!=', o)})")   # noqa: E704
    def __and__(self, o): return self._bin("*", o)                 # noqa: E704


def code_of(x) -> str:
    """Brian2 code of a symbol or a number."""
    return x.code if isinstance(x, Sym) else repr(float(x)) if not isinstance(x, int) else str(x)


class Brian2Ops:
    """The operations of :mod:`memristor.equations` as Brian2 code; ``let`` appends a statement."""

    def __init__(self):
        self.lines: list[str] = []

    def code(self, **assign) -> str:
        """The ``let`` statements, then ``name = expression`` for each keyword, in order."""
        return "\n".join(self.lines + [f"{k} = {code_of(v)}" for k, v in assign.items()])

    def where(self, c, a, b):
        return Sym(f"({code_of(c)} * {code_of(a)} + (1 - {code_of(c)}) * {code_of(b)})")

    def clip(self, x, lo, hi):
        return Sym(f"clip({code_of(x)}, {code_of(lo)}, {code_of(hi)})")

    def abs(self, x):
        return Sym(f"abs({code_of(x)})")

    def floor(self, x):
        return Sym(f"floor({code_of(x)})")

    def exp(self, x):
        return Sym(f"exp({code_of(x)})")

    def sqrt(self, x):
        return Sym(f"sqrt({code_of(x)})")

    def tanh(self, x):
        return Sym(f"tanh({code_of(x)})")

    def maximum(self, x, lo):
        return Sym(f"clip({code_of(x)}, {code_of(lo)}, inf)")

    def let(self, name, x):
        self.lines.append(f"{name} = {code_of(x)}")
        return Sym(name)

    @staticmethod
    def straight_through(x, quantised):
        return quantised
