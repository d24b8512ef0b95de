"""encoders.mert passes the core's encoder conformance suite (tiny checkpoints, offline)."""

from __future__ import annotations

import pytest
from musicembed_mert import MertEncoder

from musicembed_core.testing import EncoderSuite


class TestMertEncoder(EncoderSuite):
    """v1 (24 kHz, normalised input) and v0 (16 kHz, raw input) through every check."""

    signature_changes = {"model": "m-a-p/MERT-v1-330M", "dtype": "bfloat16", "hop_seconds": 1.0,
                         "normalize": False}
    # The tiny cache holds one commit per repo: another revision cannot be resolved here
    # (test_encoder.py checks that the resolved commit is in the signature).
    signature_unchecked = ("revision",)

    @pytest.fixture(params=["v1_95m", "v0"])
    def encoder(self, request, tiny, offline):
        return MertEncoder(model=tiny[request.param].repo_id, window_seconds=2.0)
