"""musicembed-mert: the MERT music encoders (m-a-p/MERT-v0-public, -v1-95M, -v1-330M).

``encoders.mert`` loads a released MERT checkpoint (Hugging Face repo id +
revision, or a local folder) into transformers' ``HubertModel`` without
``trust_remote_code`` and returns every hidden state: ``[L, B, F, D]`` with
L = transformer layers + 1.

Nothing heavy is imported here: ``musicembed plugins`` imports this module only
to list the encoder. torch and transformers load in :meth:`MertEncoder.load`.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from musicembed_core import hookimpl
from musicembed_core.hub import Checkpoint, PretrainedEncoder

from .config import (
    ARCHITECTURE_DEFAULTS,
    check_supported,
    do_normalize_of,
    hop_of,
    receptive_field_of,
    sample_rate_of,
)

if TYPE_CHECKING:  # pragma: no cover
    import torch

__version__ = "0.1.0"


class MertEncoder(PretrainedEncoder):
    """MERT hidden states of raw waveforms (all layers, ``[L, B, F, D]``).

    ``normalize``: per-clip zero-mean/unit-variance input normalisation. ``None``
    (default) does what the checkpoint's preprocessor_config.json says
    (``do_normalize``); ``True``/``False`` overrides it. The choice is part of
    the embedding space.

    Chunks of one batch must have equal lengths (the pipeline guarantees it): the
    group-norm front end normalises over the whole chunk, so zero padding would
    change every frame of the padded item.
    """

    name = "mert"
    default_model = "m-a-p/MERT-v1-95M"
    window_seconds = 5.0  # MERT's pre-training context
    min_seconds = 0.1

    params = {"normalize": None}

    def configure(self) -> None:
        if self.normalize is not None and not isinstance(self.normalize, bool):
            raise ValueError(
                f"encoders.mert.normalize must be true, false or None, got {self.normalize!r}"
            )

    def do_normalize(self) -> bool:
        """Input normalisation: the override, else the checkpoint's preprocessor_config.json."""
        if self.normalize is not None:
            return self.normalize
        return do_normalize_of(self.checkpoint().read_json("preprocessor_config.json", required=False))

    def geometry_from_config(self, checkpoint: Checkpoint) -> dict[str, Any]:
        cfg = checkpoint.read_json("config.json")
        pre = checkpoint.read_json("preprocessor_config.json", required=False)
        where = checkpoint.where(self.model)
        check_supported(cfg, where)  # refuse before any weights are read
        rate = sample_rate_of(cfg, pre, where)
        layers = int(cfg.get("num_hidden_layers", ARCHITECTURE_DEFAULTS["num_hidden_layers"]))
        return {
            "sample_rate": rate,
            "frame_rate": rate / hop_of(cfg),
            "num_layers": layers + 1,
            "dim": int(cfg.get("hidden_size", ARCHITECTURE_DEFAULTS["hidden_size"])),
            "min_seconds": max(0.1, receptive_field_of(cfg) / rate),
            "receptive_field": receptive_field_of(cfg),
        }

    def signature(self) -> dict[str, Any]:
        sig = super().signature()
        sig["input_normalization"] = "zero_mean_unit_var" if self.do_normalize() else "none"
        return sig

    def build_module(self, checkpoint: Checkpoint) -> torch.nn.Module:
        from musicembed_core.hub import hidden_states_module

        from .model import build_hubert

        return hidden_states_module(build_hubert(checkpoint, checkpoint.where(self.model)),
                                    normalize=self.do_normalize())


@hookimpl
def register_encoders(register):
    register(MertEncoder)


@hookimpl
def register_gin_folders(register):
    register(Path(__file__).parent / "gin")
