"""Text-to-audio projectors trained into any stored embedding space.

A run's stored track vectors stay frozen; a text encoder (LoRA adapters via
``peft``) plus a projection head learn, contrastively (symmetric InfoNCE), to put
a caption near its track's vector. The result is a checkpoint folder that
``projectors.trained`` loads, so ``musicembed search --text`` works over
embeddings that have no text side of their own (MERT, MuQ, logmel, ...).

Modules: ``captions`` (caption files, joining, track-level splits),
``textmodel`` (text tower, head, checkpoints), ``losses`` / ``metrics``,
``train`` (the training loop and ``musicembed train-projector``), ``evaluate``
(``musicembed eval-projector``), ``projector`` (``projectors.trained``).

Needs the optional extra: ``pip install 'musicembed[train]'``.
"""

from __future__ import annotations

import importlib
from types import ModuleType

from ..errors import ConfigError

TRAIN_EXTRA_HINT = "pip install 'musicembed[train]'"
DEFAULT_TASK = "Given a description of music, retrieve audio that matches it"
"""What ``{task}`` in a text model's prompt becomes (``text_model.task``)."""


def require(module: str, what: str = "training text projectors") -> ModuleType:
    """Import ``module`` or fail with the install command for the ``train`` extra."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise ConfigError(
            f"{what} needs the Python package {module.split('.')[0]!r}, which is not installed "
            f"({exc}): install the extra with `{TRAIN_EXTRA_HINT}`"
        ) from exc
