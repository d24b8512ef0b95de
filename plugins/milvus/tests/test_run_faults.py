"""The conformance kit's end-to-end fault suite on the Milvus sink (Milvus Lite file):
kill -9 at random moments, a signal during its final write, a poisoned track."""

from __future__ import annotations

from pymilvus import MilvusClient

from musicembed_core.testing import RunFaultSuite


class TestMilvusUnderFaults(RunFaultSuite):
    gin_params = ("run.sinks = [@sinks.milvus()]", "sinks.milvus.uri = '{output_dir}/musicembed.db'")
    close_target = "musicembed_milvus:MilvusSink.close"
    kills = 2  # each Milvus Lite start costs seconds

    def stored_ids(self, output_dir):
        client = MilvusClient(str(output_dir / "musicembed.db"))
        try:
            client.load_collection("logmel")
            rows = client.query("logmel", filter='id != ""', output_fields=["id"], limit=16384)
            return [r["id"] for r in rows]
        finally:
            client.close()
