"""`musicembed evaluate` end to end on generated captioned clips whose labels the generator knows.

One real run (built-in logmel, HDF5 with frames kept, a real FAISS sink) is evaluated by
the real command; every retrieval figure and its chance level is recomputed here by brute
force (explicit loops, chance from the distribution of the relevant tracks' positions),
the plots are redrawn from evaluation.json and compared with the written PNG files and
with the JSON's figures.
"""

from __future__ import annotations

import csv
import io
import json
import math
from pathlib import Path

import numpy as np
import pytest

from musicembed_core.errors import ConfigError
from musicembed_core.examples import make_captioned_set
from musicembed_core.stored import open_output
from musicembed_core.testing import run_cli, run_params

pytest.importorskip("sklearn", reason="musicembed evaluate needs scikit-learn (the evaluate extra)")
pytest.importorskip("matplotlib", reason="musicembed evaluate needs matplotlib (the evaluate extra)")
pytest.importorskip("musicembed_faiss", reason="the musicembed-faiss plugin is not installed")

from musicembed_core.evaluation import EvaluateRequest, evaluate, join, parse_ks, read_labels  # noqa: E402
from musicembed_core.evaluation.metrics import chance_ap  # noqa: E402
from musicembed_core.evaluation.plots import figures, layer_series  # noqa: E402

FAISS_GIN = "runs/quickstart_faiss.gin"
PLAIN_GIN = "runs/quickstart.gin"
CLIPS = 60


@pytest.fixture(scope="module")
def lib(tmp_path_factory):
    """60 captioned clips (2 s), embedded by logmel into HDF5 (frames kept) + FAISS."""
    root = tmp_path_factory.mktemp("evaluate")
    audio = root / "audio"
    make_captioned_set(audio, count=CLIPS, seconds=2.0)
    out = root / "out"
    run_cli("run", "--gin_file", FAISS_GIN, *run_params(audio, out, "exporters.hdf5.store_frames=True"),
            "--no-progress")
    proc = run_cli("evaluate", "--gin_file", FAISS_GIN, *run_params(audio, out),
                   "--labels", str(audio / "labels.csv"), "-k", "5,10", "--json")
    doc = json.loads(proc.stdout)
    return {"root": root, "audio": audio, "out": out, "doc": doc}


def _cfg(lib, gin=FAISS_GIN, out=None, extra=()):
    """The run's configuration, parsed in this process like the command does."""
    from musicembed_core.cli import _run_config

    params = tuple(run_params(lib["audio"], out or lib["out"], *extra)[1::2])
    return _run_config((gin,), params)


def _labels(audio: Path) -> dict[str, dict[str, str]]:
    with open(audio / "labels.csv", encoding="utf-8") as f:
        return {row["id"]: row for row in csv.DictReader(f)}


def _stored(out: Path):
    """ids, stored vectors and the per-layer mean of the stored frames, from the HDF5 file, in the
    order the evaluation uses (sorted by id)."""
    with open_output(out / "logmel.h5") as o:
        ids = sorted(o.ids)
        order = np.argsort(np.asarray(o.ids, dtype=object), kind="stable")
        layers = {"vector": o.vectors().astype(np.float64)[order]}
        frames = [o.frames(t).astype(np.float64).mean(axis=1) for t in ids]  # [L, D] each
    for i in range(frames[0].shape[0]):
        layers[f"layer {i}"] = np.stack([f[i] for f in frames])
    return ids, layers


# --------------------------------------------------------------------------- brute force


def _expected_ap(m: int, r: int) -> float:
    """E[AP] of a random ranking: the i-th of r relevant items lands at position n with
    probability C(n-1, i-1) C(m-n, r-i) / C(m, r); AP averages i/n over them."""
    total = math.comb(m, r)
    return sum(i / n * math.comb(n - 1, i - 1) * math.comb(m - n, r - i) / total
               for i in range(1, r + 1) for n in range(i, m - r + i + 1)) / r


def _brute_retrieval(vecs: np.ndarray, labels: list[set[str]], ks) -> dict:
    n = len(vecs)
    p = {k: [] for k in ks}
    aps, chance_p, chance_aps = [], [], []
    for i in range(n):
        others = [j for j in range(n) if j != i]
        sims = [float(vecs[i] @ vecs[j] / (np.linalg.norm(vecs[i]) * np.linalg.norm(vecs[j])))
                for j in others]
        ranked = [others[t] for t in sorted(range(len(others)), key=lambda t: -sims[t])]
        rel = [bool(labels[i] & labels[j]) for j in ranked]
        r, m = sum(rel), len(rel)
        if r == 0:
            continue
        for k in ks:
            p[k].append(sum(rel[:k]) / min(k, m))
        hits, s = 0, 0.0
        for pos, is_rel in enumerate(rel, 1):
            if is_rel:
                hits += 1
                s += hits / pos
        aps.append(s / r)
        chance_p.append(r / m)
        chance_aps.append(_expected_ap(m, r))
    return {"precision_at_k": {str(k): np.mean(p[k]) for k in ks},
            "chance_precision_at_k": {str(k): np.mean(chance_p) for k in ks},
            "map": np.mean(aps), "chance_map": np.mean(chance_aps), "queries": len(aps)}


def _check_retrieval(got: dict, want: dict) -> None:
    assert got["queries"] == want["queries"]
    for key in ("precision_at_k", "chance_precision_at_k"):
        for k, v in want[key].items():
            assert got[key][k] == pytest.approx(v, abs=1e-9), (key, k)
    assert got["map"] == pytest.approx(want["map"], abs=1e-9)
    assert got["chance_map"] == pytest.approx(want["chance_map"], abs=1e-9)


def test_chance_ap_equals_exhaustive_enumeration():
    from itertools import combinations

    for m, r in ((1, 1), (5, 1), (6, 2), (7, 3), (8, 8)):
        aps = []
        for pos in combinations(range(1, m + 1), r):
            aps.append(np.mean([(i + 1) / p for i, p in enumerate(pos)]))
        assert chance_ap(np.array([m]), np.array([r]))[0] == pytest.approx(np.mean(aps), abs=1e-12)
        assert _expected_ap(m, r) == pytest.approx(np.mean(aps), abs=1e-12)


# --------------------------------------------------------------------------- the real command


def test_logmel_beats_chance_and_every_figure_matches_brute_force(lib):
    doc = lib["doc"]
    (emb,) = doc["embeddings"]
    assert emb["layers"] == ["vector", "layer 0", "layer 1"] and emb["layers_source"] == "frames"
    assert emb["labelled_tracks"] == CLIPS and emb["labels"]["unknown"]["count"] == 0
    assert [t["name"] for t in emb["tasks"]] == ["instrument", "register", "tempo", "drums"]
    ids, layers = _stored(lib["out"])
    truth = _labels(lib["audio"])
    for task in emb["tasks"]:
        labels = [{truth[t][task["name"]]} for t in ids]
        for row in task["results"]:
            _check_retrieval(row["retrieval"], _brute_retrieval(layers[row["layer"]], labels, (5, 10)))
    inst = emb["tasks"][0]
    vec = inst["results"][0]
    r, p = vec["retrieval"], vec["probe"]
    assert r["chance_precision_at_k"]["5"] == pytest.approx((CLIPS / 5 - 1) / (CLIPS - 1))
    assert r["precision_at_k"]["5"] > r["chance_precision_at_k"]["5"] + 0.2
    assert r["map"] > r["chance_map"] + 0.1
    assert p["chance_accuracy"] == pytest.approx(0.2) and p["chance_macro_f1"] == pytest.approx(0.2)
    assert p["accuracy"] > p["chance_accuracy"] + 0.25 and p["macro_f1"] > 0.45
    assert set(p["C"]) <= set(doc["settings"]["C_grid"]) and len(p["C"]) == 5
    # the best layer is stated, and is the best of the rows
    best = inst["best"]["probe"]
    assert best["value"] == max(row["probe"]["accuracy"] for row in inst["results"])
    # the exact FAISS index finds the exact neighbours; latency measured for every query
    (ix,) = emb["index"]
    assert ix["sink"] == "faiss" and ix["settings"]["index"] == "Flat"
    assert ix["queries"] == CLIPS and ix["recall_at_k"] == {"5": 1.0, "10": 1.0}
    assert 0 < ix["latency_ms"]["p50"] <= ix["latency_ms"]["p95"]
    assert doc["seconds_per_1000_tracks"] > 0


def test_terminal_report_states_chance_and_best_layer(lib):
    from rich.console import Console

    from musicembed_core.evaluation.report import print_report

    console = Console(file=io.StringIO(), width=160, color_system=None)
    print_report(lib["doc"], console)
    text = console.file.getvalue()
    inst = lib["doc"]["embeddings"][0]["tasks"][0]
    p5 = inst["results"][0]["retrieval"]
    assert f"{p5['precision_at_k']['5']:.3f} ({p5['chance_precision_at_k']['5']:.2f})" in text
    b = inst["best"]["probe"]
    assert f"instrument: best layer for the probe: {b['layer']} (accuracy {b['value']:.3f})" in text
    assert "index quality" in text and "recall@5" in text
    assert "2 stored layers (layer 0, layer 1)" in text


def test_plots_are_drawn_from_the_json(lib):
    doc = lib["doc"]
    (emb,) = doc["embeddings"]
    folder = Path(doc["files"]["json"]).parent
    assert json.loads(Path(doc["files"]["json"]).read_text()) == doc
    written = {Path(p).name: Path(p).read_bytes() for p in doc["files"]["plots"]}
    assert sorted(written) == ["layers-logmel.png", "map-logmel.png"]
    drawn = dict(figures(doc))
    for name, data in written.items():
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000
        buf = io.BytesIO()
        drawn[name].savefig(buf, format="png", metadata={"Software": None})
        assert buf.getvalue() == data, f"{name} is not the figure drawn from evaluation.json"
    assert folder == lib["out"] / "evaluation"

    # the layer figure's lines hold the JSON's probe accuracy and P@5 of each task, per layer
    lines = {line.get_gid(): list(line.get_ydata()) for ax in drawn["layers-logmel.png"].axes
             for line in ax.get_lines()}
    for task in emb["tasks"]:
        assert lines[f"probe:{task['name']}"] == [r["probe"]["accuracy"] for r in task["results"]]
        assert lines[f"retrieval:{task['name']}"] == [
            r["retrieval"]["precision_at_k"]["5"] for r in task["results"]]
        assert lines[f"retrieval_chance:{task['name']}"] == [
            r["retrieval"]["chance_precision_at_k"]["5"] for r in task["results"]]
    assert layer_series(emb, 5)["probe"]["instrument"] == lines["probe:instrument"]

    # the map: its points are the JSON's, and they are the PCA of the stored vectors
    m = emb["map"]
    (ax,) = drawn["map-logmel.png"].axes
    points = {c.get_gid(): c.get_offsets() for c in ax.collections}
    assert sorted(points) == [f"map:{c}" for c in sorted(m["classes"])]
    for label in m["classes"]:
        want = [(x, y) for x, y, lab in zip(m["x"], m["y"], m["labels"]) if lab == label]
        np.testing.assert_allclose(np.asarray(points[f"map:{label}"]), want)
    ids, layers = _stored(lib["out"])
    assert m["ids"] == ids and m["method"] == "pca" and m["task"] == "instrument"
    x = layers["vector"] - layers["vector"].mean(axis=0)
    pcs = np.linalg.eigh(x.T @ x)[1][:, ::-1][:, :2]
    for axis, key in enumerate(("x", "y")):
        ref = x @ pcs[:, axis]
        got = np.asarray(m[key])
        sign = np.sign(got @ ref)
        np.testing.assert_allclose(got, sign * ref, atol=1e-5)


# --------------------------------------------------------------------------- more cases


def test_multi_label_tasks_from_jsonl_and_separator(lib, tmp_path):
    truth = _labels(lib["audio"])
    jsonl = tmp_path / "tags.jsonl"
    with open(jsonl, "w", encoding="utf-8") as f:
        for tid, row in truth.items():
            f.write(json.dumps({"path": str(lib["audio"] / tid),
                                "tags": [row["instrument"], row["tempo"]]}) + "\n")
    csv_path = tmp_path / "tags.csv"
    csv_path.write_text("id,mood\n" + "".join(
        f"{tid},{row['register']};{row['drums']}-drums\n" for tid, row in truth.items()))
    ids, layers = _stored(lib["out"])
    cfg = _cfg(lib)
    for path, column, sep, want in ((jsonl, "tags", None, ("instrument", "tempo")),
                                    (csv_path, "mood", ";", ("register", "drums"))):
        doc = evaluate(cfg, EvaluateRequest(
            labels=str(path), multi_sep=sep, ks=[5], out_dir=str(tmp_path / column), plots=False,
            index_queries=5))
        (emb,) = doc["embeddings"]
        (task,) = emb["tasks"]
        assert task["name"] == column and task["kind"] == "multi-label"
        suffix = "-drums" if column == "mood" else ""
        labels = [{truth[t][want[0]], truth[t][want[1]] + suffix} for t in ids]
        for row in task["results"]:
            _check_retrieval(row["retrieval"], _brute_retrieval(layers[row["layer"]], labels, (5,)))
            p = row["probe"]
            assert set(p) >= {"map", "roc_auc", "chance_map", "chance_roc_auc"}
        p = task["results"][0]["probe"]
        assert p["map"] > p["chance_map"] + 0.15 and p["roc_auc"] > 0.7
        assert p["chance_map"] == pytest.approx(np.mean([len(s) for s in labels]) / len(
            {x for s in labels for x in s}))


def test_unknown_ids_small_classes_missing_labels_and_no_layers_are_reported(lib, tmp_path):
    truth = _labels(lib["audio"])
    rows = ["id,genre,instrument"]
    for i, (tid, row) in enumerate(truth.items()):
        genre = "solo" if i == 0 else ("rare" if i < 4 else ("" if i < 6 else ("a", "b")[i % 2]))
        rows.append(f"{tid},{genre},{row['instrument']}")
    rows += ["nowhere/ghost.wav,a,piano", "ghost2.flac,b,organ", "clip_007.wav,a,piano"]
    labels = tmp_path / "labels.csv"
    labels.write_text("\n".join(rows) + "\n")
    # a second run of the same clips without frames and without a sink
    plain = tmp_path / "plain"
    run_cli("run", "--gin_file", PLAIN_GIN, *run_params(lib["audio"], plain), "--no-progress")
    cfg = _cfg(lib, PLAIN_GIN, plain)
    doc = evaluate(cfg, EvaluateRequest(
        labels=str(labels), columns=["genre"], ks=[5], plots=True))
    (emb,) = doc["embeddings"]
    rep = emb["labels"]
    assert rep["unknown"] == {"count": 2, "examples": ["nowhere/ghost.wav", "ghost2.flac"]}
    assert rep["duplicates"] == {"count": 1, "examples": ["clip_007.wav"]}
    assert rep["matched"] == CLIPS and rep["rows"] == CLIPS + 3
    (task,) = emb["tasks"]
    assert task["missing_label"] == 2 and task["tracks"] == CLIPS - 2
    assert task["left_out_of_probe"] == {"rare": 3, "solo": 1}
    assert task["probe_tracks"] == CLIPS - 2 - 4
    assert task["results"][0]["retrieval"]["no_relevant"] == 1  # the one "solo" track
    assert emb["layers"] == ["vector"] and emb["layers_source"] == "vector"
    assert any("no stored layers" in n and "store_frames=True" in n for n in emb["notes"])
    assert emb["index"] == [] and any("no sink" in n for n in emb["notes"])
    assert Path(doc["files"]["json"]).parent == plain / "evaluation"
    assert all(Path(p).stat().st_size > 0 for p in doc["files"]["plots"])


def test_bad_labels_files_name_the_file_and_column(lib, tmp_path):
    audio = lib["audio"]
    proc = run_cli("evaluate", "--gin_file", FAISS_GIN, *run_params(audio, lib["out"]),
                   "--labels", str(audio / "labels.csv"), "--label-column", "genre", check=False)
    assert proc.returncode == 2  # a user error: one message, no traceback
    assert "Traceback" not in proc.stderr
    assert ("--label-column 'genre'" in proc.stderr and "labels.csv" in proc.stderr
            and "id, instrument, register, tempo, drums" in proc.stderr)
    bad = tmp_path / "nokey.csv"
    bad.write_text("name,genre\na.wav,rock\n")
    with pytest.raises(ConfigError, match=r"nokey.csv.*no column naming the track.*name, genre.*--id-column"):
        read_labels(str(bad))
    table = read_labels(str(bad), id_column="name")
    assert table.tasks == ["genre"] and join(table, ["rock/a.wav"]).tasks[0].ids == ["rock/a.wav"]
    with pytest.raises(ConfigError, match="no such file"):
        read_labels(str(tmp_path / "missing.csv"))
    broken = tmp_path / "broken.jsonl"
    broken.write_text('{"id": "a.wav", "genre": "rock"}\nnot json\n')
    with pytest.raises(ConfigError, match="broken.jsonl' line 2: not a JSON object"):
        read_labels(str(broken))
    with pytest.raises(ConfigError, match="-k '5,x'"):
        parse_ks("5,x")
    with pytest.raises(ConfigError, match="--folds 1"):
        evaluate(None, EvaluateRequest(labels=str(audio / "labels.csv"), folds=1))


def test_index_recall_of_an_approximate_index_matches_its_answers(lib, tmp_path):
    """An IVF index searching one list of eight misses neighbours; the reported recall is
    the share of the sink's own answers that an exact search ranks in the top k."""
    from musicembed_core.outputs import open_sink
    from musicembed_core.pipeline import PreparedEmbedding

    ivf = ('sinks.faiss.index="IVF8,Flat"', "sinks.faiss.min_train=40", "sinks.faiss.nprobe=1")
    cfg = _cfg(lib, extra=ivf)
    doc = evaluate(cfg, EvaluateRequest(labels=str(lib["audio"] / "labels.csv"), columns=["register"],
                                        ks=[5], plots=False, out_dir=str(tmp_path)))
    (ix,) = doc["embeddings"][0]["index"]
    assert ix["settings"]["index"] == "IVF8,Flat" and ix["queries"] == CLIPS and "note" not in ix
    ids, layers = _stored(lib["out"])
    x = layers["vector"] / np.linalg.norm(layers["vector"], axis=1, keepdims=True)
    sink, _ = open_sink(cfg.sinks[0], lib["out"], PreparedEmbedding.build(cfg.embeddings[0]), readonly=True)
    try:
        found = []
        for q, tid in enumerate(ids):
            (hits,) = sink.search(layers["vector"][q][None].astype(np.float32), k=6)
            answer = [h.id for h in hits if h.id != tid][:5]
            sims = x @ x[q]
            sims[q] = -np.inf
            top = {ids[j] for j in np.argsort(-sims)[:5]}
            found.append(len(top & set(answer)) / 5)
    finally:
        sink.close()
    assert ix["recall_at_k"]["5"] == pytest.approx(np.mean(found))
    assert 0.3 < ix["recall_at_k"]["5"] < 1.0


def test_figures_do_not_depend_on_the_order_the_run_stored_the_tracks(lib, tmp_path):
    """A run stores tracks in the order they finish (it varies between runs): the same vectors in
    reverse order give the same probe folds, hence the same figures."""
    from musicembed_core.builtins.hdf5 import Hdf5Exporter
    from musicembed_core.components import Record

    rev = tmp_path / "rev"
    rev.mkdir()
    with open_output(lib["out"] / "logmel.h5") as o:
        ex = Hdf5Exporter(store_frames=True)
        ex.open(str(rev / "logmel.h5"), o.space)
        vectors = o.vectors()
        ids = list(o.ids)
        ex.write([Record(id=t, vector=vectors[i], content_hash=o.content_hash(t), metadata=o.metadata(t),
                         frames=o.frames(t)) for i, t in reversed(list(enumerate(ids)))])
        ex.close()
    with open_output(rev / "logmel.h5") as o:
        assert list(o.ids) == ids[::-1]
    doc = evaluate(_cfg(lib, PLAIN_GIN, rev), EvaluateRequest(labels=str(lib["audio"] / "labels.csv"),
                                                             ks=[5, 10], plots=False))
    (got,), (want,) = doc["embeddings"], lib["doc"]["embeddings"]
    assert [t["name"] for t in got["tasks"]] == [t["name"] for t in want["tasks"]]
    for tg, tw in zip(got["tasks"], want["tasks"]):
        for rg, rw in zip(tg["results"], tw["results"], strict=True):
            assert rg["layer"] == rw["layer"] and rg["probe"] == rw["probe"], (tg["name"], rg["layer"])
            for k, v in rw["retrieval"]["precision_at_k"].items():
                assert rg["retrieval"]["precision_at_k"][k] == pytest.approx(v, abs=1e-12)
