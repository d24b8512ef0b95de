"""Crash-safe file replacement helpers.

Outputs must survive ``kill -9`` at any instant: a reader (or the next run) sees
either the previous complete file or the new complete file, never a torn one.
The recipe is the classic one: write a temporary file in the *same directory*
(``os.replace`` is only atomic within one file system), flush and ``fsync`` it,
``os.replace`` it onto the final name, then ``fsync`` the directory so the
rename itself is durable.

Temporary names are ``<final name>.tmp-<pid>`` so that a later run can tell
leftovers of a dead process (removed by :func:`clean_stale_temps`) from the
temporary file of a process that is still running.

Standard library only: cheap to import.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import re
from typing import Any, Iterator

__all__ = [
    "atomic_path",
    "atomic_write_bytes",
    "atomic_write_json",
    "atomic_write_text",
    "clean_stale_temps",
    "commit",
    "disk_full_error",
    "ensure_free_space",
    "free_bytes",
    "is_disk_full",
    "fsync_dir",
    "fsync_file",
    "pid_alive",
    "temp_path",
]

_TMP_RE = re.compile(r"^(?P<final>.+)\.tmp-(?P<pid>\d+)$")


def temp_path(path: str | os.PathLike[str]) -> str:
    """Temporary sibling of ``path`` owned by this process (``<path>.tmp-<pid>``)."""
    return f"{os.fspath(path)}.tmp-{os.getpid()}"


def fsync_file(path: str | os.PathLike[str]) -> None:
    """Flush a closed file's data to stable storage (libraries like h5py close without fsync)."""
    fd = os.open(os.fspath(path), os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_dir(path: str | os.PathLike[str]) -> None:
    """Make renames/creations/unlinks inside directory ``path`` durable.

    A no-op where directories cannot be opened (Windows), which also has no
    such requirement.
    """
    if os.name == "nt":  # pragma: no cover - platform specific
        return
    try:
        fd = os.open(os.fspath(path) or ".", os.O_RDONLY)
    except OSError:  # pragma: no cover - exotic file systems
        return
    try:
        os.fsync(fd)
    except OSError:  # pragma: no cover - some file systems refuse fsync on dirs
        pass
    finally:
        os.close(fd)


def commit(tmp: str | os.PathLike[str], path: str | os.PathLike[str]) -> None:
    """Atomically move the closed temporary file ``tmp`` onto ``path`` (fsync, replace, fsync dir)."""
    fsync_file(tmp)
    os.replace(tmp, path)
    fsync_dir(os.path.dirname(os.path.abspath(os.fspath(path))))


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[str]:
    """Yield a temporary path to write ``path``'s new content to; commit it on success.

    The caller must have *closed* the temporary file when the block ends. On an
    exception the temporary file is removed and ``path`` is left untouched.
    """
    tmp = temp_path(path)
    try:
        yield tmp
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    commit(tmp, path)


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> None:
    """Replace ``path`` with ``data`` so that a crash leaves the old or the new content."""
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())


def atomic_write_text(path: str | os.PathLike[str], text: str, encoding: str = "utf-8") -> None:
    """Text version of :func:`atomic_write_bytes`."""
    atomic_write_bytes(path, text.encode(encoding))


def json_default(obj: Any) -> Any:
    """``json.dumps(default=...)`` for metadata: numpy values, sets/tuples, paths; else ``str``."""
    if hasattr(obj, "tolist"):  # numpy scalars and arrays
        return obj.tolist()
    if isinstance(obj, (set, frozenset, tuple)):
        return list(obj)
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    return str(obj)


def atomic_write_json(path: str | os.PathLike[str], obj: Any, **dumps_kwargs: Any) -> None:
    """Serialise ``obj`` as JSON and replace ``path`` atomically."""
    dumps_kwargs.setdefault("ensure_ascii", False)
    atomic_write_text(path, json.dumps(obj, **dumps_kwargs))


def pid_alive(pid: int) -> bool:
    """Whether process ``pid`` may still be running (errs on the side of "alive")."""
    if pid == os.getpid():
        return True
    if pid <= 0:
        return False
    if os.name == "nt":  # pragma: no cover - platform specific
        try:
            import psutil
        except ImportError:
            return True
        return bool(psutil.pid_exists(pid))
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    except OSError:  # pragma: no cover
        return True
    return True


def clean_stale_temps(directory: str | os.PathLike[str], prefix: str = "") -> list[str]:
    """Delete ``<prefix>*.tmp-<pid>`` files in ``directory`` left by processes that are gone.

    Temporary files of live processes (a concurrent writer, or this process) are
    kept. Returns the removed paths.
    """
    directory = os.fspath(directory) or "."
    removed: list[str] = []
    try:
        names = os.listdir(directory)
    except FileNotFoundError:
        return removed
    for name in names:
        if not name.startswith(prefix):
            continue
        m = _TMP_RE.match(name)
        if m is None or pid_alive(int(m.group("pid"))):
            continue
        full = os.path.join(directory, name)
        with contextlib.suppress(FileNotFoundError, IsADirectoryError, PermissionError):
            os.unlink(full)
            removed.append(full)
    if removed:
        fsync_dir(directory)
    return removed


# --------------------------------------------------------------------------- disk space

DISK_FULL_ERRNOS = (errno.ENOSPC, errno.EDQUOT)
SPACE_MARGIN = 1 << 20
"""Bytes kept free beyond an estimate by :func:`ensure_free_space` (plus 2 % of it)."""


def free_bytes(path: str | os.PathLike[str]) -> int | None:
    """Bytes available to this user on the file system of ``path`` (or of its nearest
    existing parent); None where that cannot be told."""
    import shutil

    p = os.path.abspath(os.fspath(path))
    while True:
        try:
            return int(shutil.disk_usage(p).free)
        except FileNotFoundError:
            parent = os.path.dirname(p)
            if parent == p:
                return None
            p = parent
        except OSError:
            return None


def _size(n: int | None) -> str:
    if n is None:
        return "an unknown amount"
    if n < 1 << 20:
        return f"{n / 1024:.1f} KiB"
    if n < 1 << 30:
        return f"{n / (1 << 20):.1f} MiB"
    return f"{n / (1 << 30):.2f} GiB"


def disk_full_error(who: str, path: str | os.PathLike[str], need: int | None, kept: str,
                    free: int | None = None, margin: int = 0) -> OSError:
    """The ``OSError(ENOSPC)`` an output raises when its data does not fit: it says which
    output, which path, how much it needed and had, and what it kept."""
    path = os.fspath(path)
    if free is None:
        free = free_bytes(path)
    plus = f" (plus {_size(margin)} kept free)" if margin else ""
    return OSError(
        errno.ENOSPC,
        f"{who}: disk full while writing {path}: it needs about {_size(need)}{plus}, "
        f"{_size(free)} free. {kept} Free some space (or write to another disk) and rerun; "
        f"what was kept is not redone",
        path,
    )


def ensure_free_space(path: str | os.PathLike[str], need: int, who: str, kept: str) -> None:
    """Raise :func:`disk_full_error` unless ``need`` bytes (plus a margin) fit beside ``path``.

    Outputs call it before a large write, so a disk that is too full ends in a clear
    error instead of a half-written file (or, in HDF5, a crash)."""
    free = free_bytes(path)
    margin = SPACE_MARGIN + need // 50
    if free is not None and need + margin > free:
        raise disk_full_error(who, path, need, kept, free, margin)


def disk_full_cause(exc: BaseException) -> BaseException | None:
    """The exception in ``exc``'s chain (causes and contexts) that says the disk or quota is
    full, or None; recognises libraries that keep only the text (HDF5: ``errno = 28``;
    gRPC: ``[Errno 28]``)."""
    seen: set[int] = set()
    cur: BaseException | None = exc
    while cur is not None and id(cur) not in seen:
        seen.add(id(cur))
        if getattr(cur, "errno", None) in DISK_FULL_ERRNOS:
            return cur
        text = str(cur)
        if any(f"errno = {n}," in text or f"[Errno {n}]" in text for n in DISK_FULL_ERRNOS):
            return cur
        cur = cur.__cause__ or cur.__context__
    return None


def is_disk_full(exc: BaseException) -> bool:
    """Whether ``exc`` (or an exception it was raised from) is a full disk or quota."""
    return disk_full_cause(exc) is not None
