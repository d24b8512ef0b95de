"""Exact top-k over vectors stored as several parts (wider than one Milvus field).

The full score is the sum of the part scores: inner products of the parts add
up to the full inner product (and, with vectors L2-normalised *before* they are
split, to the full cosine); squared L2 distances of the parts add up to the
full squared distance. So:

1. each part is searched on its own (Milvus ANN, over-fetching
   ``k * oversample`` per part, with the user's filter); the union of the
   per-part lists is the candidate set;
2. every candidate gets its exact full score: the part scores Milvus already
   returned, plus the missing ones, computed by Milvus over just those ids
   (a search restricted by ``id in [...]``: no vectors travel; used with a
   Milvus server), and from the stored vectors for anything still missing
   (Milvus Lite evaluates ``id in`` filters slowly, so there the candidates'
   vectors are fetched instead);
3. the candidates are ranked by full score.

Certificate (a threshold algorithm): a row that appears in no per-part list
scores at most (IP/cosine) or at least (L2) the sum over parts of the last score
of each list. When the k-th best candidate beats that bound, or some list came
back short (it then holds every row that passes the filter), the top k is
exact -- given exact per-part searches (index ``FLAT``); with an ANN index it is
as good as that index. When the certificate fails, the per-part fetch doubles,
up to ``cap``; past it the exact re-ranking of the candidates is returned.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from musicembed_core import exact_scores

from .expr import chunks
from .layout import Part

Scored = list[tuple[str, float]]
Ann = Callable[[Part, np.ndarray, int], list[Scored]]
"""(part, queries [Q, part.dim], limit) -> per query, (id, part score) best first."""
ScoreIds = Callable[[Part, np.ndarray, Sequence[str]], list[Scored]]
"""(part, queries, ids) -> per query, the part scores of those ids (may miss some)."""
Fetch = Callable[[Sequence[str]], dict[str, np.ndarray]]
"""ids -> stored full vectors (absent ids left out)."""


def search_parts(
    queries: np.ndarray,
    parts: Sequence[Part],
    k: int,
    higher_is_better: bool,
    first_limit: int,
    cap: int,
    ann: Ann,
    score_ids: ScoreIds | None,
    fetch: Fetch,
    fetch_batch: int = 64,
) -> tuple[list[Scored], list[bool]]:
    """Top ``k`` (id, full score) per query, and whether each result is certified exact.

    Memory stays bounded: full scores are kept per (query, candidate), stored
    vectors only ``fetch_batch`` at a time.
    """
    results: list[Scored] = [[] for _ in range(len(queries))]
    certified: list[bool] = [False] * len(queries)
    totals: list[dict[str, float]] = [{} for _ in range(len(queries))]  # across rounds
    pending = list(range(len(queries)))
    limit = min(max(first_limit, k), cap)
    sign = -1.0 if higher_is_better else 1.0
    while pending:
        qs = queries[pending]
        lists = [ann(p, qs[:, p.start : p.stop], limit) for p in parts]
        partial: list[dict[str, dict[int, float]]] = [{} for _ in pending]
        for pi, per_query in enumerate(lists):
            for j, hits in enumerate(per_query):
                for hid, s in hits:
                    if hid not in totals[pending[j]]:
                        partial[j].setdefault(hid, {})[pi] = s
        _complete(qs, parts, partial, higher_is_better, score_ids, fetch, fetch_batch)
        for j, qi in enumerate(pending):
            for hid, got in partial[j].items():
                if len(got) == len(parts):
                    totals[qi][hid] = sum(got[pi] for pi in range(len(parts)))

        still_pending = []
        for j, qi in enumerate(pending):
            top = sorted(totals[qi].items(), key=lambda t: (sign * t[1], t[0]))[:k]
            ok = any(len(per_query[j]) < limit for per_query in lists)  # a list ran out
            if not ok and len(top) == k:
                bound = sum(per_query[j][-1][1] for per_query in lists)
                ok = top[-1][1] >= bound if higher_is_better else top[-1][1] <= bound
            if ok or limit >= cap:
                results[qi], certified[qi] = top, ok
            else:
                still_pending.append(qi)
        pending = still_pending
        limit = min(limit * 2, cap)
    return results, certified


def _complete(
    qs: np.ndarray,
    parts: Sequence[Part],
    partial: list[dict[str, dict[int, float]]],
    higher_is_better: bool,
    score_ids: ScoreIds | None,
    fetch: Fetch,
    fetch_batch: int,
) -> None:
    """Fill in the candidates' missing part scores (in place); drop vanished ids."""
    for pi, p in enumerate(parts if score_ids is not None else ()):
        missing = sorted({hid for per_q in partial for hid, got in per_q.items() if pi not in got})
        for chunk in chunks(missing):
            for j, hits in enumerate(score_ids(p, qs[:, p.start : p.stop], chunk)):
                for hid, s in hits:
                    got = partial[j].get(hid)
                    if got is not None:
                        got.setdefault(pi, s)
    # An ANN index may leave ids out even of a search restricted to them:
    # score those (or, without score_ids, all) from the stored vectors.
    left = sorted({hid for per_q in partial for hid, got in per_q.items() if len(got) < len(parts)})
    # Part scores as Milvus reports them: inner products (cosine: of unit vectors) or
    # squared L2 distances.
    metric = "ip" if higher_is_better else "l2"
    for chunk in chunks(left, fetch_batch):
        stored = fetch(chunk)
        present = [hid for hid in chunk if hid in stored]
        for per_q in partial:
            for hid in chunk:
                if hid not in stored:  # deleted meanwhile
                    per_q.pop(hid, None)
        if not present:
            continue
        x = np.stack([stored[hid] for hid in present])
        scores = [exact_scores(qs[:, p.start : p.stop], x[:, p.start : p.stop], metric) for p in parts]
        for j, per_q in enumerate(partial):
            for col, hid in enumerate(present):
                got = per_q.get(hid)
                if got is None or len(got) == len(parts):
                    continue
                for pi in range(len(parts)):
                    if pi not in got:
                        got[pi] = float(scores[pi][j, col])
