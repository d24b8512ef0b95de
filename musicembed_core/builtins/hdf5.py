"""HDF5 exporter: one self-describing, crash-safe ``.h5`` file per embedding space.

Layout of the main file (``format = "musicembed-hdf5"``, ``format_version = 1``)::

    /ids           vlen utf-8 str [N]
    /vectors       float32 [N, dim], chunked (chunk_rows x dim), resizable
    /content_hash  vlen utf-8 str [N]
    /metadata      vlen utf-8 str [N]   one JSON object per row
    /frames        float32 [total_frames, L, D]   (only when frames are stored)
    /frame_offset  int64 [N]            first row of a track in /frames
    /frame_count   int64 [N]            its number of frames (0: none stored)
    attrs: space (EmbeddingSpace JSON), space_hash, format, format_version, dim,
           frame_rate (with frames: frame i of a track is at i / frame_rate seconds)

Crash safety: the main file is never modified in place, only replaced with
``os.replace``. During a run, records are buffered and, every
``checkpoint_every`` records and at each :meth:`Hdf5Exporter.flush`, written as
a complete *segment* file (same layout) in ``<path>.pending/`` -- temp name,
fsync, atomic rename. A killed run therefore leaves the previous main file
intact plus durable segments, which the next :meth:`Hdf5Exporter.open` reads so
that :meth:`known` covers them. :meth:`Hdf5Exporter.close` consolidates main +
segments (last write per id wins) into ``<path>.tmp-<pid>``, replaces the main
file with it and only then deletes the segments; being killed in between merely
repeats the (idempotent) consolidation next time.

Disk full: HDF5 crashes the process (segmentation fault) when a write fails
with ``ENOSPC`` inside the library, so HDF5 is never left to find out. Before
each file is written its size is estimated and checked against the free space
(:func:`musicembed_core.atomic.ensure_free_space`); files up to
``_IMAGE_BYTES`` (segments, small outputs) are built in memory and written
with plain Python I/O, so even a disk that fills up meanwhile only raises. A
full disk ends in one ``OSError(ENOSPC)`` naming the output, the path, the
bytes needed and free, and what was kept: the main file is untouched, the
temporary file removed, the segments kept, and a rerun completes the work.

numpy/h5py are imported inside functions: this module is imported when the
plugin list is built, which must stay fast.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
from typing import TYPE_CHECKING, Any, Iterable, Mapping, Sequence

from ..atomic import (
    atomic_path,
    clean_stale_temps,
    disk_full_error,
    ensure_free_space,
    fsync_dir,
    is_disk_full,
    json_default,
)
from ..components import Exporter, Record
from ..errors import MusicembedError

if TYPE_CHECKING:  # pragma: no cover
    import numpy as np

    from ..space import EmbeddingSpace

log = logging.getLogger(__name__)

FORMAT = "musicembed-hdf5"
FORMAT_VERSION = 1
PENDING_SUFFIX = ".pending"
_SEG_RE = re.compile(r"^seg-(\d+)-(\d+)\.h5$")
_COMPRESSIONS = (None, "gzip", "lzf")
_COPY_BYTES = 64 << 20
"""Upper bound on the bytes of vectors/frames held in memory while copying."""
_IMAGE_BYTES = 128 << 20
"""Files estimated up to this size are built in memory (HDF5 core driver) and written
with plain Python I/O, where a full disk is an ordinary OSError; larger ones are
written by HDF5 itself after the free-space check."""


# --------------------------------------------------------------------------- helpers


def dump_metadata(metadata: Mapping[str, Any] | None) -> str:
    """One row's metadata as a JSON object (numpy values converted, others str())."""
    return json.dumps(dict(metadata or {}), ensure_ascii=False, sort_keys=True, default=json_default)


def _enc(values: Iterable[str]) -> "np.ndarray":
    """Strings -> object array of utf-8 bytes; lone surrogates (undecodable file names) survive."""
    import numpy as np

    return np.array([s.encode("utf-8", "surrogateescape") for s in values], dtype=object)


def _read_str(ds: Any, sel: Any = slice(None)) -> list[str]:
    if len(ds) == 0:
        return []
    return list(ds.asstr(errors="surrogateescape")[sel])


def _str_bytes(ds: Any, block: int = 65536) -> int:
    """Total bytes of a vlen string dataset, read block by block."""
    return sum(sum(map(len, ds[a : a + block])) for a in range(0, len(ds), block))


def frame_rows(
    rec: Record, frame_shape: tuple[int, int] | None, where: str
) -> tuple["np.ndarray", tuple[int, int]]:
    """A record's frames ``[L, F, D]`` as float32 rows ``[F, L, D]`` and the output's ``(L, D)``.

    Every track of an output has the same ``[L, D]``: another one is refused,
    naming the record (the safetensors exporter shares this check).
    """
    import numpy as np

    fr = np.asarray(rec.frames, dtype=np.float32)
    if fr.ndim != 3:
        raise ValueError(f"record {rec.id!r}: frames must be [L, F, D], got shape {fr.shape}")
    shape = (int(fr.shape[0]), int(fr.shape[2]))
    if frame_shape is not None and shape != frame_shape:
        raise ValueError(
            f"record {rec.id!r}: frames have [L, D] = {list(shape)} but {where} "
            f"stores frames with [L, D] = {list(frame_shape)}"
        )
    return np.ascontiguousarray(fr.transpose(1, 0, 2)), shape


def _frame_chunk_rows(layers: int, dim: int) -> int:
    return max(1, min(1024, (1 << 20) // max(1, layers * dim * 4)))


def _chunked(rows: int, chunk: int) -> int:
    """Rows allocated for ``rows`` in chunks of ``chunk`` (HDF5 allocates whole chunks)."""
    return -(-rows // chunk) * chunk if rows else 0


def estimate_bytes(
    n: int, dim: int, total_frames: int, frame_shape: tuple[int, int] | None,
    chunk_rows: int, str_bytes: int,
) -> int:
    """Upper estimate of the size of one uncompressed output file (see :class:`_Writer`)."""
    chunk = max(1, min(chunk_rows, max(1, n)))
    rows = _chunked(n, chunk)
    size = 64 << 10  # superblock, object headers, attributes (the space JSON), B-trees
    size += rows * dim * 4  # vectors
    size += 3 * rows * 16 + str_bytes + 3 * (16 * n + 4096)  # vlen refs + global heaps
    if frame_shape is not None:
        layers, fdim = frame_shape
        frame_chunk = _frame_chunk_rows(layers, fdim)
        size += (_chunked(total_frames, frame_chunk) + frame_chunk) * layers * fdim * 4
        size += 2 * rows * 8  # frame_offset, frame_count
    return size + 64 * (rows // chunk + 1) * 4  # chunk index entries


_NOT_OURS_WRITING = "refusing to overwrite it. Choose another output path or move the file away."
_NOT_OURS_READING = "expected a file written by `musicembed run` (exporters.hdf5)."


def _check_format(f: Any, where: str, not_ours: str = _NOT_OURS_WRITING) -> None:
    fmt = f.attrs.get("format")
    if isinstance(fmt, bytes):
        fmt = fmt.decode()
    if fmt != FORMAT or "space" not in f.attrs:
        raise MusicembedError(
            f"{where} is not a musicembed HDF5 output (format attribute {fmt!r}); {not_ours}"
        )
    version = int(f.attrs.get("format_version", 0))
    if version > FORMAT_VERSION:
        raise MusicembedError(
            f"{where} has format_version {version}, newer than this musicembed understands "
            f"({FORMAT_VERSION}); upgrade musicembed or write to another path."
        )


class _Writer:
    """Writes one complete file of known size (rows and frames) block by block."""

    def __init__(
        self,
        path: str,
        space: "EmbeddingSpace",
        n: int,
        total_frames: int,
        frame_shape: tuple[int, int] | None,
        compression: str | None,
        chunk_rows: int,
        in_memory: bool = False,
    ) -> None:
        import h5py
        import numpy as np

        dim = int(space.dim)
        vec_chunk = (max(1, chunk_rows), dim)
        cache = 2 * vec_chunk[0] * dim * 4
        fr_chunk: tuple[int, int, int] | None = None
        if frame_shape is not None:
            fr_chunk = (_frame_chunk_rows(*frame_shape), *frame_shape)
            cache += 2 * fr_chunk[0] * frame_shape[0] * frame_shape[1] * 4
        rdcc = int(min(max(cache, 4 << 20), 1 << 30))
        self.in_memory = in_memory
        if in_memory:  # nothing reaches the disk until close() hands back the image
            self.f = h5py.File(path, "w", driver="core", backing_store=False, rdcc_nbytes=rdcc)
        else:
            self.f = h5py.File(path, "w", rdcc_nbytes=rdcc)
        try:
            f = self.f
            f.attrs["format"] = FORMAT
            f.attrs["format_version"] = FORMAT_VERSION
            f.attrs["space"] = space.to_json()
            f.attrs["space_hash"] = space.hash
            f.attrs["dim"] = dim
            if frame_shape is not None and space.encoder.get("frame_rate"):
                # Frame i of a track is at i / frame_rate seconds from its start.
                f.attrs["frame_rate"] = float(space.encoder["frame_rate"])
            s = h5py.string_dtype("utf-8")
            schunk = (max(1, chunk_rows),)
            self.ids = f.create_dataset("ids", (n,), dtype=s, maxshape=(None,), chunks=schunk)
            self.vectors = f.create_dataset(
                "vectors", (n, dim), dtype=np.float32, maxshape=(None, dim), chunks=vec_chunk,
                compression=compression,
            )
            self.hashes = f.create_dataset("content_hash", (n,), dtype=s, maxshape=(None,), chunks=schunk)
            self.meta = f.create_dataset("metadata", (n,), dtype=s, maxshape=(None,), chunks=schunk)
            self.frames = self.offsets = self.counts = None
            if frame_shape is not None:
                self.frames = f.create_dataset(
                    "frames", (total_frames, *frame_shape), dtype=np.float32,
                    maxshape=(None, *frame_shape), chunks=fr_chunk, compression=compression,
                )
                self.offsets = f.create_dataset(
                    "frame_offset", (n,), dtype=np.int64, maxshape=(None,), chunks=schunk
                )
                self.counts = f.create_dataset(
                    "frame_count", (n,), dtype=np.int64, maxshape=(None,), chunks=schunk
                )
        except BaseException:
            self.f.close()
            raise
        self.n, self.total_frames = n, total_frames
        self.row = 0
        self.frame_row = 0  # next /frames row to be filled by add_frames
        self.frame_alloc = 0  # next /frames row to be assigned by add_rows

    def add_rows(
        self,
        ids: Sequence[str],
        vectors: "np.ndarray",
        hashes: Sequence[str],
        metas: Sequence[str],
        frame_counts: "np.ndarray | None",
    ) -> None:
        import numpy as np

        k = len(ids)
        if k == 0:
            return
        a, b = self.row, self.row + k
        self.ids[a:b] = _enc(ids)
        self.vectors[a:b] = vectors
        self.hashes[a:b] = _enc(hashes)
        self.meta[a:b] = _enc(metas)
        if self.counts is not None:
            counts = np.zeros(k, np.int64) if frame_counts is None else np.asarray(frame_counts, np.int64)
            offsets = self.frame_alloc + np.concatenate(([0], np.cumsum(counts)[:-1])).astype(np.int64)
            self.offsets[a:b] = offsets
            self.counts[a:b] = counts
            self.frame_alloc += int(counts.sum())
        self.row = b

    def add_frames(self, frames: "np.ndarray") -> None:
        k = len(frames)
        if k:
            self.frames[self.frame_row : self.frame_row + k] = frames
            self.frame_row += k

    def close(self) -> bytes | None:
        """Close the complete file; an in-memory one is returned as its bytes."""
        try:
            if self.row != self.n or self.frame_row != self.total_frames or self.frame_alloc != self.total_frames:
                raise RuntimeError(  # pragma: no cover - internal consistency
                    f"HDF5 writer wrote {self.row}/{self.n} rows and {self.frame_row}/"
                    f"{self.total_frames} frames"
                )
            if self.in_memory:
                self.f.flush()
                return bytes(self.f.id.get_file_image())
            return None
        finally:
            self.f.close()

    def abort(self) -> None:
        """Close after a failure (the file is discarded): no consistency check."""
        with contextlib.suppress(Exception):
            self.f.close()


# --------------------------------------------------------------------------- exporter


class Hdf5Exporter(Exporter):
    """All vectors of one embedding space in one HDF5 file, safe against kill -9.

    Each run rewrites the file once at :meth:`close` (streamed in bounded
    memory); in between, progress is made durable as small segment files so a
    killed run loses at most ``checkpoint_every`` records.
    """

    name = "hdf5"
    extension = ".h5"

    def __init__(
        self,
        path: str | None = None,
        store_frames: bool = False,
        compression: str | None = None,
        checkpoint_every: int = 64,
        chunk_rows: int = 256,
    ) -> None:
        if compression not in _COMPRESSIONS:
            raise ValueError(f"hdf5 exporter: compression must be one of {_COMPRESSIONS}, got {compression!r}")
        if int(checkpoint_every) < 1:
            raise ValueError(f"hdf5 exporter: checkpoint_every must be >= 1, got {checkpoint_every!r}")
        if int(chunk_rows) < 1:
            raise ValueError(f"hdf5 exporter: chunk_rows must be >= 1, got {chunk_rows!r}")
        self.path = path
        self.store_frames = bool(store_frames)
        self.compression = compression
        self.checkpoint_every = int(checkpoint_every)
        self.chunk_rows = int(chunk_rows)
        self._file: str | None = None
        self._closed = True

    # ------------------------------------------------------------------ lifecycle

    def open(self, path: str, space: "EmbeddingSpace") -> None:
        """Check the existing output's space and collect what is stored (main file + pending segments)."""
        import h5py  # noqa: F401  (fail early, with the import error, if missing)

        path = os.fspath(path)
        self._file = path
        self._space = space
        self._pending = path + PENDING_SUFFIX
        parent = os.path.dirname(os.path.abspath(path))
        os.makedirs(parent, exist_ok=True)
        clean_stale_temps(parent, prefix=os.path.basename(path) + ".tmp-")
        clean_stale_temps(self._pending)

        self._known: dict[str, str] = {}
        self._frame_shape: tuple[int, int] | None = None
        if os.path.exists(path):
            self._scan(path, f"HDF5 file {path}", segment=False)
        self._segments: list[str] = []
        self._next_seg = 1
        for name in self._segment_names():
            seg = os.path.join(self._pending, name)
            self._next_seg = max(self._next_seg, int(_SEG_RE.match(name).group(1)) + 1)
            if self._scan(seg, f"HDF5 file {path} (pending segment {name})", segment=True):
                self._segments.append(seg)
        self._buffer: list[tuple[str, "np.ndarray", str, str, "np.ndarray | None"]] = []
        self._closed = False

    def known(self) -> Mapping[str, str]:
        """``{id: content_hash}`` stored so far, including this run's and a killed run's records."""
        return dict(getattr(self, "_known", {}))

    def write(self, records: Sequence[Record]) -> None:
        """Validate and buffer records; every ``checkpoint_every`` they become a durable segment."""
        if self._closed:
            raise RuntimeError("Hdf5Exporter.write() called before open() or after close()")
        frame_shape = self._frame_shape
        rows = []
        for rec in records:
            vec = self._space.check_record(rec)
            meta = dump_metadata(rec.metadata)
            for what, text in (("id", rec.id), ("content_hash", rec.content_hash), ("metadata", meta)):
                try:
                    text.encode("utf-8", "surrogateescape")
                except UnicodeEncodeError as exc:
                    raise ValueError(
                        f"record {rec.id!r}: its {what} holds {text[exc.start:exc.end]!r}, which "
                        f"{self._file} cannot store (not text, nor a byte of an undecodable file "
                        f"name); it is not stored"
                    ) from None
            frames = None
            if self.store_frames and rec.frames is not None:
                frames, frame_shape = frame_rows(rec, frame_shape, self._file)
            rows.append((rec.id, vec, rec.content_hash, meta, frames))
        self._frame_shape = frame_shape
        self._buffer.extend(rows)
        for row in rows:
            self._known[row[0]] = row[2]
        if len(self._buffer) >= self.checkpoint_every:
            self._flush_segment()

    def flush(self) -> None:
        """Write the records buffered so far as one durable segment (see the module doc)."""
        if self._closed:
            raise RuntimeError("Hdf5Exporter.flush() called before open() or after close()")
        self._flush_segment()

    def close(self) -> None:
        """Flush the buffer, then consolidate everything into the main file (atomic replace)."""
        if self._closed:
            return
        self._flush_segment()
        if self._segments or not os.path.exists(self._file):
            self._consolidate()
        elif os.path.isdir(self._pending):  # emptied by a run killed just before removing it
            self._remove_pending_dir()
        self._closed = True

    # ------------------------------------------------------------------ internals

    def _segment_names(self) -> list[str]:
        try:
            names = [n for n in os.listdir(self._pending) if _SEG_RE.match(n)]
        except FileNotFoundError:
            return []
        return sorted(names, key=lambda n: tuple(int(x) for x in _SEG_RE.match(n).groups()))

    def _scan(self, file: str, where: str, segment: bool) -> bool:
        """Space check + ids/hashes of one file into ``_known``; False for an unreadable segment."""
        import h5py

        try:
            f = h5py.File(file, "r")
        except OSError as exc:
            if not segment:
                raise MusicembedError(
                    f"cannot read {where}: {exc}. It was not written by a musicembed run, or the "
                    f"disk lost data; move it away to rebuild."
                ) from exc
            # Segments are fsync'ed before they get their final name, so this is
            # storage damage; its records are simply recomputed.
            log.warning("ignoring unreadable %s (%s); its records will be recomputed", where, exc)
            with contextlib.suppress(OSError):
                os.replace(file, file + ".corrupt")
            return False
        with f:
            _check_format(f, where)
            self._space.check_same(f.attrs["space"], where=where)
            ids = _read_str(f["ids"])
            hashes = _read_str(f["content_hash"])
            self._known.update(zip(ids, hashes))
            if "frames" in f:
                shape = (int(f["frames"].shape[1]), int(f["frames"].shape[2]))
                if self._frame_shape is not None and shape != self._frame_shape:
                    raise MusicembedError(
                        f"{where} stores frames with [L, D] = {list(shape)}, unlike the rest of "
                        f"the output ({list(self._frame_shape)}); move it away to rebuild."
                    )
                self._frame_shape = shape
        return True

    def _flush_segment(self) -> None:
        """Write the buffer as one complete segment file (temp + fsync + rename)."""
        import numpy as np

        if not self._buffer:
            return
        last: dict[str, int] = {}
        for i, row in enumerate(self._buffer):
            last.pop(row[0], None)
            last[row[0]] = i  # keep the last write of an id, in write order
        rows = [self._buffer[i] for i in last.values()]
        has_frames = self._frame_shape is not None
        counts = np.array([0 if r[4] is None else len(r[4]) for r in rows], np.int64)

        seg = os.path.join(self._pending, f"seg-{self._next_seg:08d}-{os.getpid()}.h5")
        frame_shape = self._frame_shape if has_frames else None
        str_bytes = sum(len(r[0]) + len(r[2]) + len(r[3].encode("utf-8", "surrogateescape")) for r in rows)

        def fill(w: _Writer) -> None:
            w.add_rows(
                [r[0] for r in rows], np.stack([r[1] for r in rows]), [r[2] for r in rows],
                [r[3] for r in rows], counts if has_frames else None,
            )
            stacks = [r[4] for r in rows if r[4] is not None]
            if stacks:
                w.add_frames(np.concatenate(stacks))

        kept = (
            f"None of the {len(rows)} records written since the last flush was stored (they stay "
            f"buffered); {self._file if os.path.exists(self._file) else 'the output'} and the "
            f"{len(self._segments)} segment(s) in {self._pending} are intact."
        )
        self._write_file(seg, len(rows), int(counts.sum()), frame_shape,
                         min(self.chunk_rows, max(1, len(rows))), str_bytes, fill, kept,
                         make_dir=True)
        self._segments.append(seg)
        self._next_seg += 1
        self._buffer.clear()

    def _consolidate(self) -> None:
        """main rows not superseded + segment rows (last write per id wins) -> new main file."""
        import h5py
        import numpy as np

        sources = ([self._file] if os.path.exists(self._file) else []) + list(self._segments)
        # Pass 1: who wins each id (later source, later row).
        winner: dict[str, tuple[int, int]] = {}
        sizes: list[int] = []
        counts: list["np.ndarray | None"] = []
        on_disk = 0  # bytes of all sources
        str_bytes = 0  # their strings (all rows: an upper bound of the kept ones)
        for si, src in enumerate(sources):
            with h5py.File(src, "r") as f:
                ids = _read_str(f["ids"])
                sizes.append(len(ids))
                counts.append(f["frame_count"][:] if "frame_count" in f else None)
                str_bytes += sum(map(len, ids)) + _str_bytes(f["content_hash"]) + _str_bytes(f["metadata"])
            on_disk += os.path.getsize(src)
            for ri, tid in enumerate(ids):
                winner[tid] = (si, ri)
        keep = [np.zeros(n, bool) for n in sizes]
        for si, ri in winner.values():
            keep[si][ri] = True
        n_out = len(winner)
        total_frames = sum(int(c[k].sum()) for c, k in zip(counts, keep) if c is not None)
        frame_shape = self._frame_shape if any(c is not None for c in counts) else None

        dim = int(self._space.dim)
        block = max(self.chunk_rows, min(1 << 16, _COPY_BYTES // (4 * dim)))

        def fill(w: _Writer) -> None:
            for si, src in enumerate(sources):
                if not keep[si].any():
                    continue
                with h5py.File(src, "r") as f:
                    for a in range(0, sizes[si], block):
                        b = min(a + block, sizes[si])
                        sel = keep[si][a:b]
                        if not sel.any():
                            continue
                        idx = np.flatnonzero(sel)
                        vec = f["vectors"][a:b][idx]
                        fc = counts[si][a:b][idx] if counts[si] is not None else None
                        ids_b = _read_str(f["ids"], slice(a, b))
                        hashes_b = _read_str(f["content_hash"], slice(a, b))
                        metas_b = _read_str(f["metadata"], slice(a, b))
                        w.add_rows(
                            [ids_b[i] for i in idx],
                            vec,
                            [hashes_b[i] for i in idx],
                            [metas_b[i] for i in idx],
                            fc if frame_shape is not None else None,
                        )
                        if frame_shape is not None and fc is not None and fc.any():
                            offs = f["frame_offset"][a:b][idx]
                            self._copy_frames(f["frames"], offs, fc, w)

        kept = (
            f"{self._file} {'is unchanged' if sources and sources[0] == self._file else 'was not created'}"
            f"; this run's records are kept in the {len(self._segments)} segment(s) in "
            f"{self._pending}, which the next run (or another close()) merges."
        )
        # Compressed sources: their own size bounds the output better than the raw estimate.
        self._write_file(self._file, n_out, total_frames, frame_shape, self.chunk_rows, str_bytes,
                         fill, kept, bound=on_disk + (4 << 20) if self.compression else None)
        # The new main file is durable; the segments are now redundant.
        for seg in self._segments:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(seg)
        self._segments = []
        self._remove_pending_dir()

    def _write_file(
        self, final: str, n: int, total_frames: int, frame_shape: tuple[int, int] | None,
        chunk_rows: int, str_bytes: int, fill: Any, kept: str, make_dir: bool = False,
        bound: int | None = None,
    ) -> None:
        """Write one complete file atomically, after checking that it fits (module doc)."""
        who = f"exporters.hdf5 ({self._file})"
        need = estimate_bytes(n, int(self._space.dim), total_frames, frame_shape, chunk_rows, str_bytes)
        if bound is not None:
            need = min(need, bound)
        try:
            ensure_free_space(final, need, who, kept)
            if make_dir and not os.path.isdir(os.path.dirname(final)):
                os.makedirs(os.path.dirname(final), exist_ok=True)
                fsync_dir(os.path.dirname(os.path.dirname(os.path.abspath(final))))
            with atomic_path(final) as tmp:
                w = _Writer(tmp, self._space, n, total_frames, frame_shape, self.compression,
                            chunk_rows, in_memory=need <= _IMAGE_BYTES)
                try:
                    fill(w)
                except BaseException:
                    w.abort()
                    raise
                image = w.close()
                if image is not None:
                    with open(tmp, "wb") as fh:
                        fh.write(image)
                        fh.flush()
                        os.fsync(fh.fileno())
        except Exception as exc:
            if is_disk_full(exc) and not (isinstance(exc, OSError) and who in str(exc)):
                raise disk_full_error(who, final, need, kept) from exc
            raise

    def _remove_pending_dir(self) -> None:
        if not os.path.isdir(self._pending):
            return
        fsync_dir(self._pending)
        with contextlib.suppress(OSError):  # not empty: a concurrent writer's temp file
            os.rmdir(self._pending)
            fsync_dir(os.path.dirname(os.path.abspath(self._pending)))

    @staticmethod
    def _copy_frames(src: Any, offsets: "np.ndarray", counts: "np.ndarray", w: _Writer) -> None:
        """Append the given tracks' frames to ``w`` in order, holding at most ~64 MiB at once."""
        import numpy as np

        row_bytes = 4 * int(src.shape[1]) * int(src.shape[2])
        step = max(1, _COPY_BYTES // max(1, row_bytes))
        nz = counts > 0
        offsets, counts = offsets[nz], counts[nz]
        if not len(counts):
            return
        lo, hi = int(offsets.min()), int((offsets + counts).max())
        if hi - lo <= step:  # the block's frames fit in memory: one read
            span = src[lo:hi]
            if int(counts.sum()) == hi - lo and (np.diff(offsets) == counts[:-1]).all():
                w.add_frames(span)  # the usual case: the tracks' frames are one contiguous run
            else:
                w.add_frames(np.concatenate([span[o - lo : o - lo + c] for o, c in zip(offsets, counts)]))
            return
        for o, c in zip(offsets, counts):
            for s in range(0, int(c), step):
                w.add_frames(src[int(o) + s : int(o) + min(int(c), s + step)])


# --------------------------------------------------------------------------- readers


def read_hdf5(path: str) -> dict[str, Any]:
    """Whole finalised file in memory: ids, vectors [N, dim], content_hash, metadata (dicts), space.

    Pending segments of an unfinished run are not included: they become part of
    the file when a run's exporter is closed.
    """
    import h5py
    import numpy as np

    with h5py.File(path, "r") as f:
        _check_format(f, f"HDF5 file {path}")
        space = f.attrs["space"]
        return {
            "ids": _read_str(f["ids"]),
            "vectors": np.asarray(f["vectors"][:], dtype=np.float32),
            "content_hash": _read_str(f["content_hash"]),
            "metadata": [json.loads(m) for m in _read_str(f["metadata"])],
            "space": json.loads(space),
            "space_hash": str(f.attrs["space_hash"]),
        }


def read_frames(path: str, track_id: str) -> "np.ndarray":
    """Frame stack ``[L, F, D]`` stored for ``track_id`` (as given in its Record)."""
    with Hdf5Reader(path) as reader:
        return reader.frames(track_id)


class Hdf5Reader:
    """A finalised file opened for reading row by row (``musicembed_core.stored`` uses it).

    The file stays open until :meth:`close`; ids and the frame index are read
    once, a track's frames, vector or metadata when asked for.
    """

    def __init__(self, path: str) -> None:
        import h5py

        self.path = os.fspath(path)
        self.where = f"HDF5 file {self.path}"
        self.f = h5py.File(self.path, "r")
        try:
            _check_format(self.f, self.where, _NOT_OURS_READING)
            space = self.f.attrs["space"]
            self.space_json = space.decode() if isinstance(space, bytes) else str(space)
            self.ids = _read_str(self.f["ids"])
            self._row = {tid: i for i, tid in enumerate(self.ids)}
            self.frame_shape: tuple[int, int] | None = None
            if "frames" in self.f:
                self.frame_shape = (int(self.f["frames"].shape[1]), int(self.f["frames"].shape[2]))
                self._offsets = self.f["frame_offset"][:]
                self._counts = self.f["frame_count"][:]
        except BaseException:
            self.f.close()
            raise

    def __enter__(self) -> "Hdf5Reader":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def close(self) -> None:
        self.f.close()

    def has(self, track_id: object) -> bool:
        return track_id in self._row

    def row(self, track_id: str) -> int:
        try:
            return self._row[track_id]
        except KeyError:
            from ..errors import unknown_track_error

            raise unknown_track_error(track_id, self.where, self.ids) from None

    def no_frames(self) -> Exception:
        from ..errors import no_frames_error

        return no_frames_error(self.where, self.path, "hdf5")

    def vectors(self) -> "np.ndarray":
        import numpy as np

        return np.asarray(self.f["vectors"][:], dtype=np.float32)

    def metadata(self, track_id: str) -> dict[str, Any]:
        return json.loads(self._str("metadata", track_id))

    def content_hash(self, track_id: str) -> str:
        return self._str("content_hash", track_id)

    def _str(self, dataset: str, track_id: str) -> str:
        return self.f[dataset].asstr(errors="surrogateescape")[self.row(track_id)]

    def frames(self, track_id: str) -> "np.ndarray":
        """``[L, F, D]`` float32 of one track; ``F = 0`` for a track stored without frames."""
        import numpy as np

        row = self.row(track_id)
        if self.frame_shape is None:
            raise self.no_frames()
        off, cnt = int(self._offsets[row]), int(self._counts[row])
        fr = np.asarray(self.f["frames"][off : off + cnt], dtype=np.float32)
        return np.ascontiguousarray(fr.transpose(1, 0, 2))
