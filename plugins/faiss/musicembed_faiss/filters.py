"""Metadata filters for ``search(..., filter=...)``: a small parser, never ``eval``.

Grammar (keywords are case-insensitive)::

    expr       := or_expr
    or_expr    := and_expr (("or" | "||") and_expr)*
    and_expr   := not_expr (("and" | "&&") not_expr)*
    not_expr   := "not" not_expr | "(" expr ")" | comparison
    comparison := field op literal
                | field ["not"] "like" string
                | field ["not"] "in" "[" literal ("," literal)* "]"
    op         := "==" | "=" | "!=" | "<" | "<=" | ">" | ">="
    field      := name ("." name)*          (dots reach into nested dicts)
    literal    := number | 'string' | "string" | true | false

``like`` uses SQL patterns: ``%`` any run of characters, ``_`` one character,
``\\`` escapes the next character; it is case-sensitive and matches the whole
value. A row lacking the field never matches a comparison (``not`` still
negates the result). Ordering comparisons between a number and a string are
an error naming the filter, the field and the track, not a silent mismatch.

Standard library only: cheap to import.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from .errors import FilterError

Predicate = Callable[[str, Mapping[str, Any]], bool]
"""``pred(track_id, metadata) -> bool``."""

_MISSING = object()

_TOKEN_RE = re.compile(
    r"""
    (?P<ws>\s+)
  | (?P<number>[-+]?(?:\d+\.\d*|\.\d+|\d+)(?:[eE][-+]?\d+)?)
  | (?P<string>"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*')
  | (?P<op>==|!=|<=|>=|&&|\|\||=|<|>)
  | (?P<punct>[()\[\],])
  | (?P<name>[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*)
    """,
    re.VERBOSE,
)
_KEYWORDS = {"and", "or", "not", "like", "in", "true", "false"}
_COMPARE = {"==", "=", "!=", "<", "<=", ">", ">="}


@dataclass(frozen=True)
class _Tok:
    kind: str  # number, string, op, punct, name, kw, end
    text: str
    value: Any
    pos: int


@dataclass(frozen=True)
class ParsedFilter:
    """A parsed filter: its source text, the fields it reads and its predicate."""

    text: str
    fields: frozenset[str]
    predicate: Predicate

    def __call__(self, track_id: str, metadata: Mapping[str, Any]) -> bool:
        return self.predicate(track_id, metadata)


def _unescape(body: str) -> str:
    return re.sub(r"\\(.)", r"\1", body, flags=re.DOTALL)


def _tokenize(text: str) -> list[_Tok]:
    toks: list[_Tok] = []
    pos = 0
    while pos < len(text):
        m = _TOKEN_RE.match(text, pos)
        if m is None:
            raise FilterError(f"filter {text!r}: unexpected character {text[pos]!r} at position {pos}")
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


def _lookup(track_id: str, metadata: Mapping[str, Any], path: tuple[str, ...]) -> Any:
    if path == ("id",) and "id" not in metadata:
        return track_id
    value: Any = metadata
    for part in path:
        if not isinstance(value, Mapping) or part not in value:
            return _MISSING
        value = value[part]
    return value


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


class _Parser:
    def __init__(self, text: str) -> None:
        self.text = text
        self.toks = _tokenize(text)
        self.i = 0
        self.fields: set[str] = set()

    # -- helpers
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
            "Filters look like: duration > 60 and path like \"%jazz%\""
        )

    def is_kw(self, *words: str) -> bool:
        tok = self.peek()
        return tok.kind == "kw" and tok.value in words

    # -- grammar
    def parse(self) -> ParsedFilter:
        if self.peek().kind == "end":
            raise FilterError(f"filter {self.text!r} is empty; pass filter=None to search everything")
        pred = self.or_expr()
        if self.peek().kind != "end":
            raise self.error("'and', 'or' or the end of the filter")
        return ParsedFilter(self.text, frozenset(self.fields), pred)

    def or_expr(self) -> Predicate:
        parts = [self.and_expr()]
        while self.is_kw("or") or self.peek().text == "||":
            self.take()
            parts.append(self.and_expr())
        if len(parts) == 1:
            return parts[0]
        return lambda tid, md: any(p(tid, md) for p in parts)

    def and_expr(self) -> Predicate:
        parts = [self.not_expr()]
        while self.is_kw("and") or self.peek().text == "&&":
            self.take()
            parts.append(self.not_expr())
        if len(parts) == 1:
            return parts[0]
        return lambda tid, md: all(p(tid, md) for p in parts)

    def not_expr(self) -> Predicate:
        if self.is_kw("not"):
            self.take()
            inner = self.not_expr()
            return lambda tid, md: not inner(tid, md)
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

    def comparison(self) -> Predicate:
        tok = self.take()
        if tok.kind != "name":
            raise self.error("a metadata field name", tok)
        field = tok.text
        path = tuple(field.split("."))
        self.fields.add(path[0])
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
            return self._in(field, path, self._list(), negate)
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
    def _like(self, field: str, path: tuple[str, ...], rx: re.Pattern[str], negate: bool) -> Predicate:
        text = self.text

        def pred(tid: str, md: Mapping[str, Any]) -> bool:
            v = _lookup(tid, md, path)
            if v is _MISSING or v is None:
                return False
            if not isinstance(v, str):
                raise FilterError(
                    f"filter {text!r}: 'like' needs a string but field {field!r} of track {tid!r} "
                    f"holds {type(v).__name__} {v!r}"
                )
            return (rx.fullmatch(v) is not None) != negate

        return pred

    def _in(self, field: str, path: tuple[str, ...], items: list[Any], negate: bool) -> Predicate:
        def pred(tid: str, md: Mapping[str, Any]) -> bool:
            v = _lookup(tid, md, path)
            if v is _MISSING or v is None:
                return False
            hit = any(_equal(v, item) for item in items)
            return hit != negate

        return pred

    def _compare(self, field: str, path: tuple[str, ...], op: str, lit: Any) -> Predicate:
        text = self.text
        ordered = op in ("<", "<=", ">", ">=")
        if ordered and isinstance(lit, bool):
            raise FilterError(f"filter {text!r}: {field} {op} {lit!r}: true/false cannot be ordered")

        def pred(tid: str, md: Mapping[str, Any]) -> bool:
            v = _lookup(tid, md, path)
            if v is _MISSING or v is None:
                return False
            if op == "==":
                return _equal(v, lit)
            if op == "!=":
                return not _equal(v, lit)
            if not ((_is_number(v) and _is_number(lit)) or (isinstance(v, str) and isinstance(lit, str))):
                kind = "a number" if _is_number(lit) else "a string"
                raise FilterError(
                    f"filter {text!r}: field {field!r} of track {tid!r} holds "
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


def _equal(v: Any, lit: Any) -> bool:
    if isinstance(lit, bool) or isinstance(v, bool):
        return isinstance(v, bool) and isinstance(lit, bool) and v == lit
    if _is_number(v) and _is_number(lit):
        return v == lit
    return type(v) is type(lit) and v == lit


def parse_filter(text: str) -> ParsedFilter:
    """Parse ``text`` into a predicate; :class:`FilterError` names the filter on bad syntax."""
    if not isinstance(text, str):
        raise FilterError(f"filter must be a string such as 'duration > 60', got {type(text).__name__}")
    return _Parser(text).parse()


def check_fields(parsed: ParsedFilter, known: Sequence[str] | set[str], where: str) -> None:
    """Refuse a filter naming a field that no stored track has (a typo, most likely)."""
    known_set = set(known) | {"id"}
    unknown = sorted(parsed.fields - known_set)
    if unknown:
        raise FilterError(
            f"filter {parsed.text!r}: unknown field {unknown[0]!r} in {where}; "
            f"fields present: {', '.join(sorted(known_set))}"
        )
