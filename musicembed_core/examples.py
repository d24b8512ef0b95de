"""Generated example audio: a small, varied music library without downloads.

The quickstart and the tests need real files in every container the decoder
supports, so this module synthesises short musical clips (harmonic notes plus a
drum pattern) and writes them with soundfile (WAV/FLAC/OGG/MP3/Opus) or PyAV
(AAC in MP4/ADTS).

Write the example set from the command line::

    python -m musicembed_core.examples FOLDER [--seconds S]

Decoded audio is deterministic. File *bytes* are deterministic for WAV, FLAC,
MP3 and M4A, but not for Ogg files (.ogg/.opus): libsndfile picks a random Ogg
stream serial number, so content hashes of those files change on every write.
"""

from __future__ import annotations

import os
import pathlib
from typing import Sequence

import numpy as np

__all__ = ["synth_clip", "write_audio", "make_example_set", "OPUS_RATES"]

OPUS_RATES = (8000, 12000, 16000, 24000, 48000)
"""Sample rates an Ogg/Opus file can be written at; others are resampled to 48 kHz."""

_SCALES = (
    (0, 2, 4, 5, 7, 9, 11),  # major
    (0, 2, 3, 5, 7, 8, 10),  # natural minor
    (0, 2, 4, 7, 9),  # major pentatonic
    (0, 3, 5, 7, 10),  # minor pentatonic
    (0, 2, 3, 5, 7, 9, 10),  # dorian
)


def synth_clip(seconds: float, sample_rate: int = 22050, seed: int = 0, channels: int = 1) -> np.ndarray:
    """A short piece of synthetic music, float32 with peak <= 0.9.

    The seed picks tempo, key, scale, timbre (harmonic count/decay, vibrato),
    melody and drum pattern, so different seeds sound clearly different while the
    same seed always gives the same samples. Returns ``[frames]`` for mono and
    ``[frames, channels]`` otherwise (instruments panned differently per channel).
    """
    if seconds <= 0:
        raise ValueError("seconds must be > 0")
    if channels < 1:
        raise ValueError("channels must be >= 1")
    rng = np.random.default_rng(seed)
    n = max(1, int(round(seconds * sample_rate)))
    t_all = np.arange(n, dtype=np.float64) / sample_rate

    bpm = float(rng.uniform(70, 170))
    beat = 60.0 / bpm
    root = int(rng.integers(40, 64))  # MIDI note
    scale = _SCALES[int(rng.integers(len(_SCALES)))]
    n_harm = int(rng.integers(1, 9))
    harm_decay = float(rng.uniform(0.4, 1.6))
    note_decay = float(rng.uniform(1.5, 8.0))
    vibrato = float(rng.uniform(0.0, 0.006))
    note_len_beats = float(rng.choice([0.5, 1.0, 1.0, 2.0]))
    hat_div = int(rng.choice([2, 3, 4]))
    noise_level = float(rng.uniform(0.05, 0.35))

    melody = np.zeros(n)
    bass = np.zeros(n)
    drums = np.zeros(n)

    # Melody: notes from the scale, each with an exponential decay envelope.
    note_len = note_len_beats * beat
    n_notes = int(np.ceil(seconds / note_len))
    degrees = rng.integers(0, len(scale) * 2, size=n_notes)
    harm_amps = 1.0 / np.arange(1, n_harm + 1) ** harm_decay
    for i, deg in enumerate(degrees):
        start = int(i * note_len * sample_rate)
        stop = min(n, int((i + 1) * note_len * sample_rate))
        if start >= n:
            break
        midi = root + 12 + scale[deg % len(scale)] + 12 * (deg // len(scale))
        f0 = 440.0 * 2.0 ** ((midi - 69) / 12.0)
        t = t_all[: stop - start]
        # instantaneous frequency f0 * (1 + vibrato * sin(2 pi 5 t))
        phase = 2 * np.pi * f0 * (t - vibrato * np.cos(2 * np.pi * 5.0 * t) / (2 * np.pi * 5.0))
        tone = np.zeros_like(t)
        for h, a in enumerate(harm_amps, start=1):
            if f0 * h < sample_rate / 2 * 0.95:
                tone += a * np.sin(h * phase)
        env = np.exp(-note_decay * t) * np.minimum(1.0, t / 0.01)
        melody[start:stop] += tone * env

    # Bass: root / fifth on every other beat.
    bass_len = 2 * beat
    for i in range(int(np.ceil(seconds / bass_len))):
        start = int(i * bass_len * sample_rate)
        stop = min(n, int((i + 1) * bass_len * sample_rate))
        if start >= n:
            break
        midi = root - 12 + (0 if i % 2 == 0 else 7)
        f0 = 440.0 * 2.0 ** ((midi - 69) / 12.0)
        t = t_all[: stop - start]
        bass[start:stop] += (np.sin(2 * np.pi * f0 * t) + 0.3 * np.sin(4 * np.pi * f0 * t)) * np.exp(-1.5 * t)

    # Drums: kick on beats 1/3, snare (noise burst) on 2/4, hi-hats on subdivisions.
    noise = rng.standard_normal(n)
    for i in range(int(np.ceil(seconds / beat)) + 1):
        start = int(i * beat * sample_rate)
        if start >= n:
            break
        seg = min(n - start, int(0.25 * sample_rate))
        t = t_all[:seg]
        if i % 2 == 0:
            f = 50.0 + 100.0 * np.exp(-t * 30.0)
            drums[start : start + seg] += 0.9 * np.sin(2 * np.pi * np.cumsum(f) / sample_rate) * np.exp(-t * 12.0)
        else:
            drums[start : start + seg] += noise_level * 2.0 * noise[start : start + seg] * np.exp(-t * 25.0)
        for k in range(hat_div):
            hs = start + int(k * beat / hat_div * sample_rate)
            hseg = min(n - hs - 1, int(0.04 * sample_rate))
            if hseg <= 0:
                continue
            h = np.diff(noise[hs : hs + hseg + 1])  # crude high-pass
            drums[hs : hs + hseg] += noise_level * 0.5 * h * np.exp(-t_all[:hseg] * 120.0)

    voices = (melody, bass, drums)
    if channels == 1:
        out = (0.45 * melody + 0.35 * bass + 0.4 * drums)[:, None]
    else:
        pans = [rng.uniform(0.1, 0.9), 0.5, 0.5]  # 0 = left, 1 = right
        out = np.zeros((n, channels))
        for c in range(channels):
            pos = c / (channels - 1)
            for v, g, p in zip(voices, (0.45, 0.35, 0.4), pans):
                out[:, c] += g * v * (1.0 - abs(pos - p))
    peak = float(np.max(np.abs(out)))
    if peak > 0:
        out *= 0.9 / peak
    out = out.astype(np.float32)
    return out[:, 0] if channels == 1 else out


_SOUNDFILE_EXT = {
    ".wav": ("WAV", "PCM_16"),
    ".wave": ("WAV", "PCM_16"),
    ".flac": ("FLAC", "PCM_16"),
    ".ogg": ("OGG", "VORBIS"),
    ".oga": ("OGG", "VORBIS"),
    ".mp3": ("MP3", "MPEG_LAYER_III"),
    ".opus": ("OGG", "OPUS"),
    ".aif": ("AIFF", "PCM_16"),
    ".aiff": ("AIFF", "PCM_16"),
    ".w64": ("W64", "PCM_16"),
    ".caf": ("CAF", "PCM_16"),
}
_PYAV_EXT = {".m4a": "mp4", ".mp4": "mp4", ".aac": "adts"}


def write_audio(path: str | os.PathLike, data: np.ndarray, sample_rate: int) -> None:
    """Write ``[frames]`` or ``[frames, channels]`` float audio; format from the extension.

    WAV/FLAC/AIFF are 16-bit PCM, .ogg is Vorbis, .mp3 is MPEG layer III, .opus is
    Ogg/Opus (written at 48 kHz when ``sample_rate`` is not an Opus rate, so the
    file's rate then differs from ``sample_rate``), .m4a/.mp4/.aac is AAC via PyAV.
    """
    path = pathlib.Path(path)
    ext = path.suffix.lower()
    data = np.asarray(data, dtype=np.float32)
    if data.ndim not in (1, 2):
        raise ValueError("data must be [frames] or [frames, channels]")
    data = np.clip(data, -1.0, 1.0)
    path.parent.mkdir(parents=True, exist_ok=True)
    if ext in _SOUNDFILE_EXT:
        import soundfile as sf

        fmt, subtype = _SOUNDFILE_EXT[ext]
        if ext == ".opus" and sample_rate not in OPUS_RATES:
            import soxr

            data = soxr.resample(data, sample_rate, 48000, quality="HQ").astype(np.float32)
            sample_rate = 48000
        channels = 1 if data.ndim == 1 else data.shape[1]
        # Write in chunks: one huge write to Ogg/Vorbis overflows libvorbis's stack
        # (alloca of the whole buffer; libsndfile #1095, python-soundfile #426).
        with sf.SoundFile(str(path), "w", sample_rate, channels, subtype=subtype, format=fmt) as f:
            for start in range(0, len(data), 65536):
                f.write(data[start : start + 65536])
        if fmt == "OGG":
            fix_ogg_serials(path)
    elif ext in _PYAV_EXT:
        _write_aac(path, data, sample_rate, _PYAV_EXT[ext])
    else:
        raise ValueError(f"write_audio: unsupported extension {ext!r} for {path}")


def _ogg_crc_table() -> list[int]:
    table = []
    for i in range(256):
        r = i << 24
        for _ in range(8):
            r = ((r << 1) ^ 0x04C11DB7) if r & 0x80000000 else (r << 1)
        table.append(r & 0xFFFFFFFF)
    return table


_OGG_CRC = _ogg_crc_table()


def _ogg_crc(page: bytes) -> int:
    crc = 0
    for b in page:
        crc = ((crc << 8) & 0xFFFFFFFF) ^ _OGG_CRC[((crc >> 24) & 0xFF) ^ b]
    return crc


def fix_ogg_serials(path: str | os.PathLike) -> None:
    """Give each logical stream of an Ogg file a fixed serial number (1, 2, ...).

    libogg picks a random serial for every stream it writes, so the same audio
    encodes to different bytes each time, and a rerun of the quickstart would see
    changed files (and re-embed them). Rewrites the serial and the page CRC of
    every page; the audio is untouched.
    """
    import struct

    path = pathlib.Path(path)
    data = bytearray(path.read_bytes())
    serials: dict[int, int] = {}
    pos = 0
    while pos + 27 <= len(data):
        if data[pos : pos + 4] != b"OggS":
            raise ValueError(f"{path}: not an Ogg page at byte {pos}")
        nseg = data[pos + 26]
        size = 27 + nseg + sum(data[pos + 27 : pos + 27 + nseg])
        (serial,) = struct.unpack_from("<I", data, pos + 14)
        struct.pack_into("<I", data, pos + 14, serials.setdefault(serial, len(serials) + 1))
        struct.pack_into("<I", data, pos + 22, 0)
        struct.pack_into("<I", data, pos + 22, _ogg_crc(bytes(data[pos : pos + size])))
        pos += size
    path.write_bytes(bytes(data))


def _write_aac(path: pathlib.Path, data: np.ndarray, sample_rate: int, container_format: str) -> None:
    import av

    planar = data[None, :] if data.ndim == 1 else np.ascontiguousarray(data.T)
    channels = planar.shape[0]
    layout = {1: "mono", 2: "stereo"}.get(channels)
    if layout is None:
        raise ValueError("AAC writing supports 1 or 2 channels")
    with av.open(str(path), "w", format=container_format) as container:
        stream = container.add_stream("aac", rate=sample_rate)
        stream.layout = layout
        stream.bit_rate = 128000 if channels == 2 else 96000
        frame_size = stream.codec_context.frame_size or 1024
        pts = 0
        for start in range(0, planar.shape[1], frame_size):
            chunk = np.ascontiguousarray(planar[:, start : start + frame_size])
            frame = av.AudioFrame.from_ndarray(chunk, format="fltp", layout=layout)
            frame.sample_rate = sample_rate
            frame.pts = pts
            pts += chunk.shape[1]
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)


# (relative path, sample rate, channels, seed)
_EXAMPLE_SET: Sequence[tuple[str, int, int, int]] = (
    ("rock/a.wav", 22050, 1, 1),
    ("jazz/b.flac", 44100, 2, 2),
    ("c.ogg", 22050, 1, 3),
    ("d.mp3", 44100, 2, 4),
    ("e.m4a", 44100, 2, 5),
    ("f.opus", 48000, 1, 6),
    ("g_48k.wav", 48000, 2, 7),
)


def make_example_set(folder: str | os.PathLike, seconds: float = 8.0) -> list[pathlib.Path]:
    """Write a small deterministic library covering every decoder path; returns the paths.

    Seven clips: ``rock/a.wav`` (22.05 kHz mono), ``jazz/b.flac`` (44.1 kHz stereo),
    ``c.ogg`` (Vorbis), ``d.mp3``, ``e.m4a`` (AAC, decoded by PyAV), ``f.opus``
    (48 kHz) and ``g_48k.wav`` (48 kHz stereo).
    """
    folder = pathlib.Path(folder)
    paths = []
    for rel, rate, channels, seed in _EXAMPLE_SET:
        p = folder / rel
        write_audio(p, synth_clip(seconds, rate, seed=seed, channels=channels), rate)
        paths.append(p)
    return paths


def _main(argv: Sequence[str] | None = None) -> None:
    import argparse

    parser = argparse.ArgumentParser(
        prog="python -m musicembed_core.examples", description="Write the generated example music library."
    )
    parser.add_argument("folder", help="output folder (created if missing)")
    parser.add_argument("--seconds", type=float, default=8.0, help="clip length in seconds (default 8)")
    args = parser.parse_args(argv)
    for p in make_example_set(args.folder, seconds=args.seconds):
        print(p)


if __name__ == "__main__":
    _main()
