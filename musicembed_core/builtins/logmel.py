"""``logmel``: the built-in, weight-free encoder.

Why: a baseline that needs no downloads, runs far faster than real time on a
CPU and gives meaningful (timbre / spectral-envelope) similarity, so the
quickstart, the tests and the exporters work out of the box.

Output ``[L=2, B, F, D=n_mels]`` at ``sample_rate / hop_length`` frames/s:

* layer 0: log-mel power in dB with an absolute floor of -80 dB (no per-clip
  ``top_db``, so a clip's frames never depend on the other clips in its batch),
  mapped by ``(dB + 40) / 40``: -80 dB -> -1, -40 dB -> 0, 0 dB -> 1 (a
  full-scale sine peaks near +34 dB, i.e. about 1.85).
* layer 1: layer 0 minus its mean over the mel bins of each frame: the spectral
  shape, invariant to loudness (gain changes shift layer 0 only).

This module imports neither torch nor numpy at top level: it is imported when
plugins are listed, which must be fast.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..components import Encoder

if TYPE_CHECKING:  # pragma: no cover
    import torch


class LogMelEncoder(Encoder):
    """Log-mel spectrogram frames (and their loudness-normalised shape) as embeddings."""

    name = "logmel"

    DB_FLOOR = -80.0
    DB_OFFSET = 40.0
    DB_SCALE = 40.0

    def __init__(
        self,
        sample_rate: int = 16000,
        n_mels: int = 96,
        n_fft: int = 1024,
        hop_length: int = 320,
        window_seconds: float = 10.0,
        hop_seconds: float | None = None,
        f_min: float = 0.0,
        f_max: float | None = 8000.0,
        device: str = "cpu",
    ) -> None:
        if sample_rate <= 0 or n_mels <= 0 or n_fft <= 0 or hop_length <= 0:
            raise ValueError("sample_rate, n_mels, n_fft and hop_length must be positive")
        if f_max is not None and f_max > sample_rate / 2:
            raise ValueError(f"f_max={f_max} is above the Nyquist frequency {sample_rate / 2}")
        if window_seconds <= 0 or (hop_seconds is not None and hop_seconds <= 0):
            raise ValueError("window_seconds and hop_seconds must be positive")
        self.sample_rate = int(sample_rate)
        self.n_mels = int(n_mels)
        self.n_fft = int(n_fft)
        self.hop_length = int(hop_length)
        self.window_seconds = float(window_seconds)
        self.hop_seconds = None if hop_seconds is None else float(hop_seconds)
        self.f_min = float(f_min)
        self.f_max = None if f_max is None else float(f_max)
        self.device = str(device)
        self.frame_rate = self.sample_rate / self.hop_length
        self.num_layers = 2
        self.dim = self.n_mels
        self._module: Any = None

    def module(self) -> "torch.nn.Module":
        """The whole computation as a TorchScript-able ``nn.Module`` (``[B, T] -> [2, B, F, D]``)."""
        self.load()
        return self._module

    def load(self) -> None:
        """Build the mel front end (no weights to fetch); idempotent."""
        if self._module is not None:
            return
        from ..frontends import LogMelStack

        self._module = (
            LogMelStack(
                sample_rate=self.sample_rate,
                n_fft=self.n_fft,
                hop_length=self.hop_length,
                n_mels=self.n_mels,
                f_min=self.f_min,
                f_max=self.f_max,
                db_floor=self.DB_FLOOR,
                db_offset=self.DB_OFFSET,
                db_scale=self.DB_SCALE,
            )
            .to(self.device)
            .eval()
        )

    def encode(self, wave: "torch.Tensor") -> "torch.Tensor":
        """``[B, T]`` mono waves -> ``[2, B, T // hop_length, n_mels]`` float32 on ``device``."""
        import torch

        self.load()
        with torch.inference_mode():
            x = torch.as_tensor(wave, dtype=torch.float32, device=self.device)
            if x.dim() == 1:
                x = x.unsqueeze(0)
            if x.dim() != 2:
                raise ValueError(f"expected waves [B, T], got shape {tuple(x.shape)}")
            return self._module(x)
