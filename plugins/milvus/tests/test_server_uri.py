"""The server code path (uri = http://HOST:PORT), against Milvus Lite's own gRPC
server started as a separate process (`python -m milvus_lite server`): the same
Milvus protocol a Milvus server speaks, with no Lite file handling in the sink."""

from __future__ import annotations

import socket
import subprocess
import sys
import time

import numpy as np
import pytest
from milvus_testdata import brute_force, metadata, records, space, vectors
from musicembed_milvus import MilvusSink
from musicembed_milvus.errors import MilvusSinkError


@pytest.fixture(scope="module")
def server_uri(tmp_path_factory):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    data = tmp_path_factory.mktemp("server") / "data"
    proc = subprocess.Popen(
        [sys.executable, "-m", "milvus_lite", "server", "--data-dir", str(data),
         "--host", "127.0.0.1", "--port", str(port)],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )
    deadline = time.monotonic() + 60
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                pytest.fail(f"milvus_lite server did not start: {proc.stderr.read()}")
            time.sleep(0.2)
    yield f"http://127.0.0.1:{port}"
    proc.terminate()
    proc.wait(timeout=30)


def test_server_upsert_search_delete(server_uri):
    dim = 32
    sink = MilvusSink(uri=server_uri, index_type="FLAT", collection="server_basic")
    sink.open("server_basic", space(dim))
    assert sink._lite_path is None
    ids = [f"s{i}" for i in range(20)] + ["Don't \"quote\" me.wav"]
    vecs = vectors(len(ids), dim)
    sink.upsert(records(ids, vecs, metadata(ids)))
    sink.upsert(records(ids, vecs, metadata(ids)))
    assert sink.count() == len(ids)
    assert set(sink.known()) == set(ids)
    for tid, row in zip(ids, sink.search(vecs, k=1)):
        assert row[0].id == tid and row[0].score == pytest.approx(1.0, abs=1e-5)
    (row,) = sink.search(vecs[:1], k=30, filter='meta["genre"] == "jazz"')
    assert {h.id for h in row} == {tid for tid, md in zip(ids, metadata(ids)) if md["genre"] == "jazz"}
    sink.delete(ids[-3:])
    assert sink.count() == len(ids) - 3
    sink.close()


def test_server_wide_vectors_use_server_side_part_scores(server_uri):
    """With a server the missing part scores come from searches restricted to the
    candidates (no vectors fetched)."""
    dim, n, k = 48, 300, 5
    sink = MilvusSink(uri=server_uri, index_type="FLAT", metric="l2", max_part_dim=16,
                      oversample=1, max_part_candidates=n, collection="server_wide")
    sink.open("server_wide", space(dim))
    ids = [f"w{i:03d}" for i in range(n)]
    stored = vectors(n, dim, seed=8)
    sink.upsert(records(ids, stored, metadata(ids)))
    fetched: list[str] = []
    real_fetch = sink.fetch

    def recording_fetch(chunk):
        fetched.extend(chunk)
        return real_fetch(chunk)

    sink.fetch = recording_fetch
    queries = stored[:4] + 0.5 * vectors(4, dim, seed=9)
    hits = sink.search(queries, k=k)
    order, scores = brute_force(queries, stored, "l2", k)
    for qi, row in enumerate(hits):
        assert [h.id for h in row] == [ids[j] for j in order[qi]]
        np.testing.assert_allclose([h.score for h in row], scores[qi], rtol=1e-4)
    assert fetched == []  # every part score came from the server
    sink.close()


def test_server_database_name(server_uri):
    from pymilvus import MilvusClient

    admin = MilvusClient(uri=server_uri)
    if "music" not in admin.list_databases():
        admin.create_database("music")
    admin.close()
    sink = MilvusSink(uri=server_uri, db_name="music", collection="in_db")
    sink.open("in_db", space(8))
    sink.upsert(records(["a"], vectors(1, 8), [{}]))
    assert sink.count() == 1
    sink.close()
    other = MilvusClient(uri=server_uri)  # the default database does not have it
    assert "in_db" not in other.list_collections()
    other.close()


def test_unreachable_server_is_a_clear_error():
    sink = MilvusSink(uri="http://user:secret@127.0.0.1:1", timeout=3)
    with pytest.raises(MilvusSinkError, match="cannot connect to Milvus at") as err:
        sink.open("x", space(8))
    assert "secret" not in str(err.value)
