"""Milvus boolean expressions built from track ids, and collection names.

Track ids are file paths, so they hold quotes (``Don't Stop.mp3``), backslashes
and the odd newline. pymilvus 3.0.2 pastes string primary keys into its own
expressions unescaped (``get``/``delete`` by ids, ``query_iterator``), which
breaks on exactly those names, and Milvus Lite 3.2.2 has no expression
templates; so every expression here quotes its literals itself.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence

_ESCAPES = {"\\": "\\\\", '"': '\\"', "\n": "\\n", "\r": "\\r", "\t": "\\t"}
_NEEDS_ESCAPE = re.compile(r'[\\"\n\r\t]')
_COLLECTION_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,254}")

ID_CHUNK = 512
"""Ids per ``id in [...]`` expression: keeps each request and its plan small."""


def quote(value: str) -> str:
    """A double-quoted Milvus string literal (the escapes both Milvus and Milvus Lite read)."""
    return '"' + _NEEDS_ESCAPE.sub(lambda m: _ESCAPES[m.group()], value) + '"'


def id_in(ids: Sequence[str], field: str = "id") -> str:
    return f"{field} in [{', '.join(quote(i) for i in ids)}]"


def id_after(last: str, field: str = "id") -> str:
    return f"{field} > {quote(last)}"


def chunks(items: Sequence[str], size: int = ID_CHUNK) -> Iterator[Sequence[str]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def is_valid_collection_name(name: str) -> bool:
    """Milvus' rule: letters, digits, underscores; not starting with a digit; <= 255 chars."""
    return bool(_COLLECTION_NAME.fullmatch(name))


def collection_name_from(label: str) -> str:
    """A valid collection name derived from an embedding name (``mert-v1`` -> ``mert_v1``)."""
    name = re.sub(r"[^A-Za-z0-9_]", "_", label)[:255] or "musicembed"
    if name[0].isdigit():
        name = ("_" + name)[:255]
    return name

