"""Audio decoding, mono mixdown and streaming resampling.

Why this module exists: music libraries are long files in many containers, and
every encoder wants mono audio at its own rate. Files are decoded *once*, in
blocks (memory does not grow with the file's length), mixed to mono and
resampled by one soxr stream per distinct target rate.

Backends: libsndfile (via soundfile) reads WAV/FLAC/AIFF/Ogg Vorbis/Ogg Opus/MP3
fast and sample-exact; PyAV (FFmpeg) reads everything else (AAC/ALAC in MP4,
ADTS, WavPack, WMA, Matroska, ...) and is the fallback when libsndfile fails.

Only numpy is imported at module level; soundfile, av and soxr are imported
where they are used so ``import musicembed_core.audio`` stays cheap.
"""

from __future__ import annotations

import os
import time
import pathlib
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Iterator

import numpy as np

from .errors import AudioDecodeError

__all__ = [
    "AUDIO_EXTENSIONS",
    "AudioInfo",
    "StreamResampler",
    "find_audio_files",
    "load_audio",
    "probe",
    "stream_mono",
    "stream_resampled",
]

AUDIO_EXTENSIONS: frozenset[str] = frozenset(
    {
        ".wav", ".wave", ".w64", ".flac", ".aif", ".aiff", ".aifc", ".caf",
        ".ogg", ".oga", ".opus", ".mp3", ".mp2",
        ".m4a", ".m4b", ".aac", ".mp4", ".alac",
        ".wv", ".ape", ".wma", ".mka", ".webm",
    }
)  # fmt: skip
"""File extensions (lower case, with the dot) that :func:`find_audio_files` picks up."""

# Containers libsndfile cannot read: go straight to PyAV.
_PYAV_FIRST = frozenset({".m4a", ".m4b", ".aac", ".mp4", ".alac", ".wv", ".ape", ".wma", ".mka", ".webm"})

# AAC in MP4 decodes to whole 1024-sample frames; the container's (edit-list)
# duration is exact, so up to this many trailing padding samples are dropped.
_MP4_PAD_TOLERANCE = 4096

DEFAULT_BLOCK_FRAMES = 262144


# --------------------------------------------------------------------------- listing


def find_audio_files(
    root: str | os.PathLike, skipped: list[tuple[str, str]] | None = None
) -> list[pathlib.Path]:
    """Audio files under ``root`` (recursive, sorted), by extension (case-insensitive).

    Hidden files and folders (name starting with ``.``) below ``root`` are
    skipped; symlinked folders are followed once. A ``root`` that is a file is
    returned as ``[root]`` whatever its extension: the user named it explicitly,
    and decoding will say clearly if it is not audio. ``skipped`` (if given)
    receives ``(path, reason)`` for symlink loops, dangling symlinks and folders
    that cannot be read.
    """

    def skip(path: str, reason: str) -> None:
        if skipped is not None:
            skipped.append((path, reason))

    root_path = pathlib.Path(root)
    if root_path.is_file():
        return [root_path]
    if not root_path.is_dir():
        raise FileNotFoundError(f"{root_path}: no such file or folder")
    found: list[pathlib.Path] = []
    seen: dict[tuple[int, int], str] = {}

    def walk_error(err: OSError) -> None:
        skip(str(err.filename or root_path), f"cannot read this folder: {err.strerror or err}")

    for dirpath, dirnames, filenames in os.walk(root_path, followlinks=True, onerror=walk_error):
        try:
            st = os.stat(dirpath)
            key = (st.st_dev, st.st_ino)
        except OSError as exc:
            skip(dirpath, f"cannot read this folder: {exc.strerror or exc}")
            dirnames[:] = []
            continue
        if key in seen:  # a symlink loop, or a second link to a folder already walked
            skip(dirpath, f"symbolic link to a folder already searched ({seen[key]}): "
                          "not followed again (a link loop?)")
            dirnames[:] = []
            continue
        seen[key] = dirpath
        dirnames[:] = [d for d in dirnames if not d.startswith(".")]
        base = pathlib.Path(dirpath)
        for name in filenames:
            if name.startswith("."):
                continue
            p = base / name
            if os.path.islink(p) and not p.exists():
                try:
                    target = os.readlink(p)
                except OSError:
                    target = "?"
                skip(str(p), f"dangling symbolic link (points to {target!r}, which does not exist)")
                continue
            if os.path.splitext(name)[1].lower() in AUDIO_EXTENSIONS:
                if p.is_file():
                    found.append(p)
    return sorted(found)


# --------------------------------------------------------------------------- probing


@dataclass(frozen=True)
class AudioInfo:
    """What the container says about a file, before decoding."""

    path: str
    sample_rate: int
    channels: int
    frames: int | None
    """Samples per channel; ``None`` when the container does not tell. From PyAV
    it comes from the container duration, which is an estimate for raw streams
    (ADTS .aac, some MP3s)."""
    backend: str
    """``"soundfile"`` or ``"pyav"``: which decoder :func:`stream_mono` uses."""

    @property
    def duration(self) -> float | None:
        """Seconds, or ``None`` when the frame count is unknown."""
        if self.frames is None or self.sample_rate <= 0:
            return None
        return self.frames / self.sample_rate


def _check_file(path: str | os.PathLike) -> pathlib.Path:
    p = pathlib.Path(path)
    try:
        st = p.stat()
    except FileNotFoundError:
        raise AudioDecodeError(f"{p}: file not found") from None
    except OSError as e:
        raise AudioDecodeError(f"{p}: cannot access file: {e.strerror or e}") from None
    if p.is_dir():
        raise AudioDecodeError(f"{p}: is a folder, not an audio file")
    if st.st_size == 0:
        raise AudioDecodeError(f"{p}: empty file (0 bytes)")
    return p


def _probe_soundfile(p: pathlib.Path) -> AudioInfo:
    import soundfile as sf

    info = sf.info(str(p))
    if info.samplerate <= 0 or info.channels <= 0:
        raise ValueError(f"invalid header (rate {info.samplerate}, channels {info.channels})")
    return AudioInfo(str(p), int(info.samplerate), int(info.channels), int(info.frames), "soundfile")


def _channels_of(obj: Any) -> int:
    layout = getattr(obj, "layout", None)
    n = getattr(layout, "nb_channels", None) if layout is not None else None
    if not n and layout is not None:
        n = len(getattr(layout, "channels", ()) or ())
    if not n:
        n = getattr(obj, "channels", 0)
    return int(n or 0)


def _probe_pyav(p: pathlib.Path) -> AudioInfo:
    import av

    with av.open(str(p)) as container:
        if not container.streams.audio:
            raise ValueError("no audio stream")
        stream = container.streams.audio[0]
        cc = stream.codec_context
        rate = int(cc.sample_rate or stream.rate or 0)
        channels = _channels_of(cc)
        if rate <= 0 or channels <= 0:
            raise ValueError(f"audio stream without sample rate/channels ({cc.name})")
        frames: int | None = None
        if stream.duration is not None and stream.time_base is not None and stream.duration > 0:
            frames = int(round(float(stream.duration * stream.time_base) * rate))
        elif container.duration is not None and container.duration > 0:
            frames = int(round(container.duration / 1_000_000 * rate))  # AV_TIME_BASE units
    return AudioInfo(str(p), rate, channels, frames, "pyav")


def probe(path: str | os.PathLike) -> AudioInfo:
    """Open ``path`` just far enough to know rate, channels and length.

    Raises :class:`AudioDecodeError` naming the file when it is missing, empty
    or not decodable audio (the reasons of both backends are included).
    """
    p = _check_file(path)
    backends: list[tuple[str, Callable[[pathlib.Path], AudioInfo]]] = [
        ("soundfile", _probe_soundfile),
        ("pyav", _probe_pyav),
    ]
    if p.suffix.lower() in _PYAV_FIRST:
        backends.reverse()
    reasons = []
    for name, fn in backends:
        try:
            return fn(p)
        except Exception as e:  # noqa: BLE001 - any backend failure means "try the next one"
            reason = _short(e)
            if name == "soundfile" and "File does not exist" in reason:
                reason = "format not recognised"  # libsndfile's misleading wording for bad MP3s
            reasons.append(f"{name}: {reason}")
    raise AudioDecodeError(f"{p}: not an audio file or unsupported format: {'; '.join(reasons)}")


def _short(e: BaseException) -> str:
    text = str(e).strip() or type(e).__name__
    return text.splitlines()[0][:300]


# --------------------------------------------------------------------------- decoding


class _Buffer:
    """FIFO of 1-D float32 arrays, so decoders can emit fixed-size blocks."""

    def __init__(self) -> None:
        self.parts: list[np.ndarray] = []
        self.size = 0

    def push(self, x: np.ndarray) -> None:
        if len(x):
            self.parts.append(x)
            self.size += len(x)

    def take(self, n: int) -> np.ndarray:
        n = min(n, self.size)
        if n <= 0:
            return np.zeros(0, dtype=np.float32)
        if len(self.parts[0]) >= n:
            first = self.parts[0]
            out, rest = first[:n], first[n:]
            if len(rest):
                self.parts[0] = rest
            else:
                self.parts.pop(0)
        else:
            out_parts, got = [], 0
            while got < n:
                head = self.parts[0]
                need = n - got
                if len(head) > need:
                    out_parts.append(head[:need])
                    self.parts[0] = head[need:]
                    got = n
                else:
                    out_parts.append(head)
                    self.parts.pop(0)
                    got += len(head)
            out = np.concatenate(out_parts)
        self.size -= n
        return out


def _iter_soundfile(p: pathlib.Path, info: AudioInfo, block_frames: int) -> Iterator[np.ndarray]:
    import soundfile as sf

    with sf.SoundFile(str(p)) as f:
        while True:
            block = f.read(block_frames, dtype="float32", always_2d=True)
            if len(block) == 0:
                return
            if block.shape[1] == 1:
                yield np.ascontiguousarray(block[:, 0])
            else:
                yield block.mean(axis=1, dtype=np.float32)


_INT_SCALE = {1: 128.0, 2: 32768.0, 4: 2147483648.0, 8: 9223372036854775808.0}


def _frame_to_mono(frame: Any) -> np.ndarray:
    """One PyAV AudioFrame -> 1-D float32 mono in [-1, 1] (any sample format)."""
    a = frame.to_ndarray()
    ch = _channels_of(frame) or 1
    if not frame.format.is_planar:
        a = a.reshape(-1, ch).T  # packed: [1, n*ch] interleaved -> [ch, n]
    if a.dtype.kind == "f":
        a = a.astype(np.float32, copy=False)
    elif a.dtype.kind == "u":  # u8 / u8p: offset binary
        a = (a.astype(np.float32) - 128.0) / 128.0
    else:
        a = a.astype(np.float32) / np.float32(_INT_SCALE[a.dtype.itemsize])
    if a.shape[0] == 1:
        return np.array(a[0], dtype=np.float32, copy=True)
    return a.mean(axis=0, dtype=np.float32)


def _iter_pyav(p: pathlib.Path, info: AudioInfo, block_frames: int) -> Iterator[np.ndarray]:
    import av

    buf = _Buffer()
    emitted = 0
    with av.open(str(p)) as container:
        stream = container.streams.audio[0]
        is_mp4 = "mp4" in (container.format.name or "") or "mov" in (container.format.name or "")
        cap = info.frames if (is_mp4 and info.frames) else None
        resampler: StreamResampler | None = None

        def ready() -> int:
            """How many buffered samples may be emitted now (respecting the cap)."""
            nonlocal cap
            if cap is None:
                return buf.size
            allowed = max(0, cap - emitted)
            if buf.size - allowed > _MP4_PAD_TOLERANCE:
                cap = None  # container duration was wrong: give up trimming
                return buf.size
            return min(buf.size, allowed)

        for frame in container.decode(stream):
            x = _frame_to_mono(frame)
            if frame.sample_rate and frame.sample_rate != info.sample_rate:
                # e.g. HE-AAC whose header rate differs from the decoded rate
                if resampler is None or resampler.in_rate != frame.sample_rate:
                    if resampler is not None:
                        buf.push(resampler.process(np.zeros(0, np.float32), last=True))
                    resampler = StreamResampler(frame.sample_rate, info.sample_rate)
                x = resampler.process(x)
            buf.push(x)
            while ready() >= block_frames:
                out = buf.take(block_frames)
                emitted += len(out)
                yield out
        if resampler is not None:
            buf.push(resampler.process(np.zeros(0, np.float32), last=True))
        n = ready()  # at the end: drop up to _MP4_PAD_TOLERANCE samples past the cap
        while n > 0:
            out = buf.take(min(n, block_frames))
            emitted += len(out)
            n -= len(out)
            yield out


def _open(path: str | os.PathLike) -> tuple[AudioInfo, Callable[[int], Iterator[np.ndarray]]]:
    """Probe ``path``; return its info and a factory of checked mono block generators."""
    info = probe(path)
    p = pathlib.Path(path)
    if info.frames == 0 and info.backend == "soundfile":
        raise AudioDecodeError(f"{p}: contains no audio samples")

    def blocks(block_frames: int) -> Iterator[np.ndarray]:
        if block_frames <= 0:
            raise ValueError("block_frames must be > 0")
        total = 0
        it = _iter_soundfile(p, info, block_frames) if info.backend == "soundfile" else _iter_pyav(p, info, block_frames)
        try:
            try:
                first = next(it, None)
            except Exception as e:  # noqa: BLE001
                if info.backend != "soundfile":
                    raise
                # libsndfile opened the file but cannot decode it: let FFmpeg try.
                try:
                    alt = _probe_pyav(p)
                except Exception:  # noqa: BLE001
                    raise e from None
                if alt.sample_rate != info.sample_rate:
                    raise
                it.close()
                it = _iter_pyav(p, alt, block_frames)
                try:
                    first = next(it, None)
                except Exception as e2:  # noqa: BLE001
                    raise RuntimeError(f"soundfile: {_short(e)}; pyav: {_short(e2)}") from e2
            if first is not None:
                total += len(first)
                yield first
                for block in it:
                    total += len(block)
                    yield block
        except AudioDecodeError:
            raise
        except Exception as e:  # noqa: BLE001
            where = f" after {total / info.sample_rate:.1f} s" if total else ""
            raise AudioDecodeError(f"{p}: decode error{where}: {_short(e)}") from e
        finally:
            it.close()  # closes the file now, also when the consumer stops early
        if total == 0:
            raise AudioDecodeError(f"{p}: contains no audio samples")

    return info, blocks


def stream_mono(
    path: str | os.PathLike, block_frames: int = DEFAULT_BLOCK_FRAMES
) -> tuple[AudioInfo, Iterator[np.ndarray]]:
    """Info + generator of float32 mono blocks at the file's native rate.

    Blocks hold ``block_frames`` samples (the last one fewer), so memory stays
    bounded for any file length. Unreadable files raise :class:`AudioDecodeError`
    here; errors found while decoding (and files with no samples) raise it from
    the generator. Mono is the mean of the channels.
    """
    info, blocks = _open(path)
    return info, blocks(int(block_frames))


class StreamResampler:
    """Resamples a mono float32 stream block by block (soxr), same result as all at once.

    Why: resampling each block independently would click at block edges; a
    stream resampler carries its filter state across blocks. Output may lag the
    input (the first blocks can come back short or empty); ``last=True`` flushes.
    When the rates are equal the block is passed through without copying.
    """

    def __init__(self, in_rate: int, out_rate: int, quality: str = "HQ") -> None:
        if in_rate <= 0 or out_rate <= 0:
            raise ValueError(f"sample rates must be positive, got {in_rate} -> {out_rate}")
        if quality not in ("HQ", "VHQ"):
            raise ValueError("quality must be 'HQ' or 'VHQ'")
        self.in_rate = int(in_rate)
        self.out_rate = int(out_rate)
        self.quality = quality
        self._finished = False
        self._stream: Any = None
        if self.in_rate != self.out_rate:
            import soxr

            self._stream = soxr.ResampleStream(self.in_rate, self.out_rate, 1, dtype="float32", quality=quality)

    @property
    def passthrough(self) -> bool:
        return self._stream is None

    def process(self, block: np.ndarray, last: bool = False) -> np.ndarray:
        """Resample the next ``block`` (1-D); ``last=True`` on the final block flushes."""
        if self._finished:
            raise RuntimeError("StreamResampler already flushed with last=True")
        self._finished = bool(last)
        x = np.asarray(block, dtype=np.float32)
        if x.ndim != 1:
            raise ValueError(f"expected a 1-D mono block, got shape {x.shape}")
        if self._stream is None:
            return x
        return self._stream.resample_chunk(np.ascontiguousarray(x), last=last)


def stream_resampled(
    path: str | os.PathLike, rates: Iterable[int], block_seconds: float = 8.0,
    timings: dict[str, float] | None = None,
) -> tuple[AudioInfo, Iterator[dict[int, np.ndarray]]]:
    """Decode once, resample once per distinct rate; yield ``{rate: next block}``.

    Blocks are about ``block_seconds`` of input each (early ones may be short or
    empty because of resampler latency). Concatenating every block of one rate
    gives the whole resampled signal, ``round(frames * rate / native_rate)``
    samples long. ``timings`` (if given) accumulates the seconds spent in
    ``"decode"`` and ``"resample"``.
    """
    targets = sorted({int(r) for r in rates})
    if not targets:
        raise ValueError("stream_resampled needs at least one target rate")
    if block_seconds <= 0:
        raise ValueError("block_seconds must be > 0")
    info, blocks = _open(path)
    block_frames = max(1024, int(round(block_seconds * info.sample_rate)))
    mono = blocks(block_frames)
    resamplers = {r: StreamResampler(info.sample_rate, r) for r in targets}

    clock = time.perf_counter

    def resampled(block: np.ndarray, last: bool = False) -> dict[int, np.ndarray]:
        t0 = clock()
        out = {r: rs.process(block, last=last) for r, rs in resamplers.items()}
        if timings is not None:
            timings["resample"] = timings.get("resample", 0.0) + clock() - t0
        return out

    def gen() -> Iterator[dict[int, np.ndarray]]:
        prev: np.ndarray | None = None
        try:
            while True:  # one block of look-ahead, so the real last block flushes
                t0 = clock()
                block = next(mono, None)
                if timings is not None:
                    timings["decode"] = timings.get("decode", 0.0) + clock() - t0
                if block is None:
                    break
                if prev is not None:
                    yield resampled(prev)
                prev = block
            if prev is not None:
                yield resampled(prev, last=True)
        finally:
            mono.close()

    return info, gen()


def load_audio(path: str | os.PathLike, sample_rate: int) -> np.ndarray:
    """Whole file as mono float32 at ``sample_rate`` (for queries and tests; not for long files)."""
    sample_rate = int(sample_rate)
    _, blocks = stream_resampled(path, [sample_rate])
    parts = [b[sample_rate] for b in blocks]
    return np.concatenate(parts) if parts else np.zeros(0, dtype=np.float32)
