"""encoders.omar_rq behaviour: the mel front end against librosa, eps and the frame grid of
every variant, the causal-attention prefix property (and where the conv look-ahead ends it),
two variants in one process, layer selection errors, safe loading of model.ckpt."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from musicembed_omar_rq import OmarRQEncoder
from omar_signals import chord
from tiny_repos import EPS, RATE, REPOS

from musicembed_core.hub import ModelLoadError

FIXTURES = Path(__file__).resolve().parent / "fixtures"


def test_mel_front_end_matches_librosa(offline):
    librosa = pytest.importorskip("librosa")
    enc = OmarRQEncoder(model="mtg-upf/omar-rq-base")
    s = enc.sizes()
    assert (s["sample_rate"], s["win_len"], s["hop"], s["n_mels"], s["patch"]) == (16000, 512, 256, 96, 4)
    assert (s["norm"], s["mel_scale"], s["power"]) == ("slaney", "slaney", 2.0)
    wave = chord(2.0, 16000, seed=1)
    mel = librosa.feature.melspectrogram(y=wave.astype(np.float64), sr=16000, n_fft=512, hop_length=256,
                                         win_length=512, window="hann", center=True, pad_mode="reflect",
                                         power=2.0, n_mels=96, htk=False, norm="slaney")
    want = (np.log10(1 + 10000 * mel) - s["mean"]) / s["std"]
    with torch.no_grad():
        got = enc.module().front(torch.from_numpy(wave)[None])[0].numpy()
    np.testing.assert_allclose(got, want, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("repo", sorted(REPOS))
def test_eps_and_frame_grid_per_variant(offline, repo):
    family = REPOS[repo]
    enc = OmarRQEncoder(model=repo)
    geo = enc.geometry()
    assert (geo.sample_rate, geo.frame_rate, enc.signature()["eps"]) == (RATE[family], EPS[family], EPS[family])
    # The 30 s window is rounded up to whole frames so consecutive windows keep t = i / eps.
    frames = geo.window_samples / geo.frame_hop
    assert frames == int(frames) and geo.frames_for(geo.window_samples) == int(frames)
    assert {"mel": 469, "wave25": 750, "wave1875": 563}[family] == int(frames)
    assert enc.frame_times(3).tolist() == [0.0, 1 / EPS[family], 2 / EPS[family]]
    x = torch.from_numpy(chord(1.3, RATE[family], 0))[None]
    assert enc.encode(x).shape == (1, 1, geo.frames_for(x.shape[-1]), 16)


@pytest.mark.parametrize("repo", ["mtg-upf/omar-rq-base", "mtg-upf/omar-rq-multifeature-25hz"])
def test_causal_prefix_exact_up_to_the_conv_look_ahead(offline, repo):
    """Attention is causal, but each block's depthwise conv (kernel 31) sees 15 frames ahead:
    encoding a prefix gives the whole input's frames exactly up to 15 x depth (+1 for the
    STFT edge) frames before the prefix's end, and different ones after that."""
    enc = OmarRQEncoder(model=repo, layers=[0, 1, 2])
    rate = enc.geometry().sample_rate
    whole = torch.from_numpy(chord(8.0, rate, 2))[None]
    prefix = whole[:, : int(5.0 * rate)]
    a, b = enc.encode(whole), enc.encode(prefix)
    n = b.shape[2]
    exact = n - 15 * 3 - 1
    torch.testing.assert_close(b[:, :, :exact], a[:, :, :exact], atol=1e-5, rtol=0)
    assert (b[2, :, -5:] - a[2, :, n - 5:n]).abs().max() > 1e-3


def test_two_variants_in_one_process_equal_each_alone(offline):
    mel_x = torch.from_numpy(chord(2.0, 16000, 3))[None]
    wav_x = torch.from_numpy(chord(2.0, 24000, 3))[None]
    both = OmarRQEncoder(model="mtg-upf/omar-rq-base"), OmarRQEncoder(model="mtg-upf/omar-rq-multifeature")
    together = [both[0].encode(mel_x), both[1].encode(wav_x), both[0].encode(mel_x)]
    alone_mel = OmarRQEncoder(model="mtg-upf/omar-rq-base").encode(mel_x)
    alone_wav = OmarRQEncoder(model="mtg-upf/omar-rq-multifeature").encode(wav_x)
    assert torch.equal(together[0], alone_mel) and torch.equal(together[2], alone_mel)
    assert torch.equal(together[1], alone_wav)


@pytest.mark.parametrize("layers", [[3], [-4], [], ["6"], [True]])
def test_bad_layers_are_named(offline, layers):
    with pytest.raises(ModelLoadError, match="layers"):
        OmarRQEncoder(model="mtg-upf/omar-rq-base", layers=layers).geometry()


def test_layers_as_upstream_set(offline):
    enc = OmarRQEncoder(model="mtg-upf/omar-rq-base", layers=[2, 0, -1])
    assert enc.block_indices() == [0, 2] and enc.geometry().num_layers == 2


def test_model_ckpt_is_loaded_weights_only(offline, tmp_path):
    folder = tmp_path / "ckpt"
    shutil.copytree(FIXTURES / "mel", folder)
    state = torch.load(folder / "model.ckpt", weights_only=True)
    state["extra"] = np.random.default_rng(0)  # a global no tensor file needs
    torch.save(state, folder / "model.ckpt")
    with pytest.raises(ModelLoadError, match="refused to load"):
        OmarRQEncoder(model=str(folder)).load()


def test_config_without_conformer_is_named(offline, tmp_path):
    folder = tmp_path / "ckpt"
    shutil.copytree(FIXTURES / "wave25", folder)
    text = (folder / "config.gin").read_text().replace("nets.conformer.Conformer.depth = 3\n", "")
    (folder / "config.gin").write_text(text)
    with pytest.raises(ModelLoadError, match="Conformer.depth"):
        OmarRQEncoder(model=str(folder)).geometry()
