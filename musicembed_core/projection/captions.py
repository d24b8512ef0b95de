"""Caption files, their join to a run's stored track ids, and track-level splits.

Training a text projector pairs each caption with the stored vector of its
track. This module reads the captions (generic JSONL/CSV and the real dataset
layouts), finds each caption's track among the stored ids, and splits the
captioned tracks into train / validation / test *by track*, so that no track,
and so none of its captions, is in two splits.

Formats (``read_captions(path, fmt)``; ``fmt="auto"`` picks one from the content):

=================  ===========================  ======================================
format             join key                     captions
=================  ===========================  ======================================
``jsonl``/``csv``  ``id`` or ``path`` (also      main: ``caption`` (or ``main_caption``,
                   ``file``, ``filename``,      ``text``); alternatives: ``alt_captions``
                   ``location``, ``track_id``,  (JSON list; in CSV a JSON list or
                   ``ytid``)                    ``|``-separated) or ``alt_caption``
``musicbench``     ``location``                 ``main_caption``; ``alt_caption``
``musiccaps``      ``ytid``                     ``caption``; ``aspect_list`` (a Python
                                                list string) as one alternative "a, b, c"
``song_describer`` ``track_id``                 ``caption``; several rows per track are
                                                several main captions
=================  ===========================  ======================================

JSON input is either JSON lines (one object per line; MusicBench's ``.json``
files are JSON lines) or one JSON array of objects. CSV may be comma or tab
separated. Rows with an empty caption are skipped and counted
(:attr:`CaptionFile.skipped`); a file that cannot be read raises
:class:`~musicembed_core.errors.ConfigError` naming the file, the line and the
column, and what to do.

Joining (:func:`join_captions`) tries, for each caption key, in order: the exact
stored id; the normalised relative path; the stored metadata path (``paths``);
a path suffix (``data/datashare/x/a.wav`` finds the id ``x/a.wav`` and the other
way round); the file name; the stem (``a`` finds ``x/a.wav``; a Song Describer
``track_id`` ``1000`` finds ``00/1000.2min.mp3``; a MusicCaps ``ytid`` finds a
stem equal to it or starting with ``<ytid>-``, ``<ytid>_`` or ``[<ytid>]``). The
first rule that finds anything decides: one track is a match, several are an
*ambiguous* caption (reported, not used).
"""

from __future__ import annotations

import ast
import csv
import hashlib
import io
import json
import logging
import os
import posixpath
from bisect import bisect_left
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping, Sequence

from ..errors import ConfigError

__all__ = [
    "FORMATS",
    "Caption",
    "CaptionFile",
    "Joined",
    "Split",
    "join_captions",
    "read_captions",
    "read_id_list",
    "split_tracks",
]

log = logging.getLogger(__name__)

FORMATS: tuple[str, ...] = ("auto", "jsonl", "csv", "musicbench", "musiccaps", "song_describer")
"""Values of ``read_captions(fmt=...)``."""

KEY_FIELDS: tuple[str, ...] = ("id", "path", "file", "filename", "location", "track_id", "ytid")
"""Join-key columns a generic JSONL/CSV file may use (the first present one wins)."""

MAIN_FIELDS: tuple[str, ...] = ("caption", "main_caption", "text")
"""Main-caption columns of a generic file (the first present one wins)."""

ALT_FIELDS: tuple[str, ...] = ("alt_captions", "alt_caption")
"""Alternative-caption columns of a generic file (all present ones are read)."""

# format -> (key field, main field, alt fields)
_DATASETS: dict[str, tuple[str, str, tuple[str, ...]]] = {
    "musicbench": ("location", "main_caption", ("alt_caption",)),
    "musiccaps": ("ytid", "caption", ("aspect_list",)),
    "song_describer": ("track_id", "caption", ()),
}

_HINT = {
    "musicbench": "a MusicBench file has `location`, `main_caption` and `alt_caption`",
    "musiccaps": "a MusicCaps CSV has `ytid`, `caption` and `aspect_list`",
    "song_describer": "a Song Describer CSV has `track_id` and `caption`",
}


# --------------------------------------------------------------------------- reading


@dataclass(frozen=True)
class Caption:
    """One caption of one track, as read from the file."""

    key: str  # the raw join key from the file (id, path, location, ytid, track_id)
    text: str
    kind: str  # "main" | "alt"
    line: int  # 1-based line (CSV: the row's first line; JSON array: the record number)


@dataclass
class CaptionFile:
    """A parsed caption file: captions in file order (each row's main before its alternatives)."""

    path: str
    fmt: str
    captions: list[Caption]
    key_field: str
    skipped: list[tuple[int, str]] = field(default_factory=list)  # (line, reason) of unused rows

    @property
    def keys(self) -> list[str]:
        """Distinct join keys in file order."""
        return list(dict.fromkeys(c.key for c in self.captions))

    def __len__(self) -> int:
        return len(self.captions)


class _Row:
    """One record of the file: its fields and where it starts (for messages)."""

    __slots__ = ("fields", "line", "unit")

    def __init__(self, fields: dict[str, Any], line: int, unit: str = "line") -> None:
        self.fields = fields
        self.line = line
        self.unit = unit


def _where(path: str, row: _Row, column: str | None = None) -> str:
    col = f", column {column!r}" if column else ""
    return f"{path}: {row.unit} {row.line}{col}"


def read_captions(path: str | os.PathLike[str], fmt: str = "auto") -> CaptionFile:
    """Read a caption file (see the module doc for the formats); ``fmt="auto"`` detects it.

    Detection: JSON (a line starting with ``{`` or ``[``) or CSV from the content, then
    the dataset from the column names (MusicBench: ``main_caption`` + ``location``;
    MusicCaps: ``ytid`` + ``caption``; Song Describer: ``track_id`` + ``caption``),
    else the generic layout.
    """
    path = str(path)
    if fmt not in FORMATS:
        raise ConfigError(f"unknown caption format {fmt!r} for {path}: use one of {', '.join(FORMATS)}")
    try:
        text = Path(path).read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise ConfigError(f"caption file not found: {path} (check the --captions path)") from None
    except IsADirectoryError:
        raise ConfigError(f"{path} is a folder; --captions wants a caption file (JSONL or CSV)") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not UTF-8 text at byte {exc.start}; save the caption file as "
                          f"UTF-8") from None

    container = _container(path, text)
    rows = list(_json_rows(path, text) if container == "json" else _csv_rows(path, text))
    if not rows:
        raise ConfigError(f"{path}: no caption rows found (an empty file, or only a header)")
    columns = list(dict.fromkeys(k for r in rows[:50] for k in r.fields))
    if fmt == "auto":
        fmt = _detect(columns, container)
    elif fmt == "jsonl" and container != "json" or fmt == "csv" and container != "csv":
        other = "CSV" if container == "csv" else "JSON"
        raise ConfigError(f"{path}: --captions-format {fmt} but the file looks like {other}; "
                          f"use --captions-format auto")

    if fmt in _DATASETS:
        key_field, main_field, alt_fields = _DATASETS[fmt]
        missing = [c for c in (key_field, main_field) if c not in columns]
        if missing:
            raise ConfigError(
                f"{path}: format {fmt} needs the column(s) {', '.join(missing)}; found "
                f"{_names(columns)} ({_HINT[fmt]}; use --captions-format auto or the right format)")
    else:
        key_field = next((k for k in KEY_FIELDS if k in columns), "")
        if not key_field:
            raise ConfigError(
                f"{path}: no join-key column: found {_names(columns)}; a caption file needs one of "
                f"{', '.join(KEY_FIELDS)} (the stored track id or the audio file's path)")
        main_field = next((k for k in MAIN_FIELDS if k in columns), "")
        if not main_field:
            raise ConfigError(
                f"{path}: no caption column: found {_names(columns)}; a caption file needs one of "
                f"{', '.join(MAIN_FIELDS)}")
        alt_fields = tuple(a for a in ALT_FIELDS if a in columns)

    out = CaptionFile(path=path, fmt=fmt, captions=[], key_field=key_field)
    for row in rows:
        _read_row(out, row, key_field, main_field, alt_fields, container)
    if not out.captions:
        reasons = "; ".join(f"line {line}: {why}" for line, why in out.skipped[:3])
        raise ConfigError(f"{path}: no usable captions: every row lacks a caption or a "
                          f"{key_field} ({reasons})")
    return out


def _names(columns: Sequence[str]) -> str:
    return ", ".join(repr(c) for c in columns) if columns else "no columns"


def _container(path: str, text: str) -> str:
    """JSON (lines or an array) or CSV, from the first character of the content."""
    first = text.lstrip()[:1]
    if not first:
        raise ConfigError(f"{path}: the caption file is empty")
    return "json" if first in ("{", "[") else "csv"


def _detect(columns: Sequence[str], container: str) -> str:
    cols = set(columns)
    if {"main_caption", "location"} <= cols:
        return "musicbench"
    if {"ytid", "caption"} <= cols:
        return "musiccaps"
    if {"track_id", "caption"} <= cols and ("caption_id" in cols or not cols & {"id", "path"}):
        return "song_describer"
    return "jsonl" if container == "json" else "csv"


def _json_rows(path: str, text: str) -> Iterator[_Row]:
    stripped = text.lstrip()
    if stripped.startswith("["):  # one JSON array of objects
        try:
            records = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ConfigError(f"{path}: line {exc.lineno}, column {exc.colno}: invalid JSON ({exc.msg}); "
                              f"fix the file or write one JSON object per line") from None
        if not isinstance(records, list):
            raise ConfigError(f"{path}: expected a JSON array of objects or JSON lines")
        for i, rec in enumerate(records, start=1):
            row = _Row(rec, i, "record")
            if not isinstance(rec, dict):
                raise ConfigError(f"{_where(path, row)}: expected a JSON object, got {type(rec).__name__}")
            yield row
        return
    for lineno, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except json.JSONDecodeError as exc:
            raise ConfigError(f"{path}: line {lineno}, column {exc.colno}: invalid JSON ({exc.msg}); each "
                              f"line must be one JSON object such as "
                              f'{{"id": "a.wav", "caption": "..."}}') from None
        if not isinstance(rec, dict):
            raise ConfigError(f"{path}: line {lineno}: expected a JSON object, got {type(rec).__name__}")
        yield _Row(rec, lineno)


def _csv_rows(path: str, text: str) -> Iterator[_Row]:
    header = text.lstrip("\r\n").split("\n", 1)[0]
    delimiter = "\t" if header.count("\t") > header.count(",") else ","
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter)
    columns: list[str] = []
    try:
        while not any(c.strip() for c in columns):  # the header: the first non-blank row
            columns = [c.strip() for c in next(reader)]
    except StopIteration:
        return
    except csv.Error as exc:
        raise ConfigError(f"{path}: line {reader.line_num}: unreadable CSV header ({exc})") from None
    if len(set(columns)) != len(columns):
        dup = sorted({c for c in columns if columns.count(c) > 1})
        raise ConfigError(f"{path}: line {reader.line_num}: repeated column name(s) {', '.join(dup)}; "
                          f"rename them")
    start = reader.line_num + 1
    while True:
        try:
            values = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            raise ConfigError(f"{path}: line {start}: unreadable CSV row ({exc}); check its quotes") from None
        row_line, start = start, reader.line_num + 1
        if not values or all(not v.strip() for v in values):
            continue
        if len(values) > len(columns):
            raise ConfigError(
                f"{path}: line {row_line}: {len(values)} values but the header has {len(columns)} "
                f"columns; quote fields that contain '{delimiter}' (\"like, this\")")
        yield _Row(dict(zip(columns, values)), row_line)


def _text(path: str, row: _Row, column: str, value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return str(value)
    if not isinstance(value, str):
        raise ConfigError(f"{_where(path, row, column)}: expected text, got {type(value).__name__} "
                          f"{json.dumps(value)[:60]}")
    return " ".join(value.split())


def _key(path: str, row: _Row, column: str, value: Any) -> str:
    if isinstance(value, float) and value.is_integer():
        value = int(value)  # a track id written as 1000.0
    return _text(path, row, column, value)


def _alternatives(path: str, row: _Row, column: str, value: Any, container: str) -> list[Any]:
    if value is None or value == "":
        return []
    if column == "aspect_list":  # MusicCaps: "['low quality', 'sustained strings melody']"
        if isinstance(value, list):
            items = value
        else:
            try:
                items = ast.literal_eval(str(value))
            except (ValueError, SyntaxError):
                raise ConfigError(
                    f"{_where(path, row, column)}: not a list such as \"['piano', 'calm']\": "
                    f"{str(value)[:60]!r}") from None
            if not isinstance(items, (list, tuple)):
                raise ConfigError(f"{_where(path, row, column)}: expected a list of aspects, "
                                  f"got {str(value)[:60]!r}")
        aspects = [_text(path, row, column, a) for a in items]
        joined = ", ".join(a for a in aspects if a)
        return [joined] if joined else []
    if isinstance(value, list):
        return value
    if isinstance(value, str) and column == "alt_captions" and container == "csv":
        s = value.strip()
        if s.startswith("["):
            try:
                items = json.loads(s)
            except json.JSONDecodeError as exc:
                raise ConfigError(f"{_where(path, row, column)}: invalid JSON list at character "
                                  f"{exc.colno} ({exc.msg}); write a JSON list or separate the "
                                  f"captions with '|'") from None
            if isinstance(items, list):
                return items
        return s.split("|")
    if isinstance(value, str):
        return [value]
    raise ConfigError(f"{_where(path, row, column)}: expected a caption or a list of captions, "
                      f"got {type(value).__name__}")


def _read_row(out: CaptionFile, row: _Row, key_field: str, main_field: str,
              alt_fields: tuple[str, ...], container: str) -> None:
    path = out.path
    key = _key(path, row, key_field, row.fields.get(key_field))
    main_value = row.fields.get(main_field)
    mains = main_value if isinstance(main_value, list) else [main_value]
    texts = [("main", _text(path, row, main_field, m)) for m in mains]
    for alt in alt_fields:
        for a in _alternatives(path, row, alt, row.fields.get(alt), container):
            texts.append(("alt", _text(path, row, alt, a)))
    texts = [(kind, t) for kind, t in texts if t]
    if not key:
        out.skipped.append((row.line, f"empty {key_field}"))
        return
    if not texts:
        out.skipped.append((row.line, f"no caption text for {key_field} {key!r}"))
        return
    for kind, t in texts:
        out.captions.append(Caption(key=key, text=t, kind=kind, line=row.line))


def read_id_list(path: str | os.PathLike[str]) -> list[str]:
    """Track ids (or paths) one per line; blank lines and lines starting with ``#`` are ignored
    (a ``#`` inside a line is part of the name: file names may hold one)."""
    try:
        text = Path(path).read_text(encoding="utf-8-sig")
    except (FileNotFoundError, IsADirectoryError):
        raise ConfigError(f"id list not found: {path} (one track id or path per line)") from None
    lines = (line.strip() for line in text.splitlines())
    return list(dict.fromkeys(line for line in lines if line and not line.startswith("#")))


# --------------------------------------------------------------------------- joining


def _norm(p: str) -> str:
    p = p.replace("\\", "/").strip()
    absolute = p.startswith("/")
    p = posixpath.normpath(p)
    if p == ".":
        return ""
    return p if absolute else p.lstrip("/")


def _parts(p: str) -> tuple[str, ...]:
    return tuple(x for x in _norm(p).split("/") if x)


def _stem(name: str) -> str:
    stem, _ = posixpath.splitext(name)
    return stem or name


class TrackMatcher:
    """Finds a stored track id for a caption key or a user's test-list entry (rules: module doc)."""

    def __init__(self, ids: Sequence[str], paths: Mapping[str, str] | None = None) -> None:
        self.ids = list(dict.fromkeys(ids))
        self._exact = set(self.ids)
        self._norm: dict[str, list[str]] = {}
        self._meta: dict[str, list[str]] = {}
        self._suffix: dict[tuple[str, ...], list[str]] = {}
        self._base: dict[str, list[str]] = {}
        self._stem: dict[str, list[str]] = {}
        self._root: dict[str, list[str]] = {}
        for tid in self.ids:
            parts = _parts(tid)
            self._norm.setdefault("/".join(parts), []).append(tid)
            for k in range(2, len(parts)):  # proper suffixes of at least two components
                self._suffix.setdefault(parts[-k:], []).append(tid)
            name = parts[-1] if parts else tid
            self._base.setdefault(name, []).append(tid)
            self._stem.setdefault(_stem(name), []).append(tid)
            root = name.split(".", 1)[0]
            if root and root != _stem(name):
                self._root.setdefault(root, []).append(tid)
        for tid, p in (paths or {}).items():
            if p and tid in self._exact:
                self._meta.setdefault(_norm(str(p)), []).append(tid)
        self._stems_sorted = sorted(self._stem)

    def match(self, key: str, ytid: bool = False) -> list[str]:
        """Candidates from the first rule that finds any: one is a match, several are ambiguous."""
        if key in self._exact:
            return [key]
        parts = _parts(key)
        if not parts:
            return []
        normed = "/".join(parts)
        for table, k in ((self._norm, normed), (self._meta, _norm(key))):
            if k in table:
                return _uniq(table[k])
        for k in range(len(parts) - 1, 1, -1):  # a stored id is a suffix of the key (longest first)
            if "/".join(parts[-k:]) in self._norm:
                return _uniq(self._norm["/".join(parts[-k:])])
        if len(parts) >= 2 and parts in self._suffix:  # the key is a suffix of stored ids
            return _uniq(self._suffix[parts])
        name = parts[-1]
        if name in self._base:
            return _uniq(self._base[name])
        stem = _stem(name)
        if ytid:
            found = self._prefixed(stem)
            if found:
                return found
        if stem in self._stem:
            return _uniq(self._stem[stem])
        if stem in self._root:
            return _uniq(self._root[stem])
        return []

    def _prefixed(self, ytid: str) -> list[str]:
        found: list[str] = []
        for prefix, ok in ((ytid, lambda s: s == ytid or s[len(ytid)] in "-_"), (f"[{ytid}]", None)):
            i = bisect_left(self._stems_sorted, prefix)
            while i < len(self._stems_sorted) and self._stems_sorted[i].startswith(prefix):
                s = self._stems_sorted[i]
                if ok is None or ok(s):
                    found.extend(self._stem[s])
                i += 1
        return _uniq(found)


def _uniq(ids: Iterable[str]) -> list[str]:
    return list(dict.fromkeys(ids))


@dataclass
class Joined:
    """Captions joined to stored track ids."""

    texts: dict[str, list[str]]  # track id -> its captions (main first, then alts); captioned tracks only
    uncaptioned: list[str]  # stored ids without any caption (reported, skipped)
    unmatched: list[Caption]  # captions whose track is not in the output
    ambiguous: list[Caption]  # captions whose key fits several stored tracks
    ambiguous_ids: dict[str, list[str]] = field(default_factory=dict)  # key -> its candidate ids
    skipped_rows: int = 0  # rows of the caption file without text or key
    source: str = ""  # the caption file

    @property
    def pairs(self) -> int:
        """Number of (caption, track) training pairs."""
        return sum(len(v) for v in self.texts.values())

    def report(self) -> str:
        """One paragraph for people: counts, then the first few of each problem."""
        n_tracks = len(self.texts) + len(self.uncaptioned)
        src = f" from {self.source}" if self.source else ""
        parts = [f"captions{src}: {_count(self.pairs, 'caption')} for {len(self.texts)} of "
                 f"{_count(n_tracks, 'stored track')}"]
        if self.uncaptioned:
            parts.append(f"{_count(len(self.uncaptioned), 'track')} without a caption skipped "
                         f"(e.g. {_examples(self.uncaptioned)})")
        if self.unmatched:
            keys = _uniq(c.key for c in self.unmatched)
            parts.append(f"{_count(len(self.unmatched), 'caption')} ({_count(len(keys), 'key')}) match no "
                         f"stored track (e.g. {_examples(keys)}: not embedded by the run, or named "
                         f"differently)")
        if self.ambiguous:
            keys = _uniq(c.key for c in self.ambiguous)
            shown = "; ".join(f"{k!r} -> {', '.join(self.ambiguous_ids.get(k, [])[:3])}" for k in keys[:3])
            parts.append(f"{_count(len(self.ambiguous), 'caption')} ({_count(len(keys), 'key')}) fit "
                         f"several tracks, not used ({shown}); give the path relative to run.source "
                         f"instead")
        if self.skipped_rows:
            parts.append(f"{_count(self.skipped_rows, 'row')} of the file without caption text or key")
        return "; ".join(parts) + "."


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" + ("" if n == 1 else "s")


def _examples(items: Sequence[str], n: int = 3) -> str:
    shown = ", ".join(repr(x) for x in items[:n])
    return shown + (", ..." if len(items) > n else "")


def join_captions(cf: CaptionFile, ids: Sequence[str], paths: Mapping[str, str] | None = None) -> Joined:
    """Attach each caption of ``cf`` to a stored track id (match rules: module doc).

    ``ids``: the run's stored ids; ``paths``: optional stored id -> the audio path stored
    in the track's metadata (``StoredOutput.metadata(id)["path"]``). A track's texts are
    its main captions in file order, then its alternatives; exact repeats are dropped.
    """
    matcher = TrackMatcher(ids, paths)
    ytid = cf.key_field == "ytid"
    cache: dict[str, list[str]] = {}
    mains: dict[str, list[str]] = {}
    alts: dict[str, list[str]] = {}
    unmatched: list[Caption] = []
    ambiguous: list[Caption] = []
    ambiguous_ids: dict[str, list[str]] = {}
    for cap in cf.captions:
        if cap.key not in cache:
            cache[cap.key] = matcher.match(cap.key, ytid=ytid)
        found = cache[cap.key]
        if not found:
            unmatched.append(cap)
        elif len(found) > 1:
            ambiguous.append(cap)
            ambiguous_ids[cap.key] = found
        else:
            (mains if cap.kind == "main" else alts).setdefault(found[0], []).append(cap.text)
    texts: dict[str, list[str]] = {}
    for tid in matcher.ids:
        got = _uniq(mains.get(tid, []) + alts.get(tid, []))
        if got:
            texts[tid] = got
    uncaptioned = [tid for tid in matcher.ids if tid not in texts]
    return Joined(texts=texts, uncaptioned=uncaptioned, unmatched=unmatched, ambiguous=ambiguous,
                  ambiguous_ids=ambiguous_ids, skipped_rows=len(cf.skipped), source=cf.path)


# --------------------------------------------------------------------------- splitting


@dataclass
class Split:
    """Track ids per split; ``rule`` records how they were chosen (written to split.json)."""

    train: list[str]
    val: list[str]
    test: list[str]
    seed: int
    rule: dict[str, Any]

    def to_json(self) -> dict[str, Any]:
        return {"format": "musicembed-split", "version": 1, "by": "track", "seed": self.seed,
                "rule": self.rule, "counts": {"train": len(self.train), "val": len(self.val),
                                              "test": len(self.test)},
                "train": list(self.train), "val": list(self.val), "test": list(self.test)}

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> "Split":
        try:
            split = cls(train=list(d["train"]), val=list(d["val"]), test=list(d["test"]),
                        seed=int(d["seed"]), rule=dict(d.get("rule", {})))
        except (KeyError, TypeError, ValueError) as exc:
            raise ConfigError(f"not a split record (split.json): missing or bad {exc}") from None
        seen: dict[str, str] = {}
        for name in ("train", "val", "test"):
            for tid in getattr(split, name):
                if tid in seen:
                    raise ConfigError(f"split record lists track {tid!r} in both {seen[tid]} and {name}")
                seen[tid] = name
        return split

    def of(self, track_id: str) -> str | None:
        """Which split holds ``track_id`` (None: none)."""
        for name in ("train", "val", "test"):
            if track_id in getattr(self, name):
                return name
        return None


def _order(ids: Iterable[str], seed: int) -> list[str]:
    """A seeded shuffle that does not depend on the input order, and that moves few tracks
    when tracks are added (each id's place is a hash of the seed and the id)."""
    return sorted(ids, key=lambda t: (hashlib.sha256(f"{seed}\0{t}".encode()).hexdigest(), t))


def split_tracks(ids: Sequence[str], val_fraction: float = 0.1, test_fraction: float = 0.0,
                 test_ids: Sequence[str] | None = None, seed: int = 0,
                 paths: Mapping[str, str] | None = None) -> Split:
    """Split track ids (never captions) into train / validation / test, deterministically.

    ``test_ids`` (a user's list, matched to ``ids`` by the join rules: id, path, file
    name, stem) wins over ``test_fraction``; entries that match no track are counted in
    ``rule["unknown_test_ids"]`` and logged, and a list matching none is an error.
    Fractions are of all tracks, rounded; with ``val_fraction > 0`` validation has at
    least one track, and so does test with ``test_fraction > 0``, while train keeps one.
    """
    for name, frac in (("val_fraction", val_fraction), ("test_fraction", test_fraction)):
        if not 0.0 <= float(frac) < 1.0:
            raise ConfigError(f"{name}={frac} must be in [0, 1)")
    if float(val_fraction) + float(test_fraction) >= 1.0:
        raise ConfigError(f"val_fraction + test_fraction = {val_fraction + test_fraction} leaves no "
                          f"training tracks; keep their sum below 1")
    all_ids = sorted(set(ids))
    n = len(all_ids)
    rule: dict[str, Any] = {"by": "track", "order": "sha256(seed, id)", "val_fraction": float(val_fraction),
                            "test_fraction": float(test_fraction), "test_ids": None}
    test: list[str] = []
    if test_ids is not None:
        matcher = TrackMatcher(all_ids, paths)
        unknown: list[str] = []
        ambiguous: list[str] = []
        for entry in test_ids:
            found = matcher.match(str(entry))
            if len(found) == 1:
                test.append(found[0])
            elif found:
                ambiguous.append(str(entry))
            else:
                unknown.append(str(entry))
        test = _uniq(test)
        if ambiguous:
            raise ConfigError(f"test list entries fit several tracks: {_examples(ambiguous)}; "
                              f"give paths relative to run.source")
        if test_ids and not test:
            raise ConfigError(f"none of the {len(test_ids)} test ids (e.g. {_examples(list(test_ids))}) is a "
                              f"captioned stored track (e.g. {_examples(all_ids)}); check the test list")
        if unknown:
            log.warning("%d of %d test ids are not captioned stored tracks and are ignored (e.g. %s)",
                        len(unknown), len(test_ids), _examples(unknown))
        rule.update(test_ids="given", test_fraction=None, unknown_test_ids=unknown)
    test_set = set(test)
    rest = _order([t for t in all_ids if t not in test_set], seed)
    if test_ids is None and test_fraction > 0:
        n_test = min(max(1, round(test_fraction * n)), max(0, n - 1 - (1 if val_fraction > 0 else 0)))
        test, rest = sorted(rest[:n_test]), rest[n_test:]
    n_val = 0
    if val_fraction > 0:
        n_val = min(max(1, round(val_fraction * n)), max(0, len(rest) - 1))
    if val_fraction > 0 and n_val == 0 or not rest[n_val:]:
        raise ConfigError(f"{_count(n, 'captioned track')} ({len(test)} for test) are too few to split into "
                          f"train and validation; caption more tracks or lower the fractions")
    return Split(train=sorted(rest[n_val:]), val=sorted(rest[:n_val]), test=sorted(test), seed=int(seed),
                 rule=rule)
