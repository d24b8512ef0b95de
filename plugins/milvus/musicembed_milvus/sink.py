"""``sinks.milvus``: vectors and track metadata in a Milvus collection.

One collection per embedding space. Milvus Lite (a local ``.db``, no server)
by default; the same code talks to a Milvus server or cluster when ``uri`` is
``http(s)://HOST:PORT`` (with ``token``/``db_name``). pymilvus and numpy are
imported inside methods: ``musicembed plugins`` imports this module.

Durability: an upsert is durable when it returns. Milvus Lite appends it to its
write-ahead log (written through to the operating system) before answering, so
it survives kill -9; a server acknowledges it once it is in its own log. So
``flush()`` has nothing to do (and does not call Milvus' flush, which would seal
a small segment each time).

Records Milvus cannot store (an id or path that is not valid UTF-8, such as an
undecodable file name; NaN; a wrong dim) are refused before any request, with
an error naming the track. A full disk under a Milvus Lite database ends in one
``OSError(ENOSPC)`` naming the collection and database, checked before the
request where possible; the rows acknowledged before it are kept.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from musicembed_core import (
    Hit,
    Record,
    Sink,
    check_stored_space,
    sink_not_found,
    space_record,
    stack_records,
    unit_rows,
)
from musicembed_core.atomic import disk_full_error, ensure_free_space, is_disk_full, json_default

from . import lite
from .errors import DimensionMismatchError, FilterError, MilvusSinkError
from .expr import (
    chunks,
    collection_name_from,
    id_after,
    id_in,
    is_valid_collection_name,
)
from .layout import (
    COLUMNS,
    CONTENT_HASH,
    DURATION,
    FORMAT_PROPERTY,
    FORMAT_VERSION,
    HASH_MAX_BYTES,
    JSON_MAX_BYTES,
    LITE_INDEX_TYPES,
    META,
    METRIC_PROPERTY,
    MILVUS_MAX_DIM,
    MILVUS_TOPK_MAX,
    PATH,
    SPACE_HASH,
    SPACE_PROPERTY,
    STRING_MAX_BYTES,
    Part,
    milvus_metric,
    parts_from_fields,
    split,
)

if TYPE_CHECKING:  # pragma: no cover
    import numpy as np

    from musicembed_core import EmbeddingSpace

log = logging.getLogger("musicembed.milvus")

KNOWN_PAGE = 4096
"""Rows per page when listing what is stored (``known``)."""
HIT_FIELDS = [PATH, DURATION, CONTENT_HASH, META]
FILTER_HELP = (
    "Fields: id, path, duration, content_hash, space_hash, and every other metadata key "
    "as meta[\"key\"]. Examples: 'duration > 60', 'path like \"%jazz%\"', "
    "'meta[\"genre\"] == \"jazz\"', 'meta[\"sample_rate\"] >= 44100'."
)

_wrapping = threading.local()


class _WhileWrapping(logging.Filter):
    """Drops pymilvus' own log lines (an ERROR with a traceback per failed RPC) for the
    calls whose errors the sink re-raises with the collection, uri and filter named."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not getattr(_wrapping, "active", False)


_WRAPPING_FILTER = _WhileWrapping()


class MilvusSink(Sink):
    """Milvus collection keyed by track id: upserts, exact counts, filtered search.

    Vectors wider than ``max_part_dim`` are split over several vector fields and
    searched part by part, then re-ranked exactly on the full vector (see
    ``wide.py`` and the README).
    """

    name = "milvus"

    def __init__(
        self,
        uri: str = "./musicembed.db",
        token: str = "",
        db_name: str = "",
        collection: str | None = None,
        metric: str = "cosine",
        index_type: str = "AUTOINDEX",
        index_params: dict | None = None,
        search_params: dict | None = None,
        consistency_level: str = "Strong",
        max_part_dim: int = MILVUS_MAX_DIM,
        max_vector_fields: int = 4,
        oversample: int = 4,
        max_part_candidates: int = 1024,
        max_request_bytes: int = 16 * 2**20,
        max_request_rows: int = 4096,
        timeout: float | None = None,
    ) -> None:
        milvus_metric(metric)  # refuse a bad name at configuration time
        if not 1 <= max_part_dim <= MILVUS_MAX_DIM:
            raise ValueError(
                f"sinks.milvus.max_part_dim={max_part_dim}: must be within 1..{MILVUS_MAX_DIM} "
                f"(Milvus' limit on one vector field)"
            )
        for pname, value in (("max_vector_fields", max_vector_fields), ("oversample", oversample),
                             ("max_part_candidates", max_part_candidates),
                             ("max_request_bytes", max_request_bytes),
                             ("max_request_rows", max_request_rows)):
            if int(value) < 1:
                raise ValueError(f"sinks.milvus.{pname}={value}: must be at least 1")
        self.uri = uri
        self.token = token
        self.db_name = db_name
        self.collection = collection
        self.metric = metric
        self.index_type = index_type
        self.index_params = index_params
        self.search_params = search_params
        self.consistency_level = consistency_level
        self.max_part_dim = max_part_dim
        self.max_vector_fields = max_vector_fields
        self.oversample = oversample
        self.max_part_candidates = max_part_candidates
        self.max_request_bytes = max_request_bytes
        self.max_request_rows = max_request_rows
        self.timeout = timeout
        self._client: Any = None
        self._lite_path: str | None = None
        self._name = ""
        self._parts: list[Part] = []
        self._dim = 0
        self._metric = ""
        self._space: EmbeddingSpace | None = None
        self._readonly = False

    def config(self) -> dict[str, Any]:
        """As stored, with credentials (token, user:password@ in the uri) masked."""
        cfg = super().config()
        if cfg.get("token"):
            cfg["token"] = "***"
        if isinstance(cfg.get("uri"), str):
            cfg["uri"] = _without_credentials(cfg["uri"])
        return cfg

    def shared_service(self) -> bool:
        """A Milvus server (``http://...``) takes writes from many processes at once: the Ray
        engine upserts from its workers. A Milvus Lite ``.db`` file has one writer."""
        return not lite.is_lite_uri(str(self.uri))

    # ------------------------------------------------------------------ open/close

    def open(self, collection: str, space: EmbeddingSpace, *, readonly: bool = False) -> None:
        """Open (or create) the collection for vectors of ``space`` (dim ``space.dim``, metric
        ``self.metric``). ``readonly=True`` creates neither the Milvus Lite database nor the
        collection: a missing one raises :class:`~musicembed_core.errors.SinkNotFoundError`."""
        if self._client is not None:
            raise MilvusSinkError(f"sinks.milvus is already open on collection {self._name!r}")
        milvus_metric(self.metric)
        self._name = self._collection_name(collection)
        self._dim, self._metric, self._space = int(space.dim), str(self.metric).lower(), space
        self._readonly = bool(readonly)
        uri = str(self.uri)
        if readonly and lite.is_lite_uri(uri) and not os.path.exists(lite.lite_path(uri)):
            self._lite_path = lite.lite_path(uri)  # for the message only: nothing is opened
            where = self._where()
            self._lite_path = None
            raise sink_not_found(where)
        self._connect()
        try:
            if self._request("looking up the collection", self._client.has_collection, self._name):
                self._attach(space)
            elif readonly:
                raise sink_not_found(self._where())
            else:
                self._create(space)
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        client, self._client = self._client, None
        if client is None:
            return
        self._readonly = False
        try:
            client.close()
        finally:
            if self._lite_path is not None:
                path, self._lite_path = self._lite_path, None
                lite.release(path)

    def _collection_name(self, collection: str) -> str:
        if is_valid_collection_name(collection):
            return collection
        if self.collection:  # set explicitly: say so rather than rename it
            raise MilvusSinkError(
                f"sinks.milvus.collection={collection!r} is not a valid Milvus collection name: "
                f"use letters, digits and underscores, not starting with a digit, at most 255 "
                f"characters (e.g. {collection_name_from(collection)!r})"
            )
        name = collection_name_from(collection)
        log.info("milvus: embedding %r stored in collection %r (Milvus naming rules)", collection, name)
        return name

    def _where(self) -> str:
        """The collection's location for messages (never the token)."""
        if self._lite_path is not None:
            loc = f"Milvus Lite database {self._lite_path}"
        else:
            loc = _without_credentials(self.uri)
        db = f", database {self.db_name!r}" if self.db_name else ""
        return f"milvus collection {self._name!r} ({loc}{db})"

    def _connect(self) -> None:
        from pymilvus import MilvusClient
        from pymilvus.exceptions import MilvusException

        uri = str(self.uri)
        token = self.token or os.environ.get("MILVUS_TOKEN", "")
        if lite.is_lite_uri(uri):
            if token:
                log.info("milvus: token ignored for the local Milvus Lite database %s", uri)
            path = lite.lite_path(uri)
            lite.acquire(path)
            try:
                self._client = MilvusClient(uri=path, db_name=self.db_name, timeout=self.timeout)
            except MilvusException as exc:
                lite.release(path)
                if lite.held_by_another_process(path):
                    raise lite.locked_error(path) from exc
                raise MilvusSinkError(
                    f"cannot open Milvus Lite database {path}: {exc.message}"
                ) from exc
            except BaseException:
                lite.release(path)
                raise
            self._lite_path = path
            return
        try:
            self._client = MilvusClient(uri=uri, token=token, db_name=self.db_name, timeout=self.timeout)
        except MilvusException as exc:
            raise MilvusSinkError(
                f"cannot connect to Milvus at {_without_credentials(uri)}"
                + (f" (database {self.db_name!r})" if self.db_name else "")
                + f": {exc.message}. Check sinks.milvus.uri, sinks.milvus.token (or the "
                f"MILVUS_TOKEN environment variable) and sinks.milvus.db_name; for a local "
                f"database without a server use a path ending in .db"
            ) from exc

    def _create(self, space: EmbeddingSpace) -> None:
        from pymilvus import DataType, MilvusClient

        parts = split(self._dim, self.max_part_dim)
        if len(parts) > self.max_vector_fields:
            raise MilvusSinkError(
                f"{self._where()}: {self._dim}-dim vectors need {len(parts)} vector fields of at "
                f"most {self.max_part_dim} dims, but sinks.milvus.max_vector_fields is "
                f"{self.max_vector_fields} (Milvus' default proxy.maxVectorFieldNum is 4). Raise "
                f"that limit on the server and set sinks.milvus.max_vector_fields, or make the "
                f"vectors narrower (fewer layers or statistics in the enricher chain)."
            )
        index_type = self._checked_index_type()
        schema = MilvusClient.create_schema(auto_id=False, enable_dynamic_field=False)
        schema.add_field("id", DataType.VARCHAR, is_primary=True, max_length=STRING_MAX_BYTES)
        for p in parts:
            schema.add_field(p.field, DataType.FLOAT_VECTOR, dim=p.dim)
        schema.add_field(PATH, DataType.VARCHAR, max_length=STRING_MAX_BYTES, nullable=True)
        schema.add_field(DURATION, DataType.DOUBLE, nullable=True)
        schema.add_field(CONTENT_HASH, DataType.VARCHAR, max_length=HASH_MAX_BYTES)
        schema.add_field(SPACE_HASH, DataType.VARCHAR, max_length=HASH_MAX_BYTES)
        schema.add_field(META, DataType.JSON)
        self._parts = parts
        self._request(
            "create collection",
            self._client.create_collection,
            self._name,
            schema=schema,
            consistency_level=self.consistency_level,
            properties={
                SPACE_PROPERTY: space_record(space),
                METRIC_PROPERTY: self._metric,
                FORMAT_PROPERTY: FORMAT_VERSION,
            },
        )
        self._create_indexes(parts, index_type)
        self._request("load collection", self._client.load_collection, self._name)
        if len(parts) > 1:
            log.info("milvus: %d-dim vectors stored as %d parts of %s dims in %s", self._dim,
                     len(parts), "/".join(str(p.dim) for p in parts), self._where())

    def _attach(self, space: EmbeddingSpace) -> None:
        from pymilvus import DataType

        desc = self._request("describe collection", self._client.describe_collection, self._name)
        props = dict(desc.get("properties") or {})
        stored_space = props.get(SPACE_PROPERTY)
        widths = {
            f["name"]: int(f["params"]["dim"])
            for f in desc.get("fields", [])
            if f.get("type") == DataType.FLOAT_VECTOR
        }
        names = {f["name"] for f in desc.get("fields", [])}
        parts = parts_from_fields(widths)
        if stored_space is None or parts is None or not {PATH, DURATION, CONTENT_HASH, SPACE_HASH, META} <= names:
            raise MilvusSinkError(
                f"{self._where()} exists but was not written by musicembed (no "
                f"{SPACE_PROPERTY!r} property or another field layout): choose another "
                f"collection with sinks.milvus.collection, or drop that collection"
            )
        stored_dim = parts[-1].stop
        if stored_dim != self._dim:
            raise DimensionMismatchError(
                f"{self._where()} stores {stored_dim}-dim vectors, but this run produces "
                f"{self._dim}-dim vectors: write to another collection "
                f"(sinks.milvus.collection) or drop the old one to rebuild it"
            )
        check_stored_space(stored_space, space, where=self._where())
        stored_metric = props.get(METRIC_PROPERTY, "")
        if stored_metric != self._metric:
            raise MilvusSinkError(
                f"{self._where()} was indexed with metric {stored_metric!r}, but "
                f"sinks.milvus.metric is {self._metric!r}: the metric is fixed when the index "
                f"is built, so set metric={stored_metric!r} or use another collection"
            )
        self._parts = parts
        # A process killed between creating the collection and its indexes left it
        # without them: build them now (Milvus refuses to load a collection without).
        indexed = set(self._request("list indexes", self._client.list_indexes, self._name))
        missing = [p for p in parts if p.field not in indexed]
        if missing and self._readonly:
            raise MilvusSinkError(
                f"{self._where()} has no index on {', '.join(p.field for p in missing)} (a run was "
                f"killed while creating it): run `musicembed run` with the same gin files once "
                f"to build it, then search again"
            )
        if missing:
            self._create_indexes(missing, self._checked_index_type())
        self._load_collection()

    def _load_collection(self) -> None:
        """Load the collection; on Milvus Lite, rebuild index sidecars a killed process tore.

        Milvus Lite (3.2.2) writes each segment's index sidecar (``indexes/*.idx``) in place,
        not atomically: a process killed while writing one leaves it truncated, and every
        later load fails ("No data left in file"). The sidecars are derived data (the
        vectors live in the segment files), so the unreadable ones are removed and the
        load is retried once; Milvus Lite builds them again.
        """
        try:
            self._request("load collection", self._client.load_collection, self._name)
            return
        except MilvusSinkError as exc:
            if self._lite_path is None:
                raise
            if self._readonly:
                raise MilvusSinkError(
                    f"{exc} If a run was killed while writing it, run `musicembed run` with the "
                    "same gin files once: it rebuilds the index files, then search again."
                ) from exc
            removed = lite.remove_torn_index_sidecars(self._lite_path, self._name)
            if not removed:
                raise
        log.warning("%s: rebuilt %d index file(s) that a killed process left incomplete (%s)",
                    self._where(), len(removed), ", ".join(os.path.basename(r) for r in removed))
        self._request("load collection", self._client.load_collection, self._name)

    # ------------------------------------------------------------------ helpers

    def _checked_index_type(self) -> str:
        index_type = str(self.index_type).upper()
        if self._lite_path is not None and index_type not in LITE_INDEX_TYPES:
            raise MilvusSinkError(
                f"sinks.milvus.index_type={self.index_type!r} is not available in Milvus Lite "
                f"3.2.2 ({self._lite_path}): use one of {', '.join(LITE_INDEX_TYPES)}, or a "
                f"Milvus server for other index types"
            )
        return index_type

    def _create_indexes(self, parts: Sequence[Part], index_type: str) -> None:
        index = self._client.prepare_index_params()
        for p in parts:
            # Build parameters go as one JSON "params" entry (the classic wire form):
            # a Milvus server reads it, and Milvus Lite 3.2.2 reads only that, not the
            # flattened entries pymilvus 3.0.2 sends for add_index(params=...).
            build = {"params": dict(self.index_params)} if self.index_params else {}
            index.add_index(p.field, index_type=index_type,
                            metric_type=self._part_metric(len(self._parts)), params=build)
        # sync=False: pymilvus would poll for the build with AllocTimestamp, which
        # Milvus Lite does not implement (its gRPC server logs a traceback per index);
        # an empty collection's index exists at once, segments are indexed as they seal.
        self._request("create index", self._client.create_index, self._name, index, sync=False)

    def _part_metric(self, n_parts: int) -> str:
        # Cosine over parts: the whole vector is normalised before it is split, so
        # inner products of the parts add up to the cosine.
        if self._metric == "cosine" and n_parts > 1:
            return "IP"
        return milvus_metric(self._metric)

    @property
    def _higher_is_better(self) -> bool:
        return self._metric != "l2"

    def _require_open(self) -> None:
        if self._client is None:
            raise MilvusSinkError("sinks.milvus: call open(collection, space) first")

    def _require_writable(self) -> None:
        self._require_open()
        if self._readonly:
            raise MilvusSinkError(
                f"{self._where()} was opened read-only (open(..., readonly=True)); open it "
                f"without readonly to write"
            )

    def _request(self, what: str, fn: Callable[..., Any], *args: Any,
                 user_filter: str | None = None, **kwargs: Any) -> Any:
        """One Milvus call; its failure becomes an error naming the collection (and filter)."""
        from pymilvus.exceptions import MilvusException

        try:
            with _quiet_pymilvus():
                return fn(*args, timeout=self.timeout, **kwargs)
        except MilvusException as exc:
            if user_filter:
                self._check_filter(user_filter)
            raise MilvusSinkError(f"{what} in {self._where()} failed: {exc.message}") from exc

    def _check_filter(self, filter: str) -> None:
        """Raise :class:`FilterError` when Milvus refuses ``filter`` itself."""
        from pymilvus.exceptions import MilvusException

        try:
            with _quiet_pymilvus():
                self._client.query(self._name, filter=filter, output_fields=["id"], limit=1,
                                   timeout=self.timeout)
        except MilvusException as exc:
            raise FilterError(
                f"filter {filter!r} is not a valid Milvus expression for {self._where()}: "
                f"{exc.message}. {FILTER_HELP}"
            ) from exc

    def _rows_per_request(self, row_bytes: int) -> int:
        return max(1, min(self.max_request_rows, self.max_request_bytes // max(1, row_bytes)))

    # ------------------------------------------------------------------ writes

    def upsert(self, records: Sequence[Record]) -> None:
        """Insert or replace rows by id (a batch repeating an id keeps its last record)."""
        self._require_writable()
        batch = stack_records(records, self._dim, where=self._where())
        if not len(batch):
            return
        vecs = batch.vectors
        if self._metric == "cosine" and len(self._parts) > 1:
            vecs = unit_rows(vecs)  # part inner products then add up to the cosine

        rows, sizes = [], []
        for tid, vec, content_hash, md in zip(batch.ids, vecs, batch.content_hashes, batch.metadata):
            row, size = self._row(tid, vec, content_hash, md)
            rows.append(row)
            sizes.append(size)
        start = 0
        while start < len(rows):
            stop, total = start, 0
            while stop < len(rows) and stop - start < self.max_request_rows and (
                stop == start or total + sizes[stop] <= self.max_request_bytes
            ):
                total += sizes[stop]
                stop += 1
            self._upsert_rows(rows[start:stop], total, start, len(rows))
            start = stop

    def flush(self) -> None:
        """Nothing to do: an upsert is durable when it returns (module doc)."""
        self._require_open()

    def _upsert_rows(self, rows: list[dict], nbytes: int, done: int, total: int) -> None:
        """One upsert request; on a Milvus Lite database, a full disk is one clear OSError."""
        kept = (
            f"These {len(rows)} rows were not acknowledged"
            + (f" (the first {done} rows of this batch of {total} were)" if done else "")
            + "; every upsert acknowledged before is kept."
        )
        if self._lite_path is not None:
            # The write-ahead log takes about the request size; Milvus Lite writes it
            # while answering, so check first rather than leave it a torn record.
            ensure_free_space(self._lite_path, 2 * nbytes, self._where(), kept)
        try:
            self._request(f"upsert of {len(rows)} rows", self._client.upsert, self._name, rows)
        except MilvusSinkError as exc:
            if self._lite_path is not None and is_disk_full(exc):
                raise disk_full_error(self._where(), self._lite_path, 2 * nbytes, kept) from exc
            raise

    def _row(self, tid: str, vec: np.ndarray, content_hash: str,
             md: Mapping[str, Any]) -> tuple[dict, int]:
        """One Milvus row and its approximate request size in bytes."""
        _check_string(tid, "track id", tid, STRING_MAX_BYTES, self._where())
        path = md.get(PATH)
        if path is not None:
            path = str(path)
            _check_string(path, "path", tid, STRING_MAX_BYTES, self._where())
        duration = md.get(DURATION)
        if duration is not None:
            try:
                duration = float(duration)
            except (TypeError, ValueError):
                raise ValueError(
                    f"upsert into {self._where()}: track {tid!r} has duration {duration!r}, "
                    f"expected a number of seconds"
                ) from None
        _check_string(content_hash, "content_hash", tid, HASH_MAX_BYTES, self._where())
        meta = {str(k): v for k, v in md.items() if k not in COLUMNS}
        try:
            meta_json = json.dumps(meta, default=json_default, allow_nan=False, ensure_ascii=False)
            meta_bytes = len(meta_json.encode("utf-8"))
        except UnicodeEncodeError as exc:
            raise ValueError(
                f"upsert into {self._where()}: metadata of track {tid!r} holds text that is not "
                f"valid UTF-8 ({exc.object[max(0, exc.start - 20):exc.end + 20]!r}), which Milvus "
                f"cannot store; the track is not stored"
            ) from None
        except (TypeError, ValueError) as exc:
            raise ValueError(
                f"upsert into {self._where()}: metadata of track {tid!r} is not JSON: {exc}"
            ) from None
        if meta_bytes > JSON_MAX_BYTES:
            raise ValueError(
                f"upsert into {self._where()}: metadata of track {tid!r} is "
                f"{meta_bytes} bytes as JSON; Milvus takes at most {JSON_MAX_BYTES}"
            )
        row: dict[str, Any] = {"id": tid}
        for p in self._parts:
            row[p.field] = vec[p.start : p.stop]
        row.update({PATH: path, DURATION: duration, CONTENT_HASH: content_hash,
                    SPACE_HASH: self._space.hash if self._space else "", META: json.loads(meta_json)})
        size = 4 * self._dim + len(tid) + len(path or "") + len(content_hash) + meta_bytes + 128
        return row, size

    def delete(self, ids: Iterable[str]) -> None:
        self._require_writable()
        for chunk in chunks(list(ids)):
            try:
                self._request(f"delete of {len(chunk)} ids", self._client.delete, self._name,
                              filter=id_in(chunk))
            except MilvusSinkError as exc:
                if self._lite_path is not None and is_disk_full(exc):
                    raise disk_full_error(self._where(), self._lite_path, None,
                                          "These ids are still stored.") from exc
                raise

    # ------------------------------------------------------------------ reads

    def count(self) -> int:
        self._require_open()
        res = self._request("count", self._client.query, self._name, filter="",
                            output_fields=["count(*)"], consistency_level="Strong")
        return int(res[0]["count(*)"])

    def known(self) -> dict[str, str]:
        """Every stored id with its content hash, paged in primary-key order."""
        self._require_open()
        out: dict[str, str] = {}
        last: str | None = None
        while True:
            page = self._request(
                "listing stored ids", self._client.query, self._name,
                filter="" if last is None else id_after(last),
                output_fields=["id", CONTENT_HASH], limit=KNOWN_PAGE,
                consistency_level="Strong",
                iterator="True",  # ask the server for primary-key order, as query_iterator does
            )
            for row in page:
                out[row["id"]] = row[CONTENT_HASH]
            if len(page) < KNOWN_PAGE:
                return out
            new_last = max(row["id"] for row in page)
            if last is not None and new_last <= last:
                raise MilvusSinkError(f"{self._where()}: listing ids did not advance past {last!r}")
            last = new_last

    def fetch(self, ids: Sequence[str]) -> dict[str, np.ndarray]:
        """Stored vectors by id (L2-normalised when a cosine collection splits vectors)."""
        import numpy as np

        self._require_open()
        out: dict[str, np.ndarray] = {}
        ids = list(dict.fromkeys(ids))
        fields = [p.field for p in self._parts]
        for chunk in chunks(ids, min(512, self._rows_per_request(4 * self._dim))):
            rows = self._request("fetching vectors", self._client.query, self._name,
                                 filter=id_in(chunk), output_fields=["id", *fields],
                                 consistency_level=self.consistency_level)
            for row in rows:
                out[row["id"]] = np.concatenate(
                    [np.asarray(row[f], dtype=np.float32) for f in fields]
                )
        return out

    def fetch_metadata(self, ids: Sequence[str]) -> dict[str, dict[str, Any]]:
        """Stored metadata by id (path, duration, content_hash and the ``meta`` keys)."""
        self._require_open()
        return self._metadata_of(list(dict.fromkeys(ids)))

    def search(
        self, vectors: np.ndarray, k: int = 10, filter: str | None = None
    ) -> list[list[Hit]]:
        import numpy as np

        self._require_open()
        qs = np.asarray(vectors, dtype=np.float32)
        if qs.ndim == 1:
            qs = qs[None, :]
        if qs.ndim != 2 or qs.shape[1] != self._dim:
            raise ValueError(
                f"search in {self._where()}: query vectors must have shape (Q, {self._dim}), "
                f"got {tuple(np.shape(vectors))}"
            )
        if not 1 <= k <= MILVUS_TOPK_MAX:
            raise ValueError(f"search in {self._where()}: k={k} must be within 1..{MILVUS_TOPK_MAX}")
        filter = filter or ""
        out: list[list[Hit]] = []
        group = min(1024, self._rows_per_request(4 * self._dim))
        for start in range(0, len(qs), group):
            block = qs[start : start + group]
            if len(self._parts) == 1:
                out += self._search_one_field(block, k, filter)
            else:
                out += self._search_parts(block, k, filter)
        return out

    def _search_args(self) -> dict[str, Any]:
        return {"search_params": {"params": dict(self.search_params or {})},
                "consistency_level": self.consistency_level}

    def _search_one_field(self, qs: np.ndarray, k: int, filter: str) -> list[list[Hit]]:
        res = self._request("search", self._client.search, self._name, data=list(qs),
                            anns_field=self._parts[0].field, limit=k, filter=filter,
                            user_filter=filter, output_fields=HIT_FIELDS, **self._search_args())
        return [[Hit(str(h["id"]), float(h["distance"]), _metadata(h.get("entity") or {}))
                 for h in hits] for hits in res]

    def _search_parts(self, qs: np.ndarray, k: int, filter: str) -> list[list[Hit]]:
        from .wide import search_parts

        if self._metric == "cosine":
            qs = unit_rows(qs)

        def ann(part: Part, q: np.ndarray, limit: int) -> list[list[tuple[str, float]]]:
            res = self._request("search", self._client.search, self._name, data=list(q),
                                anns_field=part.field, limit=limit, filter=filter,
                                user_filter=filter, output_fields=["id"], **self._search_args())
            return [[(str(h["id"]), float(h["distance"])) for h in hits] for hits in res]

        def score_ids(part: Part, q: np.ndarray, ids: Sequence[str]) -> list[list[tuple[str, float]]]:
            res = self._request("search", self._client.search, self._name, data=list(q),
                                anns_field=part.field, limit=len(ids), filter=id_in(ids),
                                output_fields=["id"], **self._search_args())
            return [[(str(h["id"]), float(h["distance"])) for h in hits] for hits in res]

        cap = max(k, min(self.max_part_candidates, MILVUS_TOPK_MAX))
        ranked, exact = search_parts(qs, self._parts, k, self._higher_is_better,
                                     k * self.oversample, cap, ann,
                                     None if self._lite_path is not None else score_ids,
                                     self.fetch, self._rows_per_request(4 * self._dim))
        if not all(exact):
            log.debug("milvus: %d of %d wide-vector queries not certified exact within "
                      "max_part_candidates=%d", exact.count(False), len(exact), cap)
        meta = self._metadata_of(sorted({hid for top in ranked for hid, _ in top}))
        return [[Hit(hid, score, meta.get(hid, {})) for hid, score in top] for top in ranked]

    def _metadata_of(self, ids: Sequence[str]) -> dict[str, dict[str, Any]]:
        out: dict[str, dict[str, Any]] = {}
        for chunk in chunks(list(ids)):
            rows = self._request("reading metadata", self._client.query, self._name,
                                 filter=id_in(chunk), output_fields=["id", *HIT_FIELDS],
                                 consistency_level=self.consistency_level)
            for row in rows:
                out[row["id"]] = _metadata(row)
        return out


@contextlib.contextmanager
def _quiet_pymilvus() -> Iterator[None]:
    logger = logging.getLogger("pymilvus.decorators")
    if _WRAPPING_FILTER not in logger.filters:
        logger.addFilter(_WRAPPING_FILTER)
    previous = getattr(_wrapping, "active", False)
    _wrapping.active = True
    try:
        yield
    finally:
        _wrapping.active = previous


def _without_credentials(uri: str) -> str:
    return re.sub(r"//[^/@]*@", "//***@", uri)


def _metadata(entity: Mapping[str, Any]) -> dict[str, Any]:
    """A stored row back as the metadata dict it was written from."""
    md: dict[str, Any] = dict(entity.get(META) or {})
    for key in COLUMNS:
        value = entity.get(key)
        if value is not None:
            md[key] = value
    return md


def _check_string(value: str, what: str, tid: str, max_bytes: int, where: str) -> None:
    if not isinstance(value, str):
        raise TypeError(f"upsert into {where}: {what} of track {tid!r} must be a str, got {type(value).__name__}")
    try:
        n = len(value.encode("utf-8"))
    except UnicodeEncodeError:
        of = "" if what == "track id" else f" of track {tid!r}"
        raise ValueError(
            f"upsert into {where}: {what} {value!r}{of} is not valid UTF-8 (a file name in "
            f"another encoding), which Milvus cannot store: the track is not stored; rename the "
            f"file to store it"
        ) from None
    if what == "track id" and n == 0:
        raise ValueError(f"upsert into {where}: empty track id")
    if n > max_bytes:
        raise ValueError(
            f"upsert into {where}: {what} of track {tid!r} is {n} bytes; this collection "
            f"stores at most {max_bytes}"
        )

