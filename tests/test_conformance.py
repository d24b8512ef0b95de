"""The built-in components pass the conformance suites plugin authors use
(musicembed_core.testing: EncoderSuite, ExporterSuite)."""

from __future__ import annotations

import pytest

from musicembed_core.builtins.hdf5 import Hdf5Exporter, read_hdf5
from musicembed_core.builtins.logmel import LogMelEncoder
from musicembed_core.builtins.safetensors_export import SafetensorsExporter, read_safetensors
from musicembed_core.testing import EncoderSuite, ExporterSuite


class TestLogMelEncoder(EncoderSuite):
    signature_changes = {"hop_seconds": 1.0}

    @pytest.fixture
    def encoder(self):
        return LogMelEncoder(window_seconds=2.0)


def _columns(data: dict) -> dict:
    return {i: (h, v) for i, h, v in zip(data["ids"], data["content_hash"], data["vectors"])}


class TestHdf5Exporter(ExporterSuite):
    exporter_class = Hdf5Exporter
    exporter_params = {"checkpoint_every": 5, "chunk_rows": 4}
    output_name = "out.h5"

    def read_output(self, path):
        return _columns(read_hdf5(path))


class TestSafetensorsExporter(ExporterSuite):
    exporter_class = SafetensorsExporter
    exporter_params = {"shard_size": 5}
    output_name = "out.safetensors"

    def read_output(self, path):
        return _columns(read_safetensors(path))


class TestSafetensorsExporterStoringFrames(ExporterSuite):
    """The contract again with frames in the shards (and a disk that fills up with them)."""

    exporter_class = SafetensorsExporter
    exporter_params = {"shard_size": 5, "store_frames": True}
    output_name = "out.safetensors"
    disk_full_frames = 200

    def read_output(self, path):
        return _columns(read_safetensors(path))
