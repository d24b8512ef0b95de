"""Metadata filters: the parser on its own, then filtered searches through the sink."""

from __future__ import annotations

import numpy as np
import pytest
from musicembed_faiss import FaissSink, FilterError
from musicembed_faiss.filters import parse_filter

from musicembed_core import EmbeddingSpace

ROWS = {
    "a": {"duration": 30.0, "path": "/m/jazz/a.flac", "sample_rate": 44100, "live": True, "tags": {"bpm": 90}},
    "b": {"duration": 75.5, "path": "/m/jazz/b.mp3", "sample_rate": 48000, "live": False},
    "c": {"duration": 200, "path": "/m/rock/c.wav", "sample_rate": 44100, "tags": {"bpm": 140}},
    "d": {"duration": 61.0, "path": "/m/Jazz_live/d.ogg", "sample_rate": 22050},
    "e": {"path": "/m/unknown_e.wav"},
}


def matching(text: str) -> list[str]:
    pred = parse_filter(text)
    return sorted(tid for tid, md in ROWS.items() if pred(tid, md))


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("duration > 60", ["b", "c", "d"]),
        ("duration >= 61", ["b", "c", "d"]),
        ("duration < 61", ["a"]),
        ("duration <= 61", ["a", "d"]),
        ("duration == 200", ["c"]),
        ("duration = 30", ["a"]),
        ("duration != 30", ["b", "c", "d"]),  # e has no duration: never matches a comparison
        ('path like "%jazz%"', ["a", "b"]),  # case-sensitive
        ("path like '%/_.wav'", ["c"]),  # _ is one character
        ('path not like "%jazz%"', ["c", "d", "e"]),
        ('path == "/m/rock/c.wav"', ["c"]),
        ('path > "/m/r"', ["c", "e"]),  # strings order lexically
        ("duration > 60 and sample_rate == 44100", ["c"]),
        ("duration > 60 AND sample_rate == 44100 and path like '%.wav'", ["c"]),
        ("duration < 40 or duration > 100", ["a", "c"]),
        ("duration < 40 || duration > 100 && sample_rate == 48000", ["a"]),
        ("not (duration > 60)", ["a", "e"]),
        ("(duration > 60 or live == true) and sample_rate != 48000", ["a", "c", "d"]),
        ("sample_rate in [22050, 48000]", ["b", "d"]),
        ("sample_rate not in [22050, 48000]", ["a", "c"]),
        ("live == false", ["b"]),
        ("tags.bpm >= 100", ["c"]),
        ('id in ["a", "e"]', ["a", "e"]),
        ("duration > 6e1", ["b", "c", "d"]),
        ("duration > -1.5", ["a", "b", "c", "d"]),
        (r"path like '%\_live%'", ["d"]),
    ],
)
def test_filter_semantics(text, expected):
    assert matching(text) == expected


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("duration >> 60", "expected a number, a quoted string, true or false at position 10"),
        ("duration > ", "found end of filter"),
        ("duration 60", "expected a comparison"),
        ("duration > 60 and", "expected a metadata field name"),
        ("duration > 60 path < 3", "expected 'and', 'or' or the end"),
        ("(duration > 60", "expected ')'"),
        ("path like 3", "quoted pattern after 'like'"),
        ("path not == 'x'", "'like' or 'in' after 'not'"),
        ("sample_rate in 1, 2", "'[' starting the list"),
        ("__import__('os').system('true')", "unexpected character '.' at position 16"),
        ("duration > 60; drop", "unexpected character ';' at position 13"),
        ("   ", "is empty"),
        ("live < true", "true/false cannot be ordered"),
    ],
)
def test_bad_syntax_names_the_filter(text, message):
    with pytest.raises(FilterError) as err:
        parse_filter(text)
    assert repr(text) in str(err.value) and message in str(err.value)


def test_type_mismatch_names_field_and_track():
    with pytest.raises(FilterError, match=r"field 'path' of track 'a' holds str .* compared with a number"):
        matching("path > 3")
    with pytest.raises(FilterError, match=r"'like' needs a string but field 'duration' of track 'a'"):
        matching("duration like '3%'")


# ---------------------------------------------------------------------- through the sink

DIM = 8


@pytest.fixture
def sink(tmp_path):
    s = FaissSink(path=str(tmp_path), index="HNSW32")
    s.open("f", DIM, "cosine", EmbeddingSpace(encoder={"name": "t"}, enrichers=(), dim=DIM))
    rng = np.random.default_rng(0)
    n = 500
    s.upsert(
        [f"t{i}" for i in range(n)],
        rng.standard_normal((n, DIM)).astype(np.float32),
        [{"duration": float(i % 120), "path": f"/lib/{'jazz' if i % 4 == 0 else 'pop'}/{i}.flac",
          "content_hash": str(i)} for i in range(n)],
    )
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
