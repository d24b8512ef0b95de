"""Streaming extraction: decode -> resample -> chunk -> encode -> stitch -> enrich.

Threads decode files (soundfile, PyAV and soxr release the GIL) and push
fixed-length chunks into a bounded queue; the main thread batches equal-length
chunks across tracks (group-norm front ends such as MERT's must never see
padding mixed into a batch), runs the encoders and feeds each track's frames,
in order, into its enricher chain's streaming state. Memory is bounded by the
queue size and the batch size, never by track length.

:class:`Embedder` is shared by ``musicembed run`` and by queries (search), so a
query goes through exactly the path its indexed neighbours went through.
"""

from __future__ import annotations

import hashlib
import logging
import os
import queue
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping, Sequence

import numpy as np

from .chain import EnricherChain
from .components import Encoder
from .errors import AudioDecodeError
from .geometry import Geometry
from .runconfig import EmbeddingSpec
from .space import EmbeddingSpace

log = logging.getLogger("musicembed")


# --------------------------------------------------------------------------- preparation


@dataclass
class PreparedEmbedding:
    """An embedding spec with its validated chain, output dim and space."""

    spec: EmbeddingSpec
    chain: EnricherChain
    space: EmbeddingSpace
    geometry: Geometry
    keep_frames: bool = False

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def encoder(self) -> Encoder:
        return self.spec.encoder

    @classmethod
    def build(cls, spec: EmbeddingSpec) -> "PreparedEmbedding":
        geometry = spec.encoder.geometry()  # resolved once (a checkpoint's config, no weights)
        chain = EnricherChain(spec.enrichers)
        dim = chain.output_dim(geometry)
        space = EmbeddingSpace(
            encoder=spec.encoder.signature(),
            enrichers=tuple(chain.signature()),
            dim=dim,
            name=spec.name,
        )
        return cls(spec=spec, chain=chain, space=space, geometry=geometry)


# --------------------------------------------------------------------------- jobs/results


@dataclass
class Job:
    path: Path
    id: str


@dataclass
class Result:
    """One file's outcome across all embeddings of the run."""

    job: Job
    status: str  # "ok" | "skipped" | "failed"
    content_hash: str = ""
    vectors: dict[int, np.ndarray] = field(default_factory=dict)
    frames: dict[int, np.ndarray] = field(default_factory=dict)
    metadata: dict[str, Any] = field(default_factory=dict)
    error: str | None = None
    seconds: float = 0.0
    refusals: list[Any] = field(default_factory=list)
    """Records an output written by a worker refused (:class:`~musicembed_core.outputs.Refusal`)."""


def file_hash(path: Path, block: int = 1 << 20) -> str:
    """sha256 of the file's bytes (hardware-accelerated on most CPUs: ~2x blake2b),
    truncated to 128 bits: identifies unchanged content across runs."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(block):
            h.update(chunk)
    return h.hexdigest()[:32]


HASH_CACHE = ".musicembed-hashes.json"
"""The :class:`HashCache` file in a run's (or shard's) output folder."""


class HashCache:
    """(size, mtime_ns) -> content hash, so reruns do not re-read unchanged files."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self.entries: dict[str, list] = {}
        self.lock = threading.Lock()
        if path is not None and path.exists():
            import json

            try:
                self.entries = json.loads(path.read_text())
            except (OSError, ValueError):
                log.warning("ignoring unreadable hash cache %s", path)

    def hash(self, path: Path) -> tuple[str, os.stat_result]:
        digest, st = self.cached(path)
        if digest is None:
            digest = file_hash(path)
            self.remember(path, st.st_size, st.st_mtime_ns, digest)
        return digest, st

    def cached(self, path: Path) -> tuple[str | None, os.stat_result]:
        """The remembered hash of an unchanged file (None: not known), from a ``stat`` only:
        the Ray engine skips known files on the driver this way and hashes the others on
        the workers."""
        st = path.stat()
        with self.lock:
            hit = self.entries.get(str(path.resolve()))
        if hit and hit[0] == st.st_size and hit[1] == st.st_mtime_ns:
            return hit[2], st
        return None, st

    def remember(self, path: Path, size: int, mtime_ns: int, digest: str) -> None:
        """Record ``digest`` for ``path`` as of its ``size`` and ``mtime_ns``."""
        with self.lock:
            self.entries[str(path.resolve())] = [int(size), int(mtime_ns), digest]

    def save(self) -> None:
        if self.path is None:
            return
        import json

        from .atomic import atomic_write_text

        with self.lock:
            text = json.dumps(self.entries)
        atomic_write_text(self.path, text)


# --------------------------------------------------------------------------- chunking


class _Chunker:
    """Cuts a stream at the geometry's rate into windows of ``window_samples`` every ``hop_samples``."""

    def __init__(self, window: int, hop: int, min_len: int) -> None:
        self.window, self.hop, self.min_len = window, hop, max(1, min_len)
        self.buf = np.zeros(0, dtype=np.float32)
        self.emitted = 0

    @classmethod
    def of(cls, geometry: Geometry) -> "_Chunker":
        return cls(geometry.window_samples, geometry.hop_samples, geometry.min_samples)

    def push(self, block: np.ndarray) -> Iterator[np.ndarray]:
        if block.size:
            self.buf = np.concatenate([self.buf, block]) if self.buf.size else block
        while self.buf.size >= self.window:
            yield np.ascontiguousarray(self.buf[: self.window], dtype=np.float32)
            self.emitted += 1
            self.buf = self.buf[self.hop :]

    def finish(self) -> Iterator[np.ndarray]:
        tail = self.buf
        self.buf = np.zeros(0, dtype=np.float32)
        if self.emitted == 0:
            if tail.size == 0:
                return
            if tail.size < self.min_len:  # too short for the model: repeat it
                tail = np.resize(tail, self.min_len)
            self.emitted += 1
            yield np.ascontiguousarray(tail, dtype=np.float32)
            return
        fresh = tail.size - (self.window - self.hop)
        if fresh >= self.min_len:
            self.emitted += 1
            yield np.ascontiguousarray(tail, dtype=np.float32)


# --------------------------------------------------------------------------- embedder


class _Track:
    """State of one file in flight. Fields written by a decode thread are read
    by the main thread only after the queue hand-over (happens-before)."""

    def __init__(self, job: Job, n_emb: int, chains: list[EnricherChain], keep: list[bool]) -> None:
        self.job = job
        self.needed: list[bool] = [True] * n_emb
        self.n_chunks: list[int] = [0] * n_emb
        self.fed: list[int] = [0] * n_emb
        self.pending: list[dict[int, Any]] = [dict() for _ in range(n_emb)]
        self.chains = chains
        self._states: list[Any] = [None] * n_emb  # pooling state, made when first needed
        self.frames: list[list[Any]] = [[] for _ in range(n_emb)]
        self.keep = keep
        self.decoded = False
        self.failed: str | None = None
        self.reported = False
        self.content_hash = ""
        self.metadata: dict[str, Any] = {}
        self.seconds = 0.0

    def state(self, e: int) -> Any:
        """Streaming pooling state of embedding ``e`` (made lazily: a skipped track needs none)."""
        if self._states[e] is None:
            self._states[e] = self.chains[e].start()
        return self._states[e]

    def complete(self) -> bool:
        return self.decoded and all(
            (not need) or self.fed[e] == self.n_chunks[e] for e, need in enumerate(self.needed)
        )

    def feed(self, e: int, idx: int, layers: Any, overlap: int) -> None:
        """Chunk ``idx``'s encoder output ``[L, F, D]`` for embedding ``e``: its frames
        (the first ``overlap`` dropped after chunk 0) enter the pooling state in chunk order."""
        frames = self.chains[e].frames(layers)
        if idx > 0 and overlap:
            frames = frames[:, overlap:]
        self.pending[e][idx] = frames
        while self.fed[e] in self.pending[e]:
            fr = self.pending[e].pop(self.fed[e])
            if fr.shape[1]:
                self.state(e).update_framed(fr)
            if self.keep[e]:
                self.frames[e].append(fr.numpy())
            self.fed[e] += 1

    def finish(self, e: int) -> tuple[np.ndarray, np.ndarray | None]:
        """Embedding ``e``'s track vector (float32) and, when kept, its frames ``[L, F, D]``."""
        vec = self.state(e).finish().numpy().astype(np.float32)
        frames = np.concatenate(self.frames[e], axis=1) if self.keep[e] and self.frames[e] else None
        return vec, frames

    def result(self, embeddings: Sequence[PreparedEmbedding]) -> Result:
        """The finished track: every needed embedding's vector (and kept frames), or a
        failed Result when the enricher chain raises or a value is not finite."""
        res = Result(self.job, "ok", self.content_hash, metadata=self.metadata, seconds=self.seconds)
        try:
            for e, need in enumerate(self.needed):
                if need:
                    res.vectors[e], frames = self.finish(e)
                    if frames is not None:
                        res.frames[e] = frames
        except Exception as exc:  # noqa: BLE001
            return Result(self.job, "failed", self.content_hash, error=chain_failure(exc))
        bad = non_finite(res, embeddings)
        if bad:
            return Result(self.job, "failed", self.content_hash, error=bad)
        return res


_END = object()


class ThreadBudget:
    """torch's intra-op threads for the encoders, sized to what the decoders leave free.

    The decode threads and the encoder share the machine's cores. With a cheap
    encoder the decoders are the bottleneck: the encoder then runs on the cores
    they leave (``cores - decode_workers``, at least 1), because an oversubscribed
    torch thread pool spin-waits against them and collapses as soon as anything
    else runs on the machine. With a heavy encoder, chunks are always ready when
    the encoder asks (the decoders wait on a full queue): the encoder then gets
    every thread torch would use, as it does once decoding is over. The switch
    follows the share of time the encoder thread waits for chunks (two batches in
    a row on one side of a band switch it); the previous setting is restored at the end. ``fixed`` pins the
    number (``run.torch_threads``).

    The first batch runs on every thread and decides the start: its wait says nothing
    (the queue starts empty whatever the bottleneck), its encode time does. A batch that
    took ``HEAVY_BATCH_SECONDS`` or more is a heavy model's (CLAP, MuQ: seconds per
    batch, while decoding a batch's audio takes milliseconds): it keeps every thread. A
    cheaper one starts on the decoders' leftover cores, as before.
    """

    HEAVY_BATCH_SECONDS = 0.25

    def __init__(self, decode_workers: int, fixed: int | None = None) -> None:
        self.decode_workers = decode_workers
        self.fixed = fixed
        self.saved: int | None = None
        self.current: int | None = None
        self.streak = 0  # > 0: batches in a row that found chunks ready; < 0: that waited
        self.switches = 0
        self.seen = 0  # observations so far

    def start(self) -> None:
        import torch

        self.saved = torch.get_num_threads()
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
        self.high = self.saved
        self.low = max(1, min(self.saved, cores - self.decode_workers))
        self.seen = 0
        self._set(self.fixed if self.fixed else self.high)

    def _set(self, n: int) -> None:
        import torch

        if n != self.current:
            torch.set_num_threads(int(n))
            if self.current is not None:
                self.switches += 1
            self.current = n

    def observe(self, waited: float, busy: float, decoding: bool) -> None:
        """Called before each batch: ``waited`` seconds the encoder thread spent waiting
        for chunks since the previous batch, ``busy`` seconds it spent encoding it,
        ``decoding``: whether decoders are still running."""
        if self.fixed or self.saved is None:
            return
        if not decoding:
            self._set(self.high)  # nothing left to decode: the encoder gets every thread
            return
        self.seen += 1
        if self.seen == 1:  # before the first batch: nothing measured yet, every thread
            return
        if self.seen == 2:  # the first batch waited anyway (empty queue); its cost decides
            if busy < self.HEAVY_BATCH_SECONDS:
                self._set(self.low)
            return
        share = waited / (waited + busy) if waited + busy > 0 else 1.0
        # Two batches in a row on the same side of the band switch (hysteresis).
        if share < 0.05:
            self.streak = self.streak + 1 if self.streak > 0 else 1
        elif share > 0.2:
            self.streak = self.streak - 1 if self.streak < 0 else -1
        else:
            self.streak = 0
        if self.streak >= 2:
            self._set(self.high)  # chunks are always ready: the encoder is the bottleneck
        elif self.streak <= -2:
            self._set(self.low)  # the encoder waits for chunks: the decoders are

    def stop(self) -> None:
        if self.saved is not None:
            import torch

            torch.set_num_threads(self.saved)
            self.saved = None
            self.current = None


class Embedder:
    """Turns files into vectors for several embeddings in one decoding pass.

    ``timings`` (seconds, summed over threads) says where the time went:
    ``hash``, ``decode`` and ``resample`` on the decode threads; ``load`` (the
    encoders, at the first batch), ``encode``, ``pool`` and ``wait`` (the main
    thread waiting for chunks) on the main thread.
    """

    def __init__(
        self,
        embeddings: Sequence[PreparedEmbedding],
        batch_size: int = 8,
        decode_workers: int = 2,
        hash_cache: HashCache | None = None,
        known: Sequence[Mapping[str, str]] | None = None,
        queue_chunks: int | None = None,
        torch_threads: int | None = None,
    ) -> None:
        self.embeddings = list(embeddings)
        self.budget = ThreadBudget(decode_workers, torch_threads)
        self.timings: dict[str, float] = {}
        self._thread_timings: list[dict[str, float]] = []
        self.batch_size = batch_size
        self.decode_workers = decode_workers
        self.hash_cache = hash_cache or HashCache(None)
        self.known = list(known) if known is not None else [{} for _ in self.embeddings]
        self.queue_chunks = queue_chunks or max(4, 2 * batch_size * len(self.embeddings))
        self.geometry = [p.geometry for p in self.embeddings]
        self.rates = sorted({g.sample_rate for g in self.geometry})
        self.batches_run = 0
        self._local = threading.local()
        self._waited = 0.0  # encoder thread: seconds waiting for chunks since the last batch
        self._busy = 0.0  # seconds the last batch took
        self._decoding = True
        self._loaded = False

    def load(self) -> None:
        for p in self.embeddings:
            p.encoder.load()
        self._loaded = True

    def _ensure_loaded(self) -> None:
        """Load the encoders (and size torch's threads) before the first batch, not before:
        a rerun where every file is skipped imports no torch and loads no model. A load
        error propagates (the run stops), it is not one file's failure."""
        if not self._loaded:
            t0 = time.perf_counter()
            self.load()
            self._add("load", time.perf_counter() - t0)
        if self.budget.saved is None:  # once per embed(): stop() restores torch's setting
            self.budget.start()

    # ---------------------------------------------------------------- decode side
    def _decode(self, track: _Track, out: "queue.Queue[Any]") -> None:
        from .audio import stream_resampled

        job = track.job
        clock = time.perf_counter
        timings = self._local.timings
        try:
            check_id(job.id)
            t0 = clock()
            digest, st = self.hash_cache.hash(job.path)
            timings["hash"] = timings.get("hash", 0.0) + clock() - t0
            track.content_hash = digest
            track.needed = [self.known[e].get(job.id) != digest for e in range(len(self.embeddings))]
            if not any(track.needed):
                out.put(("skip", track))
                return
            info, blocks = stream_resampled(job.path, self.rates, timings=timings)
            chunkers = [
                _Chunker.of(g) if track.needed[e] else None for e, g in enumerate(self.geometry)
            ]
            counts = [0] * len(self.embeddings)
            decoded_samples = 0
            first_rate = self.rates[0]
            for block in blocks:
                decoded_samples += block[first_rate].size
                for e, ch in enumerate(chunkers):
                    if ch is None:
                        continue
                    for chunk in ch.push(block[self.geometry[e].sample_rate]):
                        out.put(("chunk", track, e, counts[e], chunk))
                        counts[e] += 1
                if track.failed:
                    return
            for e, ch in enumerate(chunkers):
                if ch is None:
                    continue
                for chunk in ch.finish():
                    out.put(("chunk", track, e, counts[e], chunk))
                    counts[e] += 1
            if decoded_samples == 0 or not any(counts[e] for e in range(len(counts)) if track.needed[e]):
                raise no_samples_error(job.path)
            track.n_chunks = counts
            track.seconds = decoded_samples / first_rate
            track.metadata = track_metadata(job.path, info, st, track.seconds)
            out.put(("done", track))
        except Exception as exc:  # noqa: BLE001 - any failure is recorded per file
            out.put(("fail", track, failure_reason(exc)))

    def _worker(self, jobs: Iterator[_Track], lock: threading.Lock, out: "queue.Queue[Any]") -> None:
        self._local.timings = {}
        with lock:
            self._thread_timings.append(self._local.timings)
        try:
            while True:
                with lock:
                    track = next(jobs, None)
                if track is None:
                    return
                out.put(("start", track))
                self._decode(track, out)
        finally:
            out.put((_END,))

    # ---------------------------------------------------------------- encode side
    def _run_batch(self, e: int, items: list[tuple[_Track, int, np.ndarray]]) -> list[_Track]:
        prep = self.embeddings[e]
        live = [it for it in items if not it[0].failed]
        if not live:
            return []
        import torch

        wave = torch.from_numpy(np.stack([it[2] for it in live]))
        self._ensure_loaded()
        self.budget.observe(self._waited, self._busy, self._decoding)
        self._waited = 0.0
        clock = time.perf_counter
        t0 = clock()
        try:
            out = encode_wave(prep, wave)
        except Exception as exc:  # noqa: BLE001
            for track, _, _ in live:
                track.failed = encoder_failure(prep, exc)
            return [it[0] for it in live]
        self.batches_run += 1
        t1 = clock()
        self._busy = t1 - t0
        self._add("encode", t1 - t0)
        touched = []
        overlap = self.geometry[e].overlap_frames
        for b, (track, idx, _) in enumerate(live):
            track.feed(e, idx, out[:, b], overlap)
            touched.append(track)
        self._add("pool", clock() - t1)
        return touched

    def _add(self, key: str, seconds: float) -> None:
        self.timings[key] = self.timings.get(key, 0.0) + seconds

    def collect_timings(self) -> dict[str, float]:
        """Main-thread and decode-thread timings so far (seconds, summed over threads)."""
        out = dict(self.timings)
        for t in self._thread_timings:
            for k, v in list(t.items()):
                out[k] = out.get(k, 0.0) + v
        return out

    def embed(self, jobs: Iterable[Job]) -> Iterator[Result]:
        """Yield one :class:`Result` per job as tracks complete (not in input order)."""
        chains = [p.chain for p in self.embeddings]
        keep = [p.keep_frames for p in self.embeddings]
        tracks = (_Track(j, len(self.embeddings), chains, keep) for j in jobs)
        out: "queue.Queue[Any]" = queue.Queue(maxsize=self.queue_chunks)
        self._waited, self._busy, self._decoding = 0.0, 0.0, True
        lock = threading.Lock()
        workers = [
            threading.Thread(target=self._worker, args=(tracks, lock, out), daemon=True)
            for _ in range(self.decode_workers)
        ]
        for w in workers:
            w.start()
        alive = len(workers)
        full: list[list[tuple[_Track, int, np.ndarray]]] = [[] for _ in self.embeddings]
        in_flight: dict[int, _Track] = {}

        def finished(track: _Track) -> Result | None:
            if track.reported:
                return None
            if track.failed:
                track.reported = True
                in_flight.pop(id(track), None)
                return Result(track.job, "failed", track.content_hash, error=track.failed)
            if not track.complete():
                return None
            in_flight.pop(id(track), None)
            track.reported = True
            return track.result(self.embeddings)

        def run(e: int, items: list[tuple[_Track, int, np.ndarray]]) -> Iterator[Result]:
            for track in dict.fromkeys(self._run_batch(e, items)):
                r = finished(track)
                if r is not None:
                    yield r

        def flush(e: int) -> Iterator[Result]:
            items, full[e] = full[e], []
            yield from run(e, items)

        try:
            while alive or any(full):
                try:
                    t_wait = time.perf_counter()
                    try:
                        item = out.get(timeout=0.01) if any(full) else out.get()
                    finally:
                        waited = time.perf_counter() - t_wait
                        self._waited += waited
                        self._add("wait", waited)
                except queue.Empty:
                    # Decoders are slower than the model right now: don't idle.
                    e = max(range(len(full)), key=lambda i: len(full[i]))
                    yield from flush(e)
                    continue
                tag = item[0]
                if tag is _END:
                    alive -= 1
                    self._decoding = alive > 0
                    if not alive:
                        for e in range(len(full)):
                            yield from flush(e)
                elif tag == "start":
                    in_flight[id(item[1])] = item[1]
                elif tag == "chunk":
                    _, track, e, idx, chunk = item
                    if track.failed:
                        continue
                    if chunk.size != self.geometry[e].window_samples:
                        # A tail or short track: its own batch (never mix lengths).
                        yield from run(e, [(track, idx, chunk)])
                        continue
                    full[e].append((track, idx, chunk))
                    if len(full[e]) >= self.batch_size:
                        yield from flush(e)
                elif tag == "done":
                    track = item[1]
                    track.decoded = True
                    r = finished(track)
                    if r is not None:
                        yield r
                elif tag == "skip":
                    in_flight.pop(id(item[1]), None)
                    yield Result(item[1].job, "skipped", item[1].content_hash)
                elif tag == "fail":
                    track, reason = item[1], item[2]
                    track.failed = track.failed or reason
                    r = finished(track)
                    if r is not None:
                        yield r
        finally:
            self.budget.stop()
            for t in list(in_flight.values()):
                t.failed = t.failed or "run interrupted"
            # Drain so blocked decoders can observe `failed` and exit.
            while alive:
                try:
                    item = out.get(timeout=0.5)
                except queue.Empty:
                    continue
                if item[0] is _END:
                    alive -= 1
                elif len(item) > 1 and isinstance(item[1], _Track):
                    item[1].failed = item[1].failed or "run interrupted"


def encode_wave(prep: PreparedEmbedding, wave: Any) -> Any:
    """One encoder call on a batch of equal-length chunks ``[B, T]``: ``[L, B, F, D]``
    float32 on the CPU; a wrong shape raises (the batch's tracks fail)."""
    import torch

    out = prep.encoder.encode(wave)
    if out.dim() != 4 or out.shape[1] != wave.shape[0]:
        raise RuntimeError(
            f"encoder {prep.encoder.name!r} returned shape {tuple(out.shape)}; "
            f"expected [L, B={wave.shape[0]}, F, D]"
        )
    return out.detach().to("cpu", torch.float32)


def encoder_failure(prep: PreparedEmbedding, exc: BaseException) -> str:
    return f"encoder {prep.encoder.name!r} failed: {type(exc).__name__}: {exc}"


def chain_failure(exc: BaseException) -> str:
    return f"enricher chain failed: {type(exc).__name__}: {exc}"


def failure_reason(exc: BaseException) -> str:
    """One file's failure as the summary shows it."""
    return str(exc) if isinstance(exc, AudioDecodeError) else f"{type(exc).__name__}: {exc}"


def no_samples_error(path: Path) -> AudioDecodeError:
    return AudioDecodeError(f"{path}: contains no audio samples")


def track_metadata(path: Path, info: Any, st: Any, seconds: float) -> dict[str, Any]:
    """The metadata every output stores with a track (``st``: the file's stat result)."""
    return {
        "path": str(path.resolve()),
        "duration": round(seconds, 3),
        "sample_rate": info.sample_rate,
        "channels": info.channels,
        "size": st.st_size,
        "mtime_ns": st.st_mtime_ns,
        "decoder": info.backend,
    }


def check_id(track_id: str) -> None:
    """Track ids are stored as UTF-8 by every output: a file name that is not valid
    UTF-8 (``os.fsdecode`` keeps its bytes as lone surrogates) fails that one file."""
    try:
        track_id.encode("utf-8")
    except UnicodeEncodeError:
        shown = track_id.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
        raise AudioDecodeError(
            f"the file name '{shown}' is not valid UTF-8, and track ids are stored as UTF-8 "
            "text by every output: rename it to UTF-8 (e.g. `convmv -f latin1 -t utf8 "
            "--notest -r FOLDER`), then run again"
        ) from None


def non_finite(res: "Result", embeddings: Sequence[PreparedEmbedding]) -> str | None:
    """Why a track's vectors (or stored frames) cannot be stored: NaN or infinite values.

    Checked on the vectors, after the whole chain: a NaN anywhere in the decoded audio
    or in the model's output ends up there, and no output ever sees it.
    """
    for e, vec in res.vectors.items():
        frames = res.frames.get(e)
        for what, arr in (("track vector", vec), ("frames", frames)):
            if arr is not None and not np.isfinite(arr).all():
                n = int(arr.size - np.isfinite(arr).sum())
                return (
                    f"the {what} of embedding {embeddings[e].name!r} holds {n} non-finite "
                    "value(s) (NaN/Inf): the decoded audio has NaN or infinite samples, or the "
                    "encoder overflowed. Nothing was stored for this file."
                )
    return None


def jobs_for(
    source: str | os.PathLike, limit: int | None = None,
    skipped: list[tuple[str, str]] | None = None,
) -> list[Job]:
    """Every audio file under ``source`` with its stable id (path relative to source).

    ``skipped`` receives ``(path, reason)`` for what the search passed over
    (symlink loops, dangling links, unreadable folders)."""
    from .audio import find_audio_files

    root = Path(source).expanduser()
    if not root.exists():
        from .errors import MusicembedError

        raise MusicembedError(f"run.source {str(root)!r} does not exist")
    files = find_audio_files(root, skipped)
    if limit is not None:
        files = files[:limit]
    base = source_base(root)
    return [Job(path=f, id=f.relative_to(base).as_posix()) for f in files]


def source_base(source: str | os.PathLike) -> Path:
    """The folder track ids are relative to: ``source`` itself, or the folder of a
    ``source`` that is one file."""
    root = Path(source).expanduser()
    return root if not root.is_file() else root.parent


def embed_paths(
    embeddings: Sequence[PreparedEmbedding], paths: Sequence[str | os.PathLike], batch_size: int = 8
) -> list[Result]:
    """Embed a few files in input order (queries, tests)."""
    emb = Embedder(embeddings, batch_size=batch_size, decode_workers=1)
    emb.load()
    jobs = [Job(Path(p), Path(p).name) for p in paths]
    by_path = {id(r.job): r for r in emb.embed(jobs)}
    return [by_path[id(j)] for j in jobs]

