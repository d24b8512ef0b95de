"""musicembed-faiss: the ``sinks.faiss`` vector store (FAISS index + raw vectors + metadata).

Importing this module imports neither numpy nor faiss: ``musicembed plugins``
imports it just to list what it provides.
"""

from __future__ import annotations

from pathlib import Path

from musicembed_core import hookimpl

from .errors import (
    CorruptCollectionError,
    DimensionMismatchError,
    FaissSinkError,
    FilterError,
)
from .sink import FaissSink

__all__ = [
    "CorruptCollectionError",
    "DimensionMismatchError",
    "FaissSink",
    "FaissSinkError",
    "FilterError",
]


@hookimpl
def register_sinks(register):
    register(FaissSink)


@hookimpl
def register_gin_folders(register):
    register(Path(__file__).parent / "gin")
