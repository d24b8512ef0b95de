"""`musicembed search` end to end: index generated clips with logmel into a real
FAISS sink, then query by audio file, by stored id and by text."""

from __future__ import annotations

import json
import re
import shlex
import shutil
from pathlib import Path

import pytest

from musicembed_core.testing import make_fake_dist, run_cli, run_params

pytest.importorskip("musicembed_faiss", reason="the musicembed-faiss plugin is not installed")

RUN_GIN = "runs/quickstart_faiss.gin"  # shipped by musicembed-faiss, found by name


@pytest.fixture(scope="module")
def indexed(tmp_path_factory, example_dir):
    out = tmp_path_factory.mktemp("search") / "out"
    proc = run_cli("run", "--gin_file", RUN_GIN, *run_params(example_dir, out), "--no-progress", "--json")
    summary = json.loads(proc.stdout)
    assert summary["files_ok"] == summary["files_total"] >= 6
    return example_dir, out, summary


def _search(indexed, *args, check=True, extra_params=()):
    source, out, _ = indexed
    return run_cli("search", "--gin_file", RUN_GIN, *run_params(source, out, *extra_params), *args,
                   check=check)


def test_audio_query_finds_itself_first(indexed):
    source, _, summary = indexed
    proc = _search(indexed, "--audio", str(source / "jazz" / "b.flac"), "-k", "3", "--json")
    res = json.loads(proc.stdout)
    assert res["space_hash"] == summary["embeddings"][0]["space_hash"]
    hits = res["hits"]
    assert [h["rank"] for h in hits] == [1, 2, 3]
    assert hits[0]["id"] == "jazz/b.flac"
    assert hits[0]["score"] == pytest.approx(1.0, abs=1e-4)
    assert hits[0]["path"].endswith("jazz/b.flac")
    assert hits[1]["score"] <= hits[0]["score"]


def test_audio_query_copy_outside_library(indexed, tmp_path):
    """A query file elsewhere is embedded by the same path: same vector, same top hit."""
    source, _, _ = indexed
    q = tmp_path / "query.mp3"
    shutil.copy(source / "d.mp3", q)
    res = json.loads(_search(indexed, "--audio", str(q), "--json").stdout)
    assert res["hits"][0]["id"] == "d.mp3"
    assert res["hits"][0]["score"] == pytest.approx(1.0, abs=1e-4)


def test_table_output(indexed):
    source, _, _ = indexed
    out = _search(indexed, "--audio", str(source / "rock" / "a.wav"), "-k", "2").stdout
    assert "rank" in out and "score" in out and "rock/a.wav" in out


def test_more_like_stored_id_excludes_itself(indexed):
    res = json.loads(_search(indexed, "--id", "jazz/b.flac", "-k", "4", "--json").stdout)
    ids = [h["id"] for h in res["hits"]]
    assert len(ids) == 4 and "jazz/b.flac" not in ids and len(set(ids)) == 4


def test_unknown_id_is_a_clear_error(indexed):
    proc = _search(indexed, "--id", "nope.wav", check=False)
    assert proc.returncode == 2 and "no such track" in proc.stderr and "nope.wav" in proc.stderr


def test_filter_on_metadata(indexed):
    source, _, summary = indexed
    a = str(source / "rock" / "a.wav")
    none = json.loads(_search(indexed, "--audio", a, "--filter", "duration > 1000", "--json").stdout)
    assert none["hits"] == []
    every = json.loads(_search(indexed, "--audio", a, "-k", "50", "--filter", "duration > 1",
                               "--json").stdout)
    assert len(every["hits"]) == summary["files_ok"]


def test_text_without_projector_names_what_is_needed(indexed):
    proc = _search(indexed, "--text", "calm piano with rain", check=False)
    assert proc.returncode == 2
    assert "needs a text projector" in proc.stderr and "embedding.projector" in proc.stderr


HASH_PROJECTOR = Path(__file__).with_name("hash_projector.py")  # projectors.hashproj


def test_text_query_through_a_projector(indexed, tmp_path):
    _, _, summary = indexed
    space, dim = summary["embeddings"][0]["space_hash"], summary["embeddings"][0]["dim"]
    make_fake_dist(tmp_path, "hashproj_plugin", HASH_PROJECTOR.read_text())
    env = {"PYTHONPATH": str(tmp_path)}
    source, out, _ = indexed
    base = ["search", "--gin_file", RUN_GIN, *run_params(source, out), "--text", "calm piano",
            "--json", "--gin_param", "embedding.projector=@projectors.hashproj()",
            "--gin_param", f"projectors.hashproj.dim={dim}"]
    ok = run_cli(*base, env=env)
    hits = json.loads(ok.stdout)["hits"]
    assert len(hits) == min(10, summary["files_ok"]) and hits[0]["score"] >= hits[-1]["score"]
    bad = run_cli(*base, "--gin_param", 'projectors.hashproj.encoder="mert"', env=env,
                  check=False)
    assert bad.returncode == 2 and f"(space {space})" in bad.stderr
    assert "encoder.name: the projector's is 'mert', the space's is 'logmel'" in " ".join(
        bad.stderr.split())


def test_other_space_is_refused(indexed):
    source, _, _ = indexed
    proc = _search(indexed, "--audio", str(source / "c.ogg"), check=False,
                   extra_params=["encoders.logmel.window_seconds=4.0"])
    assert proc.returncode == 2
    assert "window_seconds" in proc.stderr


def test_exactly_one_query(indexed):
    proc = _search(indexed, check=False)
    assert proc.returncode == 2 and "exactly one of --audio" in proc.stderr


def test_search_before_any_run_creates_nothing(tmp_path, example_dir):
    """The sink is opened read-only: no output folder, no faiss folder, a clear error."""
    out = tmp_path / "never-run"
    proc = run_cli("search", "--gin_file", RUN_GIN, *run_params(example_dir, out),
                   "--audio", str(example_dir / "c.ogg"), check=False)
    assert proc.returncode == 2
    assert "does not exist yet" in proc.stderr and "musicembed run" in proc.stderr
    assert not out.exists()
    out.mkdir()  # an output folder without the sink's files: still nothing created in it
    proc = run_cli("search", "--gin_file", RUN_GIN, *run_params(example_dir, out),
                   "--id", "c.ogg", check=False)
    assert proc.returncode == 2 and "logmel.faiss" in proc.stderr
    assert list(out.iterdir()) == []


def test_run_without_sink_suggests_a_binding_that_works(tmp_path, example_dir):
    """Follow the hint literally: the run gains a sink, and the search then works."""
    quickstart = "runs/quickstart.gin"
    out = tmp_path / "x"
    proc = run_cli("search", "--gin_file", quickstart, *run_params(example_dir, out),
                   "--audio", str(example_dir / "c.ogg"), check=False)
    assert proc.returncode == 2 and "no sink" in proc.stderr
    assert "gin/sinks/faiss.gin" not in proc.stderr  # the old hint: a file that sets no run.sinks
    run_line = next(line for line in proc.stderr.splitlines() if "musicembed run ..." in line)
    hint = shlex.split(run_line.split("...", 1)[1])
    assert hint == ["--gin_param", "run.sinks=[@sinks.faiss()]"]
    assert re.search(r"runs/quickstart_faiss\.gin", proc.stderr)
    summary = json.loads(run_cli("run", "--gin_file", quickstart, *run_params(example_dir, out), *hint,
                                 "--no-progress", "--json").stdout)
    assert summary["files_ok"] >= 6
    res = json.loads(run_cli("search", "--gin_file", quickstart, *run_params(example_dir, out), *hint,
                             "--audio", str(example_dir / "c.ogg"), "--json").stdout)
    assert res["hits"][0]["id"] == "c.ogg"
