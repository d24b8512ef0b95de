"""`musicembed serve` over a FAISS index: every endpoint, the errors, range requests,
the API token, path traversal, reindexing without a restart, text queries.

The real service (uvicorn, in a thread of this process) answers real HTTP requests on
127.0.0.1; the library is the generated example set indexed with logmel."""

from __future__ import annotations

import http.client
import json
import sys
import time
from pathlib import Path

import pytest

pytest.importorskip("musicembed_faiss", reason="the musicembed-faiss plugin is not installed")
httpx = pytest.importorskip("httpx", reason="install the test extra: pip install 'musicembed[test]'")
pytest.importorskip("fastapi", reason="install the serve extra: pip install 'musicembed[serve]'")

sys.path.insert(0, str(Path(__file__).parent))
import serve_support as ss  # noqa: E402
from serve_support import client, server  # noqa: E402,F401  (fixtures over this module's `run`)

from musicembed_core.search import Query, search  # noqa: E402


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    root = tmp_path_factory.mktemp("serve")
    src = ss.make_library(root / "lib", outside=root / "elsewhere")
    cfg = ss.run_config(ss.FAISS_GIN, src, root / "out")
    ss.index(cfg)
    return cfg


def _error(resp, status):
    assert resp.status_code == status, (resp.status_code, resp.text)
    assert resp.headers["content-type"].startswith("application/json")
    body = resp.json()
    assert set(body) >= {"error"} and body["error"], body
    assert "Traceback" not in resp.text and 'File "' not in resp.text
    return body["error"]


# ---------------------------------------------------------------- status, page, docs


def test_health_and_embeddings(client):
    health = client.get("/health").json()
    assert health["status"] == "ok" and health["tracks"] == {"logmel": 8}
    emb = client.get("/embeddings").json()
    (e,) = emb["embeddings"]
    assert emb["default"] == "logmel"
    assert e["name"] == "logmel" and e["sink"] == "faiss" and e["count"] == 8
    assert e["dim"] == 384 and e["queries"] == ["id", "audio"] and e["projector"] is None


def test_page_docs_and_openapi_are_served_without_external_resources(client):
    page = client.get("/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    for asset in ("static/app.js", "static/style.css", "static/docs.js"):
        resp = client.get("/" + asset)
        assert resp.status_code == 200 and len(resp.text) > 100
        assert "http://" not in resp.text and "https://" not in resp.text, asset  # no CDN, no fonts
    assert "http://" not in page.text and "https://" not in page.text
    assert "<audio" not in page.text  # players are made per result by app.js
    docs = client.get("/docs")
    assert docs.status_code == 200 and "docs.js" in docs.text
    spec = client.get("/openapi.json").json()
    for path in ("/search", "/tracks/{track_id}", "/tracks/{track_id}/audio", "/health",
                 "/embeddings", "/playlist", "/reindex"):
        assert path in spec["paths"], path
    assert set(spec["paths"]["/search"]) == {"get", "post"}
    assert set(spec["paths"]["/search"]["post"]["requestBody"]["content"]) >= {
        "multipart/form-data", "application/json", "audio/*"}


# ---------------------------------------------------------------- search


def test_search_by_id_is_the_cli_search(client, run):
    got = client.get("/search", params={"id": "jazz/b.flac", "k": 4}).json()
    want = search(run, Query(track_id="jazz/b.flac", k=4)).as_dict()
    assert got["query"] == want["query"] == "track jazz/b.flac"
    assert [h["id"] for h in got["hits"]] == [h["id"] for h in want["hits"]]
    assert [h["score"] for h in got["hits"]] == pytest.approx([h["score"] for h in want["hits"]])
    assert len(got["hits"]) == 4 and "jazz/b.flac" not in [h["id"] for h in got["hits"]]
    hit = got["hits"][0]
    assert set(hit) >= {"rank", "score", "id", "path", "metadata"}
    assert hit["path"] == hit["metadata"]["path"]


def test_search_with_filter(client):
    none = client.get("/search", params={"id": "jazz/b.flac", "filter": "duration > 1000"}).json()
    assert none["hits"] == []
    some = client.get("/search", params={"id": "jazz/b.flac", "k": 50,
                                         "filter": 'path like "%rock%"'}).json()
    assert [h["id"] for h in some["hits"]] == ["rock/a.wav"]


def test_upload_finds_itself(client, run):
    src = Path(run.source)
    with open(src / "d.mp3", "rb") as fh:
        resp = client.post("/search", params={"k": 3},
                           files={"audio": ("my query.mp3", fh, "audio/mpeg")})
    res = resp.json()
    assert resp.status_code == 200, res
    assert res["query"] == "audio my query.mp3"
    assert res["hits"][0]["id"] == "d.mp3" and res["hits"][0]["score"] == pytest.approx(1.0, abs=1e-4)
    assert len(res["hits"]) == 3
    # The same file as the whole body (curl --data-binary), k and filter from the form/query.
    raw = client.post("/search", params={"k": 2}, content=(src / "jazz/b.flac").read_bytes(),
                      headers={"Content-Type": "audio/flac"}).json()
    assert raw["hits"][0]["id"] == "jazz/b.flac" and len(raw["hits"]) == 2
    # Same vector as the CLI's audio query on the original file.
    cli = search(run, Query(audio=str(src / "d.mp3"), k=3)).as_dict()
    assert [h["id"] for h in res["hits"]] == [h["id"] for h in cli["hits"]]


def test_form_fields_and_json_id(client, run):
    src = Path(run.source)
    with open(src / "c.ogg", "rb") as fh:
        res = client.post("/search", files={"audio": ("c.ogg", fh, "audio/ogg")},
                          data={"k": "2", "filter": "duration > 1"}).json()
    assert [h["id"] for h in res["hits"]][:1] == ["c.ogg"] and len(res["hits"]) == 2
    by_id = client.post("/search", json={"id": "c.ogg", "k": 3}).json()
    assert len(by_id["hits"]) == 3 and "c.ogg" not in [h["id"] for h in by_id["hits"]]


# ---------------------------------------------------------------- errors


def test_bad_requests_get_4xx_json_errors(client, run):
    assert "no such track" in _error(client.get("/search", params={"id": "nope.wav"}), 404)
    msg = _error(client.get("/search", params={"id": "c.ogg", "embedding": "mert"}), 400)
    assert "--embedding 'mert': the run has no such embedding (it has: logmel)" in msg
    assert "filter" in _error(client.get("/search", params={"id": "c.ogg", "filter": "duration >"}), 400)
    assert "'k'" in _error(client.get("/search", params={"id": "c.ogg", "k": 0}), 422)
    assert "give exactly one of" in _error(client.get("/search"), 400)
    assert "needs a text projector" in _error(client.post("/search", json={"text": "calm"}), 400)
    assert "not valid JSON" in _error(
        client.post("/search", content=b"{nope", headers={"Content-Type": "application/json"}), 400)
    assert "unknown field" in _error(client.post("/search", json={"txt": "calm"}), 400)
    assert "'k' must be" in _error(client.post("/search", json={"id": "c.ogg", "k": "many"}), 400)
    assert "is empty" in _error(
        client.post("/search", files={"audio": ("empty.mp3", b"", "audio/mpeg")}), 400)
    corrupt = _error(client.post("/search", files={"audio": ("noise.mp3", b"\x00garbage" * 500,
                                                              "audio/mpeg")}), 400)
    assert corrupt.startswith("--audio 'noise.mp3': ")
    assert "content type 'text/plain'" in _error(
        client.post("/search", files={"audio": ("notes.txt", b"hello", "text/plain")}), 415)
    assert "'text/plain' is not accepted" in _error(
        client.post("/search", content=b"hello", headers={"Content-Type": "text/plain"}), 415)
    assert "no file field 'audio'" in _error(client.post("/search", data={"k": "3"},
                                                          files={"other": ("x", b"1")}), 400)
    assert "no such endpoint" in _error(client.get("/nothing"), 404)
    assert _error(client.delete("/search"), 405)
    assert "no such track" in _error(client.get("/tracks/nope.wav"), 404)
    assert "no such track" in _error(client.get("/tracks/nope.wav/audio"), 404)
    assert "no such track" in _error(client.get("/playlist", params={"seed": "nope.wav"}), 404)
    assert "KEY=N" in _error(client.get("/playlist", params={"seed": "c.ogg", "max_per_tag": "x"}), 400)


def test_oversize_upload_is_refused_declared_or_streamed(run, tmp_path):
    with ss.serving(run, max_upload_bytes=200_000) as srv, httpx.Client(base_url=srv.url) as c:
        big = b"\x00" * 300_000
        msg = _error(c.post("/search", files={"audio": ("big.wav", big, "audio/wav")}), 413)
        assert "larger than the service's limit of 0.2 MB" in msg and "--max-upload-mb" in msg

        def chunks():  # no Content-Length (chunked): counted while it streams in
            for _ in range(30):
                yield b"\x00" * 10_000

        resp = c.post("/search", content=chunks(), headers={"Content-Type": "audio/wav"})
        assert "larger than the service's limit" in _error(resp, 413)

        def form():
            yield (b'--XX\r\nContent-Disposition: form-data; name="audio"; filename="a.wav"\r\n'
                   b"Content-Type: audio/wav\r\n\r\n")
            yield from chunks()
            yield b"\r\n--XX--\r\n"

        resp = c.post("/search", content=form(),
                      headers={"Content-Type": "multipart/form-data; boundary=XX"})
        assert "larger than the service's limit" in _error(resp, 413)
        # a body under the limit still works
        ok = c.post("/search", params={"k": 1},
                    files={"audio": ("a.wav", (Path(run.source) / "rock/a.wav").read_bytes(), "audio/wav")})
        assert ok.status_code == 200 and ok.json()["hits"][0]["id"] == "rock/a.wav"


def test_refused_streamed_upload_leaves_no_temp_file(run, tmp_path, monkeypatch):
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))  # where the service spools uploads

    def chunks():  # no Content-Length: refused part-way through the written temp file
        for _ in range(30):
            yield b"\x00" * 10_000

    with ss.serving(run, max_upload_bytes=200_000) as srv, httpx.Client(base_url=srv.url) as c:
        resp = c.post("/search", content=chunks(), headers={"Content-Type": "audio/wav"})
        assert "larger than the service's limit" in _error(resp, 413)
        ok = c.post("/search", params={"k": 1}, content=(Path(run.source) / "rock/a.wav").read_bytes(),
                    headers={"Content-Type": "audio/wav"})
        assert ok.status_code == 200 and ok.json()["hits"][0]["id"] == "rock/a.wav"
    assert list(tmp_path.glob("musicembed-query-*")) == []


def test_unexpected_failure_is_a_json_500_without_traceback(server, client, monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("secret internal detail")

    index = server.library.use(None, lambda index: index)
    monkeypatch.setattr(index.sink, "search", broken)
    msg = _error(client.get("/search", params={"id": "c.ogg"}), 500)
    assert "RuntimeError" in msg and "secret internal detail" not in msg
    monkeypatch.undo()
    assert client.get("/search", params={"id": "c.ogg"}).status_code == 200


# ---------------------------------------------------------------- tracks and audio


def test_track_metadata_and_vector(client, run):
    meta = client.get("/tracks/jazz/b.flac").json()
    assert meta["id"] == "jazz/b.flac" and meta["path"].endswith("jazz/b.flac")
    assert meta["metadata"]["duration"] == pytest.approx(ss.SECONDS, abs=0.05)
    assert "vector" not in meta and meta["audio"] == "/tracks/jazz/b.flac/audio"
    with_vec = client.get("/tracks/jazz/b.flac", params={"vector": "true"}).json()
    assert len(with_vec["vector"]) == 384
    from musicembed_core.search import open_index

    index = open_index(run)
    try:
        stored = index.sink.fetch(["jazz/b.flac"])["jazz/b.flac"]
    finally:
        index.close()
    assert with_vec["vector"] == pytest.approx([float(x) for x in stored])
    listing = client.get("/tracks", params={"q": "JAZZ"}).json()
    assert listing == {"total": 1, "offset": 0, "ids": ["jazz/b.flac"]}
    assert client.get("/tracks", params={"limit": 3}).json()["total"] == 8


def test_audio_is_streamed_with_range_requests(client, run):
    data = (Path(run.source) / "jazz/b.flac").read_bytes()
    full = client.get("/tracks/jazz/b.flac/audio")
    assert full.status_code == 200 and full.content == data
    assert full.headers["content-type"] == "audio/flac" and full.headers["accept-ranges"] == "bytes"
    part = client.get("/tracks/jazz/b.flac/audio", headers={"Range": "bytes=100-1099"})
    assert part.status_code == 206 and part.content == data[100:1100]
    assert part.headers["content-range"] == f"bytes 100-1099/{len(data)}"
    assert part.headers["content-length"] == "1000"
    tail = client.get("/tracks/jazz/b.flac/audio", headers={"Range": "bytes=-64"})
    assert tail.status_code == 206 and tail.content == data[-64:]
    rest = client.get("/tracks/jazz/b.flac/audio", headers={"Range": f"bytes={len(data) - 10}-"})
    assert rest.status_code == 206 and rest.content == data[-10:]
    beyond = client.get("/tracks/jazz/b.flac/audio", headers={"Range": f"bytes={len(data) + 5}-"})
    assert beyond.status_code == 416
    mp3 = client.get("/tracks/d.mp3/audio", headers={"Range": "bytes=0-9"})
    assert mp3.status_code == 206 and mp3.headers["content-type"] == "audio/mpeg"


def _raw_get(server, target):
    """A request line sent as is (no client-side normalisation of '..' or '%2e')."""
    conn = http.client.HTTPConnection(server.host, server.port, timeout=30)
    try:
        conn.putrequest("GET", target, skip_accept_encoding=True)
        conn.endheaders()
        resp = conn.getresponse()
        return resp.status, resp.getheader("content-type"), resp.read()
    finally:
        conn.close()


@pytest.mark.parametrize("target", [
    "/tracks/../../../../etc/passwd/audio",
    "/tracks/%2e%2e/%2e%2e/%2e%2e/%2e%2e/etc/passwd/audio",
    "/tracks/%2E%2E%2F%2E%2E%2F%2E%2E%2F%2E%2E%2Fetc%2Fpasswd/audio",
    "/tracks/..%2f..%2f..%2f..%2fetc%2fpasswd/audio",
    "/tracks//etc/passwd/audio",
    "/tracks/%2Fetc%2Fpasswd/audio",
    "/tracks/jazz/../../../../etc/passwd/audio",
    "/tracks/outside.wav/audio",
    "/tracks/%00/audio",
])
def test_no_file_outside_the_library_is_served(server, target):
    status, ctype, body = _raw_get(server, target)
    assert status in (400, 403, 404), (target, status, body[:200])
    assert ctype == "application/json" and "error" in json.loads(body)
    assert b"root:" not in body and not body.startswith(b"RIFF")


def test_symlink_out_of_the_library_is_refused_but_its_metadata_listed(client):
    # outside.wav is a symlink to a clip outside run.source: indexed, never served.
    assert client.get("/tracks/outside.wav").status_code == 200
    msg = _error(client.get("/tracks/outside.wav/audio"), 403)
    assert "outside the library folder" in msg


def test_resolve_track_file_containment(tmp_path):
    from musicembed_core.serve.security import ServeError, resolve_track_file

    lib = tmp_path / "lib"
    (lib / "a").mkdir(parents=True)
    (lib / "a" / "x.wav").write_bytes(b"1")
    (tmp_path / "out.wav").write_bytes(b"2")
    (lib / "link.wav").symlink_to(tmp_path / "out.wav")
    (lib / "inside.wav").symlink_to(lib / "a" / "x.wav")
    (lib / "dirlink").symlink_to(tmp_path)
    assert resolve_track_file(lib, "a/x.wav") == (lib / "a" / "x.wav").resolve()
    assert resolve_track_file(lib, "inside.wav") == (lib / "a" / "x.wav").resolve()
    assert resolve_track_file(lib, "a/../a/x.wav") == (lib / "a" / "x.wav").resolve()
    for bad, status in [("../out.wav", 403), ("a/../../out.wav", 403), ("/etc/passwd", 403),
                        (str(tmp_path / "out.wav"), 403), ("link.wav", 403), ("dirlink/out.wav", 403),
                        ("", 400), ("a\x00.wav", 400)]:
        with pytest.raises(ServeError) as exc:
            resolve_track_file(lib, bad)
        assert exc.value.status == status, bad


# ---------------------------------------------------------------- playlists


def test_playlist_json_and_m3u8(client, run):
    mix = client.get("/playlist", params={"seed": ["jazz/b.flac", "c.ogg"], "n": 5}).json()
    ids = [t["id"] for t in mix["tracks"]]
    assert ids[:2] == ["jazz/b.flac", "c.ogg"] and len(ids) == 5 == len(set(ids))
    assert [t["seed"] for t in mix["tracks"]] == [True, True, False, False, False]
    scores = [t["score"] for t in mix["tracks"][2:]]
    assert scores == sorted(scores, reverse=True)
    m3u = client.get("/playlist", params={"seed": "jazz/b.flac", "n": 4, "format": "m3u8"})
    assert m3u.status_code == 200 and m3u.headers["content-type"].startswith("audio/x-mpegurl")
    entries = ss.parse_m3u8(m3u.text)
    assert len(entries) == 4 and entries[0][2] == str(Path(run.source, "jazz/b.flac"))
    assert all(sec == round(ss.SECONDS) for sec, _, _ in entries) and entries[0][1] == "b"
    urls = ss.parse_m3u8(client.get("/playlist", params={
        "seed": "jazz/b.flac", "n": 3, "format": "m3u8", "entries": "url"}).text)
    assert urls[0][2].endswith("/tracks/jazz/b.flac/audio")
    assert client.get(urls[1][2], headers={"Range": "bytes=0-3"}).status_code == 206
    capped = client.get("/playlist", params={"seed": "jazz/b.flac", "n": 8,
                                             "max_per_folder": 1}).json()
    folders = [str(Path(t["id"]).parent) for t in capped["tracks"]]
    assert len(folders) == len(set(folders)) == 3 and capped["capped"] > 0


# ---------------------------------------------------------------- token and binding


def test_token_is_checked_on_every_request(run):
    token = "s3cret;tok=en"  # characters a cookie value must escape
    with ss.serving(run, token=token) as srv, httpx.Client(base_url=srv.url) as c:
        for path in ("/", "/health", "/search?id=c.ogg", "/tracks/c.ogg/audio", "/static/app.js",
                     "/openapi.json", "/docs"):
            assert "API token" in _error(c.get(path), 401), path
        assert _error(c.get("/health", headers={"Authorization": "Bearer wrong"}), 401) == "wrong API token"
        assert _error(c.get("/health", params={"token": token[:-1]}), 401) == "wrong API token"
        assert _error(c.get("/health", params={"token": "\u20ac"}), 401) == "wrong API token"
        assert _error(c.get("/health", headers={"Cookie": "musicembed_token=nope"}), 401) == "wrong API token"
        assert _error(c.post("/reindex"), 401)
        ok = c.get("/health", headers={"Authorization": f"Bearer {token}"})
        assert ok.status_code == 200 and "set-cookie" not in ok.headers
        audio = c.get("/tracks/c.ogg/audio", params={"token": token}, headers={"Range": "bytes=0-9"})
        assert audio.status_code == 206 and len(audio.content) == 10
        page = httpx.get(srv.url + "/", params={"token": token})
        assert page.status_code == 200
        cookie = page.headers["set-cookie"]
        assert "HttpOnly" in cookie and "SameSite=Strict" in cookie
        # the page's later requests (scripts, audio) carry the cookie
        with httpx.Client(base_url=srv.url, cookies=page.cookies) as browser_like:
            assert browser_like.get("/static/app.js").status_code == 200


def test_bind_rules():
    from musicembed_core.errors import ConfigError
    from musicembed_core.serve.security import check_bind, is_loopback

    for host in ("127.0.0.1", "localhost", "::1", "[::1]", "127.1.2.3"):
        assert is_loopback(host), host
        check_bind(host, False, None)
    for host in ("0.0.0.0", "::", "192.168.1.10", "example.org"):
        assert not is_loopback(host)
        with pytest.raises(ConfigError, match="--allow-remote"):
            check_bind(host, False, "tok")
        with pytest.raises(ConfigError, match="needs an API token"):
            check_bind(host, True, None)
        check_bind(host, True, "tok")


def test_serve_command_refuses_remote_without_flag_and_token():
    from musicembed_core.testing import run_cli

    proc = run_cli("serve", "--gin_file", ss.FAISS_GIN, "--host", "0.0.0.0", check=False,
                   env={"MUSICEMBED_TOKEN": ""})
    assert proc.returncode == 2 and "--allow-remote" in proc.stderr
    proc = run_cli("serve", "--gin_file", ss.FAISS_GIN, "--host", "0.0.0.0", "--allow-remote",
                   check=False, env={"MUSICEMBED_TOKEN": ""})
    assert proc.returncode == 2 and "MUSICEMBED_TOKEN" in proc.stderr


def test_missing_serve_extra_names_the_install_command(monkeypatch):
    from musicembed_core.errors import ConfigError
    from musicembed_core.serve import require_serve

    require_serve()
    monkeypatch.setitem(sys.modules, "uvicorn", None)  # import uvicorn -> ImportError
    with pytest.raises(ConfigError, match=r"needs uvicorn.*pip install 'musicembed\[serve\]'"):
        require_serve()


# ---------------------------------------------------------------- reindex, watch


def _wait_reindex(c, runs, timeout=240):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        st = c.get("/reindex").json()
        if st["runs"] >= runs and not st["running"]:
            return st
        time.sleep(0.2)
    raise AssertionError(f"reindex did not finish: {st}")


def test_reindex_picks_up_a_new_file_without_restart(run, tmp_path):
    src = ss.copy_library(Path(run.source), tmp_path / "lib")
    cfg = ss.run_config(ss.FAISS_GIN, src, tmp_path / "out")
    ss.index(cfg)
    with ss.serving(cfg) as srv, httpx.Client(base_url=srv.url, timeout=60) as c:
        assert c.get("/health").json()["tracks"] == {"logmel": 8}
        assert c.get("/search", params={"id": "new/h.wav"}).status_code == 404
        ss.add_track(src, "new/h.wav", seed=42)
        started = c.post("/reindex")
        assert started.status_code == 202 and started.json()["started"] is True
        again = c.post("/reindex")
        assert again.status_code in (202, 409)  # 409 while the first one still runs
        st = _wait_reindex(c, runs=1)
        assert st["error"] is None and st["summary"]["files_ok"] >= 1, st
        assert c.get("/health").json()["tracks"] == {"logmel": 9}
        hits = c.get("/search", params={"id": "new/h.wav", "k": 3}).json()["hits"]
        assert len(hits) == 3
        with open(src / "new/h.wav", "rb") as fh:
            found = c.post("/search", files={"audio": ("h.wav", fh, "audio/wav")}).json()
        assert found["hits"][0]["id"] == "new/h.wav"
        assert c.get("/tracks/new/h.wav/audio", headers={"Range": "bytes=0-3"}).content == b"RIFF"


def test_watch_indexes_new_files(run, tmp_path):
    src = ss.copy_library(Path(run.source), tmp_path / "lib")
    cfg = ss.run_config(ss.FAISS_GIN, src, tmp_path / "out")
    ss.index(cfg)
    with ss.serving(cfg) as srv, httpx.Client(base_url=srv.url, timeout=60) as c:
        srv.library.watch(0.3)
        _wait_reindex(c, runs=1)  # the first look indexes what changed while it was down
        ss.add_track(src, "w.wav", seed=7)
        deadline = time.monotonic() + 240
        while c.get("/health").json()["tracks"]["logmel"] < 9:
            assert time.monotonic() < deadline, c.get("/reindex").json()
            time.sleep(0.3)
        assert c.get("/reindex").json()["trigger"] == "watch"
        assert c.get("/tracks/w.wav").status_code == 200


# ---------------------------------------------------------------- text queries


def test_text_query_through_a_projector(run, register_plugin):
    import hash_projector  # tests/hash_projector.py: projectors.hashproj

    register_plugin(hash_projector, "hashproj")
    cfg = ss.run_config(ss.FAISS_GIN, Path(run.source), Path(run.output_dir),
                        "embedding.projector=@projectors.hashproj()", "projectors.hashproj.dim=384")
    with ss.serving(cfg) as srv, httpx.Client(base_url=srv.url, timeout=60) as c:
        (e,) = c.get("/embeddings").json()["embeddings"]
        assert e["queries"] == ["id", "audio", "text"] and e["projector"] == "hashproj"
        res = c.post("/search", json={"text": "calm piano", "k": 3}).json()
        want = search(cfg, Query(text="calm piano", k=3)).as_dict()
        assert [h["id"] for h in res["hits"]] == [h["id"] for h in want["hits"]]
        assert res["query"] == "text 'calm piano'"
        mix = c.get("/playlist", params={"text": "calm piano", "n": 3}).json()
        assert [t["id"] for t in mix["tracks"]] == [h["id"] for h in want["hits"]]
