"""The gin files this plugin ships (musicembed_faiss/gin), checked by the conformance kit's
GinFolderSuite; the quickstart run uses the sink."""

from __future__ import annotations

import musicembed_faiss
from musicembed_core import ginconfig
from musicembed_core.runconfig import run_config
from musicembed_core.testing import GinFolderSuite


class TestGinFiles(GinFolderSuite):
    plugin = "faiss"
    package = musicembed_faiss
    expected = {"runs/quickstart_faiss.gin", "sinks/faiss.gin"}


def test_quickstart_run_builds_with_the_sink(musicembed_manager, tmp_path, monkeypatch):
    ginconfig.register_components(musicembed_manager)
    monkeypatch.chdir(tmp_path)
    ginconfig.parse(["runs/quickstart_faiss.gin"], [f"run.source = '{tmp_path}'"])
    cfg = run_config()
    assert [s.name for s in cfg.sinks] == ["faiss"]
    assert [e.name for e in cfg.exporters] == ["hdf5"]
    assert cfg.embeddings[0].encoder.name == "logmel"
