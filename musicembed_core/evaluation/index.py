"""Index quality of a run's sink: what its approximate search costs in recall, and its latency.

A seeded sample of stored tracks queries the sink (one query per call, the way
``musicembed search --id`` asks it) for ``max(k) + 1`` neighbours; the track itself is
dropped from the answers. The truth is an exact search, in the sink's metric, over the
vectors of the run's HDF5/safetensors output for the tracks the sink holds. recall@k is
the share of the sink's first k answers that are at least as close as the exact k-th
neighbour (ties count as found, so an exact index scores 1.0).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Sequence

from ..errors import SinkNotFoundError

DESCRIBE = ("index", "index_type", "index_params", "search_params", "metric", "nprobe", "ef_search",
            "rerank")
"""Sink settings quoted in the report (never the URI or a token)."""


def describe_sink(sink: Any) -> dict[str, Any]:
    cfg = sink.config() if hasattr(sink, "config") else {}
    return {k: cfg[k] for k in DESCRIBE if k in cfg and cfg[k] not in (None, {}, "")}


def index_quality(cfg: Any, prep: Any, ids: Sequence[str], vectors: Any, ks: Sequence[int],
                  queries: int, seed: int) -> list[dict[str, Any]]:
    """One entry per sink of the run: recall@k and latency (module doc), or why not."""
    from ..outputs import open_sink

    results = []
    for template in cfg.sinks:
        entry: dict[str, Any] = {"sink": template.name, "settings": describe_sink(template)}
        try:
            sink, collection = open_sink(template, Path(cfg.output_dir), prep, readonly=True)
        except SinkNotFoundError as exc:
            entry["note"] = f"not indexed: {exc}"
            results.append(entry)
            continue
        entry["collection"] = collection
        try:
            entry.update(_measure(sink, ids, vectors, ks, queries, seed))
        finally:
            sink.close()
        results.append(entry)
    return results


def _measure(sink: Any, ids: Sequence[str], vectors: Any, ks: Sequence[int], queries: int,
             seed: int) -> dict[str, Any]:
    import numpy as np

    from ..sinkkit import exact_scores

    known = set(sink.known())
    # by id: the sampled queries must not depend on the order the run stored the tracks in
    rows = sorted((i for i, t in enumerate(ids) if t in known), key=lambda i: ids[i])
    out: dict[str, Any] = {"count": sink.count(), "stored": len(ids), "in_both": len(rows)}
    status = getattr(sink, "training_status", None)
    untrained = status() if callable(status) else None
    if untrained:  # e.g. an IVF index with too few vectors to train: the sink searches exactly
        out["note"] = str(untrained)
    if len(rows) < 2:
        out["note"] = "fewer than two stored tracks are in the sink: nothing to measure"
        return out
    pool = np.asarray(vectors, dtype=np.float32)[rows]
    pool_ids = [ids[i] for i in rows]
    rng = np.random.default_rng(seed)
    sample = np.sort(rng.choice(len(rows), size=min(queries, len(rows)), replace=False))
    kmax = min(max(ks), len(rows) - 1)
    lower_better = sink.metric == "l2"
    # every query is timed first, the exact search comes after: numpy's threads spinning
    # after a matrix product would otherwise compete with the sink's own threads
    answers, latencies = [], []
    sink.search(pool[sample[0]][None, :], k=kmax + 1)  # warm-up (lazy loading), not timed
    for q in sample:
        t0 = time.perf_counter()
        (hits,) = sink.search(pool[q][None, :], k=kmax + 1)
        latencies.append(time.perf_counter() - t0)
        answers.append([h.id for h in hits if h.id != pool_ids[q]][:kmax])
    found = {k: 0.0 for k in ks}
    pool64 = pool.astype(np.float64)  # converted once, not by exact_scores for every query
    row_of = {t: i for i, t in enumerate(pool_ids)}
    for q, answer in zip(sample, answers):
        scores = exact_scores(pool[q][None, :], pool64, sink.metric)[0]
        scores[q] = np.inf if lower_better else -np.inf
        best = np.sort(scores) if lower_better else -np.sort(-scores)
        for k in ks:
            kk = min(k, kmax)
            bound = best[kk - 1]
            tol = 1e-6 * max(1.0, abs(float(bound)))
            good = [a for a in answer[:kk] if a in row_of and
                    (scores[row_of[a]] <= bound + tol if lower_better else scores[row_of[a]] >= bound - tol)]
            found[k] += len(good) / kk
    lat = np.asarray(latencies) * 1000.0
    out.update({
        "queries": len(sample), "metric": sink.metric,
        "recall_at_k": {str(k): found[k] / len(sample) for k in ks},
        "latency_ms": {"p50": float(np.percentile(lat, 50)), "p95": float(np.percentile(lat, 95)),
                       "mean": float(lat.mean())},
    })
    return out
