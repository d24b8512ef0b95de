"""Symmetric InfoNCE between captions and their tracks' audio vectors.

A batch holds ``N`` pairs ``(text_i, audio_i)``; ``groups[i]`` names pair ``i``'s track.
Logits are cosine similarities over ``temperature`` (both sides are L2-normalised by
the caller). Text->audio: row ``i`` of ``text @ audio.T`` is a softmax over the batch's
audio vectors whose target is column ``i``; audio->text is the same over the columns.
The loss is the mean of both directions.

Two captions of one track in a batch (a main caption and its alternative, or two
Song Describer captions) carry the same audio vector: treating them as negatives
of each other would push a caption away from its own track. So in each row the
*other* entries of the same track are masked out of the softmax (set to -inf); the
pair's own entry stays the positive. A row whose only entry left is its positive
contributes 0 (``log 1``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pragma: no cover
    from torch import Tensor

__all__ = ["info_nce", "same_track_mask"]


def same_track_mask(groups: "Tensor") -> "Tensor":
    """``[N, N]`` bool: True where ``i != j`` and pairs ``i`` and ``j`` share a track."""
    import torch

    same = groups.view(-1, 1) == groups.view(1, -1)
    return same & ~torch.eye(len(groups), dtype=torch.bool, device=groups.device)


def info_nce(text: "Tensor", audio: "Tensor", groups: "Tensor", temperature: float = 0.07) -> "Tensor":
    """Mean of text->audio and audio->text cross-entropy over one batch (see the module doc).

    ``text``, ``audio``: ``[N, D]`` L2-normalised rows, row ``i`` of each forming pair ``i``;
    ``groups``: ``[N]`` integer track index of each pair. Computed in float32 (also
    under bf16 autocast).
    """
    import torch
    import torch.nn.functional as F

    if text.shape != audio.shape or text.dim() != 2:
        raise ValueError(f"info_nce: text {tuple(text.shape)} and audio {tuple(audio.shape)} "
                         f"must both be [N, D]")
    if groups.shape != (text.shape[0],):
        raise ValueError(f"info_nce: groups has shape {tuple(groups.shape)}, expected ({text.shape[0]},)")
    if not temperature > 0:
        raise ValueError(f"info_nce: temperature must be > 0, got {temperature!r}")
    logits = (text.float() @ audio.float().T) / float(temperature)
    logits = logits.masked_fill(same_track_mask(groups.to(logits.device)), float("-inf"))
    target = torch.arange(len(groups), device=logits.device)
    t2a = F.cross_entropy(logits, target)
    a2t = F.cross_entropy(logits.T, target)
    return (t2a + a2t) / 2
