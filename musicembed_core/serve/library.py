"""The run behind the service: its indexes opened once, and kept current.

Every embedding of the run gets one :class:`~musicembed_core.search.OpenIndex` (its
sink opened read-only) at start. A reindex runs the incremental ``musicembed run``
(the same :func:`~musicembed_core.runner.execute`) in a background thread, then
opens fresh indexes and swaps them in: requests already running finish on the old
ones, which close when their last user is done; no restart, no failed request.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, TypeVar

from ..errors import MusicembedError
from ..runconfig import RunConfig
from ..search import OpenIndex, _pick, open_index

log = logging.getLogger("musicembed.serve")

T = TypeVar("T")


@dataclass
class _Slot:
    index: OpenIndex
    users: int = 0
    retired: bool = False
    ids: list[str] | None = None
    """Every stored id, sorted (read on first need: the track listing)."""


@dataclass
class ReindexStatus:
    running: bool = False
    runs: int = 0
    started_at: str | None = None
    finished_at: str | None = None
    seconds: float | None = None
    summary: dict[str, Any] | None = None
    error: str | None = None
    trigger: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {"running": self.running, "runs": self.runs, "trigger": self.trigger,
                "started_at": self.started_at, "finished_at": self.finished_at,
                "seconds": self.seconds, "summary": self.summary, "error": self.error}


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


@dataclass
class Library:
    """The run's indexes, the reindex worker and the optional ``--watch`` loop."""

    cfg: RunConfig
    sink_name: str | None = None
    operative_config: str | None = None
    plugins: list[dict[str, Any]] | None = None
    status: ReindexStatus = field(default_factory=ReindexStatus)
    _slots: dict[str, _Slot] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _reindex_thread: threading.Thread | None = None
    _watch_thread: threading.Thread | None = None
    _stop: threading.Event = field(default_factory=threading.Event)

    # ------------------------------------------------------------------ indexes

    def open(self) -> "Library":
        self._swap(self._open_all())
        return self

    def _open_all(self) -> dict[str, _Slot]:
        slots: dict[str, _Slot] = {}
        try:
            for spec in self.cfg.embeddings:
                slots[spec.name] = _Slot(open_index(self.cfg, spec.name, self.sink_name))
        except BaseException:
            for s in slots.values():
                s.index.close()
            raise
        return slots

    def _swap(self, new: dict[str, _Slot]) -> None:
        with self._lock:
            old, self._slots = self._slots, new
            to_close = []
            for s in old.values():
                s.retired = True
                if s.users == 0:
                    to_close.append(s)
        for s in to_close:
            s.index.close()

    def reload(self) -> None:
        """Reopen every index (a run wrote new vectors) and swap them in."""
        self._swap(self._open_all())

    @property
    def names(self) -> list[str]:
        return [s.name for s in self.cfg.embeddings]

    def pick(self, embedding: str | None) -> str:
        """The embedding's name, with the CLI's error for an unknown one (``--embedding``)."""
        return _pick(self.cfg.embeddings, embedding, "embedding", "--embedding").name

    def use(self, embedding: str | None, fn: Callable[[OpenIndex], T]) -> T:
        """Call ``fn`` with the current index of ``embedding``; a reindex cannot close it meanwhile."""
        name = self.pick(embedding)
        with self._lock:
            slot = self._slots[name]
            slot.users += 1
        try:
            return fn(slot.index)
        finally:
            with self._lock:
                slot.users -= 1
                close = slot.retired and slot.users == 0
            if close:
                slot.index.close()

    def ids(self, embedding: str | None) -> list[str]:
        """Every stored id of the embedding, sorted (cached until the next reload)."""
        name = self.pick(embedding)

        def read(index: OpenIndex) -> list[str]:
            with index.lock:
                return sorted(index.sink.known())

        with self._lock:
            slot = self._slots[name]
            cached = slot.ids
        if cached is None:
            cached = self.use(name, read)
            slot.ids = cached
        return cached

    def close(self) -> None:
        """Stop watching, let a running reindex finish writing, close the indexes."""
        self._stop.set()
        if self._watch_thread is not None:
            self._watch_thread.join(timeout=30)
        t = self._reindex_thread
        if t is not None and t.is_alive() and t is not threading.current_thread():
            log.warning("waiting for the running reindex to finish writing (interrupt again to "
                        "stop now: the next run resumes where it stopped)")
            t.join()
        self._swap({})

    # ------------------------------------------------------------------ reindex

    def reindex(self, trigger: str = "request") -> bool:
        """Start the incremental run in the background; False if one is already running."""
        with self._lock:
            if self.status.running:
                return False
            self.status.running = True
            self.status.trigger = trigger
            self.status.started_at = _now()
            self.status.error = None
        self._reindex_thread = threading.Thread(target=self._reindex, name="musicembed-reindex",
                                                daemon=True)
        self._reindex_thread.start()
        return True

    def _reindex(self) -> None:
        from rich.console import Console

        from ..runner import execute

        started = time.perf_counter()
        summary: dict[str, Any] | None = None
        error: str | None = None
        try:
            result = execute(self.cfg, console=Console(stderr=True), show_progress=False,
                             operative_config=self.operative_config, plugins=self.plugins)
            summary = {k: v for k, v in result.as_dict().items()
                       if k in ("files_total", "files_ok", "files_skipped", "files_failed",
                                "failures", "interrupted", "error", "wall_seconds")}
            self.reload()
            log.info("reindex done: %s new or changed, %s unchanged, %s failed",
                     result.files_ok, result.files_skipped, result.files_failed)
        except MusicembedError as exc:
            error = str(exc)
        except Exception as exc:  # noqa: BLE001 - reported in /reindex, logged with its traceback
            log.exception("reindex failed")
            error = f"{type(exc).__name__}: {exc}"
        with self._lock:
            self.status.running = False
            self.status.runs += 1
            self.status.finished_at = _now()
            self.status.seconds = round(time.perf_counter() - started, 3)
            self.status.summary = summary
            self.status.error = error
        if error:
            log.warning("reindex failed: %s", error)

    def wait_reindex(self, timeout: float | None = None) -> None:
        t = self._reindex_thread
        if t is not None:
            t.join(timeout)

    # ------------------------------------------------------------------ --watch

    def _fingerprint(self) -> frozenset[tuple[str, int, int]]:
        from ..audio import find_audio_files

        out = set()
        for p in find_audio_files(Path(self.cfg.source).expanduser()):
            try:
                st = p.stat()
            except OSError:
                continue
            out.add((str(p), st.st_size, st.st_mtime_ns))
        return frozenset(out)

    def watch(self, seconds: float) -> None:
        """Look at run.source every ``seconds``: a reindex at start, then whenever files change."""
        if seconds <= 0:
            raise MusicembedError(f"--watch {seconds}: must be a number of seconds > 0")

        def loop() -> None:
            seen: frozenset | None = None
            while not self._stop.is_set():
                try:
                    now = self._fingerprint()
                except OSError as exc:
                    log.warning("--watch: cannot list run.source: %s", exc)
                    now = seen
                if now != seen and self.reindex("watch"):
                    seen = now
                self._stop.wait(seconds)

        self._watch_thread = threading.Thread(target=loop, name="musicembed-watch", daemon=True)
        self._watch_thread.start()
