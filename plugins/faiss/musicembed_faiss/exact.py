"""Exact (brute-force) scoring on the raw float32 vectors.

Used for filtered searches (exact search over the matching rows), while an
IVF/PQ index is not trained yet, and to give every returned hit its exact
score (re-ranking ANN candidates).

Scores: ``cosine`` = cos(q, x); ``ip`` = q . x (both higher is better);
``l2`` = squared Euclidean distance ||q - x||^2 (lower is better).
"""

from __future__ import annotations

import numpy as np

BLOCK_ROWS = 16384
_MAX_GATHER = 1 << 24  # floats gathered at once when rescoring


def prepare_queries(queries: np.ndarray, metric: str) -> np.ndarray:
    """Float32 C-contiguous queries; unit length for cosine (zero vectors stay zero)."""
    q = np.array(queries, dtype=np.float32, order="C", copy=True)
    if metric == "cosine":
        norms = np.linalg.norm(q, axis=1, keepdims=True)
        np.divide(q, norms, out=q, where=norms > 0)
    return q


def _block_scores(q: np.ndarray, x: np.ndarray, metric: str) -> np.ndarray:
    """Higher-is-better scores [Q, B] (negated squared distances for l2)."""
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


def topk_rows(
    q: np.ndarray, store: np.ndarray, rows: np.ndarray | None, k: int, metric: str
) -> np.ndarray:
    """Row numbers [Q, min(k, n)] of the best ``k`` rows for each query (unordered).

    ``store`` is the [n, dim] vector array; ``rows`` restricts the search to
    those rows (None: all), processed in blocks so memory stays bounded.
    """
    n = store.shape[0] if rows is None else len(rows)
    k = min(k, n)
    best_s = np.full((q.shape[0], 0), -np.inf, dtype=np.float32)
    best_r = np.zeros((q.shape[0], 0), dtype=np.int64)
    for start in range(0, n, BLOCK_ROWS):
        if rows is None:
            idx = np.arange(start, min(n, start + BLOCK_ROWS), dtype=np.int64)
            x = store[start : start + len(idx)]
        else:
            idx = rows[start : start + BLOCK_ROWS]
            x = store[idx]
        s = np.concatenate([best_s, _block_scores(q, x, metric).astype(np.float32)], axis=1)
        r = np.concatenate([best_r, np.broadcast_to(idx, (q.shape[0], len(idx)))], axis=1)
        if s.shape[1] > k:
            part = np.argpartition(-s, k - 1, axis=1)[:, :k]
            s = np.take_along_axis(s, part, axis=1)
            r = np.take_along_axis(r, part, axis=1)
        best_s, best_r = s, r
    return best_r


def rescore(q: np.ndarray, store: np.ndarray, cand: np.ndarray, metric: str) -> np.ndarray:
    """Exact scores [Q, m] of candidate rows ``cand`` ([Q, m], -1 = none -> NaN)."""
    out = np.full(cand.shape, np.nan, dtype=np.float64)
    if cand.size == 0:
        return out
    step = max(1, _MAX_GATHER // max(1, cand.shape[1] * store.shape[1]))
    for start in range(0, cand.shape[0], step):
        c = cand[start : start + step]
        qq = q[start : start + step].astype(np.float64)
        x = store[np.maximum(c, 0)].astype(np.float64)  # [q, m, d]
        if metric == "l2":
            s = np.square(x - qq[:, None, :]).sum(-1)
        else:
            s = np.einsum("qd,qmd->qm", qq, x)
            if metric == "cosine":
                norms = np.linalg.norm(x, axis=-1)
                s = np.divide(s, norms, out=np.zeros_like(s), where=norms > 0)
        out[start : start + step] = np.where(c >= 0, s, np.nan)
    return out


def order(scores: np.ndarray, cand: np.ndarray, k: int, metric: str) -> list[list[tuple[int, float]]]:
    """Per query: up to ``k`` (row, score), best first, duplicates and misses dropped."""
    results: list[list[tuple[int, float]]] = []
    for s, c in zip(scores, cand):
        ok = c >= 0
        s, c = s[ok], c[ok]
        key = s if metric == "l2" else -s
        seen: set[int] = set()
        hits: list[tuple[int, float]] = []
        for j in np.argsort(key, kind="stable"):
            row = int(c[j])
            if row in seen:
                continue
            seen.add(row)
            hits.append((row, float(s[j])))
            if len(hits) == k:
                break
        results.append(hits)
    return results
