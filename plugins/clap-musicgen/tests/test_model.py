"""The towers against a reference written straight from transformers modules, loading
(repo id, offline cache, strict keys, legacy names), geometry, and the projector's target."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from clap_tiny import DIM, REPO_ID, Reference, aligned_state, read_state, write_checkpoint
from musicembed_clap_musicgen import ClapMusicgenEncoder, ClapMusicgenProjector

from musicembed_core import check_projector
from musicembed_core.errors import SpaceMismatchError
from musicembed_core.hub import ModelLoadError
from musicembed_core.testing import save_to_hub_cache

TEXTS = ["positive jazzy lofi", "dark metal", "calm piano with rain and a very long description"]


def clips(n: int, seconds: float, seed: int = 0) -> torch.Tensor:
    from musicembed_core.examples import synth_clip

    return torch.from_numpy(np.stack([synth_clip(seconds, 32000, seed=seed + i) for i in range(n)])
                            .astype(np.float32))


@pytest.fixture(scope="module")
def encoder(tiny):
    return ClapMusicgenEncoder(model=str(tiny.main), window_seconds=2.0)


def test_audio_matches_the_reference_by_repo_id(offline, reference):
    enc = ClapMusicgenEncoder(window_seconds=2.0)  # the default repo id, from the offline cache
    assert enc.model == REPO_ID and enc.signature()["weights"] == offline.sha_main
    wave = clips(3, 1.7)
    out = enc.encode(wave)
    assert out.shape == (1, 3, 1, DIM)
    want = reference.audio(wave)
    assert torch.allclose(out[0, :, 0], want, atol=1e-5), float((out[0, :, 0] - want).abs().max())
    assert torch.allclose(out.norm(dim=-1), torch.ones(1, 3, 1), atol=1e-5)
    assert len({tuple(v.round(decimals=4).tolist()) for v in out[0, :, 0]}) == 3  # inputs matter


def test_text_matches_the_reference_by_repo_id(offline, reference):
    proj = ClapMusicgenProjector()
    assert proj.dim == DIM
    out = proj.embed_text(TEXTS)
    want = reference.text(TEXTS)
    assert out.shape == (3, DIM) and out.dtype == torch.float32
    assert torch.allclose(out, want, atol=1e-5), float((out - want).abs().max())
    assert torch.allclose(out.norm(dim=-1), torch.ones(3), atol=1e-5)
    # batching and padding change nothing: each text alone gives the same vector
    alone = torch.cat([proj.embed_text([t]) for t in TEXTS])
    assert torch.allclose(alone, out, atol=1e-5)
    assert proj.embed_text([]).shape == (0, DIM)


def test_legacy_weight_norm_names_load(offline, reference):
    enc = ClapMusicgenEncoder(revision="legacy", window_seconds=2.0)
    wave = clips(1, 1.0, seed=4)
    assert torch.allclose(enc.encode(wave)[0, :, 0], reference.audio(wave), atol=1e-5)
    assert enc.signature()["weights"] == offline.sha_legacy


def test_missing_and_stray_tensors_are_named(tiny, tmp_path):
    state = read_state(tiny.main)
    cut = dict(state)
    del cut["audio_encoder.transformer.layers.1.fc2.weight"]
    write_checkpoint(tmp_path / "cut", cut, tiny.vocab_size)
    with pytest.raises(ModelLoadError, match=r"missing 1 tensors: transformer\.layers\.1\.fc2\.weight"):
        ClapMusicgenEncoder(model=str(tmp_path / "cut"), window_seconds=2.0).load()
    stray = {**state, "lm_heads.0.weight": torch.zeros(2, 2)}
    write_checkpoint(tmp_path / "stray", stray, tiny.vocab_size)
    with pytest.raises(ModelLoadError, match=r"not CLAP-MusicGen's.*lm_heads\.0\.weight"):
        ClapMusicgenEncoder(model=str(tmp_path / "stray"), window_seconds=2.0).load()
    cfg = json.loads((tiny.main / "config.json").read_text())
    cfg["audio_encoder_config"]["musicgen_decoder_config"]["num_hidden_layers"] = 3
    write_checkpoint(tmp_path / "deeper", state, tiny.vocab_size)
    (tmp_path / "deeper" / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ModelLoadError, match=r"missing \d+ tensors: transformer\.layers\.2\."):
        ClapMusicgenEncoder(model=str(tmp_path / "deeper"), window_seconds=2.0).load()


def test_not_a_clap_checkpoint(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "roberta"}))
    (tmp_path / "model.safetensors").write_bytes(b"")
    with pytest.raises(ModelLoadError, match="not a CLAP-MusicGen checkpoint"):
        ClapMusicgenEncoder(model=str(tmp_path)).geometry()


@pytest.mark.parametrize("window", [15.0, 2.0, 7.3])
def test_one_frame_for_every_chunk_the_pipeline_sends(tiny, window):
    geo = ClapMusicgenEncoder(model=str(tiny.main), window_seconds=window).geometry()
    assert (geo.sample_rate, geo.num_layers, geo.dim) == (32000, 1, DIM)
    assert geo.min_seconds == pytest.approx(window / 3)
    assert geo.frames_for(geo.min_samples - 1) == 0
    for n in (geo.min_samples, geo.min_samples + 1, geo.window_samples // 2, geo.window_samples - 1,
              geo.window_samples):
        assert geo.frames_for(n) == 1, n
    assert geo.overlap_frames == 0


def test_default_window_is_the_training_length(tiny):
    geo = ClapMusicgenEncoder(model=str(tiny.main)).geometry()
    assert geo.window_seconds == 15.0 and geo.window_samples == 480000
    assert geo.min_seconds == pytest.approx(5.0) and geo.receptive_field == geo.min_samples


def test_overlapping_more_than_half_a_window_is_refused(tiny):
    from musicembed_core import ConfigError

    ok = ClapMusicgenEncoder(model=str(tiny.main), window_seconds=2.0, hop_seconds=1.0).geometry()
    assert ok.hop_samples == 32000 and ok.overlap_frames == 0
    with pytest.raises(ConfigError, match="hop_seconds >= 1.0"):
        ClapMusicgenEncoder(model=str(tiny.main), window_seconds=2.0, hop_seconds=0.5).geometry()


def _space(encoder, chain_names):
    from musicembed_core.builtins.enrichers import FlattenEnricher, L2NormalizeEnricher, LayersEnricher, MeanEnricher, StatsEnricher
    from musicembed_core.pipeline import PreparedEmbedding
    from musicembed_core.runconfig import EmbeddingSpec

    steps = {"mean": [LayersEnricher("all"), MeanEnricher(), FlattenEnricher(), L2NormalizeEnricher()],
             "stats": [LayersEnricher("all"), StatsEnricher(), FlattenEnricher(), L2NormalizeEnricher()]}
    return PreparedEmbedding.build(EmbeddingSpec("clap", encoder, steps[chain_names])).space


def test_projector_target_is_the_encoders_space(offline):
    proj = ClapMusicgenProjector()
    target = proj.target()
    assert target["encoder"] == {"name": "clap_musicgen", "model": REPO_ID, "weights": offline.sha_main}
    check_projector(proj, _space(ClapMusicgenEncoder(), "mean"))
    check_projector(proj, _space(ClapMusicgenEncoder(window_seconds=10.0), "mean"))  # any window
    with pytest.raises(SpaceMismatchError, match=r"encoder\.weights: the projector's is '[0-9a-f]+', the space's is"):
        check_projector(proj, _space(ClapMusicgenEncoder(revision="v2"), "mean"))
    with pytest.raises(SpaceMismatchError, match=r"enrichers: the projector's has 4 steps.*'stats'|enrichers\.1\.name"):
        check_projector(proj, _space(ClapMusicgenEncoder(), "stats"))


def test_a_text_query_retrieves_the_track_it_was_made_to_match(offline, tmp_path):
    """Four clips in a tiny index; the text head is solved so that each of two prompts points
    at one clip; the plugin's projector then ranks that clip first, by cosine, for each."""
    enc = ClapMusicgenEncoder(window_seconds=2.0)
    index = enc.encode(clips(4, 1.5, seed=10))[0, :, 0].numpy()
    ref = Reference(offline.main, offline.tokenizer)
    prompts, wanted = ["calm piano with rain", "dark metal"], [2, 0]
    aligned = aligned_state(ref, prompts, torch.from_numpy(index[wanted]))
    folder = tmp_path / "aligned"
    write_checkpoint(folder, aligned, offline.vocab_size)
    sha = save_to_hub_cache(offline.cache, REPO_ID, folder, revision="aligned")
    proj = ClapMusicgenProjector(revision="aligned")
    assert proj.target()["encoder"]["weights"] == sha
    q = proj.embed_text(prompts).numpy()
    assert np.allclose(np.linalg.norm(q, axis=1), 1.0, atol=1e-5)
    scores = q @ index.T
    assert list(scores.argmax(axis=1)) == wanted
    assert scores.max(axis=1).min() > 0.99
