"""Retrieval metrics of a text->audio projector on a captioned set of tracks.

* **t2a** (text -> audio): one query per caption, ranked against every track of the
  set (each track once); the rank is that of the caption's own track.
* **a2t** (audio -> text): one query per track, ranked against every caption of the
  set; a track's rank is the best rank of any of its captions.

Reported per direction: ``R@1``, ``R@5``, ``R@10`` (fraction of queries whose rank is
at most k), ``MRR`` (mean of 1/rank), ``median_rank``, plus ``queries`` and
``candidates`` counts and the ``R@10`` a random ranking would get (``chance_R@10``:
``min(10, T) / T`` for t2a over ``T`` tracks; for a2t, the chance that one of the
track's captions lands in a random top 10, averaged over tracks).

Ties count against the query: a rank is 1 + the number of wrong candidates scoring
at least as high as the right one (a model that scores everything equal ranks
last, never first). Scores are dot products of L2-normalised vectors (cosine).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Sequence

if TYPE_CHECKING:  # pragma: no cover
    import numpy as np

__all__ = ["KS", "a2t_ranks", "flatten", "ranking_metrics", "retrieval_metrics", "t2a_ranks"]

KS: tuple[int, ...] = (1, 5, 10)
_CHUNK = 1024
"""Queries scored at once: memory holds ``_CHUNK x candidates`` scores."""


def _as_array(x: Any) -> "np.ndarray":
    import numpy as np

    if hasattr(x, "detach"):
        x = x.detach().to("cpu").float().numpy()
    return np.asarray(x, dtype=np.float32)


def t2a_ranks(text: Any, caption_track: Sequence[int], audio: Any) -> "np.ndarray":
    """1-based rank of each caption's track among all ``audio`` rows (int64 ``[captions]``).

    ``text``: ``[C, D]``; ``caption_track[c]``: row of ``audio`` (``[T, D]``) caption ``c`` describes.
    """
    import numpy as np

    text, audio = _as_array(text), _as_array(audio)
    owner = np.asarray(caption_track, dtype=np.int64)
    ranks = np.empty(len(owner), dtype=np.int64)
    for start in range(0, len(owner), _CHUNK):
        rows = slice(start, start + _CHUNK)
        scores = text[rows] @ audio.T                                  # [c, T]
        own = scores[np.arange(scores.shape[0]), owner[rows]][:, None]
        # every track scoring >= the right one, the right one itself included once
        ranks[rows] = (scores >= own).sum(axis=1)
    return ranks


def a2t_ranks(text: Any, caption_track: Sequence[int], audio: Any) -> "np.ndarray":
    """1-based rank of each track's best caption among all captions (int64 ``[tracks]``).

    A track without a caption in ``caption_track`` cannot be ranked: ValueError.
    """
    import numpy as np

    text, audio = _as_array(text), _as_array(audio)
    owner = np.asarray(caption_track, dtype=np.int64)
    n_tracks = audio.shape[0]
    counts = np.bincount(owner, minlength=n_tracks)
    if (counts == 0).any():
        missing = np.flatnonzero(counts == 0)[:5].tolist()
        raise ValueError(f"a2t ranks: tracks {missing} have no caption")
    ranks = np.empty(n_tracks, dtype=np.int64)
    for start in range(0, n_tracks, _CHUNK):
        rows = np.arange(start, min(start + _CHUNK, n_tracks))
        scores = audio[rows] @ text.T                                  # [t, C]
        mine = owner[None, :] == rows[:, None]                         # its own captions
        best = np.where(mine, scores, -np.inf).max(axis=1, keepdims=True)
        # captions of other tracks scoring >= its best caption rank above it
        ranks[rows] = ((scores >= best) & ~mine).sum(axis=1) + 1
    return ranks


def ranking_metrics(ranks: Any, candidates: int, chance_r10: float | None = None) -> dict[str, float]:
    """R@k, MRR, median rank of 1-based ``ranks`` against ``candidates`` items.

    ``chance_r10``: the R@10 of a random ranking (default: one right item among
    ``candidates``).
    """
    import numpy as np

    r = np.asarray(ranks, dtype=np.float64)
    if r.size == 0:
        raise ValueError("no queries to rank")
    out: dict[str, float] = {f"R@{k}": float((r <= k).mean()) for k in KS}
    out["MRR"] = float((1.0 / r).mean())
    out["median_rank"] = float(np.median(r))
    out["queries"] = int(r.size)
    out["candidates"] = int(candidates)
    if chance_r10 is None:
        chance_r10 = min(10, candidates) / candidates if candidates else 0.0
    out["chance_R@10"] = float(chance_r10)
    return out


def _a2t_chance_r10(owner: "np.ndarray", n_tracks: int) -> float:
    """Mean over tracks of P(one of its m captions is in a random top 10 of C captions)."""
    import numpy as np

    total = len(owner)
    # The miss probability depends on m only: once per distinct caption count.
    sizes, of_track = np.unique(np.bincount(owner, minlength=n_tracks), return_inverse=True)
    miss = []
    for m in sizes:
        p = 1.0
        for i in range(min(10, total)):
            p *= max(total - int(m) - i, 0) / (total - i)
        miss.append(p)
    return float(1.0 - np.mean(np.asarray(miss)[of_track]))


def retrieval_metrics(text: Any, caption_track: Sequence[int], audio: Any) -> dict[str, dict[str, float]]:
    """``{"t2a": {...}, "a2t": {...}}`` (see the module doc).

    ``text``: ``[C, D]`` projected captions; ``caption_track[c]``: index into ``audio``
    (``[T, D]``, one row per track, each with at least one caption).
    """
    import numpy as np

    text_a, audio_a = _as_array(text), _as_array(audio)
    if text_a.ndim != 2 or audio_a.ndim != 2 or text_a.shape[1] != audio_a.shape[1]:
        raise ValueError(f"retrieval_metrics: text {text_a.shape} and audio {audio_a.shape} "
                         f"must be [C, D] and [T, D]")
    if len(caption_track) != text_a.shape[0]:
        raise ValueError(f"retrieval_metrics: {len(caption_track)} track indices for "
                         f"{text_a.shape[0]} captions")
    return {
        "t2a": ranking_metrics(t2a_ranks(text_a, caption_track, audio_a), audio_a.shape[0]),
        "a2t": ranking_metrics(a2t_ranks(text_a, caption_track, audio_a), text_a.shape[0],
                               _a2t_chance_r10(np.asarray(caption_track, np.int64), audio_a.shape[0])),
    }


def flatten(metrics: dict[str, dict[str, float]], prefix: str = "") -> dict[str, float]:
    """``{"t2a/R@1": ..., ...}`` (for TensorBoard tags and log lines)."""
    return {f"{prefix}{d}/{k}": v for d, m in metrics.items() for k, v in m.items()}
