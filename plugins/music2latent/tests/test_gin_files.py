"""The gin files this plugin ships (musicembed_music2latent/gin): declared through the
register_gin_folders hook, each with a header, each run file buildable; the variants by name."""

from __future__ import annotations

import pytest

import musicembed_music2latent
from musicembed_core import ginconfig
from musicembed_core.testing import GinFolderSuite


class TestGinFiles(GinFolderSuite):
    """The suite's checks, plus the variant files (with the suite's ``gin_manager`` fixture,
    which skips when the plugin is not installed)."""

    plugin = "music2latent"
    package = musicembed_music2latent
    expected = {"encoders/music2latent_latents.gin", "encoders/music2latent_features.gin",
                "runs/music2latent.gin", "runs/music2latent_stats.gin"}

    @pytest.mark.parametrize("name, macro, variant", [
        ("music2latent_latents", "MUSIC2LATENT_LATENTS", "latents"),
        ("music2latent_features", "MUSIC2LATENT_FEATURES", "features"),
    ])
    def test_encoder_files_provide_their_variant(self, gin_manager, tmp_path, name, macro, variant):
        run = tmp_path / "run.gin"
        run.write_text(f"include 'encoders/{name}.gin'\ninclude 'enrichers/mean.gin'\n"
                       f"embedding.encoder = %{macro}\nembedding.enrichers = %MEAN\n")
        ginconfig.parse([str(run)], ["encoders.music2latent.sample_rate = 48000"])
        from musicembed_core.runconfig import embedding

        enc = embedding().encoder
        assert (enc.name, enc.model, enc.variant, enc.sample_rate) == (
            "music2latent", "SonyCSLParis/music2latent", variant, 48000)

    def test_both_variants_in_one_run(self, gin_manager, tmp_path):
        run = tmp_path / "run.gin"
        run.write_text(
            "include 'encoders/music2latent_latents.gin'\ninclude 'encoders/music2latent_features.gin'\n"
            "include 'enrichers/mean.gin'\ninclude 'exporters/hdf5.gin'\nrun.exporters = [@exporters.hdf5()]\n"
            "run.source = '.'\nrun.embeddings = [@a/embedding(), @b/embedding()]\n"
            "a/embedding.encoder = %MUSIC2LATENT_LATENTS\nb/embedding.encoder = %MUSIC2LATENT_FEATURES\n"
            "a/embedding.enrichers = %MEAN\nb/embedding.enrichers = %MEAN\n"
            "a/embedding.name = 'lat'\nb/embedding.name = 'feat'\n")
        ginconfig.parse([str(run)], [])
        from musicembed_core.runconfig import run_config

        assert [e.encoder.variant for e in run_config().embeddings] == ["latents", "features"]
