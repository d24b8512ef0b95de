"""sinks.faiss passes the core's sink conformance suite, for a flat and a graph index."""

from __future__ import annotations

from musicembed_faiss import FaissSink

from musicembed_core.testing import SinkSuite


class TestFaissFlat(SinkSuite):
    sink_class = FaissSink

    def sink_params(self, root):
        return {"path": str(root), "index": "Flat", "checkpoint_mb": 0.02}


class TestFaissHnsw(TestFaissFlat):
    def sink_params(self, root):
        return {"path": str(root), "index": "HNSW32", "checkpoint_mb": 0.02}


class TestFaissIvf(TestFaissFlat):
    """Trained once a collection reaches min_train (the suite's larger cases do), exact before."""

    def sink_params(self, root):
        return {"path": str(root), "index": "IVF8,Flat", "min_train": 24, "nprobe": 8,
                "checkpoint_mb": 0.02}
