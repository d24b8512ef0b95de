"""A batch with a record the FAISS sink refuses: the runner's writer isolates it by splitting
the batch, and every other record of the batch is stored (issue 9: never the batch)."""

from __future__ import annotations

import numpy as np
from musicembed_faiss import FaissSink

from musicembed_core import EmbeddingSpace, Record
from musicembed_core.outputs import OutputWriter

DIM = 8


def test_one_nan_record_in_a_sink_batch_is_refused_alone(tmp_path):
    space = EmbeddingSpace(encoder={"name": "t"}, enrichers=(), dim=DIM)
    sink = FaissSink(path=str(tmp_path))
    sink.open("c", space)
    w = OutputWriter(sink, "sinks.faiss (c)", "faiss:c", batched=True)
    rng = np.random.default_rng(0)
    for i in range(29):
        v = rng.standard_normal(DIM).astype(np.float32)
        if i == 17:
            v[3] = np.nan
        assert w.add(Record(f"t{i}", v, f"h{i}", {"duration": 1.0})) == []  # queued
    refused = w.flush()
    assert [r.id for r in refused] == ["t17"]
    assert sink.count() == 28 and "t17" not in sink.known()
    w.close()
    again = FaissSink(path=str(tmp_path))
    again.open("c", space)
    assert again.count() == 28
    again.close()
