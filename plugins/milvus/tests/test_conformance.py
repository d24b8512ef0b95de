"""sinks.milvus (Milvus Lite, one database file per test) passes the core's sink conformance suite."""

from __future__ import annotations

from musicembed_milvus import MilvusSink

from musicembed_core.testing import SinkSuite


class TestMilvusLite(SinkSuite):
    sink_class = MilvusSink

    def sink_params(self, root):
        return {"uri": str(root / "m.db"), "index_type": "FLAT"}
