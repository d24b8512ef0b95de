"""End to end: the real CLI on generated audio; resume, kill -9, space mismatch."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pytest

from musicembed_core.builtins.hdf5 import read_hdf5

from musicembed_core.testing import REPO, run_cli

QUICKSTART = str(REPO / "gin" / "runs" / "quickstart.gin")


def run_quickstart(lib: Path, out: Path, *params: str, check: bool = True):
    args = ["run", "--gin_file", QUICKSTART, "--no-progress", "--json",
            "--gin_param", f"run.source = '{lib}'", "--gin_param", f"run.output_dir = '{out}'"]
    for p in params:
        args += ["--gin_param", p]
    proc = run_cli(*args, check=check)
    summary = json.loads(proc.stdout) if proc.returncode == 0 else None
    return proc, summary


@pytest.fixture
def library(example_dir, tmp_path) -> Path:
    lib = tmp_path / "Music"
    shutil.copytree(example_dir, lib)
    (lib / "broken").mkdir()
    (lib / "broken" / "corrupt.wav").write_bytes(os.urandom(5000))
    (lib / "broken" / "empty.flac").write_bytes(b"")
    return lib


def test_run_embeds_a_library_and_reports_failures(library, tmp_path):
    out = tmp_path / "out"
    proc, summary = run_quickstart(library, out)
    n_good = sum(1 for p in library.rglob("*") if p.is_file()) - 2
    assert summary["files_total"] == n_good + 2
    assert summary["files_ok"] == n_good
    assert summary["files_failed"] == 2
    reasons = {Path(f["path"]).name: f["reason"] for f in summary["failures"]}
    assert set(reasons) == {"corrupt.wav", "empty.flac"}
    assert "empty" in reasons["empty.flac"]
    assert summary["audio_seconds"] > 5 * n_good
    assert summary["realtime_factor"] > 1
    # The summary table names the failures too.
    assert "corrupt.wav" in proc.stderr and "failed" in proc.stderr

    data = read_hdf5(out / "logmel.h5")
    files = sorted(p.relative_to(library).as_posix() for p in library.rglob("*")
                   if p.is_file() and "broken" not in p.parts)
    assert sorted(data["ids"]) == files
    assert data["vectors"].shape == (n_good, 2 * 96 * 2)
    assert np.allclose(np.linalg.norm(data["vectors"], axis=1), 1.0, atol=1e-5)
    meta = {Path(m["path"]).name: m for m in data["metadata"]}
    assert meta["g_48k.wav"]["sample_rate"] == 48000 and meta["g_48k.wav"]["channels"] == 2
    assert meta["e.m4a"]["decoder"] == "pyav"
    assert data["space"]["encoder"]["name"] == "logmel"

    written = json.loads((out / "summary.json").read_text())
    assert written["files_ok"] == n_good and written["failures"]
    assert "logmel.n_mels = 96" in (out / "operative_config.gin").read_text()
    plugins = json.loads((out / "plugins.json").read_text())
    assert plugins[0]["name"] == "builtins" and plugins[0]["version"]

    # Same command again: nothing to embed.
    _, again = run_quickstart(library, out)
    assert again["files_ok"] == 0 and again["files_skipped"] == n_good
    assert sorted(read_hdf5(out / "logmel.h5")["ids"]) == files

    # A changed file and a new file are picked up; the rest is skipped.
    from musicembed_core.examples import synth_clip, write_audio

    write_audio(library / "new.wav", synth_clip(4.0, 22050, seed=99), 22050)
    write_audio(library / "rock" / "a.wav", synth_clip(5.0, 22050, seed=7), 22050)
    before = dict(zip(data["ids"], data["vectors"]))
    _, third = run_quickstart(library, out)
    assert third["files_ok"] == 2 and third["files_skipped"] == n_good - 1
    final = read_hdf5(out / "logmel.h5")
    assert len(final["ids"]) == len(set(final["ids"])) == n_good + 1
    after = dict(zip(final["ids"], final["vectors"]))
    assert not np.allclose(after["rock/a.wav"], before["rock/a.wav"])
    assert np.array_equal(after["jazz/b.flac"], before["jazz/b.flac"])


def test_writing_another_space_is_refused_and_damages_nothing(library, tmp_path):
    out = tmp_path / "out"
    run_quickstart(library, out)
    h5 = out / "logmel.h5"
    before = h5.read_bytes()
    proc, _ = run_quickstart(library, out, "encoders.logmel.n_mels = 64", check=False)
    assert proc.returncode == 2
    assert "embedding space" in proc.stderr and "logmel.h5" in proc.stderr
    assert "n_mels" in proc.stderr
    assert h5.read_bytes() == before


def test_gin_typo_fails_before_any_work(library, tmp_path):
    proc, _ = run_quickstart(library, tmp_path / "out", "encoders.logmel.n_mel = 64", check=False)
    assert proc.returncode == 2
    assert "Did you mean 'n_mels'" in proc.stderr
    assert not (tmp_path / "out" / "logmel.h5").exists()


def test_unknown_plugin_component_in_gin_is_named(library, tmp_path, monkeypatch):
    bad = tmp_path / "bad.gin"
    bad.write_text(f"include '{QUICKSTART}'\nembedding.encoder = @encoders.nosuchmodel()\n")
    proc = run_cli("run", "--gin_file", str(bad), check=False)
    assert proc.returncode == 2
    assert "'encoders.nosuchmodel'" in proc.stderr and "musicembed plugins" in proc.stderr


@pytest.mark.slow
def test_kill_9_then_rerun_embeds_every_file_exactly_once(tmp_path):
    from musicembed_core.examples import synth_clip, write_audio

    lib = tmp_path / "lib"
    lib.mkdir()
    names = []
    for i in range(40):
        name = f"track{i:02d}.wav"
        write_audio(lib / name, synth_clip(3.0 + (i % 5), 16000, seed=i), 16000)
        names.append(name)
    out = tmp_path / "out"
    args = [sys.executable, "-m", "musicembed_core", "run", "--gin_file", QUICKSTART, "--no-progress",
            "--gin_param", f"run.source = '{lib}'", "--gin_param", f"run.output_dir = '{out}'",
            "--gin_param", "exporters.hdf5.checkpoint_every = 3",
            "--gin_param", "run.batch_size = 1", "--gin_param", "run.decode_workers = 1"]
    pending = out / "logmel.h5.pending"
    killed = 0
    for kill_after_segments in (1, 4):
        proc = subprocess.Popen(args, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.time() + 120
        while time.time() < deadline and proc.poll() is None:
            if pending.exists() and len(list(pending.glob("seg-*.h5"))) >= kill_after_segments:
                break
            time.sleep(0.005)
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            killed += 1
        proc.wait()
        if (out / "logmel.h5").exists():  # whatever exists must open
            with h5py.File(out / "logmel.h5", "r") as f:
                assert len(f["ids"]) == f["vectors"].shape[0]
    assert killed == 2, "the run finished before it could be killed"
    final = subprocess.run(args + ["--json"], cwd=REPO, capture_output=True, text=True)
    assert final.returncode == 0, final.stderr
    summary = json.loads(final.stdout)
    assert summary["files_failed"] == 0
    data = read_hdf5(out / "logmel.h5")
    assert sorted(data["ids"]) == names
    assert len(data["ids"]) == len(set(data["ids"]))
    assert not pending.exists() or not list(pending.glob("seg-*.h5"))
    # A clean rerun: every file already there.
    again = json.loads(subprocess.run(args + ["--json"], cwd=REPO, capture_output=True, text=True).stdout)
    assert again["files_skipped"] == 40 and again["files_ok"] == 0


def test_a_second_run_on_the_same_output_is_refused_while_the_first_runs(tmp_path):
    from musicembed_core.errors import MusicembedError
    from musicembed_core.runner import OutputLock

    out = tmp_path / "out"
    out.mkdir()
    with OutputLock(out):
        with pytest.raises(MusicembedError, match=r"another musicembed run \(pid \d+\) is writing"):
            with OutputLock(out):
                pass
    with OutputLock(out):  # released: usable again
        pass


@pytest.mark.slow
def test_ctrl_c_keeps_finished_tracks_and_says_how_to_resume(tmp_path):
    from musicembed_core.examples import synth_clip, write_audio

    lib = tmp_path / "lib"
    for i in range(40):
        write_audio(lib / f"t{i:02d}.wav", synth_clip(8.0, 16000, seed=i), 16000)
    out = tmp_path / "out"
    args = [sys.executable, "-m", "musicembed_core", "run", "--gin_file", QUICKSTART, "--no-progress",
            "--gin_param", f"run.source = '{lib}'", "--gin_param", f"run.output_dir = '{out}'",
            "--gin_param", "exporters.hdf5.checkpoint_every = 2", "--gin_param", "run.batch_size = 1"]
    proc = subprocess.Popen(args, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    pending = out / "logmel.h5.pending"
    while time.time() < deadline and proc.poll() is None:
        if pending.exists() and list(pending.glob("seg-*.h5")):
            break
        time.sleep(0.005)
    assert proc.poll() is None, "the run finished before it could be interrupted"
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert "run the same command again to resume" in err
    summary = json.loads((out / "summary.json").read_text())
    assert summary["interrupted"] is True and 0 < summary["files_ok"] < 40
    assert len(read_hdf5(out / "logmel.h5")["ids"]) == summary["files_ok"]
    again = json.loads(subprocess.run(args + ["--json"], cwd=REPO, capture_output=True, text=True).stdout)
    assert again["files_skipped"] == summary["files_ok"]
    assert again["files_ok"] == 40 - summary["files_ok"]


def test_frame_stacks_are_stored_when_asked(example_dir, tmp_path):
    from musicembed_core.builtins.hdf5 import read_frames

    out = tmp_path / "out"
    _, summary = run_quickstart(example_dir, out, "exporters.hdf5.store_frames = True",
                                "encoders.logmel.window_seconds = 2.5")
    assert summary["files_failed"] == 0
    frames = read_frames(out / "logmel.h5", "rock/a.wav")
    assert frames.shape == (2, 6 * 50, 96)  # [L, F, D]: 6 s at 50 frames/s, stitched from 3 chunks
    data = read_hdf5(out / "logmel.h5")
    v = data["vectors"][data["ids"].index("rock/a.wav")]
    ref = np.concatenate([frames.mean(1), frames.std(1)], axis=-1).reshape(-1)
    assert np.allclose(v, ref / np.linalg.norm(ref), atol=1e-5)


def test_two_embeddings_in_one_pass_from_the_user_guide(example_dir, tmp_path):
    out = tmp_path / "out"
    proc = run_cli("run", "--gin_file", str(REPO / "gin" / "runs" / "two_windows.gin"), "--no-progress",
                   "--json", "--gin_param", f"run.source = '{example_dir}'",
                   "--gin_param", f"run.output_dir = '{out}'")
    summary = json.loads(proc.stdout)
    assert [e["name"] for e in summary["embeddings"]] == ["logmel_10s", "logmel_30s"]
    assert [e["dim"] for e in summary["embeddings"]] == [2 * 96 * 2, 2 * 96 * 3]
    short, long_ = read_hdf5(out / "logmel_10s.h5"), read_hdf5(out / "logmel_30s.h5")
    assert sorted(short["ids"]) == sorted(long_["ids"]) and len(short["ids"]) == summary["files_ok"]
    assert short["space_hash"] != long_["space_hash"]
