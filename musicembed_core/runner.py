"""``musicembed run``: open outputs, skip what is done, embed the rest, summarise.

Resume and incremental update are one mechanism: every output reports what it
already holds (``known()``: id -> content hash, including what a killed run
managed to write); a file is decoded only when some output lacks it for its
current content. Outputs are opened *before* any work, so a space mismatch is
refused before anything is written.
"""

from __future__ import annotations

import json
import logging
import signal
import threading
import time
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Sequence

from .atomic import atomic_write_text, disk_full_cause
from .components import Record, check_projector
from .errors import MusicembedError
from .outputs import (
    DiskFullError,
    FlushPolicy,
    OutputSet,
    Refusal,
    close_outputs,
    flush_outputs,
    known_everywhere,
    open_outputs,
)
from .engines import check_engine, make_embedder
from .pipeline import HASH_CACHE, HashCache, PreparedEmbedding, Result, jobs_for
from .runconfig import RunConfig

log = logging.getLogger("musicembed")


@dataclass
class Failure:
    path: str
    reason: str


@dataclass
class RunSummary:
    source: str
    output_dir: str
    started_at: str
    files_total: int = 0
    files_ok: int = 0
    files_skipped: int = 0
    files_failed: int = 0
    failures: list[Failure] = field(default_factory=list)
    audio_seconds: float = 0.0
    wall_seconds: float = 0.0
    interrupted: bool = False
    embeddings: list[dict[str, Any]] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    skipped: list[dict[str, str]] = field(default_factory=list)
    """Paths not embedded and why (symlink loops, dangling links)."""
    refused: list[dict[str, str]] = field(default_factory=list)
    """Records an output would not store: {output, id, reason}."""
    error: str | None = None
    """The error that stopped the run, if any (disk full, a broken output)."""
    timings: dict[str, float] = field(default_factory=dict)
    """Where the time went (seconds; decode-side figures summed over threads): startup,
    hash, decode, resample, wait (for chunks), encode, pool, write."""
    engine: str = "local"
    """``local`` or ``ray`` (run.engine)."""
    ray: dict[str, Any] | None = None
    """Ray engine only: the cluster and actor settings it ran with."""
    shard: dict[str, int] | None = None
    """A sharded run (``--shard-index/--num-shards``): ``{"index", "count", "files_in_source"}``."""
    refused_ids: set[str] = field(default_factory=set, repr=False)

    @property
    def realtime_factor(self) -> float:
        return self.audio_seconds / self.wall_seconds if self.wall_seconds > 0 else 0.0

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d.pop("refused_ids", None)
        d["timings"] = {k: round(v, 3) for k, v in self.timings.items()}
        d["realtime_factor"] = round(self.realtime_factor, 2)
        d["audio_seconds"] = round(self.audio_seconds, 3)
        d["wall_seconds"] = round(self.wall_seconds, 3)
        return d


class StopRequested(BaseException):
    """SIGINT/SIGTERM while the run is starting: nothing is written yet, so stop now."""


class GracefulStop:
    """SIGINT/SIGTERM end the run cleanly, whatever it is doing, so outputs and summary agree.

    * ``starting`` (reading the config, opening outputs, loading models): nothing
      has been written, so the signal stops the run at once (:class:`StopRequested`).
    * ``running``: the run stops between tracks; a second Ctrl-C aborts at once
      (KeyboardInterrupt), and the outputs are still flushed and closed.
    * ``finishing`` (the final flush and close of every output, the summary): the
      signal is noted and the final write completes; then the run exits 130.

    Only installed from the main thread; elsewhere it is inert.
    """

    def __init__(self, console: Any) -> None:
        self.console = console
        self.requested = False
        self.phase = "starting"
        self._previous: dict[int, Any] = {}

    def _handler(self, signum: int, frame: Any) -> None:
        first = not self.requested
        self.requested = True
        if self.phase == "starting":
            raise StopRequested(signum)
        if self.phase == "finishing":
            self.console.print(
                "[yellow]finishing the final write of the outputs, then stopping "
                "(interrupting it would only make the next run redo it)[/yellow]"
            )
            return
        if not first and signum == signal.SIGINT:
            raise KeyboardInterrupt
        if first:
            self.console.print(
                "[yellow]stopping after the tracks in progress are written "
                "(Ctrl-C again to abort at once)[/yellow]"
            )

    def __enter__(self) -> "GracefulStop":
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._previous[sig] = signal.signal(sig, self._handler)
        return self

    def __exit__(self, *exc: object) -> None:
        for sig, prev in self._previous.items():
            signal.signal(sig, prev)
        self._previous.clear()


class OutputLock:
    """Exclusive lock on an output folder: two runs must not write the same outputs.

    ``flock`` is released by the kernel when the process dies (even ``kill -9``),
    so a crashed run never leaves a stale lock behind.
    """

    def __init__(self, output_dir: Path) -> None:
        self.path = output_dir / ".musicembed.lock"
        self.fd: int | None = None

    def __enter__(self) -> "OutputLock":
        import fcntl
        import os

        self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(self.fd, 64, 0).decode(errors="replace").strip() or "?"
            os.close(self.fd)
            self.fd = None
            raise MusicembedError(
                f"another musicembed run (pid {holder}) is writing to {self.path.parent}; "
                f"wait for it to finish, or give this run another run.output_dir"
            ) from None
        os.ftruncate(self.fd, 0)
        os.pwrite(self.fd, str(os.getpid()).encode(), 0)
        return self

    def __exit__(self, *exc: object) -> None:
        import os

        if self.fd is not None:
            os.close(self.fd)
            self.fd = None


def execute(
    cfg: RunConfig,
    *,
    console: Any = None,
    show_progress: bool = True,
    operative_config: str | None = None,
    plugins: list[dict[str, Any]] | None = None,
) -> RunSummary:
    """Run the whole job; write summary.json, the operative config and the plugin list.

    SIGINT/SIGTERM at any point end it cleanly (see :class:`GracefulStop`): the
    returned summary then has ``interrupted`` set. A full disk raises
    :class:`~musicembed_core.outputs.DiskFullError` after everything that could be
    closed was closed and the summary written (when there was room for it).
    """
    from rich.console import Console

    from .shards import select_shard, shard_dir

    console = console or Console(stderr=True)
    started = time.perf_counter()
    output_dir = shard_dir(cfg.output_dir, cfg.shard_index, cfg.num_shards)
    output_dir.mkdir(parents=True, exist_ok=True)
    summary = RunSummary(
        source=str(cfg.source),
        output_dir=str(output_dir),
        started_at=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        engine=cfg.engine,
    )
    with GracefulStop(console) as stop:
        try:
            check_engine(cfg)
            skipped: list[tuple[str, str]] = []
            jobs = jobs_for(cfg.source, cfg.limit, skipped=skipped)
            if cfg.sharded:
                summary.shard = {"index": cfg.shard_index, "count": cfg.num_shards,
                                 "files_in_source": len(jobs)}
                jobs = select_shard(jobs, cfg.shard_index, cfg.num_shards)
            summary.files_total = len(jobs)
            summary.skipped = [{"path": p, "reason": r} for p, r in skipped]
            if not jobs:
                # Nothing to embed: say so loudly and write no (empty) vector outputs.
                from .audio import AUDIO_EXTENSIONS

                summary.warnings.append(
                    f"no audio files found under {cfg.source!r} (looked recursively for "
                    f"{', '.join(sorted(AUDIO_EXTENSIONS))}): nothing was embedded and no output "
                    "was written. Check run.source (e.g. --gin_param "
                    "'run.source=\"/path/to/Music\"')."
                )
                return _finish_without_work(summary, started, output_dir, operative_config,
                                            plugins, console)
            prepared = [PreparedEmbedding.build(s) for s in cfg.embeddings]
            for p in prepared:  # a projector bound to the wrong space is refused before any work
                if p.spec.projector is not None:
                    check_projector(p.spec.projector, p.space)
        except StopRequested:
            summary.interrupted = True
            console.print("[yellow]stopped while starting: nothing was written[/yellow]")
            return _finish_without_work(summary, started, output_dir, operative_config,
                                        plugins, console)
        with OutputLock(output_dir):
            return _execute_locked(
                cfg, jobs, prepared, output_dir, summary, started, console, show_progress,
                operative_config, plugins, stop,
            )


def _finish_without_work(summary: RunSummary, started: float, output_dir: Path,
                         operative_config: str | None, plugins: list[dict[str, Any]] | None,
                         console: Any) -> RunSummary:
    """A run that opens no output (nothing to embed, or stopped while starting): the run
    files only."""
    summary.wall_seconds = time.perf_counter() - started
    with OutputLock(output_dir):
        _write_run_files_safely(output_dir, summary, operative_config, plugins, console)
    return summary


def _execute_locked(
    cfg: RunConfig,
    jobs: list,
    prepared: list[PreparedEmbedding],
    output_dir: Path,
    summary: RunSummary,
    started: float,
    console: Any,
    show_progress: bool,
    operative_config: str | None,
    plugins: list[dict[str, Any]] | None,
    stop: GracefulStop,
) -> RunSummary:
    opened: list[OutputSet] = []
    cache = HashCache(output_dir / HASH_CACHE)
    failure: BaseException | None = None
    try:
        opened = open_outputs(cfg, prepared, output_dir)
        for p, outs in zip(prepared, opened):
            summary.embeddings.append(
                {
                    "name": p.name,
                    "encoder": p.encoder.name,
                    "dim": p.space.dim,
                    "space_hash": p.space.hash,
                    "outputs": outs.paths,
                }
            )
        embedder = make_embedder(cfg, prepared, cache, [known_everywhere(o) for o in opened],
                                 output_dir=output_dir, opened=opened)
        if cfg.engine == "ray":
            summary.ray = embedder.details
        # The encoders load at the first batch: a rerun that skips every file loads none.
        summary.timings["startup"] = time.perf_counter() - started
        stop.phase = "running"
        policy = FlushPolicy(cfg.flush_every_tracks, cfg.flush_every_seconds)
        try:
            _consume(embedder, jobs, prepared, opened, summary, cfg, console, show_progress, stop,
                     policy)
        finally:
            summary.timings.update(embedder.collect_timings())
    except StopRequested:
        summary.interrupted = True
        console.print("[yellow]stopped while starting: nothing was embedded[/yellow]")
    except KeyboardInterrupt:
        summary.interrupted = True
        console.print("[yellow]aborted: keeping what was written, finishing the output files[/yellow]")
    except BaseException as exc:  # noqa: BLE001 - close outputs and write the summary first
        failure = exc
    finally:
        stop.phase = "finishing"
        t_close = time.perf_counter()
        try:
            _note_refusals(close_outputs(opened), summary)
        except BaseException as exc:  # noqa: BLE001
            failure = failure or exc
        summary.timings["write"] = summary.timings.get("write", 0.0) + time.perf_counter() - t_close
        try:
            cache.save()
        except OSError as exc:  # a full disk: the real error is the output's, said below
            log.warning("could not save the hash cache (%s); the next run re-hashes files", exc)
        summary.interrupted = summary.interrupted or stop.requested
        summary.wall_seconds = time.perf_counter() - started
        if failure is not None:
            summary.error = str(failure)
        _write_run_files_safely(output_dir, summary, operative_config, plugins, console)
    if failure is not None:
        cause = disk_full_cause(failure)
        if cause is not None and not isinstance(failure, DiskFullError):
            raise DiskFullError(
                f"disk full: {getattr(cause, 'strerror', None) or cause} "
                f"({getattr(cause, 'filename', None) or output_dir}). What was written "
                "before is intact; free some space and run the same command again."
            ) from failure
        raise failure
    return summary


def _write_run_files_safely(output_dir: Path, summary: RunSummary, operative_config: str | None,
                            plugins: list[dict[str, Any]] | None, console: Any) -> None:
    try:
        write_run_files(output_dir, summary, operative_config, plugins)
    except OSError as exc:
        console.print(f"[yellow]could not write {output_dir / 'summary.json'}: {exc}[/yellow]")


def _note_refusals(refusals: Sequence[Refusal], summary: RunSummary) -> None:
    """Records an output refused: the file counts as failed, with the output named."""
    for r in refusals:
        summary.refused.append({"output": r.output, "id": r.id, "reason": r.reason})
        if r.id not in summary.refused_ids:
            summary.refused_ids.add(r.id)
            summary.files_ok -= 1
            summary.files_failed += 1
            summary.failures.append(Failure(r.id, f"refused by {r.output}: {r.reason}"))


def _consume(
    embedder: Any,
    jobs: list,
    prepared: Sequence[PreparedEmbedding],
    opened: Sequence[OutputSet],
    summary: RunSummary,
    cfg: RunConfig,
    console: Any,
    show_progress: bool,
    stop: "GracefulStop",
    policy: FlushPolicy,
) -> None:
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    t0 = time.perf_counter()
    with Progress(
        TextColumn("[bold]embedding"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("files"),
        TimeElapsedColumn(),
        TextColumn("eta"),
        TimeRemainingColumn(),
        TextColumn("{task.fields[rt]}"),
        console=console,
        disable=not show_progress,
        transient=False,
    ) as progress:
        task = progress.add_task("embed", total=len(jobs), rt="")
        clock = time.perf_counter
        for res in embedder.embed(jobs):
            t_write = clock()
            _handle(res, prepared, opened, summary)
            if res.status == "ok":
                policy.track_done()
            if policy.due():
                _note_refusals(flush_outputs(opened), summary)
                policy.flushed()
            summary.timings["write"] = summary.timings.get("write", 0.0) + clock() - t_write
            elapsed = time.perf_counter() - t0
            rt = f"{summary.audio_seconds / elapsed:.1f}x realtime" if elapsed > 0 else ""
            progress.update(task, advance=1, rt=rt)
            if res.status == "failed" and cfg.fail_fast:
                raise MusicembedError(f"{res.job.path}: {res.error} (run.fail_fast is set)")
            if stop.requested and progress.tasks[task].completed < len(jobs):
                summary.interrupted = True
                break  # closing the generator stops the decoders; in-flight tracks are redone next run


def _handle(
    res: Result, prepared: Sequence[PreparedEmbedding], opened: Sequence[OutputSet], summary: RunSummary
) -> None:
    if res.status == "skipped":
        summary.files_skipped += 1
        return
    if res.status == "failed":
        summary.files_failed += 1
        summary.failures.append(Failure(str(res.job.path), res.error or "unknown error"))
        log.info("failed: %s: %s", res.job.path, res.error)
        return
    summary.files_ok += 1
    summary.audio_seconds += res.seconds
    for e, vec in res.vectors.items():
        rec = Record(
            id=res.job.id,
            vector=vec,
            content_hash=res.content_hash,
            metadata=dict(res.metadata),
            frames=res.frames.get(e),
        )
        for writer in opened[e].writers:
            _note_refusals(writer.add(rec), summary)
    _note_refusals(res.refusals, summary)  # outputs the Ray workers wrote


def write_run_files(
    output_dir: Path,
    summary: RunSummary,
    operative_config: str | None,
    plugins: list[dict[str, Any]] | None,
) -> None:
    """summary.json, operative_config.gin, plugins.json (latest run) + a copy under runs/."""
    stamp = summary.started_at.replace(":", "").replace("+0000", "Z")
    history = output_dir / "runs" / stamp
    files = {"summary.json": json.dumps(summary.as_dict(), indent=2)}
    if operative_config is not None:
        files["operative_config.gin"] = operative_config
    if plugins is not None:
        files["plugins.json"] = json.dumps(plugins, indent=2)
    for name, text in files.items():
        atomic_write_text(output_dir / name, text)
        history.mkdir(parents=True, exist_ok=True)
        atomic_write_text(history / name, text)


def print_summary(summary: RunSummary, console: Any) -> None:
    from rich.markup import escape
    from rich.table import Table

    table = Table(title="musicembed run summary", show_header=False, title_justify="left")
    table.add_column(style="bold")
    table.add_column(overflow="fold")
    table.add_row("source", summary.source)
    if summary.shard:
        table.add_row("shard", f"{summary.shard['index']} of {summary.shard['count']} "
                               f"(0-based; {summary.shard['files_in_source']} files in the source)")
    if summary.ray is not None:
        r = summary.ray
        table.add_row("engine", f"ray: {r.get('nodes', '?')} node(s), {r.get('cluster_cpus', '?')} CPUs, "
                                f"{r.get('cluster_gpus', 0)} GPUs; {r['actors']} actor(s) per embedding")
    table.add_row(
        "files",
        f"{summary.files_total} found: {summary.files_ok} embedded, "
        f"{summary.files_skipped} unchanged (skipped), {summary.files_failed} failed",
    )
    table.add_row("audio", f"{summary.audio_seconds:.1f} s processed")
    table.add_row(
        "time", f"{summary.wall_seconds:.1f} s wall, {summary.realtime_factor:.1f}x realtime"
    )
    for emb in summary.embeddings:
        table.add_row(
            f"embedding {emb['name']}",
            f"{emb['encoder']} -> {emb['dim']} dims, space {emb['space_hash']}\n"
            + "\n".join(emb["outputs"]),
        )
    table.add_row("run files", str(Path(summary.output_dir) / "summary.json"))
    console.print(table)
    if summary.failures:
        ft = Table(title=f"{summary.files_failed} failed files", title_justify="left")
        ft.add_column("file", overflow="fold")
        ft.add_column("reason", overflow="fold")
        for f in summary.failures:
            ft.add_row(escape(f.path), escape(f.reason))
        console.print(ft)
    if summary.skipped:
        st = Table(title=f"{len(summary.skipped)} paths skipped", title_justify="left")
        st.add_column("path", overflow="fold")
        st.add_column("reason", overflow="fold")
        for item in summary.skipped:
            st.add_row(escape(item["path"]), escape(item["reason"]))
        console.print(st)
    for warning in summary.warnings:
        console.print(f"[bold yellow]warning:[/bold yellow] {escape(warning)}", highlight=False)
    if summary.interrupted:
        console.print("[yellow]The run was interrupted; run the same command again to resume.[/]")
