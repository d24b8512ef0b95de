"""sinks.milvus against a real Milvus Lite database (one per test, under tmp_path)."""

from __future__ import annotations

import numpy as np
import pytest
from milvus_testdata import metadata, records, space, vectors
from musicembed_milvus import MilvusSink
from musicembed_milvus import sink as sink_module
from musicembed_milvus.errors import (
    DimensionMismatchError,
    FilterError,
    MilvusSinkError,
)
from musicembed_milvus.layout import LITE_INDEX_TYPES

from musicembed_core.errors import MusicembedError, SinkNotFoundError, SpaceMismatchError

DIM = 24


def opened(tmp_path, dim: int = DIM, metric: str = "cosine", collection: str = "tracks",
           sp=None, **params) -> MilvusSink:
    params.setdefault("index_type", "FLAT")
    sink = MilvusSink(uri=str(tmp_path / "m.db"), metric=metric, **params)
    sink.open(collection, sp or space(dim))
    return sink


def fill(sink: MilvusSink, n: int, seed: int = 0, dim: int = DIM) -> tuple[list[str], np.ndarray]:
    ids = [f"track{i:03d}" for i in range(n)]
    vecs = vectors(n, dim, seed)
    sink.upsert(records(ids, vecs, metadata(ids)))
    return ids, vecs


# Idempotent upserts, delete, fetch, self-search, space refusal, read-only opens and kill -9:
# the core's sink conformance suite (test_conformance.py).


def test_upsert_replaces_vector_and_metadata(tmp_path):
    sink = opened(tmp_path)
    ids, vecs = fill(sink, 10)
    new = vectors(1, DIM, seed=99)
    sink.upsert(records([ids[3]], new, [{"path": "/new.wav", "duration": 1.5, "content_hash": "new", "genre": "x"}]))
    assert sink.count() == 10
    np.testing.assert_allclose(sink.fetch([ids[3]])[ids[3]], new[0], rtol=1e-6)
    (hit,), = sink.search(new, k=1)
    assert hit.id == ids[3]
    assert hit.metadata == {"path": "/new.wav", "duration": 1.5, "content_hash": "new", "genre": "x"}
    assert sink.known()[ids[3]] == "new"
    # a batch repeating an id keeps its last row
    sink.upsert(records([ids[0], ids[0]], vecs[:2], [{"content_hash": "a"}, {"content_hash": "b"}]))
    assert sink.count() == 10
    assert sink.known()[ids[0]] == "b"
    np.testing.assert_allclose(sink.fetch([ids[0]])[ids[0]], vecs[1], rtol=1e-6)
    sink.close()


def test_filters(tmp_path):
    sink = opened(tmp_path)
    ids, _ = fill(sink, 30)
    md = dict(zip(ids, metadata(ids)))
    q = vectors(1, DIM, seed=5)

    def found(expr: str) -> set[str]:
        (hits,) = sink.search(q, k=30, filter=expr)
        return {h.id for h in hits}

    assert found("duration > 600") == {i for i in ids if md[i]["duration"] > 600}
    assert found('path like "%jazz%"') == {i for i in ids if "jazz" in md[i]["path"]}
    assert found('meta["genre"] == "rock"') == {i for i in ids if md[i]["genre"] == "rock"}
    assert found('meta["sample_rate"] == 44100 and duration <= 300') == {
        i for i in ids if md[i]["sample_rate"] == 44100 and md[i]["duration"] <= 300
    }
    (hits,) = sink.search(q, k=3, filter='meta["genre"] == "folk"')
    assert len(hits) == 3 and all(h.metadata["genre"] == "folk" for h in hits)
    assert hits[0].metadata == md[hits[0].id]
    for bad in ('genre == "jazz"', "duration >> 3"):
        with pytest.raises(FilterError, match="filter") as err:
            sink.search(q, k=3, filter=bad)
        assert repr(bad) in str(err.value)
        assert isinstance(err.value, MusicembedError)
    sink.close()


def test_reopen_after_close_gives_the_same_results(tmp_path):
    sink = opened(tmp_path)
    _, vecs = fill(sink, 40)
    before = sink.search(vecs[:5], k=5, filter="duration > 100")
    known = sink.known()
    sink.close()
    again = opened(tmp_path)
    assert again.count() == 40
    assert again.known() == known
    after = again.search(vecs[:5], k=5, filter="duration > 100")
    assert [[h.id for h in row] for row in after] == [[h.id for h in row] for row in before]
    np.testing.assert_allclose([[h.score for h in row] for row in after],
                               [[h.score for h in row] for row in before], rtol=1e-5)
    again.close()


def test_wrong_dim_is_refused(tmp_path):
    opened(tmp_path).close()
    with pytest.raises(DimensionMismatchError) as err:
        opened(tmp_path, dim=DIM + 8)
    msg = str(err.value)
    assert "'tracks'" in msg and f"{DIM}-dim" in msg and f"{DIM + 8}-dim" in msg


def test_other_metric_is_refused(tmp_path):
    opened(tmp_path).close()
    with pytest.raises(MilvusSinkError, match="metric 'cosine'"):
        opened(tmp_path, metric="l2")


def test_cosine_self_search_scores_one(tmp_path):
    sink = opened(tmp_path, index_type="AUTOINDEX")
    ids, vecs = fill(sink, 50)
    for tid, row in zip(ids, sink.search(vecs, k=3)):
        assert row[0].id == tid
        assert row[0].score == pytest.approx(1.0, abs=1e-5)
        assert row[0].score >= row[1].score >= row[2].score
    sink.close()


def test_l2_and_ip_scores(tmp_path):
    x = np.array([[0, 0, 0], [1, 2, 2], [3, 0, 0]], dtype=np.float32)
    for metric, expected in (("l2", [0.0, 9.0, 9.0]), ("ip", [9.0, 3.0, 0.0])):
        sink = opened(tmp_path / metric, dim=3, metric=metric)
        sink.upsert(records(["a", "b", "c"], x, [{}, {}, {}]))
        (row,) = sink.search(np.array([[1, 2, 2]], np.float32) if metric == "ip" else x[:1], k=3)
        assert [h.score for h in row] == pytest.approx(expected)
        sink.close()


def test_ids_that_need_quoting_and_paged_known(tmp_path, monkeypatch):
    """File names hold quotes, backslashes, newlines; known() pages in id order."""
    monkeypatch.setattr(sink_module, "KNOWN_PAGE", 4)
    ids = ['a"b.wav', "c\\d.wav", "Don't Stop.mp3", "ü/ñ.flac", "new\nline.ogg", 'q\\"z',
           "tab\there", "plain", "x'y", "z"]
    sink = opened(tmp_path)
    vecs = vectors(len(ids), DIM)
    sink.upsert(records(ids, vecs, [{"content_hash": f"h{i}"} for i in range(len(ids))]))
    assert sink.known() == {tid: f"h{i}" for i, tid in enumerate(ids)}
    got = sink.fetch(ids[:5])
    for i in range(5):
        np.testing.assert_allclose(got[ids[i]], vecs[i], rtol=1e-6)
    sink.delete(ids[:3])
    assert sink.count() == len(ids) - 3
    assert set(sink.known()) == set(ids[3:])
    sink.close()


def test_upserts_are_split_by_bytes(tmp_path):
    sink = opened(tmp_path, dim=256, max_request_bytes=8 * 1024)
    sizes = []
    real = sink._client.upsert

    def counting(name, rows, **kw):
        sizes.append(len(rows))
        return real(name, rows, **kw)

    sink._client.upsert = counting
    ids, vecs = fill(sink, 40, dim=256)
    assert len(sizes) > 1 and sum(sizes) == 40
    assert max(sizes) * 256 * 4 <= 8 * 1024
    assert sink.count() == 40
    for tid, row in zip(ids, sink.search(vecs, k=1)):
        assert row[0].id == tid
    sink.close()


@pytest.mark.parametrize("index_type", LITE_INDEX_TYPES)
def test_each_lite_index_type(tmp_path, index_type):
    sink = opened(tmp_path, index_type=index_type, index_params={"nlist": 4} if "IVF" in index_type else None)
    ids, vecs = fill(sink, 60)
    sink.close()
    sink = opened(tmp_path, index_type=index_type)  # segments indexed on reload
    hits = sink.search(vecs[:10], k=1)
    assert sum(row[0].id == tid for tid, row in zip(ids, hits)) >= 9
    sink.close()


def test_index_type_lite_lacks(tmp_path):
    with pytest.raises(MilvusSinkError, match="DISKANN.*Milvus Lite"):
        opened(tmp_path, index_type="DISKANN")


def test_collection_names(tmp_path):
    sink = MilvusSink(uri=str(tmp_path / "m.db"))
    sink.open("mert-v1.95m", space(DIM))  # the embedding's name: made valid
    assert sink._name == "mert_v1_95m"
    sink.close()
    explicit = MilvusSink(uri=str(tmp_path / "m.db"), collection="my-tracks")
    with pytest.raises(MilvusSinkError, match="'my-tracks' is not a valid Milvus collection name"):
        explicit.open("my-tracks", space(DIM))


def test_foreign_collection_is_refused(tmp_path):
    from pymilvus import MilvusClient

    uri = str(tmp_path / "m.db")
    client = MilvusClient(uri=uri)
    client.create_collection("theirs", dimension=DIM)
    client.close()
    sink = MilvusSink(uri=uri)
    with pytest.raises(MilvusSinkError, match="not written by musicembed"):
        sink.open("theirs", space(DIM))


def test_bad_input_is_refused(tmp_path):
    sink = opened(tmp_path)
    ids = ["a", "b"]
    with pytest.raises(ValueError, match=r"'tracks' .*holds 24-dim vectors .*record 'a' has shape \(25,\)"):
        sink.upsert(records(ids, vectors(2, DIM + 1), metadata(ids)))
    bad = vectors(2, DIM)
    bad[1, 3] = np.nan
    with pytest.raises(ValueError, match="'b'.*NaN"):
        sink.upsert(records(ids, bad, metadata(ids)))
    with pytest.raises(ValueError, match="'a'.*not JSON"):
        sink.upsert(records(ids, vectors(2, DIM), [{"x": float("inf")}, {}]))
    with pytest.raises(ValueError, match="4096"):
        sink.upsert(records(["x" * 5000], vectors(1, DIM), [{}]))
    with pytest.raises(ValueError, match=r"\(Q, 24\)"):
        sink.search(vectors(1, DIM - 1))
    assert sink.count() == 0
    sink.close()


def test_numpy_metadata_round_trips(tmp_path):
    sink = opened(tmp_path)
    md = {"path": "/a.wav", "duration": np.float32(2.5), "content_hash": "h",
          "bpm": np.int64(120), "tags": ("a", "b"), "emb": np.arange(3)}
    sink.upsert(records(["a"], vectors(1, DIM), [md]))
    ((hit,),) = sink.search(vectors(1, DIM), k=1)
    assert hit.metadata == {"path": "/a.wav", "duration": 2.5, "content_hash": "h", "bpm": 120,
                            "tags": ["a", "b"], "emb": [0, 1, 2]}
    sink.close()


def test_token_is_not_shown():
    sink = MilvusSink(uri="http://user:secret@localhost:19530", token="secret")
    assert "secret" not in repr(sink)
    assert sink.config()["token"] == "***"


def test_index_and_search_params_reach_the_engine(tmp_path):
    """IVF_FLAT with nlist=64: probing one cell loses neighbours, probing all finds them."""
    from milvus_testdata import brute_force

    ids = [f"i{i}" for i in range(3000)]
    stored = vectors(len(ids), 16)
    sink = opened(tmp_path, dim=16, index_type="IVF_FLAT", index_params={"nlist": 64})
    sink.upsert(records(ids, stored, [{} for _ in ids]))
    assert sink._client.describe_index(sink._name, "vector")["params"] == {"nlist": 64}
    sink.close()
    queries = vectors(40, 16, seed=3)
    order, _ = brute_force(queries, stored, "cosine", 10)
    recall = {}
    for nprobe in (1, 64):
        sink = opened(tmp_path, dim=16, index_type="IVF_FLAT", search_params={"nprobe": nprobe})
        hits = sink.search(queries, k=10)
        recall[nprobe] = np.mean([len({h.id for h in row} & {ids[j] for j in order[i]}) / 10
                                  for i, row in enumerate(hits)])
        sink.close()
    assert recall[64] == 1.0
    assert recall[1] < 0.9


def test_missing_index_is_rebuilt_on_open(tmp_path):
    """A process killed between creating the collection and its index left none."""
    sink = opened(tmp_path)
    ids, vecs = fill(sink, 10)
    sink._client.release_collection(sink._name)
    sink._client.drop_index(sink._name, "vector")
    assert sink._client.list_indexes(sink._name) == []
    sink.close()
    again = opened(tmp_path)
    assert again._client.list_indexes(again._name) == ["vector"]
    for tid, row in zip(ids, again.search(vecs, k=1)):
        assert row[0].id == tid
    again.close()


def test_readonly_open_creates_no_database(tmp_path):
    """`musicembed search` before any run: no .db, not even its folder, and a clear error."""
    uri = tmp_path / "not-yet" / "m.db"
    sink = MilvusSink(uri=str(uri))
    with pytest.raises(SinkNotFoundError, match=r"'tracks' .*m\.db.*does not exist yet.*musicembed run"):
        sink.open("tracks", space(DIM), readonly=True)
    assert not uri.parent.exists()


def test_readonly_open_creates_no_collection_and_refuses_writes(tmp_path):
    from pymilvus import MilvusClient

    writer = opened(tmp_path)
    ids, vecs = fill(writer, 5)
    writer.close()
    with pytest.raises(SinkNotFoundError, match="'other' .*does not exist yet"):
        MilvusSink(uri=str(tmp_path / "m.db")).open("other", space(DIM), readonly=True)
    reader = MilvusSink(uri=str(tmp_path / "m.db"))
    reader.open("tracks", space(DIM), readonly=True)
    assert reader.count() == 5 and reader.known()[ids[0]] == f"hash-{ids[0]}"
    assert reader.search(vecs[:1], k=1)[0][0].id == ids[0]
    with pytest.raises(MilvusSinkError, match="opened read-only"):
        reader.upsert(records(ids[:1], vecs[:1], metadata(ids[:1])))
    with pytest.raises(MilvusSinkError, match="opened read-only"):
        reader.delete(ids[:1])
    reader.close()
    with pytest.raises(SpaceMismatchError, match="another-encoder"):
        MilvusSink(uri=str(tmp_path / "m.db")).open("tracks", space(DIM, encoder="another-encoder"),
                                                    readonly=True)
    client = MilvusClient(uri=str(tmp_path / "m.db"))
    assert client.list_collections() == ["tracks"]
    client.close()
