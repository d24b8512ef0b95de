"""Static sharding (``run --shard-index I --num-shards N``) and ``musicembed merge``."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import h5py
import numpy as np
import pytest

from musicembed_core import ginconfig
from musicembed_core.builtins.hdf5 import read_hdf5
from musicembed_core.builtins.safetensors_export import read_safetensors
from musicembed_core.errors import MusicembedError
from musicembed_core.shards import merge_shards, select_shard, shard_of
from musicembed_core.testing import REPO, run_cli

QUICKSTART = str(REPO / "gin" / "runs" / "quickstart.gin")
BOTH = "run.exporters = [@exporters.hdf5(), @exporters.safetensors()]"


def _execute(lib: Path, out: Path, *params: str):
    from musicembed_core.runconfig import run_config
    from musicembed_core.runner import execute

    ginconfig.clear()
    ginconfig.parse([QUICKSTART], [f"run.source = '{lib}'", f"run.output_dir = '{out}'", *params])
    try:
        return execute(run_config(), show_progress=False)
    finally:
        ginconfig.clear()


@pytest.fixture(scope="module")
def library(example_dir, tmp_path_factory) -> Path:
    from musicembed_core.examples import synth_clip, write_audio

    lib = tmp_path_factory.mktemp("shards") / "Music"
    shutil.copytree(example_dir, lib)
    for i in range(5):
        write_audio(lib / "extra" / f"x{i}.wav", synth_clip(3.0, 16000, seed=40 + i), 16000)
    return lib


def _sorted(data: dict) -> dict:
    order = np.argsort(data["ids"])
    return {"ids": [data["ids"][i] for i in order], "vectors": data["vectors"][order],
            "content_hash": [data["content_hash"][i] for i in order],
            "metadata": [data["metadata"][i] for i in order], "space": data["space"]}


def test_the_partition_is_a_stable_hash_of_the_track_id():
    # The documented rule: sha256(id) first 8 bytes, big-endian, modulo N.
    import hashlib

    names = ("a.wav", "rock/a.wav", "jazz/b.flac", "é.mp3")
    assert [shard_of(t, 3) for t in names] == [0, 2, 1, 1]  # never changes between versions
    assert all(shard_of(t, 7) == int.from_bytes(hashlib.sha256(t.encode()).digest()[:8], "big") % 7
               for t in names)
    ids = [f"album{i // 10}/track{i}.flac" for i in range(300)]
    parts = [select_shard([type("J", (), {"id": t})() for t in ids], k, 3) for k in range(3)]
    got = sorted(j.id for p in parts for j in p)
    assert got == sorted(ids)  # disjoint and covering
    assert all(60 < len(p) < 140 for p in parts)


def test_three_merged_shards_equal_the_unsharded_run(library, tmp_path):
    whole = _execute(library, tmp_path / "whole", BOTH)
    base = tmp_path / "sharded"
    counts = []
    for i in range(3):
        s = _execute(library, base, BOTH, f"run.shard_index = {i}", "run.num_shards = 3")
        assert s.output_dir == str(base / f"shard-{i}-of-3") and s.shard["count"] == 3
        assert json.loads((base / f"shard-{i}-of-3" / "summary.json").read_text())["shard"]["index"] == i
        counts.append(s.files_ok)
    assert sum(counts) == whole.files_ok == 12 and all(counts)

    merged = run_cli("merge", "--gin_file", QUICKSTART, "--gin_param", f"run.source = '{library}'",
                     "--gin_param", f"run.output_dir = '{base}'", "--gin_param", BOTH, "--json")
    report = json.loads(merged.stdout)
    assert {m["name"] for m in report} == {"logmel.h5", "logmel.safetensors"}
    assert all(m["tracks"] == 12 and m["duplicates"] == 0 for m in report)
    for reader, name in ((read_hdf5, "logmel.h5"), (read_safetensors, "logmel.safetensors")):
        a, b = _sorted(reader(str(tmp_path / "whole" / name))), _sorted(reader(str(base / name)))
        assert a["ids"] == b["ids"] and a["content_hash"] == b["content_hash"]
        assert a["metadata"] == b["metadata"] and a["space"] == b["space"]
        assert np.array_equal(a["vectors"], b["vectors"])
    with h5py.File(tmp_path / "whole" / "logmel.h5") as fa, h5py.File(base / "logmel.h5") as fb:
        assert dict(fa.attrs) == dict(fb.attrs)
    assert not [p.name for p in base.iterdir() if "merge-tmp" in p.name]

    # The merged folder is what an unsharded run would have written: a rerun there skips all,
    # from the merged hash caches (no file is re-read).
    again = _execute(library, base, BOTH)
    assert (again.files_ok, again.files_skipped) == (0, 12)
    assert again.timings.get("hash", 0.0) < 0.5

    # Merging again into the same folder is refused, unless --force.
    with pytest.raises(MusicembedError, match="exists already.*--force"):
        merge_shards(sorted(base.glob("shard-*")), base)
    merge_shards(sorted(base.glob("shard-*")), base, force=True)
    assert len(read_safetensors(str(base / "logmel.safetensors"))["ids"]) == 12


def test_merge_refuses_other_spaces_and_conflicting_content(library, tmp_path):
    from musicembed_core.examples import synth_clip, write_audio

    one = tmp_path / "one"
    write_audio(one / "a.wav", synth_clip(2.0, 16000, seed=1), 16000)
    write_audio(one / "b.wav", synth_clip(2.0, 16000, seed=2), 16000)
    _execute(one, tmp_path / "o1")
    _execute(one, tmp_path / "o2")  # the same tracks, same content
    report = merge_shards([tmp_path / "o1", tmp_path / "o2"], tmp_path / "same")
    assert (report[0].tracks, report[0].duplicates) == (2, 2)

    _execute(one, tmp_path / "other-space", "encoders.logmel.window_seconds = 5.0")
    with pytest.raises(MusicembedError, match="different embedding spaces"):
        merge_shards([tmp_path / "o1", tmp_path / "other-space"], tmp_path / "m1")

    two = tmp_path / "two"
    write_audio(two / "a.wav", synth_clip(2.0, 16000, seed=3), 16000)  # same id, other audio
    _execute(two, tmp_path / "o3")
    with pytest.raises(MusicembedError, match=r"track 'a.wav' is in .* and in .*changed"):
        merge_shards([tmp_path / "o1", tmp_path / "o3"], tmp_path / "m2")
    assert not (tmp_path / "m2" / "logmel.h5").exists()


def test_cli_shard_options_and_a_missing_shard(library, tmp_path):
    out = tmp_path / "out"
    args = ["--gin_file", QUICKSTART, "--gin_param", f"run.source = '{library}'",
            "--gin_param", f"run.output_dir = '{out}'"]
    proc = run_cli("run", *args, "--no-progress", "--json", "--shard-index", "1", "--num-shards", "3")
    summary = json.loads(proc.stdout)
    assert summary["shard"] == {"index": 1, "count": 3, "files_in_source": 12}
    ids = read_hdf5(str(out / "shard-1-of-3" / "logmel.h5"))["ids"]
    assert sorted(ids) == sorted(i for i in ids if shard_of(i, 3) == 1) and len(ids) == summary["files_ok"]

    bad = run_cli("run", *args, "--shard-index", "3", "--num-shards", "3", check=False)
    assert bad.returncode == 2 and "must be below --num-shards" in bad.stderr
    missing = run_cli("merge", *args, check=False)
    assert missing.returncode == 2
    assert "--shard-index 0 --num-shards 3" in missing.stderr and "--shard-index 2" in missing.stderr
