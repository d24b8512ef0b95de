"""Milvus Lite: the embedded database behind a ``*.db`` uri.

pymilvus starts Milvus Lite in-process (a gRPC server on a local port, one per
database path) the first time a client opens a ``.db`` uri, and keeps it until
the process exits. milvus-lite 3.2.2 stores the database as a *directory*
(``LOCK``, write-ahead log, Parquet segments, manifests) and holds an exclusive
``flock`` on ``<db>/LOCK`` while it is open: one process per database. A second
process gets a clear :class:`DatabaseLockedError` here instead of pymilvus'
"Open local milvus failed".

The sink counts its own openings per path and stops the embedded server when
the last one closes, so the lock is released (and the memtable flushed) without
waiting for the process to end, but only for servers the sink itself started:
a client the user opened on the same file keeps working.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
from pathlib import Path

from .errors import DatabaseLockedError

_lock = threading.Lock()
_refs: dict[str, int] = {}
_started_here: set[str] = set()


def is_lite_uri(uri: str) -> bool:
    """pymilvus' own rule: a uri ending in ``.db`` is a Milvus Lite database path."""
    return uri.endswith(".db")


def lite_path(uri: str) -> str:
    """Absolute path of the database (``~`` expanded): the server key in pymilvus."""
    return os.path.abspath(os.path.expanduser(uri))


def _served_in_process(path: str) -> bool | None:
    """Whether this process already runs a Milvus Lite server for ``path`` (None: unknown)."""
    try:
        from milvus_lite.server_manager import server_manager_instance
    except ImportError:
        return None
    servers = getattr(server_manager_instance, "_servers", None)
    if not isinstance(servers, dict):
        return None
    return path in servers


def locked_by_other_process(path: str) -> bool:
    """Probe ``<path>/LOCK`` the way Milvus Lite takes it (a non-blocking exclusive flock).

    Only meaningful when this process does not hold the database itself: flock
    locks belong to open file descriptions, so our own server's lock would look
    foreign too.
    """
    lock_file = Path(path) / "LOCK"
    if sys.platform == "win32" or not lock_file.exists():
        return False
    import fcntl

    fd = os.open(lock_file, os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        return True
    else:
        fcntl.flock(fd, fcntl.LOCK_UN)
        return False
    finally:
        os.close(fd)


def held_by_another_process(path: str) -> bool:
    """After a failed open: was it the lock? (Never blames our own server.)"""
    return _served_in_process(path) is False and locked_by_other_process(path)


def locked_error(path: str) -> DatabaseLockedError:
    return DatabaseLockedError(
        f"Milvus Lite database {path} is open in another process: Milvus Lite allows one "
        f"process per database and holds {os.path.join(path, 'LOCK')} until that process "
        f"exits or closes it. Wait for the other run or search to finish, point "
        f"sinks.milvus.uri at another .db path, or use a Milvus server "
        f"(sinks.milvus.uri='http://HOST:19530') for several processes at once."
    )


class _DropDiskFull(logging.Filter):
    """Milvus Lite logs a traceback for every failed request; a full disk reaches the
    caller as the sink's own clear ``OSError(ENOSPC)``, so that traceback only buries it."""

    def filter(self, record: logging.LogRecord) -> bool:
        from musicembed_core.atomic import is_disk_full

        exc = record.exc_info[1] if record.exc_info else None
        return exc is None or not is_disk_full(exc)


_DISK_FULL_FILTER = _DropDiskFull()


def acquire(path: str) -> None:
    """Before a client opens ``path``: refuse early if another process holds it."""
    servicer_log = logging.getLogger("milvus_lite.adapter.grpc.servicer")
    if _DISK_FULL_FILTER not in servicer_log.filters:
        servicer_log.addFilter(_DISK_FULL_FILTER)
    with _lock:
        if _refs.get(path, 0) == 0:
            served = _served_in_process(path)
            if served is False:
                if locked_by_other_process(path):
                    raise locked_error(path)
                _started_here.add(path)
            os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
        _refs[path] = _refs.get(path, 0) + 1


def release(path: str) -> None:
    """After a client on ``path`` closed: stop the server we started once nobody uses it."""
    with _lock:
        left = _refs.get(path, 0) - 1
        if left > 0:
            _refs[path] = left
            return
        _refs.pop(path, None)
        if path not in _started_here:
            return
        _started_here.discard(path)
    from milvus_lite.server_manager import server_manager_instance

    server_manager_instance.release_server(path)


def remove_torn_index_sidecars(db_path: str, collection: str) -> list[str]:
    """Delete the index sidecars of ``collection`` that cannot be read back whole.

    A sidecar is ``<db>/collections/<name>/partitions/<p>/indexes/*.idx``, derived from the
    segment's vectors; Milvus Lite rebuilds a missing one on load. The files that fail to
    parse are removed (a FLAT sidecar is an ``.npy``; an empty file of any kind is torn);
    when none is found that way, every sidecar of the collection is (all are rebuilt).
    Returns the removed paths.
    """
    import glob

    import numpy as np

    root = os.path.join(db_path, "collections", collection, "partitions")
    removed = []
    for path in glob.glob(os.path.join(root, "*", "indexes", "*.idx")):
        torn = os.path.getsize(path) == 0
        if not torn and ".flat." in os.path.basename(path):
            try:
                with open(path, "rb") as f:
                    np.load(f, allow_pickle=False)
            except (ValueError, EOFError, OSError):
                torn = True
        if torn:
            os.remove(path)
            removed.append(path)
    if not removed:  # a torn sidecar of a kind not checked above: rebuild them all
        for path in glob.glob(os.path.join(root, "*", "indexes", "*.idx")):
            os.remove(path)
            removed.append(path)
    return removed
