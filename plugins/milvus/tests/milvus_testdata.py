"""Shared test data: spaces, vectors and metadata like the runner's."""

from __future__ import annotations

import numpy as np

from musicembed_core import EmbeddingSpace
from musicembed_core.testing import records_from


def space(dim: int, encoder: str = "test-encoder") -> EmbeddingSpace:
    return EmbeddingSpace(encoder={"name": encoder, "revision": "r1"}, enrichers=({"name": "mean"},),
                          dim=dim, name=encoder)


def vectors(n: int, dim: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, dim)).astype(np.float32)


records = records_from
"""Records as the runner builds them: each dict's ``content_hash`` becomes the record's."""


def metadata(ids: list[str]) -> list[dict]:
    """What the runner writes (path, duration, content_hash, decoder facts) plus user keys."""
    out = []
    for i, tid in enumerate(ids):
        genre = ("jazz", "rock", "folk")[i % 3]
        out.append({
            "path": f"/music/{genre}/{tid}.flac",
            "duration": 30.0 * (i + 1),
            "content_hash": f"hash-{tid}",
            "sample_rate": 44100 if i % 2 else 48000,
            "channels": 2,
            "size": 1000 + i,
            "mtime_ns": 1_700_000_000_000_000_000 + i,
            "decoder": "soundfile",
            "genre": genre,
        })
    return out


def brute_force(queries: np.ndarray, stored: np.ndarray, metric: str, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices and scores of the exact top k (float64), best first."""
    q = queries.astype(np.float64)
    x = stored.astype(np.float64)
    if metric == "cosine":
        q = q / np.linalg.norm(q, axis=1, keepdims=True)
        x = x / np.linalg.norm(x, axis=1, keepdims=True)
    if metric == "l2":
        scores = ((q[:, None, :] - x[None, :, :]) ** 2).sum(-1)
        order = np.argsort(scores, axis=1, kind="stable")[:, :k]
    else:
        scores = q @ x.T
        order = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    return order, np.take_along_axis(scores, order, axis=1)
