"""Metadata filters for sinks without a query language of their own: a small parser, never ``eval``.

``parse_filter(text)`` returns a :class:`MetadataFilter`, a predicate over one
track's metadata dict (``flt(metadata, id=track_id) -> bool``). A sink that
stores metadata as plain dicts (FAISS, an in-memory or ``.npz`` store) gets
``search(..., filter=...)`` from it; a sink with native expressions (Milvus)
passes the user's text through instead.

Grammar (keywords are case-insensitive)::

    expr       := or_expr
    or_expr    := and_expr (("or" | "||") and_expr)*
    and_expr   := not_expr (("and" | "&&") not_expr)*
    not_expr   := "not" not_expr | "(" expr ")" | comparison
    comparison := field op literal
                | field ["not"] "like" string
                | field ["not"] "in" "[" literal ("," literal)* "]"
    op         := "==" | "=" | "!=" | "<" | "<=" | ">" | ">="
    field      := name ("." name | "[" string "]")*
    literal    := number | 'string' | "string" | true | false

Fields: ``tags.bpm`` and ``tags["bpm"]`` reach into nested dicts; ``id`` is the
track id (unless the metadata has its own ``id``); ``meta["genre"]`` reads the
top-level key ``genre`` when the metadata has no ``meta`` key, so a filter
written for Milvus (which keeps extra keys in a JSON field ``meta``) works
unchanged on a sink using this parser.

``like`` uses SQL patterns: ``%`` any run of characters, ``_`` one character,
``\\`` escapes the next character; it is case-sensitive and matches the whole
value. A track lacking the field never matches a comparison (``not`` still
negates the result). Ordering a number against a string is a
:class:`~musicembed_core.errors.FilterError` naming the filter, the field and
the track, not a silent mismatch.

Standard library only: cheap to import.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from .errors import FilterError

_Pred = Callable[[Mapping[str, Any], str | None], bool]

_MISSING = object()
_META_ALIAS = "meta"

_TOKEN_RE = re.compile(
    r"""
    (?P<ws>\s+)
  | (?P<number>[-+]?(?:\d+\.\d*|\.\d+|\d+)(?:[eE][-+]?\d+)?)
  | (?P<string>"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*')
  | (?P<op>==|!=|<=|>=|&&|\|\||=|<|>)
  | (?P<punct>[()\[\],])
  | (?P<name>[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*)
    """,
    re.VERBOSE | re.DOTALL,
)
_KEYWORDS = {"and", "or", "not", "like", "in", "true", "false"}
_COMPARE = {"==", "=", "!=", "<", "<=", ">", ">="}
_EXAMPLE = 'duration > 60 and path like "%jazz%"'


@dataclass(frozen=True)
class _Tok:
    kind: str  # number, string, op, punct, name, kw, end
    text: str
    value: Any
    pos: int


@dataclass(frozen=True)
class MetadataFilter:
    """A parsed filter: its text, the field paths it reads, and the predicate."""

    text: str
    paths: frozenset[tuple[str, ...]]
    predicate: _Pred

    def __call__(self, metadata: Mapping[str, Any], id: str | None = None) -> bool:
        """Whether a track with this metadata (and track id, for the ``id`` field) matches."""
        return self.predicate(metadata, id)

    @property
    def fields(self) -> frozenset[str]:
        """Top-level metadata keys the filter reads (``meta["x"]`` counts as ``x``)."""
        return frozenset(_root(p) for p in self.paths)

    def check_fields(self, present: Iterable[str], where: str) -> None:
        """Refuse a filter naming a key no stored track has (a typo, most likely).

        ``present``: the top-level metadata keys of the stored tracks; ``where``
        names the collection for the message.
        """
        known = set(present) | {"id"}
        unknown = sorted(f for f in self.fields if f not in known)
        if unknown:
            raise FilterError(
                f"filter {self.text!r}: unknown field {unknown[0]!r} in {where}; "
                f"fields present: {', '.join(sorted(known))}"
            )


def _root(path: tuple[str, ...]) -> str:
    if path[0] == _META_ALIAS and len(path) > 1:
        return path[1]
    return path[0]


def _unescape(body: str) -> str:
    return re.sub(r"\\(.)", r"\1", body, flags=re.DOTALL)


def _tokenize(text: str) -> list[_Tok]:
    toks: list[_Tok] = []
    pos = 0
    while pos < len(text):
        m = _TOKEN_RE.match(text, pos)
        if m is None:
            raise FilterError(
                f"filter {text!r}: unexpected character {text[pos]!r} at position {pos}. "
                f"Filters look like: {_EXAMPLE}"
            )
        kind = m.lastgroup or ""
        raw = m.group()
        if kind == "number":
            value: Any = float(raw) if any(c in raw for c in ".eE") else int(raw)
            toks.append(_Tok("number", raw, value, pos))
        elif kind == "string":
            toks.append(_Tok("string", raw, _unescape(raw[1:-1]), pos))
        elif kind == "name" and raw.lower() in _KEYWORDS:
            toks.append(_Tok("kw", raw, raw.lower(), pos))
        elif kind != "ws":
            toks.append(_Tok(kind, raw, raw, pos))
        pos = m.end()
    toks.append(_Tok("end", "", None, len(text)))
    return toks


def like_regex(pattern: str) -> re.Pattern[str]:
    """SQL LIKE pattern -> compiled regex matching the whole value."""
    out: list[str] = []
    i = 0
    while i < len(pattern):
        c = pattern[i]
        if c == "\\" and i + 1 < len(pattern):
            out.append(re.escape(pattern[i + 1]))
            i += 2
            continue
        out.append(".*" if c == "%" else "." if c == "_" else re.escape(c))
        i += 1
    return re.compile("".join(out), re.DOTALL)


def _lookup(metadata: Mapping[str, Any], track_id: str | None, path: tuple[str, ...]) -> Any:
    if path == ("id",) and "id" not in metadata and track_id is not None:
        return track_id
    if path[0] == _META_ALIAS and len(path) > 1 and _META_ALIAS not in metadata:
        path = path[1:]
    value: Any = metadata
    for part in path:
        if not isinstance(value, Mapping) or part not in value:
            return _MISSING
        value = value[part]
    return value


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _equal(v: Any, lit: Any) -> bool:
    if isinstance(lit, bool) or isinstance(v, bool):
        return isinstance(v, bool) and isinstance(lit, bool) and v == lit
    if _is_number(v) and _is_number(lit):
        return v == lit
    return type(v) is type(lit) and v == lit


def _tid(track_id: str | None) -> str:
    return "?" if track_id is None else repr(track_id)


class _Parser:
    def __init__(self, text: str) -> None:
        self.text = text
        self.toks = _tokenize(text)
        self.i = 0
        self.paths: set[tuple[str, ...]] = set()

    def peek(self) -> _Tok:
        return self.toks[self.i]

    def take(self) -> _Tok:
        tok = self.toks[self.i]
        self.i += 1
        return tok

    def error(self, what: str, tok: _Tok | None = None) -> FilterError:
        tok = tok or self.peek()
        found = "end of filter" if tok.kind == "end" else repr(tok.text)
        return FilterError(
            f"filter {self.text!r}: expected {what} at position {tok.pos}, found {found}. "
            f"Filters look like: {_EXAMPLE}"
        )

    def is_kw(self, *words: str) -> bool:
        tok = self.peek()
        return tok.kind == "kw" and tok.value in words

    # -- grammar
    def parse(self) -> MetadataFilter:
        if self.peek().kind == "end":
            raise FilterError(f"filter {self.text!r} is empty; pass no filter to search everything")
        pred = self.or_expr()
        if self.peek().kind != "end":
            raise self.error("'and', 'or' or the end of the filter")
        return MetadataFilter(self.text, frozenset(self.paths), pred)

    def or_expr(self) -> _Pred:
        parts = [self.and_expr()]
        while self.is_kw("or") or self.peek().text == "||":
            self.take()
            parts.append(self.and_expr())
        if len(parts) == 1:
            return parts[0]
        return lambda md, tid: any(p(md, tid) for p in parts)

    def and_expr(self) -> _Pred:
        parts = [self.not_expr()]
        while self.is_kw("and") or self.peek().text == "&&":
            self.take()
            parts.append(self.not_expr())
        if len(parts) == 1:
            return parts[0]
        return lambda md, tid: all(p(md, tid) for p in parts)

    def not_expr(self) -> _Pred:
        if self.is_kw("not"):
            self.take()
            inner = self.not_expr()
            return lambda md, tid: not inner(md, tid)
        if self.peek().text == "(":
            self.take()
            inner = self.or_expr()
            if self.peek().text != ")":
                raise self.error("')'")
            self.take()
            return inner
        return self.comparison()

    def literal(self) -> Any:
        tok = self.take()
        if tok.kind in ("number", "string"):
            return tok.value
        if tok.kind == "kw" and tok.value in ("true", "false"):
            return tok.value == "true"
        raise self.error("a number, a quoted string, true or false", tok)

    def field(self) -> tuple[str, tuple[str, ...]]:
        tok = self.take()
        if tok.kind != "name":
            raise self.error("a metadata field name", tok)
        path = tok.text.split(".")
        while self.peek().text == "[":
            self.take()
            key = self.take()
            if key.kind != "string":
                raise self.error('a quoted key in field[...] (e.g. meta["genre"])', key)
            if self.peek().text != "]":
                raise self.error(f"']' after {key.text}")
            self.take()
            path.append(key.value)
        name = path[0] + "".join(f"[{p!r}]" for p in path[1:]) if len(path) > 1 else path[0]
        self.paths.add(tuple(path))
        return name, tuple(path)

    def comparison(self) -> _Pred:
        field, path = self.field()
        negate = False
        if self.is_kw("not"):
            self.take()
            negate = True
            if not self.is_kw("like", "in"):
                raise self.error("'like' or 'in' after 'not'")
        if self.is_kw("like"):
            self.take()
            pat = self.take()
            if pat.kind != "string":
                raise self.error("a quoted pattern after 'like'", pat)
            return self._like(field, path, like_regex(pat.value), negate)
        if self.is_kw("in"):
            self.take()
            return self._in(path, self._list(), negate)
        op = self.take()
        if op.kind != "op" or op.text not in _COMPARE:
            raise self.error("a comparison (==, !=, <, <=, >, >=, like, in)", op)
        return self._compare(field, path, "==" if op.text == "=" else op.text, self.literal())

    def _list(self) -> list[Any]:
        if self.peek().text != "[":
            raise self.error("'[' starting the list after 'in'")
        self.take()
        items = [self.literal()]
        while self.peek().text == ",":
            self.take()
            items.append(self.literal())
        if self.peek().text != "]":
            raise self.error("',' or ']' in the list after 'in'")
        self.take()
        return items

    # -- predicates
    def _like(self, field: str, path: tuple[str, ...], rx: re.Pattern[str], negate: bool) -> _Pred:
        text = self.text

        def pred(md: Mapping[str, Any], tid: str | None) -> bool:
            v = _lookup(md, tid, path)
            if v is _MISSING or v is None:
                return False
            if not isinstance(v, str):
                raise FilterError(
                    f"filter {text!r}: 'like' needs a string but field {field!r} of track "
                    f"{_tid(tid)} holds {type(v).__name__} {v!r}"
                )
            return (rx.fullmatch(v) is not None) != negate

        return pred

    def _in(self, path: tuple[str, ...], items: list[Any], negate: bool) -> _Pred:
        def pred(md: Mapping[str, Any], tid: str | None) -> bool:
            v = _lookup(md, tid, path)
            if v is _MISSING or v is None:
                return False
            return any(_equal(v, item) for item in items) != negate

        return pred

    def _compare(self, field: str, path: tuple[str, ...], op: str, lit: Any) -> _Pred:
        text = self.text
        if op in ("<", "<=", ">", ">=") and isinstance(lit, bool):
            raise FilterError(f"filter {text!r}: {field} {op} {lit!r}: true/false cannot be ordered")

        def pred(md: Mapping[str, Any], tid: str | None) -> bool:
            v = _lookup(md, tid, path)
            if v is _MISSING or v is None:
                return False
            if op == "==":
                return _equal(v, lit)
            if op == "!=":
                return not _equal(v, lit)
            if not ((_is_number(v) and _is_number(lit)) or (isinstance(v, str) and isinstance(lit, str))):
                kind = "a number" if _is_number(lit) else "a string"
                raise FilterError(
                    f"filter {text!r}: field {field!r} of track {_tid(tid)} holds "
                    f"{type(v).__name__} {v!r}, which cannot be compared with {kind} ({lit!r})"
                )
            if op == "<":
                return v < lit
            if op == "<=":
                return v <= lit
            if op == ">":
                return v > lit
            return v >= lit

        return pred


def parse_filter(text: str) -> MetadataFilter:
    """Parse ``text`` into a predicate over metadata; bad syntax raises :class:`FilterError`.

    >>> flt = parse_filter('duration > 60 and path like "%jazz%"')
    >>> flt({"duration": 75.0, "path": "/m/jazz/b.flac"})
    True
    """
    if not isinstance(text, str):
        raise FilterError(
            f"filter must be a string such as {_EXAMPLE!r}, got {type(text).__name__}"
        )
    return _Parser(text).parse()
