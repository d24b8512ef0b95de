"""sinks.milvus on a Milvus Lite database whose file system fills up (a real small tmpfs)."""

from __future__ import annotations

import pytest
from musicembed_milvus import MilvusSink

from musicembed_core.testing import faults
from musicembed_core.testing.records import suite_space

NO_PRECHECK = "import musicembed_core.atomic as a; a.SPACE_MARGIN = -(1 << 40)"


@pytest.mark.parametrize("prelude", ["", NO_PRECHECK], ids=["checked", "real-enospc-in-milvus-lite"])
def test_full_disk_is_one_clear_error_without_a_traceback(tmp_path, prelude):
    """Issue 9: a full disk ended in a Python traceback. Checked first, the upsert is refused
    before Milvus Lite writes; when the disk fills in mid-request, Milvus Lite's error (and
    its logged traceback) become the sink's one OSError(ENOSPC)."""
    run = faults.run_disk_full(
        kind="sink", cls=MilvusSink,
        params_for=lambda root: {"uri": str(root / "m.db"), "index_type": "FLAT"},
        target_for=lambda root: "tracks", space_json=suite_space(16).to_json(), work=tmp_path,
        batch=10, prelude=prelude,
    )
    faults.check_disk_full(run, names=("tracks",))
    msg = run.fill["error"]["message"]
    assert "milvus collection 'tracks' (Milvus Lite database" in msg and "m.db" in msg, msg
    assert "These 10 rows were not acknowledged" in msg, msg
    assert "Traceback" not in run.fill["stderr"], run.fill["stderr"]
    # The refused batch is not stored; every acknowledged one is.
    failed = f"more/{run.fill['batches']:04d}-"
    more = {t for t in run.resume["known"] if t.startswith("more/")}
    assert more == {t for t in run.fill["attempted"] if not t.startswith(failed)}
