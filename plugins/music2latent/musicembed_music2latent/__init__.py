"""musicembed-music2latent: Music2Latent latents and features, and decoding latents back to audio.

``encoders.music2latent`` runs the encoder of Sony CSL Paris' consistency
autoencoder (``SonyCSLParis/music2latent``, file ``music2latent.pt``) built
from the ``music2latent`` package's own classes, loaded through
:mod:`musicembed_core.hub` with ``weights_only=True``:

* ``variant="latents"``: the 64-channel bottleneck, ``[1, B, F, 64]``, scaled as
  ``EncoderDecoder.encode`` scales it (these decode back to audio);
* ``variant="features"``: the 8192-channel pre-bottleneck features
  (``extract_features=True``), ``[1, B, F, 8192]``.

One frame per 4096 samples: 10.77 frames/s at 44.1 kHz, 11.72 at 48 kHz
(``sample_rate`` is a parameter and part of the space). ``musicembed decode``
(registered here) turns stored latents back into WAV files.

Nothing heavy is imported here: ``musicembed plugins`` imports this module only
to list the encoder.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from musicembed_core import ConfigError, Geometry, hookimpl
from musicembed_core.hub import Checkpoint, PretrainedEncoder

from .model import (
    CHECKPOINT_FILE,
    FRAME_SAMPLES,
    LEAD_SAMPLES,
    RECEPTIVE_SAMPLES,
    SUPPORTED_RATES,
)

if TYPE_CHECKING:  # pragma: no cover
    import torch

__version__ = "0.1.0"

VARIANTS = ("latents", "features")


class Music2LatentEncoder(PretrainedEncoder):
    """Music2Latent latents (64-d) or pre-bottleneck features (8192-d), ``[1, B, F, D]``.

    Windowing: ``window_seconds`` is cut down to whole latent frames the way the
    package cuts ``max_waveform_length``: ``k = floor(window * rate / 4096)`` frames
    per chunk, a chunk of ``4096 k + 1536`` samples, chunks ``4096 k`` samples apart
    (the 1536 extra samples complete the last STFT window). So a chunk's frames sit
    on the same grid as the whole track's, and the stitched frame count of a track is
    exactly what ``EncoderDecoder.encode`` returns for it. ``hop_seconds`` (optional)
    is rounded to whole frames; overlapping frames are dropped when stitching.

    The encoder's group norms take statistics over a whole chunk, so a frame depends
    a little on the chunk it was encoded in; the package does the same with its own
    60 s chunks (see the README for the measured difference per window length).
    A track shorter than 5632 samples (0.13 s) has no frame, as with the package.
    """

    name = "music2latent"
    default_model = "SonyCSLParis/music2latent"
    window_seconds = 10.0
    min_seconds = (FRAME_SAMPLES - 0.5) / 44100  # replaced per rate in resolve_geometry
    checkpoint_files = (CHECKPOINT_FILE,)
    params = {"variant": "latents", "sample_rate": 44100}

    # A constructor parameter here (part of the space), not the base's read-only view.
    sample_rate: ClassVar[int] = 44100  # type: ignore[assignment, misc]
    variant: str

    def configure(self) -> None:
        if self.variant not in VARIANTS:
            raise ConfigError(
                f"encoders.music2latent.variant must be one of {', '.join(VARIANTS)}, got {self.variant!r}"
            )
        if isinstance(self.sample_rate, bool) or self.sample_rate not in SUPPORTED_RATES:
            raise ConfigError(
                f"encoders.music2latent.sample_rate must be one of {', '.join(map(str, SUPPORTED_RATES))} "
                f"(the rates Music2Latent was trained on), got {self.sample_rate!r}"
            )
        self.sample_rate = int(self.sample_rate)
        self._gen_state: dict[str, Any] | None = None

    # -- checkpoint -------------------------------------------------------------------------
    def gen_state(self) -> dict[str, "torch.Tensor"]:
        """The checkpoint's ``gen_state_dict`` (memory-mapped; read once)."""
        if self._gen_state is None:
            from .model import read_checkpoint

            ckpt = self.checkpoint()
            self._gen_state = read_checkpoint(ckpt.file(CHECKPOINT_FILE))
        return self._gen_state

    def geometry_from_config(self, checkpoint: Checkpoint) -> dict[str, Any]:
        from .model import sizes_of

        sizes = sizes_of(self.gen_state(), checkpoint.where(self.model, CHECKPOINT_FILE))
        rate = self.sample_rate
        return {
            "sample_rate": rate,
            "frame_rate": rate / FRAME_SAMPLES,
            "num_layers": 1,
            "dim": sizes.feature_dim if self.variant == "features" else sizes.bottleneck_channels,
            # A tail after a full window is kept when it adds a frame.
            "min_seconds": (FRAME_SAMPLES - 0.5) / rate,
            "receptive_field": RECEPTIVE_SAMPLES,
        }

    def resolve_geometry(self) -> Geometry:
        found = self.geometry_from_config(self.checkpoint())
        rate = found["sample_rate"]
        frames = int(round(self.window_seconds * rate)) // FRAME_SAMPLES
        if frames < 1:
            raise ConfigError(
                f"encoders.music2latent.window_seconds={self.window_seconds} is shorter than one "
                f"latent frame ({RECEPTIVE_SAMPLES / rate:.3f} s at {rate} Hz)"
            )
        hop = frames
        if self.hop_seconds is not None:
            hop = int(round(self.hop_seconds * rate / FRAME_SAMPLES))
            if not 1 <= hop <= frames:
                raise ConfigError(
                    f"encoders.music2latent.hop_seconds={self.hop_seconds} must round to between 1 "
                    f"and {frames} latent frames ({FRAME_SAMPLES / rate:.4f} s each) for "
                    f"window_seconds={self.window_seconds}"
                )
        return Geometry(
            window_seconds=(frames * FRAME_SAMPLES + LEAD_SAMPLES) / rate,
            hop_seconds=hop * FRAME_SAMPLES / rate,
            **found,
        )

    def build_module(self, checkpoint: Checkpoint) -> "torch.nn.Module":
        from .model import build_frames_module

        module = build_frames_module(self.gen_state(), checkpoint.where(self.model, CHECKPOINT_FILE), self.variant)
        self._gen_state = None  # the encoder holds its weights now; drop the decoder's
        return module


@hookimpl
def register_encoders(register):
    register(Music2LatentEncoder)


@hookimpl
def register_gin_folders(register):
    register(Path(__file__).parent / "gin")


@hookimpl
def register_commands(cli):
    from .decode import decode_command

    cli.add_command(decode_command)
