"""kill -9 a writer in the middle of upserts/deletes/checkpoints, reopen, compare with what it acknowledged."""

from __future__ import annotations

import importlib.util
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from musicembed_faiss import FaissSink

WRITER = Path(__file__).with_name("crash_writer.py")
_spec = importlib.util.spec_from_file_location("crash_writer", WRITER)
crash_writer = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(crash_writer)


def _run_and_kill(folder: Path, index: str, first: int, acks_before_kill: int) -> int:
    """Start the writer at op ``first``, SIGKILL it after some acks; return the last acked op + 1."""
    with open(folder / "writer.log", "a+") as log:
        proc = subprocess.Popen(
            [sys.executable, str(WRITER), str(folder), index, str(first)],
            stdout=subprocess.PIPE, stderr=log, text=True,
        )
        acked = first
        deadline = time.monotonic() + 120
        try:
            for line in proc.stdout:
                if line.startswith("ACK "):
                    acked = int(line.split()[1]) + 1
                    if acked - first >= acks_before_kill or time.monotonic() > deadline:
                        break
            os.kill(proc.pid, signal.SIGKILL)
            rest = proc.stdout.read()  # acks printed before the kill (the iterator's buffer included)
            proc.wait(timeout=30)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        log.seek(0)
        err = log.read()
    for line in rest.splitlines():
        if line.startswith("ACK "):
            acked = int(line.split()[1]) + 1
    assert proc.returncode == -signal.SIGKILL, err
    assert acked - first >= acks_before_kill, f"writer made too little progress:\n{err}"
    return acked


def _stored(folder: Path, index: str) -> tuple[FaissSink, dict[str, np.ndarray]]:
    sink = FaissSink(path=str(folder), index=index)
    sink.open("crash", crash_writer.space(), readonly=True)
    ids = list(sink.known())
    return sink, sink.fetch(ids)


def _same(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> bool:
    return a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("index", ["Flat", "HNSW32"])
def test_kill9_loses_nothing_acknowledged(tmp_path, index):
    applied = 0
    for round_, kill_after in enumerate((23, 37, 11)):
        acked = _run_and_kill(tmp_path, index, applied, kill_after)
        sink, got = _stored(tmp_path, index)
        try:
            # the op in flight at the kill may or may not have landed, but never partly
            if _same(got, crash_writer.state_after(acked)):
                applied = acked
            else:
                assert _same(got, crash_writer.state_after(acked + 1)), (
                    f"round {round_}: state matches neither {acked} nor {acked + 1} acknowledged ops"
                )
                applied = acked + 1
            assert sink.count() == len(got) == len(set(got))
            ids = list(got)
            hits = sink.search(np.stack([got[t] for t in ids[:50]]), 3)
            assert [h[0].id for h in hits] == ids[:50]
            assert all(len({x.id for x in h}) == len(h) for h in hits)
        finally:
            sink.close()  # read-only: the next writer starts from the files the kill left
    assert applied >= 23 + 37 + 11
