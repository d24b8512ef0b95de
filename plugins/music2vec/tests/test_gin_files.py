"""The gin files this plugin ships (musicembed_music2vec/gin): declared through the
register_gin_folders hook, each with a header; `include 'encoders/music2vec.gin'` works
by name."""

from __future__ import annotations

import pytest

import musicembed_music2vec
from musicembed_core import ginconfig
from musicembed_core.testing import GinFolderSuite


class TestGinFiles(GinFolderSuite):
    plugin = "music2vec"
    package = musicembed_music2vec
    expected = {"encoders/music2vec.gin"}


@pytest.fixture
def manager(musicembed_manager):
    if "music2vec" not in musicembed_manager.plugins:
        pytest.skip("musicembed-music2vec is not installed (pip install -e plugins/music2vec)")
    ginconfig.register_components(musicembed_manager)
    return musicembed_manager


def test_encoder_file_provides_the_scoped_macro(manager, tmp_path):
    run = tmp_path / "run.gin"
    run.write_text("include 'encoders/music2vec.gin'\ninclude 'enrichers/mean.gin'\n"
                   "embedding.encoder = %MUSIC2VEC\nembedding.enrichers = %MEAN\n")
    ginconfig.parse([str(run)], ["encoders.music2vec.window_seconds = 10.0"])
    from musicembed_core.runconfig import embedding

    enc = embedding().encoder
    assert (enc.name, enc.model, enc.window_seconds) == ("music2vec", "m-a-p/music2vec-v1", 10.0)
