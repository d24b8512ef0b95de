"""musicembed core: hook specs, plugin manager, gin wiring, audio pipeline.

The public API for plugins is what this module exports (``__all__``) plus the
modules in :data:`PUBLIC_MODULES`::

    from musicembed_core import hookimpl, Encoder, Geometry, Record, EmbeddingSpace
    from musicembed_core.hub import PretrainedEncoder      # pretrained checkpoints
    from musicembed_core.testing import EncoderSuite       # conformance kit (pytest plugin)

Every other module (pipeline, runner, ginconfig, plugins, builtins, export, ...)
is internal: it may change without notice, and a test fails when a shipped
plugin imports one.

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
    check_projector,
)
from .atomic import atomic_path, atomic_write_bytes, atomic_write_json, atomic_write_text
from .errors import (
    AudioDecodeError,
    ConfigError,
    FilterError,
    MusicembedError,
    PluginError,
    SinkNotFoundError,
    SpaceMismatchError,
)
from .geometry import Geometry
from .hookspecs import hookimpl
from .filters import MetadataFilter, parse_filter
from .sinkkit import __all__ as _sinkkit_all
from .sinkkit import (
    METRICS,
    RecordBatch,
    check_stored_space,
    exact_rerank,
    exact_scores,
    exact_search,
    sink_not_found,
    space_record,
    stack_records,
    unit_rows,
)
from .space import EmbeddingSpace

__version__ = "0.1.0"

PUBLIC_MODULES: tuple[str, ...] = (
    "musicembed_core",
    "musicembed_core.atomic",
    "musicembed_core.audio",
    "musicembed_core.errors",
    "musicembed_core.examples",
    "musicembed_core.filters",
    "musicembed_core.frontends",
    "musicembed_core.geometry",
    "musicembed_core.hub",
    "musicembed_core.sinkkit",
    "musicembed_core.space",
    "musicembed_core.stored",
    "musicembed_core.testing",
)
"""Modules a plugin may import (``musicembed_core.testing`` also from its tests).
``audio``: ``load_audio(path, sample_rate)`` (any format, mono, resampled) and
``find_audio_files`` for plugin commands; ``examples``: generated test audio;
``stored``: ``open_output(path)`` reads a run's HDF5/safetensors output back
(vectors, metadata, frame stacks one track at a time)."""

__all__ = [
    "AudioDecodeError",
    "BufferedPooling",
    "Component",
    "ConfigError",
    "FilterError",
    "MusicembedError",
    "PUBLIC_MODULES",
    "PluginError",
    "SinkNotFoundError",
    "SpaceMismatchError",
    "atomic_path",
    "atomic_write_bytes",
    "atomic_write_json",
    "atomic_write_text",
    "EmbeddingSpace",
    "Encoder",
    "Enricher",
    "Exporter",
    "Geometry",
    "Hit",
    "ModelExporter",
    "Pooling",
    "Record",
    "Sink",
    "TextProjector",
    "check_projector",
    "hookimpl",
    "__version__",
    *_sinkkit_all,  # sink helpers (musicembed_core.sinkkit, musicembed_core.filters)
]
