"""encoders.clap_musicgen and projectors.clap_musicgen pass the core's conformance suites
(tiny checkpoint, offline)."""

from __future__ import annotations

import pytest
from musicembed_clap_musicgen import ClapMusicgenEncoder, ClapMusicgenProjector

from musicembed_core.testing import EncoderSuite, ProjectorSuite


class TestClapMusicgen(EncoderSuite):
    """The tiny checkpoint as a local folder (the parity tests load it by repo id); 2 s
    windows keep the tiny model fast."""

    clip_seconds = 1.0
    # min_samples (a third of the window), around it, and up to the longest chunk sent.
    extra_lengths = (21334, 21335, 63999)
    signature_changes = {"model": "yuhuacheng/clap-musicgen", "revision": "v2", "hop_seconds": 1.5,
                         "dtype": "bfloat16"}

    @pytest.fixture
    def encoder(self, tiny, offline):
        return ClapMusicgenEncoder(model=str(tiny.main), window_seconds=2.0)


class TestClapMusicgenProjector(ProjectorSuite):
    """The text tower (tiny checkpoint and tokenizer by repo id, offline) against the space
    runs/clap_musicgen.gin builds."""

    @pytest.fixture
    def projector(self, offline):
        return ClapMusicgenProjector()

    @pytest.fixture
    def space(self, offline):
        return self.run_space("runs/clap_musicgen.gin")
