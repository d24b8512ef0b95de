"""`musicembed search --text` end to end: index the generated example clips with
runs/clap_musicgen.gin (FAISS) and runs/clap_musicgen_milvus.gin (Milvus Lite) on the
tiny checkpoint (by repo id, offline cache), query by text, and check the ranking against
vectors computed by the reference; a logmel run refuses the CLAP projector, saying why."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from musicembed_core.audio import load_audio
from musicembed_core.testing import run_cli, run_params

QUERY = "positive jazzy lofi"


@pytest.fixture(scope="module")
def env(tiny):
    return {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "HF_HUB_CACHE": str(tiny.cache)}


@pytest.fixture(scope="module")
def expected(reference, example_dir):
    """Track id -> cosine with the query, from the reference towers (one 15 s window per
    6 s clip, so a track's vector is its one window vector)."""
    paths = sorted(p for p in example_dir.rglob("*") if p.is_file())
    text = reference.text([QUERY])[0]
    out = {}
    for p in paths:
        wave = torch.from_numpy(load_audio(p, 32000))[None]
        out[p.relative_to(example_dir).as_posix()] = float(reference.audio(wave)[0] @ text)
    return out


def _index_and_query(gin, sink_pkg, env, example_dir, out):
    pytest.importorskip(sink_pkg, reason=f"{sink_pkg} is not installed")
    summary = json.loads(run_cli("run", "--gin_file", gin, *run_params(example_dir, out), "--no-progress",
                                 "--json", env=env).stdout)
    assert summary["files_ok"] == summary["files_total"] >= 6
    assert summary["embeddings"][0]["dim"] == 12
    res = json.loads(run_cli("search", "--gin_file", gin, *run_params(example_dir, out), "--text", QUERY,
                             "-k", "50", "--json", env=env).stdout)
    return summary, res


def _check_ranking(res, expected):
    hits = res["hits"]
    assert len(hits) == len(expected)
    got = {h["id"]: h["score"] for h in hits}
    for track, score in expected.items():
        assert got[track] == pytest.approx(score, abs=1e-4), track
    assert [h["id"] for h in hits][0] == max(expected, key=expected.get)
    assert all(a["score"] >= b["score"] for a, b in zip(hits, hits[1:]))


def test_text_search_on_faiss(env, example_dir, expected, tmp_path):
    summary, res = _index_and_query("runs/clap_musicgen.gin", "musicembed_faiss", env, example_dir,
                                    tmp_path / "out")
    assert res["space_hash"] == summary["embeddings"][0]["space_hash"]
    _check_ranking(res, expected)


def test_text_search_on_milvus_lite(env, example_dir, expected, tmp_path):
    _, res = _index_and_query("runs/clap_musicgen_milvus.gin", "musicembed_milvus", env, example_dir,
                              tmp_path / "out")
    _check_ranking(res, expected)


def test_the_projector_is_refused_for_another_space(env, example_dir, tmp_path):
    pytest.importorskip("musicembed_faiss", reason="musicembed-faiss is not installed")
    gin, out = "runs/quickstart_faiss.gin", tmp_path / "logmel"
    run_cli("run", "--gin_file", gin, *run_params(example_dir, out), "--no-progress", env=env)
    proc = run_cli("search", "--gin_file", gin, *run_params(example_dir, out), "--text", QUERY,
                   "--gin_param", "embedding.projector=@projectors.clap_musicgen()",
                   "--gin_param", "projectors.clap_musicgen.model='yuhuacheng/clap-musicgen'",
                   env=env, check=False)
    assert proc.returncode == 2, proc.stderr
    msg = " ".join(proc.stderr.split())
    assert "projector 'clap_musicgen' cannot embed text into embedding 'logmel'" in msg
    assert "encoder.name: the projector's is 'clap_musicgen', the space's is 'logmel'" in msg


def test_zero_shot_tagging_on_the_example_clips(env, reference, example_dir, tmp_path):
    """`musicembed tag` with the CLAP run: every clip's tags are the labels closest to its
    vector (cosine of the reference towers), best first, in the JSON/CSV files and the sink."""
    pytest.importorskip("musicembed_faiss", reason="musicembed-faiss is not installed")
    labels = ["jazz", "rock", "ambient", "piano", "drums"]
    gin, out = "runs/clap_musicgen.gin", tmp_path / "out"
    run_cli("run", "--gin_file", gin, *run_params(example_dir, out), "--no-progress", env=env)
    res = json.loads(run_cli("tag", "--gin_file", gin, *run_params(example_dir, out), "--labels", ",".join(labels),
                             "--template", "{label} music", "--top-k", "2", "--json", env=env).stdout)
    text = reference.text([f"{label} music" for label in labels])
    tracks = {t["id"]: t["tags"] for t in res["tracks"]}
    assert len(tracks) >= 6
    for track_id, tags in tracks.items():
        wave = torch.from_numpy(load_audio(example_dir / track_id, 32000))[None]
        scores = (text @ reference.audio(wave)[0]).numpy()
        best = np.argsort(-scores)[:2]
        assert [t["label"] for t in tags] == [labels[i] for i in best], track_id
        assert [t["score"] for t in tags] == pytest.approx(scores[best].tolist(), abs=1e-4)
    assert (out / "tags").is_dir() and any((out / "tags").glob("*.csv"))
