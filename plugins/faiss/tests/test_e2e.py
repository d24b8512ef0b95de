"""End to end: the installed plugin, `musicembed examples` + `musicembed run` into sinks.faiss."""

from __future__ import annotations

import json

import numpy as np
import pytest
from musicembed_faiss import FaissSink

from musicembed_core.testing import run_cli

RUN_GIN = "runs/quickstart_faiss.gin"  # this plugin's gin file, found by name


@pytest.fixture(scope="module")
def library(tmp_path_factory):
    folder = tmp_path_factory.mktemp("lib") / "audio"
    run_cli("examples", str(folder))
    return folder


def _run(source, out, *params: str) -> dict:
    args = ["run", "--gin_file", RUN_GIN, "--no-progress", "--json"]
    for p in (f'run.source="{source}"', f'run.output_dir="{out}"', *params):
        args += ["--gin_param", p]
    return json.loads(run_cli(*args).stdout)


def test_plugin_is_registered():
    plugins = json.loads(run_cli("plugins", "--json").stdout)
    row = next(p for p in plugins if p["name"] == "faiss")
    assert row["components"] == {"sinks": ["faiss"]} and row["error"] is None


def test_run_into_faiss_then_search_each_track(library, tmp_path):
    store = tmp_path / "vectors"
    summary = _run(library, tmp_path / "out", f'sinks.faiss.path="{store}"', 'sinks.faiss.index="HNSW32"')
    n = summary["files_ok"]
    assert n == summary["files_total"] >= 6 and summary["files_failed"] == 0
    emb = summary["embeddings"][0]

    sink = FaissSink(path=str(store), index="HNSW32")
    sink.open(emb["name"], None, readonly=True)  # no space: read what the run stored
    try:
        assert sink.count() == n
        assert sink.describe()["space_hash"] == emb["space_hash"]
        stored = sink.fetch(list(sink.known()))
        assert len(stored) == n
        ids = list(stored)
        for tid, hits in zip(ids, sink.search(np.stack([stored[t] for t in ids]), 3)):
            assert hits[0].id == tid
            assert hits[0].score == pytest.approx(1.0, abs=1e-4)
            assert hits[0].metadata["path"].endswith(tid)
            assert hits[0].metadata["duration"] > 0 and hits[0].metadata["content_hash"]
        jazz = sink.search(stored[ids[0]][None], 10, filter='path like "%/jazz/%"')[0]
        assert [h.id for h in jazz] == [t for t in ids if t.startswith("jazz/")]
    finally:
        sink.close()

    again = _run(library, tmp_path / "out", f'sinks.faiss.path="{store}"', 'sinks.faiss.index="HNSW32"')
    assert again["files_skipped"] == n and again["files_ok"] == 0  # known() lets the rerun skip


def test_default_path_lands_in_the_output_dir(library, tmp_path):
    summary = _run(library, tmp_path / "out")
    name = summary["embeddings"][0]["name"]
    assert (tmp_path / "out" / "faiss" / f"{name}.faiss").is_file()
