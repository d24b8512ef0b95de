"""End to end: `musicembed run` with the quickstart and the Milvus sink, twice."""

from __future__ import annotations

import json

import h5py
import pytest
from musicembed_milvus import MilvusSink

from musicembed_core import EmbeddingSpace
from musicembed_core.testing import run_cli


@pytest.mark.slow
def test_quickstart_into_milvus_twice_then_search(tmp_path):
    audio, out, db = tmp_path / "audio", tmp_path / "out", tmp_path / "m.db"
    run_cli("examples", str(audio), "--seconds", "4")
    n_files = sum(1 for p in audio.rglob("*") if p.is_file())
    args = [
        "run", "--gin_file", "runs/quickstart_milvus.gin",  # this plugin's, found by name
        "--gin_param", f'run.source="{audio}"',
        "--gin_param", f'run.output_dir="{out}"',
        "--gin_param", f'sinks.milvus.uri="{db}"',
        "--no-progress", "--json",
    ]
    first = json.loads(run_cli(*args).stdout)
    assert first["files_ok"] == n_files and first["files_failed"] == 0
    second = json.loads(run_cli(*args).stdout)
    assert second["files_ok"] == 0 and second["files_skipped"] == n_files

    # The run's own record of its space (the HDF5 output), independent of Milvus.
    with h5py.File(out / "logmel.h5", "r") as h5:
        space = EmbeddingSpace.from_json(h5.attrs["space"])
    sink = MilvusSink(uri=str(db))
    sink.open("logmel", space)
    try:
        assert sink.count() == n_files
        known = sink.known()
        assert len(known) == n_files
        stored = sink.fetch(sorted(known))
        ids = sorted(stored)
        hits = sink.search([stored[i] for i in ids], k=2)
        for tid, row in zip(ids, hits):
            assert row[0].id == tid
            assert row[0].score == pytest.approx(1.0, abs=1e-4)
            assert row[0].metadata["content_hash"] == known[tid]
            assert row[0].metadata["path"].endswith(tid)
            assert {"duration", "sample_rate", "channels", "decoder"} <= set(row[0].metadata)
        (row,) = sink.search([stored[ids[0]]], k=n_files, filter='path like "%jazz%"')
        assert [h.id for h in row] == [i for i in ids if "jazz" in i]
    finally:
        sink.close()


def test_search_before_any_run_creates_no_database(tmp_path):
    """`musicembed search` opens the sink read-only: no .db, no output folder, a clear error."""
    out = tmp_path / "out"
    run_cli("examples", str(tmp_path / "audio"), "--seconds", "2")
    proc = run_cli(
        "search", "--gin_file", "runs/quickstart_milvus.gin",
        "--gin_param", f'run.source="{tmp_path / "audio"}"',
        "--gin_param", f'run.output_dir="{out}"',
        "--audio", str(tmp_path / "audio" / "c.ogg"), check=False,
    )
    assert proc.returncode == 2, proc.stderr
    assert "musicembed.db" in proc.stderr and "does not exist yet" in proc.stderr
    assert "musicembed run" in proc.stderr
    assert not out.exists()
