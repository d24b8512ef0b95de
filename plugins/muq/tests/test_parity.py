"""Parity with the upstream ``muq`` package on identical weights: the fixtures hold upstream's
outputs (made in a reference environment by fixtures/make_fixtures.py) for the tiny MuQ and
MuQ-MuLan checkpoints committed beside them; here the plugin loads those checkpoints by repo
id from an offline cache and must reproduce every output within 1e-4."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from musicembed_muq import MulanEncoder, MulanProjector, MuQEncoder
from muq_signals import checksum, tone_mix

from musicembed_core.hub import ModelLoadError

FIXTURES = Path(__file__).resolve().parent / "fixtures"

ATOL = 1e-4


def _same_signals(waves, recorded):
    for w, (s, ss) in zip(waves, recorded):
        assert checksum(w) == pytest.approx([s, ss], rel=1e-9, abs=1e-9)


def test_muq_all_13_hidden_states_match_upstream(offline):
    meta = offline.meta["muq_waves"]
    waves = np.stack([tone_mix(meta["seconds"], s) for s in meta["seeds"]])
    _same_signals(waves, meta["checksum"])
    enc = MuQEncoder()
    out = enc.encode(torch.from_numpy(waves))
    want = offline.expected["muq.hidden_states"]
    assert out.shape == want.shape == (13, 2, 30, 16)
    for layer in range(13):
        torch.testing.assert_close(out[layer], want[layer], atol=ATOL, rtol=0, msg=f"layer {layer}")


def test_front_end_matches_upstream_torchaudio_mel(offline):
    """The plain-torch mel (HTK, no norm, reflect, power 2, dB, last frame dropped, stat
    normalised) equals upstream's torchaudio result on the same audio."""
    meta = offline.meta["muq_waves"]
    wave = torch.from_numpy(tone_mix(meta["seconds"], meta["seeds"][0]))[None]
    front = MuQEncoder().module().front
    got = front(wave)
    torch.testing.assert_close(got, offline.expected["muq.mel_normalized"], atol=ATOL, rtol=0)


def test_front_end_matches_librosa():
    librosa = pytest.importorskip("librosa")
    from musicembed_muq.model import MelFrontEnd

    noise = np.random.default_rng(0).standard_normal(16800).astype(np.float32)
    wave = (tone_mix(0.7, 4) + 0.05 * noise).astype(np.float32)  # energy in every band
    front = MelFrontEnd(n_mels=128, hop_length=240, mean=6.768444971712967, std=18.417922652295623)
    got = front(torch.from_numpy(wave)[None])[0].numpy()
    mel = librosa.feature.melspectrogram(y=wave.astype(np.float64), sr=24000, n_fft=2048, hop_length=240,
                                         n_mels=128, htk=True, norm=None, center=True, pad_mode="reflect",
                                         power=2.0, window="hann")
    db = 10 * np.log10(np.maximum(mel, 1e-10))[:, :-1]
    want = (db - 6.768444971712967) / 18.417922652295623
    assert got.shape == want.shape == (128, 70)
    # float32 STFT against librosa's float64: equal to 1e-4 (2e-3 dB) wherever the band is
    # within 70 dB of the loudest; far below that float32 rounding dominates both.
    loud = db > db.max() - 70
    assert loud.mean() > 0.95
    np.testing.assert_allclose(got[loud], want[loud], atol=1e-4)


def test_mulan_audio_whole_tracks_match_upstream(offline):
    meta = offline.meta["mulan_tracks"]
    tracks = [tone_mix(s, seed) for s, seed in zip(meta["seconds"], meta["seeds"])]
    _same_signals(tracks, meta["checksum"])
    enc = MulanEncoder(window_seconds=2.0)
    got = enc.embed_tracks([torch.from_numpy(t) for t in tracks])
    torch.testing.assert_close(got, offline.expected["mulan.audio"], atol=ATOL, rtol=0)
    # Upstream averages the unit clip vectors and does not re-normalise.
    assert float(got[0].norm()) < 0.999


def test_mulan_clip_vectors_through_encode_match_upstream(offline):
    """encode() of the 2 full clips equals upstream's clip vectors; the wrapped tail of a
    track shorter than a clip equals upstream's single clip too."""
    meta = offline.meta["mulan_tracks"]
    track = torch.from_numpy(tone_mix(meta["seconds"][0], meta["seeds"][0]))
    enc = MulanEncoder(window_seconds=2.0)
    clips = track[: 2 * 48000].reshape(2, 48000)
    out = enc.encode(clips)
    assert out.shape == (1, 2, 1, 64)
    torch.testing.assert_close(out[0, :, 0], offline.expected["mulan.audio_clips"][:2], atol=ATOL, rtol=0)
    short = torch.from_numpy(tone_mix(meta["seconds"][1], meta["seeds"][1]))[None]
    torch.testing.assert_close(enc.encode(short)[0, :, 0], offline.expected["mulan.audio"][1:], atol=ATOL,
                               rtol=0)


def test_mulan_text_upstream_batching_is_bit_compatible(offline):
    texts = offline.meta["texts"]
    proj = MulanProjector()
    torch.testing.assert_close(proj.embed_text(texts), offline.expected["mulan.text_batched"], atol=ATOL,
                               rtol=0)


def test_mulan_text_single_mode_matches_upstream_one_by_one(offline):
    texts = offline.meta["texts"]
    single = MulanProjector(text_batching="single").embed_text(texts)
    torch.testing.assert_close(single, offline.expected["mulan.text_single"], atol=ATOL, rtol=0)
    # The documented difference: without a padding mask, a short text batched with a long
    # one embeds differently; the longest text of the batch does not move.
    batched = MulanProjector().embed_text(texts)
    diff = (batched - single).abs().amax(dim=1)
    assert float(diff[0]) > 1e-2 and float(diff[2]) > 1e-2
    assert float(diff[1]) < 1e-5
    alone = MulanProjector().embed_text([texts[0]])
    torch.testing.assert_close(alone[0], single[0], atol=1e-6, rtol=0)


def test_training_only_keys_are_dropped_and_the_rest_loads_strictly(offline, tmp_path):
    from safetensors.torch import load_file, save_file

    state = load_file(str(FIXTURES / "muq" / "model.safetensors"))
    assert any(k.startswith("model.quantizer_") for k in state) and "model.linear.weight" in state
    enc = MuQEncoder()
    enc.load()  # loads, although the checkpoint holds the quantiser and the codebook head
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "config.json").write_text((FIXTURES / "muq" / "config.json").read_text())
    state["model.conformer.layers.0.extra.weight"] = torch.zeros(1)
    save_file(state, str(bad / "model.safetensors"))
    with pytest.raises(ModelLoadError, match="unexpected 1 tensors: conformer.layers.0.extra.weight"):
        MuQEncoder(model=str(bad)).load()


def test_legacy_weight_norm_names_load(offline, tmp_path):
    from safetensors.torch import load_file, save_file

    state = load_file(str(FIXTURES / "muq" / "model.safetensors"))
    base = "model.conformer.pos_conv_embed.conv."
    state[base + "weight_g"] = state.pop(base + "parametrizations.weight.original0")
    state[base + "weight_v"] = state.pop(base + "parametrizations.weight.original1")
    state.pop("model.conformer.embed_positions.inv_freq")
    folder = tmp_path / "legacy"
    folder.mkdir()
    (folder / "config.json").write_text((FIXTURES / "muq" / "config.json").read_text())
    save_file(state, str(folder / "model.safetensors"))
    wave = torch.from_numpy(tone_mix(1.2, 0))[None]
    torch.testing.assert_close(MuQEncoder(model=str(folder)).encode(wave), MuQEncoder().encode(wave))
