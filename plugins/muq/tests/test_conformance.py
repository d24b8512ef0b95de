"""encoders.muq and encoders.mulan pass the core's encoder conformance suite (tiny
checkpoints by repo id, offline cache): shapes, frame counts from the geometry, batch vs
alone, determinism, a clip shorter than the window through the real pipeline equal to the
whole clip, and every constructor argument in the embedding-space signature; projectors.mulan
passes the projector suite."""

from __future__ import annotations

import pytest
from musicembed_muq import MulanEncoder, MulanProjector, MuQEncoder

from musicembed_core.testing import EncoderSuite, ProjectorSuite


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


class TestMulanProjector(ProjectorSuite):
    """projectors.mulan (tiny checkpoint by repo id, offline) against the space runs/mulan.gin
    builds; text_batching="single" makes a text's vector independent of its batch (upstream
    batching averages over padding, see MulanProjector)."""

    @pytest.fixture
    def projector(self, offline):
        return MulanProjector(text_batching="single")

    @pytest.fixture
    def space(self, offline):
        return self.run_space("runs/mulan.gin")
