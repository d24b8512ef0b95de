"""A complete third-party musicembed plugin in one module.

* ``encoders.chroma``: 12 pitch-class energies per frame (weight-free).
* ``enrichers.percentile``: the q-th percentile of each dimension over time.
* ``musicembed chroma FILE``: a subcommand printing a file's pitch-class profile.

Nothing heavy is imported at module level: ``musicembed plugins`` imports this
module just to list what it provides (click is light; torch is imported inside
the methods and the command).
"""

from __future__ import annotations

import click

from musicembed_core import Encoder, Enricher, hookimpl

PITCH_CLASSES = ("C", "C#", "D", "D#", "E", "F", "F#", "G", "G#", "A", "A#", "B")


class ChromaEncoder(Encoder):
    """Chromagram: STFT power folded onto the 12 pitch classes, per frame."""

    name = "chroma"

    def __init__(
        self,
        sample_rate: int = 22050,
        n_fft: int = 4096,
        hop_length: int = 2205,
        window_seconds: float = 20.0,
        f_min: float = 55.0,
        f_max: float = 5000.0,
    ) -> None:
        self.sample_rate = sample_rate
        self.n_fft = n_fft
        self.hop_length = hop_length
        self.window_seconds = window_seconds
        self.f_min = f_min
        self.f_max = f_max
        self.frame_rate = sample_rate / hop_length
        self.num_layers = 1
        self.dim = 12
        self.min_seconds = n_fft / sample_rate
        self._fold = None

    def load(self) -> None:
        import torch

        if self._fold is not None:
            return
        freqs = torch.linspace(0, self.sample_rate / 2, self.n_fft // 2 + 1)
        fold = torch.zeros(12, freqs.numel())
        ok = (freqs >= self.f_min) & (freqs <= self.f_max)
        # MIDI pitch of each bin -> pitch class (C = 0).
        pitch = 69 + 12 * torch.log2(freqs.clamp(min=1e-3) / 440.0)
        pc = torch.round(pitch).long() % 12
        fold[pc[ok], torch.nonzero(ok).squeeze(1)] = 1.0
        self._fold = fold

    def encode(self, wave):  # [B, T] -> [1, B, F, 12]
        import torch

        from musicembed_core.frontends import power_spectrogram

        self.load()
        with torch.inference_mode():
            spec = power_spectrogram(wave, n_fft=self.n_fft, hop_length=self.hop_length)
            frames = wave.shape[-1] // self.hop_length
            spec = spec[..., :max(frames, 1)]  # [B, bins, F]
            chroma = torch.einsum("cb,nbf->nfc", self._fold, spec)
            chroma = chroma / chroma.amax(dim=-1, keepdim=True).clamp(min=1e-8)
            return chroma.unsqueeze(0)


class PercentileEnricher(Enricher):
    """q-th percentile over frames of each layer and dim: ``[L, F, D] -> [L, D]``.

    It only implements ``enrich``: the core's default streaming keeps the
    track's frames and calls it once at the end.
    """

    name = "percentile"
    stage = "pool"

    def __init__(self, q: float = 90.0) -> None:
        if not 0.0 <= q <= 100.0:
            raise ValueError(f"enrichers.percentile.q must be within [0, 100], got {q}")
        self.q = q

    def enrich(self, x):
        import torch

        return torch.quantile(x.float(), self.q / 100.0, dim=1)


@hookimpl
def register_encoders(register):
    register(ChromaEncoder)


@hookimpl
def register_enrichers(register):
    register(PercentileEnricher)


@hookimpl
def register_commands(cli):
    @cli.command(name="chroma")
    @click.argument("audio", type=click.Path(exists=True, dir_okay=False))
    @click.option("--json", "as_json", is_flag=True, help="Print the profile as JSON.")
    def chroma_command(audio: str, as_json: bool) -> None:
        """Pitch-class profile of an audio file (WAV, FLAC, OGG): mean chroma over time.

        \b
        Example:
          musicembed chroma examples/audio/rock/a.wav
        """
        import json

        import torch

        from musicembed_core.audio import load_audio  # any format, mono, resampled

        enc = ChromaEncoder()
        mono = load_audio(audio, enc.sample_rate)
        profile = enc.encode(torch.from_numpy(mono).unsqueeze(0))[0, 0].mean(0)
        profile = (profile / profile.max().clamp(min=1e-8)).tolist()
        strongest = PITCH_CLASSES[max(range(12), key=profile.__getitem__)]
        if as_json:
            click.echo(json.dumps({"file": audio, "strongest": strongest,
                                   "profile": dict(zip(PITCH_CLASSES, profile))}))
            return
        for pc, value in zip(PITCH_CLASSES, profile):
            click.echo(f"{pc:<2} {'#' * round(40 * value)}")
        click.echo(f"strongest pitch class: {strongest}")
