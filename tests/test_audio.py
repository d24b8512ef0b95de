"""Decoding, mono mixdown, streaming resampling and the generated example audio."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import soxr

from musicembed_core import audio
from musicembed_core.audio import (
    AUDIO_EXTENSIONS,
    AudioInfo,
    StreamResampler,
    find_audio_files,
    load_audio,
    probe,
    stream_mono,
    stream_resampled,
)
from musicembed_core.errors import AudioDecodeError
from musicembed_core.examples import make_example_set, synth_clip, write_audio

SECONDS = 4.0

# relative path -> (native rate, channels, backend)
EXPECTED = {
    "rock/a.wav": (22050, 1, "soundfile"),
    "jazz/b.flac": (44100, 2, "soundfile"),
    "c.ogg": (22050, 1, "soundfile"),
    "d.mp3": (44100, 2, "soundfile"),
    "e.m4a": (44100, 2, "pyav"),
    "f.opus": (48000, 1, "soundfile"),
    "g_48k.wav": (48000, 2, "soundfile"),
}


@pytest.fixture(scope="module")
def library(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("lib")
    paths = make_example_set(folder, seconds=SECONDS)
    assert sorted(p.relative_to(folder).as_posix() for p in paths) == sorted(EXPECTED)
    return folder


def sine(freq: float, seconds: float, rate: int, amp: float = 0.5) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    return (amp * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def peak_hz(x: np.ndarray, rate: int) -> float:
    spec = np.abs(np.fft.rfft(x * np.hanning(len(x))))
    return float(np.fft.rfftfreq(len(x), 1.0 / rate)[np.argmax(spec)])


# --------------------------------------------------------------------------- formats


@pytest.mark.parametrize("rel", sorted(EXPECTED))
def test_every_example_format_decodes(library, rel):
    rate, channels, backend = EXPECTED[rel]
    info = probe(library / rel)
    assert (info.sample_rate, info.channels, info.backend) == (rate, channels, backend)
    assert info.duration == pytest.approx(SECONDS, abs=0.05)
    x = load_audio(library / rel, 16000)
    assert x.dtype == np.float32 and x.ndim == 1
    # lossy codecs may add up to a frame of padding; everything here trims it
    assert abs(len(x) - SECONDS * 16000) <= 0.02 * 16000
    assert np.isfinite(x).all() and 0.1 < np.abs(x).max() <= 1.0


@pytest.mark.parametrize("ext", [".wav", ".flac", ".ogg", ".mp3", ".opus", ".m4a", ".aac", ".aiff"])
def test_decoded_matches_written(tmp_path, ext):
    rate = 48000 if ext == ".opus" else 44100
    x = synth_clip(2.0, rate, seed=11)
    path = tmp_path / f"clip{ext}"
    write_audio(path, x, rate)
    info, blocks = stream_mono(path)
    y = np.concatenate(list(blocks))
    assert info.sample_rate == rate
    # Raw ADTS has no edit list: the encoder's 1024 priming samples and the
    # trailing frame padding stay in. Every other container is trimmed exactly.
    lag = 1024 if ext == ".aac" else 0
    assert len(x) + lag <= len(y) <= len(x) + 2 * lag
    y = y[lag:]
    n = len(x) - 4000
    rel_err = np.abs(y[2000:n] - x[2000:n]).mean() / np.abs(x).mean()
    assert rel_err < (1e-3 if ext in (".wav", ".flac", ".aiff") else 0.15)


def test_opus_at_non_opus_rate_is_written_at_48k(tmp_path):
    write_audio(tmp_path / "x.opus", synth_clip(1.0, 44100), 44100)
    info = probe(tmp_path / "x.opus")
    assert info.sample_rate == 48000 and info.duration == pytest.approx(1.0, abs=0.01)


@pytest.mark.parametrize("ext", [".wav", ".m4a"])
def test_stereo_mixes_to_mean(tmp_path, ext):
    rate = 44100
    left, right = sine(440, 2.0, rate, 0.6), sine(1320, 2.0, rate, 0.3)
    write_audio(tmp_path / f"st{ext}", np.stack([left, right], axis=1), rate)
    y = load_audio(tmp_path / f"st{ext}", rate)
    want = (left + right) / 2
    if ext == ".wav":
        np.testing.assert_allclose(y, want, atol=1e-4)
    else:
        n = len(want) - 2000
        err = y[1000:n] - want[1000:n]
        assert np.sqrt(np.mean(err**2)) < 0.03 * np.sqrt(np.mean(want**2))
    # opposite channels cancel: catches planar/packed mix-ups
    write_audio(tmp_path / f"anti{ext}", np.stack([left, -left], axis=1), rate)
    z = load_audio(tmp_path / f"anti{ext}", rate)
    assert np.sqrt(np.mean(z**2)) < 0.01 * np.sqrt(np.mean(left**2)) + 1e-4


@pytest.mark.parametrize(
    "ext,subtype",
    [(".wav", t) for t in ("PCM_U8", "PCM_16", "PCM_24", "PCM_32", "FLOAT", "DOUBLE")]
    + [(".flac", "PCM_16"), (".flac", "PCM_24")],
)
def test_pyav_sample_formats_match_soundfile(tmp_path, ext, subtype):
    """The FFmpeg path converts every sample format (int/float, packed/planar) like libsndfile."""
    path = tmp_path / f"x{ext}"
    x = synth_clip(1.5, 44100, seed=9, channels=2)
    sf.write(path, x, 44100, subtype=subtype)
    ref = np.concatenate(list(stream_mono(path)[1]))
    info = audio._probe_pyav(path)
    assert (info.sample_rate, info.channels, info.backend) == (44100, 2, "pyav")
    got = np.concatenate(list(audio._iter_pyav(path, info, 5000)))
    np.testing.assert_allclose(got, ref, atol=1e-2 if subtype == "PCM_U8" else 1e-6)


# --------------------------------------------------------------------------- resampling


def test_48k_stereo_resamples_to_16k(tmp_path):
    rate = 48000
    x = sine(1000, 3.0, rate) + sine(3000, 3.0, rate, 0.2) + sine(11000, 3.0, rate, 0.2)
    write_audio(tmp_path / "s.wav", np.stack([x, x], axis=1), rate)
    y = load_audio(tmp_path / "s.wav", 16000)
    assert len(y) == 48000
    assert peak_hz(y, 16000) == pytest.approx(1000, abs=1.0)
    spec = np.abs(np.fft.rfft(y * np.hanning(len(y))))
    freqs = np.fft.rfftfreq(len(y), 1 / 16000)
    at_1k = spec[np.argmin(np.abs(freqs - 1000))]
    assert spec[np.argmin(np.abs(freqs - 3000))] > 0.2 * at_1k  # kept
    # 11 kHz is above the new Nyquist: filtered out, not aliased to 16 - 11 = 5 kHz
    assert spec[(freqs > 4500) & (freqs < 5500)].max() < 1e-3 * at_1k


def test_streaming_equals_whole_file_resampling(tmp_path):
    rate = 44100
    x = synth_clip(13.0, rate, seed=5)
    path = tmp_path / "long.flac"
    write_audio(path, x, rate)
    whole = sf.read(path, dtype="float32")[0]
    rates = [16000, 22050, 44100, 16000]
    info, blocks = stream_resampled(path, rates, block_seconds=1.3)
    parts: dict[int, list[np.ndarray]] = {16000: [], 22050: [], 44100: []}
    n_yields = 0
    for d in blocks:
        assert set(d) == set(parts)
        for r, b in d.items():
            assert b.dtype == np.float32 and b.ndim == 1
            parts[r].append(b)
        n_yields += 1
    assert n_yields == int(np.ceil(len(whole) / round(1.3 * rate)))
    for r, bs in parts.items():
        got = np.concatenate(bs)
        assert len(got) == round(len(whole) * r / rate)
        ref = whole if r == rate else soxr.resample(whole, rate, r, quality="HQ")
        np.testing.assert_allclose(got, ref, atol=1e-5)
    assert info.frames == len(whole)


def test_stream_resampler_passthrough_and_flush():
    x = np.random.default_rng(0).standard_normal(10000).astype(np.float32)
    rs = StreamResampler(16000, 16000)
    assert rs.process(x) is x
    rs = StreamResampler(48000, 16000)
    out = [rs.process(x[i : i + 999]) for i in range(0, 9990, 999)]
    out.append(rs.process(x[9990:], last=True))
    assert sum(len(o) for o in out) == round(10000 / 3)
    with pytest.raises(RuntimeError):
        rs.process(x)
    with pytest.raises(ValueError):
        StreamResampler(0, 16000)


def test_stream_mono_block_sizes(library):
    info, blocks = stream_mono(library / "jazz/b.flac", block_frames=10000)
    sizes = [len(b) for b in blocks]
    assert all(s == 10000 for s in sizes[:-1]) and 0 < sizes[-1] <= 10000
    assert sum(sizes) == info.frames
    info, blocks = stream_mono(library / "e.m4a", block_frames=10000)  # PyAV path re-blocks decoder frames
    sizes = [len(b) for b in blocks]
    assert all(s == 10000 for s in sizes[:-1]) and sum(sizes) == info.frames


def test_stopping_early_closes_the_file(library):
    fd_dir = Path("/proc/self/fd")
    if not fd_dir.exists():
        pytest.skip("needs /proc")
    before = len(list(fd_dir.iterdir()))
    for _ in range(30):
        for rel in ("jazz/b.flac", "e.m4a"):
            _, blocks = stream_resampled(library / rel, [16000], block_seconds=0.5)
            next(blocks)
            blocks.close()
    assert len(list(fd_dir.iterdir())) <= before + 2


# --------------------------------------------------------------------------- errors


def test_corrupt_file_raises_naming_it(tmp_path):
    bad = tmp_path / "corrupt.wav"
    bad.write_bytes(np.random.default_rng(1).integers(0, 256, 5000, dtype=np.uint8).tobytes())
    for call in (probe, stream_mono, lambda p: load_audio(p, 16000)):
        with pytest.raises(AudioDecodeError, match="not an audio file or unsupported format") as e:
            call(bad)
        assert str(bad) in str(e.value)


def test_empty_and_missing_files(tmp_path):
    empty = tmp_path / "empty.mp3"
    empty.write_bytes(b"")
    with pytest.raises(AudioDecodeError, match=r"empty file \(0 bytes\)") as e:
        stream_mono(empty)
    assert str(empty) in str(e.value)
    with pytest.raises(AudioDecodeError, match="file not found"):
        probe(tmp_path / "nope.flac")
    with pytest.raises(AudioDecodeError, match="folder"):
        probe(tmp_path)


def test_file_without_samples(tmp_path):
    path = tmp_path / "nothing.wav"
    sf.write(path, np.zeros((0, 2), np.float32), 44100)
    with pytest.raises(AudioDecodeError, match="contains no audio samples") as e:
        load_audio(path, 16000)
    assert str(path) in str(e.value)


@pytest.mark.parametrize("ext", [".flac", ".m4a"])
def test_damaged_file_raises_while_decoding(tmp_path, ext):
    src = tmp_path / f"ok{ext}"
    write_audio(src, synth_clip(6.0, 44100, seed=2), 44100)
    data = bytearray(src.read_bytes())
    bad = tmp_path / f"bad{ext}"
    if ext == ".flac":
        bad.write_bytes(bytes(data[: len(data) // 2]))  # truncated
    else:
        mid = len(data) // 2
        data[mid : mid + 20000] = np.random.default_rng(3).integers(0, 256, 20000, dtype=np.uint8).tobytes()
        bad.write_bytes(bytes(data))
    info, blocks = stream_mono(bad)  # the header is fine
    assert isinstance(info, AudioInfo)
    with pytest.raises(AudioDecodeError, match="decode error") as e:
        for _ in blocks:
            pass
    assert str(bad) in str(e.value)


# --------------------------------------------------------------------------- listing


def test_find_audio_files(tmp_path):
    for rel in ["b/x.FLAC", "a.wav", "b/c/d.mp3", "b/c/e.m4a", "notes.txt", "cover.jpg",
                ".hidden/h.wav", "b/.h.wav", "b/c/.git/x.ogg", "z.Opus"]:  # fmt: skip
        p = tmp_path / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(b"x")
    (tmp_path / "dir.wav").mkdir()  # a folder named like audio is not a file
    found = find_audio_files(tmp_path)
    assert [p.relative_to(tmp_path).as_posix() for p in found] == [
        "a.wav", "b/c/d.mp3", "b/c/e.m4a", "b/x.FLAC", "z.Opus"
    ]  # fmt: skip
    assert find_audio_files(tmp_path / "a.wav") == [tmp_path / "a.wav"]
    with pytest.raises(FileNotFoundError):
        find_audio_files(tmp_path / "missing")
    assert {".wav", ".flac", ".ogg", ".mp3", ".m4a", ".opus", ".aac"} <= AUDIO_EXTENSIONS
    assert all(e == e.lower() and e.startswith(".") for e in AUDIO_EXTENSIONS)


# --------------------------------------------------------------------------- memory


def test_long_file_streams_in_bounded_memory(tmp_path):
    psutil = pytest.importorskip("psutil")
    rate, minutes = 44100, 10
    path = tmp_path / "long.wav"
    block = synth_clip(10.0, rate, seed=3, channels=2)
    n_total = rate * 60 * minutes
    with sf.SoundFile(path, "w", samplerate=rate, channels=2, subtype="PCM_16") as f:
        for _ in range(n_total // len(block)):
            f.write(block)
    decoded_bytes = n_total * 4  # mono float32 at the native rate
    proc = psutil.Process()
    base = proc.memory_info().rss
    peak = base
    counts = {16000: 0, 22050: 0}
    info, blocks = stream_resampled(path, counts)
    for d in blocks:
        for r, b in d.items():
            counts[r] += len(b)
        peak = max(peak, proc.memory_info().rss)
    assert info.frames == n_total
    assert counts == {r: round(n_total * r / rate) for r in counts}
    growth = peak - base
    assert growth < decoded_bytes / 3, f"RSS grew {growth / 2**20:.0f} MiB for {decoded_bytes / 2**20:.0f} MiB of audio"


# --------------------------------------------------------------------------- examples


def test_synth_clip_properties():
    a = synth_clip(3.0, 22050, seed=0)
    assert a.shape == (66150,) and a.dtype == np.float32
    assert 0.5 < np.abs(a).max() <= 0.9
    np.testing.assert_array_equal(a, synth_clip(3.0, 22050, seed=0))
    st = synth_clip(3.0, 22050, seed=0, channels=2)
    assert st.shape == (66150, 2) and np.abs(st).max() <= 0.9
    assert not np.allclose(st[:, 0], st[:, 1])
    # different seeds: clearly different spectra
    spec = lambda x: np.log1p(np.abs(np.fft.rfft(x))[:20000])  # noqa: E731
    b = synth_clip(3.0, 22050, seed=1)
    assert np.corrcoef(spec(a), spec(b))[0, 1] < 0.9


def test_example_set_is_deterministic(tmp_path):
    p1 = make_example_set(tmp_path / "one", seconds=1.0)
    p2 = make_example_set(tmp_path / "two", seconds=1.0)
    for a, b in zip(p1, p2):
        np.testing.assert_array_equal(load_audio(a, 16000), load_audio(b, 16000))
        if a.suffix not in (".ogg", ".opus"):  # Ogg stream serials are random
            assert a.read_bytes() == b.read_bytes()


def test_examples_cli(tmp_path):
    repo = Path(__file__).resolve().parents[1]
    env = {**os.environ, "PYTHONPATH": str(repo) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    proc = subprocess.run(
        [sys.executable, "-m", "musicembed_core.examples", str(tmp_path / "ex"), "--seconds", "1"],
        capture_output=True, text=True, env=env, cwd=repo, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert len(find_audio_files(tmp_path / "ex")) == 7


def test_audio_module_import_is_light():
    code = "import sys, musicembed_core.audio; assert not {'soundfile', 'av', 'soxr', 'torch'} & set(sys.modules)"
    repo = Path(__file__).resolve().parents[1]
    subprocess.run([sys.executable, "-c", code], check=True, cwd=repo, timeout=60)


def test_module_exports():
    assert set(audio.__all__) >= {"probe", "stream_mono", "stream_resampled", "load_audio", "find_audio_files"}
