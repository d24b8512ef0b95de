"""The gin-configurable run: ``run.*`` and ``embedding.*`` bindings.

A run embeds one source folder with one or more *embeddings* (encoder +
enricher chain) in a single pass: each file is decoded once and resampled once
per distinct encoder rate. Every embedding's vectors go to every exporter and
sink of the run (paths/collections are named after the embedding).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

import gin

from .components import Encoder, Enricher, Exporter, Sink, TextProjector
from .errors import ConfigError


@dataclass
class EmbeddingSpec:
    name: str
    encoder: Encoder
    enrichers: list[Enricher]
    projector: TextProjector | None = None


@gin.configurable("embedding")
def embedding(
    encoder: Encoder = gin.REQUIRED,
    enrichers: Sequence[Enricher] = gin.REQUIRED,
    name: str | None = None,
    projector: TextProjector | None = None,
) -> EmbeddingSpec:
    """One embedding space of the run: ``encoder`` frames pooled by ``enrichers``.

    ``name`` labels outputs (``<output_dir>/<name>.h5``); default: the encoder's name.
    ``projector``: a text projector into this space (``musicembed search --text``);
    it does not change the audio vectors.
    """
    if not isinstance(encoder, Encoder):
        raise ConfigError(
            f"embedding.encoder must be an encoder (e.g. @encoders.logmel()), got {encoder!r}"
        )
    for e in enrichers:
        if not isinstance(e, Enricher):
            raise ConfigError(
                f"embedding.enrichers must list enrichers (e.g. @enrichers.mean()), got {e!r}"
            )
    if projector is not None and not isinstance(projector, TextProjector):
        raise ConfigError(
            f"embedding.projector must be a text projector (e.g. @projectors.NAME()), got {projector!r}"
        )
    return EmbeddingSpec(
        name=name or encoder.name, encoder=encoder, enrichers=list(enrichers), projector=projector
    )


@dataclass
class RunConfig:
    source: str
    embeddings: list[EmbeddingSpec]
    exporters: list[Exporter] = field(default_factory=list)
    sinks: list[Sink] = field(default_factory=list)
    output_dir: str = "musicembed-out"
    batch_size: int = 8
    decode_workers: int = 2
    limit: int | None = None
    fail_fast: bool = False
    flush_every_tracks: int = 64
    flush_every_seconds: float = 30.0
    torch_threads: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)


@gin.configurable("run")
def run_config(
    source: str = gin.REQUIRED,
    embeddings: Sequence[EmbeddingSpec] = gin.REQUIRED,
    exporters: Sequence[Exporter] = (),
    sinks: Sequence[Sink] = (),
    output_dir: str = "musicembed-out",
    batch_size: int = 8,
    decode_workers: int = 2,
    limit: int | None = None,
    fail_fast: bool = False,
    flush_every_tracks: int = 64,
    flush_every_seconds: float = 30.0,
    torch_threads: int | None = None,
) -> RunConfig:
    """A run: embed every audio file under ``source``.

    Args:
      source: folder (searched recursively) or single audio file.
      embeddings: list of ``@embedding()`` (use gin scopes for several, e.g.
        ``@mert/embedding()``).
      exporters: e.g. ``[@exporters.hdf5()]``; files go to ``output_dir``.
      sinks: vector stores, e.g. ``[@sinks.milvus()]``.
      output_dir: run outputs, summary.json, operative config, plugin list.
      batch_size: chunks per encoder call (equal-length chunks only).
      decode_workers: files decoded in parallel (threads).
      limit: embed at most this many files (for trying a config quickly).
      fail_fast: stop at the first failed file instead of recording it.
      flush_every_tracks, flush_every_seconds: make every output durable (its
        ``flush()``) after this many embedded tracks or seconds, whichever comes
        first; a killed run redoes at most that much work.
      torch_threads: torch intra-op threads for the encoders. None (default): sized
        to what the decode threads leave free while they are the bottleneck, every
        thread torch would use while the encoder is (see pipeline.ThreadBudget).
    """
    specs = list(embeddings)
    if not specs:
        raise ConfigError("run.embeddings is empty: add at least one @embedding()")
    names = [s.name for s in specs]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise ConfigError(
            f"run.embeddings has several embeddings named {', '.join(dupes)}: set "
            f"embedding.name in each gin scope so their outputs do not collide"
        )
    if not exporters and not sinks:
        raise ConfigError(
            "the run writes nothing: set run.exporters (e.g. [@exporters.hdf5()]) "
            "and/or run.sinks"
        )
    if batch_size < 1 or decode_workers < 1:
        raise ConfigError("run.batch_size and run.decode_workers must be >= 1")
    if torch_threads is not None and int(torch_threads) < 1:
        raise ConfigError(f"run.torch_threads={torch_threads!r} must be >= 1 (or None: automatic)")
    if int(flush_every_tracks) < 1 or float(flush_every_seconds) <= 0:
        raise ConfigError(
            f"run.flush_every_tracks={flush_every_tracks!r} must be >= 1 and "
            f"run.flush_every_seconds={flush_every_seconds!r} must be > 0"
        )
    return RunConfig(
        source=str(source),
        embeddings=specs,
        exporters=list(exporters),
        sinks=list(sinks),
        output_dir=str(output_dir),
        batch_size=int(batch_size),
        decode_workers=int(decode_workers),
        limit=limit,
        fail_fast=bool(fail_fast),
        flush_every_tracks=int(flush_every_tracks),
        flush_every_seconds=float(flush_every_seconds),
        torch_threads=None if torch_threads is None else int(torch_threads),
    )
