"""Model export: an encoder + enricher chain as one standalone model file.

* :mod:`.target` resolves what ``musicembed export-model`` exports (an encoder
  name or a gin file, with ``--layers`` / ``--pooling`` overrides);
* :mod:`.torchscript` is the ``exporters.torchscript`` component (TorchScript for
  LibTorch), registered by the built-ins;
* :mod:`.model` is the TorchScript module it writes (windowing + encoder +
  chain + L2 normalisation).

Internal to the core: plugins add model formats by registering a
:class:`musicembed_core.ModelExporter`. This file imports nothing, so that the
component registry can import :mod:`.torchscript` without pulling in gin or the
plugin manager (no import circle).
"""

from __future__ import annotations

import os
from pathlib import Path


def metadata_path(model_path: str | os.PathLike[str]) -> Path:
    """Where a model exporter writes the metadata JSON of ``model_path`` (``x.pt`` -> ``x.json``)."""
    p = Path(model_path)
    return p.with_name(p.stem + ".json") if p.suffix else p.with_name(p.name + ".json")
