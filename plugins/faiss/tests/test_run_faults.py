"""The conformance kit's end-to-end fault suite on the FAISS sink: kill -9 at random moments,
a signal during its final write, a poisoned track."""

from __future__ import annotations

from musicembed_faiss import FaissSink

from musicembed_core.testing import RunFaultSuite


class TestFaissUnderFaults(RunFaultSuite):
    gin_params = ("run.sinks = [@sinks.faiss()]",)
    close_target = "musicembed_faiss:FaissSink.close"

    def stored_ids(self, output_dir):
        sink = FaissSink(path=str(output_dir / "faiss"))
        sink.open("logmel", None, readonly=True)
        try:
            ids = list(sink.known())
            assert sink.count() == len(ids), "the index and its id map disagree"
            return ids
        finally:
            sink.close()
