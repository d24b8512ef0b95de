"""encoders.music2vec passes the core's encoder conformance suite (tiny checkpoint, offline)."""

from __future__ import annotations

import pytest
from musicembed_music2vec import Music2VecEncoder

from musicembed_core.testing import EncoderSuite


class TestMusic2VecEncoder(EncoderSuite):
    # "v2" is a second commit of the same repo in the tiny cache: other weights, other space.
    signature_changes = {"revision": "v2", "dtype": "bfloat16", "hop_seconds": 1.0}
    # The tiny cache holds one repo; the revision above already checks another checkpoint.
    signature_unchecked = ("model",)

    @pytest.fixture
    def encoder(self, offline):
        return Music2VecEncoder(window_seconds=2.0)
