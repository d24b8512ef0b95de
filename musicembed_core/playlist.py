"""``musicembed playlist`` and ``GET /playlist``: "more like this" mixes a music server reads.

A mix starts with its seed tracks (in the order given, each once), then the union
of the seeds' nearest neighbours ranked by their best score across the seeds
(``combine="best"``) or the sum of their scores (``combine="sum"``: tracks close to
several seeds first). Optional diversity caps limit how many tracks come from one
folder (``max_per_folder``) or share one metadata value (``max_per_tag={"artist": 2}``);
seeds count towards the caps but are always kept.

The mix is written as an extended M3U (``#EXTM3U``, one ``#EXTINF:<seconds>,<title>``
line per track, UTF-8) with paths relative to the playlist's own folder, so a
playlist saved inside the library folder is imported by Navidrome and the like.
The command line and the service call the same :func:`make_playlist`.
"""

from __future__ import annotations

import math
import os
import posixpath
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

from .errors import ConfigError
from .pipeline import source_base
from .search import (
    OpenIndex,
    Query,
    TrackNotFoundError,
    check_not_empty,
    query_vector,
    stored_vectors,
    unknown_track,
)

COMBINE = ("best", "sum")


@dataclass
class Seed:
    """A seed: a stored track id, an audio file (outside the library or not yet indexed)
    or a text (through the embedding's projector). Exactly one is set."""

    track_id: str | None = None
    audio: str | None = None
    text: str | None = None

    def describe(self) -> str:
        if self.track_id is not None:
            return self.track_id
        if self.audio is not None:
            return f"file {self.audio}"
        return f"text {self.text!r}"


@dataclass
class PlaylistEntry:
    id: str
    path: str
    score: float | None
    """Combined score (higher is closer); ``None`` for a seed."""
    seed: bool
    duration: float | None
    title: str
    metadata: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {"id": self.id, "path": self.path, "score": self.score, "seed": self.seed,
                "duration": self.duration, "title": self.title, "metadata": self.metadata}


@dataclass
class Playlist:
    seeds: list[str]
    embedding: str
    combine: str
    entries: list[PlaylistEntry]
    requested: int
    capped: int = 0
    """Neighbours left out by the diversity caps."""

    def as_dict(self) -> dict[str, Any]:
        return {"seeds": self.seeds, "embedding": self.embedding, "combine": self.combine,
                "requested": self.requested, "count": len(self.entries), "capped": self.capped,
                "tracks": [e.as_dict() for e in self.entries]}


def parse_tag_caps(items: Sequence[str]) -> dict[str, int]:
    """``["artist=2", "tag=3"]`` -> ``{"artist": 2, "tag": 3}`` (``--max-per-tag KEY=N``)."""
    caps: dict[str, int] = {}
    for item in items:
        key, sep, value = str(item).partition("=")
        key = key.strip()
        try:
            n = int(value)
        except ValueError:
            n = 0
        if not sep or not key or n < 1:
            raise ConfigError(
                f"--max-per-tag {item!r}: expected KEY=N with a metadata key and a count of at "
                f"least 1, e.g. --max-per-tag artist=2"
            )
        caps[key] = n
    return caps


def title_of(track_id: str, metadata: Mapping[str, Any]) -> str:
    title = metadata.get("title")
    artist = metadata.get("artist")
    if isinstance(title, str) and title:
        return f"{artist} - {title}" if isinstance(artist, str) and artist else title
    return posixpath.splitext(posixpath.basename(track_id))[0]


def _duration(metadata: Mapping[str, Any]) -> float | None:
    value = metadata.get("duration")
    try:
        d = float(value)
    except (TypeError, ValueError):
        return None
    return d if math.isfinite(d) and d >= 0 else None


class _Caps:
    def __init__(self, max_per_folder: int | None, max_per_tag: Mapping[str, int]) -> None:
        self.max_per_folder = max_per_folder
        self.max_per_tag = dict(max_per_tag)
        self.folders: dict[str, int] = {}
        self.tags: dict[tuple[str, str], int] = {}

    def _keys(self, track_id: str, metadata: Mapping[str, Any]) -> tuple[str, list[tuple[str, str]]]:
        tags = []
        for key in self.max_per_tag:
            value = metadata.get(key)
            if value is None or value == "" or isinstance(value, (list, dict)):
                continue  # no value: not capped
            tags.append((key, str(value).strip().casefold()))
        return posixpath.dirname(track_id), tags

    def allows(self, track_id: str, metadata: Mapping[str, Any]) -> bool:
        folder, tags = self._keys(track_id, metadata)
        if self.max_per_folder is not None and self.folders.get(folder, 0) >= self.max_per_folder:
            return False
        return all(self.tags.get(t, 0) < self.max_per_tag[t[0]] for t in tags)

    def take(self, track_id: str, metadata: Mapping[str, Any]) -> None:
        folder, tags = self._keys(track_id, metadata)
        self.folders[folder] = self.folders.get(folder, 0) + 1
        for t in tags:
            self.tags[t] = self.tags.get(t, 0) + 1


def resolve_seeds(index: OpenIndex, source: str | os.PathLike[str], values: Sequence[str],
                  texts: Sequence[str] = ()) -> list[Seed]:
    """``--seed ID_OR_FILE`` values as seeds: a stored id, a file of the library (its id),
    or any other audio file (embedded as a query); then ``--text`` seeds."""
    with index.lock:
        stored = set(index.sink.fetch_metadata(list(values))) if values else set()
    base = source_base(source).resolve()
    seeds: list[Seed] = []
    for value in values:
        if value in stored:
            seeds.append(Seed(track_id=value))
            continue
        path = Path(value).expanduser()
        if not path.is_file():
            raise TrackNotFoundError(
                f"--seed {value!r}: neither a track id in sink {index.sink.name!r} (ids are paths "
                f"relative to run.source, e.g. 'jazz/b.flac') nor an audio file"
            )
        resolved = path.resolve()
        rel = resolved.relative_to(base).as_posix() if base in resolved.parents else None
        if rel is not None:
            with index.lock:
                known = rel in index.sink.fetch_metadata([rel])
            if known:
                seeds.append(Seed(track_id=rel))
                continue
        seeds.append(Seed(audio=str(path)))
    return seeds + [Seed(text=t) for t in texts]


def make_playlist(
    index: OpenIndex,
    source: str | os.PathLike[str],
    seeds: Sequence[Seed],
    n: int = 25,
    *,
    combine: str = "best",
    max_per_folder: int | None = None,
    max_per_tag: Mapping[str, int] | None = None,
    filter: str | None = None,
) -> Playlist:
    """A mix of ``n`` tracks (seeds included) from the seeds' neighbours in ``index``."""
    import numpy as np

    if not seeds:
        raise ConfigError("give at least one --seed ID_OR_FILE (or --text TEXT)")
    if n < 1:
        raise ConfigError(f"-n {n}: must be at least 1")
    if combine not in COMBINE:
        raise ConfigError(f"--combine {combine!r}: use one of {', '.join(COMBINE)}")
    if max_per_folder is not None and max_per_folder < 1:
        raise ConfigError(f"--max-per-folder {max_per_folder}: must be at least 1")
    check_not_empty(index)
    prep, sink = index.prep, index.sink
    sign = -1.0 if str(getattr(sink, "metric", "cosine")).lower() == "l2" else 1.0

    # Seed vectors: stored ones fetched from the sink (at once), files and texts embedded
    # as queries.
    ids = [s.track_id for s in seeds if s.track_id is not None]
    with index.lock:
        found = stored_vectors(sink, list(dict.fromkeys(ids))) if ids else {}
    seed_ids: list[str] = []
    vectors: list[Any] = []
    for seed in seeds:
        if seed.track_id is not None:
            if seed.track_id not in found:
                raise unknown_track(seed.track_id, sink, "--seed")
            if seed.track_id not in seed_ids:
                seed_ids.append(seed.track_id)
                vectors.append(found[seed.track_id])
        else:
            vectors.append(query_vector(prep, sink, Query(audio=seed.audio, text=seed.text)))
    queries = np.stack([np.asarray(v, dtype=np.float32) for v in vectors])

    with index.lock:
        seed_meta = sink.fetch_metadata(seed_ids) if seed_ids else {}
    base = source_base(source)  # a track's path: under run.source, as the run named it

    def entry(tid: str, meta: dict[str, Any], score: float | None, seed: bool) -> PlaylistEntry:
        return PlaylistEntry(tid, os.path.abspath(base / tid), score, seed, _duration(meta),
                             title_of(tid, meta), meta)

    caps = _Caps(max_per_folder, max_per_tag or {})
    entries: list[PlaylistEntry] = []
    for sid in seed_ids[:n]:
        meta = dict(seed_meta.get(sid, {}))
        caps.take(sid, meta)
        entries.append(entry(sid, meta, None, True))

    # Neighbours: ask for more than needed (seeds and capped tracks are left out), and
    # again with a larger k while the caps leave the mix short and the index has more.
    total = max(index.count, 1)
    k = min(total, max(2 * n + len(seed_ids), n + len(seed_ids) + 10))
    capped = 0
    while True:
        with index.lock:
            results = sink.search(queries, k=k, filter=filter)
        scores: dict[str, float] = {}
        metas: dict[str, dict[str, Any]] = {}
        for hits in results:
            for h in hits:
                if h.id in seed_ids:
                    continue
                s = sign * float(h.score)
                if h.id not in scores:
                    scores[h.id], metas[h.id] = s, dict(h.metadata)
                elif combine == "best":
                    scores[h.id] = max(scores[h.id], s)
                else:
                    scores[h.id] += s
        ranked = sorted(scores, key=lambda i: (-scores[i], i))
        trial = _Caps(max_per_folder, max_per_tag or {})
        trial.folders, trial.tags = dict(caps.folders), dict(caps.tags)
        picked: list[str] = []
        capped = 0
        for tid in ranked:
            if len(entries) + len(picked) >= n:
                break
            if trial.allows(tid, metas[tid]):
                trial.take(tid, metas[tid])
                picked.append(tid)
            else:
                capped += 1
        if len(entries) + len(picked) >= n or k >= total:
            break
        k = min(total, 4 * k)
    entries += [entry(tid, metas[tid], scores[tid] * sign, False) for tid in picked]
    return Playlist(seeds=[s.describe() for s in seeds], embedding=prep.name, combine=combine,
                    entries=entries, requested=n, capped=capped)


def m3u8_text(playlist: Playlist, relative_to: str | os.PathLike[str] | None = None,
              locations: Sequence[str] | None = None) -> str:
    """Extended M3U: ``#EXTM3U``, then ``#EXTINF:<seconds>,<title>`` and the location of
    each track. Locations are paths relative to ``relative_to`` (the playlist's folder),
    absolute paths without it, or the given ``locations`` (e.g. URLs)."""
    lines = ["#EXTM3U"]
    folder = os.path.abspath(relative_to) if relative_to is not None else None
    for i, e in enumerate(playlist.entries):
        seconds = int(round(e.duration)) if e.duration is not None else -1
        title = " ".join(e.title.split())  # one line, whatever the metadata holds
        if locations is not None:
            where = locations[i]
        elif folder is not None:
            where = Path(os.path.relpath(e.path, folder)).as_posix()
        else:
            where = e.path
        lines += [f"#EXTINF:{seconds},{title}", where]
    return "\n".join(lines) + "\n"


def write_m3u8(playlist: Playlist, path: str | os.PathLike[str]) -> Path:
    """Write the mix atomically as ``path`` (paths relative to its folder)."""
    from .atomic import atomic_write_text

    out = Path(path).expanduser()
    if out.is_dir():
        raise ConfigError(f"-o {str(path)!r} is a folder: give a file name such as mix.m3u8")
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out, m3u8_text(playlist, relative_to=out.parent))
    return out
