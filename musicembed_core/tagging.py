"""``musicembed tag``: zero-shot tags for every stored track, from the space's text projector.

Each label (through an optional prompt template such as ``"{label} music"``) is
embedded by the embedding's text projector (``embedding.projector``: any space
that has one, not only CLAP). Every stored track is scored against every label
by cosine similarity, and its ``top_k`` labels (those at or above ``threshold``)
become its tags, best first. They go:

* to a CSV file (one row per track and tag: ``id,path,rank,label,score``) and a
  JSON file, by default ``<run.output_dir>/tags/<embedding>.csv`` / ``.json``;
* into the sink's metadata, each record upserted again with its stored vector,
  so ``musicembed search --filter`` can use them (see :data:`META_KEYS`).

A track already tagged with the same settings (label set, template, projector,
top-k, threshold: :func:`tagging_key`) is skipped unless ``force``: in the sink
its metadata says so; without a sink, the previous JSON file does (for the
tracks whose content hash is unchanged). The files always list every track.

Tracks come from the run's sink (``--sink``), or, when the run has none (or
with ``--no-sink``), from its HDF5/safetensors output; nothing is created: a
run that never happened is an error that says to run first.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterator, Sequence

from .components import Record, Sink, check_projector
from .errors import ConfigError, MusicembedError, SinkNotFoundError

if TYPE_CHECKING:  # pragma: no cover
    import numpy as np

    from .pipeline import PreparedEmbedding
    from .runconfig import RunConfig

DEFAULT_TEMPLATE = "{label}"
DEFAULT_TOP_K = 3
BATCH_TRACKS = 512
"""Tracks read, scored and upserted at once: memory stays bounded."""
TEXT_BATCH = 64
"""Prompts per ``embed_text`` call."""

META_TAG = "tag"
"""Sink metadata: the best label (absent when no label passes the threshold)."""
META_TAGS = "tags"
"""Sink metadata: the labels, best first (Milvus: ``json_contains(meta["tags"], "jazz")``)."""
META_SCORES = "tag_scores"
"""Sink metadata: ``{label: score}`` of the track's tags (``tag_scores.jazz > 0.3``)."""
META_KEY = "tagged_with"
"""Sink metadata: :func:`tagging_key` of the settings that produced the tags."""
META_KEYS = (META_TAG, META_TAGS, META_SCORES, META_KEY)


# --------------------------------------------------------------------------- inputs


def parse_labels(labels: str | None = None, labels_file: str | None = None) -> list[str]:
    """The labels from ``--labels "a,b,c"`` or ``--labels-file`` (one per line, ``#`` comments).

    Blank entries are dropped and repeats kept once; an empty result, both options
    or neither is a :class:`ConfigError` saying what to pass.
    """
    if labels is not None and labels_file is not None:
        raise ConfigError("give either --labels or --labels-file, not both")
    if labels is None and labels_file is None:
        raise ConfigError(
            "no labels: pass --labels 'jazz,rock,ambient' or --labels-file FILE (one label per line)"
        )
    if labels_file is not None:
        path = Path(labels_file).expanduser()
        if not path.is_file():
            raise ConfigError(f"--labels-file {labels_file!r}: no such file")
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"--labels-file {labels_file!r}: cannot read it as UTF-8 text ({exc})") from exc
        raw = [line.strip() for line in text.splitlines() if not line.lstrip().startswith("#")]
        where = f"--labels-file {labels_file!r}"
    else:
        raw = [part.strip() for part in str(labels).split(",")]
        where = f"--labels {labels!r}"
    out = list(dict.fromkeys(x for x in raw if x))
    if not out:
        raise ConfigError(
            f"{where}: the label list is empty; give at least one label, e.g. --labels "
            f"'jazz,rock,ambient' or a --labels-file with one label per line"
        )
    return out


def check_template(template: str) -> str:
    """``template`` if it holds ``{label}`` exactly where the label goes, else a ConfigError."""
    if "{label}" not in template:
        raise ConfigError(
            f"--template {template!r} has no {{label}} placeholder: write where the label goes, "
            f"e.g. --template '{{label}} music'"
        )
    return template


def prompts(labels: Sequence[str], template: str = DEFAULT_TEMPLATE) -> list[str]:
    """The text embedded for each label (``{label}`` replaced; other braces stay as they are)."""
    return [template.replace("{label}", label) for label in labels]


def tagging_key(space_hash: str, projector: dict[str, Any], labels: Sequence[str], template: str,
                top_k: int, threshold: float | None) -> str:
    """Identity of a tagging: same key, same tags (label order does not matter)."""
    blob = json.dumps(
        {"space": space_hash, "projector": projector, "labels": sorted(labels), "template": template,
         "top_k": int(top_k), "threshold": threshold},
        sort_keys=True, default=str,
    )
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


# --------------------------------------------------------------------------- scoring


def _numpy(x: Any) -> "np.ndarray":
    import numpy as np

    if hasattr(x, "detach"):  # a torch tensor
        x = x.detach().to("cpu").float().numpy()
    return np.asarray(x, dtype=np.float32)


def label_vectors(projector: Any, texts: Sequence[str], dim: int) -> "np.ndarray":
    """``[N, dim]`` float32 text vectors, checked (shape, finite values)."""
    import numpy as np

    projector.load()
    parts = []
    for start in range(0, len(texts), TEXT_BATCH):
        chunk = list(texts[start : start + TEXT_BATCH])
        vec = _numpy(projector.embed_text(chunk))
        if vec.shape != (len(chunk), dim):
            raise MusicembedError(
                f"projector {projector.name!r} returned shape {tuple(vec.shape)} for {len(chunk)} "
                f"texts, expected ({len(chunk)}, {dim})"
            )
        parts.append(vec)
    out = np.concatenate(parts, axis=0)
    bad = [texts[i] for i in np.flatnonzero(~np.isfinite(out).all(axis=1))]
    if bad:
        raise MusicembedError(
            f"projector {projector.name!r} returned NaN or infinite values for {bad[0]!r}"
        )
    return out


def top_tags(scores: "np.ndarray", labels: Sequence[str], top_k: int,
             threshold: float | None) -> list[list[tuple[str, float]]]:
    """Per track (columns of ``scores`` ``[labels, tracks]``): its best ``top_k`` labels with
    their scores, best first (ties: label order), keeping those ``>= threshold``."""
    import numpy as np

    out = []
    for col in np.asarray(scores, dtype=np.float64).T:
        order = np.argsort(-col, kind="stable")[:top_k]
        out.append([(labels[i], round(float(col[i]), 6)) for i in order
                    if threshold is None or col[i] >= threshold])
    return out


# --------------------------------------------------------------------------- result


@dataclass
class TrackTags:
    id: str
    path: str | None
    content_hash: str
    tags: list[tuple[str, float]]
    skipped: bool = False
    """Already tagged with the same settings: read back, not recomputed."""

    def as_dict(self) -> dict[str, Any]:
        return {"id": self.id, "path": self.path, "content_hash": self.content_hash,
                "tags": [{"label": label, "score": score} for label, score in self.tags]}


@dataclass
class TagResult:
    embedding: str
    space_hash: str
    projector: dict[str, Any]
    labels: list[str]
    template: str
    top_k: int
    threshold: float | None
    key: str
    source: str
    """Where the vectors were read: ``sink faiss:logmel`` or an output path."""
    sink: str | None = None
    """``name:collection`` whose metadata got the tags, or None."""
    tracks: list[TrackTags] = field(default_factory=list)
    updated: int = 0
    """Sink records upserted again with their tags."""
    files: dict[str, str] = field(default_factory=dict)

    @property
    def tagged(self) -> int:
        return sum(not t.skipped for t in self.tracks)

    @property
    def skipped(self) -> int:
        return sum(t.skipped for t in self.tracks)

    def counts(self) -> dict[str, int]:
        """How many tracks have each label as their best tag (every label listed)."""
        out = {label: 0 for label in self.labels}
        for t in self.tracks:
            if t.tags:
                out[t.tags[0][0]] += 1
        return out

    def header(self) -> dict[str, Any]:
        return {
            "embedding": self.embedding, "space_hash": self.space_hash, "projector": self.projector,
            "labels": self.labels, "template": self.template,
            "prompts": prompts(self.labels, self.template), "top_k": self.top_k,
            "threshold": self.threshold, "metric": "cosine", "tagged_with": self.key,
        }

    def summary(self) -> dict[str, Any]:
        return {
            "tracks": len(self.tracks), "tagged": self.tagged, "skipped": self.skipped,
            "untagged": sum(not t.tags for t in self.tracks), "source": self.source,
            "sink": self.sink, "sink_records_updated": self.updated, "files": self.files,
            "best_tag_counts": self.counts(),
        }

    def as_dict(self) -> dict[str, Any]:
        return {**self.header(), "summary": self.summary(),
                "tracks": [t.as_dict() for t in self.tracks]}


# --------------------------------------------------------------------------- sources


@dataclass
class _Batch:
    ids: list[str]
    content_hashes: list[str]
    paths: list[str | None]
    metadata: list[dict[str, Any] | None]
    """Stored sink metadata (sink source) or None (file source)."""
    vectors: Callable[[list[int]], "np.ndarray"]
    """Vectors of the rows (indices into ``ids``) to score."""


class _SinkSource:
    def __init__(self, sink: Sink, where: str) -> None:
        self.sink = sink
        self.where = where
        self.known = dict(sink.known())
        self.ids = sorted(self.known)

    def batches(self) -> Iterator[_Batch]:
        for start in range(0, len(self.ids), BATCH_TRACKS):
            ids = self.ids[start : start + BATCH_TRACKS]
            try:
                metas = self.sink.fetch_metadata(ids)
            except NotImplementedError as exc:
                raise MusicembedError(
                    f"{exc}, so tags cannot be merged into {self.where}: tag from the run's "
                    f"HDF5/safetensors output with --no-sink (files only), or update the sink plugin"
                ) from exc

            def vectors(rows: list[int], ids: list[str] = ids) -> "np.ndarray":
                import numpy as np

                wanted = [ids[r] for r in rows]
                try:
                    got = self.sink.fetch(wanted)
                except NotImplementedError as exc:
                    raise MusicembedError(f"tagging needs stored vectors, but {exc}") from exc
                missing = [t for t in wanted if t not in got]
                if missing:
                    raise MusicembedError(
                        f"{self.where} lists {missing[0]!r} but returned no vector for it: the "
                        f"collection changed while tagging; run `musicembed tag` again"
                    )
                return np.stack([np.asarray(got[t], dtype=np.float32) for t in wanted])

            mds = [metas.get(t) or {} for t in ids]
            yield _Batch(ids, [self.known[t] for t in ids], [md.get("path") for md in mds], mds,
                         vectors)


class _FileSource:
    def __init__(self, out: Any) -> None:
        self.out = out
        self.ids = list(out.ids)
        self.where = out.path
        self._matrix: Any = None

    def batches(self) -> Iterator[_Batch]:
        for start in range(0, len(self.ids), BATCH_TRACKS):
            ids = self.ids[start : start + BATCH_TRACKS]

            def vectors(rows: list[int], start: int = start) -> "np.ndarray":
                if self._matrix is None:
                    self._matrix = self.out.vectors()
                return self._matrix[[start + r for r in rows]]

            yield _Batch(ids, [self.out.content_hash(t) for t in ids],
                         [self.out.metadata(t).get("path") for t in ids], [None] * len(ids), vectors)


def _stored_tags(md: dict[str, Any]) -> list[tuple[str, float]]:
    scores = md.get(META_SCORES) or {}
    return [(label, float(scores[label])) for label in md.get(META_TAGS) or [] if label in scores]


def _previous_file(path: str, key: str) -> dict[str, TrackTags]:
    """Tracks of a previous JSON tag file written with the same settings (else nothing)."""
    try:
        doc = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    if not isinstance(doc, dict) or doc.get("tagged_with") != key:
        return {}
    out = {}
    for t in doc.get("tracks") or []:
        try:
            out[t["id"]] = TrackTags(t["id"], t.get("path"), t["content_hash"],
                                     [(x["label"], float(x["score"])) for x in t["tags"]], True)
        except (KeyError, TypeError, ValueError):
            continue
    return out


# --------------------------------------------------------------------------- outputs


def default_paths(output_dir: str | os.PathLike[str], embedding: str) -> tuple[str, str]:
    """``<output_dir>/tags/<embedding>.csv`` and ``.json``."""
    base = Path(output_dir) / "tags" / embedding
    return str(base) + ".csv", str(base) + ".json"


def write_csv(path: str, result: TagResult) -> None:
    """One row per track and tag, best first: ``id,path,rank,label,score``."""
    from .atomic import atomic_write_text

    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["id", "path", "rank", "label", "score"])
    for t in result.tracks:
        for rank, (label, score) in enumerate(t.tags, 1):
            w.writerow([t.id, t.path or "", rank, label, f"{score:.6f}"])
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, buf.getvalue())


def write_json(path: str, result: TagResult) -> None:
    from .atomic import atomic_write_json

    Path(path).parent.mkdir(parents=True, exist_ok=True)
    doc = {**result.header(), "tracks": [t.as_dict() for t in result.tracks]}
    atomic_write_json(path, doc, indent=1, ensure_ascii=False)


# --------------------------------------------------------------------------- the command


@dataclass
class TagRequest:
    labels: list[str]
    template: str = DEFAULT_TEMPLATE
    top_k: int = DEFAULT_TOP_K
    threshold: float | None = None
    force: bool = False
    use_sink: bool = True
    csv_path: str | None = None
    json_path: str | None = None


def _check_request(req: TagRequest) -> None:
    if not req.labels:
        raise ConfigError("the label list is empty: pass --labels 'jazz,rock' or --labels-file FILE")
    check_template(req.template)
    if int(req.top_k) < 1:
        raise ConfigError(f"--top-k {req.top_k}: must be at least 1")
    if req.threshold is not None and not -1.0 <= float(req.threshold) <= 1.0:
        raise ConfigError(
            f"--threshold {req.threshold}: scores are cosine similarities, so give a value "
            f"between -1 and 1 (e.g. 0.2)"
        )


def _projector(prep: "PreparedEmbedding") -> Any:
    projector = prep.spec.projector
    if projector is None:
        raise ConfigError(
            f"tagging needs a text projector into embedding {prep.name!r} (space {prep.space.hash}, "
            f"encoder {prep.encoder.name!r}), and the run binds none: add --gin_param "
            f"'embedding.projector=@projectors.NAME()' with a projector made for this encoder and "
            f"enricher chain (`musicembed plugins` lists the installed projectors)"
        )
    check_projector(projector, prep.space)
    return projector


def _readable_output(cfg: "RunConfig", prep: "PreparedEmbedding") -> Any:
    """The run's HDF5/safetensors output of ``prep``, opened (its space checked)."""
    from .outputs import open_run_output

    return open_run_output(cfg, prep, doing="tag", without="no sink to tag (or --no-sink) and ")


def tag(cfg: "RunConfig", req: TagRequest, embedding: str | None = None,
        sink_name: str | None = None, progress: Callable[[int, int], None] | None = None) -> TagResult:
    """Tag every stored track of one embedding of the run (see the module doc).

    ``progress(done, total)`` is called after each batch of tracks.
    """
    import numpy as np

    from .outputs import open_sink
    from .pipeline import PreparedEmbedding
    from .search import _pick
    from .sinkkit import exact_scores

    _check_request(req)
    if sink_name is not None and not req.use_sink:
        raise ConfigError("give --sink NAME or --no-sink, not both")
    spec = _pick(cfg.embeddings, embedding, "embedding", "--embedding")
    prep = PreparedEmbedding.build(spec)
    projector = _projector(prep)
    labels = list(req.labels)
    proj_sig = projector.signature()
    key = tagging_key(prep.space.hash, proj_sig, labels, req.template, req.top_k, req.threshold)
    default_csv, default_json = default_paths(cfg.output_dir, prep.name)
    csv_path = req.csv_path or default_csv
    json_path = req.json_path or default_json

    sink: Sink | None = None
    out: Any = None
    if req.use_sink and cfg.sinks:
        template = _pick(cfg.sinks, sink_name, "sink", "--sink")
        # Read-only first: a sink that was never written is an error here, not created.
        try:
            probe, collection = open_sink(template, Path(cfg.output_dir), prep, readonly=True)
        except SinkNotFoundError as exc:
            raise SinkNotFoundError(f"nothing to tag: {exc}") from exc
        try:
            empty = probe.count() == 0
        finally:
            probe.close()
        if empty:
            raise MusicembedError(
                f"sink {probe.name!r} collection {collection!r} is empty: index the library first "
                f"with `musicembed run` and the same gin files"
            )
        sink, collection = open_sink(template, Path(cfg.output_dir), prep)
        where = f"sink {sink.name}:{collection}"
    elif sink_name is not None:
        raise ConfigError(f"--sink {sink_name!r}: the run configures no sink (run.sinks is empty)")
    else:
        out = _readable_output(cfg, prep)
        where = out.path

    result = TagResult(
        embedding=prep.name, space_hash=prep.space.hash, projector=proj_sig, labels=labels,
        template=req.template, top_k=int(req.top_k), threshold=req.threshold, key=key,
        source=where, sink=where.removeprefix("sink ") if sink is not None else None,
    )
    try:
        source: Any = _SinkSource(sink, where) if sink is not None else _FileSource(out)
        previous = {} if (req.force or sink is not None) else _previous_file(json_path, key)
        text_vecs: Any = None
        total, done = len(source.ids), 0
        for batch in source.batches():
            entries: list[TrackTags | None] = [None] * len(batch.ids)
            todo: list[int] = []
            for i, tid in enumerate(batch.ids):
                md = batch.metadata[i]
                if md is not None and not req.force and md.get(META_KEY) == key:
                    entries[i] = TrackTags(tid, batch.paths[i], batch.content_hashes[i],
                                           _stored_tags(md), skipped=True)
                elif md is None and tid in previous and \
                        previous[tid].content_hash == batch.content_hashes[i]:
                    entries[i] = previous[tid]
                else:
                    todo.append(i)
            if todo:
                if text_vecs is None:  # loaded only when some track needs tags
                    text_vecs = label_vectors(projector, prompts(labels, req.template),
                                              prep.space.dim)
                vecs = batch.vectors(todo)
                tags = top_tags(exact_scores(text_vecs, vecs, "cosine"), labels, req.top_k,
                                req.threshold)
                records = []
                for row, i, tt in zip(vecs, todo, tags):
                    entries[i] = TrackTags(batch.ids[i], batch.paths[i], batch.content_hashes[i], tt)
                    md = batch.metadata[i]
                    if md is not None:
                        new_md = {k: v for k, v in md.items()
                                  if k not in META_KEYS and k != "content_hash"}
                        if tt:
                            new_md[META_TAG] = tt[0][0]
                        new_md[META_TAGS] = [label for label, _ in tt]
                        new_md[META_SCORES] = {label: score for label, score in tt}
                        new_md[META_KEY] = key
                        records.append(Record(batch.ids[i], np.asarray(row, np.float32),
                                              batch.content_hashes[i], new_md))
                if records and sink is not None:
                    sink.upsert(records)
                    result.updated += len(records)
            result.tracks += [e for e in entries if e is not None]
            done += len(batch.ids)
            if progress is not None:
                progress(done, total)
        if sink is not None:
            sink.flush()
    finally:
        if sink is not None:
            sink.close()
        if out is not None:
            out.close()
    write_csv(csv_path, result)
    write_json(json_path, result)
    result.files = {"csv": csv_path, "json": json_path}
    return result


def filter_example(label: str) -> str:
    """A ``search --filter`` on the best tag that both the core parser (FAISS) and Milvus read."""
    return f'meta["{META_TAG}"] == {json.dumps(label, ensure_ascii=False)}'


def print_summary(result: TagResult, console: Any) -> None:
    from rich.markup import escape

    counts = ", ".join(f"{escape(label)} {n}" for label, n in
                       sorted(result.counts().items(), key=lambda kv: -kv[1]) if n)
    untagged = sum(not t.tags for t in result.tracks)
    skipped = (f", {result.skipped} already tagged with these settings (skipped; --force redoes "
               f"them)" if result.skipped else "")
    console.print(
        f"tagged {result.tagged} of {len(result.tracks)} tracks of {escape(result.embedding)} "
        f"({result.space_hash}) with {len(result.labels)} labels{skipped}",
        highlight=False, soft_wrap=True,
    )
    if counts:
        console.print(f"best tag: {counts}", highlight=False, soft_wrap=True)
    if untagged:
        console.print(f"[yellow]{untagged} tracks have no tag at or above --threshold "
                      f"{result.threshold}[/yellow]", highlight=False)
    if result.sink:
        console.print(
            f"{escape(result.sink)}: {result.updated} records updated; search them with e.g. "
            f"--filter '{escape(filter_example(result.labels[0]))}'",
            highlight=False, soft_wrap=True,
        )
    console.print(f"wrote {escape(result.files['csv'])} and {escape(result.files['json'])}",
                  highlight=False, soft_wrap=True)
