"""On-disk format of a FAISS collection: one snapshot file plus an append-only journal.

``<collection>.faiss`` (the snapshot) is the persisted unit: raw float32
vectors, FAISS labels, ids + metadata, the embedding space JSON and the
serialised FAISS index, in one file that is only ever replaced atomically
(temporary file, fsync, rename, fsync of the folder)::

    b"MEFAISS1" | section bytes ... | header JSON | u64 header length | b"MEFAISS1"

The header (JSON, at the end so sections can be streamed) holds the format
version, dim, metric, index string, space, generation and, per section,
offset/length/CRC-32. Sections: ``vectors`` float32 [n, dim], ``labels`` int64
[n], ``records`` JSON ``{"ids": [...], "metadata": [...]}``, ``index``
(``faiss.write_index`` bytes; absent while the index is untrained or when it is
a plain ``Flat`` index, which is rebuilt from the vectors in one copy).

``<collection>.faiss.wal`` (the journal) holds every acknowledged upsert/delete
since that snapshot, appended and fsynced before ``upsert``/``delete`` return::

    b"MEFWAL01" | u64 generation | u32 dim | u32 crc32(previous 20 bytes)
    then records: u32 payload length | u32 crc32(payload) | payload
    payload: b"U" | u32 json length | {"ids", "metadata"} | float32 [n, dim]
             b"D" | u32 json length | {"ids"}

A journal is replayed only when its generation equals the snapshot's; a
checkpoint writes snapshot ``g + 1`` first and then a fresh journal ``g + 1``,
so a kill between the two merely leaves a stale journal that is ignored. A torn
last record (kill -9 while appending) fails its length/CRC check: replay stops
there and the next writer truncates it away. That record's call never
returned, so nothing acknowledged is lost.
"""

from __future__ import annotations

import json
import os
import struct
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, BinaryIO

import numpy as np

from musicembed_core.atomic import atomic_path, commit, json_default, temp_path

from .errors import CorruptCollectionError

FORMAT = "musicembed-faiss"
FORMAT_VERSION = 1
SNAP_MAGIC = b"MEFAISS1"
WAL_MAGIC = b"MEFWAL01"
WAL_HEADER = struct.Struct("<8sQI")  # magic, generation, dim
WAL_HEADER_SIZE = WAL_HEADER.size + 4
REC_HEAD = struct.Struct("<II")  # payload length, crc32
_TRAILER = struct.Struct("<Q8s")
_CHUNK = 16 << 20


def dumps(obj: Any) -> bytes:
    """JSON bytes; ASCII-escaped so undecodable file names (lone surrogates) survive."""
    return json.dumps(obj, ensure_ascii=True, sort_keys=True, default=json_default).encode("ascii")


def normalise_metadata(metadata: list[dict[str, Any]]) -> tuple[bytes, list[dict[str, Any]]]:
    """Metadata as stored (JSON bytes) and as read back, so results match before and after reopen."""
    blob = dumps(metadata)
    return blob, json.loads(blob)


# --------------------------------------------------------------------------- snapshot


@dataclass
class Snapshot:
    """Everything a collection holds, as read from or written to the snapshot file."""

    header: dict[str, Any]
    vectors: np.ndarray
    labels: np.ndarray
    ids: list[str]
    metadata: list[dict[str, Any]]
    index_bytes: bytearray | None = None
    """The serialised FAISS index, or None when the section is absent."""
    size: int = 0
    signature: tuple[int, int, int] | None = field(default=None)


def file_signature(path: str) -> tuple[int, int, int] | None:
    """(inode, size, mtime) of ``path``, None when absent: tells whether another writer changed it."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return None
    return (st.st_ino, st.st_size, st.st_mtime_ns)


def _byte_view(data: Any) -> memoryview:
    """Flat unsigned-byte view of bytes or a C-contiguous array (empty arrays included)."""
    if isinstance(data, np.ndarray):
        return memoryview(np.ascontiguousarray(data).reshape(-1).view(np.uint8))
    view = memoryview(data)
    return view if view.format == "B" and view.ndim == 1 else view.cast("B")


class _SectionWriter:
    def __init__(self, fh: BinaryIO) -> None:
        self.fh = fh
        self.pos = len(SNAP_MAGIC)
        self.sections: dict[str, dict[str, int]] = {}
        self._name = ""
        self._start = 0
        self._crc = 0

    def begin(self, name: str) -> None:
        self._name, self._start, self._crc = name, self.pos, 0

    def write(self, data: Any) -> int:
        view = _byte_view(data)
        self.fh.write(view)
        self._crc = zlib.crc32(view, self._crc)
        self.pos += len(view)
        return len(view)

    def end(self) -> None:
        self.sections[self._name] = {
            "offset": self._start,
            "length": self.pos - self._start,
            "crc32": self._crc,
        }

    def section(self, name: str, data: Any) -> None:
        self.begin(name)
        view = _byte_view(data)
        for i in range(0, len(view), _CHUNK):
            self.write(view[i : i + _CHUNK])
        self.end()


def write_snapshot(
    path: str,
    header: dict[str, Any],
    vectors: np.ndarray,
    labels: np.ndarray,
    ids: list[str],
    metadata: list[dict[str, Any]],
    write_index: Callable[[Callable[[bytes], int]], None] | None,
    ensure_space: Callable[[int], None] | None = None,
) -> int:
    """Atomically replace ``path`` with a complete snapshot; returns its size in bytes.

    ``write_index(write)`` streams the serialised FAISS index through ``write``
    (``None``: no index section). ``ensure_space(nbytes)`` is called with the size
    of the sections other than the index before anything is written (it raises
    when they, and the index, will not fit).
    """
    vectors = np.ascontiguousarray(vectors, dtype="<f4")
    labels = np.ascontiguousarray(labels, dtype="<i8")
    records = dumps({"ids": ids, "metadata": metadata})
    if ensure_space is not None:
        ensure_space(len(SNAP_MAGIC) + vectors.nbytes + labels.nbytes + len(records) + 4096)
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        fh.write(SNAP_MAGIC)
        w = _SectionWriter(fh)
        w.section("vectors", vectors)
        w.section("labels", labels)
        w.section("records", records)
        if write_index is not None:
            w.begin("index")
            write_index(w.write)
            w.end()
        head = dumps({**header, "format": FORMAT, "format_version": FORMAT_VERSION,
                      "sections": w.sections})
        fh.write(head)
        fh.write(_TRAILER.pack(len(head), SNAP_MAGIC))
        fh.flush()
        os.fsync(fh.fileno())
        size = fh.tell()
    return size


def _corrupt(path: str, what: str) -> CorruptCollectionError:
    return CorruptCollectionError(
        f"{path} is not a readable musicembed FAISS snapshot ({what}). It was not written by this "
        "sink, or was damaged after writing (this sink only ever replaces it atomically). Move it "
        "away and rerun `musicembed run` to rebuild the collection."
    )


def read_header(path: str) -> dict[str, Any]:
    """The snapshot's header (format checked); raises :class:`CorruptCollectionError`."""
    with open(path, "rb") as fh:
        return _read_header(fh, path)


def _read_header(fh: BinaryIO, path: str) -> dict[str, Any]:
    size = fh.seek(0, os.SEEK_END)
    if size < len(SNAP_MAGIC) + _TRAILER.size:
        raise _corrupt(path, f"only {size} bytes")
    fh.seek(0)
    if fh.read(len(SNAP_MAGIC)) != SNAP_MAGIC:
        raise _corrupt(path, "bad magic bytes at the start")
    fh.seek(size - _TRAILER.size)
    head_len, magic = _TRAILER.unpack(fh.read(_TRAILER.size))
    if magic != SNAP_MAGIC or head_len > size - len(SNAP_MAGIC) - _TRAILER.size:
        raise _corrupt(path, "bad trailer")
    fh.seek(size - _TRAILER.size - head_len)
    try:
        header = json.loads(fh.read(head_len))
    except ValueError as exc:
        raise _corrupt(path, f"header is not JSON: {exc}") from None
    if header.get("format") != FORMAT:
        raise _corrupt(path, f"format {header.get('format')!r}")
    if int(header.get("format_version", 0)) > FORMAT_VERSION:
        raise CorruptCollectionError(
            f"{path} has format_version {header['format_version']}, newer than this "
            f"musicembed-faiss understands ({FORMAT_VERSION}); upgrade musicembed-faiss."
        )
    return header


def _read_section(fh: BinaryIO, path: str, header: dict[str, Any], name: str) -> bytearray:
    sec = header["sections"][name]
    fh.seek(sec["offset"])
    buf = bytearray(sec["length"])
    view = memoryview(buf)
    got = 0
    while got < len(buf):
        n = fh.readinto(view[got : got + _CHUNK])
        if not n:
            raise _corrupt(path, f"section {name!r} is truncated")
        got += n
    if zlib.crc32(buf) != sec["crc32"]:
        raise _corrupt(path, f"section {name!r} fails its CRC-32 check")
    return buf


def read_snapshot(path: str) -> Snapshot:
    """Read and verify a whole snapshot (every section's CRC)."""
    sig = file_signature(path)
    with open(path, "rb") as fh:
        header = _read_header(fh, path)
        dim, count = int(header["dim"]), int(header["count"])
        vectors = np.frombuffer(_read_section(fh, path, header, "vectors"), dtype="<f4")
        labels = np.frombuffer(_read_section(fh, path, header, "labels"), dtype="<i8")
        records = json.loads(bytes(_read_section(fh, path, header, "records")))
        if vectors.size != count * dim or labels.size != count or len(records["ids"]) != count:
            raise _corrupt(path, "section sizes disagree with the header's count")
        index_bytes = None
        if "index" in header["sections"]:
            index_bytes = _read_section(fh, path, header, "index")
        size = fh.seek(0, os.SEEK_END)
    return Snapshot(
        header=header,
        vectors=vectors.reshape(count, dim).astype(np.float32, copy=False),
        labels=labels.astype(np.int64, copy=False),
        ids=list(records["ids"]),
        metadata=list(records["metadata"]),
        index_bytes=index_bytes,
        size=size,
        signature=sig,
    )


# --------------------------------------------------------------------------- journal


def _wal_header(generation: int, dim: int) -> bytes:
    head = WAL_HEADER.pack(WAL_MAGIC, generation, dim)
    return head + struct.pack("<I", zlib.crc32(head))


def create_journal(path: str, generation: int, dim: int) -> None:
    """Atomically replace ``path`` with an empty journal of ``generation``."""
    tmp = temp_path(path)
    with open(tmp, "wb") as fh:
        fh.write(_wal_header(generation, dim))
    commit(tmp, path)


@dataclass
class JournalEntry:
    op: str  # "U" upsert, "D" delete
    ids: list[str]
    metadata: list[dict[str, Any]] | None
    vectors: np.ndarray | None


@dataclass
class JournalScan:
    generation: int | None
    """None: no journal, or not a journal (ignored)."""
    entries: list[JournalEntry]
    good_size: int
    """Bytes up to the end of the last complete record (a writer truncates to this)."""
    size: int


def encode_upsert(ids: list[str], meta_blob: bytes, vectors: np.ndarray) -> bytes:
    body = b'{"ids": ' + dumps(ids) + b', "metadata": ' + meta_blob + b"}"
    vec = np.ascontiguousarray(vectors, dtype="<f4").tobytes()
    return b"U" + struct.pack("<I", len(body)) + body + vec


def encode_delete(ids: list[str]) -> bytes:
    body = dumps({"ids": ids})
    return b"D" + struct.pack("<I", len(body)) + body


def frame(payload: bytes) -> bytes:
    return REC_HEAD.pack(len(payload), zlib.crc32(payload)) + payload


def _decode(payload: bytes, dim: int) -> JournalEntry | None:
    op = payload[:1].decode("ascii", "replace")
    try:
        (jlen,) = struct.unpack_from("<I", payload, 1)
        body = json.loads(payload[5 : 5 + jlen])
    except (struct.error, ValueError):
        return None
    if op == "D":
        return JournalEntry("D", list(body["ids"]), None, None)
    if op != "U":
        return None
    raw = payload[5 + jlen :]
    n = len(body["ids"])
    if len(raw) != n * dim * 4 or len(body["metadata"]) != n:
        return None
    vecs = np.frombuffer(raw, dtype="<f4").reshape(n, dim).astype(np.float32)
    return JournalEntry("U", list(body["ids"]), list(body["metadata"]), vecs)


def scan_journal(path: str, dim: int) -> JournalScan:
    """Read every complete record; stop at the first torn or damaged one."""
    try:
        with open(path, "rb") as fh:
            return _scan(fh, dim)
    except FileNotFoundError:
        return JournalScan(None, [], 0, 0)


def _scan(fh: BinaryIO, dim: int) -> JournalScan:
    size = fh.seek(0, os.SEEK_END)
    fh.seek(0)
    head = fh.read(WAL_HEADER_SIZE)
    if len(head) < WAL_HEADER_SIZE:
        return JournalScan(None, [], 0, size)
    magic, generation, wdim = WAL_HEADER.unpack_from(head)
    (crc,) = struct.unpack_from("<I", head, WAL_HEADER.size)
    if magic != WAL_MAGIC or crc != zlib.crc32(head[: WAL_HEADER.size]) or wdim != dim:
        return JournalScan(None, [], 0, size)
    entries: list[JournalEntry] = []
    good = WAL_HEADER_SIZE
    for payload in _records(fh, size):
        entry = _decode(payload, dim)
        if entry is None:
            break
        entries.append(entry)
        good += REC_HEAD.size + len(payload)
    return JournalScan(int(generation), entries, good, size)


def _records(fh: BinaryIO, size: int) -> Iterator[bytes]:
    pos = fh.tell()
    while pos + REC_HEAD.size <= size:
        length, crc = REC_HEAD.unpack(fh.read(REC_HEAD.size))
        if pos + REC_HEAD.size + length > size:
            return
        payload = fh.read(length)
        if len(payload) != length or zlib.crc32(payload) != crc:
            return
        yield payload
        pos += REC_HEAD.size + length


class JournalWriter:
    """Appends framed records to the journal; each append is fsynced before it returns."""

    def __init__(self, path: str, good_size: int, fsync: bool = True) -> None:
        self.path = path
        self.fsync = fsync
        self.fd = os.open(path, os.O_WRONLY)
        if os.fstat(self.fd).st_size != good_size:  # drop a torn tail before appending
            os.ftruncate(self.fd, good_size)
            os.fsync(self.fd)
        self.size = good_size
        self.records = 0

    def append(self, payload: bytes) -> None:
        """Append one record; on failure (a full disk) the journal is cut back to its last
        complete record, so the next append or reopen finds no torn bytes."""
        data = memoryview(frame(payload))
        try:
            os.lseek(self.fd, self.size, os.SEEK_SET)
            written = 0
            while written < len(data):
                written += os.write(self.fd, data[written:])
            if self.fsync:
                os.fsync(self.fd)
        except OSError:
            try:
                os.ftruncate(self.fd, self.size)
            except OSError:  # pragma: no cover - replay stops at the torn record anyway
                pass
            raise
        self.size += len(data)
        self.records += 1

    def sync(self) -> None:
        """fsync the journal (for writers opened with ``fsync=False``)."""
        os.fsync(self.fd)

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1
