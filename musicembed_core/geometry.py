"""An encoder's geometry: one frozen value, resolved once, passed everywhere.

Sample rate, frame rate, layer stack shape and windowing used to be loose
attributes and ints converted to sample counts in several places (pipeline,
TorchScript exporter, exported model). :class:`Geometry` holds them together
with the derived sample counts, so the chunker, the stitcher, the enricher
chain and the exporters all read the same numbers.

Imports nothing heavy: plugin entry modules may use it at import time.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from .errors import ConfigError


@dataclass(frozen=True)
class Geometry:
    """What an encoder consumes and produces.

    An encoder maps equal-length mono waves ``[B, T]`` at :attr:`sample_rate`
    to a layer stack ``[L, B, F, D]`` with ``L = num_layers``, ``D = dim`` and
    ``F = frames_for(T)``.
    """

    sample_rate: int
    """Input rate in Hz; the pipeline resamples to it (once per distinct rate)."""
    frame_rate: float
    """Output frames per second of audio."""
    num_layers: int
    """L in ``[L, B, F, D]``."""
    dim: int
    """D in ``[L, B, F, D]``."""
    window_seconds: float
    """Context window: audio is cut into chunks of this length."""
    hop_seconds: float | None = None
    """Distance between chunk starts; ``None`` means equal to the window (no overlap)."""
    min_seconds: float = 0.1
    """Shortest chunk the model accepts. A shorter track is repeated (tiled) up to it;
    a shorter tail after at least one full window is dropped."""
    receptive_field: int | None = field(default=None)
    """Samples one output frame sees, for models whose frames come from a stack of
    unpadded strided convolutions (wav2vec2/HuBERT-style): then
    ``F = (T - receptive_field) // frame_hop + 1``. ``None``: ``F = T // frame_hop``
    (an STFT that drops its last, padded frame; most spectrogram front ends)."""

    def __post_init__(self) -> None:
        def positive(name: str, value: Any) -> None:
            if not isinstance(value, (int, float)) or isinstance(value, bool) or value <= 0:
                raise ConfigError(f"encoder geometry: {name}={value!r} must be a positive number")

        for name in ("sample_rate", "frame_rate", "num_layers", "dim", "window_seconds"):
            positive(name, getattr(self, name))
        if self.hop_seconds is not None:
            positive("hop_seconds", self.hop_seconds)
        if self.min_seconds < 0:
            raise ConfigError(f"encoder geometry: min_seconds={self.min_seconds!r} must be >= 0")
        if self.receptive_field is not None:
            positive("receptive_field", self.receptive_field)
        # Normalise the types once, so signatures and hashes are stable.
        object.__setattr__(self, "sample_rate", int(self.sample_rate))
        object.__setattr__(self, "num_layers", int(self.num_layers))
        object.__setattr__(self, "dim", int(self.dim))
        object.__setattr__(self, "frame_rate", float(self.frame_rate))
        object.__setattr__(self, "window_seconds", float(self.window_seconds))
        object.__setattr__(self, "min_seconds", float(self.min_seconds))
        if self.hop_seconds is not None:
            object.__setattr__(self, "hop_seconds", float(self.hop_seconds))

    # ------------------------------------------------------------------ derived sample counts
    @property
    def window_samples(self) -> int:
        """Samples per chunk."""
        return max(1, int(round(self.window_seconds * self.sample_rate)))

    @property
    def hop_samples(self) -> int:
        """Samples between chunk starts (at most a window)."""
        hop = int(round((self.hop_seconds or self.window_seconds) * self.sample_rate))
        return min(max(1, hop), self.window_samples)

    @property
    def min_samples(self) -> int:
        """Shortest chunk the model accepts, in samples (at least 1)."""
        return max(1, int(math.ceil(self.min_seconds * self.sample_rate)))

    @property
    def overlap_frames(self) -> int:
        """Frames of a chunk that repeat the previous chunk's (dropped when stitching)."""
        overlap = self.window_samples - self.hop_samples
        return int(round(overlap / self.sample_rate * self.frame_rate))

    @property
    def frame_hop(self) -> float:
        """Samples between consecutive output frames."""
        return self.sample_rate / self.frame_rate

    def frames_for(self, num_samples: int) -> int:
        """How many frames the encoder returns for ``num_samples`` input samples."""
        n = int(num_samples)
        hop = self.frame_hop
        if abs(hop - round(hop)) > 1e-6:  # a fractional frame hop: only the rate is known
            return int(math.floor(n * self.frame_rate / self.sample_rate + 1e-9))
        hop = int(round(hop))
        if self.receptive_field is None:
            return n // hop
        if n < self.receptive_field:
            return 0
        return (n - self.receptive_field) // hop + 1

    # ------------------------------------------------------------------ identity
    def signature(self) -> dict[str, Any]:
        """The fields that go into an embedding space's encoder signature."""
        return {
            "sample_rate": self.sample_rate,
            "frame_rate": self.frame_rate,
            "num_layers": self.num_layers,
            "dim": self.dim,
            "window_seconds": self.window_seconds,
            "hop_seconds": self.hop_seconds,
        }
