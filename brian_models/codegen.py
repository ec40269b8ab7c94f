"""Brian2 code generated from the project's equations.

The device equations (:mod:`memristor.equations`), the network node semantics
(:mod:`conversion.semantics`) and the device layer of the plastic network
(:mod:`conversion.device_layer`) are plain functions of an ops object (:mod:`mstpn_base.ops`).
Evaluated on :class:`Sym` symbols with :class:`Brian2Ops` they return Brian2 expressions, so the
Brian2 backends never retype an equation: they generate it.

Long definitions (the device layer's plasticity step: relaxation, target, split of dG, pulse
inversion, width, cap, pulse) select between candidates many times; written out as nested
expressions their code would grow exponentially (``where(c, a, b)`` names ``c`` twice).
``Brian2Ops(bind=True)`` therefore binds the result of every operation to a temporary of the
generated code (``cg_where12 = ...``) and a compound selection condition to its own, so the code
grows linearly with the definition.  :meth:`Brian2Ops.let` gives every temporary a unique name,
so a definition may be evaluated several times into one piece of code (e.g. once per device of a
pair).  :func:`common_subexpressions` then binds the parenthesised sub-expressions such code still
repeats (a relaxed conductance, the change dG), which Brian2 would evaluate once per occurrence.
:class:`Constants` turns the numbers of a parameter object (DeviceParams, device Mapping) into
named Brian2 constants.
"""
from __future__ import annotations

import math
import re


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
    def __pow__(self, o): return self._bin("**", o)                # noqa: E704
    def __rpow__(self, o): return self._bin("**", o, True)         # noqa: E704
    def __neg__(self): return Sym(f"(-{self.code})")                # noqa: E704
    def __gt__(self, o): return Sym(f"int({self._bin('>', o)})")    # noqa: E704
    def __lt__(self, o): return Sym(f"int({self._bin('<', o)})")    # noqa: E704
    def __ge__(self, o): return Sym(f"int({self._bin('>=', o)})")   # noqa: E704
    def __le__(self, o): return Sym(f"int({self._bin('<=', o)})")   # noqa: E704
    def __ne__(self, o): return Sym(f"int({self._bin('!=', o)})")   # noqa: E704
    def __and__(self, o): return self._bin("*", o)                 # noqa: E704

    def sum(self):
        """``array.sum()`` in per-element code: this element's term of the sum.  A definition that
        totals over its arrays (conversion.device_layer.pulse_tally, bias_energy) thus gives each
        synapse's contribution; the generated code accumulates it per synapse and the runner sums
        over the synapses."""
        return self

    @property
    def is_name(self) -> bool:
        return self.code.isidentifier()


def code_of(x) -> str:
    """Brian2 code of a symbol or a number."""
    if isinstance(x, Sym):
        return x.code
    if isinstance(x, bool):
        return "1" if x else "0"
    return str(x) if isinstance(x, int) else repr(float(x))


class Brian2Ops:
    """The operations of :mod:`memristor.equations` as Brian2 code; ``let`` appends a statement.

    ``bind=True``: every operation's result becomes a temporary (module docstring); ``prefix``
    names those temporaries."""

    def __init__(self, bind: bool = False, prefix: str = "cg_"):
        self.lines: list[str] = []
        self.bind, self.prefix = bool(bind), prefix
        self._names: set[str] = set()
        self._bound: dict[str, str] = {}      # bind: code -> the temporary that holds it

    def code(self, **assign) -> str:
        """The ``let`` statements, then ``name = expression`` for each keyword, in order."""
        return "\n".join(self.lines + [f"{k} = {code_of(v)}" for k, v in assign.items()])

    def let(self, name, x):
        """Bind ``x`` to a temporary ``name`` (made unique: ``name_2``, ... when taken)."""
        unique, k = name, 1
        while unique in self._names:
            k += 1
            unique = f"{name}_{k}"
        self._names.add(unique)
        self.lines.append(f"{unique} = {code_of(x)}")
        return Sym(unique)

    def _out(self, kind: str, code: str) -> Sym:
        """An operation's result; binding: a temporary (the same code twice: the same one -- the
        temporaries are assigned once, so equal code has equal value)."""
        if not self.bind:
            return Sym(code)
        if code not in self._bound:
            self._bound[code] = self.let(f"{self.prefix}{kind}{len(self.lines) + 1}", Sym(code)).code
        return Sym(self._bound[code])

    def _operand(self, x):
        """A compound operand that the code names more than once: a temporary when binding."""
        return self._out("c", x.code) if self.bind and isinstance(x, Sym) and not x.is_name else x

    def where(self, c, a, b):
        c = self._operand(c)
        return self._out("where", f"({code_of(c)} * {code_of(a)} + (1 - {code_of(c)}) * {code_of(b)})")

    def clip(self, x, lo, hi):
        return self._out("clip", f"clip({code_of(x)}, {code_of(lo)}, {code_of(hi)})")

    def abs(self, x):
        return self._out("abs", f"abs({code_of(x)})")

    def floor(self, x):
        return self._out("floor", f"floor({code_of(x)})")

    def exp(self, x):
        return self._out("exp", f"exp({code_of(x)})")

    def sqrt(self, x):
        return self._out("sqrt", f"sqrt({code_of(x)})")

    def tanh(self, x):
        return self._out("tanh", f"tanh({code_of(x)})")

    def maximum(self, x, lo):
        return self._out("max", f"clip({code_of(x)}, {code_of(lo)}, inf)")

    @staticmethod
    def straight_through(x, quantised):
        return quantised


class Constants:
    """A parameter object (DeviceParams, conversion.device_layer.Mapping, ...) whose float
    attributes read as named Brian2 constants ``<prefix><name>`` (recorded in :attr:`namespace`
    with their values, for the ``namespace`` of the Brian2 object).  Booleans, integers and None
    stay plain values: they shape the code, as they shape the NumPy branches; attributes listed in
    ``nested`` (e.g. a Mapping's ``params``) are wrapped in turn with their own prefix."""

    def __init__(self, obj, prefix: str, nested: dict | None = None, namespace: dict | None = None):
        self._obj, self._prefix, self._nested = obj, prefix, dict(nested or {})
        self.namespace = {} if namespace is None else namespace

    def __getattr__(self, name):
        if name.startswith("_"):
            raise AttributeError(name)
        value = getattr(self._obj, name)
        if name in self._nested:
            return Constants(value, self._nested[name], namespace=self.namespace)
        if isinstance(value, (bool, int)) or value is None or not isinstance(value, float):
            return value
        key = f"{self._prefix}{name}"
        if key in self.namespace and self.namespace[key] != value and not (
                math.isnan(value) and math.isnan(self.namespace[key])):
            raise ValueError(f"constant {key} has two values ({self.namespace[key]!r}, {value!r})")
        self.namespace[key] = float(value)
        return Sym(key)


_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_STATEMENT = re.compile(r"^\s*([A-Za-z_][A-Za-z0-9_]*)\s*(\+=|-=|\*=|/=|=)\s*(.*)$")


def _groups(expr: str):
    """The parenthesised sub-expressions of ``expr`` (not a call's argument list)."""
    stack = []
    for i, ch in enumerate(expr):
        if ch == "(":
            stack.append(i)
        elif ch == ")":
            j = stack.pop()
            call = j > 0 and (expr[j - 1].isalnum() or expr[j - 1] == "_")
            inner = expr[j + 1:i]
            if not call and "," not in _top_level(inner):
                yield expr[j:i + 1]


def _top_level(inner: str) -> str:
    """``inner`` without its nested parenthesised parts (to find top-level commas)."""
    out, depth = [], 0
    for ch in inner:
        depth += ch == "("
        if depth == 0:
            out.append(ch)
        depth -= ch == ")"
    return "".join(out)


def common_subexpressions(lines: list[str], prefix: str = "cse_", min_length: int = 12) -> list[str]:
    """Bind every parenthesised sub-expression that occurs more than once in ``lines`` (Brian2
    statements ``name = expression`` in which every temporary is assigned once and no variable
    they read is assigned) to a temporary defined before its first use; longest first.  The
    values are those of the unbound code (an expression evaluated once instead of several
    times), the code shorter and faster (Brian2 does not eliminate common sub-expressions)."""
    lines = list(lines)
    parsed = [_STATEMENT.match(line) for line in lines]
    if not all(parsed):
        raise ValueError("common_subexpressions takes assignment statements only")
    targets = [m.group(1) for m in parsed]
    if len(set(targets)) != len(targets):
        raise ValueError("common_subexpressions: a variable is assigned twice")
    targets = set(targets)
    n = 0
    while True:
        counts: dict[str, int] = {}
        for line in lines:
            expr = _STATEMENT.match(line).group(3)
            for g in set(_groups(expr)):
                counts[g] = counts.get(g, 0) + sum(1 for _ in _occurrences(expr, g))
        repeated = [g for g, c in counts.items() if c > 1 and len(g) >= min_length
                    and not set(_NAME.findall(g)) & targets - set(_defined_before(lines, g))]
        if not repeated:
            return lines
        g = max(repeated, key=len)
        n += 1
        name = f"{prefix}{n}"
        first = next(i for i, line in enumerate(lines) if _uses(line, g))
        lines = [_replace(line, g, name) for line in lines]
        lines.insert(first, f"{name} = {g}")
        targets.add(name)


def _occurrences(expr: str, g: str):
    """Start indices of the group ``g`` in ``expr`` (not counting a call's argument list)."""
    i = 0
    while (j := expr.find(g, i)) >= 0:
        if not (j > 0 and (expr[j - 1].isalnum() or expr[j - 1] == "_")):
            yield j
        i = j + len(g)


def _uses(line: str, g: str) -> bool:
    return next(_occurrences(_STATEMENT.match(line).group(3), g), None) is not None


def _defined_before(lines: list[str], g: str) -> list[str]:
    """Temporaries assigned before the first line that uses ``g``."""
    out = []
    for line in lines:
        if _uses(line, g):
            return out
        out.append(_STATEMENT.match(line).group(1))
    return out


def _replace(line: str, g: str, name: str) -> str:
    """``line`` with every occurrence of the group ``g`` (not a call's argument list) as ``name``."""
    m = _STATEMENT.match(line)
    expr, out, i = m.group(3), [], 0
    while (j := expr.find(g, i)) >= 0:
        call = j > 0 and (expr[j - 1].isalnum() or expr[j - 1] == "_")
        out.append(expr[i:j] + (g if call else name))
        i = j + len(g)
    out.append(expr[i:])
    return f"{m.group(1)} {m.group(2)} {''.join(out)}"
