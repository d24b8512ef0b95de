"""``musicembed evaluate``: which model, which layer, which index is best for *this* library.

From a run's stored outputs and a labels file (:mod:`.labels`), for each embedding of
the run and each of its layers:

* retrieval precision@k and mAP of same-label neighbours, with chance (:mod:`.metrics`);
* a cross-validated linear probe (accuracy / macro-F1, or mAP / ROC-AUC multi-label);
* the best layer per task;
* the index quality of each sink of the run: recall@k against exact search, latency
  (:mod:`.index`).

Layers: when the run kept frames (``exporters.hdf5.store_frames = True``, the stack
after the chain's ``layers`` step), each stored layer's frames are mean-pooled into a
per-layer track vector and evaluated beside the stored track vector (``vector``, what
the sinks search). Without stored frames the embedding is evaluated as one layer, and
the report says so.

Results go to ``evaluation.json`` and PNG plots (:mod:`.plots`) in the output folder
(default ``<run.output_dir>/evaluation``); :mod:`.report` prints the tables.
Needs the ``evaluate`` extra: ``pip install 'musicembed[evaluate]'``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Sequence

from ..errors import ConfigError
from .labels import Joined, LabelTable, Task, join, read_labels
from .metrics import C_GRID, INNER_FOLDS, label_matrix, probe, probe_headline, retrieval

if TYPE_CHECKING:  # pragma: no cover
    import numpy as np

__all__ = ["EvaluateRequest", "evaluate", "read_labels", "join", "DOC_FILE"]

DOC_FILE = "evaluation.json"
VECTOR = "vector"
"""Name of the stored track vector among an embedding's layers."""
EXTRA_HINT = "pip install 'musicembed[evaluate]'"


@dataclass
class EvaluateRequest:
    labels: str
    columns: list[str] = field(default_factory=list)
    multi_sep: str | None = None
    id_column: str | None = None
    ks: list[int] = field(default_factory=lambda: [5, 10])
    folds: int = 5
    seed: int = 0
    out_dir: str | None = None
    plots: bool = True
    index_queries: int = 200
    embedding: str | None = None


def parse_ks(text: str) -> list[int]:
    """``-k 5,10`` -> ``[5, 10]`` (each at least 1)."""
    try:
        ks = [int(p) for p in str(text).replace(" ", "").split(",") if p]
    except ValueError:
        raise ConfigError(f"-k {text!r}: give whole numbers separated by commas, e.g. -k 5,10") from None
    if not ks or min(ks) < 1:
        raise ConfigError(f"-k {text!r}: give at least one k, each at least 1 (e.g. -k 5,10)")
    return list(dict.fromkeys(ks))


def check_request(req: EvaluateRequest) -> None:
    if req.folds < 2:
        raise ConfigError(f"--folds {req.folds}: cross-validation needs at least 2 folds")
    if req.index_queries < 1:
        raise ConfigError(f"--index-queries {req.index_queries}: must be at least 1")
    for module in ("sklearn",) + (("matplotlib",) if req.plots else ()):
        try:
            __import__(module)
        except ImportError:
            raise ConfigError(
                f"musicembed evaluate needs scikit-learn{' and matplotlib' if req.plots else ''} "
                f"({module} is not installed): {EXTRA_HINT}"
                + (" (or --no-plots to skip the plots)" if module == "matplotlib" else "")
            ) from None


# --------------------------------------------------------------------------- layers


def _layer_names(prep: Any, count: int) -> list[str]:
    """``layer i`` with the encoder's layer index when the chain's ``layers`` steps say it."""
    from ..export.torchscript import resolved_layers

    picked = resolved_layers(prep.chain.frame_enrichers, int(prep.geometry.num_layers))
    names = picked if picked is not None and len(picked) == count else range(count)
    return [f"layer {i}" for i in names]


def read_layers(out: Any, ids: Sequence[str], prep: Any) -> tuple[dict[str, "np.ndarray"], str]:
    """``{layer name: [N, D] vectors}`` for ``ids`` (stored vector first), and a note saying
    where the layers came from (or why there is only the stored vector)."""
    import numpy as np

    index = {t: i for i, t in enumerate(out.ids)}
    stored = out.vectors()[[index[t] for t in ids]]
    layers: dict[str, np.ndarray] = {VECTOR: stored}
    if not out.has_frames:
        return layers, (
            "no stored layers (the run kept no frames): evaluated as one layer, the stored "
            "vector. For per-layer results embed into a new output with --gin_param "
            f"exporters.{out.format}.store_frames=True"
        )
    pooled: np.ndarray | None = None
    empty = []
    for row, (tid, frames) in enumerate(out.iter_frames(ids)):
        if pooled is None:
            pooled = np.zeros((frames.shape[0], len(ids), frames.shape[2]), dtype=np.float32)
        if frames.shape[1] == 0:
            empty.append(tid)
            continue
        pooled[:, row] = frames.mean(axis=1, dtype=np.float64)
    if pooled is None:
        return layers, "no labelled track to read frames of"
    if empty:
        return layers, (
            f"{len(empty)} labelled tracks have no stored frames (e.g. {empty[0]!r}: stored by a "
            f"run without store_frames): evaluated as one layer, the stored vector"
        )
    names = _layer_names(prep, pooled.shape[0])
    for name, vecs in zip(names, pooled):
        layers[name] = vecs
    return layers, (f"{pooled.shape[0]} stored layers ({', '.join(names)}): frames mean-pooled per "
                    f"layer, beside the stored vector")


# --------------------------------------------------------------------------- tasks


def _task_entry(task: Task, folds: int) -> tuple[dict[str, Any], list[str], list[str]]:
    """The task's JSON header, its classes, and the classes kept for the probe."""
    classes = task.classes
    small = {c: n for c, n in classes.items() if n < folds}
    kept = [c for c in classes if c not in small]
    entry: dict[str, Any] = {
        "name": task.name, "kind": "multi-label" if task.multi else "single-label",
        "tracks": len(task.ids), "missing_label": task.missing, "classes": classes,
        "left_out_of_probe": small, "results": [],
    }
    if len(kept) < 2:
        entry["probe_note"] = (
            f"no probe: fewer than two labels have at least --folds {folds} tracks "
            f"({', '.join(f'{c} {n}' for c, n in list(classes.items())[:10])})"
        )
    return entry, list(classes), kept


def _best(entry: dict[str, Any], k: int) -> dict[str, Any]:
    best: dict[str, Any] = {}
    probes = [(probe_headline(r.get("probe")), r["layer"]) for r in entry["results"]]
    probes = [(name, v, layer) for (name, v), layer in probes if v is not None]
    if probes:
        name, value, layer = max(probes, key=lambda t: t[1])
        best["probe"] = {"layer": layer, "metric": name, "value": value}
    rets = [((r.get("retrieval") or {}).get("precision_at_k") or {}).get(str(k)) for r in entry["results"]]
    scored = [(v, r["layer"]) for v, r in zip(rets, entry["results"]) if v is not None]
    if scored:
        value, layer = max(scored, key=lambda t: t[0])
        best["retrieval"] = {"layer": layer, "metric": f"precision_at_{k}", "value": value}
    return best


def evaluate_task(task: Task, layers: dict[str, "np.ndarray"], rows: dict[str, int],
                  req: EvaluateRequest, progress: Callable[[str], None]) -> dict[str, Any]:
    """Retrieval and probe of every layer for one task."""
    import numpy as np

    entry, classes, kept = _task_entry(task, req.folds)
    idx = np.array([rows[t] for t in task.ids], dtype=np.int64)
    member = label_matrix(task.labels, classes)
    probe_member = label_matrix(task.labels, kept)
    # single-label: tracks of left-out classes leave the probe; multi-label: the labels do
    probe_rows = np.flatnonzero(probe_member.any(axis=1)) if not task.multi else np.arange(len(idx))
    run_probe = "probe_note" not in entry
    if run_probe:
        entry["probe_tracks"] = int(len(probe_rows))
    for name, vecs in layers.items():
        progress(f"{task.name}: {name}")
        x = vecs[idx]
        row: dict[str, Any] = {"layer": name, "retrieval": retrieval(x, member, req.ks)}
        if run_probe:
            row["probe"] = probe(x[probe_rows], probe_member[probe_rows], task.multi, req.folds, req.seed)
        entry["results"].append(row)
    entry["best"] = _best(entry, req.ks[0])
    return entry


# --------------------------------------------------------------------------- the map


def map2d(vectors: Any, seed: int) -> tuple["np.ndarray", str]:
    """``[N, 2]`` coordinates: UMAP when ``umap`` is installed, else PCA (signs fixed)."""
    import numpy as np

    x = np.asarray(vectors, dtype=np.float64)
    if len(x) >= 5:
        try:
            import umap  # type: ignore[import-not-found]
        except ImportError:
            pass
        else:
            reducer = umap.UMAP(n_components=2, random_state=seed, metric="cosine",
                                n_neighbors=min(15, len(x) - 1))
            return np.asarray(reducer.fit_transform(x), dtype=np.float64), "umap"
    x = x - x.mean(axis=0)
    if len(x) < 2:
        return np.zeros((len(x), 2)), "pca"
    _, _, vt = np.linalg.svd(x, full_matrices=False)
    comps = vt[:2]
    signs = np.sign(comps[np.arange(len(comps)), np.abs(comps).argmax(axis=1)])
    coords = x @ (comps * signs[:, None]).T
    if coords.shape[1] < 2:
        coords = np.pad(coords, ((0, 0), (0, 2 - coords.shape[1])))
    return coords, "pca"


def _map_entry(task: Task, layers: dict[str, "np.ndarray"], rows: dict[str, int], seed: int
               ) -> dict[str, Any]:
    import numpy as np

    idx = np.array([rows[t] for t in task.ids], dtype=np.int64)
    coords, method = map2d(layers[VECTOR][idx], seed)
    labels = [labs[0] for labs in task.labels]  # multi-label: coloured by the first label
    return {"task": task.name, "layer": VECTOR, "method": method, "ids": list(task.ids),
            "x": [round(float(v), 6) for v in coords[:, 0]],
            "y": [round(float(v), 6) for v in coords[:, 1]],
            "labels": labels, "classes": list(dict.fromkeys(sorted(set(labels))))}


# --------------------------------------------------------------------------- the command


def measure_index(cfg: Any, prep: Any, req: EvaluateRequest) -> list[dict[str, Any]]:
    """Index quality of every sink of the run for one embedding (:mod:`.index`)."""
    from ..outputs import open_run_output
    from .index import index_quality

    if not cfg.sinks:
        return []
    out = open_run_output(cfg, prep, doing="evaluate")
    try:
        ids, vectors = list(out.ids), out.vectors()
    finally:
        out.close()
    return index_quality(cfg, prep, ids, vectors, req.ks, req.index_queries, req.seed)


def evaluate_embedding(cfg: Any, prep: Any, table: LabelTable, req: EvaluateRequest,
                       progress: Callable[[str], None], index: list[dict[str, Any]]) -> dict[str, Any]:
    """Every figure for one embedding of the run (``index``: its measured sinks)."""
    from ..outputs import open_run_output

    t0 = time.perf_counter()
    out = open_run_output(cfg, prep, doing="evaluate")
    try:
        # Sorted: a run stores tracks in the order they finish, which varies between runs; the
        # probe's folds follow this order, so the figures must not depend on it.
        ids = sorted(out.ids)
        paths = {t: str(out.metadata(t).get("path") or "") for t in ids}
        joined = join(table, ids, paths)
        entry: dict[str, Any] = {"name": prep.name, "space_hash": prep.space.hash, "output": out.path,
                                 "stored_tracks": len(out.ids), "labels": joined.report(),
                                 "tasks": [], "notes": [], "index": index}
        if not cfg.sinks:
            entry["notes"].append("the run has no sink: no index quality (add run.sinks to measure one)")
        union = {t for task in joined.tasks for t in task.ids}
        labelled = [t for t in ids if t in union]
        entry["labelled_tracks"] = len(labelled)
        if not labelled:
            entry["layers"] = []
            entry["notes"].append(_no_match_note(table, joined, out.ids))
            return entry
        progress(f"{prep.name}: reading {len(labelled)} tracks")
        layers, note = read_layers(out, labelled, prep)
    finally:
        out.close()
    entry["layers"] = list(layers)
    entry["layers_source"] = "frames" if len(layers) > 1 else "vector"
    entry["notes"].append(note)
    rows = {t: i for i, t in enumerate(labelled)}
    t1 = time.perf_counter()
    first: Task | None = None  # the map shows the first evaluated task
    for task in joined.tasks:
        if len(task.ids) < 2:
            entry["notes"].append(f"task {task.name!r}: fewer than two labelled tracks, skipped")
            continue
        entry["tasks"].append(evaluate_task(task, layers, rows, req, lambda s: progress(f"{prep.name} {s}")))
        first = first or task
    if first is not None:
        entry["map"] = _map_entry(first, layers, rows, req.seed)
    t2 = time.perf_counter()
    entry["seconds"] = {"read": t1 - t0, "metrics": t2 - t1, "total": t2 - t0}
    return entry


def _no_match_note(table: LabelTable, joined: Joined, ids: Sequence[str]) -> str:
    example = joined.unknown[0] if joined.unknown else "?"
    stored = ids[0] if ids else "(none)"
    return (f"no row of {table.path} matches a stored track (e.g. key {example!r}; stored ids look "
            f"like {stored!r}): the key column {table.key_column!r} must hold the track ids "
            f"(paths relative to run.source) or paths")


def finite(obj: Any) -> Any:
    """``obj`` with NaN/infinite floats as None (valid JSON; the plots draw None as a gap)."""
    import math

    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [finite(v) for v in obj]
    return obj


def evaluate(cfg: Any, req: EvaluateRequest, progress: Callable[[str], None] | None = None
             ) -> dict[str, Any]:
    """Evaluate the run's embeddings against the labels file; writes evaluation.json (and the
    plots) into the output folder and returns the document."""
    from ..atomic import atomic_write_json
    from ..pipeline import PreparedEmbedding
    from ..search import _pick

    say = progress or (lambda _s: None)
    check_request(req)
    t0 = time.perf_counter()
    table = read_labels(req.labels, req.columns, req.multi_sep, req.id_column)
    specs = cfg.embeddings if req.embedding is None else [
        _pick(cfg.embeddings, req.embedding, "embedding", "--embedding")]
    doc: dict[str, Any] = {
        "labels": {"file": table.path, "id_column": table.key_column, "tasks": table.tasks,
                   "multi_label_sep": table.multi_sep},
        "settings": {"k": list(req.ks), "folds": req.folds, "seed": req.seed, "metric": "cosine",
                     "C_grid": list(C_GRID), "inner_folds": INNER_FOLDS,
                     "index_queries": req.index_queries},
        "embeddings": [],
    }
    # every sink first: latency is measured before scikit-learn's thread pools are busy
    preps = [PreparedEmbedding.build(spec) for spec in specs]
    indexes = []
    for prep in preps:
        say(f"{prep.name}: index quality")
        indexes.append(measure_index(cfg, prep, req))
    for prep, index in zip(preps, indexes):
        doc["embeddings"].append(evaluate_embedding(cfg, prep, table, req, say, index))
    tracks = max((e.get("labelled_tracks", 0) for e in doc["embeddings"]), default=0)
    seconds = time.perf_counter() - t0
    doc["seconds"] = seconds
    doc["seconds_per_1000_tracks"] = seconds / tracks * 1000 if tracks else None
    folder = Path(req.out_dir) if req.out_dir else Path(cfg.output_dir) / "evaluation"
    folder.mkdir(parents=True, exist_ok=True)
    doc["files"] = {"json": str(folder / DOC_FILE), "plots": []}
    if req.plots:
        from .plots import plot_files

        doc["files"]["plots"] = [str(folder / name) for name in plot_files(doc)]
    doc = finite(doc)
    atomic_write_json(str(folder / DOC_FILE), doc, indent=1, ensure_ascii=False)
    if req.plots:
        from .plots import write_plots

        say("plots")
        write_plots(doc, folder)
    return doc
