"""Vectors wider than one Milvus field: split into parts, searched exactly."""

from __future__ import annotations

import numpy as np
import pytest
from milvus_testdata import brute_force, metadata, records, space, vectors
from musicembed_milvus import MilvusSink
from musicembed_milvus.errors import MilvusSinkError
from musicembed_milvus.layout import MILVUS_MAX_DIM, Part, split

WIDE = 40_000


def test_split_layout():
    assert split(384, MILVUS_MAX_DIM) == [Part("vector", 0, 384)]
    assert split(MILVUS_MAX_DIM, MILVUS_MAX_DIM) == [Part("vector", 0, MILVUS_MAX_DIM)]
    assert [p.dim for p in split(76_800, MILVUS_MAX_DIM)] == [25_600] * 3  # MERT-330M stats
    assert [p.dim for p in split(WIDE, MILVUS_MAX_DIM)] == [20_000, 20_000]
    parts = split(10, 4)
    assert [(p.start, p.stop) for p in parts] == [(0, 4), (4, 7), (7, 10)]
    assert [p.field for p in parts] == ["vector_0", "vector_1", "vector_2"]


def _queries(stored: np.ndarray, n: int, seed: int) -> np.ndarray:
    """Near some stored vectors (realistic neighbours) plus pure noise."""
    rng = np.random.default_rng(seed)
    near = stored[:n] + 0.7 * rng.standard_normal((n, stored.shape[1])).astype(np.float32)
    return np.concatenate([near, rng.standard_normal((2, stored.shape[1])).astype(np.float32)])


def _check_exact(sink: MilvusSink, ids: list[str], stored: np.ndarray, queries: np.ndarray,
                 metric: str, k: int, filter: str | None = None, subset: np.ndarray | None = None):
    hits = sink.search(queries, k=k, filter=filter)
    pool = np.arange(len(ids)) if subset is None else subset
    order, scores = brute_force(queries, stored[pool], metric, k)
    for qi, row in enumerate(hits):
        assert [h.id for h in row] == [ids[pool[j]] for j in order[qi]]
        tol = 1e-4 * max(1.0, float(np.abs(scores[qi]).max()))
        np.testing.assert_allclose([h.score for h in row], scores[qi], atol=tol)
    return hits


@pytest.mark.slow
@pytest.mark.parametrize("metric", ["cosine", "ip", "l2"])
def test_wide_vectors_match_brute_force(tmp_path, metric):
    n = 48
    # oversample 10: the first per-part fetch (50) covers all 48 rows (the widening
    # itself is tested below on narrower parts, where it is cheap)
    sink = MilvusSink(uri=str(tmp_path / "w.db"), metric=metric, index_type="FLAT", oversample=10)
    sink.open("wide", space(WIDE))
    assert [p.dim for p in sink._parts] == [20_000, 20_000]
    ids = [f"w{i:02d}" for i in range(n)]
    stored = vectors(n, WIDE, seed=1)
    md = metadata(ids)
    sink.upsert(records(ids, stored, md))
    assert sink.count() == n
    _check_exact(sink, ids, stored, _queries(stored, 3, seed=2), metric, k=5)
    # filters apply to every part search
    jazz = np.array([i for i in range(n) if md[i]["genre"] == "jazz"])
    hits = _check_exact(sink, ids, stored, stored[:2], metric, k=4,
                        filter='meta["genre"] == "jazz"', subset=jazz)
    assert all(h.metadata == md[ids.index(h.id)] for row in hits for h in row)
    # the full vector comes back from its parts (normalised for cosine)
    got = sink.fetch([ids[7]])[ids[7]]
    want = stored[7] / np.linalg.norm(stored[7]) if metric == "cosine" else stored[7]
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-7)
    sink.close()


def test_wide_reopen_and_self_search(tmp_path):
    sink = MilvusSink(uri=str(tmp_path / "w.db"), index_type="FLAT")
    sink.open("wide", space(WIDE))
    ids = [f"w{i}" for i in range(12)]
    stored = vectors(12, WIDE, seed=3)
    sink.upsert(records(ids, stored, metadata(ids)))
    sink.close()
    again = MilvusSink(uri=str(tmp_path / "w.db"), index_type="FLAT")
    again.open("wide", space(WIDE))
    for tid, row in zip(ids, again.search(stored, k=2)):
        assert row[0].id == tid and row[0].score == pytest.approx(1.0, abs=1e-5)
    again.close()


@pytest.mark.parametrize("metric", ["cosine", "ip", "l2"])
def test_certified_widening_is_exact_beyond_the_first_fetch(tmp_path, metric):
    """Many rows, a small first fetch (k x 1 per part): the threshold test widens it
    until the top k is provably exact (cheap: narrow parts of a 48-dim vector)."""
    dim, n, k = 48, 400, 5
    sink = MilvusSink(uri=str(tmp_path / "w.db"), metric=metric, index_type="FLAT",
                      max_part_dim=16, oversample=1, max_part_candidates=n)
    sink.open("parts", space(dim))
    assert len(sink._parts) == 3
    ids = [f"r{i:03d}" for i in range(n)]
    stored = vectors(n, dim, seed=4)
    sink.upsert(records(ids, stored, metadata(ids)))
    limits = []
    real = sink._client.search

    def recording(*args, **kwargs):
        limits.append(kwargs["limit"])
        return real(*args, **kwargs)

    sink._client.search = recording
    _check_exact(sink, ids, stored, _queries(stored, 6, seed=5), metric, k=k)
    assert min(limits) == k and max(limits) > k  # it did widen
    sink.close()


def test_too_many_parts_is_refused(tmp_path):
    sink = MilvusSink(uri=str(tmp_path / "w.db"), max_part_dim=8, max_vector_fields=4)
    with pytest.raises(MilvusSinkError, match="40-dim vectors need 5 vector fields"):
        sink.open("parts", space(40))
    with pytest.raises(ValueError, match="max_part_dim"):
        MilvusSink(max_part_dim=MILVUS_MAX_DIM + 1)


@pytest.mark.parametrize("metric", ["cosine", "ip", "l2"])
@pytest.mark.parametrize("with_score_ids", [True, False])
def test_threshold_algorithm_certifies_before_reading_everything(metric, with_score_ids):
    """search_parts on exact in-memory part searches: the certificate stops the widening
    early, and a certified top k equals brute force."""
    from musicembed_milvus.wide import search_parts

    dim, n, k = 60, 2000, 5
    parts = split(dim, 20)
    stored = vectors(n, dim, seed=6)
    if metric == "cosine":
        stored = stored / np.linalg.norm(stored, axis=1, keepdims=True)
    queries = _queries(stored, 5, seed=7)[:5]
    if metric == "cosine":
        queries = queries / np.linalg.norm(queries, axis=1, keepdims=True)
    ids = [f"r{i:04d}" for i in range(n)]
    higher = metric != "l2"
    limits: list[int] = []

    def part_scores(part, q, rows):
        x = stored[rows][:, part.start:part.stop].astype(np.float64)
        if higher:
            return q.astype(np.float64) @ x.T
        return ((q[:, None, :].astype(np.float64) - x[None]) ** 2).sum(-1)

    def ann(part, q, limit):
        limits.append(limit)
        s = part_scores(part, q, np.arange(n))
        order = np.argsort(-s if higher else s, axis=1, kind="stable")[:, :limit]
        return [[(ids[j], float(s[i, j])) for j in row] for i, row in enumerate(order)]

    def score_ids(part, q, chunk):
        rows = np.array([int(c[1:]) for c in chunk])
        s = part_scores(part, q, rows)
        return [[(chunk[j], float(s[i, j])) for j in range(len(chunk))] for i in range(len(q))]

    def fetch(chunk):
        return {c: stored[int(c[1:])] for c in chunk}

    ranked, certified = search_parts(queries, parts, k, higher, k, n, ann,
                                     score_ids if with_score_ids else None, fetch)
    assert all(certified)
    assert max(limits) < n // 4  # stopped long before scanning the collection
    order, scores = brute_force(queries, stored, metric, k)
    for qi, top in enumerate(ranked):
        assert [hid for hid, _ in top] == [ids[j] for j in order[qi]]
        np.testing.assert_allclose([s for _, s in top], scores[qi], rtol=1e-6, atol=1e-6)
