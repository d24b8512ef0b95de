"""`musicembed tag` end to end: index the generated clips with logmel into HDF5 + a real FAISS
sink, then tag them through a real text projector whose label vectors are known.

The test projector (``projectors.anchorproj``, installed into the subprocess as a plugin)
maps each label to the stored vector of one "anchor" track, read from the run's HDF5
output. So the anchor track's best tag is its own label (cosine 1), and every other
track's top-k is computed here independently, with numpy, from the HDF5 vectors.
"""

from __future__ import annotations

import csv
import json
import os
import shutil

import numpy as np
import pytest

from musicembed_core.stored import open_output
from musicembed_core.tagging import parse_labels, prompts, tagging_key, top_tags
from musicembed_core.errors import ConfigError
from musicembed_core.testing import make_fake_dist, run_cli, run_params, subprocess_env

pytest.importorskip("musicembed_faiss", reason="the musicembed-faiss plugin is not installed")

RUN_GIN = "runs/quickstart_faiss.gin"  # HDF5 + FAISS, shipped by musicembed-faiss
ANCHORS = {"jazz": "jazz/b.flac", "rock": "rock/a.wav", "ambient": "c.ogg", "lofi": "d.mp3"}
LABELS = "jazz,rock,ambient,lofi"

PROJECTOR = '''
import numpy as np
from musicembed_core import TextProjector, hookimpl
from musicembed_core.stored import open_output


class AnchorProjector(TextProjector):
    """Text -> the stored vector of the anchor track of the label named in the text."""

    name = "anchorproj"

    def __init__(self, output: str = "", anchors: dict = None, encoder: str = "logmel"):
        self.output = output
        self.anchors = dict(anchors or {})
        self.encoder = encoder
        self._vectors = None

    def target(self):
        return {"encoder": self.encoder,
                "enrichers": ["layers", "stats", "flatten", "l2_normalize"]}

    def load(self):
        if self._vectors is None:
            with open_output(self.output) as out:
                matrix = out.vectors()
                self._vectors = {tid: matrix[i] for i, tid in enumerate(out.ids)}

    def embed_text(self, texts):
        rows = []
        for text in texts:
            words = text.split()
            label = next((lab for lab in self.anchors if lab in words), None)
            if label is None:
                raise ValueError(f"anchorproj: no anchor label in {text!r}")
            rows.append(self._vectors[self.anchors[label]])
        return np.stack(rows).astype("float32")


@hookimpl
def register_text_projectors(register):
    register(AnchorProjector)
'''


@pytest.fixture(scope="module")
def indexed(tmp_path_factory, example_dir):
    """One indexed library (HDF5 + FAISS) and the plugin site with the test projector."""
    root = tmp_path_factory.mktemp("tag")
    out = root / "out"
    proc = run_cli("run", "--gin_file", RUN_GIN, *run_params(example_dir, out), "--no-progress", "--json")
    summary = json.loads(proc.stdout)
    assert summary["files_ok"] == summary["files_total"] >= 6
    site = root / "site"
    site.mkdir()
    make_fake_dist(site, "anchorproj_plugin", PROJECTOR)
    return example_dir, out, summary, site


@pytest.fixture
def lib(indexed, tmp_path):
    """A private copy of the indexed output (tagging writes into the sink)."""
    source, out, summary, site = indexed
    copy = tmp_path / "out"
    shutil.copytree(out, copy)
    return source, copy, summary, site


def _env(site):
    """The test's own imports plus the plugin site holding the test projector."""
    env = subprocess_env()
    env["PYTHONPATH"] = os.pathsep.join([str(site), env["PYTHONPATH"]])
    return env


def _projector_params(out):
    anchors = json.dumps(ANCHORS)
    return ["--gin_param", "embedding.projector=@projectors.anchorproj()",
            "--gin_param", f'projectors.anchorproj.output="{out / "logmel.h5"}"',
            "--gin_param", f"projectors.anchorproj.anchors={anchors}"]


def _cli(lib, cmd, *args, check=True, projector=True, gin=RUN_GIN):
    source, out, _, site = lib
    extra = _projector_params(out) if projector else []
    return run_cli(cmd, "--gin_file", gin, *run_params(source, out), *extra, *args,
                   env=_env(site), check=check)


def _tag(lib, *args, check=True, **kw):
    return _cli(lib, "tag", *args, "--no-progress", check=check, **kw)


def _expected(out, labels, top_k, threshold=None):
    """{track id: [(label, score), ...]} computed here from the HDF5 vectors."""
    with open_output(out / "logmel.h5") as h5:
        x = h5.vectors().astype(np.float64)
        ids = list(h5.ids)
    row = {tid: i for i, tid in enumerate(ids)}
    t = np.stack([x[row[ANCHORS[label]]] for label in labels])
    cos = (t @ x.T) / (np.linalg.norm(t, axis=1)[:, None] * np.linalg.norm(x, axis=1)[None, :])
    want = {}
    for j, tid in enumerate(ids):
        order = sorted(range(len(labels)), key=lambda i: -cos[i, j])[:top_k]
        want[tid] = [(labels[i], cos[i, j]) for i in order if threshold is None or cos[i, j] >= threshold]
    return want


def _check_tags(tracks, want):
    got = {t["id"]: [(x["label"], x["score"]) for x in t["tags"]] for t in tracks}
    assert set(got) == set(want)
    for tid, tags in want.items():
        assert [label for label, _ in got[tid]] == [label for label, _ in tags], tid
        for (_, g), (_, w) in zip(got[tid], tags):
            assert g == pytest.approx(w, abs=1e-5)


def _search_ids(lib, flt):
    source = lib[0]
    res = json.loads(_cli(lib, "search", "--audio", str(source / "jazz" / "b.flac"), "-k", "50",
                          "--filter", flt, "--json", projector=False).stdout)
    return {h["id"] for h in res["hits"]}


# --------------------------------------------------------------------------- end to end


def test_tags_go_to_files_and_sink_metadata(lib):
    _, out, summary, _ = lib
    labels = LABELS.split(",")
    res = json.loads(_tag(lib, "--labels", LABELS, "--top-k", "2", "--json").stdout)
    n = summary["files_ok"]
    assert res["summary"]["tracks"] == res["summary"]["tagged"] == n
    assert res["summary"]["skipped"] == 0 and res["summary"]["sink_records_updated"] == n
    assert res["summary"]["sink"] == "faiss:logmel" and res["labels"] == labels
    assert res["metric"] == "cosine" and res["space_hash"] == summary["embeddings"][0]["space_hash"]
    want = _expected(out, labels, 2)
    _check_tags(res["tracks"], want)
    for label, tid in ANCHORS.items():  # each anchor's best tag is its own label, cosine 1
        assert want[tid][0][0] == label
        top = next(t for t in res["tracks"] if t["id"] == tid)["tags"][0]
        assert top["label"] == label and top["score"] == pytest.approx(1.0, abs=1e-5)

    # default files inside run.output_dir, the same tags
    csv_path, json_path = out / "tags" / "logmel.csv", out / "tags" / "logmel.json"
    assert res["summary"]["files"] == {"csv": str(csv_path), "json": str(json_path)}
    doc = json.loads(json_path.read_text())
    assert doc["tagged_with"] == res["tagged_with"] and doc["top_k"] == 2
    _check_tags(doc["tracks"], want)
    with open(csv_path, newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert list(rows[0]) == ["id", "path", "rank", "label", "score"]
    assert len(rows) == 2 * n
    for r in rows:
        label, score = want[r["id"]][int(r["rank"]) - 1]
        assert r["label"] == label and float(r["score"]) == pytest.approx(score, abs=1e-5)
        assert r["path"].endswith(r["id"])

    # the sink's metadata: usable by search --filter (core parser here, Milvus syntax too)
    best = {tid: tags[0][0] for tid, tags in want.items()}
    assert _search_ids(lib, 'meta["tag"] == "jazz"') == {t for t, b in best.items() if b == "jazz"}
    assert _search_ids(lib, 'tag == "rock"') == {t for t, b in best.items() if b == "rock"}
    with_lofi = {t for t, tags in want.items() if any(lab == "lofi" and s > 0.5 for lab, s in tags)}
    assert "d.mp3" in with_lofi
    assert _search_ids(lib, 'meta["tag_scores"]["lofi"] > 0.5') == with_lofi
    # the vectors were stored back unchanged: a track still finds itself first with score 1
    hit = json.loads(_cli(lib, "search", "--audio", str(lib[0] / "jazz" / "b.flac"), "-k", "1",
                          "--json", projector=False).stdout)["hits"][0]
    assert hit["id"] == "jazz/b.flac" and hit["score"] == pytest.approx(1.0, abs=1e-4)
    assert hit["metadata"]["tags"] == [lab for lab, _ in want["jazz/b.flac"]]
    assert hit["metadata"]["duration"] > 5


def test_rerun_skips_force_redoes_and_new_settings_retag(lib):
    _, out, summary, _ = lib
    n = summary["files_ok"]
    first = json.loads(_tag(lib, "--labels", LABELS, "--json").stdout)
    again = json.loads(_tag(lib, "--labels", "lofi, ambient,rock,jazz", "--json").stdout)  # same set
    assert again["summary"]["tagged"] == 0 and again["summary"]["skipped"] == n
    assert again["summary"]["sink_records_updated"] == 0
    assert again["tagged_with"] == first["tagged_with"]
    # the files still list every track, with the tags read back from the sink
    _check_tags(json.loads((out / "tags" / "logmel.json").read_text())["tracks"],
                _expected(out, LABELS.split(","), 3))
    forced = json.loads(_tag(lib, "--labels", LABELS, "--force", "--json").stdout)
    assert forced["summary"]["tagged"] == n and forced["summary"]["sink_records_updated"] == n
    other_k = json.loads(_tag(lib, "--labels", LABELS, "--top-k", "1", "--json").stdout)
    assert other_k["summary"]["tagged"] == n and other_k["tagged_with"] != first["tagged_with"]
    assert all(len(t["tags"]) == 1 for t in other_k["tracks"])
    summary_line = _tag(lib, "--labels", LABELS, "--top-k", "1").stderr
    assert f"tagged 0 of {n} tracks" in summary_line and "--force" in summary_line


def test_labels_file_template_and_threshold(lib, tmp_path):
    _, out, _, _ = lib
    f = tmp_path / "tags.txt"
    f.write_text("# genres\njazz\n\nrock\n  ambient  \nlofi\n")
    res = json.loads(_tag(lib, "--labels-file", str(f), "--template", "{label} music",
                          "--threshold", "0.999", "--json").stdout)
    assert res["labels"] == ["jazz", "rock", "ambient", "lofi"]
    assert res["prompts"] == ["jazz music", "rock music", "ambient music", "lofi music"]
    want = _expected(out, res["labels"], 3, threshold=0.999)
    _check_tags(res["tracks"], want)
    tagged = {t["id"] for t in res["tracks"] if t["tags"]}
    assert set(ANCHORS.values()) <= tagged and res["summary"]["untagged"] == len(want) - len(tagged)
    assert _search_ids(lib, 'meta["tag"] == "ambient"') == {"c.ogg"}


def test_without_sink_reads_the_hdf5_output(lib, tmp_path):
    """--no-sink (and a run without sinks): the HDF5 output is read, only the files are written,
    and the previous JSON file tells which tracks are done."""
    _, out, summary, _ = lib
    csv_path, json_path = tmp_path / "t.csv", tmp_path / "t.json"
    args = ["--labels", LABELS, "--no-sink", "--csv", str(csv_path), "--json-file", str(json_path)]
    res = json.loads(_tag(lib, *args, "--json").stdout)
    assert res["summary"]["sink"] is None and res["summary"]["source"] == str(out / "logmel.h5")
    assert res["summary"]["sink_records_updated"] == 0
    _check_tags(json.loads(json_path.read_text())["tracks"], _expected(out, LABELS.split(","), 3))
    assert csv_path.is_file() and not (out / "tags").exists()
    # the sink was not touched: it has no tag field at all
    proc = _cli(lib, "search", "--id", "c.ogg", "--filter", 'tag == "jazz"', projector=False,
                check=False)
    assert proc.returncode == 2 and "unknown field 'tag'" in proc.stderr
    again = json.loads(_tag(lib, *args, "--json").stdout)
    assert again["summary"]["skipped"] == summary["files_ok"] and again["summary"]["tagged"] == 0
    _check_tags(again["tracks"], _expected(out, LABELS.split(","), 3))
    # the core quickstart (HDF5 only) reads the same output
    only_h5 = json.loads(_tag(lib, "--labels", LABELS, "--json", gin="runs/quickstart.gin").stdout)
    assert only_h5["summary"]["tagged"] == summary["files_ok"]
    assert (out / "tags" / "logmel.json").is_file()


def test_milvus_lite_sink_gets_the_tags(indexed, tmp_path):
    """The same through sinks.milvus (Milvus Lite): native filters on the tag fields."""
    pytest.importorskip("musicembed_milvus", reason="the musicembed-milvus plugin is not installed")
    source, h5_out, summary, site = indexed
    out = tmp_path / "mout"
    gin = "runs/quickstart_milvus.gin"
    env = _env(site)
    base = ["--gin_file", gin, *run_params(source, out)]
    run_cli("run", *base, "--no-progress", env=env)
    lib = (source, out, summary, site)
    res = json.loads(_tag(lib, "--labels", LABELS, "--top-k", "2", "--json", gin=gin).stdout)
    assert res["summary"]["sink"] == "milvus:logmel"
    assert res["summary"]["sink_records_updated"] == summary["files_ok"]
    want = _expected(out, LABELS.split(","), 2)
    _check_tags(res["tracks"], want)

    def ids(flt):
        proc = run_cli("search", *base, "--id", "c.ogg", "-k", "50", "--filter", flt, "--json", env=env)
        return {h["id"] for h in json.loads(proc.stdout)["hits"]}

    best = {tid: tags[0][0] for tid, tags in want.items()}
    assert ids('meta["tag"] == "rock"') == {t for t, b in best.items() if b == "rock"}
    lofi = {t for t, tags in want.items() if "lofi" in [lab for lab, _ in tags]} - {"c.ogg"}
    assert lofi and ids('json_contains(meta["tags"], "lofi")') == lofi
    again = json.loads(_tag(lib, "--labels", LABELS, "--top-k", "2", "--json", gin=gin).stdout)
    assert again["summary"]["skipped"] == summary["files_ok"]
    _check_tags(again["tracks"], want)


# --------------------------------------------------------------------------- bad inputs


def test_empty_and_missing_labels_are_refused(lib, tmp_path):
    proc = _tag(lib, "--labels", " , ,", check=False)
    assert proc.returncode == 2 and "--labels" in proc.stderr and "empty" in proc.stderr
    empty = tmp_path / "none.txt"
    empty.write_text("# nothing\n\n")
    proc = _tag(lib, "--labels-file", str(empty), check=False)
    assert proc.returncode == 2 and "--labels-file" in proc.stderr and "empty" in proc.stderr
    proc = _tag(lib, check=False)
    assert proc.returncode == 2 and "no labels" in proc.stderr and "--labels-file" in proc.stderr
    proc = _tag(lib, "--labels", "jazz", "--template", "music", check=False)
    assert proc.returncode == 2 and "{label}" in proc.stderr
    proc = _tag(lib, "--labels", "jazz", "--top-k", "0", check=False)
    assert proc.returncode == 2 and "--top-k 0" in proc.stderr
    assert not (lib[1] / "tags").exists()


def test_run_never_made_is_refused_and_creates_nothing(indexed, tmp_path):
    source, out, _, site = indexed
    never = tmp_path / "never-run"
    env = _env(site)
    for gin in (RUN_GIN, "runs/quickstart.gin"):
        proc = run_cli("tag", "--gin_file", gin, *run_params(source, never), *_projector_params(out),
                       "--labels", LABELS, env=env, check=False)
        assert proc.returncode == 2, proc.stderr
        assert "nothing to tag" in proc.stderr or "no stored tracks" in proc.stderr
        assert "musicembed run" in proc.stderr
        assert not never.exists()
    proc = run_cli("tag", "--gin_file", "runs/no_such_run.gin", "--labels", LABELS, check=False)
    assert proc.returncode == 2 and "no_such_run.gin" in proc.stderr


def test_space_without_projector_names_the_binding(lib):
    proc = _tag(lib, "--labels", LABELS, projector=False, check=False)
    assert proc.returncode == 2
    assert "needs a text projector" in proc.stderr and "embedding.projector" in proc.stderr


def test_projector_of_another_space_is_refused(lib):
    _, out, summary, _ = lib
    proc = _tag(lib, "--labels", LABELS, "--gin_param", 'projectors.anchorproj.encoder="mert"',
                check=False)
    assert proc.returncode == 2
    err = " ".join(proc.stderr.split())
    assert f"(space {summary['embeddings'][0]['space_hash']})" in err
    assert "encoder.name: the projector's is 'mert', the space's is 'logmel'" in err
    assert not (out / "tags").exists()


# --------------------------------------------------------------------------- helpers


def test_parse_labels_and_key():
    assert parse_labels("jazz, rock,,jazz ,hip hop") == ["jazz", "rock", "hip hop"]
    with pytest.raises(ConfigError, match="not both"):
        parse_labels("a", "b.txt")
    with pytest.raises(ConfigError, match="no such file"):
        parse_labels(None, "/nonexistent/labels.txt")
    assert prompts(["jazz", "a {b}"], "{label} music") == ["jazz music", "a {b} music"]
    k = tagging_key("s", {"name": "p"}, ["a", "b"], "{label}", 3, None)
    assert k == tagging_key("s", {"name": "p"}, ["b", "a"], "{label}", 3, None)
    assert k != tagging_key("s", {"name": "p"}, ["a", "b"], "{label} music", 3, None)
    assert k != tagging_key("s", {"name": "q"}, ["a", "b"], "{label}", 3, None)


def test_top_tags_order_ties_and_threshold():
    scores = np.array([[0.1, 0.9], [0.5, 0.9], [0.3, -0.2]])  # [labels, tracks]
    assert top_tags(scores, ["a", "b", "c"], 2, None) == [[("b", 0.5), ("c", 0.3)],
                                                          [("a", 0.9), ("b", 0.9)]]
    assert top_tags(scores, ["a", "b", "c"], 3, 0.4) == [[("b", 0.5)], [("a", 0.9), ("b", 0.9)]]
