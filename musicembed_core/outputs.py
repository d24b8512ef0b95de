"""The run's outputs behind one writer each: bounded-interval durability, isolation of
the records an output refuses, and disk-full errors that name the output.

Rules (issue "one bad track never blocks an output"):

* Exporters receive each track as it completes; sinks receive batches. Every
  ``flush_every_tracks`` tracks or ``flush_every_seconds`` seconds (whichever comes
  first) every output's ``flush()`` makes what it holds durable, so a killed run
  redoes at most that much work.
* A batch an output refuses is split in halves until the refused record is
  isolated; that record is reported (output, id, reason) and the others are
  stored. If every record of a batch of several fails on its own, the output
  itself is broken (server gone, permissions): that stops the run with its error.
* Running out of disk space (``ENOSPC``/``EDQUOT``) anywhere stops the run with
  one :class:`DiskFullError` naming the output and its path.
"""

from __future__ import annotations

import copy
import dataclasses
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

from .atomic import disk_full_cause
from .components import Exporter, Record, Sink
from .errors import ConfigError, MusicembedError

log = logging.getLogger("musicembed")



class DiskFullError(MusicembedError):
    """An output could not be written because the disk (or quota) is full."""


class OutputBrokenError(MusicembedError):
    """An output refused every record of a batch, each on its own: the output, not the data."""


@dataclass
class Refusal:
    """One record an output would not store."""

    output: str
    id: str
    reason: str


@dataclass
class OutputWriter:
    """One exporter or sink of one embedding, with its pending batch and counters."""

    component: Exporter | Sink
    label: str
    """``exporters.hdf5 (logmel)``: named in every message."""
    location: str
    """The file, folder or ``sink:collection`` it writes."""
    batched: bool
    """Sinks take batches (``upsert``); exporters take each track (``write``)."""
    pending: list[Record] = field(default_factory=list)
    stored: int = 0
    """Records acknowledged by the output during this run."""

    def _send(self, records: Sequence[Record]) -> None:
        if self.batched:
            self.component.upsert(list(records))  # type: ignore[union-attr]
        else:
            self.component.write(list(records))  # type: ignore[union-attr]

    def write(self, records: Sequence[Record]) -> list[Refusal]:
        """Store ``records``, isolating any the output refuses; returns the refusals."""
        refused: list[Refusal] = []
        self._write(list(records), refused)
        if len(records) > 1 and len(refused) == len(records):
            reasons = "; ".join(f"{r.id}: {r.reason}" for r in refused[:3])
            raise OutputBrokenError(
                f"{self.label} ({self.location}) refused every record of a batch of "
                f"{len(records)}, each on its own ({reasons}): the output itself is failing. "
                "Check it (server reachable? permissions?) and run the same command again."
            )
        return refused

    def _write(self, records: list[Record], refused: list[Refusal]) -> None:
        if not records:
            return
        try:
            self._send(records)
        except Exception as exc:  # noqa: BLE001 - isolate, unless the disk is full
            self._raise_if_disk_full(exc)
            if len(records) == 1:
                refused.append(Refusal(self.label, records[0].id, f"{type(exc).__name__}: {exc}"))
                log.warning("%s refused %s: %s", self.label, records[0].id, exc)
                return
            mid = len(records) // 2
            self._write(records[:mid], refused)
            self._write(records[mid:], refused)
            return
        self.stored += len(records)

    def add(self, record: Record) -> list[Refusal]:
        """A completed track: written now (exporters) or queued for the next batch (sinks)."""
        if self.batched:
            self.pending.append(dataclasses.replace(record, frames=None))  # vectors, not frames
            return []
        return self.write([record])

    def flush(self) -> list[Refusal]:
        """Send the pending batch and make everything durable (``flush()``)."""
        batch, self.pending = self.pending, []
        refused = self.write(batch) if batch else []
        try:
            self.component.flush()
        except Exception as exc:  # noqa: BLE001
            self._raise_if_disk_full(exc)
            raise MusicembedError(f"{self.label} ({self.location}): flush failed: {exc}") from exc
        return refused

    def close(self) -> list[Refusal]:
        refused = self.flush()
        try:
            self.component.close()
        except Exception as exc:  # noqa: BLE001
            self._raise_if_disk_full(exc)
            raise
        return refused

    def _raise_if_disk_full(self, exc: BaseException) -> None:
        cause = disk_full_cause(exc)
        if cause is None:
            return
        said = getattr(cause, "strerror", None) or str(cause)
        if "disk full" in said:  # the output already said which file, what was kept, what to do
            raise DiskFullError(
                f"{said} ({self.stored} records of this run had reached {self.label}.)"
            ) from exc
        raise DiskFullError(
            f"disk full while writing {self.label} to {self.location}: {said}"
            f"{f' ({cause.filename})' if getattr(cause, 'filename', None) else ''}. {self.stored} records of this "
            "run were stored by it before; what was written before is intact. Free some space "
            "and run the same command again: it resumes where it stopped."
        ) from exc


@dataclass
class OutputSet:
    """Every output of one embedding."""

    writers: list[OutputWriter] = field(default_factory=list)

    @property
    def paths(self) -> list[str]:
        return [w.location for w in self.writers]

    @property
    def components(self) -> list[Exporter | Sink]:
        return [w.component for w in self.writers]


class FlushPolicy:
    """Flush every ``every_tracks`` tracks or ``every_seconds`` seconds, whichever first."""

    def __init__(self, every_tracks: int, every_seconds: float, clock: Callable[[], float] = time.monotonic):
        self.every_tracks = max(1, int(every_tracks))
        self.every_seconds = float(every_seconds)
        self.clock = clock
        self.tracks = 0
        self.last = clock()

    def due(self) -> bool:
        return self.tracks >= self.every_tracks or (self.clock() - self.last) >= self.every_seconds

    def track_done(self) -> None:
        self.tracks += 1

    def flushed(self) -> None:
        self.tracks = 0
        self.last = self.clock()


def _output_path(exporter: Exporter, output_dir: Path, name: str) -> str:
    ext = getattr(exporter, "extension", None) or f".{exporter.name}"
    if exporter.path:
        return str(exporter.path).format(embedding=name, output_dir=output_dir)
    return str(output_dir / f"{name}{ext}")


def open_run_output(cfg: Any, prep: Any, doing: str = "read",
                    without: str = "") -> Any:
    """The run's HDF5/safetensors output of embedding ``prep``, opened for reading
    (a :class:`~musicembed_core.stored.StoredOutput`, its space checked against ``prep``'s).

    ``doing`` names the command in messages ("tag", "train a projector on");
    ``without`` says what else was missing when no readable exporter is configured
    (e.g. "no sink to tag (or --no-sink) and "). A run that never stored anything is a
    :class:`MusicembedError` that says to run first.
    """
    from .stored import FORMATS, NotAnOutputError, open_output

    readable = [e for e in cfg.exporters if e.name in FORMATS]
    if not readable:
        raise ConfigError(
            f"nothing to read the tracks from: the run has {without}no "
            f"{' or '.join(f'exporters.{f}' for f in FORMATS)} output; {doing} with the gin "
            f"files of the `musicembed run` that stored the library"
        )
    output_dir = Path(cfg.output_dir)
    errors = []
    for exp in readable:
        path = _output_path(exp, output_dir, prep.name)
        try:
            out = open_output(path)
        except NotAnOutputError as exc:
            errors.append(str(exc))
            continue
        try:
            prep.space.check_same(out.space.to_json(), where=path)
        except BaseException:
            out.close()
            raise
        return out
    hint = ("" if output_dir.is_dir() else
            f" (run.output_dir {str(output_dir)!r} does not exist)")
    raise MusicembedError(
        f"no stored tracks to {doing}{hint}: {'; '.join(errors)}. Run `musicembed run` with the "
        f"same gin files and --gin_param options first, then {doing.split()[0]}."
    )


SINK_LOCATION_ATTRS = ("path", "uri")


def open_sink(
    template: Sink, output_dir: Path, p: Any, *, readonly: bool = False
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


def open_outputs(cfg: Any, prepared: Sequence[Any], output_dir: Path) -> list[OutputSet]:
    """One fresh exporter/sink instance per embedding, opened on its space."""
    opened: list[OutputSet] = []
    try:
        for p in prepared:
            outs = OutputSet()
            opened.append(outs)
            for template in cfg.exporters:
                exp = copy.deepcopy(template)
                path = _output_path(exp, output_dir, p.name)
                Path(path).parent.mkdir(parents=True, exist_ok=True)
                try:
                    exp.open(path, p.space)
                except Exception as exc:
                    cause = disk_full_cause(exc)
                    if cause is not None:
                        raise DiskFullError(
                            f"disk full while opening exporters.{exp.name} ({p.name}) at {path}: "
                            f"{getattr(cause, 'strerror', None) or cause}. Free some space and run again."
                        ) from exc
                    raise
                outs.writers.append(OutputWriter(exp, f"exporters.{exp.name} ({p.name})", path, False))
                if getattr(exp, "store_frames", False):
                    p.keep_frames = True
            for template in cfg.sinks:
                sink, collection = open_sink(template, output_dir, p)
                outs.writers.append(
                    OutputWriter(sink, f"sinks.{sink.name} ({p.name})", f"{sink.name}:{collection}", True)
                )
    except BaseException:
        close_outputs(opened)
        raise
    return opened


def flush_outputs(opened: Sequence[OutputSet]) -> list[Refusal]:
    refused: list[Refusal] = []
    for outs in opened:
        for w in outs.writers:
            refused += w.flush()
    return refused


def close_outputs(opened: Sequence[OutputSet]) -> list[Refusal]:
    """Flush and close every output (all of them, even after one fails); then raise the
    first disk-full error, or one error listing every failure."""
    refused: list[Refusal] = []
    errors: list[BaseException] = []
    for outs in opened:
        for w in outs.writers:
            try:
                refused += w.close()
            except Exception as exc:  # noqa: BLE001 - close the others, then report
                errors.append(exc)
    if errors:
        full = [e for e in errors if isinstance(e, DiskFullError)]
        if full:
            raise full[0]
        if len(errors) == 1 and isinstance(errors[0], MusicembedError):
            raise errors[0]
        raise MusicembedError("closing outputs failed: " + "; ".join(str(e) for e in errors))
    return refused


def known_everywhere(outs: OutputSet) -> dict[str, str]:
    """ids every output of one embedding holds with the same content hash."""
    maps = [dict(c.known()) for c in outs.components]
    if not maps:
        return {}
    first, rest = maps[0], maps[1:]
    return {k: v for k, v in first.items() if all(m.get(k) == v for m in rest)}
