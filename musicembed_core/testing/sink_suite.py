"""Conformance suite for sinks (contract v2): subclass it and say how to build one.

::

    from musicembed_core.testing import SinkSuite
    from my_plugin import MySink

    class TestMySink(SinkSuite):
        sink_class = MySink                  # importable: the kill -9 check rebuilds it

        def sink_params(self, root):         # JSON-able constructor arguments; the store
            return {"path": str(root)}       # lives under `root`, an empty folder

It checks :class:`musicembed_core.Sink`: idempotent upserts, ``known()``, an upsert
replacing an id, ``fetch``, ``delete``, self-search, reopening, refusing another
embedding space and a wrong dim, a read-only open of a missing sink that creates
nothing and raises :class:`~musicembed_core.errors.SinkNotFoundError`, and a
writer killed with SIGKILL between or during upserts losing nothing it acknowledged.
Fault injection: what ``flush()`` returned from survives SIGKILL; a batch with one
record the sink cannot store (NaN, infinity, a wrong dim) raises naming it and
leaves the sink usable; an id that is not valid UTF-8 (an undecodable file name)
is stored exactly or refused alone; a disk that fills up for real (a small tmpfs,
see :mod:`musicembed_core.testing.faults`) ends in an ``ENOSPC`` error, never a
crash, and after freeing space a rerun completes the collection.
"""

from __future__ import annotations

import signal
from pathlib import Path
from typing import Any, ClassVar, Iterable

import pytest

from .records import suite_record, suite_space, suite_vector


class SinkSuite:
    """Reusable sink checks."""

    sink_class: ClassVar[type | None] = None
    """The sink class (importable by module and name: a child process builds it)."""
    collection: ClassVar[str] = "suite_tracks"
    dim: ClassVar[int] = 16
    batch: ClassVar[int] = 10
    """Records per upsert in the kill check."""
    rtol: ClassVar[float] = 1e-6
    """Tolerance of stored vs given vectors (a store may keep float32 with rounding)."""
    disk_full_check: ClassVar[bool] = True
    """False skips the disk-full check (a sink whose storage is not local, e.g. a server)."""

    def sink_params(self, root: Path) -> dict[str, Any]:
        """JSON-able constructor arguments putting the store under ``root`` (an empty folder)."""
        return {}

    # ------------------------------------------------------------------ helpers
    @pytest.fixture
    def root(self, tmp_path: Path) -> Path:
        root = tmp_path / "store"
        root.mkdir()
        return root

    def make(self, root: Path) -> Any:
        if self.sink_class is None:
            pytest.fail(f"{type(self).__name__} subclasses SinkSuite but sets no sink_class")
        return self.sink_class(**self.sink_params(root))

    def opened(self, root: Path, space: Any = None, readonly: bool = False) -> Any:
        sink = self.make(root)
        sink.open(self.collection, space if space is not None else suite_space(self.dim),
                  readonly=readonly)
        return sink

    def records(self, ids: Iterable[str], h: str = "v1") -> list:
        return [suite_record(i, h, self.dim, genre="jazz" if n % 2 else "rock")
                for n, i in enumerate(ids)]

    def ids(self, n: int, start: int = 0) -> list[str]:
        return [f"track/{i:04d}.flac" for i in range(start, start + n)]

    def assert_vectors(self, fetched: dict, want: dict[str, str]) -> None:
        import numpy as np

        assert set(fetched) == set(want), "fetch() returned other ids than requested and stored"
        for tid, h in want.items():
            np.testing.assert_allclose(np.asarray(fetched[tid], np.float32), suite_vector(tid, h, self.dim),
                                       rtol=self.rtol, atol=self.rtol, err_msg=f"stored vector of {tid!r}")

    def top1(self, sink: Any, ids: list[str], h: str = "v1") -> list[str]:
        import numpy as np

        queries = np.stack([suite_vector(t, h, self.dim) for t in ids])
        return [hits[0].id if hits else "" for hits in sink.search(queries, k=3)]

    @staticmethod
    def listing(root: Path) -> list[str]:
        return sorted(str(p.relative_to(root)) for p in root.rglob("*"))

    # ------------------------------------------------------------------ contract
    def test_upsert_twice_is_idempotent(self, root):
        sink = self.opened(root)
        recs = self.records(self.ids(30))
        sink.upsert(recs)
        sink.upsert(recs)
        assert sink.count() == 30, "upserting the same ids twice must not duplicate them"
        assert dict(sink.known()) == {r.id: "v1" for r in recs}
        sink.close()

    def test_upsert_replaces_an_id(self, root):
        sink = self.opened(root)
        ids = self.ids(12)
        sink.upsert(self.records(ids))
        sink.upsert(self.records([ids[3]], "v2"))
        # A batch that repeats an id keeps its last record.
        sink.upsert(self.records([ids[5]], "v2") + self.records([ids[5]], "v3"))
        assert sink.count() == 12
        want = {i: "v1" for i in ids} | {ids[3]: "v2", ids[5]: "v3"}
        assert dict(sink.known()) == want
        self.assert_vectors(sink.fetch([ids[3], ids[5]]), {ids[3]: "v2", ids[5]: "v3"})
        [hits] = sink.search(suite_vector(ids[3], "v2", self.dim)[None, :], k=1)
        assert hits[0].id == ids[3]
        assert hits[0].metadata.get("content_hash") == "v2", "Hit.metadata must carry content_hash"
        assert hits[0].metadata.get("path") == f"/music/{ids[3]}", "Hit.metadata lost the record's metadata"
        sink.close()

    def test_fetch_leaves_out_absent_ids(self, root):
        sink = self.opened(root)
        ids = self.ids(8)
        sink.upsert(self.records(ids))
        self.assert_vectors(sink.fetch(ids[:3] + ["never/stored.mp3"]), {i: "v1" for i in ids[:3]})
        sink.close()

    def test_fetch_metadata_round_trips(self, root):
        """Optional ``fetch_metadata`` (``musicembed tag``): what was upserted, nested values
        included, plus ``content_hash``; absent ids left out; a record upserted again with
        it and its stored vector keeps both."""
        sink = self.opened(root)
        ids = self.ids(6)
        sink.upsert(self.records(ids))
        try:
            got = sink.fetch_metadata([ids[1], "never/stored.mp3", ids[2]])
        except NotImplementedError:
            sink.close()
            pytest.skip(f"{self.sink_class.__name__} does not implement fetch_metadata (optional)")
        assert set(got) == {ids[1], ids[2]}, "fetch_metadata() returned other ids than asked and stored"
        md = got[ids[1]]
        assert md.get("path") == f"/music/{ids[1]}" and md.get("genre") == "jazz"
        assert md.get("content_hash") == "v1", "fetch_metadata() must carry content_hash"
        from musicembed_core import Record

        new_md = {k: v for k, v in md.items() if k != "content_hash"}
        new_md.update(tags=["a b", "c"], tag_scores={"a b": 0.5, "c": 0.25})
        vec = sink.fetch([ids[1]])[ids[1]]
        sink.upsert([Record(ids[1], vec, "v1", new_md)])
        again = sink.fetch_metadata([ids[1]])[ids[1]]
        assert again["tags"] == ["a b", "c"] and again["tag_scores"] == {"a b": 0.5, "c": 0.25}
        assert again["path"] == f"/music/{ids[1]}" and again["genre"] == "jazz"
        assert sink.count() == 6 and dict(sink.known())[ids[1]] == "v1"
        self.assert_vectors(sink.fetch([ids[1]]), {ids[1]: "v1"})
        sink.close()

    def test_delete(self, root):
        sink = self.opened(root)
        ids = self.ids(20)
        sink.upsert(self.records(ids))
        gone = ids[5:10]
        sink.delete(gone + ["never/stored.mp3"])
        assert sink.count() == 15
        assert set(sink.known()) == set(ids) - set(gone)
        assert sink.fetch(gone) == {}
        import numpy as np

        queries = np.stack([suite_vector(t, "v1", self.dim) for t in gone])
        found = {h.id for hits in sink.search(queries, k=5) for h in hits}
        assert not found & set(gone), f"search still returns deleted ids {sorted(found & set(gone))}"
        sink.close()

    def test_each_vector_finds_itself_first(self, root):
        sink = self.opened(root)
        ids = self.ids(40)
        sink.upsert(self.records(ids))
        assert self.top1(sink, ids) == ids
        import numpy as np

        [hits] = sink.search(suite_vector(ids[0], "v1", self.dim)[None, :], k=5)
        scores = [h.score for h in hits]
        closer_first = sorted(scores) if sink.metric == "l2" else sorted(scores, reverse=True)
        assert len(hits) == 5 and np.allclose(scores, closer_first), f"hits not best first: {scores}"
        sink.close()

    def test_reopen_after_close(self, root):
        sink = self.opened(root)
        ids = self.ids(25)
        sink.upsert(self.records(ids))
        sink.delete(ids[:5])
        known = dict(sink.known())
        sink.close()
        again = self.opened(root)
        assert again.count() == 20 and dict(again.known()) == known
        self.assert_vectors(again.fetch(ids), {i: "v1" for i in ids[5:]})
        assert self.top1(again, ids[5:]) == ids[5:]
        again.close()

    def test_another_space_is_refused(self, root):
        from ..errors import SpaceMismatchError

        sink = self.opened(root)
        sink.upsert(self.records(self.ids(3)))
        sink.close()
        with pytest.raises(SpaceMismatchError) as err:
            self.opened(root, suite_space(self.dim, tag="b"))
        assert self.collection in str(err.value), "the error must name the collection"
        again = self.opened(root)  # the refusal left the store usable
        assert again.count() == 3
        again.close()

    def test_wrong_dim_is_refused(self, root):
        import numpy as np

        from ..components import Record

        sink = self.opened(root)
        with pytest.raises(ValueError) as err:
            sink.upsert([Record("short.wav", np.zeros(self.dim - 1, np.float32), "h")])
        assert "short.wav" in str(err.value), "the error must name the track"
        sink.close()

    def test_readonly_open_of_a_missing_sink_creates_nothing(self, root):
        from ..errors import SinkNotFoundError

        with pytest.raises(SinkNotFoundError) as err:
            self.opened(root, readonly=True)
        assert "musicembed run" in str(err.value), "the error must say to run `musicembed run` first"
        assert self.listing(root) == [], f"a read-only open created {self.listing(root)}"

    def test_readonly_open_reads_and_creates_no_other_collection(self, root):
        from ..errors import SinkNotFoundError

        sink = self.opened(root)
        ids = self.ids(6)
        sink.upsert(self.records(ids))
        sink.close()
        before = self.listing(root)
        reader = self.opened(root, readonly=True)
        assert reader.count() == 6 and dict(reader.known()) == {i: "v1" for i in ids}
        assert self.top1(reader, ids) == ids
        reader.close()
        other = self.make(root)
        with pytest.raises(SinkNotFoundError):
            other.open(self.collection + "_missing", suite_space(self.dim), readonly=True)
        again = self.opened(root)
        assert again.count() == 6, "a read-only open changed the stored collection"
        again.close()
        new = [p for p in self.listing(root) if p not in before]
        assert not any("_missing" in p for p in new), f"a read-only open created {new}"

    # ------------------------------------------------------------------ kill -9
    def _writer_cfg(self, root: Path, plan: list) -> dict:
        cls = self.sink_class
        assert cls is not None
        return {"kind": "sink", "cls": f"{cls.__module__}:{cls.__qualname__}",
                "params": self.sink_params(root), "target": self.collection,
                "space": suite_space(self.dim).to_json(),
                "plan": [b if isinstance(b, str) else [list(r) for r in b] for b in plan]}

    def test_kill9_during_upserts_loses_nothing_acknowledged(self, root):
        from ._kill_writer import run_writer

        space = suite_space(self.dim)
        cls = self.sink_class
        assert cls is not None
        acked: dict[str, str] = {}
        in_flight: dict[str, str] = {}  # the batch each kill interrupted: all, part or none of it
        for rnd, (kill_after, delay) in enumerate(((4, 0.0), (2, 0.005))):
            plan = [[(f"r{rnd}/b{b:03d}-{i}", f"h{b}") for i in range(self.batch)] for b in range(30)]
            cfg = {"kind": "sink", "cls": f"{cls.__module__}:{cls.__qualname__}",
                   "params": self.sink_params(root), "target": self.collection,
                   "space": space.to_json(), "plan": [[list(r) for r in b] for b in plan]}
            acks, rc, err = run_writer(cfg, kill_after_acks=kill_after, delay=delay)
            assert rc == -signal.SIGKILL, f"the writer was not killed (exit {rc}):\n{err}"
            acked.update({t: h for b in plan[:acks] for t, h in b})
            in_flight.update(dict(plan[acks]))
            sink = self.opened(root)
            known = dict(sink.known())
            missing = sorted(set(acked) - set(known))
            assert not missing, f"{len(missing)} acknowledged records lost, e.g. {missing[:3]}"
            extra = sorted(set(known) - set(acked) - set(in_flight))
            assert not extra, f"ids never written appeared after the kill: {extra[:3]}"
            assert all(known[t] == ({**acked, **in_flight})[t] for t in known), "wrong content hashes"
            assert sink.count() == len(known)
            self.assert_vectors(sink.fetch(list(known)), known)
            sink.upsert(self.records(["after/kill.wav"]))  # the store takes writes again
            assert sink.count() == len(known) + 1
            sink.delete(["after/kill.wav"])
            sink.close()

    # ------------------------------------------------------------------ faults
    def test_flush_survives_kill9(self, root):
        """What was upserted before ``flush()`` returned is in ``known()`` after SIGKILL."""
        from ._kill_writer import run_writer

        flushed = [[(f"f/{b}-{i}", f"h{b}") for i in range(self.batch)] for b in range(3)]
        later = [(f"g/{i}", "h") for i in range(self.batch)]
        plan = [*flushed, "flush", later, "wait"]
        acks, rc, err = run_writer(self._writer_cfg(root, plan), kill_on="waiting")
        assert rc == -signal.SIGKILL, f"the writer was not killed (exit {rc}):\n{err}"
        written = {t: h for b in flushed for t, h in b} | dict(later)
        sink = self.opened(root)
        known = dict(sink.known())
        lost = sorted(t for b in flushed for t, h in b if known.get(t) != h)
        assert not lost, f"flush() returned, yet after SIGKILL known() lacks {lost[:3]}"
        assert all(written.get(t) == h for t, h in known.items()), "records never written appeared"
        self.assert_vectors(sink.fetch(list(known)), known)
        sink.close()

    def poisoned_records(self) -> list:
        """Records no sink can store, each refused with an error naming it."""
        import numpy as np

        from ..components import Record

        nan = suite_vector("nan.wav", "v1", self.dim).copy()
        nan[1] = np.nan
        inf = suite_vector("inf.wav", "v1", self.dim).copy()
        inf[0] = -np.inf
        return [Record("nan.wav", nan, "v1", {}), Record("inf.wav", inf, "v1", {}),
                Record("short.wav", np.ones(self.dim - 1, np.float32), "v1", {}),
                Record("long.wav", np.ones(self.dim + 1, np.float32), "v1", {})]

    def test_a_refused_record_leaves_the_sink_usable(self, root):
        """A batch with one bad record raises naming it and stores nothing of it; the others,
        upserted again (as the runner does after isolating it), are stored."""
        sink = self.opened(root)
        sink.upsert(self.records(["a", "b"]))
        want = {"a": "v1", "b": "v1"}
        for bad in self.poisoned_records():
            others = [f"{bad.id}-before", f"{bad.id}-after"]
            batch = [*self.records(others[:1]), bad, *self.records(others[1:])]
            with pytest.raises(Exception) as err:
                sink.upsert(batch)
            assert _names(err.value, bad.id), f"the refusal must name {bad.id!r}: {err.value}"
            assert bad.id not in sink.known(), f"{bad.id!r} was stored although refused"
            sink.upsert(self.records(others))
            want |= {t: "v1" for t in others}
        assert dict(sink.known()) == want and sink.count() == len(want)
        sink.close()
        again = self.opened(root)
        assert dict(again.known()) == want, "after reopening"
        self.assert_vectors(again.fetch(list(want)), want)
        again.close()

    def test_an_undecodable_id_is_stored_exactly_or_refused_alone(self, root):
        """``os.fsdecode`` of a latin-1 file name gives lone surrogates: a sink stores such an
        id exactly (known, fetch, search, reopen) or refuses that record naming it."""
        bad = "latin1_\udce9\udcff.flac"
        sink = self.opened(root)
        batch = self.records(["ok/1.flac", bad, "ok/2.flac"])
        try:
            sink.upsert(batch)
        except Exception as exc:  # refused: alone, named, nothing of it stored
            assert _names(exc, bad), f"the refusal must name the id: {exc}"
            assert bad not in sink.known()
            sink.upsert(self.records(["ok/1.flac", "ok/2.flac"]))
            want = {"ok/1.flac": "v1", "ok/2.flac": "v1"}
        else:
            want = {"ok/1.flac": "v1", bad: "v1", "ok/2.flac": "v1"}
            assert self.top1(sink, [bad]) == [bad]
        assert dict(sink.known()) == want
        sink.close()
        again = self.opened(root)
        assert dict(again.known()) == want, "after reopening"
        self.assert_vectors(again.fetch(list(want)), want)
        again.close()

    def test_disk_full_is_an_error_and_a_rerun_completes(self, tmp_path):
        """On a real, small file system that fills up: an ENOSPC error (no crash, no temp
        files left); after freeing space everything acknowledged before is there and a
        rerun completes the collection."""
        from .faults import check_disk_full, run_disk_full

        if not self.disk_full_check:
            pytest.skip(f"{type(self).__name__}.disk_full_check is False")
        run = run_disk_full(
            kind="sink", cls=self.sink_class, params_for=self.sink_params,
            target_for=lambda root: self.collection, space_json=suite_space(self.dim).to_json(),
            work=tmp_path, batch=self.batch, rtol=self.rtol,
        )
        check_disk_full(run)


def _names(exc: BaseException, track_id: str) -> bool:
    text = str(exc)
    return track_id in text or repr(track_id)[1:-1] in text
