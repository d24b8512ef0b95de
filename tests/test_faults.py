"""One bad track never blocks an output; signals at the edges end cleanly; odd inputs are
reported (issue 9). Real files, real outputs, the real command line in a subprocess."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import soundfile as sf

from musicembed_core.builtins.hdf5 import read_hdf5
from musicembed_core.examples import synth_clip, write_audio
from musicembed_core.testing import run_cli
from musicembed_core.testing.run_fault_suite import run_with_signal_in


def _library(root: Path, n: int = 4, seconds: float = 2.0) -> Path:
    for i in range(n):
        write_audio(root / f"t{i}.wav", synth_clip(seconds, 16000, seed=i), 16000)
    return root


def _run(tmp_path: Path, source: Path, *params: str, check: bool = False):
    out = tmp_path / "out"
    proc = run_cli(
        "run", "--gin_file", "runs/quickstart.gin", "--no-progress", "--json",
        "--gin_param", f"run.source = '{source}'",
        "--gin_param", f"run.output_dir = '{out}'",
        *[a for p in params for a in ("--gin_param", p)],
        check=check, cwd=tmp_path,
    )
    return proc, out


def test_a_nan_file_fails_alone_and_reaches_no_output(tmp_path):
    lib = _library(tmp_path / "lib")
    wave = synth_clip(2.0, 16000, seed=9).astype(np.float32)
    wave[5000:5100] = np.nan
    sf.write(str(lib / "poisoned.wav"), wave, 16000, subtype="FLOAT")
    proc, out = _run(tmp_path, lib)
    assert proc.returncode == 0, proc.stderr
    summary = json.loads(proc.stdout)
    assert (summary["files_ok"], summary["files_failed"]) == (4, 1)
    [failure] = summary["failures"]
    assert failure["path"].endswith("poisoned.wav") and "non-finite" in failure["reason"]
    data = read_hdf5(str(out / "logmel.h5"))
    assert sorted(data["ids"]) == [f"t{i}.wav" for i in range(4)]
    assert np.isfinite(data["vectors"]).all()
    # a rerun re-tries only the failed file (it is not in the outputs), not the others
    again = json.loads(_run(tmp_path, lib)[0].stdout)
    assert (again["files_skipped"], again["files_failed"]) == (4, 1)


def test_a_file_name_that_is_not_utf8_fails_alone_with_a_rename_hint(tmp_path):
    lib = _library(tmp_path / "lib", n=3)
    bad = os.path.join(os.fsencode(lib), b"latin1_\xe9\xff.wav")
    with open(lib / "t0.wav", "rb") as src, open(bad, "wb") as dst:
        dst.write(src.read())
    proc, out = _run(tmp_path, lib)
    assert proc.returncode == 0, proc.stderr
    summary = json.loads(proc.stdout)
    assert (summary["files_ok"], summary["files_failed"]) == (3, 1)
    reason = summary["failures"][0]["reason"]
    assert "not valid UTF-8" in reason and "convmv" in reason and "\\xe9\\xff" in reason
    assert sorted(read_hdf5(str(out / "logmel.h5"))["ids"]) == ["t0.wav", "t1.wav", "t2.wav"]


def test_symlink_loops_and_dangling_links_are_listed_as_skipped(tmp_path):
    lib = _library(tmp_path / "lib", n=2)
    (lib / "sub").mkdir()
    write_audio(lib / "sub" / "s.flac", synth_clip(1.0, 16000, seed=5), 16000)
    os.symlink("..", lib / "sub" / "loop")  # sub/loop -> lib: a cycle
    os.symlink("missing.wav", lib / "gone.wav")
    proc, _ = _run(tmp_path, lib)
    assert proc.returncode == 0, proc.stderr
    summary = json.loads(proc.stdout)
    assert summary["files_ok"] == 3 and summary["files_failed"] == 0
    reasons = {Path(s["path"]).name: s["reason"] for s in summary["skipped"]}
    assert "dangling symbolic link" in reasons["gone.wav"] and "missing.wav" in reasons["gone.wav"]
    assert "already searched" in reasons["loop"]
    assert "paths skipped" in proc.stderr


def test_an_empty_gin_file_exits_2_naming_what_it_lacks(tmp_path):
    empty = tmp_path / "empty.gin"
    empty.write_text("")
    proc = run_cli("run", "--gin_file", str(empty), check=False, cwd=tmp_path)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert "(which is empty) does not set run.source, run.embeddings" in proc.stderr.replace("\n", " ")
    assert "runs/quickstart.gin" in proc.stderr


# --------------------------------------------------------------------------- signals
# A signal during the final write of each output: RunFaultSuite (tests/test_run_faults_hdf5.py,
# and the FAISS and Milvus plugins' test_run_faults.py).

def test_sigterm_during_start_up_exits_130_with_a_summary(tmp_path):
    lib = _library(tmp_path / "lib", n=2)
    out = tmp_path / "out"
    proc = run_with_signal_in(  # while the outputs are being opened
        "musicembed_core.runner:open_outputs", "SIGTERM",
        ["run", "--gin_file", "runs/quickstart.gin", "--no-progress",
         "--gin_param", f"run.source = '{lib}'", "--gin_param", f"run.output_dir = '{out}'"],
        tmp_path,
    )
    assert proc.returncode == 130, proc.stderr
    assert "Traceback" not in proc.stderr
    summary = json.loads((out / "summary.json").read_text())
    assert summary["interrupted"] is True and summary["files_ok"] == 0
    # nothing half-written: a rerun embeds everything
    rerun = json.loads(_run(tmp_path, lib, check=True)[0].stdout)
    assert rerun["files_ok"] == 2
