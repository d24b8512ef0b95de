"""exporters.safetensors with store_frames: frame stacks in the shards, read back exactly.

Written through the exporter's own API (open/write/flush/close); the generic exporter
contract and kill -9 checks run in tests/test_conformance.py and tests/test_exporters.py."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from safetensors import safe_open

from musicembed_core.builtins import safetensors_export as st_mod
from musicembed_core.builtins.safetensors_export import SafetensorsExporter, read_frames, read_safetensors
from musicembed_core.errors import MusicembedError
from musicembed_core.stored import NoFramesError
from musicembed_core.testing.records import suite_frames, suite_record, suite_space

DIM = 8


def write(path: str, records: list, batch: int = 3, flush: bool = False, **kw) -> None:
    ex = SafetensorsExporter(**kw)
    ex.open(path, suite_space(DIM))
    for i in range(0, len(records), batch):
        ex.write(records[i : i + batch])
        if flush:
            ex.flush()
    ex.close()


def index_of(path: str) -> dict:
    return json.loads(Path(path, "index.json").read_text())


def test_frames_roundtrip_with_shards_rewrites_and_tracks_without_frames(tmp_path):
    path = str(tmp_path / "out.safetensors")
    # Frame counts 0 (no frames) .. 6; 3 records per shard.
    first = [suite_record(f"t{i}/é.flac", "v1", DIM, frames=i) for i in range(7)]
    write(path, first, shard_size=3, store_frames=True)
    # A second run rewrites t2 (new frames) and adds one track.
    again = [suite_record("t2/é.flac", "v2", DIM, frames=9), suite_record("new", "v1", DIM, frames=4)]
    write(path, again, shard_size=3, store_frames=True)
    want = {r.id: r for r in first} | {r.id: r for r in again}

    data = read_safetensors(path)
    assert sorted(data["ids"]) == sorted(want)
    for tid, h, v in zip(data["ids"], data["content_hash"], data["vectors"]):
        assert h == want[tid].content_hash
        np.testing.assert_array_equal(v, want[tid].vector)
    for tid, rec in want.items():
        got = read_frames(path, tid)
        assert got.dtype == np.float32 and got.flags.c_contiguous
        if rec.frames is None:
            assert got.shape == (2, 0, DIM)
        else:
            np.testing.assert_array_equal(got, rec.frames)

    index = index_of(path)
    assert index["frame_shape"] == [2, DIM]
    assert index["shards"][0] == {"file": "vectors-00001.safetensors", "count": 3, "frames": 0 + 1 + 2}
    with safe_open(os.path.join(path, "vectors-00002.safetensors"), framework="numpy") as st:
        frames, offsets, counts = (st.get_tensor(k) for k in ("frames", "frame_offset", "frame_count"))
    assert frames.dtype == np.float32 and frames.shape == (3 + 4 + 5, 2, DIM)  # [total, L, D]
    assert offsets.dtype == counts.dtype == np.int64
    assert counts.tolist() == [3, 4, 5] and offsets.tolist() == [0, 3, 7]
    np.testing.assert_array_equal(frames[3:7].transpose(1, 0, 2), suite_frames("t4/é.flac", "v1", DIM, 4))


def test_output_without_frames_reads_and_says_how_to_store_them(tmp_path):
    """store_frames=False (or an output written before frames existed): same files as
    before, and asking for frames is a clear error."""
    path = str(tmp_path / "out.safetensors")
    write(path, [suite_record(f"r{i}", "v1", DIM, frames=5) for i in range(4)], shard_size=3)
    index = index_of(path)
    assert "frame_shape" not in index and all("frames" not in s for s in index["shards"])
    with safe_open(os.path.join(path, "vectors-00001.safetensors"), framework="numpy") as st:
        assert list(st.keys()) == ["vectors"]
    assert sorted(read_safetensors(path)["ids"]) == ["r0", "r1", "r2", "r3"]
    with pytest.raises(NoFramesError) as err:
        read_frames(path, "r0")
    msg = str(err.value)
    assert path in msg and "--gin_param exporters.safetensors.store_frames=True" in msg
    with pytest.raises(KeyError, match="'nope' is not in safetensors output"):
        read_frames(path, "nope")

    # A later run with frames into the same output: old tracks read as [L, 0, D].
    write(path, [suite_record("late", "v1", DIM, frames=3)], store_frames=True)
    assert read_frames(path, "r1").shape == (2, 0, DIM)
    np.testing.assert_array_equal(read_frames(path, "late"), suite_frames("late", "v1", DIM, 3))


def test_another_layer_stack_shape_is_refused_naming_the_record(tmp_path):
    path = str(tmp_path / "out.safetensors")
    ex = SafetensorsExporter(store_frames=True)
    ex.open(path, suite_space(DIM))
    ex.write([suite_record("a", "v1", DIM, frames=3)])
    bad = suite_record("odd/one.mp3", "v1", DIM)
    bad.frames = np.zeros((3, 2, DIM), np.float32)
    with pytest.raises(ValueError, match=r"record 'odd/one.mp3': frames have \[L, D\] = \[3, 8\] but "
                                         r"safetensors output .* \[L, D\] = \[2, 8\]"):
        ex.write([bad])
    ex.close()
    # The shape is remembered across runs (index.json), not only within one.
    ex = SafetensorsExporter(store_frames=True)
    ex.open(path, suite_space(DIM))
    with pytest.raises(ValueError, match="odd/one.mp3"):
        ex.write([bad])
    flat = suite_record("flat", "v1", DIM)
    flat.frames = np.zeros((2, 8), np.float32)
    with pytest.raises(ValueError, match=r"record 'flat': frames must be \[L, F, D\]"):
        ex.write([flat])
    ex.close()
    assert read_safetensors(path)["ids"] == ["a"]


def test_buffered_frames_become_a_shard_before_shard_size(tmp_path, monkeypatch):
    """Frames make records large: the buffer is bounded in bytes too."""
    monkeypatch.setattr(st_mod, "_SHARD_FRAME_BYTES", 2 * 50 * DIM * 4 * 2)  # two 50-frame tracks
    path = str(tmp_path / "out.safetensors")
    ex = SafetensorsExporter(shard_size=1000, store_frames=True)
    ex.open(path, suite_space(DIM))
    records = [suite_record(f"r{i}", "v1", DIM, frames=50) for i in range(5)]
    for r in records:
        ex.write([r])
    shards = sorted(n for n in os.listdir(path) if n.endswith(".safetensors"))
    assert shards == ["vectors-00001.safetensors", "vectors-00002.safetensors"]  # r0-r1, r2-r3
    ex.close()
    assert [s["count"] for s in index_of(path)["shards"]] == [2, 2, 1]
    for r in records:
        np.testing.assert_array_equal(read_frames(path, r.id), r.frames)


def test_a_shard_a_killed_run_left_unindexed_is_adopted_with_its_frames(tmp_path):
    path = str(tmp_path / "out.safetensors")
    write(path, [suite_record("a", "v1", DIM, frames=4)], store_frames=True)
    before = Path(path, "index.json").read_bytes()
    write(path, [suite_record("b", "v1", DIM, frames=6)], store_frames=True)
    # As if killed between the shard's rename and the index write:
    Path(path, "index.json").write_bytes(before)
    ex = SafetensorsExporter(store_frames=True)
    ex.open(path, suite_space(DIM))
    assert sorted(ex.known()) == ["a", "b"]
    ex.close()
    assert index_of(path)["shards"][-1] == {"file": "vectors-00002.safetensors", "count": 1, "frames": 6}
    np.testing.assert_array_equal(read_frames(path, "b"), suite_frames("b", "v1", DIM, 6))


def test_an_unindexed_shard_with_other_frames_is_refused(tmp_path):
    a, b = str(tmp_path / "a.safetensors"), str(tmp_path / "b.safetensors")
    write(a, [suite_record("x", "v1", DIM, frames=2)], store_frames=True)
    other = suite_record("y", "v1", DIM)
    other.frames = np.zeros((5, 3, DIM), np.float32)
    write(b, [other], store_frames=True)
    shutil.copy(os.path.join(b, "vectors-00001.safetensors"), os.path.join(a, "vectors-00002.safetensors"))
    with pytest.raises(MusicembedError, match=r"shard vectors-00002.safetensors stores frames with "
                                              r"\[L, D\] = \[5, 8\], unlike the rest of the output"):
        SafetensorsExporter(store_frames=True).open(a, suite_space(DIM))


def test_the_gin_default_is_no_frames(manager):
    import gin

    from musicembed_core import ginconfig

    ginconfig.parse(["exporters/safetensors.gin"], [])
    ex = gin.get_configurable("exporters.safetensors")()
    assert ex.store_frames is False and ex.shard_size == 4096
