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
previously closed output readable and resumable.
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
                "plan": [[list(r) for r in b] for b in plan]}

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
