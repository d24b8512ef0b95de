"""The model ``musicembed export-model`` writes: a whole track in, its vector out.

:class:`TrackEmbedder` is scripted with ``torch.jit.script`` and saved as
TorchScript, so LibTorch (C++) runs it without Python. It does for one batch
of equal-length tracks what ``musicembed run`` does for each track:

1. cut the wave into the encoder's windows (:func:`chunk_spans`, the rule of
   ``musicembed_core.pipeline._Chunker``);
2. run the encoder on each window (all tracks of the batch together);
3. apply the chain's frame stage (layer selection) to each window's frames and
   drop the frames that overlap the previous window;
4. concatenate the frames of a track and apply the pooling and vector stages.

The enricher steps are the modules the enrichers return from
``torch_module()`` (see :mod:`musicembed_core.builtins.enricher_ops`).

This module imports torch at top level; the component module
(:mod:`musicembed_core.export.torchscript`) imports it lazily.
(No ``from __future__ import annotations``: TorchScript reads the annotations.)
"""

import torch
from torch import Tensor

from ..geometry import Geometry


def chunk_spans(total: int, window: int, hop: int, min_len: int) -> list[tuple[int, int]]:
    """``(start, stop)`` of each chunk the pipeline cuts from a track of ``total`` samples.

    Consecutive windows of ``window`` samples every ``hop``; after at least one
    full window, the remaining tail is kept when it holds at least ``min_len``
    samples not already covered by the previous window. A track shorter than a
    window is one chunk (the caller repeats it up to ``min_len`` samples when it
    is shorter than that).
    """
    if total <= 0:
        return []
    if total < window:
        return [(0, total)]
    n_full = (total - window) // hop + 1
    spans: list[tuple[int, int]] = []
    for i in range(n_full):
        spans.append((i * hop, i * hop + window))
    tail_start = n_full * hop
    if total - tail_start - (window - hop) >= min_len:
        spans.append((tail_start, total))
    return spans


def repeat_to(wave: Tensor, length: int) -> Tensor:
    """``[B, T]`` repeated along time and cut to ``length`` samples (``numpy.resize`` of each row)."""
    t = wave.size(1)
    reps = (length + t - 1) // t
    return wave.repeat(1, reps)[:, :length]


class TrackEmbedder(torch.nn.Module):
    """``[B, T]`` (or ``[T]``) mono waves at ``sample_rate`` -> ``[B, dim]`` track vectors.

    The items of a batch share one length ``T`` (pad nothing: tracks of other
    lengths go in separate calls, as in the pipeline, where padding would change
    the result). Attributes ``sample_rate``, ``dim`` and ``device`` describe the
    model to a LibTorch program; the full metadata is the file's extra file
    ``musicembed.json``.
    """

    sample_rate: int
    dim: int
    window: int
    hop: int
    min_len: int
    overlap: int
    compute_dtype: torch.dtype
    device: str

    def __init__(
        self,
        encoder: torch.nn.Module,
        frame_ops: list[torch.nn.Module],
        pool: torch.nn.Module,
        vector_ops: list[torch.nn.Module],
        geometry: Geometry,
        dim: int,
        compute_dtype: torch.dtype,
        device: str,
    ) -> None:
        """``geometry``: the encoder's; its sample counts become the module's int attributes
        (TorchScript and LibTorch read those), so the windowing is the pipeline's."""
        super().__init__()
        self.encoder = encoder
        self.frame_ops = torch.nn.ModuleList(frame_ops)
        self.pool = pool
        self.vector_ops = torch.nn.ModuleList(vector_ops)
        self.sample_rate = geometry.sample_rate
        self.dim = int(dim)
        self.window = geometry.window_samples
        self.hop = geometry.hop_samples
        self.min_len = geometry.min_samples
        self.overlap = geometry.overlap_frames
        self.compute_dtype = compute_dtype
        self.device = str(device)

    def frames_of(self, chunk: Tensor) -> Tensor:
        """Encoder frames ``[L, B, F, D]`` (float32) of equal-length chunks ``[B, t]``."""
        out = self.encoder(chunk.to(self.compute_dtype))
        if out.dim() != 4 or out.size(1) != chunk.size(0):
            raise RuntimeError(
                "the encoder returned shape " + str(out.shape) + " for a batch of "
                + str(chunk.size(0)) + "; expected [L, B, F, D]"
            )
        return out.to(torch.float32)

    def forward(self, wave: Tensor) -> Tensor:
        if wave.dim() == 1:
            wave = wave.unsqueeze(0)
        if wave.dim() != 2:
            raise ValueError(
                "expected mono waves [B, T] (or one wave [T]), got " + str(wave.dim()) + " dims"
            )
        wave = wave.to(torch.float32)
        batch = wave.size(0)
        total = wave.size(1)
        if total == 0:
            raise ValueError("the wave has no samples")
        tracks: list[list[Tensor]] = [[] for _ in range(batch)]
        spans = chunk_spans(total, self.window, self.hop, self.min_len)
        for index, span in enumerate(spans):
            chunk = wave[:, span[0] : span[1]]
            if total < self.min_len:
                chunk = repeat_to(chunk, self.min_len)
            out = self.frames_of(chunk)
            for b in range(batch):
                frames = out[:, b]
                for op in self.frame_ops:
                    frames = op(frames)
                if index > 0 and self.overlap > 0:
                    frames = frames[:, self.overlap :]
                tracks[b].append(frames)
        vectors: list[Tensor] = []
        for b in range(batch):
            frames = torch.cat(tracks[b], dim=1)
            if frames.size(1) == 0:
                raise ValueError(
                    "the encoder gave no frames for this wave (" + str(total)
                    + " samples): it is too short"
                )
            vector = self.pool(frames)
            for op in self.vector_ops:
                vector = op(vector)
            if vector.dim() != 1:
                raise RuntimeError("the enricher chain did not produce one vector per track")
            vectors.append(vector)
        return torch.stack(vectors)
