"""encoders.mert inside the real pipeline: chunking, stitching and the enricher chain
(a clip shorter than the window is the conformance suite's, in test_conformance.py)."""

from __future__ import annotations

import numpy as np
import torch
from musicembed_mert import MertEncoder

from musicembed_core import Geometry
from musicembed_core import audio
from musicembed_core.builtins import enrichers as E
from musicembed_core.chain import EnricherChain
from musicembed_core.examples import synth_clip, write_audio
from musicembed_core.pipeline import PreparedEmbedding, embed_paths
from musicembed_core.runconfig import EmbeddingSpec


def mean_iqr_delta() -> list:
    """The chain of gin/enrichers/mean_iqr_delta.gin (MEAN_IQR_DELTA)."""
    return [E.LayersEnricher("all"), E.StatsEnricher(stats=["mean", "iqr", "delta_mean"]),
            E.FlattenEnricher(), E.L2NormalizeEnricher()]


def prepared(encoder, chain) -> PreparedEmbedding:
    prep = PreparedEmbedding.build(EmbeddingSpec("mert", encoder, chain))
    prep.keep_frames = True
    return prep


def test_long_track_is_encoded_window_by_window(tiny, offline, tmp_path):
    """12 s at a 5 s window: two full windows (one batch) and the 2 s tail alone, stitched in order."""
    t = tiny["v1_330m"]
    path = tmp_path / "long.wav"
    write_audio(path, synth_clip(12.0, t.sample_rate, seed=5), t.sample_rate)
    enc = MertEncoder(model=t.repo_id)
    [res] = embed_paths([prepared(enc, mean_iqr_delta())], [path])
    assert res.status == "ok", res.error
    wave = torch.from_numpy(audio.load_audio(path, t.sample_rate))
    n = 5 * t.sample_rate
    pieces = [wave[i:i + n] for i in range(0, wave.numel(), n)]
    assert [p.numel() for p in pieces] == [n, n, wave.numel() - 2 * n]
    ref = torch.cat([t.reference_states(p[None])[:, 0] for p in pieces], dim=1)
    assert torch.allclose(torch.from_numpy(res.frames[0]), ref, atol=1e-5)


def test_tiny_330m_architecture_gives_layers_x_dim_x_3_through_the_chain(tiny, offline, tmp_path):
    t = tiny["v1_330m"]
    path = tmp_path / "clip.wav"
    write_audio(path, synth_clip(2.5, 44100, seed=6, channels=2), 44100)  # resampled to 24 kHz
    enc = MertEncoder(model=t.repo_id)
    prep = prepared(enc, mean_iqr_delta())
    [res] = embed_paths([prep], [path])
    assert res.status == "ok", res.error
    assert res.vectors[0].shape == (t.layers * t.dim * 3,) == (prep.space.dim,)
    assert np.isclose(np.linalg.norm(res.vectors[0]), 1.0, atol=1e-5)


def test_released_330m_geometry_gives_76800_dims(tmp_path, monkeypatch):
    """No weights needed (the released config.json alone): 25 layers x 1024 through
    mean + IQR + delta."""
    from mert_checkpoints import released_configs_cache

    released_configs_cache(tmp_path, monkeypatch)
    enc = MertEncoder(model="m-a-p/MERT-v1-330M")
    assert EnricherChain(mean_iqr_delta()).output_dim(enc.geometry()) == 76_800
    assert EnricherChain(mean_iqr_delta()).output_dim(Geometry(16000, 50.0, 25, 1024, 10.0)) == 76_800
