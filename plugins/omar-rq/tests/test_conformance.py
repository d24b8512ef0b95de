"""encoders.omar_rq passes the core's encoder conformance suite for both input families
(tiny checkpoints by repo id, offline cache): shapes [L, B, F, D] and frame counts from the
geometry, batch vs alone, determinism, a clip through the real pipeline, and every
constructor argument in the embedding-space signature."""

from __future__ import annotations

import pytest
from musicembed_omar_rq import OmarRQEncoder

from musicembed_core.testing import EncoderSuite


class TestMelEncoder(EncoderSuite):
    clip_seconds = 1.0
    extra_lengths = (1600, 1024 + 767, 1024 + 768, 16000 * 2 - 1)  # frames change at (k-1)*1024 + 768
    signature_changes = {"model": "mtg-upf/omar-rq-multicodebook", "dtype": "bfloat16", "hop_seconds": 1.0,
                         "layers": [0, 2]}
    # The tiny cache holds one commit per repo: another revision cannot be resolved here.
    signature_unchecked = ("revision",)

    @pytest.fixture
    def encoder(self, offline):
        return OmarRQEncoder(model="mtg-upf/omar-rq-base", window_seconds=2.0)


class TestWaveformEncoder(EncoderSuite):
    clip_seconds = 1.0
    extra_lengths = (2400, 959 * 3, 24000 * 2 - 1)
    signature_changes = {"model": "mtg-upf/omar-rq-multifeature", "dtype": "bfloat16", "hop_seconds": 1.0,
                         "layers": [1]}
    signature_unchecked = ("revision",)

    @pytest.fixture
    def encoder(self, offline):
        return OmarRQEncoder(window_seconds=2.0, layers=[0, -1])
