"""Unit tests of the example plugin's components (the install test is in tests/)."""

import math

import pytest
import torch

from musicembed_core.testing import EncoderSuite
from musicembed_example import ChromaEncoder, PercentileEnricher


class TestChromaEncoder(EncoderSuite):
    """The core's encoder conformance suite (shapes, frames, batching, pipeline, signature)."""

    @pytest.fixture
    def encoder(self):
        return ChromaEncoder()


def test_chroma_finds_the_pitch_class_of_a_tone():
    enc = ChromaEncoder()
    t = torch.arange(enc.sample_rate * 2) / enc.sample_rate
    wave = (0.5 * torch.sin(2 * math.pi * 440.0 * t)).unsqueeze(0)  # A4
    out = enc.encode(wave)
    assert out.shape == (1, 1, 2 * enc.sample_rate // enc.hop_length, 12)
    assert int(out[0, 0].mean(0).argmax()) == 9  # A is pitch class 9 (C = 0)


def test_percentile_matches_torch_quantile():
    x = torch.randn(2, 50, 12)
    out = PercentileEnricher(q=75).enrich(x)
    assert torch.allclose(out, torch.quantile(x, 0.75, dim=1))
