"""Griffe extension for the API reference: the Sphinx conventions of the docstrings as Markdown.

* ``#:`` comments above a module or class attribute (or after it on the same line) are its
  docstring, as for Sphinx autodoc.
* reStructuredText roles (``:func:`name```, ``:class:`...```, ``:mod:`...```), which Markdown would
  show verbatim: a role naming a project object by its full dotted path becomes a cross-reference
  to its section (mkdocs-autorefs; an unknown target fails the strict build), any other role
  inline code.

The source files are not changed.
"""
from __future__ import annotations

import re

import griffe

ROLE = re.compile(r":(?:py:)?(?:func|meth|class|mod|attr|data|obj|exc|const):`~?([^`<>]+?)`")
PACKAGES = ("mstpn_base", "memristor", "conversion", "snn_agent", "brian_models", "lava_procs", "mstpn")


def _markdown(match: re.Match) -> str:
    name = match.group(1).strip()
    target = name.rstrip("()")
    if target.split(".")[0] in PACKAGES and "." in target and "._" not in target:
        return f"[`{name}`][{target}]"
    return f"`{name}`"


def _doc_comment(obj) -> str | None:
    """The ``#:`` comment lines right above an attribute's first line, or after it on that line."""
    try:
        lines = obj.lines_collection[obj.filepath]
    except (KeyError, AttributeError, TypeError):
        return None
    if not obj.lineno or obj.lineno > len(lines):
        return None
    first = lines[obj.lineno - 1]
    if "#:" in first:
        return first.split("#:", 1)[1].strip() or None
    block, i = [], obj.lineno - 2
    while i >= 0 and lines[i].lstrip().startswith("#:"):
        block.insert(0, lines[i].lstrip()[2:].strip())
        i -= 1
    return "\n".join(block) or None


class SphinxRoles(griffe.Extension):
    def on_package(self, *, pkg, **kwargs) -> None:
        self.on_object(obj=pkg)      # on_object runs on the members, not on the package itself

    def on_object(self, *, obj, **kwargs) -> None:
        if obj.is_attribute and obj.docstring is None:
            text = _doc_comment(obj)
            if text:
                obj.docstring = griffe.Docstring(text, lineno=obj.lineno, parent=obj)
        if obj.docstring is not None and ":" in obj.docstring.value:
            obj.docstring.value = ROLE.sub(_markdown, obj.docstring.value)
