"""The conformance kit's end-to-end fault suite on the built-in HDF5 exporter."""

from __future__ import annotations

from musicembed_core.builtins.hdf5 import read_hdf5
from musicembed_core.testing import RunFaultSuite


class TestHdf5UnderFaults(RunFaultSuite):
    close_target = "musicembed_core.builtins.hdf5:Hdf5Exporter.close"

    def stored_ids(self, output_dir):
        return list(read_hdf5(str(output_dir / "logmel.h5"))["ids"])
