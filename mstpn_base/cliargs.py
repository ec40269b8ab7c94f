"""One command-line style for every ``mstpn`` command (used by each package's ``cli`` module).

* :class:`HelpFormatter` shows each option's default after its help text (unless the text already
  says what the default is); :func:`style` gives a whole parser tree that formatter.
* :func:`add_out` adds the output option, ``-o/--out``, everywhere the same (older spellings stay
  accepted as hidden aliases).
* :func:`add_list` adds a list option that takes space-separated values, each of which may hold
  comma-separated items: ``--backends a b``, ``--backends a,b`` and ``--backends a,b c`` are the same.
* :func:`add_json` and :func:`json_output`: ``--json`` prints a command's result as JSON on stdout
  instead of its table (whatever the command prints while it works goes to stderr then; the files
  it writes are the same as without ``--json``).
"""
from __future__ import annotations

import argparse
import contextlib
import json
import math
import sys
from pathlib import Path

__all__ = ["HelpFormatter", "RawDescriptionHelpFormatter", "style", "add_out", "add_list", "split_list",
           "ListAction", "add_json", "json_output", "print_json", "is_safetensors"]


def _show(value) -> str:
    if isinstance(value, (list, tuple)):
        return " ".join(str(v) for v in value)
    return str(value)


class HelpFormatter(argparse.HelpFormatter):
    """Appends ``(default: VALUE)`` to an option's help unless the help mentions its default or the
    option has none (None, False, suppressed)."""

    def _get_help_string(self, action):
        text = action.help or ""
        default = action.default
        if ("default" in text.lower() or default is None or default is False or default is argparse.SUPPRESS
                or isinstance(action, (argparse._HelpAction, argparse._VersionAction))):
            return text
        if not action.option_strings and action.nargs not in (argparse.OPTIONAL, argparse.ZERO_OR_MORE):
            return text
        return f"{text} (default: {_show(default).replace('%', '%%')})"

    def _format_action_invocation(self, action):
        hidden = getattr(action, "hidden_option_strings", ())
        if not hidden:
            return super()._format_action_invocation(action)
        shown = argparse.Action([s for s in action.option_strings if s not in hidden], action.dest,
                                nargs=action.nargs, metavar=action.metavar)
        return super()._format_action_invocation(shown)


class RawDescriptionHelpFormatter(argparse.RawDescriptionHelpFormatter, HelpFormatter):
    """:class:`HelpFormatter` that keeps the description's line breaks."""


def style(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Give ``parser`` and all its subcommand parsers the defaults-showing help formatter."""
    if issubclass(parser.formatter_class, argparse.RawDescriptionHelpFormatter):
        parser.formatter_class = RawDescriptionHelpFormatter
    else:
        parser.formatter_class = HelpFormatter
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in dict.fromkeys(action.choices.values()):
                style(sub)
    return parser


def add_out(parser, help: str, default=None, required: bool = False, type=Path, metavar: str | None = None,
            aliases: tuple = ()):
    """``-o/--out`` (dest ``out``); ``aliases`` (e.g. ``("--output",)``) are accepted too but not
    listed in the help (:class:`HelpFormatter`)."""
    action = parser.add_argument("-o", "--out", *aliases, dest="out", type=type, default=default,
                                 required=required, metavar=metavar, help=help)
    action.hidden_option_strings = frozenset(aliases)
    return action


def split_list(values) -> list:
    """``["a,b", "c"]`` -> ``["a", "b", "c"]`` (blank items dropped, order kept, repeats kept)."""
    if isinstance(values, str):
        values = [values]
    return [item.strip() for v in values for item in str(v).split(",") if item.strip()]


class ListAction(argparse.Action):
    """``nargs="+"`` values, each possibly comma-separated, flattened into one list; ``choices`` are
    checked per item (after splitting)."""

    def __init__(self, option_strings, dest, item_choices=None, **kwargs):
        kwargs.setdefault("nargs", "+")
        self.item_choices = tuple(item_choices) if item_choices is not None else None
        super().__init__(option_strings, dest, **kwargs)

    def __call__(self, parser, namespace, values, option_string=None):
        items = split_list(values)
        if not items:
            parser.error(f"argument {option_string}: expected at least one value")
        if self.item_choices is not None:
            bad = [i for i in items if i not in self.item_choices]
            if bad:
                parser.error(f"argument {option_string}: invalid choice: {', '.join(map(repr, bad))} "
                             f"(choose from {', '.join(self.item_choices)})")
        setattr(namespace, self.dest, items)


def add_list(parser, flag: str, help: str, default=None, choices=None, metavar: str = "NAME", **kwargs):
    """A list option accepting ``--flag a b`` and ``--flag a,b`` alike (see :class:`ListAction`)."""
    note = "space- or comma-separated"
    i = help.find(" (default")
    help = f"{help[:i]}, {note}{help[i:]}" if i >= 0 else f"{help}, {note}"
    return parser.add_argument(flag, action=ListAction, default=default, item_choices=choices, metavar=metavar,
                               help=help, **kwargs)


def add_json(parser, what: str = "the result"):
    """``--json``: print ``what`` as JSON on stdout instead of the table."""
    return parser.add_argument("--json", action="store_true",
                               help=f"print {what} as JSON on stdout instead of the table (progress goes to "
                                    "stderr; files are written as without --json) (default: the table)")


def _jsonable(obj):
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, Path):
        return str(obj)
    if hasattr(obj, "tolist") and not isinstance(obj, (str, bytes)):   # NumPy scalars and arrays
        return _jsonable(obj.tolist())
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


def print_json(data, file=None) -> None:
    """``data`` as one JSON document (NaN / inf as null, paths and NumPy values converted)."""
    print(json.dumps(_jsonable(data), indent=2, allow_nan=False), file=file or sys.stdout)


@contextlib.contextmanager
def json_output(enabled: bool):
    """With ``enabled``, whatever is printed inside goes to stderr; the caller prints the JSON after."""
    if not enabled:
        yield
        return
    with contextlib.redirect_stdout(sys.stderr):
        yield


def is_safetensors(path) -> bool:
    """``path`` is a safetensors file (8-byte little-endian header length, then a JSON header)."""
    try:
        with open(path, "rb") as f:
            head = f.read(9)
    except OSError:
        return False
    if len(head) < 9:
        return False
    n = int.from_bytes(head[:8], "little")
    return 0 < n < (1 << 30) and head[8:9] == b"{"
