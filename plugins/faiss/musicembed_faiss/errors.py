"""Errors of the FAISS sink: each names the collection/file/parameter and what to do."""

from __future__ import annotations

from musicembed_core.errors import FilterError, MusicembedError

__all__ = ["CorruptCollectionError", "DimensionMismatchError", "FaissSinkError", "FilterError"]


class FaissSinkError(MusicembedError):
    """A collection that cannot be opened, written or searched as asked."""


class DimensionMismatchError(FaissSinkError, ValueError):
    """Vectors whose dimension differs from the collection's."""


class CorruptCollectionError(FaissSinkError):
    """A snapshot file that fails its format or checksum checks."""
