"""The gin files this plugin ships (musicembed_clap_musicgen/gin): declared through the
register_gin_folders hook, each with a header, each run file buildable, both towers bound
to the same checkpoint through one macro."""

from __future__ import annotations

import musicembed_clap_musicgen
from musicembed_core import ginconfig
from musicembed_core.testing import GinFolderSuite


class TestGinFiles(GinFolderSuite):
    plugin = "clap_musicgen"
    package = musicembed_clap_musicgen
    expected = {"encoders/clap_musicgen.gin", "runs/clap_musicgen.gin", "runs/clap_musicgen_milvus.gin"}
    requires = {"runs/clap_musicgen.gin": "faiss", "runs/clap_musicgen_milvus.gin": "milvus"}

    def test_one_macro_moves_both_towers(self, gin_manager, tmp_path):
        ginconfig.parse(["runs/clap_musicgen.gin"],
                        ['run.source="."', 'CLAP_MUSICGEN_MODEL="/models/clap"'])
        from musicembed_core.runconfig import run_config

        [emb] = run_config().embeddings
        assert emb.encoder.name == "clap_musicgen" and emb.encoder.model == "/models/clap"
        assert emb.projector.name == "clap_musicgen" and emb.projector.model == "/models/clap"
        assert emb.encoder.window_seconds == 15.0
        assert [e.name for e in emb.enrichers] == list(musicembed_clap_musicgen.SHIPPED_CHAIN)
