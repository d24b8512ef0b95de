"""Deterministic test records: the vector of (track id, content hash) is a pure function
of both, so a test, and a child process it kills, agree on every vector."""

from __future__ import annotations

import zlib
from typing import TYPE_CHECKING, Any, Sequence

if TYPE_CHECKING:  # pragma: no cover
    import numpy as np

    from ..components import Record
    from ..space import EmbeddingSpace


def suite_vector(track_id: str, content_hash: str, dim: int) -> "np.ndarray":
    """float32 ``[dim]`` drawn from a generator seeded by ``track_id`` and ``content_hash``."""
    import numpy as np

    seed = zlib.crc32(f"{track_id}|{content_hash}".encode("utf-8", "surrogateescape"))
    return np.random.default_rng(seed).standard_normal(dim).astype(np.float32)


def suite_frames(track_id: str, content_hash: str, dim: int, frames: int, layers: int = 2) -> "np.ndarray":
    """float32 frame stack ``[layers, frames, dim]`` for exporters that store frames."""
    import numpy as np

    seed = zlib.crc32(f"frames|{track_id}|{content_hash}".encode("utf-8", "surrogateescape"))
    return np.random.default_rng(seed).standard_normal((layers, frames, dim)).astype(np.float32)


def suite_record(track_id: str, content_hash: str, dim: int, frames: int = 0, **metadata: Any) -> "Record":
    """A :class:`Record` with :func:`suite_vector` and a little metadata of common types
    (and, with ``frames > 0``, a :func:`suite_frames` stack)."""
    from ..components import Record

    meta = {"path": f"/music/{track_id}", "duration": 1.5, **metadata}
    stack = suite_frames(track_id, content_hash, dim, frames) if frames else None
    return Record(track_id, suite_vector(track_id, content_hash, dim), content_hash, meta, stack)


def suite_space(dim: int, tag: str = "a") -> "EmbeddingSpace":
    """A small embedding space; another ``tag`` is another space of the same dim."""
    from ..space import EmbeddingSpace

    return EmbeddingSpace(
        encoder={"name": "conformance-suite", "tag": tag}, enrichers=({"name": "mean"},), dim=dim
    )


def records_from(ids: "Sequence[str]", vectors: Any, metadata: "Sequence[dict]") -> "list[Record]":
    """Records as the runner builds them from parallel lists: each metadata dict's
    ``content_hash`` (if any) becomes the record's ``content_hash``."""
    from ..components import Record

    if not len(ids) == len(vectors) == len(metadata):
        raise ValueError(f"{len(ids)} ids, {len(vectors)} vectors, {len(metadata)} metadata dicts")
    out = []
    for tid, vec, md in zip(ids, vectors, metadata):
        md = dict(md)
        out.append(Record(tid, vec, md.pop("content_hash", ""), md))
    return out
