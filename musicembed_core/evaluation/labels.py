"""The labels file of ``musicembed evaluate``: read it, pick its tasks, join it to stored tracks.

A labels file is a table with one row per track: a key column (the track id, i.e. its
path relative to ``run.source``, or its path; see :data:`KEY_COLUMNS`) and one column
per *task* (``genre``, ``instrument``, ...). Formats, by extension:

* ``.csv`` (``.tsv``: tab-separated): a header row, then one row per track;
* ``.jsonl`` / ``.ndjson``: one JSON object per line; ``.json``: a list of objects.
  A JSON list value (``"genre": ["jazz", "funk"]``) is a multi-label entry.

With a separator (``--multi-label-sep ';'``) a value such as ``jazz;funk`` is several
labels, and a column holding any such value is a multi-label task. An empty value
leaves that track out of that task only.

Rows are joined to the stored tracks by :class:`~musicembed_core.projection.captions.TrackMatcher`
(exact id, stored path, path suffix, file name, stem): keys that match no stored track,
keys that match several, and tracks labelled by several rows (the first row wins) are
counted and reported, never silently dropped.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

from ..errors import ConfigError

KEY_COLUMNS = ("id", "track_id", "path", "file", "filename", "track")
"""Columns that name the track, looked for in this order (``--id-column`` picks another)."""
JSONL_SUFFIXES = (".jsonl", ".ndjson")
EXAMPLES = 5
"""Unknown/ambiguous keys quoted in reports."""


@dataclass
class LabelTable:
    """A labels file as read: its columns and rows (``{column: value}``; a value is a str,
    a list of str, or None when empty)."""

    path: str
    columns: list[str]
    rows: list[dict[str, Any]]
    key_column: str
    tasks: list[str]
    multi_sep: str | None = None

    def values(self, row: Mapping[str, Any], column: str) -> list[str]:
        """The labels of one row for one task (empty: no label), split at the separator."""
        value = row.get(column)
        if value is None:
            return []
        items = value if isinstance(value, list) else [value]
        out: list[str] = []
        for item in items:
            text = str(item).strip()
            parts = text.split(self.multi_sep) if self.multi_sep else [text]
            out += [p.strip() for p in parts if p.strip()]
        return list(dict.fromkeys(out))

    def is_multi(self, column: str) -> bool:
        """True when some row holds several labels (a JSON list, or the separator)."""
        for row in self.rows:
            value = row.get(column)
            if isinstance(value, list):
                return True
            if self.multi_sep and value is not None and self.multi_sep in str(value):
                return True
        return False


@dataclass
class Task:
    """One label column joined to the stored tracks of one embedding."""

    name: str
    multi: bool
    ids: list[str]
    """Stored ids with at least one label for this task (stored order)."""
    labels: list[list[str]]
    """Labels of each id (one for a single-label task)."""
    missing: int = 0
    """Matched rows whose value for this column is empty (those tracks are left out)."""

    @property
    def classes(self) -> dict[str, int]:
        """Tracks per label, most frequent first (ties: by name)."""
        counts: dict[str, int] = {}
        for labels in self.labels:
            for label in labels:
                counts[label] = counts.get(label, 0) + 1
        return dict(sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))


@dataclass
class Joined:
    """A labels file joined to one output's stored tracks."""

    tasks: list[Task]
    rows: int
    matched: int
    """Rows joined to a stored track (duplicates not counted)."""
    unknown: list[str] = field(default_factory=list)
    """Keys matching no stored track."""
    ambiguous: dict[str, list[str]] = field(default_factory=dict)
    """Keys matching several stored tracks: the candidates."""
    duplicates: list[str] = field(default_factory=list)
    """Stored ids labelled by more than one row (the first row was used)."""
    unlabelled: int = 0
    """Stored tracks without a row."""

    def report(self) -> dict[str, Any]:
        return {
            "rows": self.rows, "matched": self.matched, "unlabelled_tracks": self.unlabelled,
            "unknown": {"count": len(self.unknown), "examples": self.unknown[:EXAMPLES]},
            "ambiguous": {"count": len(self.ambiguous),
                          "examples": {k: v[:3] for k, v in list(self.ambiguous.items())[:EXAMPLES]}},
            "duplicates": {"count": len(self.duplicates), "examples": self.duplicates[:EXAMPLES]},
        }


# --------------------------------------------------------------------------- reading


def read_labels(path: str, columns: Sequence[str] | None = None, multi_sep: str | None = None,
                id_column: str | None = None) -> LabelTable:
    """Read a labels file and choose its key column and tasks (errors name the file/column)."""
    p = Path(path).expanduser()
    where = f"--labels {path!r}"
    if not p.is_file():
        raise ConfigError(f"{where}: no such file")
    if multi_sep is not None and not multi_sep:
        raise ConfigError("--multi-label-sep: give a non-empty separator such as ';'")
    try:
        text = p.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{where}: cannot read it as UTF-8 text ({exc})") from exc
    suffix = p.suffix.lower()
    if suffix in JSONL_SUFFIXES:
        header, rows = _read_jsonl(text, where)
    elif suffix == ".json":
        header, rows = _read_json(text, where)
    else:
        header, rows = _read_csv(text, where, "\t" if suffix == ".tsv" else ",")
    if not rows:
        raise ConfigError(f"{where}: the file holds no rows (a header, then one row per track)")
    listed = ", ".join(header)
    if id_column is not None:
        if id_column not in header:
            raise ConfigError(f"--id-column {id_column!r}: {where} has no such column; its columns: {listed}")
        key = id_column
    else:
        found = [c for c in KEY_COLUMNS if c in header]
        if not found:
            raise ConfigError(
                f"{where} has no column naming the track (one of {', '.join(KEY_COLUMNS)}); its "
                f"columns: {listed}. Name it with --id-column COLUMN"
            )
        key = found[0]
    if columns:
        bad = [c for c in columns if c not in header]
        if bad:
            raise ConfigError(
                f"--label-column {bad[0]!r}: {where} has no such column; its columns: {listed}"
            )
        if key in columns:
            raise ConfigError(f"--label-column {key!r} is the column naming the tracks in {where}")
        tasks = list(dict.fromkeys(columns))
    else:
        tasks = [c for c in header if c != key and c not in KEY_COLUMNS]
        if not tasks:
            raise ConfigError(
                f"{where} has no label column besides {key!r} (its columns: {listed}); add one, "
                f"e.g. genre"
            )
    missing_key = sum(1 for r in rows if not str(r.get(key) or "").strip())
    if missing_key == len(rows):
        raise ConfigError(f"{where}: column {key!r} is empty in every row")
    return LabelTable(str(p), header, rows, key, tasks, multi_sep)


def _read_csv(text: str, where: str, delimiter: str) -> tuple[list[str], list[dict[str, Any]]]:
    reader = csv.reader(text.splitlines(), delimiter=delimiter)
    try:
        header = [h.strip() for h in next(reader)]
    except StopIteration:
        raise ConfigError(f"{where}: the file is empty; expected a header row such as 'id,genre'") from None
    except csv.Error as exc:
        raise ConfigError(f"{where}: not a readable CSV file ({exc})") from exc
    _check_header(header, where)
    rows = []
    try:
        for line_no, cells in enumerate(reader, 2):
            if not any(c.strip() for c in cells):
                continue
            if len(cells) > len(header):
                raise ConfigError(
                    f"{where} line {line_no}: {len(cells)} values for {len(header)} columns "
                    f"({', '.join(header)}); quote values that hold a {delimiter!r}"
                )
            cells += [""] * (len(header) - len(cells))
            rows.append({h: (c.strip() or None) for h, c in zip(header, cells)})
    except csv.Error as exc:
        raise ConfigError(f"{where}: not a readable CSV file ({exc})") from exc
    return header, rows


def _check_header(header: list[str], where: str) -> None:
    if not header or not any(header):
        raise ConfigError(f"{where}: the header row is empty; expected column names such as 'id,genre'")
    dup = sorted({h for h in header if header.count(h) > 1})
    if dup:
        raise ConfigError(f"{where}: column {dup[0]!r} appears twice in the header")
    if "" in header:
        raise ConfigError(f"{where}: column {header.index('') + 1} of the header has no name")


def _read_jsonl(text: str, where: str) -> tuple[list[str], list[dict[str, Any]]]:
    objs = []
    for line_no, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except ValueError as exc:
            raise ConfigError(f"{where} line {line_no}: not a JSON object ({exc})") from exc
        if not isinstance(obj, dict):
            raise ConfigError(f"{where} line {line_no}: expected a JSON object, got {type(obj).__name__}")
        objs.append(obj)
    return _json_rows(objs, where)


def _read_json(text: str, where: str) -> tuple[list[str], list[dict[str, Any]]]:
    try:
        doc = json.loads(text)
    except ValueError as exc:
        raise ConfigError(f"{where}: not valid JSON ({exc})") from exc
    if not isinstance(doc, list) or not all(isinstance(o, dict) for o in doc):
        raise ConfigError(f"{where}: expected a JSON list of objects, one per track")
    return _json_rows(doc, where)


def _json_rows(objs: list[dict[str, Any]], where: str) -> tuple[list[str], list[dict[str, Any]]]:
    header = list(dict.fromkeys(k for o in objs for k in o))
    rows = []
    for o in objs:
        row: dict[str, Any] = {}
        for k, v in o.items():
            if isinstance(v, list):
                items = [str(x) for x in v if x is not None and str(x).strip()]
                row[k] = items or None
            elif isinstance(v, dict):
                raise ConfigError(f"{where}: {k!r} holds an object; expected a label or a list of labels")
            else:
                row[k] = None if v is None or not str(v).strip() else str(v)
        rows.append(row)
    return header, rows


# --------------------------------------------------------------------------- joining


def join(table: LabelTable, ids: Sequence[str], paths: Mapping[str, str] | None = None) -> Joined:
    """Join the table's rows to stored ``ids`` (``paths``: the stored path of each id)."""
    from ..projection.captions import TrackMatcher

    matcher = TrackMatcher(ids, paths)
    by_id: dict[str, dict[str, Any]] = {}
    unknown: list[str] = []
    ambiguous: dict[str, list[str]] = {}
    duplicates: list[str] = []
    for row in table.rows:
        key = str(row.get(table.key_column) or "").strip()
        if not key:
            unknown.append("(empty key)")
            continue
        found = matcher.match(key)
        if not found:
            unknown.append(key)
        elif len(found) > 1:
            ambiguous[key] = found
        elif found[0] in by_id:
            duplicates.append(found[0])
        else:
            by_id[found[0]] = row
    tasks = []
    order = [t for t in ids if t in by_id]
    for column in table.tasks:
        kept, labels, missing = [], [], 0
        for tid in order:
            values = table.values(by_id[tid], column)
            if values:
                kept.append(tid)
                labels.append(values)
            else:
                missing += 1
        tasks.append(Task(column, table.is_multi(column), kept, labels, missing))
    return Joined(tasks, len(table.rows), len(by_id), unknown, ambiguous,
                  list(dict.fromkeys(duplicates)), len(ids) - len(by_id))
