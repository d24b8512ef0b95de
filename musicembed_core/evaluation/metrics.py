"""Retrieval and linear-probe metrics of one set of track vectors against one task's labels.

Retrieval (cosine, leave-one-out): every labelled track queries every other labelled
track of the task; a neighbour is relevant when it shares a label with the query.
Precision@k and average precision are averaged over the queries that have at least
one relevant track (a class of one track has none: counted, left out). Chance is the
expectation of the same figure for a random ranking of the same tracks: ``R/M`` for
precision@k (``R`` relevant among ``M`` candidates) and, for average precision,
``(H_M + (R-1)/(M-1) * (M - H_M)) / M`` (``H_M`` the M-th harmonic number), averaged
over the same queries.

Linear probe: scikit-learn's ``LogisticRegression`` on standardised features, with
stratified k-fold cross-validation (``KFold`` for multi-label tasks: one-vs-rest), the
regularisation ``C`` chosen from :data:`C_GRID` on inner folds of each training fold;
every split is seeded. Single-label: accuracy and macro-F1 per outer fold (mean and
standard deviation); chance is the majority class's share (accuracy) and ``1/classes``
(macro-F1 of guessing by class frequency). Multi-label: macro average precision and
ROC-AUC of the pooled out-of-fold scores; chance is the mean label frequency and 0.5.
"""

from __future__ import annotations

import warnings
from typing import TYPE_CHECKING, Any, Sequence

from ..sinkkit import unit_rows

if TYPE_CHECKING:  # pragma: no cover
    import numpy as np

C_GRID: tuple[float, ...] = (0.01, 0.1, 1.0, 10.0)
"""Inverse regularisation strengths tried on the inner folds."""
INNER_FOLDS = 3
DEFAULT_C = 1.0
"""C when a training fold is too small to split again (a class with a single track)."""
MAX_ITER = 2000
BLOCK = 256
"""Queries ranked at once (memory: BLOCK x tracks scores)."""


# --------------------------------------------------------------------------- retrieval


def label_matrix(labels: Sequence[Sequence[str]], classes: Sequence[str]) -> "np.ndarray":
    """``[N, C]`` bool: track ``i`` has label ``classes[c]``."""
    import numpy as np

    index = {c: i for i, c in enumerate(classes)}
    out = np.zeros((len(labels), len(classes)), dtype=bool)
    for i, labs in enumerate(labels):
        for lab in labs:
            if lab in index:
                out[i, index[lab]] = True
    return out


def chance_ap(m: "np.ndarray", r: "np.ndarray") -> "np.ndarray":
    """Expected average precision of a random ranking of ``m`` items, ``r`` of them relevant."""
    import numpy as np

    m = np.asarray(m, dtype=np.float64)
    r = np.asarray(r, dtype=np.float64)
    sizes, where = np.unique(m, return_inverse=True)  # one harmonic number per distinct size
    h = np.array([_harmonic(int(v)) for v in sizes])[where].reshape(m.shape)
    frac = np.divide(r - 1, m - 1, out=np.ones_like(m), where=m > 1)
    return (h + frac * (m - h)) / m


def _harmonic(n: int) -> float:
    import numpy as np

    return float(np.sum(1.0 / np.arange(1, n + 1))) if n > 0 else 0.0


def retrieval(vectors: Any, member: "np.ndarray", ks: Sequence[int]) -> dict[str, Any]:
    """Leave-one-out cosine retrieval metrics (module doc) of ``vectors`` ``[N, D]`` whose
    labels are ``member`` ``[N, C]`` (bool)."""
    import numpy as np

    x = unit_rows(vectors, dtype=np.float64)
    y = np.asarray(member, dtype=np.float64)
    n = x.shape[0]
    m = n - 1
    p_sum = {k: 0.0 for k in ks}
    p_chance = 0.0
    ap_sum = ap_chance = 0.0
    queries = 0
    for start in range(0, n, BLOCK):
        rows = np.arange(start, min(n, start + BLOCK))
        sims = x[rows] @ x.T
        sims[np.arange(len(rows)), rows] = -np.inf  # the query itself is no answer
        order = np.argsort(-sims, axis=1, kind="stable")[:, :m]
        relevant_all = (y[rows] @ y.T) > 0
        rel = np.take_along_axis(relevant_all, order, axis=1)
        r = rel.sum(axis=1)
        ok = r > 0
        if not ok.any():
            continue
        rel, r = rel[ok], r[ok].astype(np.float64)
        queries += len(r)
        for k in ks:
            kk = min(k, m)
            p_sum[k] += float((rel[:, :kk].sum(axis=1) / kk).sum())
        p_chance += float((r / m).sum())
        prec = np.cumsum(rel, axis=1) / np.arange(1, m + 1)
        ap_sum += float(((prec * rel).sum(axis=1) / r).sum())
        ap_chance += float(chance_ap(np.full_like(r, m), r).sum())
    out: dict[str, Any] = {"queries": queries, "no_relevant": n - queries}
    if queries == 0:
        out.update({"precision_at_k": {str(k): None for k in ks},
                    "chance_precision_at_k": {str(k): None for k in ks}, "map": None,
                    "chance_map": None})
        return out
    out["precision_at_k"] = {str(k): p_sum[k] / queries for k in ks}
    out["chance_precision_at_k"] = {str(k): p_chance / queries for k in ks}
    out["map"] = ap_sum / queries
    out["chance_map"] = ap_chance / queries
    return out


# --------------------------------------------------------------------------- linear probe


def _model(c: float, multi: bool) -> Any:
    from sklearn.linear_model import LogisticRegression
    from sklearn.multiclass import OneVsRestClassifier
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    clf = LogisticRegression(C=c, max_iter=MAX_ITER)
    return make_pipeline(StandardScaler(), OneVsRestClassifier(clf) if multi else clf)


def _fit(model: Any, x: "np.ndarray", y: "np.ndarray") -> Any:
    with warnings.catch_warnings():  # convergence and constant-label notes on tiny folds
        warnings.simplefilter("ignore")
        return model.fit(x, y)


def _scores(model: Any, x: "np.ndarray") -> "np.ndarray":
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return model.predict_proba(x)


def _macro_ap(y: "np.ndarray", scores: "np.ndarray") -> float:
    from sklearn.metrics import average_precision_score

    cols = [c for c in range(y.shape[1]) if y[:, c].any()]
    return float(average_precision_score(y[:, cols], scores[:, cols], average="macro"))


def _choose_c(x: "np.ndarray", y: "np.ndarray", multi: bool, seed: int) -> float:
    """The C of :data:`C_GRID` with the best inner-fold accuracy (single-label) or pooled
    macro AP (multi-label); ties go to the smaller C (more regularisation). Inner folds:
    :data:`INNER_FOLDS`, fewer when the smallest class has fewer training tracks."""
    import numpy as np
    from sklearn.model_selection import KFold, StratifiedKFold

    if multi:
        splits = list(KFold(min(INNER_FOLDS, len(x)), shuffle=True, random_state=seed).split(x))
    else:
        counts = np.bincount(y)
        inner = min(INNER_FOLDS, int(counts[counts > 0].min()))
        if inner < 2:  # a class with one training track (--folds 2): no inner split possible
            return DEFAULT_C
        splits = list(StratifiedKFold(inner, shuffle=True, random_state=seed).split(x, y))
    best, best_score = C_GRID[0], -np.inf
    for c in C_GRID:
        if multi:
            pooled = np.zeros(y.shape, dtype=np.float64)
            for tr, te in splits:
                pooled[te] = _scores(_fit(_model(c, True), x[tr], y[tr]), x[te])
            score = _macro_ap(y, pooled)
        else:
            score = float(np.mean([
                (_fit(_model(c, False), x[tr], y[tr]).predict(x[te]) == y[te]).mean()
                for tr, te in splits
            ]))
        if score > best_score + 1e-12:
            best, best_score = c, score
    return best


def probe(vectors: Any, member: "np.ndarray", multi: bool, folds: int, seed: int) -> dict[str, Any]:
    """Cross-validated linear probe (module doc) of ``vectors`` ``[N, D]`` on ``member``
    ``[N, C]`` (bool; exactly one True per row for a single-label task)."""
    import numpy as np
    from sklearn.metrics import f1_score, roc_auc_score
    from sklearn.model_selection import KFold, StratifiedKFold

    x = np.asarray(vectors, dtype=np.float64)
    y_bool = np.asarray(member, dtype=bool)
    chosen: list[float] = []
    if multi:
        y = y_bool.astype(int)
        pooled = np.zeros(y.shape, dtype=np.float64)
        for fold, (tr, te) in enumerate(KFold(folds, shuffle=True, random_state=seed).split(x)):
            c = _choose_c(x[tr], y[tr], True, seed + 1 + fold)
            chosen.append(c)
            pooled[te] = _scores(_fit(_model(c, True), x[tr], y[tr]), x[te])
        cols = [i for i in range(y.shape[1]) if 0 < y[:, i].sum() < len(y)]
        auc = float(roc_auc_score(y[:, cols], pooled[:, cols], average="macro")) if cols else None
        return {
            "map": _macro_ap(y, pooled), "chance_map": float(y.mean(axis=0).mean()),
            "roc_auc": auc, "chance_roc_auc": 0.5, "C": chosen, "folds": folds,
        }
    y = y_bool.argmax(axis=1)
    accs, f1s = [], []
    splitter = StratifiedKFold(folds, shuffle=True, random_state=seed)
    for fold, (tr, te) in enumerate(splitter.split(x, y)):
        c = _choose_c(x[tr], y[tr], False, seed + 1 + fold)
        chosen.append(c)
        pred = _fit(_model(c, False), x[tr], y[tr]).predict(x[te])
        accs.append(float((pred == y[te]).mean()))
        f1s.append(float(f1_score(y[te], pred, average="macro", labels=np.unique(y))))
    counts = np.bincount(y)
    counts = counts[counts > 0]
    return {
        "accuracy": float(np.mean(accs)), "accuracy_std": float(np.std(accs)),
        "chance_accuracy": float(counts.max() / counts.sum()),
        "macro_f1": float(np.mean(f1s)), "macro_f1_std": float(np.std(f1s)),
        "chance_macro_f1": 1.0 / len(counts), "C": chosen, "folds": folds,
    }


def probe_headline(result: dict[str, Any] | None) -> tuple[str, float | None]:
    """The probe's headline figure: accuracy (single-label) or mAP (multi-label)."""
    if not result:
        return "accuracy", None
    if "accuracy" in result:
        return "accuracy", result["accuracy"]
    return "map", result.get("map")
