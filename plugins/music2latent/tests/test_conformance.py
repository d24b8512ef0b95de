"""encoders.music2latent passes the core's encoder conformance suite (tiny checkpoint, offline)."""

from __future__ import annotations

import pytest
from musicembed_music2latent import Music2LatentEncoder

from musicembed_core.testing import EncoderSuite


class TestLatents(EncoderSuite):
    """variant='latents' at 44.1 kHz, through every check."""

    clip_seconds = 1.0
    extra_lengths = (5631, 5632, 9727, 9728)  # either side of the first and second frame
    atol = 1e-4  # latents are the tanh output / 0.06: values up to ~17
    signature_changes = {"variant": "features", "sample_rate": 48000, "hop_seconds": 1.0,
                         "dtype": "bfloat16", "model": "SonyCSLParis/music2latent"}
    # One commit per revision in the tiny cache; test_music2latent checks the commit.
    signature_unchecked = ("revision",)

    @pytest.fixture
    def encoder(self, tiny, offline):
        return Music2LatentEncoder(model=str(tiny.main), window_seconds=2.0)


class TestFeatures48k(TestLatents):
    """variant='features' at 48 kHz."""

    signature_changes = {**TestLatents.signature_changes, "variant": "latents", "sample_rate": 44100}

    @pytest.fixture
    def encoder(self, tiny, offline):
        return Music2LatentEncoder(model=str(tiny.main), variant="features", sample_rate=48000,
                                   window_seconds=2.0)
