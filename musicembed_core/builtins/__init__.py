"""The built-in plugin: registered like any other plugin, under the name ``builtins``.

Component modules are imported here, so they must not import torch at top level.
"""

from __future__ import annotations

from ..hookspecs import Register, hookimpl


@hookimpl
def register_encoders(register: Register) -> None:
    from .logmel import LogMelEncoder

    register(LogMelEncoder)


@hookimpl
def register_enrichers(register: Register) -> None:
    from . import enrichers

    for cls in enrichers.BUILTIN_ENRICHERS:
        register(cls)


@hookimpl
def register_exporters(register: Register) -> None:
    from .hdf5 import Hdf5Exporter
    from .safetensors_export import SafetensorsExporter
    from ..export.torchscript import TorchScriptExporter

    register(Hdf5Exporter)
    register(SafetensorsExporter)
    register(TorchScriptExporter)


@hookimpl
def register_text_projectors(register: Register) -> None:
    # Torch-free import: the class reads its checkpoint's config.json only when built.
    from ..projection.projector import TrainedProjector

    register(TrainedProjector)
