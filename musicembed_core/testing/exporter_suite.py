"""Conformance suite for exporters: subclass it and say how to build and read one.

::

    from musicembed_core.testing import ExporterSuite
    from my_plugin import MyExporter, read_my_output

    class TestMyExporter(ExporterSuite):
        exporter_class = MyExporter                 # importable: kill -9 checks rebuild it
        exporter_params = {"flush_every": 5}        # in a child process from these (JSON)
        output_name = "out.myformat"

        def read_output(self, path):
            data = read_my_output(path)             # your own reader of a finished output
            return {i: (h, v) for i, h, v in zip(data["ids"], data["hashes"], data["vectors"])}

It checks the exporter contract (:class:`musicembed_core.Exporter`): write, close
and reopen with ``known()``; ``known()`` after a write; repeated writes of an id
replace it; another embedding space and a wrong dim are refused; and a writer
killed with SIGKILL in the middle of its writes, or while closing, leaves the
previously closed output readable and resumable. Fault injection: what
``flush()`` returned from survives SIGKILL; a batch with one record the output
cannot store (NaN, infinity, a wrong dim) raises naming it and leaves the output
usable; a disk that fills up for real (a small tmpfs, see
:mod:`musicembed_core.testing.faults`) ends in an ``ENOSPC`` error, never a crash,
and after freeing space a rerun completes the output.
"""

from __future__ import annotations

import signal
from pathlib import Path
from typing import Any, ClassVar, Iterable, Mapping

import pytest

from .records import suite_record, suite_space, suite_vector


class ExporterSuite:
    """Reusable exporter checks."""

    exporter_class: ClassVar[type | None] = None
    """The exporter class (importable by module and name: a child process builds it)."""
    exporter_params: ClassVar[dict[str, Any]] = {}
    """JSON-able constructor arguments. Small flush/checkpoint sizes make the kill
    checks cover the exporter's intermediate states."""
    output_name: ClassVar[str] = "out"
    """File or folder name of the output inside the test's tmp_path."""
    dim: ClassVar[int] = 8
    batch: ClassVar[int] = 5
    """Records per write() in the kill checks."""
    disk_full_check: ClassVar[bool] = True
    """False skips the disk-full check (an exporter that writes no local files)."""
    disk_full_frames: ClassVar[int] = 0
    """Frames per record in the disk-full check (for an exporter that stores frames)."""

    def read_output(self, path: str) -> Mapping[str, tuple[str, Any]]:
        """``{id: (content_hash, vector)}`` of a finished output, read without the exporter
        class (your plugin's reader). Override it."""
        raise NotImplementedError(
            f"{type(self).__name__} must define read_output(self, path) returning "
            "{id: (content_hash, vector)} read from a finished output"
        )

    # ------------------------------------------------------------------ helpers
    def make(self) -> Any:
        if self.exporter_class is None:
            pytest.fail(f"{type(self).__name__} subclasses ExporterSuite but sets no exporter_class")
        return self.exporter_class(**self.exporter_params)

    def write_all(self, path: str, space: Any, batches: Iterable[list]) -> Any:
        ex = self.make()
        ex.open(path, space)
        for batch in batches:
            ex.write(batch)
        ex.close()
        return ex

    def records(self, ids: Iterable[str], h: str = "v1") -> list:
        return [suite_record(i, h, self.dim) for i in ids]

    def assert_output(self, path: str, want: Mapping[str, str]) -> None:
        """The finished output holds exactly ``want`` (id -> hash) with the right vectors."""
        import numpy as np

        got = dict(self.read_output(path))
        assert {i: h for i, (h, _) in got.items()} == dict(want), (
            "the finished output's ids/content hashes differ from what was written"
        )
        for tid, (h, vec) in got.items():
            np.testing.assert_array_equal(
                np.asarray(vec, dtype=np.float32), suite_vector(tid, h, self.dim),
                err_msg=f"stored vector of {tid!r} (hash {h!r})",
            )

    def known_after_reopen(self, path: str, space: Any) -> dict[str, str]:
        ex = self.make()
        ex.open(path, space)
        known = dict(ex.known())
        ex.close()
        return known

    @pytest.fixture
    def path(self, tmp_path: Path) -> str:
        return str(tmp_path / self.output_name)

    # ------------------------------------------------------------------ contract
    def test_write_close_reopen(self, path):
        space = suite_space(self.dim)
        ids = [f"t{i:02d}/é song.flac" for i in range(9)] + ["bad\udcffname.mp3"]
        self.write_all(path, space, [self.records(ids[:4]), self.records(ids[4:])])
        want = {i: "v1" for i in ids}
        self.assert_output(path, want)
        assert self.known_after_reopen(path, space) == want, "known() after reopening"
        self.assert_output(path, want)  # opening and closing without writes keeps it intact

    def test_known_after_a_second_run_has_both_runs(self, path):
        space = suite_space(self.dim)
        self.write_all(path, space, [self.records(["old", "a"])])
        assert self.known_after_reopen(path, space) == {"old": "v1", "a": "v1"}
        self.write_all(path, space, [self.records(["a", "b"], "v2")])
        want = {"old": "v1", "a": "v2", "b": "v2"}
        assert self.known_after_reopen(path, space) == want, "known() must cover every run's writes"
        self.assert_output(path, want)

    def test_empty_run_leaves_a_reopenable_output(self, path):
        space = suite_space(self.dim)
        self.write_all(path, space, [])
        assert self.known_after_reopen(path, space) == {}

    def test_repeated_write_of_an_id_replaces_it(self, path):
        space = suite_space(self.dim)
        ids = [f"id{i}" for i in range(8)]
        self.write_all(path, space, [self.records(ids)])
        # A second run: two ids change, one of them twice (once within one batch), one is new.
        rec = lambda i, h: suite_record(i, h, self.dim)  # noqa: E731
        self.write_all(path, space, [
            [rec("id2", "v2"), rec("id5", "v2"), rec("new", "v1"), rec("id5", "v3")],
            [rec("id2", "v4")],
        ])
        want = {i: "v1" for i in ids} | {"id2": "v4", "id5": "v3", "new": "v1"}
        self.assert_output(path, want)
        assert self.known_after_reopen(path, space) == want

    def test_another_space_is_refused(self, path):
        from ..errors import SpaceMismatchError

        space = suite_space(self.dim)
        self.write_all(path, space, [self.records(["a"])])
        with pytest.raises(SpaceMismatchError) as err:
            self.make().open(path, suite_space(self.dim, tag="b"))
        assert Path(path).name in str(err.value), "the error must name the output"
        assert self.known_after_reopen(path, space) == {"a": "v1"}, "the refusal changed the output"

    def test_wrong_dim_is_refused(self, path):
        import numpy as np

        from ..components import Record

        ex = self.make()
        ex.open(path, suite_space(self.dim))
        with pytest.raises(ValueError) as err:
            ex.write([Record("short.wav", np.zeros(self.dim - 1, np.float32), "h")])
        assert "short.wav" in str(err.value), "the error must name the track"
        ex.close()

    # ------------------------------------------------------------------ kill -9
    def _cfg(self, path: str, space: Any, plan: list[list[tuple[str, str]]]) -> dict:
        cls = self.exporter_class
        assert cls is not None
        return {"kind": "exporter", "cls": f"{cls.__module__}:{cls.__qualname__}",
                "params": self.exporter_params, "target": path, "space": space.to_json(),
                "plan": [b if isinstance(b, str) else [list(r) for r in b] for b in plan]}

    def _plan(self, items: list[tuple[str, str]]) -> list[list[tuple[str, str]]]:
        return [items[i : i + self.batch] for i in range(0, len(items), self.batch)]

    def _check_after_kill(self, path: str, space: Any, history: dict[str, set[str]],
                          closed: Mapping[str, str]) -> dict[str, str]:
        """What a kill left: the previously closed output is readable, each id holds one of
        its written versions, and the exporter reopens."""
        import numpy as np

        got = dict(self.read_output(path))
        for tid in closed:
            assert tid in got, f"{tid!r}, in the closed output before the kill, is gone"
        for tid, (h, vec) in got.items():
            assert h in history.get(tid, ()), f"{tid!r} holds hash {h!r}, never written for it"
            np.testing.assert_array_equal(np.asarray(vec, np.float32), suite_vector(tid, h, self.dim))
        known = self.known_after_reopen(path, space)
        for tid, h in known.items():
            assert h in history.get(tid, ()), f"known() reports {tid!r}: {h!r}, never written"
        assert set(closed) <= set(known), "known() after the kill lost closed records"
        return known

    def _finish(self, path: str, space: Any, want: Mapping[str, str]) -> None:
        ex = self.make()
        ex.open(path, space)
        known = dict(ex.known())
        ex.write([suite_record(t, h, self.dim) for t, h in want.items() if known.get(t) != h])
        ex.close()
        self.assert_output(path, want)

    def test_kill9_while_writing_keeps_the_closed_output(self, path):
        from ._kill_writer import run_writer

        space = suite_space(self.dim)
        first = {f"t{i:03d}": "v1" for i in range(20)}
        self.write_all(path, space, [self.records(first)])
        history = {t: {"v1"} for t in first}
        second = [(f"t{i:03d}", "v2") for i in range(10)] + [(f"t{i:03d}", "v1") for i in range(20, 60)]
        for t, h in second:
            history.setdefault(t, set()).add(h)
        plan = self._plan(second)
        for kill_after, delay in ((1, 0.0), (3, 0.003)):  # between writes, then within one
            acks, rc, err = run_writer(self._cfg(path, space, plan), kill_after_acks=kill_after,
                                       delay=delay)
            assert rc == -signal.SIGKILL, f"the writer was not killed (exit {rc}):\n{err}"
            self._check_after_kill(path, space, history, first)
        self._finish(path, space, first | dict(second))

    def test_kill9_while_closing_keeps_the_closed_output(self, path):
        from ._kill_writer import run_writer

        space = suite_space(self.dim)
        first = {f"t{i:03d}": "v1" for i in range(30)}
        self.write_all(path, space, [self.records(first)])
        history = {t: {"v1"} for t in first}
        second = [(t, "v2") for t in list(first)[::2]] + [(f"n{i:03d}", "v1") for i in range(30)]
        for t, h in second:
            history.setdefault(t, set()).add(h)
        for delay in (0.0, 0.02):
            acks, rc, err = run_writer(self._cfg(path, space, self._plan(second)),
                                       kill_on="closing", delay=delay)
            assert rc in (0, -signal.SIGKILL), f"the writer failed (exit {rc}):\n{err}"
            self._check_after_kill(path, space, history, first)
        self._finish(path, space, first | dict(second))

    # ------------------------------------------------------------------ faults
    def test_flush_survives_kill9(self, path):
        """What was written before ``flush()`` returned is in ``known()`` after SIGKILL."""
        from ._kill_writer import run_writer

        space = suite_space(self.dim)
        first = {f"t{i:03d}": "v1" for i in range(7)}
        self.write_all(path, space, [self.records(first)])
        flushed = [(f"f{i:03d}", "v1") for i in range(2 * self.batch + 1)] + [("t001", "v2")]
        later = [(f"g{i:03d}", "v1") for i in range(3)]
        history = {t: {"v1"} for t in first}
        for t, h in flushed + later:
            history.setdefault(t, set()).add(h)
        plan = [*self._plan(flushed), "flush", *self._plan(later), "wait"]
        acks, rc, err = run_writer(self._cfg(path, space, plan), kill_on="waiting")
        assert rc == -signal.SIGKILL, f"the writer was not killed (exit {rc}):\n{err}"
        known = self._check_after_kill(path, space, history, first)
        lost = [t for t, h in flushed if known.get(t) != h]
        assert not lost, f"flush() returned, yet after SIGKILL known() lacks {lost[:3]}"
        self._finish(path, space, first | dict(flushed) | dict(later))

    def poisoned_records(self) -> list:
        """Records no output can store, each refused with an error naming it."""
        import numpy as np

        from ..components import Record

        nan = suite_vector("nan.wav", "v1", self.dim).copy()
        nan[1] = np.nan
        inf = suite_vector("inf.wav", "v1", self.dim).copy()
        inf[0] = np.inf
        return [Record("nan.wav", nan, "v1", {}), Record("inf.wav", inf, "v1", {}),
                Record("short.wav", np.ones(self.dim - 1, np.float32), "v1", {}),
                Record("long.wav", np.ones(self.dim + 1, np.float32), "v1", {})]

    def test_a_refused_record_leaves_the_output_usable(self, path):
        """A batch with one bad record raises naming it; the others, written again (as the
        runner does after isolating the bad one), are stored; the bad one never is."""
        space = suite_space(self.dim)
        ex = self.make()
        ex.open(path, space)
        ex.write(self.records(["a", "b"]))
        want = {"a": "v1", "b": "v1"}
        for bad in self.poisoned_records():
            others = [f"{bad.id}-before", f"{bad.id}-after"]
            batch = [*self.records(others[:1]), bad, *self.records(others[1:])]
            with pytest.raises(Exception) as err:
                ex.write(batch)
            assert _names(err.value, bad.id), f"the refusal must name {bad.id!r}: {err.value}"
            ex.write(self.records(others))
            want |= {t: "v1" for t in others}
        ex.close()
        self.assert_output(path, want)
        assert self.known_after_reopen(path, space) == want

    def test_disk_full_is_an_error_and_a_rerun_completes(self, tmp_path):
        """On a real, small file system that fills up: an ENOSPC error (no crash, no temp
        files left); after freeing space the closed and flushed records are intact and a
        rerun completes the output."""
        from .faults import check_disk_full, run_disk_full

        if not self.disk_full_check:
            pytest.skip(f"{type(self).__name__}.disk_full_check is False")
        run = run_disk_full(
            kind="exporter", cls=self.exporter_class, params_for=lambda root: dict(self.exporter_params),
            target_for=lambda root: str(root / self.output_name),
            space_json=suite_space(self.dim).to_json(), work=tmp_path, batch=self.batch,
            frames=self.disk_full_frames,
        )
        want = check_disk_full(run)
        self.assert_output(str(run.copy / self.output_name), want)


def _names(exc: BaseException, track_id: str) -> bool:
    text = str(exc)
    return track_id in text or repr(track_id)[1:-1] in text
