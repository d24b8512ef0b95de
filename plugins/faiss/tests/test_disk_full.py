"""sinks.faiss on a real, full file system (a small tmpfs): journal appends and snapshots end
in one clear ENOSPC error; the snapshot and the journal keep every acknowledged upsert."""

from __future__ import annotations

import pytest
from musicembed_faiss import FaissSink

from musicembed_core.testing import faults
from musicembed_core.testing.records import suite_space


@pytest.mark.parametrize("where", ["journal", "snapshot"])
def test_full_disk_is_one_clear_error_and_nothing_acknowledged_is_lost(tmp_path, where):
    # A large checkpoint_mb: only journal appends write during the run (a real ENOSPC in
    # os.write); a small one: snapshots are rewritten often (the free-space check refuses).
    checkpoint_mb = 64.0 if where == "journal" else 0.02
    run = faults.run_disk_full(
        kind="sink", cls=FaissSink,
        params_for=lambda root: {"path": str(root), "index": "HNSW32", "checkpoint_mb": checkpoint_mb},
        target_for=lambda root: "tracks", space_json=suite_space(16).to_json(), work=tmp_path,
        batch=10,
    )
    faults.check_disk_full(run, names=("tracks",))
    err = run.fill["error"]
    assert err["during"] == "write" and "sinks.faiss collection 'tracks'" in err["message"]
    # The write that failed is its journal append (cut back to the last complete record):
    # nothing of it is stored, every acknowledged batch is.
    assert "tracks.faiss.wal" in err["message"] and "Nothing of this upsert" in err["message"]
    acked = {t for t in run.fill["attempted"] if not t.startswith(f"more/{run.fill['batches']:04d}-")}
    assert {t for t in run.resume["known"] if t.startswith("more/")} == acked
    close = run.fill["close_error"]["message"]  # the final snapshot does not fit either
    assert "tracks.faiss:" in close and "needs about" in close and "reopening replays them" in close
    if where == "snapshot":  # a due snapshot that did not fit left the upsert alone
        assert "the snapshot is retried at close" in run.fill["stderr"]
        assert "Traceback" not in run.fill["stderr"]
