"""The five musicembed hooks: markers plus bodiless specs, nothing else.

Every hook is a *registration* hook in the callback style: the plugin receives a
``register`` callable and calls it once per component class it offers. Register
classes (cheap to import), never loaded models: weights are loaded lazily by the
component itself when the pipeline first needs them.

``register(cls, name=None)``: ``name`` defaults to ``cls.name``. Names are unique
per kind across all plugins; a duplicate is an error that names both plugins.
"""

from __future__ import annotations

from typing import Callable

import pluggy

PROJECT_NAME = "musicembed"

hookspec = pluggy.HookspecMarker(PROJECT_NAME)
hookimpl = pluggy.HookimplMarker(PROJECT_NAME)

Register = Callable[..., None]


@hookspec
def register_encoders(register: Register) -> None:
    """Register audio encoders (subclasses of :class:`musicembed_core.Encoder`).

    :param register: call ``register(EncoderClass)`` for each encoder. The
        encoder turns a batch of equal-length mono waveforms ``[B, T]`` at its
        ``sample_rate`` into a layer stack ``[L, B, F, D]``.
    """


@hookspec
def register_enrichers(register: Register) -> None:
    """Register frame-to-track post-processing steps (:class:`musicembed_core.Enricher`).

    :param register: call ``register(EnricherClass)`` for each enricher. An
        enricher maps ``[L, F, D]`` frames (or the output of the previous step
        in the chain) to a tensor; a chain must end in a vector.
    """


@hookspec
def register_exporters(register: Register) -> None:
    """Register persistent outputs (:class:`musicembed_core.Exporter`).

    :param register: call ``register(ExporterClass)`` for each exporter. An
        exporter is opened once per embedding space, receives records, and is
        closed at the end of the run; it must survive being killed at any point.
    """


@hookspec
def register_text_projectors(register: Register) -> None:
    """Register text projectors (:class:`musicembed_core.TextProjector`).

    :param register: call ``register(ProjectorClass)`` for each projector. A
        projector maps text into one given audio embedding space
        (``target_space``) so that text queries search audio vectors.
    """


@hookspec
def register_sinks(register: Register) -> None:
    """Register vector stores (:class:`musicembed_core.Sink`).

    :param register: call ``register(SinkClass)`` for each sink. A sink stores
        vectors keyed by track id and searches them (Milvus, FAISS, ...).
    """


HOOK_KINDS: dict[str, str] = {
    "register_encoders": "encoders",
    "register_enrichers": "enrichers",
    "register_exporters": "exporters",
    "register_text_projectors": "projectors",
    "register_sinks": "sinks",
}
"""Hook name -> component kind (also the gin module components are bound under)."""
