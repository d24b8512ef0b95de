"""musicembed core: hook specs, plugin manager, gin wiring, audio pipeline.

Plugins need only this import::

    from musicembed_core import hookimpl, Encoder

Importing the package is cheap (no torch): ``musicembed plugins`` depends on it.
"""

from __future__ import annotations

from .components import (
    BufferedPooling,
    Component,
    Encoder,
    Enricher,
    Exporter,
    Hit,
    ModelExporter,
    Pooling,
    Record,
    Sink,
    TextProjector,
)
from .hookspecs import hookimpl
from .space import EmbeddingSpace

__version__ = "0.1.0"

__all__ = [
    "BufferedPooling",
    "Component",
    "EmbeddingSpace",
    "Encoder",
    "Enricher",
    "Exporter",
    "Hit",
    "ModelExporter",
    "Pooling",
    "Record",
    "Sink",
    "TextProjector",
    "hookimpl",
    "__version__",
]
