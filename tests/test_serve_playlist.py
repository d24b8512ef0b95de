"""`musicembed playlist` (and the function behind `GET /playlist`): seeds first, no
duplicates, diversity caps, extended M3U with paths relative to the playlist's folder."""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import pytest

pytest.importorskip("musicembed_faiss", reason="the musicembed-faiss plugin is not installed")

sys.path.insert(0, str(Path(__file__).parent))
import serve_support as ss  # noqa: E402

from musicembed_core.errors import ConfigError  # noqa: E402
from musicembed_core.playlist import (  # noqa: E402
    Playlist,
    PlaylistEntry,
    Seed,
    m3u8_text,
    make_playlist,
    parse_tag_caps,
    resolve_seeds,
)
from musicembed_core.search import TrackNotFoundError, open_index  # noqa: E402
from musicembed_core.testing import run_cli  # noqa: E402


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    root = tmp_path_factory.mktemp("playlist")
    src = ss.make_library(root / "lib")
    ss.add_track(src, "jazz/b2.wav", seed=12)
    ss.add_track(src, "rock/a2.wav", seed=13)
    cfg = ss.run_config(ss.FAISS_GIN, src, root / "out")
    ss.index(cfg)
    return cfg


@pytest.fixture
def index(run):
    idx = open_index(run)
    yield idx
    idx.close()


def _ids(mix):
    return [e.id for e in mix.entries]


def test_seeds_first_no_duplicates_ranked(index, run):
    mix = make_playlist(index, run.source, [Seed("c.ogg"), Seed("jazz/b.flac"), Seed("c.ogg")], 6)
    ids = _ids(mix)
    assert ids[:2] == ["c.ogg", "jazz/b.flac"] and len(ids) == 6 == len(set(ids))
    assert [e.seed for e in mix.entries] == [True, True, False, False, False, False]
    scores = [e.score for e in mix.entries[2:]]
    assert scores == sorted(scores, reverse=True)
    # best: each neighbour's score is its best similarity to any seed
    with index.lock:
        vecs = index.sink.fetch(["c.ogg", "jazz/b.flac"])
    import numpy as np

    q = np.stack([vecs["c.ogg"], vecs["jazz/b.flac"]])
    (a, b) = index.sink.search(q, k=20)
    best = {}
    for hits in (a, b):
        for h in hits:
            best[h.id] = max(best.get(h.id, -9), h.score)
    assert [e.score for e in mix.entries[2:]] == pytest.approx([best[i] for i in ids[2:]])
    summed = make_playlist(index, run.source, [Seed("c.ogg"), Seed("jazz/b.flac")], 6, combine="sum")
    assert _ids(summed)[:2] == ids[:2] and len(set(_ids(summed))) == 6
    every = make_playlist(index, run.source, [Seed("c.ogg")], 50)
    assert len(every.entries) == 9 and len(set(_ids(every))) == 9  # the whole index, once each
    assert _ids(make_playlist(index, run.source, [Seed("c.ogg"), Seed("d.mp3")], 1)) == ["c.ogg"]


def test_diversity_caps(index, run):
    by_folder = make_playlist(index, run.source, [Seed("jazz/b.flac")], 9, max_per_folder=1)
    folders = [os.path.dirname(i) for i in _ids(by_folder)]
    assert sorted(folders) == ["", "jazz", "rock"] and by_folder.capped > 0
    two = make_playlist(index, run.source, [Seed("jazz/b.flac")], 9, max_per_folder=2)
    counts = {f: [os.path.dirname(i) for i in _ids(two)].count(f) for f in ("", "jazz", "rock")}
    assert counts == {"": 2, "jazz": 2, "rock": 2}
    # a metadata key: the decoder that read the file (soundfile or pyav)
    by_decoder = make_playlist(index, run.source, [Seed("c.ogg")], 9, max_per_tag={"decoder": 1})
    decoders = [e.metadata["decoder"] for e in by_decoder.entries]
    assert len(decoders) == len(set(decoders)) == 2
    # a key no track has caps nothing
    assert len(make_playlist(index, run.source, [Seed("c.ogg")], 9,
                             max_per_tag={"artist": 1}).entries) == 9
    assert parse_tag_caps(["artist=2", "tag=1"]) == {"artist": 2, "tag": 1}
    for bad in ("artist", "artist=0", "=2", "artist=x"):
        with pytest.raises(ConfigError, match="KEY=N"):
            parse_tag_caps([bad])


def test_seeds_from_files_and_errors(index, run, tmp_path):
    src = Path(run.source)
    outside = tmp_path / "query.mp3"
    shutil.copy(src / "d.mp3", outside)
    seeds = resolve_seeds(index, run.source, ["jazz/b.flac", str(src / "rock/a.wav"), str(outside)])
    assert [(s.track_id, s.audio) for s in seeds] == [
        ("jazz/b.flac", None), ("rock/a.wav", None), (None, str(outside))]
    mix = make_playlist(index, run.source, seeds, 5)
    ids = _ids(mix)
    assert ids[:2] == ["jazz/b.flac", "rock/a.wav"] and "d.mp3" in ids and len(set(ids)) == 5
    with pytest.raises(TrackNotFoundError, match="--seed 'nope.wav': neither a track id"):
        resolve_seeds(index, run.source, ["nope.wav"])
    with pytest.raises(ConfigError, match="at least one --seed"):
        make_playlist(index, run.source, [], 5)
    with pytest.raises(TrackNotFoundError, match="no such track"):
        make_playlist(index, run.source, [Seed("nope.wav")], 5)


def test_m3u8_durations_titles_and_locations(tmp_path):
    entries = [
        PlaylistEntry("a/x.flac", str(tmp_path / "lib/a/x.flac"), None, True, 61.6, "x", {}),
        PlaylistEntry("y.mp3", str(tmp_path / "lib/y.mp3"), 0.9, False, None, "Artist - Song\nTwo", {}),
    ]
    mix = Playlist(seeds=["a/x.flac"], embedding="e", combine="best", entries=entries, requested=2)
    rel = ss.parse_m3u8(m3u8_text(mix, relative_to=tmp_path / "lib" / "playlists"))
    assert rel == [(62, "x", "../a/x.flac"), (-1, "Artist - Song Two", "../y.mp3")]
    assert ss.parse_m3u8(m3u8_text(mix))[1][2] == str(tmp_path / "lib/y.mp3")
    assert ss.parse_m3u8(m3u8_text(mix, locations=["u1", "u2"]))[0][2] == "u1"


def test_playlist_command_writes_a_relative_m3u8(run):
    src = Path(run.source)
    out = src / "playlists" / "mix.m3u8"
    proc = run_cli("playlist", "--gin_file", ss.FAISS_GIN, "--gin_param", f'run.source="{src}"',
                   "--gin_param", f'run.output_dir="{run.output_dir}"', "--seed", "jazz/b.flac",
                   "--seed", str(src / "rock" / "a.wav"), "-n", "6", "--max-per-folder", "3",
                   "-o", str(out))
    assert f"wrote {out}: 6 tracks" in " ".join(proc.stderr.split())
    text = out.read_text(encoding="utf-8")
    entries = ss.parse_m3u8(text)
    assert [where for _, _, where in entries[:2]] == ["../jazz/b.flac", "../rock/a.wav"]
    locations = [where for _, _, where in entries]
    assert len(locations) == 6 == len(set(locations))
    for seconds, title, where in entries:
        assert not os.path.isabs(where) and (out.parent / where).is_file(), where
        assert seconds == round(ss.SECONDS) and title == Path(where).stem
    folders = [os.path.dirname(os.path.normpath(where)) for where in locations]
    assert max(folders.count(f) for f in set(folders)) <= 3
    assert sorted(os.listdir(out.parent)) == ["mix.m3u8"]  # written atomically: no temp left
    bad = run_cli("playlist", "--gin_file", ss.FAISS_GIN, "--gin_param", f'run.source="{src}"',
                  "--gin_param", f'run.output_dir="{run.output_dir}"', "--seed", "nope.wav",
                  check=False)
    assert bad.returncode == 2 and "--seed 'nope.wav': neither a track id" in " ".join(bad.stderr.split())
