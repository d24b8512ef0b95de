"""Generated example audio: a small, varied music library without downloads.

The quickstart and the tests need real files in every container the decoder
supports, so this module synthesises short musical clips (harmonic notes plus a
drum pattern) and writes them with soundfile (WAV/FLAC/OGG/MP3/Opus) or PyAV
(AAC in MP4/ADTS).

Write the example set from the command line::

    python -m musicembed_core.examples FOLDER [--seconds S] [--captioned N]

``--captioned N`` (or :func:`make_captioned_set`) also writes N captioned clips
into ``FOLDER/captioned``: each clip's sound follows a few attributes
(instrument, register, tempo, drums), described by ``captions.jsonl`` (for
``musicembed train-projector --captions``) and listed in ``labels.csv``.

Decoded audio is deterministic. File *bytes* are deterministic for WAV, FLAC,
MP3 and M4A, but not for Ogg files (.ogg/.opus): libsndfile picks a random Ogg
stream serial number, so content hashes of those files change on every write.
"""

from __future__ import annotations

import itertools
import os
import pathlib
from typing import Sequence

import numpy as np

__all__ = [
    "CAPTIONS_FILE",
    "CAPTION_ATTRIBUTES",
    "LABELS_FILE",
    "OPUS_RATES",
    "captioned_attributes",
    "make_captioned_set",
    "make_example_set",
    "synth_captioned_clip",
    "synth_clip",
    "write_audio",
]

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
    drums = _drum_pattern(n, sample_rate, beat, rng.standard_normal(n), kick=0.9, snare=noise_level * 2.0,
                          hat=noise_level * 0.5, hat_div=hat_div)

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


# --------------------------------------------------------------------------- captioned set

CAPTIONS_FILE = "captions.jsonl"
"""Captions of a captioned set: ``{"id", "caption", "alt_captions"}`` per line."""

LABELS_FILE = "labels.csv"
"""Attributes of a captioned set: ``id`` plus one column per attribute of :data:`CAPTION_ATTRIBUTES`."""

CAPTION_ATTRIBUTES: dict[str, tuple[str, ...]] = {
    "instrument": ("piano", "organ", "flute", "bell", "strings"),
    "register": ("low", "high"),
    "tempo": ("slow", "fast"),
    "drums": ("no", "yes"),
}
"""The attributes a captioned clip is made from, and their values (the labels.csv columns)."""

_WORDS = {
    "piano": ("piano", "acoustic piano", "grand piano"),
    "organ": ("organ", "pipe organ", "church organ"),
    "flute": ("flute", "breathy flute", "wooden flute"),
    "bell": ("bell", "chime", "glockenspiel"),
    "strings": ("strings", "string section", "violin ensemble"),
    "low": ("low", "deep", "low-pitched"),
    "high": ("high", "bright", "high-pitched"),
    "slow": ("slow", "calm", "relaxed", "gentle"),
    "fast": ("fast", "upbeat", "lively", "energetic"),
    "drums=no": ("with no drums", "without percussion", "with no beat", "without any drums"),
    "drums=yes": ("with drums", "over a steady drum beat", "with a driving beat", "backed by drums"),
}

_MAIN_TEMPLATES = (
    "a {tempo} {instrument} melody in a {register_word} register {drums}",
    "{tempo} {instrument} music in a {register_word} register, {drums}",
    "a {register} {instrument} tune at a {tempo_word} tempo {drums}",
    "{tempo} {register} {instrument} playing a simple melody {drums}",
)
_ALT_TEMPLATES = (
    "{tempo}, {register} {instrument} {drums}",
    "{instrument} lead, {register} and {tempo}, {drums}",
    "{register} {instrument} notes, {tempo} pace, {drums}",
)


def captioned_attributes(index: int) -> dict[str, str]:
    """The attributes of clip ``index`` of a captioned set.

    Every 40 consecutive clips hold each combination once (instrument cycles with
    period 5, register/tempo/drums with periods 2/4/8), so any count stays balanced.
    """
    inst = CAPTION_ATTRIBUTES["instrument"]
    return {
        "instrument": inst[index % len(inst)],
        "register": ("low", "high")[index % 2],
        "tempo": ("slow", "fast")[(index // 2) % 2],
        "drums": ("no", "yes")[(index // 4) % 2],
    }


def _caption(attrs: dict[str, str], templates: Sequence[str], rng: np.random.Generator) -> str:
    def pick(key: str) -> str:
        words = _WORDS[key]
        return str(words[int(rng.integers(len(words)))])

    tempo = pick(attrs["tempo"])
    slots = {
        "instrument": pick(attrs["instrument"]),
        "register": pick(attrs["register"]),
        "register_word": attrs["register"],
        "tempo": tempo,
        "tempo_word": attrs["tempo"],
        "drums": pick("drums=" + attrs["drums"]),
    }
    text = templates[int(rng.integers(len(templates)))].format(**slots)
    return text[0].upper() + text[1:] if rng.random() < 0.5 else text


def _partials(instrument: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(frequency ratios, amplitudes, decay rates per second) of one note of ``instrument``."""
    h = np.arange(1, 13, dtype=np.float64)
    if instrument == "piano":  # slightly stretched harmonics, brighter ones die faster
        return h * np.sqrt(1 + 0.0004 * h**2), 1.0 / h**1.8, 2.5 + 1.2 * h
    if instrument == "organ":  # drawbars: sub-octave and selected harmonics, no decay
        ratios = np.array([0.5, 1, 2, 3, 4, 6, 8], dtype=np.float64)
        return ratios, np.array([0.6, 1.0, 0.8, 0.5, 0.45, 0.3, 0.25]), np.zeros(7)
    if instrument == "flute":  # nearly a sine, a weak second and third harmonic
        return np.array([1.0, 2.0, 3.0]), np.array([1.0, 0.22, 0.07]), np.zeros(3)
    if instrument == "bell":  # inharmonic partials (Risset's bell), high ones ring short
        ratios = np.array([0.56, 0.92, 1.19, 1.71, 2.0, 2.74, 3.0, 3.76, 4.07])
        amps = np.array([1.0, 0.67, 1.0, 1.8, 2.67, 1.67, 1.46, 1.33, 1.33]) / 2.67
        return ratios, amps, np.array([0.5, 0.7, 0.9, 1.2, 1.5, 2.0, 2.5, 3.0, 3.5])
    if instrument == "strings":  # sawtooth-like, all harmonics
        h = np.arange(1, 21, dtype=np.float64)
        return h, 1.0 / h, np.zeros(20)
    raise ValueError(f"unknown instrument {instrument!r}; one of {CAPTION_ATTRIBUTES['instrument']}")


def _envelope(instrument: str, t: np.ndarray, length: float) -> np.ndarray:
    """Attack, then a release that ends the note at ``length`` seconds (no click)."""
    attack = {"piano": 0.005, "organ": 0.01, "flute": 0.06, "bell": 0.002, "strings": 0.15}[instrument]
    return np.minimum(1.0, t / attack) * np.clip((length - t) / 0.05, 0.0, 1.0)


def synth_captioned_clip(attrs: dict[str, str], seconds: float = 4.0, sample_rate: int = 16000,
                         seed: int = 0) -> np.ndarray:
    """A mono float32 clip (peak <= 0.9) whose sound follows ``attrs`` (see :data:`CAPTION_ATTRIBUTES`).

    ``instrument`` sets the timbre (partials, decay, attack, vibrato, breath noise),
    ``register`` the octave (melody around MIDI 40-55 or 72-84), ``tempo`` the note rate
    (60-76 BPM, one note a beat, or 132-160 BPM, two a beat), ``drums`` adds kick,
    snare and hi-hats. The seed picks key, scale, melody, exact tempo and level.
    """
    if seconds <= 0:
        raise ValueError("seconds must be > 0")
    for name, values in CAPTION_ATTRIBUTES.items():
        if attrs.get(name) not in values:
            raise ValueError(f"attribute {name}={attrs.get(name)!r}: expected one of {values}")
    rng = np.random.default_rng(seed)
    n = max(1, int(round(seconds * sample_rate)))
    t_all = np.arange(n, dtype=np.float64) / sample_rate
    instrument = attrs["instrument"]
    fast = attrs["tempo"] == "fast"
    bpm = float(rng.uniform(132, 160) if fast else rng.uniform(60, 76))
    beat = 60.0 / bpm
    note_len = beat / 2 if fast else beat
    root = int(rng.integers(40, 48) if attrs["register"] == "low" else rng.integers(72, 80))
    scale = _SCALES[int(rng.integers(len(_SCALES)))]
    ratios, amps, decays = _partials(instrument)
    vibrato = {"flute": 0.006, "strings": 0.004}.get(instrument, 0.0)
    tail = {"piano": 0.6, "bell": 1.5}.get(instrument, 0.0) * (0.6 if fast else 1.0)  # decaying notes ring on

    melody = np.zeros(n)
    n_notes = int(np.ceil(seconds / note_len))
    degrees = rng.integers(0, len(scale) + 2, size=n_notes)
    for i, deg in enumerate(degrees):
        start = int(i * note_len * sample_rate)
        if start >= n:
            break
        stop = min(n, start + int((note_len + tail) * sample_rate))
        midi = root + scale[deg % len(scale)] + 12 * (deg // len(scale))
        f0 = 440.0 * 2.0 ** ((midi - 69) / 12.0)
        t = t_all[: stop - start]
        phase = 2 * np.pi * f0 * (t - vibrato * np.cos(2 * np.pi * 5.5 * t) / (2 * np.pi * 5.5))
        tone = np.zeros_like(t)
        detunes = (1.0, 1.003, 0.997) if instrument == "strings" else (1.0,)
        for ratio, amp, decay in zip(ratios, amps, decays):
            if f0 * ratio * 1.01 >= sample_rate / 2 * 0.95:
                continue
            for d in detunes:
                tone += amp / len(detunes) * np.sin(ratio * d * phase) * np.exp(-decay * t)
        if instrument == "flute":  # breath: noise around the note plus a little hiss
            noise = rng.standard_normal(len(t))
            smooth = np.convolve(noise, np.ones(8) / 8)[: len(t)]  # low-passed (causal moving average)
            tone += 0.35 * smooth * np.sin(phase) + 0.03 * noise
        # sustained notes: fast ones short (staccato, gaps between them), slow ones legato;
        # decaying notes (piano, bell) ring on for ``tail`` seconds
        length = note_len + tail if tail else note_len * (0.55 if fast else 1.0)
        melody[start:stop] += tone * _envelope(instrument, t, length)

    out = melody / max(1e-9, float(np.max(np.abs(melody))))
    if attrs["drums"] == "yes":
        out = 0.6 * out + 0.75 * _drums(n, sample_rate, beat, rng)
    out *= float(rng.uniform(0.7, 0.9)) / max(1e-9, float(np.max(np.abs(out))))
    return out.astype(np.float32)


def _drums(n: int, sample_rate: int, beat: float, rng: np.random.Generator) -> np.ndarray:
    """Kick on beats 1 and 3, snare on 2 and 4, hi-hats on eighths; peak 1."""
    drums = _drum_pattern(n, sample_rate, beat, rng.standard_normal(n), kick=1.0, snare=0.6, hat=0.4, hat_div=2)
    return drums / max(1e-9, float(np.max(np.abs(drums))))


def _drum_pattern(n: int, sample_rate: int, beat: float, noise: np.ndarray, *, kick: float, snare: float,
                  hat: float, hat_div: int) -> np.ndarray:
    """``n`` samples of drums: a pitch-falling kick (gain ``kick``) on beats 1 and 3, a noise-burst snare
    (``snare``) on 2 and 4, and ``hat_div`` hi-hats per beat (``hat``: first difference of ``noise``, a
    crude high-pass)."""
    drums = np.zeros(n)
    t_all = np.arange(n, dtype=np.float64) / sample_rate
    for i in itertools.count():
        start = int(i * beat * sample_rate)
        if start >= n:
            break
        seg = min(n - start, int(0.25 * sample_rate))
        t = t_all[:seg]
        if i % 2 == 0:
            f = 50.0 + 100.0 * np.exp(-t * 30.0)
            drums[start:start + seg] += kick * np.sin(2 * np.pi * np.cumsum(f) / sample_rate) * np.exp(-t * 12.0)
        else:
            drums[start:start + seg] += snare * noise[start:start + seg] * np.exp(-t * 25.0)
        for k in range(hat_div):
            hs = start + int(k * beat / hat_div * sample_rate)
            hseg = min(n - hs - 1, int(0.04 * sample_rate))
            if hseg > 0:
                drums[hs:hs + hseg] += hat * np.diff(noise[hs:hs + hseg + 1]) * np.exp(-t_all[:hseg] * 120.0)
    return drums


def make_captioned_set(folder: str | os.PathLike, count: int = 120, seconds: float = 4.0, seed: int = 0,
                       sample_rate: int = 16000) -> list[pathlib.Path]:
    """Write ``count`` captioned WAV clips, ``captions.jsonl`` and ``labels.csv``; returns the clip paths.

    Clips are ``clip_000.wav``, ... (16-bit mono); clip ``i`` has the attributes
    :func:`captioned_attributes` gives it. ``captions.jsonl`` holds one line per clip,
    ``{"id": "clip_000.wav", "caption": "...", "alt_captions": ["..."]}`` (ids relative to
    ``folder``, i.e. the stored ids of a run with ``run.source = folder``); captions are
    sentences about the attributes in varied wording. ``labels.csv`` has ``id`` and one
    column per attribute. Everything is deterministic for ``(count, seconds, seed, sample_rate)``.
    """
    import csv
    import json

    if count < 1:
        raise ValueError("count must be >= 1")
    folder = pathlib.Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    width = max(3, len(str(count - 1)))
    paths, captions, labels = [], [], []
    for i in range(count):
        attrs = captioned_attributes(i)
        rel = f"clip_{i:0{width}d}.wav"
        clip_seed = int(np.random.SeedSequence([seed, i]).generate_state(1)[0])
        write_audio(folder / rel, synth_captioned_clip(attrs, seconds, sample_rate, seed=clip_seed), sample_rate)
        words = np.random.default_rng([seed, i, 1])
        main = _caption(attrs, _MAIN_TEMPLATES, words)
        alt = _caption(attrs, _ALT_TEMPLATES, words)
        captions.append({"id": rel, "caption": main, "alt_captions": [alt]})
        labels.append({"id": rel, **attrs})
        paths.append(folder / rel)
    with open(folder / CAPTIONS_FILE, "w", encoding="utf-8", newline="\n") as f:
        for rec in captions:
            f.write(json.dumps(rec, ensure_ascii=False) + "\n")
    with open(folder / LABELS_FILE, "w", encoding="utf-8", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["id", *CAPTION_ATTRIBUTES], lineterminator="\n")
        writer.writeheader()
        writer.writerows(labels)
    return paths


def _main(argv: Sequence[str] | None = None) -> None:
    import argparse

    parser = argparse.ArgumentParser(
        prog="python -m musicembed_core.examples", description="Write the generated example music library."
    )
    parser.add_argument("folder", help="output folder (created if missing)")
    parser.add_argument("--seconds", type=float, default=8.0, help="clip length in seconds (default 8)")
    parser.add_argument("--captioned", type=int, default=0, metavar="N",
                        help="also write N captioned clips with captions.jsonl and labels.csv "
                        "into FOLDER/captioned (for training a text projector)")
    parser.add_argument("--captioned-seconds", type=float, default=4.0,
                        help="length of each captioned clip (default 4)")
    args = parser.parse_args(argv)
    for p in make_example_set(args.folder, seconds=args.seconds):
        print(p)
    if args.captioned:
        captioned = pathlib.Path(args.folder) / "captioned"
        make_captioned_set(captioned, count=args.captioned, seconds=args.captioned_seconds)
        print(captioned / CAPTIONS_FILE)


if __name__ == "__main__":
    _main()
