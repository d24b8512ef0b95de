"""sinks.faiss on real FAISS indexes: upsert/replace/delete, reopen, training, HNSW, errors."""

from __future__ import annotations

import logging
import os

import numpy as np
import pytest
from musicembed_faiss import (
    CorruptCollectionError,
    DimensionMismatchError,
    FaissSink,
    FaissSinkError,
)
from musicembed_faiss.storage import read_header

from musicembed_core import EmbeddingSpace, Record
from musicembed_core.testing import records_from
from musicembed_core.errors import SinkNotFoundError, SpaceMismatchError

DIM = 16


def space(dim: int = DIM, tag: str = "a") -> EmbeddingSpace:
    return EmbeddingSpace(encoder={"name": "test", "tag": tag}, enrichers=(), dim=dim)


def vecs(n: int, dim: int = DIM, seed: int = 0, scale: float = 3.0) -> np.ndarray:
    return (scale * np.random.default_rng(seed).standard_normal((n, dim))).astype(np.float32)


def ids(n: int, start: int = 0) -> list[str]:
    return [f"t{i:05d}" for i in range(start, start + n)]


def meta(n: int, start: int = 0) -> list[dict]:
    return [
        {
            "content_hash": f"h{i}",
            "duration": float(i % 200),
            "path": f"/music/{'jazz' if i % 3 == 0 else 'rock'}/{i}.flac",
            "sample_rate": 44100 if i % 2 else 48000,
        }
        for i in range(start, start + n)
    ]


recs = records_from
"""Records as the runner builds them: the content hash apart from the metadata."""


def opened(tmp_path, index: str = "Flat", dim: int = DIM, sp: EmbeddingSpace | None = None,
           metric: str = "cosine", collection: str = "c", readonly: bool = False, **kw) -> FaissSink:
    sink = FaissSink(path=str(tmp_path), index=index, metric=metric, **kw)
    sink.open(collection, sp if sp is not None else space(dim), readonly=readonly)
    return sink


def top_ids(sink: FaissSink, q: np.ndarray, k: int = 5, **kw) -> list[list[str]]:
    return [[h.id for h in hits] for hits in sink.search(q, k, **kw)]


def brute(stored: dict[str, np.ndarray], q: np.ndarray, k: int) -> list[list[str]]:
    """Exact cosine ranking with numpy, independent of the sink."""
    keys = list(stored)
    x = np.stack([stored[t] for t in keys]).astype(np.float64)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    qq = q.astype(np.float64) / np.linalg.norm(q, axis=1, keepdims=True)
    order = np.argsort(-(qq @ x.T), axis=1, kind="stable")[:, :k]
    return [[keys[j] for j in row] for row in order]


IVF_SMALL = {"index": "IVF8,Flat", "min_train": 200, "nprobe": 8}
KINDS = {"Flat": {"index": "Flat"}, "HNSW32": {"index": "HNSW32"}, "IVF8,Flat": IVF_SMALL}


# ---------------------------------------------------------------------- basic contract


# Upserts, replacement, delete, fetch, self-search, space refusal and kill -9 for each
# index kind: the core's sink conformance suite (test_conformance.py).


@pytest.mark.parametrize("kind", list(KINDS))
def test_reopen_after_close_gives_same_results(tmp_path, kind):
    sink = opened(tmp_path, **KINDS[kind])
    x = vecs(400)
    sink.upsert(recs(ids(400), x, meta(400)))
    sink.delete(ids(10, start=20))
    q = vecs(12, seed=5)
    before = [[(h.id, h.score, h.metadata) for h in hits] for hits in sink.search(q, 8)]
    filtered = top_ids(sink, q, 8, filter="duration >= 50")
    described = sink.describe()
    sink.close()
    assert not os.path.exists(tmp_path / "c.faiss.lock") or os.path.getsize(tmp_path / "c.faiss") > 0
    again = opened(tmp_path, **KINDS[kind])
    after = [[(h.id, h.score, h.metadata) for h in hits] for hits in again.search(q, 8)]
    assert after == before
    assert top_ids(again, q, 8, filter="duration >= 50") == filtered
    assert again.count() == 390
    assert again.describe()["trained"] == described["trained"] is True
    again.close()


def test_index_is_persisted_in_the_snapshot(tmp_path):
    sink = opened(tmp_path, index="HNSW32")
    sink.upsert(recs(ids(100), vecs(100), meta(100)))
    sink.close()
    header = read_header(str(tmp_path / "c.faiss"))
    assert set(header["sections"]) == {"vectors", "labels", "records", "index"}
    assert header["count"] == 100 and header["index"] == "HNSW32" and header["space_hash"] == space().hash
    flat = opened(tmp_path, collection="f")
    flat.upsert(recs(ids(10), vecs(10), meta(10)))
    flat.close()
    assert "index" not in read_header(str(tmp_path / "f.faiss"))["sections"]  # rebuilt by one copy


def test_changed_index_string_rebuilds_from_raw_vectors(tmp_path):
    sink = opened(tmp_path, index="Flat")
    x = vecs(300)
    sink.upsert(recs(ids(300), x, meta(300)))
    exact = top_ids(sink, x[:10], 5)
    sink.close()
    hnsw = opened(tmp_path, index="HNSW32")
    assert hnsw.describe()["trained"] and hnsw.count() == 300
    assert top_ids(hnsw, x[:10], 1) == [[t] for t in ids(10)]
    hnsw.upsert(recs(["extra"], vecs(1, seed=7), [{}]))  # a writer persists the new index
    hnsw.close()
    assert read_header(str(tmp_path / "c.faiss"))["index"] == "HNSW32"
    back = opened(tmp_path, index="Flat")
    assert top_ids(back, x[:10], 5) == exact
    back.close()


# ---------------------------------------------------------------------- metrics


def test_cosine_self_search_scores_one(tmp_path):
    sink = opened(tmp_path, metric="cosine")
    x = vecs(200, scale=7.0)
    sink.upsert(recs(ids(200), x, meta(200)))
    for row, hits in enumerate(sink.search(x, 3)):
        assert hits[0].id == ids(200)[row]
        assert hits[0].score == pytest.approx(1.0, abs=1e-5)
        assert hits[0].score >= hits[1].score >= hits[2].score
    sink.close()


def test_ip_and_l2_scores(tmp_path):
    x = vecs(100)
    q = vecs(3, seed=1)
    ip = opened(tmp_path, metric="ip", collection="ip")
    ip.upsert(recs(ids(100), x, meta(100)))
    dots = q.astype(np.float64) @ x.T.astype(np.float64)
    for row, hits in enumerate(ip.search(q, 5)):
        best = np.argsort(-dots[row])[:5]
        assert [h.id for h in hits] == [ids(100)[j] for j in best]
        assert [h.score for h in hits] == pytest.approx(dots[row, best], rel=1e-5)
    ip.close()
    l2 = opened(tmp_path, metric="l2", collection="l2", index="HNSW32")
    l2.upsert(recs(ids(100), x, meta(100)))
    d2 = ((q[:, None, :].astype(np.float64) - x[None].astype(np.float64)) ** 2).sum(-1)
    for row, hits in enumerate(l2.search(q, 5)):
        best = np.argsort(d2[row])[:5]
        assert [h.id for h in hits] == [ids(100)[j] for j in best]
        # squared Euclidean distance, nearest first
        assert [h.score for h in hits] == pytest.approx(d2[row, best], rel=1e-5)
    (self_hit,) = l2.search(x[3:4], 1)[0]
    assert self_hit.id == "t00003" and self_hit.score == pytest.approx(0.0, abs=1e-6)
    l2.close()


# ---------------------------------------------------------------------- IVF training


def test_ivf_with_too_few_vectors_says_so_and_still_searches(tmp_path, caplog):
    sink = opened(tmp_path, index="IVF64,Flat")  # 39 * 64 = 2496 vectors to train
    x = vecs(300)
    sink.upsert(recs(ids(300), x, meta(300)))
    info = sink.describe()
    assert info["trained"] is False and info["vectors_needed_for_training"] == 2496
    assert "300 vectors stored, 2496 needed" in sink.training_status
    q = vecs(6, seed=3)
    with caplog.at_level(logging.WARNING, logger="musicembed.faiss"):
        got = top_ids(sink, q, 7)
    assert "'IVF64,Flat' is not trained yet: 300 vectors stored, 2496 needed" in caplog.text
    assert got == brute(dict(zip(ids(300), x)), q, 7)  # exact fallback
    sink.close()
    assert "index" not in read_header(str(tmp_path / "c.faiss"))["sections"]


def test_ivf_is_trained_once_enough_vectors(tmp_path, caplog):
    sink = opened(tmp_path, index="IVF64,Flat", nprobe=64)  # nprobe = nlist: exhaustive, exact
    x = vecs(2600)
    sink.upsert(recs(ids(2000), x[:2000], meta(2000)))
    assert sink.describe()["trained"] is False
    with caplog.at_level(logging.INFO, logger="musicembed.faiss"):
        sink.upsert(recs(ids(500, 2000), x[2000:2500], meta(500, 2000)))  # crosses 39 * 64 = 2496
    assert sink.describe()["trained"] is True and sink.training_status is None
    assert "trained index 'IVF64,Flat' on 2500 vectors" in caplog.text
    sink.upsert(recs(ids(100, 2500), x[2500:], meta(100, 2500)))  # added to the trained index
    q = vecs(5, seed=11)
    assert top_ids(sink, q, 5) == brute(dict(zip(ids(2600), x)), q, 5)
    sink.delete(ids(10))
    sink.upsert(recs(["t02000"], vecs(1, seed=4), [{}]))
    assert sink.count() == 2590
    sink.close()
    assert "index" in read_header(str(tmp_path / "c.faiss"))["sections"]
    again = opened(tmp_path, index="IVF64,Flat", nprobe=64)
    assert again.describe()["trained"] is True and again.count() == 2590
    assert top_ids(again, vecs(1, seed=4), 1) == [["t02000"]]
    again.close()


def test_ivf_pq_trains_and_rerank_uses_raw_vectors(tmp_path):
    x = vecs(700)
    found = {}
    for rerank in (1, 10):
        sink = opened(tmp_path, index="IVF4,PQ4x4", nprobe=4, rerank=rerank, collection=f"r{rerank}")
        sink.upsert(recs(ids(700), x, meta(700)))  # 39 * 16 centroids per sub-quantizer = 624 needed
        assert sink.describe()["trained"] is True
        hits = sink.search(x[:50], 1)
        found[rerank] = sum(h[0].id == t for h, t in zip(hits, ids(50)))
        # scores are exact whatever the codes say: a self hit scores 1
        assert all(h[0].score == pytest.approx(1.0, abs=1e-5) for h, t in zip(hits, ids(50)) if h[0].id == t)
        sink.close()
    # 16 bits per vector cannot tell 700 vectors apart; re-ranking 10 candidates on raw vectors can
    assert found[1] < 40 and found[10] >= 45


def test_min_train_below_the_centroid_count_is_refused(tmp_path):
    with pytest.raises(FaissSinkError, match=r"min_train = 10 .*at least 64 vectors"):
        opened(tmp_path, index="IVF64,Flat", min_train=10)


def test_bad_index_string_is_a_clear_error(tmp_path):
    with pytest.raises(FaissSinkError, match=r"sinks.faiss.index = 'IVF,Nope' is not an index_factory"):
        opened(tmp_path, index="IVF,Nope")


# ---------------------------------------------------------------------- HNSW


def test_hnsw_upsert_and_delete(tmp_path):
    sink = opened(tmp_path, index="HNSW32", rebuild_fraction=0.25)
    x = vecs(400)
    sink.upsert(recs(ids(400), x, meta(400)))
    stored = dict(zip(ids(400), x))
    # replace 40 vectors and delete 40: HNSW cannot remove, so they become masked stale entries
    new = vecs(40, seed=8)
    sink.upsert(recs(ids(40), new, meta(40)))
    stored.update(zip(ids(40), new))
    sink.delete(ids(40, start=200))
    for t in ids(40, start=200):
        stored.pop(t)
    assert sink.describe()["stale_entries"] == 80
    q = np.concatenate([x[:40], x[200:240], vecs(10, seed=9)])
    got = sink.search(q, 10)
    seen = {h.id for hits in got for h in hits}
    assert not seen & set(ids(40, start=200))
    assert all(len({h.id for h in hits}) == len(hits) == 10 for hits in got)
    assert top_ids(sink, new, 1) == [[t] for t in ids(40)]
    for hits in sink.search(x[:40], 10):  # the old vectors of replaced ids are gone
        assert all(h.score < 0.999 for h in hits if h.id in ids(40))
    # past rebuild_fraction (80 stale > 0.25 * 360 live) the next search rebuilds the graph
    sink.delete(ids(20, start=300))
    for t in ids(20, start=300):
        stored.pop(t)
    top_ids(sink, q[:1], 1)
    assert sink.describe()["stale_entries"] == 0
    assert top_ids(sink, q[80:], 10) == brute(stored, q[80:], 10)
    sink.close()
    again = opened(tmp_path, index="HNSW32")
    assert again.count() == len(stored) == 340
    assert top_ids(again, q[80:], 10) == brute(stored, q[80:], 10)
    again.close()


def test_hnsw_stale_entries_survive_reopen(tmp_path):
    sink = opened(tmp_path, index="HNSW32", rebuild_fraction=10.0)
    x = vecs(200)
    sink.upsert(recs(ids(200), x, meta(200)))
    sink.delete(ids(30))
    sink.close()
    header = read_header(str(tmp_path / "c.faiss"))
    assert len(header["stale_labels"]) == 30
    again = opened(tmp_path, index="HNSW32", rebuild_fraction=10.0)
    seen = {h.id for hits in again.search(x[:30], 5) for h in hits}
    assert not seen & set(ids(30)) and again.count() == 170
    again.close()


# ---------------------------------------------------------------------- identity and errors


def test_space_mismatch_is_refused(tmp_path):
    sink = opened(tmp_path, sp=space(tag="a"))
    sink.upsert(recs(ids(5), vecs(5), meta(5)))
    sink.close()
    other = FaissSink(path=str(tmp_path))
    with pytest.raises(SpaceMismatchError, match=r"c\.faiss holds vectors of embedding space .*encoder\.tag"):
        other.open("c", space(tag="b"))
    with pytest.raises(SpaceMismatchError, match=r"encoder\.tag"):
        other.open("c", space(tag="b"), readonly=True)  # searching checks the space too


def test_wrong_dim_is_refused(tmp_path):
    sink = opened(tmp_path, collection="songs")
    sink.upsert(recs(ids(5), vecs(5), meta(5)))
    with pytest.raises(ValueError, match=r"'songs' holds 16-dim vectors .*record 't00000' has shape \(8,\)"):
        sink.upsert(recs(ids(2), vecs(2, dim=8), meta(2)))
    with pytest.raises(DimensionMismatchError, match="'songs' holds 16-dim"):
        sink.search(vecs(1, dim=8), 3)
    sink.close()
    other = FaissSink(path=str(tmp_path))
    with pytest.raises(DimensionMismatchError, match=r"'songs' .* holds 16-dim vectors but was opened for 8-dim"):
        other.open("songs", space(dim=8))


def test_second_writer_is_refused_but_readers_work(tmp_path):
    writer = opened(tmp_path)
    writer.upsert(recs(ids(10), vecs(10), meta(10)))
    reader = opened(tmp_path)
    assert reader.count() == 10  # sees what the writer acknowledged (snapshot + journal)
    assert top_ids(reader, vecs(10)[:1], 1) == [["t00000"]]
    with pytest.raises(FaissSinkError, match=r"being written by another process or sink \(pid \d+\)"):
        reader.upsert(recs(["x"], vecs(1), [{}]))
    reader.close()
    writer.close()


def test_invalid_inputs(tmp_path):
    sink = opened(tmp_path)
    bad = vecs(2)
    bad[1, 3] = np.nan
    with pytest.raises(ValueError, match="record 'b' holds NaN"):
        sink.upsert(recs(["a", "b"], bad, [{}, {}]))
    with pytest.raises(TypeError, match="takes musicembed_core.Record objects"):
        sink.upsert([("a", vecs(1)[0], {})])
    with pytest.raises(TypeError, match="content_hash must be a str"):
        sink.upsert([Record("a", vecs(1)[0], None, {})])
    with pytest.raises(ValueError, match="k must be >= 1"):
        sink.search(vecs(1), 0)
    assert sink.count() == 0 and sink.search(vecs(2), 3) == [[], []]
    sink.upsert(recs(["a", "a"], vecs(2), [{"v": 1}, {"v": 2}]))  # last duplicate wins
    assert sink.count() == 1 and sink.search(vecs(2)[1:], 1)[0][0].metadata == {"v": 2, "content_hash": ""}
    sink.close()
    with pytest.raises(FaissSinkError, match="not open"):
        sink.count()


def test_corrupt_snapshot_is_reported(tmp_path):
    sink = opened(tmp_path)
    sink.upsert(recs(ids(50), vecs(50), meta(50)))
    sink.close()
    path = tmp_path / "c.faiss"
    data = bytearray(path.read_bytes())
    data[100] ^= 0xFF  # inside the vectors section
    path.write_bytes(bytes(data))
    with pytest.raises(CorruptCollectionError, match="section 'vectors' fails its CRC-32 check"):
        opened(tmp_path)


def test_torn_journal_tail_is_dropped(tmp_path):
    sink = opened(tmp_path, checkpoint_mb=64)
    sink.upsert(recs(ids(20), vecs(20), meta(20)))
    sink.upsert(recs(ids(20, 20), vecs(20, seed=1), meta(20, 20)))
    wal = tmp_path / "c.faiss.wal"
    size = wal.stat().st_size
    sink._journal.close()  # simulate a kill -9: no close(), then a half-written record
    sink._release_lock()
    with open(wal, "ab") as fh:
        fh.write(b"\x10\x00\x00\x00garbage")
    again = opened(tmp_path)
    assert again.count() == 40
    again.upsert(recs(["late"], vecs(1, seed=2), [{}]))  # the writer truncates the torn tail first
    assert wal.stat().st_size > size
    again.close()
    final = opened(tmp_path)
    assert final.count() == 41 and set(final.fetch(["late", "t00039"])) == {"late", "t00039"}
    final.close()


def test_checkpoints_fold_the_journal(tmp_path):
    sink = opened(tmp_path, checkpoint_mb=0)
    for b in range(5):
        sink.upsert(recs(ids(10, 10 * b), vecs(10, seed=b), meta(10, 10 * b)))
    gen = sink.describe()["generation"]
    assert gen >= 3  # an empty first snapshot, then whenever the journal outgrows the snapshot
    sink.close()
    again = opened(tmp_path)
    assert again.count() == 50 and again.describe()["generation"] == gen + 1
    again.close()


def test_unsubstituted_output_dir_falls_back_to_cwd(tmp_path, monkeypatch, caplog):
    monkeypatch.chdir(tmp_path)
    sink = FaissSink()  # path '{output_dir}/faiss'
    with caplog.at_level(logging.WARNING, logger="musicembed.faiss"):
        sink.open("emb", space())
    assert "still contains {output_dir}" in caplog.text
    sink.upsert(recs(ids(3), vecs(3), meta(3)))
    sink.close()
    assert (tmp_path / "faiss" / "emb.faiss").is_file()


def test_constructor_validates_and_stores_params():
    sink = FaissSink(index="HNSW32", metric="L2", ef_search=64, nprobe=4)
    assert sink.config()["metric"] == "l2" and sink.config()["ef_search"] == 64
    assert sink.signature()["name"] == "faiss" and "fsync" not in sink.signature()
    with pytest.raises(ValueError, match="metric must be one of"):
        FaissSink(metric="hamming")
    with pytest.raises(ValueError, match="nprobe must be >= 1"):
        FaissSink(nprobe=0)


def test_readonly_open_creates_nothing(tmp_path):
    """`musicembed search` before any run: no folder, no file, a clear error."""
    folder = tmp_path / "not-yet"
    sink = FaissSink(path=str(folder))
    with pytest.raises(SinkNotFoundError, match=r"'new' .*does not exist yet.*musicembed run"):
        sink.open("new", space(), readonly=True)
    with pytest.raises(SinkNotFoundError):
        sink.open("new", None, readonly=True)
    assert not folder.exists()
    with pytest.raises(FaissSinkError, match="needs the embedding space"):
        sink.open("new", None)
    assert not folder.exists()


def test_readonly_open_reads_and_refuses_writes(tmp_path):
    writer = opened(tmp_path)
    writer.upsert(recs(ids(10), vecs(10), meta(10)))
    writer.close()
    before = sorted(os.listdir(tmp_path))
    reader = opened(tmp_path, readonly=True)
    assert reader.count() == 10 and reader.known()["t00003"] == "h3"
    assert top_ids(reader, vecs(10)[:1], 1) == [["t00000"]]
    with pytest.raises(FaissSinkError, match="opened read-only"):
        reader.upsert(recs(["x"], vecs(1), [{}]))
    with pytest.raises(FaissSinkError, match="opened read-only"):
        reader.delete(["t00001"])
    stored = FaissSink(path=str(tmp_path))
    stored.open("c", None, readonly=True)  # no space: whatever is stored, no identity check
    assert stored.count() == 10 and stored.describe()["space_hash"] == space().hash
    stored.close()
    reader.close()
    assert sorted(os.listdir(tmp_path)) == before  # no lock file, no new snapshot
