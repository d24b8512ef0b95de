"""`musicembed serve` over a Milvus Lite database: the same endpoints and errors as over
FAISS, and a reindex in the service's own process (Milvus Lite allows one process per
database: the background run shares the service's embedded server)."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import pytest

pytest.importorskip("musicembed_milvus", reason="the musicembed-milvus plugin is not installed")
httpx = pytest.importorskip("httpx", reason="install the test extra: pip install 'musicembed[test]'")
pytest.importorskip("fastapi", reason="install the serve extra: pip install 'musicembed[serve]'")

sys.path.insert(0, str(Path(__file__).parent))
import serve_support as ss  # noqa: E402
from serve_support import client, server  # noqa: E402,F401  (fixtures over this module's `run`)

from musicembed_core.search import Query, search  # noqa: E402


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    root = tmp_path_factory.mktemp("serve-milvus")
    src = ss.make_library(root / "lib")
    cfg = ss.run_config(ss.MILVUS_GIN, src, root / "out")
    ss.index(cfg)
    return cfg


def test_search_tracks_audio(client, run):
    emb = client.get("/embeddings").json()["embeddings"][0]
    assert emb["sink"] == "milvus" and emb["count"] == 7
    got = client.get("/search", params={"id": "jazz/b.flac", "k": 3}).json()
    want = search(run, Query(track_id="jazz/b.flac", k=3)).as_dict()
    assert [h["id"] for h in got["hits"]] == [h["id"] for h in want["hits"]]
    assert [h["score"] for h in got["hits"]] == pytest.approx([h["score"] for h in want["hits"]])
    src = Path(run.source)
    with open(src / "e.m4a", "rb") as fh:
        up = client.post("/search", files={"audio": ("e.m4a", fh, "audio/mp4")}).json()
    assert up["hits"][0]["id"] == "e.m4a" and up["hits"][0]["score"] == pytest.approx(1.0, abs=1e-4)
    filtered = client.get("/search", params={"id": "jazz/b.flac", "k": 50,
                                             "filter": 'path like "%rock%"'}).json()
    assert [h["id"] for h in filtered["hits"]] == ["rock/a.wav"]
    vec = client.get("/tracks/e.m4a", params={"vector": "true"}).json()
    assert len(vec["vector"]) == 384 and vec["metadata"]["duration"] == pytest.approx(ss.SECONDS, abs=0.1)
    data = (src / "e.m4a").read_bytes()
    part = client.get("/tracks/e.m4a/audio", headers={"Range": "bytes=7-70"})
    assert part.status_code == 206 and part.content == data[7:71]
    assert part.headers["content-range"] == f"bytes 7-70/{len(data)}"
    assert part.headers["content-type"] == "audio/mp4"


def test_errors(client):
    for resp, status, text in [
        (client.get("/search", params={"id": "nope.wav"}), 404, "no such track in sink 'milvus'"),
        (client.get("/search", params={"id": "c.ogg", "filter": "duration >"}), 400, "filter"),
        (client.get("/search", params={"id": "c.ogg", "embedding": "x"}), 400, "--embedding 'x'"),
        (client.get("/tracks/../../etc/passwd/audio"), 404, "no such"),
        (client.get("/tracks/%2e%2e%2f%2e%2e%2fetc%2fpasswd/audio"), 403, "outside the library"),
    ]:
        assert resp.status_code == status, (resp.status_code, resp.text)
        assert text in resp.json()["error"] and "Traceback" not in resp.text


def test_playlist(client, run):
    mix = client.get("/playlist", params={"seed": ["d.mp3", "f.opus"], "n": 5,
                                          "max_per_tag": "decoder=4"}).json()
    ids = [t["id"] for t in mix["tracks"]]
    assert ids[:2] == ["d.mp3", "f.opus"] and len(ids) == 5 == len(set(ids))
    decoders = [t["metadata"]["decoder"] for t in mix["tracks"]]
    assert max(decoders.count(d) for d in set(decoders)) == 4  # soundfile capped, one pyav
    entries = ss.parse_m3u8(client.get("/playlist", params={
        "seed": "d.mp3", "n": 3, "format": "m3u8"}).text)
    assert entries[0] == (round(ss.SECONDS), "d", str(Path(run.source) / "d.mp3"))


def test_reindex_in_process_with_milvus_lite(run, tmp_path):
    src = ss.copy_library(Path(run.source), tmp_path / "lib")
    cfg = ss.run_config(ss.MILVUS_GIN, src, tmp_path / "out")
    ss.index(cfg)
    with ss.serving(cfg) as srv, httpx.Client(base_url=srv.url, timeout=60) as c:
        assert c.get("/health").json()["tracks"] == {"logmel": 7}
        ss.add_track(src, "new/h.wav", seed=42)
        assert c.post("/reindex").status_code == 202
        deadline = time.monotonic() + 240
        while (st := c.get("/reindex").json())["runs"] < 1 or st["running"]:
            assert time.monotonic() < deadline, st
            # the service keeps answering while the run writes into the same database
            assert c.get("/search", params={"id": "c.ogg", "k": 2}).status_code == 200
            time.sleep(0.2)
        assert st["error"] is None, st
        assert c.get("/health").json()["tracks"] == {"logmel": 8}
        hits = c.get("/search", params={"id": "new/h.wav", "k": 3}).json()["hits"]
        assert len(hits) == 3 and "new/h.wav" not in [h["id"] for h in hits]
