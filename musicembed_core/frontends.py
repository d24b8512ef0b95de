"""STFT / mel front ends in plain torch (torchaudio is not available everywhere).

Why: encoders need log-mel features that match librosa (what most published
models were trained with), run batched on any torch device, and survive
``torch.jit.script`` so encoders can be exported to TorchScript for LibTorch.

This module imports torch at top level (``MelSpectrogram`` is an
``nn.Module``); plugin entry modules must import it lazily, inside methods.
"""


import math
from typing import Any, Optional, Union

import numpy as np
import torch

__all__ = [
    "LogMelStack",
    "MelSpectrogram",
    "amplitude_to_db",
    "hz_to_mel",
    "make_window",
    "mel_filterbank",
    "mel_to_hz",
    "power_spectrogram",
]

# Slaney's mel scale (librosa's default): linear below 1 kHz, logarithmic above.
_F_SP = 200.0 / 3
_MIN_LOG_HZ = 1000.0
_MIN_LOG_MEL = _MIN_LOG_HZ / _F_SP
_LOGSTEP = math.log(6.4) / 27.0


def hz_to_mel(f: Any, htk: bool = False) -> Any:
    """Hz -> mel (Slaney by default, HTK with ``htk=True``), like ``librosa.hz_to_mel``.

    Accepts a float, a numpy array or a torch tensor and returns the same kind.
    """
    if isinstance(f, torch.Tensor):
        f = f.to(torch.float64) if not f.is_floating_point() else f
        if htk:
            return 2595.0 * torch.log10(1.0 + f / 700.0)
        lin = f / _F_SP
        log = _MIN_LOG_MEL + torch.log(torch.clamp(f, min=_MIN_LOG_HZ) / _MIN_LOG_HZ) / _LOGSTEP
        return torch.where(f >= _MIN_LOG_HZ, log, lin)
    scalar = np.isscalar(f)
    a = np.asarray(f, dtype=np.float64)
    if htk:
        out = 2595.0 * np.log10(1.0 + a / 700.0)
    else:
        out = np.where(
            a >= _MIN_LOG_HZ,
            _MIN_LOG_MEL + np.log(np.maximum(a, _MIN_LOG_HZ) / _MIN_LOG_HZ) / _LOGSTEP,
            a / _F_SP,
        )
    return float(out) if scalar else out


def mel_to_hz(m: Any, htk: bool = False) -> Any:
    """Mel -> Hz, the inverse of :func:`hz_to_mel` (same scales and input kinds)."""
    if isinstance(m, torch.Tensor):
        m = m.to(torch.float64) if not m.is_floating_point() else m
        if htk:
            return 700.0 * (torch.pow(10.0, m / 2595.0) - 1.0)
        lin = _F_SP * m
        log = _MIN_LOG_HZ * torch.exp(_LOGSTEP * (m - _MIN_LOG_MEL))
        return torch.where(m >= _MIN_LOG_MEL, log, lin)
    scalar = np.isscalar(m)
    a = np.asarray(m, dtype=np.float64)
    if htk:
        out = 700.0 * (10.0 ** (a / 2595.0) - 1.0)
    else:
        out = np.where(a >= _MIN_LOG_MEL, _MIN_LOG_HZ * np.exp(_LOGSTEP * (a - _MIN_LOG_MEL)), _F_SP * a)
    return float(out) if scalar else out


def mel_filterbank(
    sample_rate: int,
    n_fft: int,
    n_mels: int,
    f_min: float = 0.0,
    f_max: Optional[float] = None,
    htk: bool = False,
    norm: Optional[Union[str, float]] = "slaney",
) -> torch.Tensor:
    """Triangular mel filters ``[n_mels, n_fft // 2 + 1]`` (float32), equal to ``librosa.filters.mel``.

    ``norm="slaney"`` scales each triangle to constant energy per band; a number
    ``p`` normalises each filter to unit p-norm (like librosa); ``None`` leaves
    peaks at 1. Computed in float64 and cast, as librosa does.
    """
    if f_max is None:
        f_max = sample_rate / 2.0
    fftfreqs = np.fft.rfftfreq(n=n_fft, d=1.0 / sample_rate)
    mels = np.linspace(hz_to_mel(float(f_min), htk=htk), hz_to_mel(float(f_max), htk=htk), n_mels + 2)
    mel_f = mel_to_hz(mels, htk=htk)
    fdiff = np.diff(mel_f)
    ramps = np.subtract.outer(mel_f, fftfreqs)
    lower = -ramps[:-2] / fdiff[:-1, None]
    upper = ramps[2:] / fdiff[1:, None]
    weights = np.maximum(0.0, np.minimum(lower, upper))
    if norm == "slaney":
        weights *= (2.0 / (mel_f[2 : n_mels + 2] - mel_f[:n_mels]))[:, None]
    elif norm is not None:
        if isinstance(norm, str):
            raise ValueError(f"norm must be 'slaney', a number or None, got {norm!r}")
        p = float(norm)
        if p == math.inf:
            length = np.max(np.abs(weights), axis=-1, keepdims=True)
        elif p == 0:
            length = np.sum(weights != 0, axis=-1, keepdims=True).astype(np.float64)
        else:
            length = np.sum(np.abs(weights) ** p, axis=-1, keepdims=True) ** (1.0 / p)
        tiny = np.finfo(np.float32).tiny
        weights = np.where(length < tiny, weights, weights / np.maximum(length, tiny))
    return torch.from_numpy(weights.astype(np.float32))


def make_window(window: str, win_length: int) -> torch.Tensor:
    """Periodic (DFT-even) window like ``scipy.signal.get_window``: hann, hamming, blackman, rect."""
    if window in ("hann", "hanning"):
        return torch.hann_window(win_length, periodic=True, dtype=torch.float32)
    if window == "hamming":
        return torch.hamming_window(win_length, periodic=True, dtype=torch.float32)
    if window == "blackman":
        return torch.blackman_window(win_length, periodic=True, dtype=torch.float32)
    if window in ("rect", "rectangular", "boxcar", "ones"):
        return torch.ones(win_length, dtype=torch.float32)
    raise ValueError(f"unknown window {window!r} (hann, hamming, blackman, rect)")


def _stft_power(
    wave: torch.Tensor,
    window: torch.Tensor,
    n_fft: int,
    hop_length: int,
    win_length: int,
    center: bool,
    pad_mode: str,
    power: float,
) -> torch.Tensor:
    """``|STFT|**power`` of ``[B, T]`` -> ``[B, n_fft//2+1, frames]`` (TorchScript-compatible)."""
    if center:
        pad = n_fft // 2
        if pad_mode == "constant":
            wave = torch.nn.functional.pad(wave, [pad, pad])
        else:
            wave = torch.nn.functional.pad(wave.unsqueeze(1), [pad, pad], mode=pad_mode).squeeze(1)
    spec = torch.stft(
        wave,
        n_fft=n_fft,
        hop_length=hop_length,
        win_length=win_length,
        window=window,
        center=False,
        normalized=False,
        onesided=True,
        return_complex=True,
    )
    if power == 2.0:
        ri = torch.view_as_real(spec)
        return ri[..., 0] * ri[..., 0] + ri[..., 1] * ri[..., 1]
    if power == 1.0:
        return spec.abs()
    return spec.abs().pow(power)


def power_spectrogram(
    wave: torch.Tensor,
    n_fft: int,
    hop_length: int,
    win_length: Optional[int] = None,
    window: str = "hann",
    center: bool = True,
    pad_mode: str = "constant",
    power: float = 2.0,
) -> torch.Tensor:
    """``np.abs(librosa.stft(wave, ...)) ** power`` for a batch ``[B, T]`` -> ``[B, n_fft//2+1, frames]``.

    Same framing as librosa: with ``center=True`` the signal is padded by
    ``n_fft // 2`` on both sides (``pad_mode`` "constant" = zeros, librosa's
    default, or "reflect"/"replicate"/"circular"), giving ``1 + T // hop`` frames.
    A shorter ``win_length`` window is zero-padded to ``n_fft`` in the middle.
    """
    win_length = n_fft if win_length is None else int(win_length)
    squeeze = wave.dim() == 1
    if squeeze:
        wave = wave.unsqueeze(0)
    w = make_window(window, win_length).to(device=wave.device, dtype=wave.dtype)
    out = _stft_power(wave, w, int(n_fft), int(hop_length), win_length, bool(center), pad_mode, float(power))
    return out.squeeze(0) if squeeze else out


class MelSpectrogram(torch.nn.Module):
    """``[B, T]`` waves -> ``[B, n_mels, frames]`` mel power spectrogram (librosa-equal).

    Window and filterbank are buffers, so ``.to(device)`` moves them and
    ``torch.jit.script`` / ``state_dict`` carry them. A 1-D input gives
    ``[n_mels, frames]``.
    """

    n_fft: int
    hop_length: int
    win_length: int
    center: bool
    pad_mode: str
    power: float

    def __init__(
        self,
        sample_rate: int = 16000,
        n_fft: int = 1024,
        hop_length: Optional[int] = None,
        win_length: Optional[int] = None,
        n_mels: int = 128,
        f_min: float = 0.0,
        f_max: Optional[float] = None,
        power: float = 2.0,
        center: bool = True,
        pad_mode: str = "constant",
        htk: bool = False,
        norm: Optional[str] = "slaney",
        window: str = "hann",
    ) -> None:
        super().__init__()
        if pad_mode not in ("constant", "reflect", "replicate", "circular"):
            raise ValueError(f"unsupported pad_mode {pad_mode!r}")
        self.sample_rate = int(sample_rate)
        self.n_fft = int(n_fft)
        self.hop_length = int(hop_length) if hop_length is not None else self.n_fft // 4
        self.win_length = int(win_length) if win_length is not None else self.n_fft
        if self.win_length > self.n_fft:
            raise ValueError("win_length must be <= n_fft")
        self.n_mels = int(n_mels)
        self.f_min = float(f_min)
        self.f_max = float(f_max) if f_max is not None else float(sample_rate) / 2.0
        self.power = float(power)
        self.center = bool(center)
        self.pad_mode = str(pad_mode)
        self.htk = bool(htk)
        self.norm = norm
        self.register_buffer("window", make_window(window, self.win_length))
        self.register_buffer(
            "mel_fb", mel_filterbank(self.sample_rate, self.n_fft, self.n_mels, self.f_min, self.f_max, htk, norm)
        )

    def forward(self, wave: torch.Tensor) -> torch.Tensor:
        squeeze = wave.dim() == 1
        if squeeze:
            wave = wave.unsqueeze(0)
        spec = _stft_power(
            wave.to(self.window.dtype),
            self.window,
            self.n_fft,
            self.hop_length,
            self.win_length,
            self.center,
            self.pad_mode,
            self.power,
        )
        mel = torch.matmul(self.mel_fb, spec)  # [M, K] @ [B, K, F] -> [B, M, F]
        if squeeze:
            mel = mel.squeeze(0)
        return mel


def amplitude_to_db(
    x: torch.Tensor,
    ref: float = 1.0,
    amin: float = 1e-10,
    top_db: Optional[float] = 80.0,
    multiplier: float = 10.0,
) -> torch.Tensor:
    """Power -> decibels like ``librosa.power_to_db`` (use ``multiplier=20`` for magnitudes).

    ``top_db`` clips each spectrogram (the last two dims, i.e. each batch item
    of ``[B, M, F]``) to ``max - top_db``, so a batch gives the same result as
    its items one by one. TorchScript-compatible.
    """
    log_spec = multiplier * torch.log10(torch.clamp(x, min=amin))
    log_spec = log_spec - multiplier * math.log10(max(amin, ref))
    if top_db is not None:
        if top_db < 0:
            raise ValueError("top_db must be non-negative")
        if log_spec.dim() >= 2:
            peak = log_spec.amax(dim=[-2, -1], keepdim=True)
        else:
            peak = log_spec.amax()
        log_spec = torch.maximum(log_spec, peak - top_db)
    return log_spec


class LogMelStack(torch.nn.Module):
    """The ``logmel`` encoder's computation as one scriptable module: ``[B, T]`` -> ``[2, B, F, D]``.

    ``F = T // hop_length`` (the extra frame that ``center=True`` adds at the end
    is dropped, so a chunk of ``k * hop_length`` samples gives exactly ``k``
    frames). Layer 0 is the log-mel in dB with an absolute floor ``db_floor``
    (no per-clip ``top_db``: a clip's result never depends on its batch), mapped
    by ``(db + db_offset) / db_scale``. Layer 1 is layer 0 minus its mean over the
    mel bins of each frame: the spectral shape, independent of loudness.
    """

    hop_length: int
    amin: float
    db_offset: float
    db_scale: float

    def __init__(
        self,
        sample_rate: int = 16000,
        n_fft: int = 1024,
        hop_length: int = 320,
        n_mels: int = 96,
        f_min: float = 0.0,
        f_max: Optional[float] = 8000.0,
        db_floor: float = -80.0,
        db_offset: float = 40.0,
        db_scale: float = 40.0,
    ) -> None:
        super().__init__()
        self.mel = MelSpectrogram(
            sample_rate=sample_rate,
            n_fft=n_fft,
            hop_length=hop_length,
            n_mels=n_mels,
            f_min=f_min,
            f_max=f_max,
            power=2.0,
            center=True,
            pad_mode="constant",
        )
        self.hop_length = int(hop_length)
        self.amin = float(10.0 ** (db_floor / 10.0))
        self.db_offset = float(db_offset)
        self.db_scale = float(db_scale)

    def forward(self, wave: torch.Tensor) -> torch.Tensor:
        if wave.dim() == 1:
            wave = wave.unsqueeze(0)
        n_frames = wave.shape[-1] // self.hop_length
        mel = self.mel(wave)[:, :, :n_frames]  # [B, D, F]
        db = 10.0 * torch.log10(torch.clamp(mel, min=self.amin))
        layer0 = ((db + self.db_offset) / self.db_scale).transpose(1, 2)  # [B, F, D]
        layer1 = layer0 - layer0.mean(dim=-1, keepdim=True)
        return torch.stack([layer0, layer1]).contiguous()
