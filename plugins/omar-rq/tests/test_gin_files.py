"""The gin files this plugin ships (musicembed_omar_rq/gin): declared through the
register_gin_folders hook, each with a header, each run file buildable; one file per variant."""

from __future__ import annotations

import pytest
from tiny_repos import REPOS

import musicembed_omar_rq
from musicembed_core import ginconfig
from musicembed_core.testing import GinFolderSuite

FILES = {repo.split("/")[1].replace("-", "_"): repo for repo in REPOS}


class TestGinFiles(GinFolderSuite):
    plugin = "omar_rq"
    package = musicembed_omar_rq
    expected = {f"encoders/{name}.gin" for name in FILES} | {"runs/omar_rq.gin"}

    @pytest.mark.parametrize("name", sorted(FILES))
    def test_encoder_files_name_their_model(self, gin_manager, tmp_path, name):
        run = tmp_path / "run.gin"
        run.write_text(f"include 'encoders/{name}.gin'\ninclude 'enrichers/mean.gin'\n"
                       f"embedding.encoder = %{name.upper()}\nembedding.enrichers = %MEAN\n")
        ginconfig.parse([str(run)], [f"{name}/encoders.omar_rq.layers = [6, -1]"])
        from musicembed_core.runconfig import embedding

        enc = embedding().encoder
        assert (enc.name, enc.model, enc.layers, enc.window_seconds) == ("omar_rq", FILES[name], [6, -1], 30.0)

    def test_two_variants_in_one_run(self, gin_manager, tmp_path):
        run = tmp_path / "run.gin"
        run.write_text(
            "include 'encoders/omar_rq_base.gin'\ninclude 'encoders/omar_rq_multifeature_25hz_fsq.gin'\n"
            "include 'enrichers/mean.gin'\ninclude 'exporters/hdf5.gin'\nrun.exporters = [@exporters.hdf5()]\n"
            "run.source = '.'\nrun.embeddings = [@a/embedding(), @b/embedding()]\n"
            "a/embedding.encoder = %OMAR_RQ_BASE\nb/embedding.encoder = %OMAR_RQ_MULTIFEATURE_25HZ_FSQ\n"
            "a/embedding.enrichers = %MEAN\nb/embedding.enrichers = %MEAN\n"
            "a/embedding.name = 'base'\nb/embedding.name = 'fsq'\n")
        ginconfig.parse([str(run)], [])
        from musicembed_core.runconfig import run_config

        assert [e.encoder.model for e in run_config().embeddings] == [
            "mtg-upf/omar-rq-base", "mtg-upf/omar-rq-multifeature-25hz-fsq"]
