"""The gin files this plugin ships (musicembed_muq/gin): declared through the
register_gin_folders hook, each with a header, each run file buildable, both MuLan towers
bound to the same checkpoint through one macro, the seed's 1536-d space built as documented."""

from __future__ import annotations

import musicembed_muq

from musicembed_core import ginconfig
from musicembed_core.testing import GinFolderSuite


class TestGinFiles(GinFolderSuite):
    plugin = "muq"
    package = musicembed_muq
    expected = {"encoders/muq.gin", "encoders/mulan.gin", "runs/muq.gin", "runs/mulan.gin",
                "runs/mulan_1536.gin"}
    requires = {"runs/mulan.gin": "faiss"}

    def test_one_macro_moves_both_towers(self, gin_manager):
        ginconfig.parse(["runs/mulan.gin"], ['run.source="."', 'MULAN_MODEL="/models/mulan"'])
        from musicembed_core.runconfig import run_config

        [emb] = run_config().embeddings
        assert emb.encoder.name == "mulan" and emb.encoder.model == "/models/mulan"
        assert emb.projector.name == "mulan" and emb.projector.model == "/models/mulan"
        assert [e.name for e in emb.enrichers] == list(musicembed_muq.SHIPPED_CHAIN)

    def test_the_1536_run_is_three_statistics_of_mulan_vectors(self, gin_manager):
        ginconfig.parse(["runs/mulan_1536.gin"], ['run.source="."'])
        from musicembed_core.runconfig import run_config

        [emb] = run_config().embeddings
        assert emb.encoder.name == "mulan" and emb.encoder.window_seconds == 10.0
        stats = [e for e in emb.enrichers if e.name == "stats"]
        assert stats and list(stats[0].stats) == ["mean", "robust_sigma", "delta_mean"]
