"""musicembed_core.parse_filter: the metadata filter parser sinks share (no eval).

Filtered searches through a sink are tested with the sinks (plugins/faiss/tests).
"""

from __future__ import annotations

import pytest

from musicembed_core import parse_filter
from musicembed_core.errors import FilterError, MusicembedError

ROWS = {
    "a": {"duration": 30.0, "path": "/m/jazz/a.flac", "sample_rate": 44100, "live": True, "tags": {"bpm": 90}},
    "b": {"duration": 75.5, "path": "/m/jazz/b.mp3", "sample_rate": 48000, "live": False},
    "c": {"duration": 200, "path": "/m/rock/c.wav", "sample_rate": 44100, "tags": {"bpm": 140}},
    "d": {"duration": 61.0, "path": "/m/Jazz_live/d.ogg", "sample_rate": 22050},
    "e": {"path": "/m/unknown_e.wav"},
}


def matching(text: str) -> list[str]:
    pred = parse_filter(text)
    return sorted(tid for tid, md in ROWS.items() if pred(md, id=tid))


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
        ('tags["bpm"] >= 100', ["c"]),  # subscripts and dots reach into nested dicts alike
        ('meta["sample_rate"] == 44100', ["a", "c"]),  # Milvus' spelling of a top-level key
        ('meta["tags"]["bpm"] < 100', ["a"]),
        ('id == "b" or meta["live"] == true', ["a", "b"]),
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
        ("meta[genre] == 'x'", 'a quoted key in field[...] (e.g. meta["genre"])'),
        ("meta['genre' == 'x'", "expected ']' after 'genre'"),
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


def test_filter_errors_are_user_errors():
    with pytest.raises(FilterError) as err:
        parse_filter("duration >")
    assert isinstance(err.value, MusicembedError) and isinstance(err.value, ValueError)
    with pytest.raises(FilterError, match="must be a string"):
        parse_filter(60)


def test_fields_and_check_fields():
    flt = parse_filter('duration > 60 and meta["genre"] == "jazz" and tags.bpm > 3 and id != "x"')
    assert flt.fields == {"duration", "genre", "tags", "id"}
    flt.check_fields(["duration", "genre", "tags"], where="collection 'c'")
    with pytest.raises(FilterError, match=r"unknown field 'genre' in collection 'c'; fields present: "
                                          r"duration, id, tags"):
        flt.check_fields(["duration", "tags"], where="collection 'c'")


def test_a_metadata_key_named_like_the_aliases_wins():
    """Stored keys `id` and `meta` are read as stored, not as the track id / the alias."""
    assert parse_filter('id == "own"')({"id": "own"}, id="track")
    assert parse_filter('meta["k"] == 1')({"meta": {"k": 1}, "k": 2})
    assert not parse_filter("id == 'track'")({}, id=None)
