"""musicembed-clap-musicgen: CLAP-MusicGen audio and text embeddings in one 1024-d space.

``encoders.clap_musicgen`` turns each window of mono 32 kHz audio (15 s by default,
the length the model was trained on) into one unit vector; ``projectors.clap_musicgen``
turns text into a vector of the same space, so ``musicembed search --text "dark
metal"`` works against a run made with this encoder and its shipped chain (mean over
windows, L2 re-normalised), and is refused, naming why, against any other space.

Both towers come from one checkpoint (``yuhuacheng/clap-musicgen``), built from
transformers parts (``EncodecModel``, ``MusicgenDecoder``, ``RobertaModel``) and loaded
strictly through :mod:`musicembed_core.hub`; the tokenizer comes from
``yuhuacheng/clap-roberta-finetuned``. See :mod:`.model` and the README.

Nothing heavy is imported here: ``musicembed plugins`` imports this module only to
list the components.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import TYPE_CHECKING, Any

from musicembed_core import ConfigError, Geometry, TextProjector, hookimpl
from musicembed_core.hub import (
    Checkpoint,
    PretrainedEncoder,
    check_dtype,
    resolve_checkpoint,
    resolve_device,
    resolve_dtype,
)

if TYPE_CHECKING:  # pragma: no cover
    import torch

__version__ = "0.1.0"

DEFAULT_MODEL = "yuhuacheng/clap-musicgen"
DEFAULT_TOKENIZER = "yuhuacheng/clap-roberta-finetuned"
TOKENIZER_FILES = ("vocab.json", "merges.txt", "tokenizer*.json", "special_tokens_map*.json",
                   "added_tokens*.json")
"""What the tokenizer repo must hold (vocab + merges) and may hold (the JSON configs)."""
SHIPPED_CHAIN = ("layers", "mean", "flatten", "l2_normalize")
"""The enricher chain of gin/runs/clap_musicgen.gin (``enrichers/mean.gin``'s MEAN): with
one vector per window this is the mean of the window vectors, re-normalised."""
MIN_FRACTION = 1 / 3
"""``min_seconds`` is a third of the window (5 s of the default 15 s), see the encoder."""


class ClapMusicgenEncoder(PretrainedEncoder):
    """CLAP-MusicGen audio tower: waves ``[B, T]`` at 32 kHz -> ``[1, B, 1, 1024]``.

    One unit vector per window: the MusicGen decoder's last step attends causally to
    the whole window, so the window is the unit the model embeds (trained on 15 s).
    Geometry: one frame per chunk of any length the pipeline sends. ``frame_rate`` is
    one frame per window and ``receptive_field`` is ``min_samples``, so
    ``frames_for(T) = 1`` for ``min_samples <= T < window + min_samples``. A tail
    shorter than ``min_seconds`` (a third of the window) after a full window is
    dropped: its vector would weigh as much as a whole window's in the track mean; a
    track shorter than that is tiled up to it by the pipeline. ``hop_seconds`` may
    overlap windows by less than half a window (more would make the stitcher drop the
    only frame of a chunk).
    """

    name = "clap_musicgen"
    default_model = DEFAULT_MODEL
    window_seconds = 15.0

    def _config(self) -> dict[str, Any]:
        from .model import clap_config

        return clap_config(self.checkpoint())

    def geometry_from_config(self, checkpoint: Checkpoint) -> dict[str, Any]:
        from .model import projection_sizes, sample_rate_of

        cfg = self._config()
        return {"sample_rate": sample_rate_of(cfg), "num_layers": 1,
                "dim": projection_sizes(cfg["audio_encoder_config"])[1]}

    def resolve_geometry(self) -> Geometry:
        found = self.geometry_from_config(self.checkpoint())
        rate = found["sample_rate"]
        window = int(round(self.window_seconds * rate))
        draft = Geometry(window_seconds=self.window_seconds, hop_seconds=self.hop_seconds,
                         frame_rate=rate / max(window, 1), min_seconds=self.window_seconds * MIN_FRACTION,
                         **found)
        geo = dataclasses.replace(draft, receptive_field=draft.min_samples)
        if geo.overlap_frames:
            raise ConfigError(
                f"encoders.clap_musicgen.hop_seconds={self.hop_seconds} overlaps windows by more "
                f"than half a window ({self.window_seconds} s): each window gives one vector, so "
                f"use hop_seconds >= {self.window_seconds / 2}"
            )
        return geo

    def build_module(self, checkpoint: Checkpoint) -> "torch.nn.Module":
        from .model import build_audio_tower

        return build_audio_tower(checkpoint, checkpoint.where(self.model))


class ClapMusicgenProjector(TextProjector):
    """CLAP-MusicGen text tower: strings -> ``[N, 1024]`` unit vectors in the audio space.

    :meth:`target` is the encoder's own identity (name, model, resolved weights) and
    the shipped chain, so the check passes exactly for runs made with
    ``encoders.clap_musicgen`` on the same checkpoint and ``enrichers/mean.gin``.
    """

    name = "clap_musicgen"
    runtime_params = TextProjector.runtime_params | {"cache_dir", "batch_size"}

    def __init__(
        self,
        model: str = DEFAULT_MODEL,
        revision: str | None = None,
        tokenizer: str = DEFAULT_TOKENIZER,
        tokenizer_revision: str | None = None,
        device: str = "cpu",
        dtype: str = "float32",
        cache_dir: str | None = None,
        batch_size: int = 64,
    ) -> None:
        self.model = model
        self.revision = revision
        self.tokenizer = tokenizer
        self.tokenizer_revision = tokenizer_revision
        self.device = device
        self.dtype = check_dtype(dtype, "projectors.clap_musicgen.dtype")
        self.cache_dir = cache_dir
        self.batch_size = self.checked_batch_size(batch_size)
        self._encoder = ClapMusicgenEncoder(model=model, revision=revision, cache_dir=cache_dir)
        self._tower: Any = None
        self._tok: Any = None
        self._max_len = 0

    @property  # type: ignore[override]
    def dim(self) -> int:
        """The text head's output size, from the checkpoint's config.json."""
        from .model import projection_sizes

        return projection_sizes(self._encoder._config()["text_encoder_config"])[1]

    def target(self) -> dict[str, Any]:
        return self.tied_to(self._encoder, SHIPPED_CHAIN)

    def load(self) -> None:
        if self._tower is not None:
            return
        from .model import build_text_tower, text_limits, tokenizer_from

        ckpt = self._encoder.checkpoint()
        device = resolve_device(self.device)
        tower = build_text_tower(ckpt, ckpt.where(self.model))
        tower = tower.to(device=device, dtype=resolve_dtype(self.dtype)).eval().requires_grad_(False)
        tok_ckpt = resolve_checkpoint(self.tokenizer, self.tokenizer_revision, self.cache_dir,
                                      files=TOKENIZER_FILES)
        self._tok = tokenizer_from(tok_ckpt.path, tok_ckpt.where(self.tokenizer))
        self._max_len = text_limits(self._encoder._config())
        self._device = device
        self._tower = tower

    def embed_text(self, texts: list[str]) -> "torch.Tensor":
        return self.embed_batched(texts, self.batch_size, self._embed_batch)

    def _embed_batch(self, texts: list[str]) -> "torch.Tensor":
        batch = self._tok(texts, padding=True, truncation=True, max_length=self._max_len,
                          return_tensors="pt")
        return self._tower(batch["input_ids"].to(self._device), batch["attention_mask"].to(self._device))


@hookimpl
def register_encoders(register):
    register(ClapMusicgenEncoder)


@hookimpl
def register_text_projectors(register):
    register(ClapMusicgenProjector)


@hookimpl
def register_gin_folders(register):
    register(Path(__file__).parent / "gin")
