"""Chores every sink has, so a new sink writes only its storage.

* the embedding space: store :func:`space_record` beside the vectors when a
  collection is created, and :func:`check_stored_space` when it is reopened;
* records in: :func:`stack_records` checks a batch of :class:`Record` (ids,
  dimension, NaN) and stacks it into one float32 matrix, last duplicate winning;
* read-only opens: :func:`sink_not_found` is the error a sink raises when
  ``open(..., readonly=True)`` finds no store or collection (it creates none);
* search: :func:`exact_search` is exact brute force over a ``[n, dim]`` matrix
  (small collections, filtered searches, untrained ANN indexes),
  :func:`exact_rerank` gives ANN candidates their exact scores, and
  :func:`exact_scores` is the scoring both use;
* filters: :func:`musicembed_core.filters.parse_filter` (re-exported here).

Scores follow one convention in every sink: ``cosine`` is cos(q, x) and ``ip``
is q . x (higher is closer); ``l2`` is the *squared* Euclidean distance (lower
is closer, 0 for the same vector), as FAISS and Milvus report it.

numpy is imported inside the functions: ``import musicembed_core`` stays cheap.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .components import Hit, Record
from .errors import SinkNotFoundError, SpaceMismatchError
from .filters import MetadataFilter, parse_filter
from .space import EmbeddingSpace

if TYPE_CHECKING:  # pragma: no cover
    import numpy as np

__all__ = [
    "METRICS",
    "MetadataFilter",
    "RecordBatch",
    "check_stored_space",
    "exact_rerank",
    "exact_scores",
    "exact_search",
    "parse_filter",
    "sink_not_found",
    "space_record",
    "stack_records",
    "unit_rows",
]

METRICS = ("cosine", "ip", "l2")
"""Metric names every sink accepts (its ``metric`` parameter)."""

_BLOCK_ROWS = 16384
"""Stored rows scored at once by :func:`exact_search`: memory stays bounded."""
_MAX_GATHER = 1 << 24
"""Floats gathered at once by :func:`exact_rerank`."""


# --------------------------------------------------------------------------- space


def space_record(space: EmbeddingSpace) -> str:
    """What a sink stores beside a new collection to recognise its space later (JSON text)."""
    return space.to_json()


def check_stored_space(stored: str | None, space: EmbeddingSpace, where: str) -> EmbeddingSpace:
    """The stored space, or :class:`SpaceMismatchError` naming the fields that differ.

    ``stored`` is what :func:`space_record` returned when the collection was
    created (``None`` when the store has none: not written by musicembed);
    ``where`` names the collection/file in the message.
    """
    try:
        parsed = EmbeddingSpace.from_json(stored) if stored else None
    except (ValueError, KeyError, TypeError) as exc:
        raise SpaceMismatchError(
            f"{where} holds an unreadable embedding-space record ({exc!r}): use another "
            f"collection, or delete this one to rebuild it"
        ) from None
    if parsed is None:
        raise SpaceMismatchError(
            f"{where} holds no embedding-space record, so it was not written by musicembed: "
            f"use another collection, or delete this one to rebuild it"
        )
    space.check_same(stored, where=where)  # type: ignore[arg-type]
    return parsed


# --------------------------------------------------------------------------- read-only opens


def sink_not_found(where: str) -> SinkNotFoundError:
    """The error of ``open(..., readonly=True)`` on a store or collection that does not exist."""
    return SinkNotFoundError(
        f"{where} does not exist yet (searching opens the sink read-only and creates nothing). "
        f"Run `musicembed run` with the same gin files and --gin_param options first to index "
        f"the library, then search again."
    )


# --------------------------------------------------------------------------- records in


@dataclass
class RecordBatch:
    """A checked batch of records, one row per distinct id (the last duplicate wins)."""

    ids: list[str]
    vectors: "np.ndarray"
    """float32 ``[n, dim]``, C-contiguous."""
    content_hashes: list[str]
    metadata: list[dict[str, Any]] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.ids)


def stack_records(records: Sequence[Record], dim: int, where: str) -> RecordBatch:
    """Check ``records`` for a ``dim``-wide collection and stack them.

    Raises ``TypeError``/``ValueError`` naming ``where`` and the track: an id or
    content hash that is not a string, an empty id, a vector of another shape,
    NaN or infinite values. A batch repeating an id keeps its last record.
    """
    import numpy as np

    last: dict[str, int] = {}
    for i, rec in enumerate(records):
        if not isinstance(rec, Record) and not all(
            hasattr(rec, a) for a in ("id", "vector", "content_hash", "metadata")
        ):
            raise TypeError(
                f"{where}: upsert takes musicembed_core.Record objects (id, vector, content_hash, "
                f"metadata), got {type(rec).__name__}"
            )
        if not isinstance(rec.id, str) or not rec.id:
            raise TypeError(f"{where}: record ids must be non-empty str, got {rec.id!r}")
        if not isinstance(rec.content_hash, str):
            raise TypeError(
                f"{where}: record {rec.id!r}: content_hash must be a str, got "
                f"{type(rec.content_hash).__name__}"
            )
        last[rec.id] = i
    keep = sorted(last.values())
    vecs = np.empty((len(keep), int(dim)), dtype=np.float32)
    for row, i in enumerate(keep):
        rec = records[i]
        v = np.asarray(rec.vector, dtype=np.float32)
        if v.shape != (dim,):
            raise ValueError(
                f"{where} holds {dim}-dim vectors but the vector of record {rec.id!r} has shape "
                f"{tuple(v.shape)} (expected ({dim},))"
            )
        if not np.isfinite(v).all():
            raise ValueError(f"{where}: the vector of record {rec.id!r} holds NaN or infinite values")
        vecs[row] = v
    return RecordBatch(
        ids=[records[i].id for i in keep],
        vectors=vecs,
        content_hashes=[records[i].content_hash for i in keep],
        metadata=[dict(records[i].metadata or {}) for i in keep],
    )


# --------------------------------------------------------------------------- exact search


def check_metric(metric: str, where: str) -> str:
    """``metric`` in lower case, or a ValueError naming ``where`` and the choices."""
    m = str(metric).lower()
    if m not in METRICS:
        raise ValueError(f"{where}: metric must be one of {', '.join(METRICS)}, got {metric!r}")
    return m


def unit_rows(x: Any, dtype: Any = "float32") -> "np.ndarray":
    """A C-contiguous copy of ``x`` ``[n, d]`` (float32, or ``dtype``) with unit-length rows
    (zero rows stay zero)."""
    import numpy as np

    out = np.array(x, dtype=dtype, order="C", copy=True)
    norms = np.linalg.norm(out, axis=1, keepdims=True)
    np.divide(out, norms, out=out, where=norms > 0)
    return out


def exact_scores(queries: Any, vectors: Any, metric: str) -> "np.ndarray":
    """Exact (float64) scores ``[Q, m]`` of every query ``[Q, d]`` against every vector ``[m, d]``."""
    import numpy as np

    metric = check_metric(metric, "exact_scores")
    q = np.atleast_2d(np.asarray(queries, dtype=np.float64))
    x = np.atleast_2d(np.asarray(vectors, dtype=np.float64))
    if q.shape[1] != x.shape[1]:
        raise ValueError(f"exact_scores: queries of dim {q.shape[1]}, vectors of dim {x.shape[1]}")
    if metric == "l2":  # differences, not |q|^2 - 2 q.x + |x|^2: exact 0 for the same vector
        out = np.empty((q.shape[0], x.shape[0]), dtype=np.float64)
        for i, row in enumerate(q):
            d = x - row
            out[i] = np.einsum("md,md->m", d, d)
        return out
    dots = q @ x.T
    if metric == "cosine":
        qn = np.linalg.norm(q, axis=1)[:, None]
        xn = np.linalg.norm(x, axis=1)[None, :]
        den = qn * xn
        return np.divide(dots, den, out=np.zeros_like(dots), where=den > 0)
    return dots


def _block_scores(q: "np.ndarray", x: "np.ndarray", metric: str) -> "np.ndarray":
    """Higher-is-better float32 scores ``[Q, B]`` (negated squared distances for l2); ``q``
    is already unit length for cosine."""
    import numpy as np

    dots = q @ x.T
    if metric == "ip":
        return dots
    xn2 = np.einsum("ij,ij->i", x, x)
    if metric == "cosine":
        norms = np.sqrt(xn2)
        norms[norms == 0] = 1.0
        return dots / norms
    qn2 = np.einsum("ij,ij->i", q, q)
    return 2.0 * dots - qn2[:, None] - xn2[None, :]


def _top_rows(q: "np.ndarray", matrix: "np.ndarray", rows: "np.ndarray | None", k: int,
              metric: str) -> "np.ndarray":
    """Row numbers ``[Q, min(k, n)]`` of the best ``k`` rows per query (unordered)."""
    import numpy as np

    n = matrix.shape[0] if rows is None else len(rows)
    k = min(k, n)
    best_s = np.full((q.shape[0], 0), -np.inf, dtype=np.float32)
    best_r = np.zeros((q.shape[0], 0), dtype=np.int64)
    for start in range(0, n, _BLOCK_ROWS):
        if rows is None:
            idx = np.arange(start, min(n, start + _BLOCK_ROWS), dtype=np.int64)
            x = matrix[start : start + len(idx)]
        else:
            idx = rows[start : start + _BLOCK_ROWS]
            x = matrix[idx]
        s = np.concatenate([best_s, _block_scores(q, x, metric).astype(np.float32)], axis=1)
        r = np.concatenate([best_r, np.broadcast_to(idx, (q.shape[0], len(idx)))], axis=1)
        if s.shape[1] > k:
            part = np.argpartition(-s, k - 1, axis=1)[:, :k]
            s = np.take_along_axis(s, part, axis=1)
            r = np.take_along_axis(r, part, axis=1)
        best_s, best_r = s, r
    return best_r


def _queries(queries: Any, dim: int, metric: str) -> "np.ndarray":
    import numpy as np

    q = np.asarray(queries, dtype=np.float32)
    if q.ndim == 1:
        q = q[None, :]
    if q.ndim != 2 or q.shape[1] != dim:
        raise ValueError(f"query vectors must have shape (Q, {dim}), got {tuple(np.shape(queries))}")
    return unit_rows(q) if metric == "cosine" else np.ascontiguousarray(q)


def exact_search(
    matrix: Any,
    ids: Sequence[str],
    queries: Any,
    k: int,
    metric: str,
    mask: Any = None,
    metadata: Sequence[Mapping[str, Any]] | None = None,
) -> list[list[Hit]]:
    """Exact top ``k`` of ``matrix`` ``[n, dim]`` (row ``i`` is track ``ids[i]``) per query.

    ``mask``: optional bool ``[n]``, the rows that may be returned (a filter's
    matches). ``metadata[i]`` (optional) is copied into the hits. Hits come
    best first with exact float64 scores; memory is bounded by blocks of rows,
    so it serves collections of up to a few hundred thousand vectors.
    """
    import numpy as np

    metric = check_metric(metric, "exact_search")
    x = np.asarray(matrix, dtype=np.float32)
    if x.ndim != 2 or x.shape[0] != len(ids):
        raise ValueError(f"exact_search: matrix of shape {x.shape} for {len(ids)} ids")
    if int(k) < 1:
        raise ValueError(f"exact_search: k must be >= 1, got {k!r}")
    q = _queries(queries, x.shape[1], metric)
    rows = None
    if mask is not None:
        m = np.asarray(mask, dtype=bool)
        if m.shape != (x.shape[0],):
            raise ValueError(f"exact_search: mask of shape {m.shape} for {x.shape[0]} rows")
        rows = np.flatnonzero(m)
    if q.shape[0] == 0 or (x.shape[0] if rows is None else len(rows)) == 0:
        return [[] for _ in range(q.shape[0])]
    cand = _top_rows(q, x, rows, int(k), metric)
    return exact_rerank(x, ids, q, cand, int(k), metric, metadata)


def exact_rerank(
    matrix: Any,
    ids: Sequence[str],
    queries: Any,
    candidates: Any,
    k: int,
    metric: str,
    metadata: Sequence[Mapping[str, Any]] | None = None,
) -> list[list[Hit]]:
    """Order candidate rows ``[Q, m]`` (``-1`` = none) of ``matrix`` by exact score.

    What an ANN index returns is approximate in its scores (PQ codes, HNSW
    graphs); this gives each candidate its exact score from the stored vectors
    and keeps the best ``k``, dropping duplicates and misses.
    """
    import numpy as np

    metric = check_metric(metric, "exact_rerank")
    x = np.asarray(matrix, dtype=np.float32)
    q = _queries(queries, x.shape[1], metric).astype(np.float64)
    cand = np.asarray(candidates, dtype=np.int64).reshape(q.shape[0], -1)
    scores = np.full(cand.shape, np.nan, dtype=np.float64)
    if cand.size:
        step = max(1, _MAX_GATHER // max(1, cand.shape[1] * x.shape[1]))
        for start in range(0, cand.shape[0], step):
            c = cand[start : start + step]
            qq = q[start : start + step]
            xs = x[np.maximum(c, 0)].astype(np.float64)  # [q, m, d]
            if metric == "l2":
                s = np.square(xs - qq[:, None, :]).sum(-1)
            else:
                s = np.einsum("qd,qmd->qm", qq, xs)
                if metric == "cosine":
                    norms = np.linalg.norm(xs, axis=-1)
                    s = np.divide(s, norms, out=np.zeros_like(s), where=norms > 0)
            scores[start : start + step] = np.where(c >= 0, s, np.nan)
    out: list[list[Hit]] = []
    for s, c in zip(scores, cand):
        ok = c >= 0
        s, c = s[ok], c[ok]
        key = s if metric == "l2" else -s
        seen: set[int] = set()
        hits: list[Hit] = []
        for j in np.argsort(key, kind="stable"):
            row = int(c[j])
            if row in seen:
                continue
            seen.add(row)
            md = dict(metadata[row]) if metadata is not None else {}
            hits.append(Hit(ids[row], float(s[j]), md))
            if len(hits) == k:
                break
        out.append(hits)
    return out

