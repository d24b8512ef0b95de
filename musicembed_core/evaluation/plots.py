"""The PNG plots of ``musicembed evaluate``, drawn only from the evaluation document.

Every figure is a pure function of what ``evaluation.json`` holds, so the plots
show exactly its figures (tests redraw them from the JSON and compare): per
embedding, ``layers-<embedding>.png`` (probe accuracy, or mAP for a multi-label
task, and precision@k of each task per layer, with chance dashed) and
``map-<embedding>.png`` (the library in 2-D, coloured by the first task's label).

matplotlib's object API with the Agg canvas: no display, no global pyplot state.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from .metrics import probe_headline


def _figure(**kwargs: Any) -> Any:
    """A new matplotlib Figure (Agg when saved), or an ImportError saying what to install."""
    try:
        from matplotlib.figure import Figure
    except ImportError as exc:
        raise ImportError(
            "musicembed evaluate draws its plots with matplotlib: pip install 'musicembed[evaluate]' "
            "(or pass --no-plots)"
        ) from exc
    return Figure(**kwargs)


def safe_name(name: str) -> str:
    """A file-name-safe form of an embedding name."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name) or "embedding"


def layer_series(emb: dict[str, Any], k: int) -> dict[str, dict[str, list[float | None]]]:
    """What the layer plot draws: ``{"probe": {task: values}, "probe_chance": ...,
    "retrieval": {task: P@k per layer}, "retrieval_chance": ...}``, one value per layer."""
    out: dict[str, dict[str, list[float | None]]] = {
        "probe": {}, "probe_chance": {}, "retrieval": {}, "retrieval_chance": {}}
    for task in emb["tasks"]:
        probe, chance, ret, ret_chance = [], [], [], []
        for row in task["results"]:
            name, value = probe_headline(row.get("probe"))
            probe.append(value)
            chance.append((row.get("probe") or {}).get(f"chance_{name}"))
            r = row.get("retrieval") or {}
            ret.append((r.get("precision_at_k") or {}).get(str(k)))
            ret_chance.append((r.get("chance_precision_at_k") or {}).get(str(k)))
        out["probe"][task["name"]] = probe
        out["probe_chance"][task["name"]] = chance
        out["retrieval"][task["name"]] = ret
        out["retrieval_chance"][task["name"]] = ret_chance
    return out


def _nan(values: list[float | None]) -> list[float]:
    return [float("nan") if v is None else float(v) for v in values]


def layer_figure(emb: dict[str, Any], k: int) -> Any:
    """Probe (left) and precision@k (right) per layer, one line per task, chance dashed."""
    series = layer_series(emb, k)
    layers = emb["layers"]
    fig = _figure(figsize=(max(7.0, 4.0 + 0.35 * len(layers) * 2), 4.2), dpi=100)
    x = list(range(len(layers)))
    for col, (key, title) in enumerate((("probe", "linear probe (accuracy; mAP if multi-label)"),
                                        ("retrieval", f"retrieval precision@{k}"))):
        ax = fig.add_subplot(1, 2, col + 1)
        for i, (task, values) in enumerate(series[key].items()):
            color = f"C{i % 10}"
            ax.plot(x, _nan(values), marker="o", color=color, label=task, gid=f"{key}:{task}")
            ax.plot(x, _nan(series[f"{key}_chance"][task]), linestyle="--", color=color,
                    alpha=0.6, gid=f"{key}_chance:{task}")
        ax.set_xticks(x)
        tilt = len(layers) > 6
        ax.set_xticklabels(layers, rotation=45 if tilt else 0, ha="right" if tilt else "center")
        ax.set_ylim(0.0, 1.02)
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("layer")
        ax.grid(alpha=0.3)
        if col == 0:
            ax.legend(fontsize=8, loc="best")
    fig.suptitle(f"{emb['name']} ({emb['space_hash']}): dashed = chance", fontsize=11)
    fig.tight_layout()
    return fig


def map_figure(emb: dict[str, Any]) -> Any:
    """The 2-D map of ``emb["map"]``: one scatter per label, in label order."""
    m = emb["map"]
    fig = _figure(figsize=(6.4, 5.4), dpi=100)
    ax = fig.add_subplot(1, 1, 1)
    for i, label in enumerate(m["classes"]):
        pts = [j for j, lab in enumerate(m["labels"]) if lab == label]
        ax.scatter([m["x"][j] for j in pts], [m["y"][j] for j in pts], s=14, color=f"C{i % 10}",
                   label=label, gid=f"map:{label}")
    ax.set_title(f"{emb['name']}: {m['method'].upper()} of {m['layer']}, coloured by {m['task']}",
                 fontsize=10)
    ax.set_xlabel(f"{m['method']} 1")
    ax.set_ylabel(f"{m['method']} 2")
    ax.legend(fontsize=8, markerscale=1.2, loc="best")
    fig.tight_layout()
    return fig


def _plots(doc: dict[str, Any]) -> list[tuple[str, Any]]:
    """``(file name, function drawing it)`` of every plot of an evaluation document."""
    k = int(doc["settings"]["k"][0])
    out: list[tuple[str, Any]] = []
    for emb in doc["embeddings"]:
        if not emb.get("tasks"):
            continue
        name = safe_name(emb["name"])
        out.append((f"layers-{name}.png", lambda emb=emb: layer_figure(emb, k)))
        if emb.get("map"):
            out.append((f"map-{name}.png", lambda emb=emb: map_figure(emb)))
    return out


def plot_files(doc: dict[str, Any]) -> list[str]:
    """File names of the plots :func:`write_plots` draws for ``doc``."""
    return [name for name, _ in _plots(doc)]


def figures(doc: dict[str, Any]) -> list[tuple[str, Any]]:
    """``(file name, figure)`` of every plot of an evaluation document."""
    return [(name, draw()) for name, draw in _plots(doc)]


def write_plots(doc: dict[str, Any], folder: str | Path) -> list[str]:
    """Draw every plot of ``doc`` into ``folder`` as PNG; returns the paths."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, fig in figures(doc):
        path = folder / name
        fig.savefig(path, format="png", metadata={"Software": None})
        paths.append(str(path))
    return paths
