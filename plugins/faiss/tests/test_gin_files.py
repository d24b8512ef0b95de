"""The gin files this plugin ships (musicembed_faiss/gin): declared through the
register_gin_folders hook, each with a header, each run builds (by name, from any folder)."""

from __future__ import annotations

from pathlib import Path

import pytest

import musicembed_faiss
from musicembed_core import ginconfig
from musicembed_core.plugins import get_manager
from musicembed_core.runconfig import run_config

GIN = Path(musicembed_faiss.__file__).resolve().parent / "gin"
FILES = sorted(GIN.rglob("*.gin"))


@pytest.fixture
def manager():
    mgr = get_manager()
    if "faiss" not in mgr.plugins:
        pytest.skip("musicembed-faiss is not installed (pip install -e plugins/faiss)")
    ginconfig.register_components(mgr)
    return mgr


@pytest.fixture(autouse=True)
def _clean_gin():
    import gin

    gin.clear_config(clear_constants=True)
    yield
    gin.clear_config(clear_constants=True)


def test_the_gin_folder_is_declared(manager):
    assert ("faiss", GIN) in [(n, p.resolve()) for n, p in manager.gin_folders()]
    assert {p.relative_to(GIN).as_posix() for p in FILES} == {
        "sinks/faiss.gin", "runs/quickstart_faiss.gin"}


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.relative_to(GIN).as_posix())
def test_gin_file_has_a_header(path):
    """T5X-style: each file opens with comments saying what it is and what to override."""
    first = path.read_text().lstrip().splitlines()[0]
    assert first.startswith("#"), f"{path} should start with a comment header"


def test_quickstart_run_builds_with_the_sink(manager, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    ginconfig.parse(["runs/quickstart_faiss.gin"], [f"run.source = '{tmp_path}'"])
    cfg = run_config()
    assert [s.name for s in cfg.sinks] == ["faiss"]
    assert [e.name for e in cfg.exporters] == ["hdf5"]
    assert cfg.embeddings[0].encoder.name == "logmel"
