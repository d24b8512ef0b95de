"""Fault injection through a whole ``musicembed run``, for any output: subclass it and say
how the run writes to your output and how to read back what it holds.

::

    from musicembed_core.testing import RunFaultSuite

    class TestMySinkUnderFaults(RunFaultSuite):
        gin_params = ("run.sinks = [@sinks.mine()]", "sinks.mine.path = '{output_dir}/mine'")
        close_target = "my_plugin:MySink.close"      # the final write a signal lands in

        def stored_ids(self, output_dir):             # read your output back, your own way
            return read_ids(output_dir / "mine")

The run uses the built-in ``logmel`` encoder on generated clips, with your
bindings added to ``runs/quickstart.gin`` (which also writes HDF5). Checks:

* **kill -9 at random moments** (several, each followed by a rerun): nothing
  acknowledged is lost, nothing is stored twice, the rerun completes;
* **a signal during the final write** (SIGTERM and SIGINT delivered while your
  ``close`` runs): the write completes, the run exits 130 with a summary that
  says ``interrupted``, every track is in your output, no temp files are left;
* **a poisoned track** (a file whose samples hold NaN) among good ones: that
  file fails alone with its reason, every other track reaches your output.

Disk-full and poisoned-*record* checks of the output itself are in
:class:`ExporterSuite` / :class:`SinkSuite`.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import ClassVar, Iterable, Sequence

import pytest

from .helpers import subprocess_env

_SIGNAL_IN = textwrap.dedent(
    """
    import importlib, os, signal, sys
    from musicembed_core import cli

    target, signame = sys.argv[1], sys.argv[2]
    module, _, qual = target.partition(":")
    obj = importlib.import_module(module)
    *owners, meth = qual.split(".")
    for part in owners:
        obj = getattr(obj, part)
    original = getattr(obj, meth)

    def delivered_during(*a, **k):
        os.kill(os.getpid(), getattr(signal, signame))
        return original(*a, **k)

    setattr(obj, meth, delivered_during)
    sys.argv = ["musicembed", *sys.argv[3:]]
    cli.entrypoint()
    """
)


def run_with_signal_in(target: str, signame: str, args: Sequence[str], cwd: Path,
                       timeout: float = 600) -> subprocess.CompletedProcess:
    """``musicembed ARGS`` in a child process that sends itself ``signame`` (e.g.
    ``"SIGTERM"``) each time ``target`` (``module:Class.method`` or ``module:function``)
    is called, just before it runs: a real signal, landing exactly in that step."""
    return subprocess.run(
        [sys.executable, "-c", _SIGNAL_IN, target, signame, *args],
        capture_output=True, text=True, env=subprocess_env(), cwd=cwd, timeout=timeout,
    )


class RunFaultSuite:
    """Reusable end-to-end fault checks of one output."""

    gin_params: ClassVar[tuple[str, ...]] = ()
    """Bindings that add your output to the run (``{output_dir}`` may be used in paths)."""
    close_target: ClassVar[str] = ""
    """``module:Class.close``: the final write to signal into."""
    tracks: ClassVar[int] = 24
    seconds: ClassVar[float] = 2.0
    kills: ClassVar[int] = 3
    flush_every_tracks: ClassVar[int] = 4

    def stored_ids(self, output_dir: Path) -> list[str]:
        """Every id your output holds after a finished run (duplicates included, if any)."""
        raise NotImplementedError(f"{type(self).__name__} must define stored_ids(output_dir)")

    # ------------------------------------------------------------------ helpers
    @pytest.fixture(scope="class")
    @classmethod
    def fault_library(cls, tmp_path_factory: pytest.TempPathFactory) -> Path:
        from ..examples import synth_clip, write_audio

        lib = tmp_path_factory.mktemp("fault-lib")
        for i in range(cls.tracks):
            write_audio(lib / f"t{i:03d}.wav", synth_clip(cls.seconds, 16000, seed=i), 16000)
        return lib

    def command(self, source: Path, out: Path, *extra: str) -> list[str]:
        params = [
            f"run.source = '{source}'",
            f"run.output_dir = '{out}'",
            f"run.flush_every_tracks = {self.flush_every_tracks}",
            *self.gin_params,
            *extra,
        ]
        cmd = ["run", "--gin_file", "runs/quickstart.gin", "--no-progress", "--json"]
        for p in params:
            cmd += ["--gin_param", p]
        return cmd

    def _cli(self, args: Iterable[str], cwd: Path, **kw) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "musicembed_core", *args], capture_output=True,
                              text=True, env=subprocess_env(), cwd=cwd, timeout=600, **kw)

    def _assert_complete(self, out: Path, expected: set[str]) -> None:
        ids = self.stored_ids(out)
        assert len(ids) == len(set(ids)), f"ids stored twice: {sorted(i for i in ids if ids.count(i) > 1)}"
        missing = sorted(expected - set(ids))
        assert not missing, f"tracks lost: {missing}"

    # ------------------------------------------------------------------ checks
    def test_kill_9_at_random_moments_loses_and_duplicates_nothing(
        self, fault_library: Path, tmp_path: Path
    ) -> None:
        expected = {f"t{i:03d}.wav" for i in range(self.tracks)}
        timing_out = tmp_path / "timing"
        t0 = time.perf_counter()
        done = self._cli(self.command(fault_library, timing_out), tmp_path)
        assert done.returncode == 0, done.stderr
        full = time.perf_counter() - t0
        rng = random.Random(7)
        out = tmp_path / "out"
        for k in range(self.kills):
            proc = subprocess.Popen([sys.executable, "-m", "musicembed_core",
                                     *self.command(fault_library, out)],
                                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                    env=subprocess_env(), cwd=tmp_path)
            time.sleep(rng.uniform(0.2, 0.95) * full)
            if proc.poll() is None:
                os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
        final = self._cli(self.command(fault_library, out), tmp_path)
        assert final.returncode == 0, final.stderr
        summary = json.loads(final.stdout)
        assert summary["files_failed"] == 0
        self._assert_complete(out, expected)

    @pytest.mark.parametrize("signame", ["SIGTERM", "SIGINT"])
    def test_a_signal_during_the_final_write_completes_it(
        self, fault_library: Path, tmp_path: Path, signame: str
    ) -> None:
        if not self.close_target:
            pytest.fail(f"{type(self).__name__} must set close_target ('module:Class.close')")
        out = tmp_path / "out"
        proc = run_with_signal_in(self.close_target, signame, self.command(fault_library, out),
                                  tmp_path)
        assert proc.returncode == 130, proc.stderr[-3000:]
        assert "finishing the final write" in proc.stderr
        assert "wrote 0/" not in proc.stderr
        summary = json.loads((out / "summary.json").read_text())
        assert summary["interrupted"] is True
        assert summary["files_ok"] == self.tracks and summary["files_failed"] == 0
        self._assert_complete(out, {f"t{i:03d}.wav" for i in range(self.tracks)})
        temps = [p.name for p in out.rglob("*") if ".tmp-" in p.name or p.name.endswith(".pending")]
        assert temps == [], f"temp files or unconsolidated segments left behind: {temps}"

    def test_a_poisoned_track_fails_alone(self, fault_library: Path, tmp_path: Path) -> None:
        import numpy as np
        import soundfile as sf

        from ..examples import synth_clip

        lib = tmp_path / "lib"
        lib.mkdir()
        for i in range(6):
            os.symlink(fault_library / f"t{i:03d}.wav", lib / f"t{i:03d}.wav")
        wave = synth_clip(self.seconds, 16000, seed=99).astype(np.float32)
        wave[100:200] = np.nan
        sf.write(str(lib / "poisoned.wav"), wave, 16000, subtype="FLOAT")
        out = tmp_path / "out"
        proc = self._cli(self.command(lib, out), tmp_path)
        assert proc.returncode == 0, proc.stderr[-3000:]
        summary = json.loads(proc.stdout)
        assert (summary["files_ok"], summary["files_failed"]) == (6, 1)
        assert "non-finite" in summary["failures"][0]["reason"]
        ids = self.stored_ids(out)
        assert sorted(ids) == [f"t{i:03d}.wav" for i in range(6)]
