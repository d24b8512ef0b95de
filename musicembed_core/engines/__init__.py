"""Where a run's extraction executes: ``run.engine = "local"`` (threads in this process,
:class:`~musicembed_core.pipeline.Embedder`) or ``"ray"`` (Ray Data on a Ray cluster,
:mod:`.ray_engine`).

Both yield the same :class:`~musicembed_core.pipeline.Result` stream to the runner, which
writes every output, applies the flush policy and writes the summary: an engine changes
where the model runs, never what is computed or how it is stored.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

from ..errors import ConfigError

RAY_INSTALL = "pip install 'musicembed[ray]'"


def check_engine(cfg: Any) -> None:
    """Refuse an engine that cannot run here before any output is opened."""
    if cfg.engine != "ray":
        return
    try:
        import ray  # noqa: F401
        import ray.data  # noqa: F401
    except ImportError as exc:
        raise ConfigError(
            f"run.engine = 'ray' needs Ray Data, which is not installed ({exc}): "
            f"{RAY_INSTALL} (or pip install 'ray[data]>=2.30'), or set run.engine = 'local'"
        ) from None


def make_embedder(cfg: Any, prepared: Sequence[Any], hash_cache: Any,
                  known: Sequence[Mapping[str, str]], output_dir: Any,
                  opened: Sequence[Any]) -> Any:
    """The run's engine: ``embed(jobs)`` yields one Result per job; ``collect_timings()``."""
    if cfg.engine == "ray":
        from .ray_engine import RayEmbedder

        return RayEmbedder(prepared, cfg, hash_cache=hash_cache, known=known,
                           output_dir=output_dir, opened=opened)
    from ..pipeline import Embedder

    return Embedder(
        prepared,
        batch_size=cfg.batch_size,
        decode_workers=cfg.decode_workers,
        hash_cache=hash_cache,
        known=known,
        torch_threads=cfg.torch_threads,
    )
