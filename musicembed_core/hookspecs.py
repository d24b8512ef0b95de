"""The five musicembed hooks: markers plus bodiless specs, nothing else.

Every hook is a *registration* hook in the callback style: the plugin receives a
``register`` callable and calls it once per component class it offers. Register
classes (cheap to import), never loaded models: weights are loaded lazily by the
component itself when the pipeline first needs them.

``register(cls, name=None)``: ``name`` defaults to ``cls.name``. Names are unique
per kind across all plugins: a built-in's name is reserved (a plugin's component
of that name is refused), and a name two plugins register is an error at use that
names both (choose with ``MUSICEMBED_DISABLED_PLUGINS``).

``register_commands(cli)`` is the exception to the callback style: it receives
the click group itself, as in llm.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Callable

import pluggy

if TYPE_CHECKING:  # pragma: no cover
    import click

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
        projector maps text into the audio embedding space it declares with
        ``target()`` (a checkpoint's stored space, or the encoder + chain of a
        joint model), so that text queries search audio vectors.
    """


@hookspec
def register_sinks(register: Register) -> None:
    """Register vector stores (:class:`musicembed_core.Sink`).

    :param register: call ``register(SinkClass)`` for each sink. A sink stores
        vectors keyed by track id and searches them (Milvus, FAISS, ...).
    """


@hookspec
def register_gin_folders(register: Callable[[Path], None]) -> None:
    """Declare folders of gin files the plugin ships as package data.

    :param register: call ``register(Path(__file__).parent / "gin")`` for each
        folder. Its files join gin's search path after the working directory,
        ``MUSICEMBED_GIN_PATH`` and the core's own folder, so
        ``include 'encoders/mert_v1_95m.gin'`` and ``--gin_file runs/x.gin`` find
        them wherever the package is installed. ``musicembed gin list`` shows them.
    """


@hookspec
def register_commands(cli: "click.Group") -> None:
    """Add subcommands to the ``musicembed`` command line (as llm's hook of that name).

    :param cli: a :class:`click.Group`; decorate functions with ``@cli.command()``
        (or ``cli.add_command(cmd)``). Import heavy modules inside the command,
        never at module level. A name a core command already has (``run``,
        ``search``, ...) is refused with an error naming the plugin.
    """


HOOK_KINDS: dict[str, str] = {
    "register_encoders": "encoders",
    "register_enrichers": "enrichers",
    "register_exporters": "exporters",
    "register_text_projectors": "projectors",
    "register_sinks": "sinks",
}
"""Hook name -> component kind (also the gin module components are bound under)."""
