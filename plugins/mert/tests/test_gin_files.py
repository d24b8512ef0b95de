"""The gin files this plugin ships (musicembed_mert/gin), checked by the conformance kit's
GinFolderSuite; the MERT + music2vec run builds both scoped encoders without weights."""

from __future__ import annotations

import pytest

import musicembed_mert
from musicembed_core import ginconfig
from musicembed_core.chain import EnricherChain
from musicembed_core.runconfig import run_config
from musicembed_core.testing import GinFolderSuite


class TestGinFiles(GinFolderSuite):
    plugin = "mert"
    package = musicembed_mert
    expected = {"encoders/mert_v0.gin", "encoders/mert_v1_95m.gin", "encoders/mert_v1_330m.gin",
                "runs/mert330m_76800.gin", "runs/mert_music2vec.gin"}
    requires = {"runs/mert_music2vec.gin": "music2vec"}


def test_mert_music2vec_run_parses_with_two_scoped_encoders(registered, tmp_path, monkeypatch):
    """Both encoders in one run, each with its own scope, outputs named apart (geometry
    from the released configs alone: no weights)."""
    from mert_checkpoints import released_configs_cache

    released_configs_cache(tmp_path, monkeypatch)
    if "music2vec" not in registered.names("encoders"):
        pytest.skip("runs/mert_music2vec.gin also needs musicembed-music2vec installed")
    ginconfig.parse(["runs/mert_music2vec.gin"],
                    [f"run.source = '{tmp_path}'", "encoders.music2vec.window_seconds = 10.0"])
    cfg = run_config()
    by_name = {s.name: s for s in cfg.embeddings}
    assert set(by_name) == {"mert_v1_95m", "music2vec"}
    m2v, mert = by_name["music2vec"].encoder, by_name["mert_v1_95m"].encoder
    assert (m2v.name, m2v.model, m2v.window_seconds) == ("music2vec", "m-a-p/music2vec-v1", 10.0)
    assert mert.name == "mert" and mert.model == "m-a-p/MERT-v1-95M"
    for spec in cfg.embeddings:
        chain = EnricherChain(spec.enrichers)
        assert chain.output_dim(spec.encoder.geometry()) == 13 * 768 * 3
    assert [e.name for e in cfg.exporters] == ["hdf5"]
