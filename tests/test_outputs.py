"""The runner's output writers (musicembed_core.outputs) on real outputs: a refused record is
isolated by splitting the batch, a broken output stops the run, disk-full errors are recognised
through exception chains, and the flush policy is bounded by tracks and by time."""

from __future__ import annotations

import errno

import numpy as np
import pytest

from musicembed_core import EmbeddingSpace, Record
from musicembed_core.builtins.hdf5 import Hdf5Exporter, read_hdf5
from musicembed_core.outputs import (
    DiskFullError,
    FlushPolicy,
    OutputWriter,
    disk_full_cause,
)

DIM = 4
SPACE = EmbeddingSpace(encoder={"name": "t"}, enrichers=(), dim=DIM)


def rec(i: int, vector=None) -> Record:
    v = np.full(DIM, float(i + 1), np.float32) if vector is None else np.asarray(vector, np.float32)
    return Record(f"t{i}", v, f"h{i}", {"duration": 1.0})


def test_a_poisoned_record_is_isolated_and_the_others_are_stored(tmp_path):
    path = str(tmp_path / "x.h5")
    exp = Hdf5Exporter()
    exp.open(path, SPACE)
    w = OutputWriter(exp, "exporters.hdf5 (x)", path, batched=False)
    batch = [rec(i) for i in range(7)]
    batch[4] = rec(4, [np.nan] * DIM)
    refused = w.write(batch)
    assert [r.id for r in refused] == ["t4"] and "non-finite" in refused[0].reason
    assert refused[0].output == "exporters.hdf5 (x)"
    w.close()
    data = read_hdf5(path)
    assert sorted(data["ids"]) == ["t0", "t1", "t2", "t3", "t5", "t6"]
    assert w.stored == 6


def test_an_output_refusing_every_record_is_broken_not_the_data(tmp_path):
    path = str(tmp_path / "x.h5")
    exp = Hdf5Exporter()
    exp.open(path, SPACE)
    w = OutputWriter(exp, "exporters.hdf5 (x)", path, batched=False)
    from musicembed_core.outputs import OutputBrokenError

    with pytest.raises(OutputBrokenError, match=r"refused every record of a batch of 3"):
        w.write([rec(i, [np.inf] * DIM) for i in range(3)])
    assert w.write([rec(9)]) == []  # still usable
    w.close()
    assert read_hdf5(path)["ids"] == ["t9"]


def test_disk_full_is_found_through_the_exception_chain():
    try:
        try:
            raise OSError(errno.ENOSPC, "No space left on device", "/mnt/x.h5")
        except OSError as exc:
            raise RuntimeError("h5py said something vague") from exc
    except RuntimeError as outer:
        assert disk_full_cause(outer).filename == "/mnt/x.h5"
    assert disk_full_cause(ValueError("nope")) is None


def test_disk_full_stops_with_a_message_naming_output_and_path(tmp_path):
    class FullDisk(Hdf5Exporter):
        name = "hdf5"

        def write(self, records):
            raise OSError(errno.ENOSPC, "No space left on device", self.path)

    exp = FullDisk(path=str(tmp_path / "x.h5"))
    w = OutputWriter(exp, "exporters.hdf5 (x)", str(tmp_path / "x.h5"), batched=False)
    with pytest.raises(DiskFullError, match=r"disk full while writing exporters.hdf5 \(x\) to .*x\.h5"
                       r".*run the same command again"):
        w.write([rec(0), rec(1)])


def test_flush_policy_by_tracks_and_by_time():
    now = [0.0]
    p = FlushPolicy(every_tracks=3, every_seconds=10.0, clock=lambda: now[0])
    for _ in range(2):
        p.track_done()
    assert not p.due()
    p.track_done()
    assert p.due()
    p.flushed()
    assert not p.due()
    now[0] = 10.5
    assert p.due()  # time alone
