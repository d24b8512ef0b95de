"""Other processes: kill -9 during writes, and two processes on one Milvus Lite database."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from milvus_testdata import records, space
from musicembed_milvus import MilvusSink

PLUGIN_DIR = Path(__file__).resolve().parents[1]
DIM = 16
BATCH = 25

WRITER = textwrap.dedent(
    """
    import sys
    import numpy as np
    from musicembed_core import EmbeddingSpace, Record
    from musicembed_milvus import MilvusSink

    space = EmbeddingSpace.from_json(sys.argv[2])
    sink = MilvusSink(uri=sys.argv[1], index_type="FLAT")
    sink.open("crash", space)
    rng = np.random.default_rng(0)
    done = 0
    while True:
        ids = [f"t{done + i:06d}" for i in range(BATCH)]
        x = rng.standard_normal((BATCH, space.dim)).astype(np.float32)
        sink.upsert([Record(i, v, "h" + i, {"path": "/m/" + i}) for i, v in zip(ids, x)])
        done += BATCH
        print(done, flush=True)  # acknowledged: upsert returned
    """
).replace("BATCH", str(BATCH))

OPENER = textwrap.dedent(
    """
    import sys
    from musicembed_core import EmbeddingSpace
    from musicembed_milvus import MilvusSink
    from musicembed_milvus.errors import DatabaseLockedError

    space = EmbeddingSpace.from_json(sys.argv[2])
    sink = MilvusSink(uri=sys.argv[1])
    try:
        sink.open("tracks", space)
    except DatabaseLockedError as exc:
        print("LOCKED", exc)
        sys.exit(3)
    print("OPENED", sink.count())
    sink.close()
    """
)


def _env() -> dict:
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(PLUGIN_DIR), os.environ.get("PYTHONPATH", "")])}


@pytest.mark.parametrize("memtable_bytes", [None, 16 * 1024], ids=["wal-only", "with-flushes"])
def test_kill_9_during_writes_keeps_every_acknowledged_batch(tmp_path, memtable_bytes):
    """A small memtable budget makes Milvus Lite flush segments every few batches,
    so the kill also lands in or between flushes and compactions."""
    uri = str(tmp_path / "crash.db")
    sp = space(DIM)
    env = _env()
    if memtable_bytes:
        env["MILVUS_LITE_MEMTABLE_MEMORY_LIMIT_BYTES"] = str(memtable_bytes)
    proc = subprocess.Popen([sys.executable, "-c", WRITER, uri, sp.to_json()],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    acked = 0
    try:
        for line in proc.stdout:
            acked = int(line)
            if acked >= 40 * BATCH:
                break
        else:
            pytest.fail(f"writer stopped early: {proc.stderr.read()}")
    finally:
        proc.send_signal(signal.SIGKILL)
        rest, _ = proc.communicate(timeout=60)
    for line in rest.split():  # acknowledged between our last read and the kill
        acked = max(acked, int(line))
    assert proc.returncode == -signal.SIGKILL

    sink = MilvusSink(uri=uri, index_type="FLAT")
    sink.open("crash", sp)  # the dead writer's LOCK is gone with it
    count = sink.count()
    known = sink.known()
    assert count in (acked, acked + BATCH)  # the in-flight batch: all or nothing
    assert len(known) == count  # ids unique
    assert set(known) == {f"t{i:06d}" for i in range(count)}
    assert all(known[tid] == "h" + tid for tid in known)
    # the recovered rows are searchable and the database takes more writes
    stored = sink.fetch(["t000000", f"t{count - 1:06d}"])
    (row,) = sink.search(stored["t000000"][None, :], k=1)
    assert row[0].id == "t000000"
    sink.upsert(records(["extra"], np.ones((1, DIM), np.float32), [{}]))
    assert sink.count() == count + 1
    sink.close()


def test_second_process_gets_a_clear_error_until_the_first_closes(tmp_path):
    uri = str(tmp_path / "shared.db")
    sp = space(DIM)
    sink = MilvusSink(uri=uri)
    sink.open("tracks", sp)
    sink.upsert(records(["a"], np.ones((1, DIM), np.float32), [{}]))

    other = subprocess.run([sys.executable, "-c", OPENER, uri, sp.to_json()],
                           capture_output=True, text=True, env=_env(), timeout=120, check=False)
    assert other.returncode == 3, other.stdout + other.stderr
    assert "open in another process" in other.stdout and str(Path(uri)) in other.stdout

    # a second sink in the *same* process shares the embedded server
    second = MilvusSink(uri=uri)
    second.open("tracks", sp)
    assert second.count() == 1
    second.close()
    assert sink.count() == 1  # closing one sink left the other working

    sink.close()  # the last sink on the file stops the server: the lock is released
    other = subprocess.run([sys.executable, "-c", OPENER, uri, sp.to_json()],
                           capture_output=True, text=True, env=_env(), timeout=120, check=False)
    assert other.returncode == 0, other.stdout + other.stderr
    assert "OPENED 1" in other.stdout



def test_an_index_file_torn_by_a_kill_is_rebuilt_on_open(tmp_path):
    """Milvus Lite writes index sidecars in place; a kill while writing one used to make the
    collection unloadable ("No data left in file"). The sink rebuilds such files."""
    uri = str(tmp_path / "torn.db")
    sp = space(DIM)
    env = {**_env(), "MILVUS_LITE_MEMTABLE_MEMORY_LIMIT_BYTES": str(16 * 1024)}
    writer = WRITER.replace("while True:", "for _ in range(20):") + "\nsink.close()\n"
    done = subprocess.run([sys.executable, "-c", writer, uri, sp.to_json()], capture_output=True,
                          text=True, env=env, timeout=120)
    assert done.returncode == 0, done.stderr
    reader = MilvusSink(uri=uri, index_type="FLAT")
    reader.open("crash", sp)  # loading builds a sidecar per flushed segment
    reader.close()
    sidecars = sorted((tmp_path / "torn.db").rglob("indexes/*.idx"))
    assert sidecars, "the small memtable should have flushed segments with index files"
    sidecars[0].write_bytes(sidecars[0].read_bytes()[:40])  # torn in the middle of a write
    sink = MilvusSink(uri=uri, index_type="FLAT")
    sink.open("crash", sp)
    assert sink.count() == 20 * BATCH
    (row,) = sink.search(sink.fetch(["t000003"])["t000003"][None, :], k=1)
    assert row[0].id == "t000003"
    sink.close()
