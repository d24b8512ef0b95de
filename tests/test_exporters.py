"""HDF5 and safetensors exporters: format specifics and kill -9 at each internal step.

The generic contract (rewrites, space and dim refusal, reopen, kill -9 during writes and
close) runs as the conformance suite in tests/test_conformance.py."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
import zlib
from pathlib import Path

import h5py
import numpy as np
import pytest

from musicembed_core import atomic
from musicembed_core.builtins import hdf5 as hdf5_mod
from musicembed_core.builtins.hdf5 import Hdf5Exporter, read_frames, read_hdf5
from musicembed_core.builtins import safetensors_export as st_mod
from musicembed_core.builtins.safetensors_export import SafetensorsExporter, read_safetensors
from musicembed_core.components import Record
from musicembed_core.errors import SpaceMismatchError
from musicembed_core.space import EmbeddingSpace

REPO = Path(__file__).resolve().parents[1]
DEAD_PID = 99999999  # above any Linux pid_max


def make_space(dim: int = 8, revision: int | None = None) -> EmbeddingSpace:
    encoder = {"name": "t"} if revision is None else {"name": "t", "revision": revision}
    return EmbeddingSpace(encoder=encoder, enrichers=({"name": "mean"},), dim=dim)


def vec(tid: str, h: str, dim: int = 8) -> np.ndarray:
    rng = np.random.default_rng(zlib.crc32(f"{tid}|{h}".encode("utf-8", "surrogateescape")))
    return rng.standard_normal(dim).astype(np.float32)


def frames_of(tid: str, h: str) -> np.ndarray:
    seed = zlib.crc32(f"{tid}|{h}|f".encode("utf-8", "surrogateescape"))
    return np.random.default_rng(seed).standard_normal((2, 1 + seed % 3, 4)).astype(np.float32)


def rec(tid: str, h: str = "v1", dim: int = 8, frames: bool = False) -> Record:
    return Record(
        id=tid, vector=vec(tid, h, dim), content_hash=h,
        metadata={"path": f"/music/{tid}", "duration": 1.5, "size": np.int64(len(tid))},
        frames=frames_of(tid, h) if frames else None,
    )


KINDS = {
    "hdf5": (lambda **kw: Hdf5Exporter(checkpoint_every=4, chunk_rows=4, **kw), read_hdf5, "out.h5"),
    "safetensors": (lambda **kw: SafetensorsExporter(shard_size=4, **kw), read_safetensors, "out.safetensors"),
}


@pytest.fixture(params=sorted(KINDS))
def kind(request, tmp_path):
    make, read, name = KINDS[request.param]
    return request.param, make, read, str(tmp_path / name)


def write_all(make, path, space, records, batch=3, **kw):
    ex = make(**kw)
    ex.open(path, space)
    for i in range(0, len(records), batch):
        ex.write(records[i : i + batch])
    ex.close()
    return ex


def snapshot(path: str) -> dict[str, tuple[int, int]]:
    files = [path] if os.path.isfile(path) else [os.path.join(path, n) for n in os.listdir(path)]
    return {f: (os.stat(f).st_ino, os.stat(f).st_mtime_ns) for f in files}


# --------------------------------------------------------------------------- both exporters


def test_roundtrip_known_and_no_rewrite(kind):
    _, make, read, path = kind
    space = make_space()
    records = [rec(f"t{i:02d}/é song.flac") for i in range(10)] + [rec("bad\udcffname.mp3")]
    write_all(make, path, space, records)

    out = read(path)
    assert out["ids"] == [r.id for r in records]
    np.testing.assert_array_equal(out["vectors"], np.stack([r.vector for r in records]))
    assert out["vectors"].dtype == np.float32
    assert out["content_hash"] == ["v1"] * len(records)
    assert out["metadata"][0] == {"path": f"/music/{records[0].id}", "duration": 1.5, "size": len(records[0].id)}
    assert out["space"]["hash"] == space.hash == out["space_hash"]

    before = snapshot(path)
    ex = make()
    ex.open(path, space)
    assert dict(ex.known()) == {r.id: "v1" for r in records}
    ex.close()  # nothing new: must not rewrite anything
    assert snapshot(path) == before


def test_empty_first_run_creates_valid_output(kind):
    _, make, read, path = kind
    write_all(make, path, make_space(), [])
    out = read(path)
    assert out["ids"] == [] and out["vectors"].shape == (0, 8)


def test_space_mismatch_in_leftovers_of_killed_run(kind):
    """A killed run left only segments/unindexed shards: their space is checked too."""
    name, make, _, path = kind
    ex = make()
    ex.open(path, make_space())
    ex.write([rec(f"x{i}") for i in range(4)])  # one checkpoint / shard, never closed
    if name == "safetensors":
        os.unlink(os.path.join(path, "index.json"))  # as if killed before the first index write
    else:
        assert not os.path.exists(path) and os.listdir(path + ".pending")
    with pytest.raises(SpaceMismatchError, match=os.path.basename(path)):
        make().open(path, make_space(revision=2))
    again = make()
    again.open(path, make_space())
    assert set(again.known()) == {f"x{i}" for i in range(4)}


def test_wrong_dim_refused(kind):
    _, make, _, path = kind
    ex = make()
    ex.open(path, make_space())
    with pytest.raises(ValueError) as err:
        ex.write([rec("ok"), Record("short.wav", np.zeros(7, np.float32), "h")])
    msg = str(err.value)
    assert "short.wav" in msg and "7" in msg and "8" in msg
    assert "ok" not in ex.known()  # the whole batch was refused


# --------------------------------------------------------------------------- hdf5 specifics


def test_hdf5_layout(tmp_path):
    path = str(tmp_path / "sub" / "emb.h5")
    space = make_space()
    write_all(lambda: Hdf5Exporter(chunk_rows=16, compression="gzip"), path, space, [rec(f"r{i}") for i in range(5)])
    with h5py.File(path, "r") as f:
        assert f.attrs["format"] == "musicembed-hdf5" and f.attrs["format_version"] == 1
        assert f.attrs["dim"] == 8 and f.attrs["space_hash"] == space.hash
        assert json.loads(f.attrs["space"])["hash"] == space.hash
        v = f["vectors"]
        assert v.dtype == np.float32 and v.shape == (5, 8) and v.chunks == (16, 8)
        assert v.maxshape == (None, 8) and v.compression == "gzip"
        for key in ("ids", "content_hash", "metadata"):
            assert h5py.check_string_dtype(f[key].dtype).encoding == "utf-8"
        assert json.loads(f["metadata"][0].decode())["path"] == "/music/r0"
        assert "frames" not in f
    assert not os.path.exists(path + ".pending")
    assert os.listdir(tmp_path / "sub") == ["emb.h5"]


def test_hdf5_frames_roundtrip_and_copy(tmp_path, monkeypatch):
    # Tiny copy budget: consolidation goes through many blocks and per-track frame pieces.
    monkeypatch.setattr(hdf5_mod, "_COPY_BYTES", 40)
    path = str(tmp_path / "f.h5")
    space = make_space()
    make = lambda: Hdf5Exporter(store_frames=True, checkpoint_every=3, chunk_rows=2, compression="lzf")  # noqa: E731
    first = [rec(f"a{i}", frames=(i != 3)) for i in range(9)]
    write_all(make, path, space, first, batch=2)
    write_all(make, path, space, [rec("a1", "v2", frames=True), rec("b", frames=True)])
    want = {r.id: r for r in first} | {"a1": rec("a1", "v2", frames=True), "b": rec("b", frames=True)}
    out = read_hdf5(path)
    assert sorted(out["ids"]) == sorted(want)
    for tid in want:
        got = read_frames(path, tid)
        if want[tid].frames is None:
            assert got.shape == (2, 0, 4)
        else:
            np.testing.assert_array_equal(got, want[tid].frames)
    for tid, v in zip(out["ids"], out["vectors"]):
        np.testing.assert_array_equal(v, want[tid].vector)
    with pytest.raises(KeyError):
        read_frames(path, "nope")
    ex = Hdf5Exporter(store_frames=True)
    ex.open(path, space)
    with pytest.raises(ValueError, match="bad"):
        ex.write([Record("bad", vec("bad", "v1"), "v1", frames=np.zeros((3, 2, 4), np.float32))])


def test_hdf5_pending_segments_and_stale_temps(tmp_path):
    path = str(tmp_path / "p.h5")
    space = make_space()
    write_all(lambda: Hdf5Exporter(), path, space, [rec("old")])
    ex = Hdf5Exporter(checkpoint_every=4)
    ex.open(path, space)
    ex.write([rec(f"n{i}") for i in range(4)])  # a checkpoint: one durable segment
    ex.write([rec("n4"), rec("n5")])  # buffered only
    # "killed" here. Leftovers of dead processes are removed on the next open:
    stale = [f"{path}.tmp-{DEAD_PID}", os.path.join(path + ".pending", f"seg-00000009-1.h5.tmp-{DEAD_PID}")]
    for s in stale:
        Path(s).write_bytes(b"garbage")
    assert read_hdf5(path)["ids"] == ["old"]  # the main file is untouched during a run

    ex2 = Hdf5Exporter()
    ex2.open(path, space)
    assert not any(os.path.exists(s) for s in stale)
    assert set(ex2.known()) == {"old", "n0", "n1", "n2", "n3"}
    ex2.close()  # consolidates the killed run's segment
    assert read_hdf5(path)["ids"] == ["old", "n0", "n1", "n2", "n3"]
    assert not os.path.exists(path + ".pending")
    # Killed after deleting the last segment but before removing the folder:
    os.mkdir(path + ".pending")
    before = snapshot(path)
    ex3 = Hdf5Exporter()
    ex3.open(path, space)
    ex3.close()
    assert not os.path.exists(path + ".pending") and snapshot(path) == before


def test_hdf5_refuses_foreign_file(tmp_path):
    path = str(tmp_path / "foreign.h5")
    with h5py.File(path, "w") as f:
        f["x"] = [1]
    with pytest.raises(Exception, match="not a musicembed HDF5"):
        Hdf5Exporter().open(path, make_space())


def test_safetensors_layout(tmp_path):
    from safetensors import safe_open

    path = str(tmp_path / "emb.safetensors")
    space = make_space()
    write_all(lambda: SafetensorsExporter(shard_size=4), path, space, [rec(f"r{i}") for i in range(6)])
    assert sorted(os.listdir(path)) == ["index.json", "vectors-00001.safetensors", "vectors-00002.safetensors"]
    index = json.loads(Path(path, "index.json").read_text())
    assert index["format"] == "musicembed-safetensors" and index["dim"] == 8
    assert index["space"]["hash"] == index["space_hash"] == space.hash
    assert index["shards"] == [{"file": "vectors-00001.safetensors", "count": 4},
                               {"file": "vectors-00002.safetensors", "count": 2}]
    assert index["entries"]["r5"] == ["vectors-00002.safetensors", 1, "v1"]
    with safe_open(os.path.join(path, "vectors-00001.safetensors"), framework="numpy") as st:
        meta = st.metadata()
        assert st.get_tensor("vectors").shape == (4, 8)
    assert json.loads(meta["ids"]) == ["r0", "r1", "r2", "r3"]
    assert json.loads(meta["content_hash"]) == ["v1"] * 4
    assert json.loads(meta["metadata"])[0]["path"] == "/music/r0"
    assert meta["space_hash"] == space.hash
    # A shard whose rows are all superseded is dropped and deleted.
    write_all(lambda: SafetensorsExporter(shard_size=4), path, space, [rec(f"r{i}", "v2") for i in range(4)])
    assert "vectors-00001.safetensors" not in os.listdir(path)
    assert sorted(read_safetensors(path)["ids"]) == [f"r{i}" for i in range(6)]


def test_atomic_write_and_stale_cleanup(tmp_path):
    target = tmp_path / "a.json"
    atomic.atomic_write_json(target, {"x": 1})
    atomic.atomic_write_text(target, "new")
    assert target.read_text() == "new"
    (tmp_path / f"a.json.tmp-{DEAD_PID}").write_text("junk")
    (tmp_path / f"a.json.tmp-{os.getpid()}").write_text("mine, live")
    removed = atomic.clean_stale_temps(tmp_path)
    assert removed == [str(tmp_path / f"a.json.tmp-{DEAD_PID}")]
    assert sorted(os.listdir(tmp_path)) == ["a.json", f"a.json.tmp-{os.getpid()}"]
    with pytest.raises(RuntimeError):
        with atomic.atomic_path(target) as tmp:
            Path(tmp).write_text("half")
            raise RuntimeError("boom")
    assert target.read_text() == "new" and not os.path.exists(atomic.temp_path(target))


# --------------------------------------------------------------------------- kill -9

CHILD = r"""
import json, os, sys, time, zlib
import numpy as np
cfg = json.loads(sys.argv[1])
sys.path.insert(0, cfg["repo"])
from musicembed_core.builtins import hdf5 as H, safetensors_export as S
from musicembed_core.components import Record
from musicembed_core.space import EmbeddingSpace

def vec(tid, h, dim):
    return np.random.default_rng(zlib.crc32(f"{tid}|{h}".encode())).standard_normal(dim).astype(np.float32)

def frames_of(tid, h):
    seed = zlib.crc32(f"{tid}|{h}|f".encode())
    return np.random.default_rng(seed).standard_normal((2, 1 + seed % 3, 4)).astype(np.float32)

def stall():
    print("hook", flush=True)
    time.sleep(120)
    os._exit(3)

path, hook, dim = cfg["path"], cfg["hook"], cfg["dim"]
real_replace, real_unlink = os.replace, os.unlink
if hook == "replace_before":
    def replace(src, dst):
        if os.fspath(dst) == path:
            stall()
        return real_replace(src, dst)
    os.replace = replace
elif hook == "replace_after":
    def replace(src, dst):
        real_replace(src, dst)
        if os.fspath(dst) == path:
            stall()
    os.replace = replace
elif hook == "unlink_mid":
    def unlink(p):
        real_unlink(p)
        if ".pending" in os.fspath(p) and os.fspath(p).endswith(".h5"):
            stall()
    os.unlink = unlink
elif hook == "copy":
    H._COPY_BYTES = 4 * dim * 50   # blocks of 50 rows
    real_add, calls = H._Writer.add_rows, [0]
    def add_rows(self, *a, **k):
        if self.f.filename.startswith(path + ".tmp-"):
            calls[0] += 1
            if calls[0] == 3:
                stall()
        return real_add(self, *a, **k)
    H._Writer.add_rows = add_rows
elif hook == "index_before":
    real_index, n_index = S.atomic_write_json, [0]
    def index(*a, **k):
        n_index[0] += 1
        if n_index[0] == 2:
            stall()
        return real_index(*a, **k)
    S.atomic_write_json = index
elif hook == "dead_unlink":
    def unlink(p):
        if os.fspath(p).endswith(".safetensors"):
            stall()
        return real_unlink(p)
    os.unlink = unlink

space = EmbeddingSpace(encoder={"name": "t"}, enrichers=({"name": "mean"},), dim=dim)
if cfg["kind"] == "hdf5":
    ex = H.Hdf5Exporter(store_frames=True, checkpoint_every=cfg["batch"], chunk_rows=16)
else:
    ex = S.SafetensorsExporter(shard_size=cfg["batch"], store_frames=True)
ex.open(path, space)
known = ex.known()
todo = []
for i in range(cfg["n"]):
    tid, h = f"track/{i:05d}.mp3", cfg["want"][i]
    if known.get(tid) != h:
        todo.append(Record(tid, vec(tid, h, dim), h, {"i": i}, frames_of(tid, h)))
print("start", len(todo), flush=True)
def ack(batch):
    print("ack", json.dumps([[r.id, r.content_hash] for r in batch]), flush=True)
tail = []
for k in range(0, len(todo), cfg["batch"]):
    batch = todo[k : k + cfg["batch"]]
    ex.write(batch)
    if len(batch) == cfg["batch"]:
        ack(batch)  # a full batch is exactly one checkpoint/shard: durable on return
    else:
        tail = batch  # only buffered: durable once close() returns
print("closing", flush=True)
ex.close()
if tail:
    ack(tail)
print("closed", flush=True)
"""


class KillHarness:
    """Runs CHILD rounds against one output, kills them, and checks the invariants."""

    def __init__(self, kind: str, path: str, n: int, batch: int, dim: int = 8) -> None:
        self.kind, self.path, self.n, self.batch, self.dim = kind, path, n, batch, dim
        self.space = make_space(dim)
        self.acked: dict[str, str] = {}

    def want(self, rnd: int) -> list[str]:
        out = []
        for i in range(self.n):
            h = "v1"
            if rnd >= 2 and (i % 7 == 0 or i < 2 * self.batch):
                h = "v2"
            if rnd >= 3 and i % 5 == 0:
                h = "v3"
            out.append(h)
        return out

    def run(self, rnd: int, stop_after_acks: int | None = None, hook: str = "", stop_on: str = "",
            delay: float = 0.0) -> str:
        cfg = {"repo": str(REPO), "kind": self.kind, "path": self.path, "n": self.n, "dim": self.dim,
               "batch": self.batch, "hook": hook, "want": self.want(rnd)}
        proc = subprocess.Popen([sys.executable, "-c", CHILD, json.dumps(cfg)], stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)
        acks, last = 0, ""
        try:
            for line in proc.stdout:
                last = line.strip()
                if last.startswith("ack "):
                    acks += 1
                    self.acked.update(dict(json.loads(last[4:])))
                if (stop_after_acks is not None and acks >= stop_after_acks) or (stop_on and last == stop_on):
                    time.sleep(delay)
                    proc.send_signal(signal.SIGKILL)
                    break
        finally:
            proc.wait(timeout=60)
            proc.stdout.close()
            err = proc.stderr.read()
            proc.stderr.close()
        assert proc.returncode in (0, -signal.SIGKILL), err
        if hook or stop_after_acks is not None:
            assert proc.returncode == -signal.SIGKILL, f"child was not killed (last line {last!r})\n{err}"
        return last

    def check_state(self) -> dict[str, str]:
        """Whatever a kill left: finalised output is complete, known() covers every acked record."""
        if self.kind == "hdf5" and os.path.exists(self.path):
            with h5py.File(self.path, "r") as f:  # opens: never corrupt
                assert f["vectors"].shape[0] == len(f["ids"])
            self.check_file(final=False)
        if self.kind == "safetensors" and os.path.exists(os.path.join(self.path, "index.json")):
            self.check_file(final=False)
        ex = Hdf5Exporter() if self.kind == "hdf5" else SafetensorsExporter()
        ex.open(self.path, self.space)
        known = dict(ex.known())
        for tid, h in self.acked.items():  # an acked checkpoint survived; hashes only move forward
            assert known.get(tid, "") >= h, (tid, h, known.get(tid))
        return known

    def check_file(self, final: bool, rnd: int = 0) -> None:
        out = read_hdf5(self.path) if self.kind == "hdf5" else read_safetensors(self.path)
        ids = out["ids"]
        assert len(ids) == len(set(ids))
        for tid, h, v, m in zip(ids, out["content_hash"], out["vectors"], out["metadata"]):
            np.testing.assert_array_equal(v, vec(tid, h, self.dim))
            assert m == {"i": int(tid[6:11])}
        if self.kind == "hdf5":
            with h5py.File(self.path, "r") as f:
                counts, offs = f["frame_count"][:], f["frame_offset"][:]
                assert f["frames"].shape[0] == counts.sum()
                assert (offs == np.concatenate(([0], np.cumsum(counts)[:-1]))).all()
        reader = read_frames if self.kind == "hdf5" else st_mod.read_frames
        for tid, h in list(zip(ids, out["content_hash"]))[:: max(1, len(ids) // 25)]:
            np.testing.assert_array_equal(reader(self.path, tid), frames_of(tid, h))
        if final:
            want = self.want(rnd)
            assert dict(zip(ids, out["content_hash"])) == {f"track/{i:05d}.mp3": want[i] for i in range(self.n)}

    def finish(self, rnd: int) -> None:
        """In-process: reopen, write what is missing, close, verify the final output."""
        want = self.want(rnd)
        ex = (Hdf5Exporter(store_frames=True, checkpoint_every=self.batch) if self.kind == "hdf5"
              else SafetensorsExporter(shard_size=self.batch, store_frames=True))
        ex.open(self.path, self.space)
        known = ex.known()
        todo = []
        for i in range(self.n):
            tid = f"track/{i:05d}.mp3"
            if known.get(tid) != want[i]:
                todo.append(Record(tid, vec(tid, want[i], self.dim), want[i], {"i": i}, frames_of(tid, want[i])))
        ex.write(todo)
        ex.close()
        self.check_file(final=True, rnd=rnd)


def test_hdf5_survives_kill9(tmp_path):
    rng = random.Random(1234)
    path = str(tmp_path / "kill.h5")
    h = KillHarness("hdf5", path, n=600, batch=15)
    n_batches = h.n // h.batch
    # Round 1: killed twice while checkpointing (first run: no main file yet).
    h.run(1, stop_after_acks=rng.randint(1, n_batches // 3))
    assert not os.path.exists(path) and os.listdir(path + ".pending")
    h.check_state()
    h.run(1, stop_after_acks=rng.randint(1, n_batches // 3))
    h.check_state()
    # Killed at fixed points of the first consolidation.
    for hook in ("copy", "replace_before"):
        assert h.run(1, hook=hook, stop_on="hook") == "hook"
        assert not os.path.exists(path)
        h.check_state()
        assert not [n for n in os.listdir(tmp_path) if ".tmp-" in n]  # stale temp cleaned by open
    h.run(1)  # completes: main file now exists
    h.check_file(final=True, rnd=1)
    # Round 2 rewrites some ids; kill it in checkpoints and at every consolidation step.
    h.run(2, stop_after_acks=rng.randint(1, 5))
    h.check_state()
    for hook in ("copy", "replace_before", "replace_after", "unlink_mid"):
        assert h.run(2, hook=hook, stop_on="hook") == "hook"
        h.check_state()
    # Round 3: killed after random short delays once close() has started.
    for delay in (rng.uniform(0, 0.02), rng.uniform(0.02, 0.1)):
        h.run(3, stop_on="closing", delay=delay)
        h.check_state()
    h.finish(3)
    assert not os.path.exists(path + ".pending")
    assert sorted(os.listdir(tmp_path)) == ["kill.h5"]


def test_safetensors_survives_kill9(tmp_path):
    rng = random.Random(99)
    path = str(tmp_path / "kill.safetensors")
    h = KillHarness("safetensors", path, n=300, batch=10)
    h.run(1, stop_after_acks=rng.randint(1, 10))
    h.check_state()
    # Killed after a shard was renamed into place but before the index recorded it.
    assert h.run(1, hook="index_before", stop_on="hook") == "hook"
    index = json.loads(Path(path, "index.json").read_text())
    orphans = {n for n in os.listdir(path) if n.startswith("vectors-")} - {s["file"] for s in index["shards"]}
    assert len(orphans) == 1
    known = h.check_state()  # adopts the orphan
    adopted = json.loads(Path(path, "index.json").read_text())
    assert orphans <= {s["file"] for s in adopted["shards"]} and len(known) == len(adopted["entries"])
    h.run(1)
    h.check_file(final=True, rnd=1)
    # Round 2 supersedes whole shards; kill between the index update and their deletion.
    assert h.run(2, hook="dead_unlink", stop_on="hook") == "hook"
    h.check_state()
    h.run(2, stop_after_acks=rng.randint(1, 3))
    h.check_state()
    h.run(3, stop_on="closing", delay=rng.uniform(0, 0.01))
    h.check_state()
    h.finish(3)
    index = json.loads(Path(path, "index.json").read_text())
    assert sorted(os.listdir(path)) == sorted(["index.json"] + [s["file"] for s in index["shards"]])


# --------------------------------------------------------------------------- flush, refusals


def test_flush_writes_a_segment_or_shard_and_known_covers_it(kind):
    _name, make, _read, path = kind
    space = make_space()
    ex = make()
    ex.open(path, space)
    ex.write([rec("a"), rec("b")])  # below checkpoint_every / shard_size: buffered
    ex.flush()
    ex.flush()  # nothing new: no empty segment or shard
    if isinstance(ex, Hdf5Exporter):
        assert sorted(os.listdir(path + ".pending")) == [os.path.basename(ex._segments[0])]
    else:
        assert sorted(n for n in os.listdir(path) if n.endswith(".safetensors")) == ["vectors-00001.safetensors"]
    other = make()  # what a rerun after a kill sees
    other.open(path, space)
    assert dict(other.known()) == {"a": "v1", "b": "v1"}
    ex.close()


def test_hdf5_refuses_a_string_it_cannot_encode_before_buffering(tmp_path):
    path = str(tmp_path / "out.h5")
    ex = Hdf5Exporter()
    ex.open(path, make_space())
    bad = Record("ok-name.flac", vec("x", "v1"), "v1", {"title": "half a pair \ud800"})
    with pytest.raises(ValueError, match="ok-name.flac"):
        ex.write([rec("a"), bad, rec("b")])
    ex.write([rec("a"), rec("b"), rec("bad\udcffname.mp3")])  # bytes of a file name are fine
    ex.close()
    assert read_hdf5(path)["ids"] == ["a", "b", "bad\udcffname.mp3"]


# --------------------------------------------------------------------------- full disk (a real tmpfs)

NO_PRECHECK = "import musicembed_core.atomic as a; a.SPACE_MARGIN = -(1 << 40)"
"""Prelude that disables the free-space check: the disk runs out for real in mid-write."""
HDF5_ON_DISK = "import musicembed_core.builtins.hdf5 as h; h._IMAGE_BYTES = 0"
"""Prelude that makes HDF5 write every file itself (as for files above 128 MiB)."""


@pytest.mark.parametrize("prelude", ["", HDF5_ON_DISK, NO_PRECHECK],
                         ids=["checked", "hdf5-writes-to-disk", "real-enospc-in-mid-write"])
def test_hdf5_with_frames_on_a_full_disk_is_an_error_not_a_crash(tmp_path, prelude):
    """Issue 9: HDF5 + stored frames segfaulted (exit 139) on a full tmpfs."""
    from musicembed_core.testing import faults
    from musicembed_core.testing.records import suite_frames, suite_space

    run = faults.run_disk_full(
        kind="exporter", cls=Hdf5Exporter, params_for=lambda r: {"store_frames": True, "checkpoint_every": 5},
        target_for=lambda r: str(r / "out.h5"), space_json=suite_space(8).to_json(), work=tmp_path,
        frames=200, prelude=prelude,
    )
    want = faults.check_disk_full(run, names=("out.h5",))
    msg = run.fill["error"]["message"]
    assert "exporters.hdf5" in msg and "needs about" in msg and "intact" in msg, msg
    out = str(run.copy / "out.h5")
    data = read_hdf5(out)
    assert dict(zip(data["ids"], data["content_hash"])) == want
    for tid in ("closed/000.flac", "flushed/003.flac", "after/001.flac"):
        np.testing.assert_array_equal(read_frames(out, tid), suite_frames(tid, "v1", 8, 200))


CONSOLIDATION_ON_A_FULL_DISK = '''
import hashlib, json, os, sys
from musicembed_core.builtins.hdf5 import Hdf5Exporter, read_hdf5
from musicembed_core.testing.faults import fill_file_system
from musicembed_core.testing.records import suite_record, suite_space

mnt = sys.argv[1]
path, space = os.path.join(mnt, "out.h5"), suite_space(8)
def digest():
    with open(path, "rb") as fh:
        return hashlib.sha256(fh.read()).hexdigest()
ex = Hdf5Exporter(store_frames=True)
ex.open(path, space)
ex.write([suite_record(f"a{i}", "v1", 8, frames=300) for i in range(8)])
ex.close()
main = digest()
ex = Hdf5Exporter(store_frames=True)
ex.open(path, space)
ex.write([suite_record(f"b{i}", "v1", 8, frames=300) for i in range(8)])
ex.flush()  # a segment; the buffer is empty: close() only has to consolidate
fill_file_system(mnt, 256 << 10)
try:
    ex.close()
    err = None
except OSError as exc:
    err = {"errno": exc.errno, "message": str(exc)}
report = {"err": err, "unchanged": digest() == main, "segments": os.listdir(path + ".pending"),
          "temps": [n for n in os.listdir(mnt) if ".tmp-" in n]}
os.unlink(os.path.join(mnt, "filler"))
again = Hdf5Exporter(store_frames=True)
again.open(path, space)
report["known"] = sorted(again.known())
again.close()
report["final"] = sorted(read_hdf5(path)["ids"])
report["pending_left"] = os.path.exists(path + ".pending")
print(json.dumps(report))
'''


def test_hdf5_consolidation_on_a_full_disk_keeps_the_main_file_and_the_segments(tmp_path):
    from musicembed_core.testing import faults

    res = faults.run_in_small_fs(CONSOLIDATION_ON_A_FULL_DISK, tmp_path)
    assert res["rc"] == 0, f"exit {res['rc']}:\n{res['stderr']}"
    rep = json.loads(res["stdout"].strip().splitlines()[-1])
    err = rep["err"]
    assert err is not None and err["errno"] == 28, rep
    assert "is unchanged" in err["message"] and "1 segment(s)" in err["message"], err["message"]
    assert rep["unchanged"] and len(rep["segments"]) == 1 and rep["temps"] == []
    ids = sorted([f"a{i}" for i in range(8)] + [f"b{i}" for i in range(8)])
    assert rep["known"] == ids and rep["final"] == ids and not rep["pending_left"]


def test_safetensors_on_a_full_disk_mid_write_is_an_error(tmp_path):
    from musicembed_core.testing import faults
    from musicembed_core.testing.records import suite_space

    run = faults.run_disk_full(
        kind="exporter", cls=SafetensorsExporter, params_for=lambda r: {"shard_size": 5},
        target_for=lambda r: str(r / "out.safetensors"), space_json=suite_space(8).to_json(),
        work=tmp_path, prelude=NO_PRECHECK,
    )
    want = faults.check_disk_full(run, names=("out.safetensors",))
    assert "exporters.safetensors" in run.fill["error"]["message"]
    data = read_safetensors(str(run.copy / "out.safetensors"))
    assert dict(zip(data["ids"], data["content_hash"])) == want
