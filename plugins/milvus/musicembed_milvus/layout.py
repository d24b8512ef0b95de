"""Collection layout: field names, metric mapping, and vectors split into parts.

Milvus caps a FLOAT_VECTOR field at 32,768 dims. A wider vector (MERT-330M's
mean+std+IQR over 25 layers is 76,800 dims) is stored as several vector fields
of nearly equal width (3 x 25,600), in order: ``vector_0``, ``vector_1``, ...
A vector that fits is one field named ``vector``, which any Milvus tool reads.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

MILVUS_MAX_DIM = 32768
"""Milvus' limit on the width of one FLOAT_VECTOR field (proxy.maxDimension)."""

MILVUS_TOPK_MAX = 16384
"""Milvus' limit on ``limit`` (top-k) of one search, and on ``nq``."""

METRICS = {"cosine": "COSINE", "ip": "IP", "l2": "L2"}
"""musicembed metric name -> Milvus metric type."""

LITE_INDEX_TYPES = ("AUTOINDEX", "FLAT", "HNSW", "HNSW_SQ", "IVF_FLAT", "IVF_SQ8")
"""Index types Milvus Lite 3.2.2 builds (checked by creating, reloading and searching
each); IVF_PQ, DISKANN, SCANN and the GPU indexes need a Milvus server."""

# Scalar fields (besides the primary key ``id`` and the vector fields).
PATH, DURATION, CONTENT_HASH, SPACE_HASH, META = "path", "duration", "content_hash", "space_hash", "meta"
STRING_MAX_BYTES = 4096
"""max_length of ``id`` and ``path`` (Linux PATH_MAX); longer values are refused by name."""
HASH_MAX_BYTES = 128
JSON_MAX_BYTES = 65536
"""Milvus' default limit on one JSON value."""
COLUMNS = (PATH, DURATION, CONTENT_HASH)
"""Metadata keys stored in their own fields; every other key goes into ``meta`` (JSON)."""

SPACE_PROPERTY = "musicembed.space"
METRIC_PROPERTY = "musicembed.metric"
FORMAT_PROPERTY = "musicembed.format"
FORMAT_VERSION = "1"


def milvus_metric(metric: str) -> str:
    try:
        return METRICS[metric.lower()]
    except (KeyError, AttributeError):
        raise ValueError(
            f"sinks.milvus.metric={metric!r}: use one of {', '.join(repr(m) for m in METRICS)}"
        ) from None


@dataclass(frozen=True)
class Part:
    """One vector field holding ``vector[start:stop]``."""

    field: str
    start: int
    stop: int

    @property
    def dim(self) -> int:
        return self.stop - self.start


def split(dim: int, max_part_dim: int) -> list[Part]:
    """``dim`` cut into the fewest nearly equal parts of at most ``max_part_dim``."""
    if dim <= max_part_dim:
        return [Part("vector", 0, dim)]
    n = math.ceil(dim / max_part_dim)
    base, extra = divmod(dim, n)
    parts, start = [], 0
    for i in range(n):
        width = base + (1 if i < extra else 0)
        parts.append(Part(f"vector_{i}", start, start + width))
        start += width
    return parts


def parts_from_fields(widths: dict[str, int]) -> list[Part] | None:
    """The layout of an existing collection from its vector fields' names and dims."""
    if set(widths) == {"vector"}:
        return [Part("vector", 0, widths["vector"])]
    names = [f"vector_{i}" for i in range(len(widths))]
    if not widths or set(widths) != set(names):
        return None
    parts, start = [], 0
    for name in names:
        parts.append(Part(name, start, start + widths[name]))
        start += widths[name]
    return parts
