"""The gin files this plugin ships (musicembed_music2vec/gin): declared through the
register_gin_folders hook, each with a header; `include 'encoders/music2vec.gin'` works
by name."""

from __future__ import annotations

from pathlib import Path

import pytest

import musicembed_music2vec
from musicembed_core import ginconfig
from musicembed_core.plugins import get_manager

GIN = Path(musicembed_music2vec.__file__).resolve().parent / "gin"
FILES = sorted(GIN.rglob("*.gin"))


@pytest.fixture
def manager():
    mgr = get_manager()
    if "music2vec" not in mgr.plugins:
        pytest.skip("musicembed-music2vec is not installed (pip install -e plugins/music2vec)")
    ginconfig.register_components(mgr)
    return mgr


def test_the_gin_folder_is_declared(manager):
    assert ("music2vec", GIN) in [(n, p.resolve()) for n, p in manager.gin_folders()]
    assert (GIN / "encoders" / "music2vec.gin") in FILES


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.relative_to(GIN).as_posix())
def test_gin_file_has_a_header(path):
    """T5X-style: each file opens with comments saying what it is and what to override."""
    first = path.read_text().lstrip().splitlines()[0]
    assert first.startswith("#"), f"{path} should start with a comment header"


def test_encoder_file_provides_the_scoped_macro(manager, tmp_path, clean_gin):
    run = tmp_path / "run.gin"
    run.write_text("include 'encoders/music2vec.gin'\ninclude 'enrichers/mean.gin'\n"
                   "embedding.encoder = %MUSIC2VEC\nembedding.enrichers = %MEAN\n")
    ginconfig.parse([str(run)], ["encoders.music2vec.window_seconds = 10.0"])
    from musicembed_core.runconfig import embedding

    enc = embedding().encoder
    assert (enc.name, enc.model, enc.window_seconds) == ("music2vec", "m-a-p/music2vec-v1", 10.0)
