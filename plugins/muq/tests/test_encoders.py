"""Geometry and precision of the two encoders: 25 frames/s and ``F = T // 960`` for MuQ, one
vector per window for MuLan, bfloat16 runs close to float32, clear errors for wrong configs."""

from __future__ import annotations

import json

import pytest
import torch
from musicembed_muq import MulanEncoder, MuQEncoder
from muq_signals import tone_mix

from musicembed_core import ConfigError
from musicembed_core.hub import ModelLoadError


def test_muq_geometry_is_25_hz_from_the_config(offline):
    geo = MuQEncoder().geometry()
    assert (geo.sample_rate, geo.frame_rate, geo.num_layers, geo.dim) == (24000, 25.0, 13, 16)
    assert geo.window_seconds == 30.0
    enc = MuQEncoder(window_seconds=2.0)
    for n in (2400, 24000, 24000 + 959, 24000 + 960):
        wave = torch.from_numpy(tone_mix(n / 24000, 0))[None]
        out = enc.encode(wave)
        assert out.shape == (13, 1, n // 960, 16) and enc.geometry().frames_for(n) == n // 960


def test_muq_runs_in_bfloat16(offline):
    wave = torch.from_numpy(tone_mix(1.2, 0))[None]
    full = MuQEncoder().encode(wave)
    half = MuQEncoder(dtype="bfloat16").encode(wave)
    assert half.dtype == torch.float32 and half.shape == full.shape and torch.isfinite(half).all()
    cos = torch.nn.functional.cosine_similarity(half.flatten(1), full.flatten(1), dim=1)
    assert float(cos.min()) > 0.98
    assert MuQEncoder(dtype="bfloat16").signature()["dtype"] == "bfloat16"


def test_mulan_runs_in_bfloat16(offline):
    wave = torch.from_numpy(tone_mix(2.0, 1))[None]
    full = MulanEncoder(window_seconds=2.0).encode(wave)[0, 0, 0]
    half = MulanEncoder(window_seconds=2.0, dtype="bfloat16").encode(wave)[0, 0, 0]
    assert float(torch.dot(full, half)) > 0.98


def test_mulan_geometry_one_vector_per_window(offline):
    enc = MulanEncoder()
    geo = enc.geometry()
    assert (geo.sample_rate, geo.num_layers, geo.dim, geo.window_seconds) == (24000, 1, 64, 10.0)
    assert geo.frames_for(geo.window_samples) == 1 and geo.frames_for(geo.min_samples) == 1
    assert enc.signature()["clip_secs"] == 2.0
    with pytest.raises(ConfigError, match="hop_seconds"):
        MulanEncoder(hop_seconds=2.0).geometry()


def test_not_a_muq_config_is_refused_naming_the_folder(offline, tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"encoder_dim": 16}))
    with pytest.raises(ModelLoadError, match=r"not a MuQ config .*melspec_2048_mean"):
        MuQEncoder(model=str(tmp_path)).geometry()


def test_mulan_names_a_missing_muq_config(offline):
    with pytest.raises(ModelLoadError, match="set muq_config"):
        MulanEncoder(muq_config="musicembed-test/missing").load()
