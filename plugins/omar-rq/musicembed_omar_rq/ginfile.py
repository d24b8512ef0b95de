"""Read an OMAR-RQ ``config.gin`` as data: no gin import, nothing registered anywhere.

The released checkpoints describe their architecture in gin syntax; upstream parses the
file into gin's global registry, which would clash with musicembed's own gin run. This
module reads the subset those files use -- ``a.b.Class.param = <python literal>`` bindings
(values may span lines inside brackets), ``name = value`` macros and ``%name`` macro
references, ``@a.b.Class`` configurable references, ``#`` comments -- into a plain dict.
"""

from __future__ import annotations

import ast
import re
from typing import Any

__all__ = ["GinSyntaxError", "Ref", "parse_gin", "lookup"]


class GinSyntaxError(ValueError):
    """A line of a config.gin this reader does not understand (its number and text are named)."""


class Ref(str):
    """A ``@a.b.Class`` reference; ``.name`` is the last dotted part (``Class``)."""

    @property
    def name(self) -> str:
        return self.split(".")[-1].split("/")[-1]


_KEY = re.compile(r"^[A-Za-z_][\w./]*$")
_TOKEN = re.compile(r"""("(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*')|@([A-Za-z_][\w./]*)(\(\))?|%([A-Za-z_][\w.]*)""")


def _strip_comment(line: str) -> str:
    quote = ""
    for i, ch in enumerate(line):
        if quote:
            if ch == quote and line[i - 1] != "\\":
                quote = ""
        elif ch in "'\"":
            quote = ch
        elif ch == "#":
            return line[:i]
    return line


def _depth(text: str) -> int:
    body = re.sub(r"\"(?:[^\"\\]|\\.)*\"|'(?:[^'\\]|\\.)*'", "", text)
    return sum(body.count(c) for c in "([{") - sum(body.count(c) for c in ")]}")


def _value(text: str, macros: dict[str, Any], where: str) -> Any:
    refs: list[Ref] = []

    def sub(m: re.Match) -> str:
        if m.group(1):
            return m.group(1)
        if m.group(2):
            refs.append(Ref(m.group(2)))
            return f"__ref{len(refs) - 1}__"
        name = m.group(4)
        if name not in macros:
            raise GinSyntaxError(f"{where}: macro %{name} is used before it is defined")
        return repr(macros[name])

    code = _TOKEN.sub(sub, text)
    code = re.sub(r"\b__ref(\d+)__\b", lambda m: repr(str(refs[int(m.group(1))])), code)
    try:
        value = ast.literal_eval(code.strip())
    except (ValueError, SyntaxError) as exc:
        raise GinSyntaxError(f"{where}: cannot read the value {text.strip()!r} ({exc})") from exc

    def wrap(v: Any) -> Any:
        if isinstance(v, str) and v in refs:
            return Ref(v)
        if isinstance(v, list):
            return [wrap(x) for x in v]
        if isinstance(v, tuple):
            return tuple(wrap(x) for x in v)
        return v

    return wrap(value)


def parse_gin(text: str, source: str = "config.gin") -> dict[str, Any]:
    """``{binding key: value}`` of a gin file; macros are resolved and also returned by name.

    ``include`` lines are refused (a checkpoint's config must be self-contained); ``import``
    lines are skipped (they only load Python modules in gin).
    """
    out: dict[str, Any] = {}
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        start = i
        line = _strip_comment(lines[i]).strip()
        i += 1
        if not line:
            continue
        if line.startswith("import ") or line.startswith("from "):
            continue
        if line.startswith("include "):
            raise GinSyntaxError(f"{source}:{start + 1}: 'include' is not supported in a checkpoint config")
        while _depth(line) > 0 and i < len(lines):
            line += " " + _strip_comment(lines[i]).strip()
            i += 1
        where = f"{source}:{start + 1}"
        if "=" not in line:
            raise GinSyntaxError(f"{where}: expected 'name = value', got {line!r}")
        key, value = (part.strip() for part in line.split("=", 1))
        if not _KEY.match(key):
            raise GinSyntaxError(f"{where}: {key!r} is not a binding name")
        out[key] = _value(value, out, where)
    return out


def lookup(bindings: dict[str, Any], name: str, default: Any = KeyError) -> Any:
    """The value bound to ``Class.param`` whatever module path prefixes it
    (``nets.conformer.Conformer.depth`` and ``Conformer.depth`` both answer ``Conformer.depth``)."""
    found = [v for k, v in bindings.items() if k == name or k.endswith("." + name)]
    if found:
        return found[-1]
    if default is KeyError:
        raise KeyError(name)
    return default
