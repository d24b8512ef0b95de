"""``musicembed search``: nearest tracks to an audio file, a stored track or a text.

The query takes exactly the indexing path: an audio query is decoded, resampled,
chunked, encoded and enriched by the same :class:`~musicembed_core.pipeline.Embedder`
as the library was, so its vector lives in the same space as the stored ones.
The sink is opened read-only with the run's embedding space: a sink written by
another space (other model, weights, window or enricher chain) is refused, and
searching before any run creates nothing (the sink says to run first).

One search function serves the command line and ``musicembed serve``:
:func:`search_index` answers a :class:`Query` against an :class:`OpenIndex` (an
embedding with its sink opened read-only). ``musicembed search`` opens one, asks
once and closes it (:func:`search`); the service keeps one open per embedding
and asks it for every request, so both give the same answers and the same errors.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from .components import Hit, Sink, check_projector
from .errors import ConfigError, MusicembedError
from .outputs import open_sink
from .pipeline import PreparedEmbedding, embed_paths
from .runconfig import RunConfig


@dataclass
class Query:
    """Exactly one of ``audio``, ``track_id``, ``text``."""

    audio: str | None = None
    track_id: str | None = None
    text: str | None = None
    k: int = 10
    filter: str | None = None
    audio_name: str | None = None
    """How messages name ``audio`` (an upload's file name); default: the path itself."""

    def describe(self) -> str:
        if self.audio is not None:
            return f"audio {self.audio_name or self.audio}"
        if self.track_id is not None:
            return f"track {self.track_id}"
        return f"text {self.text!r}"


@dataclass
class SearchResult:
    query: str
    embedding: str
    sink: str
    collection: str
    space_hash: str
    hits: list[Hit] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "query": self.query,
            "embedding": self.embedding,
            "sink": self.sink,
            "collection": self.collection,
            "space_hash": self.space_hash,
            "hits": [
                {"rank": i + 1, "score": h.score, "id": h.id, "path": h.metadata.get("path"),
                 "metadata": h.metadata}
                for i, h in enumerate(self.hits)
            ],
        }


class AudioQueryError(MusicembedError):
    """An audio query file that cannot be decoded or embedded (empty, corrupt, not audio)."""


class TrackNotFoundError(MusicembedError):
    """A track id the index does not hold (``--id``, a playlist seed, ``/tracks/{id}``)."""


def unknown_track(track_id: str, sink: Sink, option: str = "--id") -> TrackNotFoundError:
    return TrackNotFoundError(
        f"{option} {track_id!r}: no such track in sink {sink.name!r} (ids are paths "
        f"relative to run.source, e.g. 'jazz/b.flac')"
    )


def _pick(items: Sequence[Any], name: str | None, what: str, option: str) -> Any:
    names = [getattr(x, "name", "") for x in items]
    if name is None:
        if len(items) > 1:
            raise ConfigError(
                f"the run has several {what}s ({', '.join(names)}): choose one with {option} NAME"
            )
        return items[0]
    if name not in names:
        raise ConfigError(f"{option} {name!r}: the run has no such {what} (it has: {', '.join(names)})")
    return items[names.index(name)]


def stored_vectors(sink: Sink, ids: list[str]) -> dict[str, Any]:
    """``sink.fetch(ids)``, with a clear error from a sink that cannot return stored vectors."""
    try:
        return sink.fetch(ids)
    except NotImplementedError as exc:
        raise MusicembedError(f"--id needs stored vectors, but {exc}") from exc


_MODEL_LOAD = threading.Lock()
"""Held while a query loads its encoder or projector: a model's ``load`` need not be
thread-safe, and the models are shared by every :class:`OpenIndex` built from one run."""


def query_vector(prep: PreparedEmbedding, sink: Sink, query: Query) -> Any:
    """The query as one float32 vector in ``prep``'s space (loading the model it needs)."""
    import numpy as np

    if query.audio is not None:
        label = query.audio_name or query.audio
        path = Path(query.audio).expanduser()
        if not path.is_file():
            raise MusicembedError(f"--audio {label!r}: no such file")
        with _MODEL_LOAD:
            prep.encoder.load()
        (res,) = embed_paths([prep], [path])
        if res.error:
            raise AudioQueryError(f"--audio {label!r}: {res.error}")
        return np.asarray(res.vectors[0], dtype=np.float32)
    if query.track_id is not None:
        found = stored_vectors(sink, [query.track_id])
        if query.track_id not in found:
            raise unknown_track(query.track_id, sink)
        return np.asarray(found[query.track_id], dtype=np.float32)
    projector = prep.spec.projector
    if projector is None:
        raise ConfigError(
            f"--text needs a text projector into embedding {prep.name!r} (space {prep.space.hash}, "
            f"encoder {prep.encoder.name!r}): bind embedding.projector = @projectors.NAME() with a "
            f"projector made for this encoder and enricher chain (`musicembed plugins` lists the "
            f"installed projectors)"
        )
    check_projector(projector, prep.space)  # a wrong projector loads nothing
    with _MODEL_LOAD:
        projector.load()
    vec = np.asarray(projector.embed_text([query.text]), dtype=np.float32)
    if vec.shape != (1, prep.space.dim):
        raise MusicembedError(
            f"projector {projector.name!r} returned shape {vec.shape}, expected (1, {prep.space.dim})"
        )
    return vec[0]


@dataclass
class OpenIndex:
    """One embedding of a run with its sink opened read-only: what queries are asked of.

    ``count`` is read once at opening (a sink is reopened to see a new run's vectors).
    ``lock`` serialises the calls into the sink; embedding an audio query happens
    outside it.
    """

    prep: PreparedEmbedding
    sink: Sink
    collection: str
    count: int
    lock: threading.RLock = field(default_factory=threading.RLock, repr=False)

    @property
    def name(self) -> str:
        return self.prep.name

    def close(self) -> None:
        with self.lock:
            self.sink.close()


def open_index(cfg: RunConfig, embedding: str | None = None, sink_name: str | None = None) -> OpenIndex:
    """Open the run's sink (``--sink``) read-only for one of its embeddings (``--embedding``)."""
    if not cfg.sinks:
        raise ConfigError(no_sink_hint())
    spec = _pick(cfg.embeddings, embedding, "embedding", "--embedding")
    template = _pick(cfg.sinks, sink_name, "sink", "--sink")
    prep = PreparedEmbedding.build(spec)
    sink, collection = open_sink(template, Path(cfg.output_dir), prep, readonly=True)
    try:
        count = sink.count()
    except BaseException:
        sink.close()
        raise
    return OpenIndex(prep=prep, sink=sink, collection=collection, count=count)


def check_query(query: Query) -> None:
    if sum(x is not None for x in (query.audio, query.track_id, query.text)) != 1:
        raise ConfigError("give exactly one of --audio FILE, --id TRACK_ID, --text TEXT")
    if query.k < 1:
        raise ConfigError(f"-k {query.k}: must be at least 1")


def check_not_empty(index: OpenIndex) -> None:
    if index.count == 0:
        raise MusicembedError(
            f"sink {index.sink.name!r} collection {index.collection!r} is empty: index the library "
            f"first with `musicembed run` and the same gin files"
        )


def search_index(index: OpenIndex, query: Query) -> SearchResult:
    """Answer one query from an open index: the search of ``musicembed search`` and of the service."""
    check_query(query)
    check_not_empty(index)
    prep, sink = index.prep, index.sink
    if query.track_id is None:  # audio or text: embedding it needs no sink
        vec = query_vector(prep, sink, query)
    with index.lock:
        if query.track_id is not None:
            vec = query_vector(prep, sink, query)
        extra = 1 if query.track_id is not None else 0
        (hits,) = sink.search(vec[None, :], k=query.k + extra, filter=query.filter)
    if query.track_id is not None:  # "more like this": the track itself is not an answer
        hits = [h for h in hits if h.id != query.track_id][: query.k]
    return SearchResult(
        query=query.describe(),
        embedding=prep.name,
        sink=sink.name,
        collection=index.collection,
        space_hash=prep.space.hash,
        hits=list(hits),
    )


def search(
    cfg: RunConfig,
    query: Query,
    embedding: str | None = None,
    sink_name: str | None = None,
) -> SearchResult:
    """Run one query against the run's sink for one of its embeddings (open, ask, close)."""
    check_query(query)
    index = open_index(cfg, embedding, sink_name)
    try:
        return search_index(index, query)
    finally:
        index.close()


PREFERRED_SINKS = ("faiss", "milvus")
"""Suggested first when installed: both need no server and no parameter."""


def no_sink_hint() -> str:
    """What to do when the run has no sink: a binding that adds an installed one, then run first."""
    from .plugins import get_manager

    installed = get_manager().names("sinks")
    if not installed:
        return (
            "the run configures no sink to search (run.sinks), and no sink plugin is installed: "
            "install one from the musicembed repository, e.g. `pip install ./plugins/faiss`, then "
            "add it to the run with --gin_param 'run.sinks=[@sinks.faiss()]', index with "
            "`musicembed run` and search with the same options"
        )
    name = next((n for n in PREFERRED_SINKS if n in installed), installed[0])
    binding = f"--gin_param 'run.sinks=[@sinks.{name}()]'"
    example = " (or use a run file that sets run.sinks, e.g. runs/quickstart_faiss.gin)" if name == "faiss" else ""
    return (
        f"the run configures no sink to search (run.sinks is empty). Add one to the same "
        f"--gin_file/--gin_param options{example}, index with it, then search with it:\n"
        f"  musicembed run ... {binding}\n"
        f"  musicembed search ... {binding} --audio FILE\n"
        f"Installed sinks: {', '.join(installed)} (`musicembed plugins` lists them)."
    )


def print_result(result: SearchResult, console: Any) -> None:
    from rich.table import Table

    table = Table(
        title=f"{result.query} · {result.embedding} ({result.space_hash}) · "
        f"{result.sink}:{result.collection}",
        title_justify="left",
    )
    table.add_column("rank", justify="right")
    table.add_column("score", justify="right")
    table.add_column("id")
    table.add_column("path", overflow="fold")
    for i, h in enumerate(result.hits, 1):
        table.add_row(str(i), f"{h.score:.4f}", h.id, str(h.metadata.get("path", "")))
    console.print(table)
    if not result.hits:
        console.print("[yellow]no results (is the filter too strict?)[/yellow]")
