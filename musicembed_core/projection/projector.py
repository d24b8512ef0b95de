"""``projectors.trained``: a projector checkpoint (``musicembed train-projector``) as a TextProjector.

Constructing it reads the checkpoint's config.json only (no torch): ``dim`` and
:meth:`TrainedProjector.target` come from it, so ``musicembed run`` / ``search``
check the embedding space before any weights are loaded. The target is the
stored space itself: the projector is refused, with the fields that differ, for
any other encoder, weights, window or enricher chain.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..components import TextProjector
from ..errors import ConfigError
from .checkpoint import read_config, target_signature

if TYPE_CHECKING:  # pragma: no cover
    import torch


class TrainedProjector(TextProjector):
    """Text -> unit vectors in the audio space a projector checkpoint was trained for.

    ``checkpoint``: the checkpoint folder (``OUTDIR/best_r1``, ``OUTDIR/last``, ...).
    ``device``: where the text model runs (``cpu``, ``cuda``, ``auto``).
    ``batch_size``: texts per forward pass (vectors do not depend on it).
    """

    name = "trained"
    runtime_params = TextProjector.runtime_params | {"batch_size"}

    def __init__(self, checkpoint: str = "", device: str = "cpu", batch_size: int = 64) -> None:
        self.batch_size = self.checked_batch_size(batch_size)
        self.checkpoint = str(Path(checkpoint).expanduser().absolute()) if checkpoint else ""
        self.device = device
        # A bad folder fails here, when gin builds the run; no folder fails at first use.
        self._config: dict[str, Any] | None = read_config(self.checkpoint) if checkpoint else None
        self._model: Any = None

    def config_json(self) -> dict[str, Any]:
        """The checkpoint's config.json (text model, head, target space, training facts)."""
        if self._config is None:
            raise ConfigError(
                "projectors.trained.checkpoint is not set: give the folder `musicembed train-projector` "
                "wrote (e.g. --gin_param \"projectors.trained.checkpoint='OUT/best_r1'\", or "
                "`musicembed search --projector OUT/best_r1`)"
            )
        return self._config

    @property  # type: ignore[override]
    def dim(self) -> int:
        return int(self._config["head"]["audio_dim"]) if self._config is not None else 0

    def signature(self) -> dict[str, Any]:
        """Name, folder and the weights' checksum: retraining into the same folder is another projector."""
        sig = super().signature()
        if self._config is not None:
            sig["weights"] = self._config.get("weights_sha256")
            sig["target_space"] = self._config["target_space"].get("hash")
        return sig

    def target(self) -> dict[str, Any]:
        return {"space": target_signature(self.config_json())}

    def load(self) -> None:
        if self._model is not None:
            return
        from ..hub import resolve_device
        from .textmodel import load_projector

        self.config_json()
        model, cfg = load_projector(self.checkpoint, device=resolve_device(self.device))
        self._config = cfg
        self._model = model

    def embed_text(self, texts: list[str]) -> "torch.Tensor":
        return self.embed_batched(texts, self.batch_size, lambda batch: self._model(batch))
