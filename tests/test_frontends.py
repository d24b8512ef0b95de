"""The torch STFT/mel front end against librosa, and under TorchScript."""

from __future__ import annotations

import numpy as np
import pytest
import torch

librosa = pytest.importorskip("librosa")

from musicembed_core.examples import synth_clip  # noqa: E402
from musicembed_core.frontends import (  # noqa: E402
    LogMelStack,
    MelSpectrogram,
    amplitude_to_db,
    hz_to_mel,
    mel_filterbank,
    mel_to_hz,
    power_spectrogram,
)


@pytest.fixture(scope="module")
def waves() -> np.ndarray:
    a = synth_clip(2.0, 16000, seed=1)
    b = np.random.default_rng(0).standard_normal(len(a)).astype(np.float32) * 0.1
    return np.stack([a, b])


@pytest.mark.parametrize("htk", [False, True])
def test_mel_scale_matches_librosa(htk):
    f = np.array([0.0, 50.0, 440.0, 999.0, 1000.0, 1001.0, 4000.0, 11025.0, 22050.0])
    np.testing.assert_allclose(hz_to_mel(f, htk=htk), librosa.hz_to_mel(f, htk=htk), rtol=1e-12)
    m = librosa.hz_to_mel(f, htk=htk)
    np.testing.assert_allclose(mel_to_hz(m, htk=htk), librosa.mel_to_hz(m, htk=htk), rtol=1e-12)
    assert hz_to_mel(440.0, htk=htk) == pytest.approx(float(librosa.hz_to_mel(440.0, htk=htk)))
    t = hz_to_mel(torch.tensor(f), htk=htk)
    assert isinstance(t, torch.Tensor)
    np.testing.assert_allclose(t.numpy(), librosa.hz_to_mel(f, htk=htk), rtol=1e-12)
    np.testing.assert_allclose(mel_to_hz(t, htk=htk).numpy(), f, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize(
    "sr,n_fft,n_mels,fmin,fmax,htk,norm",
    [
        (16000, 1024, 96, 0.0, 8000.0, False, "slaney"),
        (22050, 2048, 128, 0.0, None, False, "slaney"),
        (44100, 512, 40, 50.0, 14000.0, True, None),
        (16000, 400, 80, 0.0, None, True, "slaney"),
        (48000, 1024, 64, 20.0, None, False, 2.0),
        (32000, 1024, 64, 0.0, 16000.0, False, None),
    ],
)
def test_mel_filterbank_matches_librosa(sr, n_fft, n_mels, fmin, fmax, htk, norm):
    ours = mel_filterbank(sr, n_fft, n_mels, fmin, fmax, htk=htk, norm=norm)
    ref = librosa.filters.mel(sr=sr, n_fft=n_fft, n_mels=n_mels, fmin=fmin, fmax=fmax, htk=htk, norm=norm)
    assert ours.dtype == torch.float32 and tuple(ours.shape) == (n_mels, n_fft // 2 + 1)
    np.testing.assert_allclose(ours.numpy(), ref, atol=1e-6 * max(1.0, float(np.abs(ref).max())), rtol=1e-5)


@pytest.mark.parametrize("center", [True, False])
@pytest.mark.parametrize("pad_mode,win_length", [("constant", None), ("reflect", 800), ("constant", 512)])
def test_power_spectrogram_matches_librosa(waves, center, pad_mode, win_length):
    ours = power_spectrogram(
        torch.from_numpy(waves), n_fft=1024, hop_length=320, win_length=win_length, center=center, pad_mode=pad_mode
    )
    for i, w in enumerate(waves):
        ref = np.abs(librosa.stft(w, n_fft=1024, hop_length=320, win_length=win_length, center=center,
                                  pad_mode=pad_mode)) ** 2  # fmt: skip
        assert tuple(ours[i].shape) == ref.shape
        np.testing.assert_allclose(ours[i].numpy(), ref, atol=1e-6 * ref.max(), rtol=1e-3)
    # magnitude (power=1) and unbatched input
    mag = power_spectrogram(torch.from_numpy(waves[0]), 512, 128, center=center, power=1.0)
    ref = np.abs(librosa.stft(waves[0], n_fft=512, hop_length=128, center=center))
    np.testing.assert_allclose(mag.numpy(), ref, atol=1e-5 * ref.max(), rtol=1e-3)


@pytest.mark.parametrize(
    "sr,n_fft,hop,n_mels,fmax,htk",
    [(16000, 1024, 320, 96, 8000.0, False), (22050, 2048, 512, 128, None, False), (16000, 512, 160, 64, None, True)],
)
def test_melspectrogram_and_db_match_librosa(sr, n_fft, hop, n_mels, fmax, htk):
    x = synth_clip(2.0, sr, seed=4)
    mod = MelSpectrogram(sample_rate=sr, n_fft=n_fft, hop_length=hop, n_mels=n_mels, f_max=fmax, htk=htk)
    mel = mod(torch.from_numpy(x)[None])[0]
    ref = librosa.feature.melspectrogram(y=x, sr=sr, n_fft=n_fft, hop_length=hop, n_mels=n_mels, fmax=fmax, htk=htk)
    assert tuple(mel.shape) == ref.shape
    np.testing.assert_allclose(mel.numpy(), ref, atol=1e-6 * ref.max(), rtol=1e-3)
    ours_db, ref_db = amplitude_to_db(mel).numpy(), librosa.power_to_db(ref)
    np.testing.assert_allclose(ours_db, ref_db, atol=1e-2)  # float32 FFT noise in bins ~80 dB down
    strong = ref_db > ref_db.max() - 60.0
    np.testing.assert_allclose(ours_db[strong], ref_db[strong], atol=1e-3)
    np.testing.assert_allclose(
        amplitude_to_db(mel, ref=10.0, amin=1e-6, top_db=None).numpy(),
        librosa.power_to_db(ref, ref=10.0, amin=1e-6, top_db=None),
        atol=1e-2,
    )


def test_top_db_is_per_batch_item():
    loud = torch.rand(1, 8, 20) * 100 + 1.0
    quiet = torch.rand(1, 8, 20) * 1e-6
    both = amplitude_to_db(torch.cat([loud, quiet]))
    torch.testing.assert_close(both[1:], amplitude_to_db(quiet))
    torch.testing.assert_close(both[:1], amplitude_to_db(loud))
    assert float(amplitude_to_db(quiet).min()) > float(amplitude_to_db(quiet).max()) - 80.0 - 1e-4


@pytest.mark.filterwarnings("ignore:.*torch.jit.script.*is deprecated:DeprecationWarning")
def test_melspectrogram_torchscript_identical(waves):
    mod = MelSpectrogram(sample_rate=16000, n_fft=1024, hop_length=320, n_mels=96, f_max=8000.0).eval()
    scripted = torch.jit.script(mod)
    x = torch.from_numpy(waves)
    torch.testing.assert_close(scripted(x), mod(x), rtol=0, atol=0)
    torch.testing.assert_close(scripted(x[0]), mod(x[0]), rtol=0, atol=0)
    db = torch.jit.script(amplitude_to_db)
    torch.testing.assert_close(db(mod(x), 1.0, 1e-10, 80.0, 10.0), amplitude_to_db(mod(x)), rtol=0, atol=0)
    stack = LogMelStack()
    torch.testing.assert_close(torch.jit.script(stack)(x), stack(x), rtol=0, atol=0)


def test_melspectrogram_buffers_follow_state_dict():
    mod = MelSpectrogram(sample_rate=16000, n_fft=512, hop_length=160, n_mels=40)
    sd = mod.state_dict()
    assert set(sd) == {"window", "mel_fb"} and tuple(sd["mel_fb"].shape) == (40, 257)
    assert mod(torch.zeros(2, 1600)).shape == (2, 40, 11)
