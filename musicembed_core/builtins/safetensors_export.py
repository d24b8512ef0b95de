"""safetensors exporter: a folder of immutable vector shards plus a JSON index.

Layout of ``<path>/`` (``format = "musicembed-safetensors"``)::

    vectors-00001.safetensors   tensor "vectors" float32 [n, dim]; header metadata
                                (str -> str): ids, content_hash, metadata (JSON
                                lists, one item per row), space_hash, space, format
                                with store_frames, when a row of the shard has frames:
                                "frames" float32 [total, L, D] (the shard's tracks'
                                frames, one after the other), "frame_offset" and
                                "frame_count" int64 [n] (a row's first frame in
                                "frames" and its number of frames; 0: none stored)
    vectors-00002.safetensors   ...
    index.json                  {format, format_version, space, space_hash, dim,
                                 last_shard, shards: [{file, count, frames?}],
                                 entries: {id: [shard file, row, content_hash]},
                                 frame_shape?: [L, D], frame_rate?: frames per second}

``frames`` (a shard's total frames) and ``frame_shape`` are present only when
frames are stored; an output without them (``store_frames = False``, or written
by an older musicembed) reads the same as before. Every track of an output has
the same ``[L, D]``. Frames make shards large, so a shard is also written once
the buffered frames reach ``_SHARD_FRAME_BYTES``, whatever ``shard_size`` says.

Shards are never modified. A shard is written to a temp name, fsync'ed and
renamed, and only then recorded in the index (itself replaced atomically), so
after ``kill -9`` the index always describes complete shards. A shard that made
it to disk but not into the index (numbered above ``last_shard``) is read back
and indexed by the next :meth:`SafetensorsExporter.open`. ``entries`` keeps the
last write of each id; a shard none of whose rows is current any more is
dropped from the index and deleted. :meth:`SafetensorsExporter.flush` writes
the rows buffered so far as a (smaller) shard.

Disk full: a shard is built in memory, checked against the free space and
written with plain I/O, so a full disk ends in one ``OSError(ENOSPC)`` that
names the output, the shard, the bytes needed and free, and what was kept (the
index and every earlier shard; no temporary file is left).

numpy/safetensors are imported inside functions: this module is imported when
the plugin list is built, which must stay fast.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
from collections import Counter
from typing import TYPE_CHECKING, Any, Mapping, Sequence

from ..atomic import (
    atomic_write_bytes,
    atomic_write_json,
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

FORMAT = "musicembed-safetensors"
FORMAT_VERSION = 1
INDEX = "index.json"
_SHARD_RE = re.compile(r"^vectors-(\d+)\.safetensors$")
_SHARD_FRAME_BYTES = 128 << 20
"""A shard is written once the buffered records' frames reach this many bytes."""


def is_shard_name(name: str) -> bool:
    """True for a shard's file name (``vectors-00001.safetensors``)."""
    return _SHARD_RE.match(name) is not None


def _shard_name(number: int) -> str:
    return f"vectors-{number:05d}.safetensors"


def _shard_number(name: str) -> int:
    m = _SHARD_RE.match(name)
    if m is None:
        raise ValueError(f"not a shard file name: {name!r}")
    return int(m.group(1))


def _dumps(obj: Any) -> str:
    # ASCII JSON: safetensors metadata must be valid UTF-8, and track ids taken
    # from undecodable file names carry lone surrogates; escaping keeps them.
    return json.dumps(obj, ensure_ascii=True, default=json_default)


_NOT_OURS_WRITING = "refusing to overwrite it. Choose another output path."
_NOT_OURS_READING = "expected a folder written by `musicembed run` (exporters.safetensors)."


def _load_index(directory: str, not_ours: str = _NOT_OURS_WRITING) -> dict[str, Any] | None:
    file = os.path.join(directory, INDEX)
    try:
        with open(file, encoding="utf-8") as fh:
            index = json.load(fh)
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise MusicembedError(
            f"cannot read {file}: {exc}. It was not written by musicembed, or the disk lost "
            f"data; move the folder away to rebuild."
        ) from exc
    if not isinstance(index, dict) or index.get("format") != FORMAT:
        raise MusicembedError(
            f"{file} is not a musicembed safetensors index (format "
            f"{index.get('format') if isinstance(index, dict) else None!r}); {not_ours}"
        )
    if int(index.get("format_version", 0)) > FORMAT_VERSION:
        raise MusicembedError(
            f"{file} has format_version {index['format_version']}, newer than this musicembed "
            f"understands ({FORMAT_VERSION}); upgrade musicembed or write to another path."
        )
    return index


def _read_shard_header(file: str) -> tuple[dict[str, str], tuple[int, ...], tuple[int, ...] | None]:
    """Header metadata, the shape of "vectors" and that of "frames" (None: no frames)."""
    from safetensors import safe_open

    with safe_open(file, framework="numpy") as st:
        meta = dict(st.metadata() or {})
        shape = tuple(st.get_slice("vectors").get_shape())
        frames = tuple(st.get_slice("frames").get_shape()) if "frames" in st.keys() else None
    return meta, shape, frames


class SafetensorsExporter(Exporter):
    """Vectors of one embedding space as safetensors shards in a folder, safe against kill -9.

    Appends only: a run adds shards and never rewrites old ones, so closing is
    cheap; a rewritten id leaves its old row behind as dead data in its shard
    (until every row of that shard is dead). ``store_frames`` also stores each
    track's frame-level layer stack ``[L, F, D]`` (as ``exporters.hdf5`` does).
    """

    name = "safetensors"
    extension = ".safetensors"

    def __init__(self, path: str | None = None, shard_size: int = 4096,
                 store_frames: bool = False) -> None:
        if int(shard_size) < 1:
            raise ValueError(f"safetensors exporter: shard_size must be >= 1, got {shard_size!r}")
        self.path = path
        self.shard_size = int(shard_size)
        self.store_frames = bool(store_frames)
        self._closed = True

    # ------------------------------------------------------------------ lifecycle

    def open(self, path: str, space: "EmbeddingSpace") -> None:
        """Check the folder's space, index shards a killed run left unindexed, collect known ids."""
        import safetensors  # noqa: F401  (fail early if missing)

        path = os.fspath(path)
        if os.path.exists(path) and not os.path.isdir(path):
            raise MusicembedError(
                f"safetensors output {path} is a file, but this exporter writes a folder of "
                f"shards there; choose another path."
            )
        self._dir = path
        self._space = space
        self._where = f"safetensors output {path}"
        existed = os.path.isdir(path)
        os.makedirs(path, exist_ok=True)
        if not existed:
            fsync_dir(os.path.dirname(os.path.abspath(path)))
        clean_stale_temps(path)

        index = _load_index(path)
        dirty = False
        if index is None:
            index = {"shards": [], "entries": {}, "last_shard": 0}
            self._index_exists = False
        else:
            space.check_same(json.dumps(index["space"]), where=self._where)
            self._index_exists = True
        self._shards: list[dict[str, Any]] = list(index.get("shards", []))
        self._entries: dict[str, list[Any]] = dict(index.get("entries", {}))
        shape = index.get("frame_shape")
        self._frame_shape: tuple[int, int] | None = (int(shape[0]), int(shape[1])) if shape else None
        last = max([int(index.get("last_shard", 0))] + [_shard_number(s["file"]) for s in self._shards])

        # Indexed shards that vanished (deleted by hand): forget their rows so they are recomputed.
        missing = {s["file"] for s in self._shards if not os.path.exists(os.path.join(path, s["file"]))}
        if missing:
            log.warning("%s: shards %s are missing; their records will be recomputed", self._where, sorted(missing))
            self._shards = [s for s in self._shards if s["file"] not in missing]
            self._entries = {k: e for k, e in self._entries.items() if e[0] not in missing}
            dirty = True

        indexed = {s["file"] for s in self._shards}
        on_disk = sorted((n for n in os.listdir(path) if _SHARD_RE.match(n)), key=_shard_number)
        for name in on_disk:
            file = os.path.join(path, name)
            if name in indexed:
                continue
            if _shard_number(name) <= last:
                # A dead shard dropped from the index; the run deleting it was killed.
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(file)
                continue
            # Renamed into place, but the run died before recording it: adopt it.
            try:
                meta, shape, fshape = _read_shard_header(file)
                ids = json.loads(meta["ids"])
                hashes = json.loads(meta["content_hash"])
                if len(ids) != shape[0] or len(hashes) != shape[0]:
                    raise ValueError(f"{len(ids)} ids for {shape[0]} vectors")
                if fshape is not None and len(fshape) != 3:
                    raise ValueError(f"frames of shape {list(fshape)}")
            except Exception as exc:  # storage damage: recompute its records
                log.warning("%s: ignoring unreadable shard %s (%s)", self._where, name, exc)
                with contextlib.suppress(OSError):
                    os.replace(file, file + ".corrupt")
                continue
            stored_space = meta.get("space") or json.dumps({"hash": meta.get("space_hash")})
            space.check_same(stored_space, where=f"{self._where} (shard {name})")
            if fshape is not None:
                self._frame_shape = self._same_frame_shape((fshape[1], fshape[2]), f"shard {name}")
            self._add_shard(name, ids, hashes, 0 if fshape is None else fshape[0])
            last = _shard_number(name)
            dirty = True
        self._last_shard = last
        self._buffer: list[tuple[str, "np.ndarray", str, str, "np.ndarray | None"]] = []
        self._buffered_frame_bytes = 0
        self._index_stale = False  # a shard is written but its index write failed
        self._closed = False
        if dirty:
            self._guarded(os.path.join(path, INDEX), None,
                          "Every shard on disk is intact; the next open indexes them.",
                          self._write_index)

    def known(self) -> Mapping[str, str]:
        """``{id: content_hash}`` of the current rows (index entries, adopted shards, this run)."""
        return {k: e[2] for k, e in getattr(self, "_entries", {}).items()}

    def write(self, records: Sequence[Record]) -> None:
        """Validate and buffer records; each ``shard_size`` of them becomes a durable shard."""

        if self._closed:
            raise RuntimeError("SafetensorsExporter.write() called before open() or after close()")
        from .hdf5 import frame_rows

        rows = []
        frame_shape = self._frame_shape
        for rec in records:
            vec = self._space.check_record(rec)
            frames = None
            if self.store_frames and rec.frames is not None:
                frames, frame_shape = frame_rows(rec, frame_shape, self._where)
            rows.append((rec.id, vec, rec.content_hash, _dumps(dict(rec.metadata or {})), frames))
        self._frame_shape = frame_shape
        self._buffer.extend(rows)
        self._buffered_frame_bytes += sum(r[4].nbytes for r in rows if r[4] is not None)
        while len(self._buffer) >= self.shard_size:
            self._write_shard(self.shard_size)
        if self._buffer and self._buffered_frame_bytes >= _SHARD_FRAME_BYTES:
            self._write_shard(len(self._buffer))

    def flush(self) -> None:
        """Write the rows buffered so far as one durable shard (smaller than ``shard_size``)."""
        if self._closed:
            raise RuntimeError("SafetensorsExporter.flush() called before open() or after close()")
        if self._buffer:
            self._write_shard(len(self._buffer))

    def close(self) -> None:
        """Write the remaining rows as a last shard (an empty output still gets its index)."""
        if self._closed:
            return
        if self._buffer:
            self._write_shard(len(self._buffer))
        elif not self._index_exists or self._index_stale:
            self._guarded(os.path.join(self._dir, INDEX), None, "Nothing else was written.",
                          self._write_index)
        self._closed = True

    # ------------------------------------------------------------------ internals

    def _same_frame_shape(self, shape: Sequence[int], what: str) -> tuple[int, int]:
        shape = (int(shape[0]), int(shape[1]))
        if self._frame_shape is not None and shape != self._frame_shape:
            raise MusicembedError(
                f"{self._where}: {what} stores frames with [L, D] = {list(shape)}, unlike the "
                f"rest of the output ({list(self._frame_shape)}); move it away to rebuild."
            )
        return shape

    def _add_shard(self, name: str, ids: Sequence[str], hashes: Sequence[str], frames: int = 0) -> None:
        entry: dict[str, Any] = {"file": name, "count": len(ids)}
        if frames:
            entry["frames"] = int(frames)
        self._shards.append(entry)
        for row, (tid, h) in enumerate(zip(ids, hashes)):
            self._entries.pop(tid, None)  # last write wins and moves to the end
            self._entries[tid] = [name, row, h]

    def _write_shard(self, count: int) -> None:
        """The first ``count`` buffered rows -> a new shard, then the index records it."""
        import numpy as np
        from safetensors.numpy import save

        rows = self._buffer[:count]
        number = self._last_shard + 1
        name = _shard_name(number)
        ids = [r[0] for r in rows]
        hashes = [r[2] for r in rows]
        meta = {
            "format": FORMAT,
            "ids": _dumps(ids),
            "content_hash": _dumps(hashes),
            "metadata": "[" + ",".join(r[3] for r in rows) + "]",
            "space_hash": self._space.hash,
            "space": self._space.to_json(),
        }
        vectors = np.ascontiguousarray(np.stack([r[1] for r in rows]).astype(np.float32, copy=False))
        tensors = {"vectors": vectors}
        stacks = [r[4] for r in rows if r[4] is not None and len(r[4])]
        total = sum(len(f) for f in stacks)
        if total:
            counts = np.array([0 if r[4] is None else len(r[4]) for r in rows], np.int64)
            tensors["frames"] = np.concatenate(stacks) if len(stacks) > 1 else stacks[0]
            tensors["frame_offset"] = np.concatenate(([0], np.cumsum(counts)[:-1])).astype(np.int64)
            tensors["frame_count"] = counts
        # save() + our own atomic write rather than save_file(): the latter
        # leaves a randomly named temp file behind when killed, and skips fsync.
        data = save(tensors, metadata=meta)
        del tensors, stacks
        file = os.path.join(self._dir, name)
        self._guarded(
            file, len(data),
            f"None of the {len(rows)} records written since the last shard was stored (they stay "
            f"buffered); {INDEX} and the {len(self._shards)} shard(s) already there are intact.",
            atomic_write_bytes, file, data,
        )
        self._last_shard = number
        self._add_shard(name, ids, hashes, total)
        del data
        del self._buffer[:count]
        self._buffered_frame_bytes = sum(r[4].nbytes for r in self._buffer if r[4] is not None)
        self._index_stale = True
        self._guarded(
            os.path.join(self._dir, INDEX), None,
            f"Shard {name} ({len(rows)} records) was written; the next open of the output "
            f"indexes it.",
            self._write_index,
        )

    def _guarded(self, file: str, need: int | None, kept: str, fn: Any, *args: Any) -> None:
        """``fn(*args)`` after a free-space check; a full disk becomes one clear OSError."""
        who = f"exporters.safetensors ({self._dir})"
        if need is None:  # the index: about as large as the one on disk
            try:
                need = os.path.getsize(os.path.join(self._dir, INDEX)) + 64 * len(self._entries)
            except OSError:
                need = 64 * len(self._entries)
        try:
            ensure_free_space(self._dir, need, who, kept)
            fn(*args)
        except Exception as exc:
            if is_disk_full(exc) and not (isinstance(exc, OSError) and who in str(exc)):
                raise disk_full_error(who, file, need, kept) from exc
            raise

    def _write_index(self) -> None:
        """Drop fully superseded shards, replace index.json atomically, then delete them."""
        live = Counter(e[0] for e in self._entries.values())
        dead = [s["file"] for s in self._shards if live[s["file"]] == 0]
        if dead:
            self._shards = [s for s in self._shards if live[s["file"]] > 0]
        index = {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "space": json.loads(self._space.to_json()),
            "space_hash": self._space.hash,
            "dim": int(self._space.dim),
            "last_shard": self._last_shard,
            "shards": self._shards,
            "entries": self._entries,
        }
        if self._frame_shape is not None:
            index["frame_shape"] = list(self._frame_shape)
            if self._space.encoder.get("frame_rate"):  # frame i of a track is at i / frame_rate s
                index["frame_rate"] = float(self._space.encoder["frame_rate"])
        atomic_write_json(os.path.join(self._dir, INDEX), index, ensure_ascii=True)
        self._index_exists = True
        self._index_stale = False
        for name in dead:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(os.path.join(self._dir, name))
        if dead:
            fsync_dir(self._dir)


# --------------------------------------------------------------------------- reader


def read_safetensors(path: str) -> dict[str, Any]:
    """Current rows of a safetensors output (resolved through index.json): same keys as read_hdf5."""
    reader = SafetensorsReader(path)
    try:
        return {
            "ids": list(reader.ids),
            "vectors": reader.vectors(),
            "content_hash": [reader.content_hash(t) for t in reader.ids],
            "metadata": [reader.metadata(t) for t in reader.ids],
            "space": reader.index["space"],
            "space_hash": reader.index["space_hash"],
        }
    finally:
        reader.close()


def read_frames(path: str, track_id: str) -> "np.ndarray":
    """Frame stack ``[L, F, D]`` stored for ``track_id`` (``exporters.safetensors.store_frames``)."""
    reader = SafetensorsReader(path)
    try:
        return reader.frames(track_id)
    finally:
        reader.close()


class SafetensorsReader:
    """The shards index.json records, read row by row (``musicembed_core.stored`` uses it).

    A shard's header (ids, hashes, metadata, frame index) is parsed once, when
    one of its rows is first asked for; one shard stays open at a time, so
    reading tracks in stored order opens each shard once. A track's frames are
    read as a slice of the shard's "frames" tensor, not the whole tensor.
    """

    def __init__(self, path: str) -> None:
        self.path = os.fspath(path)
        self.where = f"safetensors output {self.path}"
        index = _load_index(self.path, _NOT_OURS_READING)
        if index is None:
            raise FileNotFoundError(f"{os.path.join(self.path, INDEX)} does not exist")
        self.index = index
        self.space_json = json.dumps(index["space"])
        self._entries: dict[str, list[Any]] = index["entries"]
        self.ids = list(self._entries)
        shape = index.get("frame_shape")
        self.frame_shape: tuple[int, int] | None = (int(shape[0]), int(shape[1])) if shape else None
        self._headers: dict[str, dict[str, Any]] = {}
        self._open: tuple[str, Any] | None = None

    def close(self) -> None:
        self._open = None
        self._headers.clear()

    def has(self, track_id: object) -> bool:
        return track_id in self._entries

    def no_frames(self) -> Exception:
        from ..errors import no_frames_error

        return no_frames_error(self.where, self.path, "safetensors")

    def _entry(self, track_id: str) -> tuple[str, int]:
        try:
            file, row, _h = self._entries[track_id]
        except KeyError:
            from ..errors import unknown_track_error

            raise unknown_track_error(track_id, self.where, self.ids) from None
        return file, int(row)

    def _shard(self, file: str) -> Any:
        """The open shard (safe_open handle), reopened only when another shard is wanted."""
        from safetensors import safe_open

        if self._open is None or self._open[0] != file:
            self._open = None  # release the previous one first
            self._open = (file, safe_open(os.path.join(self.path, file), framework="numpy"))
        return self._open[1]

    def _header(self, file: str) -> dict[str, Any]:
        head = self._headers.get(file)
        if head is None:
            st = self._shard(file)
            meta = st.metadata() or {}
            head = {"hashes": json.loads(meta["content_hash"]), "metadata": meta["metadata"]}
            if "frames" in st.keys():
                head["offset"] = st.get_tensor("frame_offset")
                head["count"] = st.get_tensor("frame_count")
            self._headers[file] = head
        return head

    def content_hash(self, track_id: str) -> str:
        file, row = self._entry(track_id)
        return self._header(file)["hashes"][row]

    def metadata(self, track_id: str) -> dict[str, Any]:
        file, row = self._entry(track_id)
        head = self._header(file)
        if isinstance(head["metadata"], str):  # parsed when first needed: the frames don't
            head["metadata"] = json.loads(head["metadata"])
        return dict(head["metadata"][row])

    def vectors(self) -> "np.ndarray":
        """All current rows' vectors ``[N, dim]`` in :attr:`ids` order, one shard at a time."""
        import numpy as np

        vectors = np.empty((len(self.ids), int(self.index["dim"])), dtype=np.float32)
        by_shard: dict[str, tuple[list[int], list[int]]] = {}
        for i, (file, row, _h) in enumerate(self._entries.values()):
            rows, pos = by_shard.setdefault(file, ([], []))
            rows.append(int(row))
            pos.append(i)
        for file, (rows, pos) in by_shard.items():
            vectors[pos] = self._shard(file).get_tensor("vectors")[rows]
        return vectors

    def frames(self, track_id: str) -> "np.ndarray":
        """``[L, F, D]`` float32 of one track; ``F = 0`` for a track stored without frames."""
        import numpy as np

        file, row = self._entry(track_id)
        if self.frame_shape is None:
            raise self.no_frames()
        layers, dim = self.frame_shape
        head = self._header(file)
        if "offset" not in head:  # a shard none of whose tracks kept frames
            return np.zeros((layers, 0, dim), np.float32)
        off, cnt = int(head["offset"][row]), int(head["count"][row])
        if cnt == 0:
            return np.zeros((layers, 0, dim), np.float32)
        fr = self._shard(file).get_slice("frames")[off : off + cnt]
        return np.ascontiguousarray(np.asarray(fr, dtype=np.float32).transpose(1, 0, 2))
