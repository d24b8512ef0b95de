"""The terminal report of ``musicembed evaluate``: rich tables, chance beside every figure."""

from __future__ import annotations

from typing import Any


def _f(value: Any, chance: Any = None) -> str:
    if value is None:
        return "-"
    text = f"{value:.3f}"
    if chance is not None:
        text += f" [dim]({chance:.2f})[/dim]"
    return text


def _probe_cells(p: dict[str, Any] | None, multi: bool) -> list[str]:
    if not p:
        return ["-", "-"]
    if multi:
        return [_f(p.get("map"), p.get("chance_map")), _f(p.get("roc_auc"), p.get("chance_roc_auc"))]
    return [_f(p.get("accuracy"), p.get("chance_accuracy")), _f(p.get("macro_f1"), p.get("chance_macro_f1"))]


def _labels_line(emb: dict[str, Any]) -> str:
    lab = emb["labels"]
    parts = [f"{lab['matched']} of {lab['rows']} label rows matched a stored track"]
    if lab["unknown"]["count"]:
        ex = ", ".join(repr(k) for k in lab["unknown"]["examples"][:3])
        parts.append(f"[yellow]{lab['unknown']['count']} name no stored track[/yellow] (e.g. {ex})")
    if lab["ambiguous"]["count"]:
        parts.append(f"[yellow]{lab['ambiguous']['count']} match several tracks[/yellow] (left out)")
    if lab["duplicates"]["count"]:
        parts.append(f"[yellow]{lab['duplicates']['count']} tracks labelled twice[/yellow] (first row used)")
    parts.append(f"{lab['unlabelled_tracks']} stored tracks have no label")
    return "; ".join(parts)


def print_report(doc: dict[str, Any], console: Any) -> None:
    from rich.markup import escape
    from rich.table import Table

    ks = doc["settings"]["k"]
    console.print(
        f"labels: {escape(doc['labels']['file'])} (tasks: {', '.join(doc['labels']['tasks'])}); "
        f"cosine, leave-one-out; probe: logistic regression, {doc['settings']['folds']}-fold CV, "
        f"seed {doc['settings']['seed']}. [dim](chance)[/dim] beside each figure.",
        highlight=False, soft_wrap=True)
    for emb in doc["embeddings"]:
        console.rule(f"[bold]{escape(emb['name'])}[/bold] ({emb['space_hash']}, "
                     f"{emb.get('labelled_tracks', 0)} labelled tracks)")
        console.print(_labels_line(emb), highlight=False, soft_wrap=True)
        for note in emb["notes"]:
            console.print(f"[cyan]note:[/cyan] {escape(note)}", highlight=False, soft_wrap=True)
        for task in emb["tasks"]:
            multi = task["kind"] == "multi-label"
            table = Table(title=f"{escape(task['name'])} ({task['kind']}, {task['tracks']} tracks, "
                                f"{len(task['classes'])} labels)", title_justify="left")
            table.add_column("layer")
            for k in ks:
                table.add_column(f"P@{k}", justify="right")
            table.add_column("mAP", justify="right")
            for name in (("probe mAP", "ROC-AUC") if multi else ("probe acc", "macro-F1")):
                table.add_column(name, justify="right")
            for row in task["results"]:
                r = row["retrieval"]
                cells = [_f(r["precision_at_k"][str(k)], r["chance_precision_at_k"][str(k)]) for k in ks]
                cells.append(_f(r["map"], r["chance_map"]))
                table.add_row(escape(row["layer"]), *cells, *_probe_cells(row.get("probe"), multi))
            console.print(table)
            if task["left_out_of_probe"]:
                small = ", ".join(f"{escape(c)} ({n})" for c, n in task["left_out_of_probe"].items())
                what = "labels" if multi else "classes"
                console.print(f"[yellow]{what} with fewer than {doc['settings']['folds']} tracks, left "
                              f"out of the probe:[/yellow] {small}", highlight=False, soft_wrap=True)
            if task.get("probe_note"):
                console.print(f"[yellow]{escape(task['probe_note'])}[/yellow]", highlight=False)
            if task["missing_label"]:
                console.print(f"{task['missing_label']} matched tracks have no {escape(task['name'])} "
                              f"label (left out of this task)", highlight=False)
            console.print(best_line(task), highlight=False, soft_wrap=True)
        if emb.get("index"):
            table = Table(title="index quality (sink vs exact search)", title_justify="left")
            for col in ("sink", "settings", "queries", *[f"recall@{k}" for k in ks],
                        "p50 ms", "p95 ms"):
                table.add_column(col, justify="left" if col in ("sink", "settings") else "right")
            for ix in emb["index"]:
                settings = ", ".join(f"{k}={v}" for k, v in ix.get("settings", {}).items()
                                     if k in ("index", "index_type", "metric"))
                if "recall_at_k" not in ix:
                    table.add_row(escape(ix["sink"]), escape(settings), "-", *["-"] * len(ks), "-",
                                  escape(ix.get("note", "")))
                    continue
                table.add_row(escape(f"{ix['sink']}:{ix['collection']}"), escape(settings),
                              str(ix["queries"]), *[_f(ix["recall_at_k"][str(k)]) for k in ks],
                              f"{ix['latency_ms']['p50']:.2f}", f"{ix['latency_ms']['p95']:.2f}")
            console.print(table)
    per = doc.get("seconds_per_1000_tracks")
    tracks = max((e.get("labelled_tracks", 0) for e in doc["embeddings"]), default=0)
    console.print(f"took {doc['seconds']:.1f} s for {tracks} labelled tracks"
                  + (f" ({per:.1f} s per 1,000 at this rate)" if per else "")
                  + f"; wrote {escape(doc['files']['json'])}"
                  + (f" and {len(doc['files']['plots'])} plots" if doc["files"]["plots"] else ""),
                  highlight=False, soft_wrap=True)


def best_line(task: dict[str, Any]) -> str:
    """The plain statement of the best layer for a task."""
    best = task.get("best") or {}
    parts = []
    if "probe" in best:
        b = best["probe"]
        parts.append(f"best layer for the probe: {b['layer']} ({b['metric']} {b['value']:.3f})")
    if "retrieval" in best:
        b = best["retrieval"]
        parts.append(f"for retrieval: {b['layer']} ({b['metric'].replace('precision_at_', 'P@')} "
                     f"{b['value']:.3f})")
    return f"[bold]{task['name']}[/bold]: " + ("; ".join(parts) if parts else "no result")

