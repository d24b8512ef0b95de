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


ENGINES = ("local", "ray")


@dataclass(frozen=True)
class RayOptions:
    """How ``run.engine = "ray"`` uses the cluster (see docs/distributed.md)."""

    address: str | None = None
    """``None``: attach to the Ray instance this process already runs, else start a local
    one; ``"auto"``: the cluster of this node (``ray start``); ``"ray://HOST:10001"``."""
    actors: int | tuple[int, int] = 1
    """Encoder actors per embedding: ``n`` (a fixed pool) or ``(min, max)`` (autoscaling)."""
    num_cpus: float = 1.0
    """CPUs reserved by each encoder actor (its torch threads, unless run.torch_threads)."""
    num_gpus: float = 0.0
    """GPUs per encoder actor (0.5: two actors share a GPU)."""
    decode_cpus: float = 1.0
    """CPUs reserved by each decode task."""
    files_per_task: int = 4
    """Files one decode task decodes (a Ray Data batch)."""
    tracks_per_batch: int = 4
    """Tracks an encoder actor receives per call; their chunks are batched together
    in batches of ``run.batch_size``, as in a local run."""


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
    engine: str = "local"
    ray: RayOptions = field(default_factory=RayOptions)
    shard_index: int = 0
    num_shards: int = 1
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def sharded(self) -> bool:
        return self.num_shards > 1


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
    engine: str = "local",
    ray_address: str | None = None,
    ray_actors: int | Sequence[int] = 1,
    ray_num_cpus: float = 1.0,
    ray_num_gpus: float = 0.0,
    ray_decode_cpus: float = 1.0,
    ray_files_per_task: int = 4,
    ray_tracks_per_batch: int = 4,
    shard_index: int = 0,
    num_shards: int = 1,
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
      engine: ``"local"`` (threads in this process) or ``"ray"`` (Ray Data on a Ray
        cluster; ``pip install 'musicembed[ray]'``). Same outputs, same resume.
      ray_address: ``None`` (attach to this process's Ray instance or start a local
        one), ``"auto"`` (the cluster this node belongs to) or ``"ray://HOST:10001"``.
      ray_actors: encoder actors per embedding: ``n`` or ``(min, max)`` (autoscaling).
      ray_num_cpus, ray_num_gpus: resources of each encoder actor.
      ray_decode_cpus: CPUs of each decode task; ray_files_per_task: files it decodes.
      ray_tracks_per_batch: tracks per encoder-actor call.
      shard_index, num_shards: embed only the files whose id hashes to shard
        ``shard_index`` of ``num_shards`` (SLURM arrays, GPUs by hand), into
        ``<output_dir>/shard-<i>-of-<n>``; ``musicembed merge`` combines the shards.
        (``musicembed run --shard-index I --num-shards N`` sets them.)
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
    if engine not in ENGINES:
        raise ConfigError(f"run.engine={engine!r}: choose one of {', '.join(map(repr, ENGINES))}")
    ray = _ray_options(ray_address, ray_actors, ray_num_cpus, ray_num_gpus, ray_decode_cpus,
                       ray_files_per_task, ray_tracks_per_batch)
    if int(num_shards) < 1 or not 0 <= int(shard_index) < int(num_shards):
        raise ConfigError(
            f"run.shard_index={shard_index!r} / run.num_shards={num_shards!r}: need "
            f"num_shards >= 1 and 0 <= shard_index < num_shards (--shard-index counts from 0)"
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
        engine=str(engine),
        ray=ray,
        shard_index=int(shard_index),
        num_shards=int(num_shards),
    )


def _ray_options(address: str | None, actors: Any, num_cpus: float, num_gpus: float,
                 decode_cpus: float, files_per_task: int, tracks_per_batch: int) -> RayOptions:
    if isinstance(actors, (list, tuple)):
        if len(actors) != 2 or not 1 <= int(actors[0]) <= int(actors[1]):
            raise ConfigError(f"run.ray_actors={actors!r}: give n, or (min, max) with 1 <= min <= max")
        pool: int | tuple[int, int] = (int(actors[0]), int(actors[1]))
    else:
        if int(actors) < 1:
            raise ConfigError(f"run.ray_actors={actors!r} must be >= 1")
        pool = int(actors)
    if float(num_cpus) < 0 or float(num_gpus) < 0 or float(decode_cpus) <= 0:
        raise ConfigError(
            f"run.ray_num_cpus={num_cpus!r} and run.ray_num_gpus={num_gpus!r} must be >= 0, "
            f"run.ray_decode_cpus={decode_cpus!r} > 0"
        )
    if int(files_per_task) < 1 or int(tracks_per_batch) < 1:
        raise ConfigError("run.ray_files_per_task and run.ray_tracks_per_batch must be >= 1")
    return RayOptions(
        address=None if address is None else str(address), actors=pool, num_cpus=float(num_cpus),
        num_gpus=float(num_gpus), decode_cpus=float(decode_cpus),
        files_per_task=int(files_per_task), tracks_per_batch=int(tracks_per_batch),
    )
