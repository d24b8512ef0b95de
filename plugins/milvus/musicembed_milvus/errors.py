"""Errors of the Milvus sink: each names the collection/uri and what to do."""

from __future__ import annotations

from musicembed_core.errors import MusicembedError


class MilvusSinkError(MusicembedError):
    """A Milvus request failed or a collection cannot be used."""


class DatabaseLockedError(MilvusSinkError):
    """A Milvus Lite database is open in another process."""


class DimensionMismatchError(MilvusSinkError, ValueError):
    """An existing collection stores vectors of another width."""


class FilterError(MilvusSinkError, ValueError):
    """A metadata filter expression that Milvus refuses."""
