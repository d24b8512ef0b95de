"""`musicembed search --text` and `musicembed tag` against a MuLan run: index the generated
example clips with runs/mulan.gin (FAISS) on the tiny checkpoint (repo id, offline cache), and
check scores against the encoder and projector called directly; a MuQ run refuses the MuLan
projector, saying why."""

from __future__ import annotations

import json

import pytest
import torch

from musicembed_core.audio import load_audio
from musicembed_core.testing import run_cli, run_params

QUERY = "calm piano with soft strings"


def _params(source, out, *extra):
    return run_params(source, out, "encoders.mulan.window_seconds=2.0", *extra)


@pytest.fixture(scope="module")
def env(tiny):
    return {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "HF_HUB_CACHE": str(tiny.cache)}


@pytest.fixture(scope="module")
def indexed(env, example_dir, tmp_path_factory):
    pytest.importorskip("musicembed_faiss", reason="musicembed-faiss is not installed")
    out = tmp_path_factory.mktemp("mulan_run")
    summary = json.loads(run_cli("run", "--gin_file", "runs/mulan.gin", *_params(example_dir, out),
                                 "--no-progress", "--json", env=env).stdout)
    assert summary["files_ok"] == summary["files_total"] >= 6
    assert summary["embeddings"][0]["dim"] == 64
    return out, summary


def _expected(example_dir, monkeypatch, tiny):
    """Track id -> cosine with the query: the mean of the track's 2 s window vectors from the
    encoder, re-normalised (the shipped chain), against the projector's text vector."""
    from musicembed_muq import MulanEncoder, MulanProjector

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tiny.cache))
    enc = MulanEncoder(window_seconds=2.0)
    geo = enc.geometry()
    text = MulanProjector().embed_text([QUERY])[0]
    out = {}
    for p in sorted(q for q in example_dir.rglob("*") if q.is_file()):
        wave = torch.from_numpy(load_audio(p, 24000))
        n = geo.window_samples
        chunks = [wave[i:i + n] for i in range(0, len(wave), n)]
        chunks = [c for j, c in enumerate(chunks) if j == 0 or len(c) >= geo.min_samples]
        vecs = torch.cat([enc.encode(c[None])[0, :, 0] for c in chunks])
        track = torch.nn.functional.normalize(vecs.mean(0), dim=0)
        out[p.relative_to(example_dir).as_posix()] = float(track @ text)
    return out


def test_text_search_ranks_as_the_towers_do(indexed, env, example_dir, monkeypatch, tiny):
    out, summary = indexed
    res = json.loads(run_cli("search", "--gin_file", "runs/mulan.gin", *_params(example_dir, out),
                             "--text", QUERY, "-k", "50", "--json", env=env).stdout)
    assert res["space_hash"] == summary["embeddings"][0]["space_hash"]
    expected = _expected(example_dir, monkeypatch, tiny)
    got = {h["id"]: h["score"] for h in res["hits"]}
    assert set(got) == set(expected)
    for track, score in expected.items():
        assert got[track] == pytest.approx(score, abs=1e-4), track


def test_zero_shot_tags_from_the_mulan_projector(indexed, env, example_dir, tmp_path):
    out, _ = indexed
    res = run_cli("tag", "--gin_file", "runs/mulan.gin", *_params(example_dir, out),
                  "--labels", "jazz,rock,ambient", "--top-k", "2", "--json", env=env)
    text = res.stdout
    assert "jazz" in text or "rock" in text or "ambient" in text


def test_a_muq_run_refuses_the_mulan_projector(env, example_dir, tmp_path):
    out = tmp_path / "muq"
    params = []
    for p in (f'run.source="{example_dir}"', f'run.output_dir="{out}"', "encoders.muq.window_seconds=2.0",
              "embedding.projector=@projectors.mulan()"):
        params += ["--gin_param", p]
    res = run_cli("run", "--gin_file", "runs/muq.gin", *params, "--no-progress", env=env, check=False)
    assert res.returncode != 0
    assert "projector 'mulan'" in (res.stdout + res.stderr)
