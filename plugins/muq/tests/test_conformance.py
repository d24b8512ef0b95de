"""encoders.muq and encoders.mulan pass the core's encoder conformance suite (tiny
checkpoints by repo id, offline cache): shapes, frame counts from the geometry, batch vs
alone, determinism, a clip shorter than the window through the real pipeline equal to the
whole clip, and every constructor argument in the embedding-space signature."""

from __future__ import annotations

import pytest
from musicembed_muq import MulanEncoder, MuQEncoder

from musicembed_core.testing import EncoderSuite


class TestMuQEncoder(EncoderSuite):
    clip_seconds = 1.0
    extra_lengths = (2400, 2400 + 959, 24000 * 2 - 1)  # from min_seconds (0.1 s) up
    signature_changes = {"model": "musicembed-test/tiny-MuQ", "dtype": "bfloat16", "hop_seconds": 1.0}
    # The tiny cache holds one commit per repo: another revision cannot be resolved here.
    signature_unchecked = ("revision",)

    @pytest.fixture
    def encoder(self, offline):
        return MuQEncoder(window_seconds=2.0)


class TestMulanEncoder(EncoderSuite):
    clip_seconds = 1.5
    batch_size = 2
    signature_changes = {"model": "musicembed-test/other-MuLan", "dtype": "bfloat16", "hop_seconds": 1.5,
                         "muq_config": "musicembed-test/tiny-MuQ"}
    signature_unchecked = ("revision",)

    @pytest.fixture
    def encoder(self, offline):
        return MulanEncoder(window_seconds=2.0)
