"""Sink helpers (musicembed_core.sinkkit) and the example sink of docs/hooks.md built on them."""

from __future__ import annotations

import importlib.util
import json
import re
from pathlib import Path

import numpy as np
import pytest

from musicembed_core import (
    EmbeddingSpace,
    Record,
    check_stored_space,
    exact_rerank,
    exact_scores,
    exact_search,
    sink_not_found,
    space_record,
    stack_records,
    unit_rows,
)
from musicembed_core.errors import MusicembedError, SinkNotFoundError, SpaceMismatchError
from musicembed_core.testing import REPO, make_fake_dist, run_cli

DOCS = REPO / "docs" / "hooks.md"


def space(dim: int = 6, window: float = 5.0) -> EmbeddingSpace:
    return EmbeddingSpace(encoder={"name": "enc", "window_seconds": window}, enrichers=({"name": "mean"},),
                          dim=dim, name="emb")


def brute(q: np.ndarray, x: np.ndarray, metric: str) -> np.ndarray:
    """Scores [Q, n] in float64, written independently of the helpers."""
    q, x = q.astype(np.float64), x.astype(np.float64)
    if metric == "l2":
        return ((q[:, None, :] - x[None]) ** 2).sum(-1)
    if metric == "cosine":
        q = q / np.linalg.norm(q, axis=1, keepdims=True)
        x = x / np.linalg.norm(x, axis=1, keepdims=True)
    return q @ x.T


# ---------------------------------------------------------------------- exact search


@pytest.mark.parametrize("metric", ["cosine", "ip", "l2"])
def test_exact_search_matches_brute_force(metric):
    rng = np.random.default_rng(0)
    x = (3 * rng.standard_normal((500, 12))).astype(np.float32)
    q = rng.standard_normal((7, 12)).astype(np.float32)
    ids = [f"t{i}" for i in range(500)]
    meta = [{"n": i} for i in range(500)]
    hits = exact_search(x, ids, q, 10, metric, metadata=meta)
    s = brute(q, x, metric)
    for row, got in enumerate(hits):
        best = np.argsort(s[row] if metric == "l2" else -s[row], kind="stable")[:10]
        assert [h.id for h in got] == [ids[j] for j in best]
        assert [h.score for h in got] == pytest.approx(s[row, best], rel=1e-6, abs=1e-9)
        assert [h.metadata["n"] for h in got] == list(best)
    np.testing.assert_allclose(exact_scores(q, x, metric), s, rtol=1e-12, atol=1e-12)


def test_exact_search_mask_and_edges():
    rng = np.random.default_rng(1)
    x = rng.standard_normal((40, 4)).astype(np.float32)
    ids = [f"t{i}" for i in range(40)]
    mask = np.arange(40) % 5 == 0
    (hits,) = exact_search(x, ids, x[3], 40, "cosine", mask=mask)  # a 1-d query is one row
    assert sorted(h.id for h in hits) == sorted(ids[i] for i in range(0, 40, 5))
    assert exact_search(x, ids, x[:2], 3, "ip", mask=np.zeros(40, bool)) == [[], []]
    assert exact_search(np.zeros((0, 4), np.float32), [], x[:1], 3, "l2") == [[]]
    (self_hit, *_), = exact_search(x, ids, x[7:8], 2, "l2")
    assert self_hit.id == "t7" and self_hit.score == 0.0
    with pytest.raises(ValueError, match="metric must be one of cosine, ip, l2"):
        exact_search(x, ids, x[:1], 3, "hamming")
    with pytest.raises(ValueError, match=r"shape \(Q, 4\)"):
        exact_search(x, ids, np.ones((1, 5)), 3, "ip")


def test_exact_rerank_orders_dedups_and_drops_misses():
    x = np.array([[1, 0], [0, 1], [1, 1], [-1, 0]], np.float32)
    cand = np.array([[3, 1, 2, 2, -1, 0]])
    (hits,) = exact_rerank(x, list("abcd"), np.array([[1.0, 0.2]]), cand, 3, "cosine")
    assert [h.id for h in hits] == ["a", "c", "b"]
    assert hits[0].score == pytest.approx(1 / np.hypot(1, 0.2))


def test_unit_rows_keeps_zero_rows():
    out = unit_rows(np.array([[3.0, 4.0], [0.0, 0.0]]))
    assert out.dtype == np.float32 and np.allclose(out, [[0.6, 0.8], [0, 0]])


# ---------------------------------------------------------------------- records, space, errors


def test_stack_records_checks_and_keeps_the_last_duplicate():
    v = np.arange(6, dtype=np.float64)
    batch = stack_records([Record("a", v, "h1", {"x": 1}), Record("b", v + 1, "h2"),
                           Record("a", v * 2, "h3", {"x": 3})], 6, where="collection 'c'")
    assert batch.ids == ["b", "a"] and batch.content_hashes == ["h2", "h3"]
    assert batch.vectors.dtype == np.float32 and batch.vectors.flags.c_contiguous
    np.testing.assert_array_equal(batch.vectors[1], v * 2)
    assert batch.metadata == [{}, {"x": 3}] and len(batch) == 2
    assert len(stack_records([], 6, "c")) == 0
    with pytest.raises(ValueError, match=r"collection 'c' holds 6-dim vectors but the vector of record 'a' "
                                         r"has shape \(5,\)"):
        stack_records([Record("a", np.ones(5), "h")], 6, "collection 'c'")
    with pytest.raises(ValueError, match="record 'n' holds NaN"):
        stack_records([Record("n", np.full(6, np.nan), "h")], 6, "c")
    with pytest.raises(TypeError, match="non-empty str"):
        stack_records([Record("", v, "h")], 6, "c")
    with pytest.raises(TypeError, match="Record objects"):
        stack_records([("a", v)], 6, "c")


def test_space_record_and_check():
    sp = space()
    stored = space_record(sp)
    assert check_stored_space(stored, sp, where="f.npz") == sp
    with pytest.raises(SpaceMismatchError, match=r"f\.npz holds vectors of embedding space .*"
                                                 r"encoder\.window_seconds: stored 5\.0, now 4\.0"):
        check_stored_space(stored, space(window=4.0), where="f.npz")
    with pytest.raises(SpaceMismatchError, match="no embedding-space record.*not written by musicembed"):
        check_stored_space(None, sp, where="f.npz")
    with pytest.raises(SpaceMismatchError, match="unreadable"):
        check_stored_space("{not json", sp, where="f.npz")


def test_sink_not_found_says_what_to_run():
    err = sink_not_found("sinks.x collection 'emb' (/o/x)")
    assert isinstance(err, SinkNotFoundError) and isinstance(err, MusicembedError)
    assert "'emb' (/o/x) does not exist yet" in str(err) and "`musicembed run`" in str(err)


# ---------------------------------------------------------------------- the docs' example sink


def example_source() -> str:
    text = DOCS.read_text()
    m = re.search(r"<!-- example: npz_sink.py -->\n```python\n(.*?)\n```", text, re.S)
    assert m, "docs/hooks.md lost its npz sink example"
    return m.group(1) + "\n"


@pytest.fixture(scope="module")
def npz_module(tmp_path_factory):
    folder = tmp_path_factory.mktemp("npz_module")
    (folder / "npz_sink.py").write_text(example_source())
    spec = importlib.util.spec_from_file_location("npz_sink_example", folder / "npz_sink.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_example_sink_is_short():
    code = [line for line in example_source().splitlines() if line.strip()]
    assert len(code) <= 70


def test_example_sink_contract(npz_module, tmp_path):
    sp = space()
    rng = np.random.default_rng(2)
    x = rng.standard_normal((20, 6)).astype(np.float32)
    recs = [Record(f"t{i}", x[i], f"h{i}", {"duration": float(i)}) for i in range(20)]
    sink = npz_module.NpzSink(path=str(tmp_path / "vec"))
    with pytest.raises(SinkNotFoundError, match="musicembed run"):
        sink.open("emb", sp, readonly=True)
    assert not (tmp_path / "vec").exists()
    sink.open("emb", sp)
    sink.upsert(recs)
    sink.upsert(recs)  # idempotent
    sink.upsert([Record("t3", x[4], "new", {"duration": 3.0})])  # replaces
    sink.delete(["t5", "missing"])
    assert sink.count() == 19 and sink.known()["t3"] == "new"
    sink.close()
    again = npz_module.NpzSink(path=str(tmp_path / "vec"))
    again.open("emb", sp, readonly=True)
    assert again.count() == 19 and again.known()["t0"] == "h0"
    np.testing.assert_array_equal(again.fetch(["t3"])["t3"], x[4])
    (hits,) = again.search(x[7], k=3)
    assert hits[0].id == "t7" and hits[0].score == pytest.approx(1.0)
    assert hits[0].metadata == {"duration": 7.0, "content_hash": "h7"}
    (hits,) = again.search(x[7], k=20, filter="duration >= 15")
    assert sorted(h.id for h in hits) == [f"t{i}" for i in range(15, 20)]
    with pytest.raises(MusicembedError, match="read-only"):
        again.upsert(recs[:1])
    again.close()
    with pytest.raises(SpaceMismatchError, match="window_seconds"):
        npz_module.NpzSink(path=str(tmp_path / "vec")).open("emb", space(window=4.0))


def test_example_sink_as_an_installed_plugin(tmp_path, example_dir):
    """`musicembed run` into it, rerun skips, search by audio / id / filter, search before a run."""
    site = tmp_path / "site"
    site.mkdir()
    make_fake_dist(site, "npz_sink", example_source())
    env = {"PYTHONPATH": str(site)}
    out = tmp_path / "out"
    params = ["--gin_file", "runs/quickstart.gin",
              "--gin_param", f'run.source="{example_dir}"', "--gin_param", f'run.output_dir="{out}"',
              "--gin_param", "run.sinks=[@sinks.npz()]"]
    first = json.loads(run_cli("run", *params, "--no-progress", "--json", env=env).stdout)
    assert first["files_ok"] == first["files_total"] >= 6
    assert (out / "npz" / "logmel.npz").is_file()
    again = json.loads(run_cli("run", *params, "--no-progress", "--json", env=env).stdout)
    assert again["files_ok"] == 0 and again["files_skipped"] == first["files_ok"]
    res = json.loads(run_cli("search", *params, "--audio", str(example_dir / "jazz" / "b.flac"),
                             "-k", "3", "--json", env=env).stdout)
    assert res["hits"][0]["id"] == "jazz/b.flac" and res["hits"][0]["score"] == pytest.approx(1.0, abs=1e-4)
    res = json.loads(run_cli("search", *params, "--id", "jazz/b.flac", "--filter",
                             'path like "%/rock/%" or duration < 0', "--json", env=env).stdout)
    assert [h["id"] for h in res["hits"]] == ["rock/a.wav"]
    fresh = tmp_path / "fresh"
    proc = run_cli("search", *params[:-4], "--gin_param", f'run.output_dir="{fresh}"',
                   "--gin_param", "run.sinks=[@sinks.npz()]",
                   "--audio", str(example_dir / "c.ogg"), env=env, check=False)
    assert proc.returncode == 2 and "does not exist yet" in proc.stderr and "musicembed run" in proc.stderr
    assert not fresh.exists()


def test_docs_mention_every_helper():
    text = DOCS.read_text()
    for name in ("space_record", "check_stored_space", "stack_records", "sink_not_found", "exact_search",
                 "exact_rerank", "exact_scores", "unit_rows", "parse_filter", "readonly"):
        assert f"`{name}" in text or name in text, name
    assert Path(DOCS).is_file()
