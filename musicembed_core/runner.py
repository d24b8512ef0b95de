"""``musicembed run``: open outputs, skip what is done, embed the rest, summarise.

Resume and incremental update are one mechanism: every output reports what it
already holds (``known()``: id -> content hash, including what a killed run
managed to write); a file is decoded only when some output lacks it for its
current content. Outputs are opened *before* any work, so a space mismatch is
refused before anything is written.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import logging
import signal
import threading
import time
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Mapping, Sequence

from .atomic import atomic_write_text
from .components import Exporter, Record, Sink, check_projector
from .errors import ConfigError, MusicembedError
from .pipeline import Embedder, HashCache, PreparedEmbedding, Result, jobs_for
from .runconfig import RunConfig

log = logging.getLogger("musicembed")

SINK_FLUSH = 256


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

    @property
    def realtime_factor(self) -> float:
        return self.audio_seconds / self.wall_seconds if self.wall_seconds > 0 else 0.0

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["realtime_factor"] = round(self.realtime_factor, 2)
        d["audio_seconds"] = round(self.audio_seconds, 3)
        d["wall_seconds"] = round(self.wall_seconds, 3)
        return d


def _output_path(exporter: Exporter, output_dir: Path, name: str) -> str:
    ext = getattr(exporter, "extension", None) or f".{exporter.name}"
    if exporter.path:
        return str(exporter.path).format(embedding=name, output_dir=output_dir)
    return str(output_dir / f"{name}{ext}")


@dataclass
class _Outputs:
    exporters: list[Exporter]
    sinks: list[Sink]
    paths: list[str]
    pending: list[list[Record]]
    """Per sink: records waiting for the next ``upsert`` (flushed every SINK_FLUSH)."""


def open_outputs(
    cfg: RunConfig, prepared: Sequence[PreparedEmbedding], output_dir: Path
) -> list[_Outputs]:
    """One fresh exporter/sink instance per embedding, opened on its space."""
    opened: list[_Outputs] = []
    try:
        for p in prepared:
            outs = _Outputs([], [], [], [])
            opened.append(outs)
            for template in cfg.exporters:
                exp = copy.deepcopy(template)
                path = _output_path(exp, output_dir, p.name)
                Path(path).parent.mkdir(parents=True, exist_ok=True)
                exp.open(path, p.space)
                outs.exporters.append(exp)
                outs.paths.append(path)
                if getattr(exp, "store_frames", False):
                    p.keep_frames = True
            for template in cfg.sinks:
                sink, collection = open_sink(template, output_dir, p)
                outs.sinks.append(sink)
                outs.paths.append(f"{sink.name}:{collection}")
                outs.pending.append([])
    except BaseException:
        close_outputs(opened)
        raise
    return opened


SINK_LOCATION_ATTRS = ("path", "uri")


def open_sink(
    template: Sink, output_dir: Path, p: PreparedEmbedding, *, readonly: bool = False
) -> tuple[Sink, str]:
    """A fresh copy of a configured sink, opened on embedding ``p``'s space.

    ``{output_dir}`` and ``{embedding}`` in the sink's ``path``/``uri`` are filled
    in, so a local index can live beside the run's other outputs. The collection
    is the sink's ``collection`` parameter, else the embedding's name.
    ``readonly`` (``musicembed search``) creates nothing: no folder here, and the
    sink raises :class:`~musicembed_core.errors.SinkNotFoundError` for a missing store.
    """
    sink = copy.deepcopy(template)
    for attr in SINK_LOCATION_ATTRS:
        value = getattr(sink, attr, None)
        if isinstance(value, str) and "{" in value:
            try:
                filled = value.format(output_dir=output_dir, embedding=p.name)
            except (KeyError, IndexError, ValueError) as exc:
                raise ConfigError(
                    f"sinks.{sink.name}.{attr}={value!r}: only {{output_dir}} and {{embedding}} "
                    f"can be filled in ({exc})"
                ) from exc
            setattr(sink, attr, filled)
            if not readonly and (attr == "path" or "://" not in filled):
                Path(filled).parent.mkdir(parents=True, exist_ok=True)
    collection = getattr(sink, "collection", None) or p.name
    sink.open(collection, p.space, readonly=readonly)
    return sink, collection


def close_outputs(opened: Sequence[_Outputs]) -> None:
    errors: list[str] = []
    for outs in opened:
        for i, sink in enumerate(outs.sinks):
            try:
                _flush_sink(outs, i, force=True)
                sink.close()
            except Exception as exc:  # noqa: BLE001
                errors.append(f"{sink.name}: {exc}")
        for exp in outs.exporters:
            try:
                exp.close()
            except Exception as exc:  # noqa: BLE001
                errors.append(f"{exp.name}: {exc}")
    if errors:
        raise MusicembedError("closing outputs failed: " + "; ".join(errors))


def _flush_sink(outs: _Outputs, i: int, force: bool = False) -> None:
    pending = outs.pending[i]
    if pending and (force or len(pending) >= SINK_FLUSH):
        outs.sinks[i].upsert(list(pending))
        pending.clear()


def known_everywhere(outs: _Outputs) -> Mapping[str, str]:
    """ids every output of one embedding holds with the same content hash."""
    maps = [dict(x.known()) for x in (*outs.exporters, *outs.sinks)]
    if not maps:
        return {}
    first, rest = maps[0], maps[1:]
    return {k: v for k, v in first.items() if all(m.get(k) == v for m in rest)}


class GracefulStop:
    """SIGINT/SIGTERM ask the run to stop between tracks, so outputs and summary agree.

    A second Ctrl-C aborts at once (KeyboardInterrupt). Only installed from the
    main thread; elsewhere it is inert.
    """

    def __init__(self, console: Any) -> None:
        self.console = console
        self.requested = False
        self._previous: dict[int, Any] = {}

    def _handler(self, signum: int, frame: Any) -> None:
        if self.requested and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.requested = True
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
    """Run the whole job; write summary.json, the operative config and the plugin list."""
    from rich.console import Console

    console = console or Console(stderr=True)
    started = time.perf_counter()
    output_dir = Path(cfg.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    summary = RunSummary(
        source=str(cfg.source),
        output_dir=str(output_dir),
        started_at=datetime.now(timezone.utc).isoformat(timespec="seconds"),
    )
    jobs = jobs_for(cfg.source, cfg.limit)
    summary.files_total = len(jobs)
    if not jobs:
        # Nothing to embed: say so loudly and write no (empty) vector outputs.
        from .audio import AUDIO_EXTENSIONS

        summary.warnings.append(
            f"no audio files found under {cfg.source!r} (looked recursively for "
            f"{', '.join(sorted(AUDIO_EXTENSIONS))}): nothing was embedded and no output was "
            "written. Check run.source (e.g. --gin_param 'run.source=\"/path/to/Music\"')."
        )
        summary.wall_seconds = time.perf_counter() - started
        with OutputLock(output_dir):
            write_run_files(output_dir, summary, operative_config, plugins)
        return summary
    prepared = [PreparedEmbedding.build(s) for s in cfg.embeddings]
    for p in prepared:  # a projector bound to the wrong space is refused before any work
        if p.spec.projector is not None:
            check_projector(p.spec.projector, p.space)
    with OutputLock(output_dir):
        return _execute_locked(
            cfg, jobs, prepared, output_dir, summary, started, console, show_progress,
            operative_config, plugins,
        )


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
) -> RunSummary:
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
    cache = HashCache(output_dir / ".musicembed-hashes.json")
    embedder = Embedder(
        prepared,
        batch_size=cfg.batch_size,
        decode_workers=cfg.decode_workers,
        hash_cache=cache,
        known=[known_everywhere(o) for o in opened],
    )
    try:
        if jobs:
            with console.status("loading encoders..."):
                embedder.load()
        with GracefulStop(console) as stop:
            _consume(embedder, jobs, prepared, opened, summary, cfg, console, show_progress, stop)
    except KeyboardInterrupt:
        summary.interrupted = True
        console.print("[yellow]aborted: keeping what was written, finishing the output files[/yellow]")
    finally:
        try:
            close_outputs(opened)
        finally:
            cache.save()
            summary.wall_seconds = time.perf_counter() - started
            write_run_files(output_dir, summary, operative_config, plugins)
    return summary


def _consume(
    embedder: Embedder,
    jobs: list,
    prepared: Sequence[PreparedEmbedding],
    opened: Sequence[_Outputs],
    summary: RunSummary,
    cfg: RunConfig,
    console: Any,
    show_progress: bool,
    stop: "GracefulStop",
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
        for res in embedder.embed(jobs):
            _handle(res, prepared, opened, summary)
            elapsed = time.perf_counter() - t0
            rt = f"{summary.audio_seconds / elapsed:.1f}x realtime" if elapsed > 0 else ""
            progress.update(task, advance=1, rt=rt)
            if res.status == "failed" and cfg.fail_fast:
                raise MusicembedError(f"{res.job.path}: {res.error} (run.fail_fast is set)")
            if stop.requested and progress.tasks[task].completed < len(jobs):
                summary.interrupted = True
                break  # closing the generator stops the decoders; in-flight tracks are redone next run


def _handle(
    res: Result, prepared: Sequence[PreparedEmbedding], opened: Sequence[_Outputs], summary: RunSummary
) -> None:
    if res.status == "skipped":
        summary.files_skipped += 1
        return
    if res.status == "failed":
        summary.files_failed += 1
        summary.failures.append(Failure(str(res.job.path), res.error or "unknown error"))
        log.info("failed: %s: %s", res.job.path, res.error)
        return
    for e, vec in res.vectors.items():
        rec = Record(
            id=res.job.id,
            vector=vec,
            content_hash=res.content_hash,
            metadata=dict(res.metadata),
            frames=res.frames.get(e),
        )
        outs = opened[e]
        for exp in outs.exporters:
            exp.write([rec])
        if outs.sinks:
            queued = dataclasses.replace(rec, frames=None)  # sinks store vectors, not frames
            for i in range(len(outs.sinks)):
                outs.pending[i].append(queued)
                _flush_sink(outs, i)
    summary.files_ok += 1
    summary.audio_seconds += res.seconds


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
    for warning in summary.warnings:
        console.print(f"[bold yellow]warning:[/bold yellow] {escape(warning)}", highlight=False)
    if summary.interrupted:
        console.print("[yellow]The run was interrupted; run the same command again to resume.[/]")
