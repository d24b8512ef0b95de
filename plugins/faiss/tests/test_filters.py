"""Filtered searches through sinks.faiss (the parser itself: tests/test_filters.py in the core)."""

from __future__ import annotations

import numpy as np
import pytest
from musicembed_faiss import FaissSink, FilterError

from musicembed_core import EmbeddingSpace, Record

DIM = 8


@pytest.fixture
def sink(tmp_path):
    s = FaissSink(path=str(tmp_path), index="HNSW32")
    s.open("f", EmbeddingSpace(encoder={"name": "t"}, enrichers=(), dim=DIM))
    rng = np.random.default_rng(0)
    n = 500
    x = rng.standard_normal((n, DIM)).astype(np.float32)
    s.upsert([
        Record(f"t{i}", x[i], str(i),
               {"duration": float(i % 120), "path": f"/lib/{'jazz' if i % 4 == 0 else 'pop'}/{i}.flac"})
        for i in range(n)
    ])
    yield s
    s.close()


def test_filtered_search_is_exact_over_matching_tracks(sink):
    q = np.random.default_rng(1).standard_normal((4, DIM)).astype(np.float32)
    flt = 'duration > 60 and path like "%jazz%"'
    got = sink.search(q, 10, filter=flt)
    ids, x = zip(*sink.fetch([f"t{i}" for i in range(500)]).items())
    meta = {h.id: h.metadata for hits in sink.search(np.stack(x), 1) for h in hits}
    ok = [i for i, t in enumerate(ids) if meta[t]["duration"] > 60 and "jazz" in meta[t]["path"]]
    xs = np.stack([x[i] for i in ok]).astype(np.float64)
    xs /= np.linalg.norm(xs, axis=1, keepdims=True)
    qs = q / np.linalg.norm(q, axis=1, keepdims=True)
    for row, hits in enumerate(got):
        assert len(hits) == 10
        assert all(h.metadata["duration"] > 60 and "jazz" in h.metadata["path"] for h in hits)
        best = np.argsort(-(qs[row] @ xs.T))[:10]
        assert [h.id for h in hits] == [ids[ok[j]] for j in best]
        assert [h.score for h in hits] == pytest.approx(sorted((qs[row] @ xs.T)[best], reverse=True), abs=1e-5)


def test_filter_with_few_matches_returns_only_those(sink):
    hits = sink.search(np.ones((1, DIM), np.float32), 50, filter="duration == 7 and path like '%pop%'")[0]
    assert sorted(h.id for h in hits) == ["t127", "t247", "t367", "t487", "t7"]
    assert sink.search(np.ones((2, DIM), np.float32), 5, filter="duration > 1000") == [[], []]


def test_unknown_field_and_bad_filter_are_clear_errors(sink):
    q = np.ones((1, DIM), np.float32)
    with pytest.raises(FilterError, match=r"filter 'durration > 60': unknown field 'durration' in "
                                          r"collection 'f'; fields present: content_hash, duration, id, path"):
        sink.search(q, 3, filter="durration > 60")
    with pytest.raises(FilterError, match=r"filter 'duration >'"):
        sink.search(q, 3, filter="duration >")


def test_milvus_spelling_works_here_too(sink):
    q = np.ones((1, DIM), np.float32)
    plain = sink.search(q, 20, filter='path like "%jazz%" and duration < 10')
    aliased = sink.search(q, 20, filter='meta["path"] like "%jazz%" and meta["duration"] < 10')
    assert [h.id for h in plain[0]] == [h.id for h in aliased[0]] and plain[0]
