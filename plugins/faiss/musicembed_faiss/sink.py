"""``sinks.faiss``: a FAISS vector store in one folder, crash-safe, with metadata filters.

Memory model: the raw float32 vectors, ids and metadata of a collection live in
RAM next to the FAISS index (built from an ``index_factory`` string). The raw
vectors are the source of truth: indexes are (re)built and (re)trained from
them, filtered searches and not-yet-trained IVF/PQ indexes search them
exactly, and every returned hit gets its exact score from them.

Durability: see :mod:`musicembed_faiss.storage`. Each ``upsert``/``delete``
is appended to a journal and fsynced before it returns (so ``flush()`` has
nothing left to do, except fsync the journal when ``fsync=False``); the
snapshot (one file, replaced atomically) is rewritten at ``close()`` and
whenever the journal outgrows ``max(checkpoint_mb, snapshot size)``, so write
cost stays linear in the data written.

Disk full: a snapshot is checked against the free space before it is written
(its index section measured by a dry serialisation when space is tight), and a
journal append that fails is cut back to the last complete record. Either ends
in one ``OSError(ENOSPC)`` naming the collection, the file, the bytes needed
and free and what was kept; the previous snapshot and the journal keep every
acknowledged upsert, and a rerun after freeing space continues from them.

numpy and faiss are imported inside methods: ``musicembed plugins`` imports
this module just to list the sink.
"""

from __future__ import annotations

import copy
import inspect
import logging
import os
import re
import time
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from musicembed_core import (
    METRICS,
    Hit,
    Record,
    Sink,
    check_stored_space,
    exact_rerank,
    exact_search,
    parse_filter,
    sink_not_found,
    space_record,
    stack_records,
    unit_rows,
)
from musicembed_core.atomic import disk_full_error, ensure_free_space, free_bytes, is_disk_full

from .errors import DimensionMismatchError, FaissSinkError

if TYPE_CHECKING:  # pragma: no cover
    import numpy as np

    from musicembed_core import EmbeddingSpace

log = logging.getLogger("musicembed.faiss")

_COLLECTION_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.\-]*$")
_POINTS_PER_CENTROID = 39
"""FAISS warns below 39 training points per k-means centroid."""
_MAX_POINTS_PER_CENTROID = 256
"""FAISS subsamples k-means input to 256 points per centroid anyway."""
_ADD_BLOCK = 65536


class FaissSink(Sink):
    """FAISS index + raw vectors + metadata per collection, in ``<path>/<collection>.faiss``.

    Scores: ``cosine`` and ``ip`` are similarities (higher is better);
    ``l2`` is the *squared* Euclidean distance (lower is better, 0 for an
    identical vector), as FAISS and Milvus report it.
    """

    name = "faiss"
    runtime_params = frozenset({"device", "num_threads", "fsync"})

    def __init__(
        self,
        path: str = "{output_dir}/faiss",
        collection: str | None = None,
        index: str = "Flat",
        metric: str = "cosine",
        nprobe: int = 16,
        ef_search: int = 128,
        ef_construction: int = 40,
        min_train: int | None = None,
        rerank: int = 1,
        rebuild_fraction: float = 0.25,
        checkpoint_mb: float = 64.0,
        fsync: bool = True,
        num_threads: int | None = None,
        seed: int = 0,
    ) -> None:
        """
        Args:
          path: folder holding the collections (``{output_dir}`` is replaced by the run's output dir).
          collection: collection (file) name; None = the embedding's name given to ``open``.
          index: FAISS ``index_factory`` string: ``Flat``, ``HNSW32``, ``IVF1024,Flat``, ``IVF256,PQ64``...
          metric: ``cosine`` (vectors normalised, inner product), ``ip`` or ``l2``.
          nprobe: IVF lists visited per query (recall vs speed).
          ef_search: HNSW candidate list size per query (recall vs speed).
          ef_construction: HNSW candidate list size while building.
          min_train: vectors needed before an IVF/PQ index is trained; None = 39 per centroid.
          rerank: fetch ``k * rerank`` candidates from the index and order them by exact score.
          rebuild_fraction: rebuild an index that cannot remove ids (HNSW) once its stale
            entries exceed this fraction of the live ones.
          checkpoint_mb: rewrite the snapshot once the journal exceeds max(this, snapshot size).
          fsync: fsync each journal append (durability); False trades it for speed.
          num_threads: FAISS OpenMP threads (process-wide); None = FAISS default.
          seed: seed of the training sample.
        """
        if str(metric).lower() not in METRICS:
            raise ValueError(f"sinks.faiss.metric must be one of {', '.join(METRICS)}, got {metric!r}")
        if not isinstance(index, str) or not index.strip():
            raise ValueError(f"sinks.faiss.index must be a FAISS index_factory string such as 'Flat', got {index!r}")
        for pname, value in (("nprobe", nprobe), ("ef_search", ef_search), ("ef_construction", ef_construction),
                             ("rerank", rerank)):
            if int(value) < 1:
                raise ValueError(f"sinks.faiss.{pname} must be >= 1, got {value!r}")
        if min_train is not None and int(min_train) < 1:
            raise ValueError(f"sinks.faiss.min_train must be >= 1 or None, got {min_train!r}")
        if not rebuild_fraction > 0:
            raise ValueError(f"sinks.faiss.rebuild_fraction must be > 0, got {rebuild_fraction!r}")
        if checkpoint_mb < 0:
            raise ValueError(f"sinks.faiss.checkpoint_mb must be >= 0, got {checkpoint_mb!r}")
        self.path = path
        self.collection = collection
        self.index = index
        self.metric = str(metric).lower()
        self.nprobe = nprobe
        self.ef_search = ef_search
        self.ef_construction = ef_construction
        self.min_train = min_train
        self.rerank = rerank
        self.rebuild_fraction = rebuild_fraction
        self.checkpoint_mb = checkpoint_mb
        self.fsync = fsync
        self.num_threads = num_threads
        self.seed = seed
        self._opened = False
        self._readonly = False
        self._reset()

    # ------------------------------------------------------------------ state

    def _reset(self) -> None:
        self._vecs: Any = None  # np.ndarray [capacity, dim]
        self._labels: Any = None  # np.ndarray int64 [capacity]
        self._n = 0
        self._ids: list[str] = []
        self._meta: list[dict[str, Any]] = []
        self._row: dict[str, int] = {}
        self._label_row: dict[int, int] = {}
        self._next_label = 0
        self._faiss_index: Any = None
        self._ready = False
        self._can_remove = True
        self._plain_flat = False
        self._stale: set[int] = set()
        self._hard_min = 1
        self._needed = 1
        self._generation = 0
        self._snap_sig: Any = None
        self._snap_size = 0
        self._wal_sig: Any = None
        self._wal_good: int | None = None
        self._journal: Any = None
        self._lock_fd: int | None = None
        self._index_changed = False
        self._snapshot_deferred = False
        self._warned_untrained = False
        self._fields_cache: set[str] | None = None

    def __deepcopy__(self, memo: dict) -> FaissSink:
        """A fresh, unopened sink with the same configuration (the runner copies templates)."""
        if self._opened:
            raise FaissSinkError("an open sinks.faiss cannot be copied; copy it before open()")
        params = [p for p in inspect.signature(type(self).__init__).parameters if p != "self"]
        return type(self)(**{k: copy.deepcopy(getattr(self, k), memo) for k in params})

    def _check_open(self) -> None:
        if not self._opened:
            raise FaissSinkError("sinks.faiss is not open: call open(collection, space) first")

    def _where(self) -> str:
        return f"sinks.faiss collection {self._collection!r} ({self._snap_path})"

    # ------------------------------------------------------------------ open / close

    def open(self, collection: str, space: EmbeddingSpace | None, *, readonly: bool = False) -> None:
        """Open ``<path>/<collection>.faiss`` for vectors of ``space`` (created on the first write).

        ``readonly=True`` creates nothing and takes no lock; a missing collection
        raises :class:`~musicembed_core.errors.SinkNotFoundError`. Only a
        read-only open may pass ``space=None``: it reads whatever space is stored,
        with no identity check.
        """
        import faiss

        if self._opened:
            raise FaissSinkError(f"sinks.faiss collection {self._collection!r} is already open; close() it first")
        name = self.collection or collection
        if not isinstance(name, str) or not _COLLECTION_RE.match(name):
            raise FaissSinkError(
                f"sinks.faiss: collection name {name!r} cannot be used as a file name; set "
                "sinks.faiss.collection to letters, digits, '_', '-' or '.'"
            )
        metric = str(self.metric).lower()
        if metric not in METRICS:
            raise FaissSinkError(f"sinks.faiss: metric must be one of {', '.join(METRICS)}, got {metric!r}")
        root = self._resolve_path()
        self._collection, self._metric_used, self._space = name, metric, space
        self._dir = root
        self._snap_path = os.path.join(root, f"{name}.faiss")
        self._wal_path = self._snap_path + ".wal"
        self._lock_path = self._snap_path + ".lock"
        if readonly and not os.path.isfile(self._snap_path):
            raise sink_not_found(f"{self._where()}")
        if space is None:
            if not readonly:
                raise FaissSinkError(
                    f"{self._where()}: opening for writing needs the embedding space of the vectors "
                    "(open(collection, space)); only open(collection, None, readonly=True) reads "
                    "whatever is stored"
                )
            from .storage import read_header

            dim = int(read_header(self._snap_path)["dim"])
        else:
            dim = int(space.dim)
        if dim < 1:
            raise DimensionMismatchError(f"sinks.faiss collection {name!r}: dim must be >= 1, got {dim}")
        self._dim = dim
        self._readonly = bool(readonly)
        if self.num_threads:
            faiss.omp_set_num_threads(int(self.num_threads))
        self._load()
        self._opened = True

    def _resolve_path(self) -> str:
        raw = os.fspath(self.path) if self.path is not None else ""
        if not raw:
            raise FaissSinkError("sinks.faiss.path is empty: set it to the folder that holds the collections")
        if "{" in raw:
            try:
                resolved = raw.format(output_dir=".")
            except (KeyError, IndexError, ValueError) as exc:
                raise FaissSinkError(
                    f"sinks.faiss.path = {raw!r}: only the {{output_dir}} placeholder is supported ({exc!r})"
                ) from None
            log.warning(
                "sinks.faiss.path %r still contains {output_dir}; using %r (relative to the current "
                "directory) instead. Pass an explicit path to choose the folder.", raw, resolved,
            )
            raw = resolved
        return os.path.abspath(os.path.expanduser(raw))

    def close(self) -> None:
        """Fold the journal into a fresh snapshot (when this process wrote) and release the lock."""
        if not self._opened:
            return
        try:
            if self._journal is not None:
                self._maybe_rebuild()
                if self._journal.size > self._wal_header_size() or self._index_changed:
                    self._checkpoint()
            if not self._ready and self._n:
                self._warn_untrained()
        finally:
            if self._journal is not None:
                self._journal.close()
            self._release_lock()
            self._reset()
            self._opened = False
            self._readonly = False

    @staticmethod
    def _wal_header_size() -> int:
        from .storage import WAL_HEADER_SIZE

        return WAL_HEADER_SIZE

    # ------------------------------------------------------------------ loading

    def _load(self) -> None:
        """(Re)read snapshot + journal from disk into memory; checks dim and space."""
        from . import storage

        self._reset_data()
        metric = self._metric_used
        if not os.path.exists(self._snap_path):
            if self._readonly:  # removed since open() looked
                raise sink_not_found(self._where())
            self._space_json = space_record(self._space) if self._space is not None else None
            self._grow(1024)
            self._set_index(self._new_index())
            self._snap_sig = None
            self._wal_sig = storage.file_signature(self._wal_path)
            self._wal_good = None
            return
        header = storage.read_header(self._snap_path)
        if int(header["dim"]) != self._dim:
            raise DimensionMismatchError(
                f"sinks.faiss collection {self._collection!r} ({self._snap_path}) holds "
                f"{header['dim']}-dim vectors but was opened for {self._dim}-dim vectors. Use another "
                "sinks.faiss.collection or path, or delete the collection's files to rebuild it."
            )
        if self._space is not None:
            check_stored_space(header.get("space"), self._space, where=self._snap_path)
        snap = storage.read_snapshot(self._snap_path)
        self._space_json = header["space"]
        self._generation = int(header["generation"])
        self._snap_sig, self._snap_size = snap.signature, snap.size
        n = len(snap.ids)
        self._grow(max(n, 1024))
        self._vecs[:n] = snap.vectors
        self._labels[:n] = snap.labels
        self._n = n
        self._ids = snap.ids
        self._meta = snap.metadata
        self._row = {tid: i for i, tid in enumerate(self._ids)}
        self._label_row = {int(lab): i for i, lab in enumerate(snap.labels)}
        self._next_label = int(header["next_label"])
        same_config = header["index"] == self.index and header["metric"] == metric
        if not same_config:
            log.info(
                "sinks.faiss collection %r: stored index %r/%s, configured %r/%s: rebuilding from the "
                "stored raw vectors", self._collection, header["index"], header["metric"], self.index, metric,
            )
        if same_config and snap.index_bytes is not None:
            idx = faiss_deserialize(snap.index_bytes)
            stale = {int(x) for x in header.get("stale_labels", [])}
            if idx.ntotal == n + len(stale):
                self._set_index(idx)
                self._stale = stale
                self._ready = bool(idx.is_trained)
            else:
                log.warning("sinks.faiss %s: stored index holds %d entries, expected %d; rebuilding it",
                            self._snap_path, idx.ntotal, n + len(stale))
                self._set_index(self._new_index())
                self._build_index(retrain=False)
        else:
            self._set_index(self._new_index())
            self._build_index(retrain=False)
        self._index_changed = self._index_changed or not same_config
        scan = storage.scan_journal(self._wal_path, self._dim)
        self._wal_sig = storage.file_signature(self._wal_path)
        if scan.generation == self._generation:
            for entry in scan.entries:
                if entry.op == "U":
                    self._apply_upsert(entry.ids, entry.vectors, entry.metadata or [])
                else:
                    self._apply_delete(entry.ids)
            self._wal_good = scan.good_size
            if scan.size > scan.good_size:
                log.info("sinks.faiss %s: dropped a torn last journal record (%d bytes) that was never "
                         "acknowledged", self._wal_path, scan.size - scan.good_size)
        else:
            self._wal_good = None

    def _reset_data(self) -> None:
        keep = {k: getattr(self, k) for k in ("_journal", "_lock_fd")}
        self._reset()
        self.__dict__.update(keep)

    # ------------------------------------------------------------------ index management

    def _faiss_metric(self) -> int:
        import faiss

        return faiss.METRIC_L2 if self._metric_used == "l2" else faiss.METRIC_INNER_PRODUCT

    def _new_index(self) -> Any:
        """A fresh (possibly untrained) index from the factory string, with int64 id support."""
        import faiss

        try:
            base = faiss.index_factory(self._dim, self.index.strip(), self._faiss_metric())
        except RuntimeError as exc:
            detail = str(exc).strip().splitlines()[-1][:200] if str(exc).strip() else repr(exc)
            raise FaissSinkError(
                f"sinks.faiss.index = {self.index!r} is not an index_factory string that faiss "
                f"{faiss.__version__} accepts for dim {self._dim} ({detail}). Examples: 'Flat', "
                "'HNSW32', 'IVF1024,Flat', 'IVF256,PQ64' (PQ m must divide the dim)."
            ) from None
        hnsw = _find_attr(base, "hnsw")
        if hnsw is not None:
            hnsw.efConstruction = int(self.ef_construction)
        # Polysemous training (minutes for PQ64) only serves Hamming-threshold search,
        # which this sink never enables: skip it, as the factory's "np" suffix would.
        ivf = faiss.try_extract_index_ivf(base)
        for node in (base, faiss.downcast_index(ivf) if ivf is not None else None):
            if node is not None and hasattr(node, "do_polysemous_training"):
                node.do_polysemous_training = False
        # IVF indexes store int64 ids natively (and IndexIDMap's remove_ids assumes
        # sequential inner ids, which IVF does not keep); everything else is wrapped.
        if ivf is None:
            return faiss.IndexIDMap(base)
        return base

    def _set_index(self, idx: Any) -> None:
        import faiss
        import numpy as np

        self._faiss_index = idx
        self._ready = bool(idx.is_trained) and idx.ntotal == self._n
        try:
            idx.remove_ids(faiss.IDSelectorBatch(np.zeros(0, dtype=np.int64)))
            self._can_remove = True
        except RuntimeError:
            self._can_remove = False  # HNSW: stale entries are masked at search, rebuilt later
        base = faiss.downcast_index(idx.index) if isinstance(idx, faiss.IndexIDMap) else idx
        self._plain_flat = isinstance(base, faiss.IndexFlat)  # rebuilt from the raw vectors by one copy
        clusters = _cluster_counts(idx)
        self._hard_min = max(clusters) if clusters else 1
        auto = _POINTS_PER_CENTROID * self._hard_min if clusters else 1
        needed = int(self.min_train) if self.min_train is not None else auto
        if not idx.is_trained and needed < self._hard_min:
            raise FaissSinkError(
                f"sinks.faiss.min_train = {needed} is below what index {self.index!r} needs: at least "
                f"{self._hard_min} vectors (one per k-means centroid; {auto} recommended)"
            )
        self._needed = max(needed, self._hard_min)

    def _prep(self, x: np.ndarray) -> np.ndarray:
        """Vectors as the index sees them (unit length for cosine)."""
        import numpy as np

        if self._metric_used == "cosine":
            return unit_rows(x)
        return np.ascontiguousarray(x, dtype=np.float32)

    def _build_index(self, retrain: bool) -> None:
        """(Re)fill the index from the raw vectors, training it first when possible."""
        import numpy as np

        idx = self._new_index() if retrain or self._faiss_index is None else self._faiss_index
        if idx is self._faiss_index:
            idx.reset()  # keeps trained centroids/codebooks, drops vectors and graph
        self._set_index(idx)
        self._stale = set()
        self._ready = False
        if not idx.is_trained:
            if self._n < self._needed:
                return
            if not self._train(idx):
                return
        for start in range(0, self._n, _ADD_BLOCK):
            stop = min(self._n, start + _ADD_BLOCK)
            idx.add_with_ids(self._prep(self._vecs[start:stop]), np.ascontiguousarray(self._labels[start:stop]))
        self._ready = True

    def _train(self, idx: Any) -> bool:
        import numpy as np

        cap = max(self._needed, _MAX_POINTS_PER_CENTROID * self._hard_min)
        if self._n > cap:
            rows = np.sort(np.random.default_rng(self.seed).choice(self._n, cap, replace=False))
            sample = self._vecs[rows]
        else:
            sample = self._vecs[: self._n]
        t0 = time.perf_counter()
        try:
            idx.train(self._prep(sample))
        except RuntimeError as exc:
            self._needed = max(self._needed, 2 * self._n)
            log.error(
                "sinks.faiss collection %r: training index %r on %d vectors failed (%s); searching "
                "exactly, retrying at %d vectors", self._collection, self.index, len(sample),
                str(exc).strip().splitlines()[-1][:200], self._needed,
            )
            return False
        log.info("sinks.faiss collection %r: trained index %r on %d vectors in %.1f s",
                 self._collection, self.index, len(sample), time.perf_counter() - t0)
        self._warned_untrained = False
        self._index_changed = True
        return True

    def _maybe_rebuild(self) -> None:
        """Rebuild an index that cannot remove ids once its stale entries pile up."""
        if self._stale and len(self._stale) > self.rebuild_fraction * max(self._n, 1):
            t0 = time.perf_counter()
            self._build_index(retrain=False)
            self._index_changed = True
            log.info("sinks.faiss collection %r: rebuilt index %r (%d vectors) to drop replaced/deleted "
                     "entries in %.1f s", self._collection, self.index, self._n, time.perf_counter() - t0)

    def rebuild(self, retrain: bool = True) -> None:
        """Rebuild the index from the stored raw vectors (re-training IVF/PQ with ``retrain``) and persist it.

        Useful after the library grew well beyond the size the index was trained on.
        """
        self._check_open()
        self._ensure_writable()
        self._build_index(retrain=retrain)
        self._index_changed = True
        self._checkpoint()

    @property
    def training_status(self) -> str | None:
        """None when the index serves searches; otherwise why not, and how many vectors it needs."""
        if not self._opened or self._ready or self._faiss_index is None:
            return None
        return (
            f"sinks.faiss collection {self._collection!r}: index {self.index!r} is not trained yet: "
            f"{self._n} vectors stored, {self._needed} needed to train it "
            f"({_POINTS_PER_CENTROID} per k-means centroid unless sinks.faiss.min_train is set). "
            "Searches are exact over all stored vectors until then."
        )

    def _warn_untrained(self) -> None:
        status = self.training_status
        if status and not self._warned_untrained:
            log.warning(status)
            self._warned_untrained = True

    # ------------------------------------------------------------------ in-memory mutation

    def _grow(self, capacity: int) -> None:
        import numpy as np

        old = 0 if self._vecs is None else self._vecs.shape[0]
        if capacity <= old:
            return
        capacity = max(capacity, 2 * old)
        vecs = np.empty((capacity, self._dim), dtype=np.float32)
        labels = np.empty(capacity, dtype=np.int64)
        if old:
            vecs[: self._n] = self._vecs[: self._n]
            labels[: self._n] = self._labels[: self._n]
        self._vecs, self._labels = vecs, labels

    def _apply_upsert(self, ids: Sequence[str], vecs: np.ndarray, metas: Sequence[dict]) -> None:
        import numpy as np

        n_new = len(ids)
        self._grow(self._n + n_new)
        new_labels = np.arange(self._next_label, self._next_label + n_new, dtype=np.int64)
        self._next_label += n_new
        old: list[int] = []
        for i, (tid, meta) in enumerate(zip(ids, metas)):
            r = self._row.get(tid)
            if r is None:
                r = self._n
                self._n += 1
                self._ids.append(tid)
                self._meta.append(meta)
                self._row[tid] = r
            else:
                lab = int(self._labels[r])
                old.append(lab)
                del self._label_row[lab]
                self._meta[r] = meta
            self._vecs[r] = vecs[i]
            self._labels[r] = new_labels[i]
            self._label_row[int(new_labels[i])] = r
        self._fields_cache = None
        self._index_remove(old)
        if self._ready:
            self._faiss_index.add_with_ids(self._prep(vecs), new_labels)
        elif self._n >= self._needed:
            self._build_index(retrain=False)

    def _apply_delete(self, ids: Iterable[str]) -> None:
        removed: list[int] = []
        for tid in ids:
            r = self._row.pop(tid, None)
            if r is None:
                continue
            lab = int(self._labels[r])
            del self._label_row[lab]
            removed.append(lab)
            last = self._n - 1
            if r != last:  # move the last row into the hole: rows stay dense
                self._vecs[r] = self._vecs[last]
                self._labels[r] = self._labels[last]
                self._ids[r] = self._ids[last]
                self._meta[r] = self._meta[last]
                self._row[self._ids[r]] = r
                self._label_row[int(self._labels[r])] = r
            self._ids.pop()
            self._meta.pop()
            self._n -= 1
        self._fields_cache = None
        self._index_remove(removed)

    def _index_remove(self, labels: list[int]) -> None:
        import faiss
        import numpy as np

        if not labels or not self._ready:
            return  # an untrained index holds no vectors
        if self._can_remove:
            self._faiss_index.remove_ids(faiss.IDSelectorBatch(np.asarray(labels, dtype=np.int64)))
        else:
            self._stale.update(labels)

    # ------------------------------------------------------------------ persistence

    def _ensure_writable(self) -> None:
        """Take the collection's write lock, reload if another writer changed it, open the journal."""
        from . import storage

        if self._journal is not None:
            return
        if self._readonly:
            raise FaissSinkError(
                f"{self._where()} was opened read-only (open(..., readonly=True)); open it "
                "without readonly to write"
            )
        if self._space_json is None:
            raise FaissSinkError(
                f"sinks.faiss collection {self._collection!r} does not exist yet and was opened without "
                "an embedding space; open it with the space of the vectors to write"
            )
        os.makedirs(self._dir, exist_ok=True)
        self._acquire_lock()
        try:
            from musicembed_core.atomic import clean_stale_temps

            clean_stale_temps(self._dir, prefix=f"{self._collection}.faiss")
            if (storage.file_signature(self._snap_path) != self._snap_sig
                    or storage.file_signature(self._wal_path) != self._wal_sig):
                self._load()  # someone wrote since we read it: start from what is on disk
            if self._generation == 0:
                self._checkpoint()  # first write: snapshot + journal of generation 1
                return
            if self._wal_good is None:
                storage.create_journal(self._wal_path, self._generation, self._dim)
                self._wal_good = storage.WAL_HEADER_SIZE
            self._journal = storage.JournalWriter(self._wal_path, self._wal_good, fsync=self.fsync)
        except BaseException as exc:
            self._release_lock()
            self._raise_if_disk_full(exc, self._wal_path, storage.WAL_HEADER_SIZE,
                                     "The collection on disk is unchanged.")
            raise

    def _acquire_lock(self) -> None:
        try:
            import fcntl
        except ImportError:  # pragma: no cover - Windows: no advisory locks, single writer assumed
            return
        fd = os.open(self._lock_path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
            os.close(fd)
            raise FaissSinkError(
                f"sinks.faiss collection {self._collection!r} in {self._dir} is being written by another "
                f"process or sink (pid {holder}); one writer at a time: wait for it to close, or use "
                "another sinks.faiss.path/collection"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        self._lock_fd = fd

    def _release_lock(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)  # closing the descriptor releases the flock
            self._lock_fd = None

    def _checkpoint(self) -> None:
        """Write snapshot ``g + 1`` atomically, then start an empty journal ``g + 1``."""
        import faiss

        from . import storage

        gen = self._generation + 1
        header = {
            "collection": self._collection,
            "dim": self._dim,
            "metric": self._metric_used,
            "index": self.index,
            "count": self._n,
            "next_label": self._next_label,
            "generation": gen,
            "space": self._space_json,
            "space_hash": _space_hash(self._space_json),
            "trained": self._ready,
            "stale_labels": sorted(self._stale),
            "faiss_version": faiss.__version__,
        }
        write_index = None
        if self._ready and not self._plain_flat:
            idx = self._faiss_index

            def write_index(write: Any) -> None:
                faiss.write_index(idx, faiss.PyCallbackIOWriter(write))

        kept = (
            f"The previous snapshot (generation {self._generation}) and the journal {self._wal_path}, "
            f"which hold every acknowledged upsert, are intact: reopening replays them."
            if self._generation else "Nothing was stored yet."
        )
        need = 0

        def ensure_space(data_bytes: int) -> None:
            nonlocal need
            need = data_bytes
            free = free_bytes(self._dir)
            if free is None:
                return
            if write_index is not None and free < 2 * data_bytes + (64 << 20):
                sizer = _ByteCounter()  # tight: measure the index section exactly
                write_index(sizer)
                need += sizer.n
            elif write_index is not None:
                need += data_bytes  # a generous guess: the check below has room to spare
            ensure_free_space(self._snap_path, need, self._who(), kept)

        try:
            self._snap_size = storage.write_snapshot(
                self._snap_path, header, self._vecs[: self._n], self._labels[: self._n],
                self._ids, self._meta, write_index, ensure_space=ensure_space,
            )
        except Exception as exc:
            self._raise_if_disk_full(exc, self._snap_path, need, kept)
            raise
        self._snap_sig = storage.file_signature(self._snap_path)
        if self._journal is not None:
            self._journal.close()
            self._journal = None
        try:
            storage.create_journal(self._wal_path, gen, self._dim)
        except Exception as exc:
            self._raise_if_disk_full(
                exc, self._wal_path, storage.WAL_HEADER_SIZE,
                f"Snapshot generation {gen} ({self._snap_path}) holds every upsert so far.",
            )
            raise
        self._generation = gen
        self._wal_good = storage.WAL_HEADER_SIZE
        self._journal = storage.JournalWriter(self._wal_path, self._wal_good, fsync=self.fsync)
        self._wal_sig = storage.file_signature(self._wal_path)
        self._index_changed = False

    def _who(self) -> str:
        return f"sinks.faiss collection {self._collection!r}"

    def _raise_if_disk_full(self, exc: BaseException, file: str, need: int | None, kept: str) -> None:
        """Re-raise a full disk as one clear OSError(ENOSPC) (ours already is one)."""
        if is_disk_full(exc) and not (isinstance(exc, OSError) and self._who() in str(exc)):
            raise disk_full_error(self._who(), file, need, kept) from exc

    def _append(self, payload: bytes, what: str) -> None:
        try:
            self._journal.append(payload)
        except Exception as exc:
            self._raise_if_disk_full(
                exc, self._wal_path, len(payload),
                f"Nothing of this {what} was stored; the snapshot and the journal hold every "
                f"acknowledged upsert before it.",
            )
            raise

    def flush(self) -> None:
        """Every upsert is already journaled and fsynced when it returns; with ``fsync=False``
        this fsyncs the journal."""
        self._check_open()
        if self._journal is not None and not self.fsync:
            self._journal.sync()

    def _checkpoint_if_due(self) -> None:
        """After a journaled write: a snapshot that does not fit on the disk does not fail the
        write (it is durable in the journal); it is retried at ``close()``."""
        if self._snapshot_deferred:
            return
        try:
            self._maybe_checkpoint()
        except OSError as exc:
            if not is_disk_full(exc) or self._journal is None:
                raise  # the journal is gone too: this sink cannot take more writes
            self._snapshot_deferred = True
            log.warning("%s (the write itself is in the journal; the snapshot is retried at close)", exc)

    def _maybe_checkpoint(self) -> None:
        from .storage import WAL_HEADER_SIZE

        limit = max(self.checkpoint_mb * (1 << 20), self._snap_size)
        if self._journal.size - WAL_HEADER_SIZE > limit:
            self._maybe_rebuild()
            self._checkpoint()

    # ------------------------------------------------------------------ Sink API

    def known(self) -> Mapping[str, str]:
        """``{id: content_hash}`` of every stored track that has a content hash."""
        self._check_open()
        return {
            tid: m["content_hash"]
            for tid, m in zip(self._ids, self._meta)
            if isinstance(m.get("content_hash"), str)
        }

    def count(self) -> int:
        self._check_open()
        return self._n

    def _vectors_arg(self, vectors: Any, rows: int | None, what: str) -> np.ndarray:
        import numpy as np

        arr = np.asarray(vectors, dtype=np.float32)
        if arr.ndim == 1 and (rows is None or rows == 1):
            arr = arr.reshape(1, -1)
        if arr.ndim != 2 or arr.shape[1] != self._dim or (rows is not None and arr.shape[0] != rows):
            want = f"[{rows if rows is not None else 'Q'}, {self._dim}]"
            raise DimensionMismatchError(
                f"sinks.faiss collection {self._collection!r} holds {self._dim}-dim vectors but "
                f"{what} has shape {tuple(arr.shape)} (expected {want})"
            )
        return np.ascontiguousarray(arr)

    def upsert(self, records: Sequence[Record]) -> None:
        """Insert or replace by id; durable (journaled + fsynced) when it returns. Last duplicate id wins.

        The record's ``content_hash`` is stored with its metadata (``known()``, and
        ``Hit.metadata["content_hash"]``).
        """
        from .storage import encode_upsert, normalise_metadata

        self._check_open()
        batch = stack_records(records, self._dim, where=f"sinks.faiss collection {self._collection!r}")
        if not len(batch):
            return
        ids, vecs = batch.ids, batch.vectors
        metas = [{**md, "content_hash": h} for md, h in zip(batch.metadata, batch.content_hashes)]
        self._ensure_writable()
        blob, stored_meta = normalise_metadata(metas)
        self._append(encode_upsert(ids, blob, vecs), f"upsert of {len(ids)} records")
        self._apply_upsert(ids, vecs, stored_meta)
        self._checkpoint_if_due()

    def delete(self, ids: Iterable[str]) -> None:
        """Remove tracks (unknown ids are ignored); durable when it returns."""
        from .storage import encode_delete

        self._check_open()
        wanted = list(dict.fromkeys(ids))
        if not any(tid in self._row for tid in wanted):
            return
        self._ensure_writable()
        present = [tid for tid in wanted if tid in self._row]
        if not present:
            return
        self._append(encode_delete(present), f"delete of {len(present)} ids")
        self._apply_delete(present)
        self._checkpoint_if_due()

    def search(self, vectors: np.ndarray, k: int = 10, filter: str | None = None) -> list[list[Hit]]:
        """``k`` nearest stored tracks per query row, best first, with exact scores.

        With ``filter``, the search is exact over the tracks that match it.
        """
        import numpy as np

        self._check_open()
        q = self._vectors_arg(vectors, None, "the query")
        if int(k) < 1:
            raise ValueError(f"sinks.faiss.search: k must be >= 1, got {k!r}")
        k = int(k)
        flt = parse_filter(filter) if filter is not None else None
        if self._n == 0 or q.shape[0] == 0:
            return [[] for _ in range(q.shape[0])]
        qp = self._prep(q)
        store = self._vecs[: self._n]
        metric = self._metric_used
        if flt is not None:
            flt.check_fields(self._fields(), where=f"collection {self._collection!r}")
            mask = np.fromiter((flt(md, tid) for tid, md in zip(self._ids, self._meta)),
                               dtype=bool, count=self._n)
            return exact_search(store, self._ids, qp, k, metric, mask=mask, metadata=self._meta)
        if not self._ready:
            self._warn_untrained()
            return exact_search(store, self._ids, qp, k, metric, metadata=self._meta)
        return exact_rerank(store, self._ids, qp, self._ann(qp, k), k, metric, metadata=self._meta)

    def _ann(self, qp: np.ndarray, k: int) -> np.ndarray:
        import faiss
        import numpy as np

        self._maybe_rebuild()
        idx = self._faiss_index
        kk = max(1, min(k * int(self.rerank), idx.ntotal))
        keep: list[Any] = []  # selectors must outlive the search call
        sel = None
        if self._stale:
            batch = faiss.IDSelectorBatch(np.fromiter(self._stale, dtype=np.int64))
            sel = faiss.IDSelectorNot(batch)
            keep += [batch, sel]
        if faiss.try_extract_index_ivf(idx) is not None:
            params: Any = faiss.SearchParametersIVF(nprobe=int(self.nprobe))
        elif _find_attr(idx, "hnsw") is not None:
            params = faiss.SearchParametersHNSW(efSearch=max(int(self.ef_search), kk))
        else:
            params = faiss.SearchParameters()
        if sel is not None:
            params.sel = sel
        _, labels = idx.search(qp, kk, params=params)
        get = self._label_row.get
        return np.array([[get(int(lab), -1) for lab in row] for row in labels], dtype=np.int64).reshape(
            labels.shape
        )

    def _fields(self) -> set[str]:
        if self._fields_cache is None:
            fields: set[str] = set()
            for m in self._meta:
                fields.update(m)
            self._fields_cache = fields
        return self._fields_cache

    # ------------------------------------------------------------------ extras

    def fetch(self, ids: Sequence[str]) -> dict[str, np.ndarray]:
        """Stored raw vectors (copies) by id; absent ids are left out."""
        self._check_open()
        return {tid: self._vecs[self._row[tid]].copy() for tid in ids if tid in self._row}

    def fetch_metadata(self, ids: Sequence[str]) -> dict[str, dict[str, Any]]:
        """Stored metadata (copies, with ``content_hash``) by id; absent ids are left out."""
        self._check_open()
        return {tid: copy.deepcopy(self._meta[self._row[tid]]) for tid in ids if tid in self._row}

    def describe(self) -> dict[str, Any]:
        """What is stored and in which state the index is (for logs, CLIs and tests)."""
        self._check_open()
        return {
            "collection": self._collection,
            "file": self._snap_path,
            "count": self._n,
            "dim": self._dim,
            "metric": self._metric_used,
            "index": self.index,
            "space_hash": _space_hash(self._space_json),
            "trained": self._ready,
            "vectors_needed_for_training": None if self._ready else self._needed,
            "stale_entries": len(self._stale),
            "generation": self._generation,
            "writable": self._journal is not None,
        }


# ---------------------------------------------------------------------- faiss helpers


class _ByteCounter:
    """A ``write`` callback that only counts: the size of a serialised index."""

    def __init__(self) -> None:
        self.n = 0

    def __call__(self, data: Any) -> int:
        size = len(memoryview(data).cast("B"))
        self.n += size
        return size


def faiss_deserialize(data: bytearray) -> Any:
    import faiss
    import numpy as np

    return faiss.deserialize_index(np.frombuffer(data, dtype=np.uint8))


def _find_attr(idx: Any, attr: str) -> Any:
    import faiss

    for _ in range(8):
        if hasattr(idx, attr):
            return getattr(idx, attr)
        if not hasattr(idx, "index"):
            return None
        idx = faiss.downcast_index(idx.index)
    return None


def _cluster_counts(idx: Any) -> list[int]:
    """k-means sizes that training needs: IVF lists and PQ sub-quantizer centroids."""
    import faiss

    out: list[int] = []
    ivf = faiss.try_extract_index_ivf(idx)
    if ivf is not None:
        out.append(int(ivf.nlist))
        ivf = faiss.downcast_index(ivf)
        pq = getattr(ivf, "pq", None)
        if pq is not None:
            out.append(int(pq.ksub))
    else:
        pq = _find_attr(idx, "pq")
        if pq is not None:
            out.append(int(pq.ksub))
    return out


def _space_hash(space_json: str | None) -> str | None:
    import json

    return json.loads(space_json).get("hash") if space_json else None
