"""Running an enricher chain: validation, per-chunk frame stage, per-track streaming.

A chain is ``frames* pool vector*`` (see :class:`musicembed_core.components.Enricher`).
The pipeline calls :meth:`EnricherChain.start` once per track, feeds every
chunk's raw ``[L, f, D]`` encoder frames to :meth:`TrackState.update` in order,
and gets the track vector from :meth:`TrackState.finish`. :func:`enrich_whole`
is the non-streaming reference.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Sequence

from .components import Enricher, Pooling
from .errors import ConfigError

if TYPE_CHECKING:  # pragma: no cover
    import torch

    from .geometry import Geometry

_STAGE_ORDER = {"frames": 0, "pool": 1, "vector": 2}


def _label(e: Enricher) -> str:
    return getattr(e, "name", "") or type(e).__name__


class EnricherChain:
    """A validated sequence of enrichers (``frames* pool vector*``)."""

    def __init__(self, enrichers: Sequence[Enricher]) -> None:
        enrichers = tuple(enrichers)
        for e in enrichers:
            if not isinstance(e, Enricher):
                raise ConfigError(
                    f"the enricher chain holds {e!r}, which is not an enricher; use components "
                    f"such as enrichers.mean or enrichers.flatten"
                )
            if getattr(e, "stage", None) not in _STAGE_ORDER:
                raise ConfigError(
                    f"enricher '{_label(e)}' has stage {getattr(e, 'stage', None)!r}; "
                    f"the stage must be one of 'frames', 'pool', 'vector'"
                )
        prev: Enricher | None = None
        pool: Enricher | None = None
        for e in enrichers:
            if prev is not None and (
                _STAGE_ORDER[e.stage] < _STAGE_ORDER[prev.stage]
                or (e.stage == "pool" and prev.stage == "pool")
            ):
                hint = (
                    "; a chain pools once: combine statistics with enrichers.stats"
                    if e.stage == prev.stage == "pool"
                    else "; the order is frame enrichers, one pooling enricher, vector enrichers"
                )
                raise ConfigError(
                    f"enricher '{_label(e)}' (stage {e.stage}) cannot come after "
                    f"'{_label(prev)}' (stage {prev.stage}){hint}"
                )
            if e.stage == "pool":
                pool = e
            prev = e
        if pool is None:
            raise ConfigError(
                "the enricher chain must reduce frames to one vector per track: add a pooling "
                "enricher such as enrichers.mean"
                + (f" (the chain is {[_label(e) for e in enrichers]})" if enrichers else "")
            )
        self.enrichers: tuple[Enricher, ...] = enrichers
        self.frame_enrichers: tuple[Enricher, ...] = tuple(
            e for e in enrichers if e.stage == "frames"
        )
        self.pool: Enricher = pool
        self.vector_enrichers: tuple[Enricher, ...] = tuple(
            e for e in enrichers if e.stage == "vector"
        )

    def __len__(self) -> int:
        return len(self.enrichers)

    def __repr__(self) -> str:
        return f"EnricherChain({list(self.enrichers)!r})"

    def output_dim(self, geometry: "Geometry") -> int:
        """Length of the track vector for an encoder of this geometry.

        From the enrichers' :meth:`~Enricher.output_shape` when every one gives it
        (no torch import), else by running the chain on a dummy ``[L, 3, D]``
        stack; raises :class:`ConfigError` when the result is not 1-D.
        """
        num_layers, dim = geometry.num_layers, geometry.dim
        shape = self.output_shape((num_layers, 3, dim))
        if shape is None:
            import torch

            g = torch.Generator().manual_seed(0)
            dummy = torch.randn(num_layers, 3, dim, generator=g)
            shape = tuple(enrich_whole(self, dummy).shape)
        if len(shape) != 1:
            raise ConfigError(
                f"chain output has shape {shape} for a {num_layers}x{dim} encoder, "
                f"not one vector per track: add enrichers.flatten at the end of the chain"
            )
        return int(shape[0])

    def output_shape(self, shape: tuple[int, ...]) -> tuple[int, ...] | None:
        """The chain's output shape for an input of ``shape``; None if an enricher cannot say."""
        for e in self.enrichers:
            out = e.output_shape(shape)
            if out is None:
                return None
            shape = tuple(int(n) for n in out)
        return shape

    def frames(self, x: "torch.Tensor") -> "torch.Tensor":
        """Apply the frame-stage prefix to ``[L, F, D]`` frames (one chunk or a whole track)."""
        for e in self.frame_enrichers:
            x = e.enrich(x)
        return x

    def vector(self, pooled: "torch.Tensor") -> "torch.Tensor":
        """Apply the vector-stage suffix to a pooled result; float32."""
        import torch

        for e in self.vector_enrichers:
            pooled = e.enrich(pooled)
        return pooled.to(torch.float32)

    def start(self) -> "TrackState":
        """Fresh streaming state for one track."""
        return TrackState(self)

    def signature(self) -> list[dict[str, Any]]:
        """Signatures of the enrichers in order (part of the embedding-space identity)."""
        return [e.signature() for e in self.enrichers]


class TrackState:
    """Streaming state of one track through a chain."""

    def __init__(self, chain: EnricherChain) -> None:
        self.chain = chain
        self.pooling: Pooling = chain.pool.pooling()
        self.num_frames = 0

    def update(self, frames: "torch.Tensor") -> None:
        """Feed raw encoder frames ``[L, f, D]`` of the next chunk of the track."""
        self.update_framed(self.chain.frames(frames))

    def update_framed(self, frames: "torch.Tensor") -> None:
        """Feed frames that already went through :meth:`EnricherChain.frames`."""
        self.num_frames += int(frames.shape[1])
        self.pooling.update(frames)

    def finish(self) -> "torch.Tensor":
        """The track vector: pooled result, then the vector-stage enrichers; 1-D float32."""
        if self.num_frames == 0:
            raise ValueError("no frames were fed for this track; cannot pool an empty track")
        out = self.chain.vector(self.pooling.result())
        if out.dim() != 1:
            raise ConfigError(
                f"chain output has shape {tuple(out.shape)}, not one vector per track: "
                f"add enrichers.flatten at the end of the chain"
            )
        return out


def enrich_whole(chain: EnricherChain, frames: "torch.Tensor") -> "torch.Tensor":
    """Non-streaming reference: apply every enricher of ``chain`` in order to ``[L, F, D]``."""
    import torch

    x = frames
    for e in chain.enrichers:
        x = e.enrich(x)
    return x.to(torch.float32)
