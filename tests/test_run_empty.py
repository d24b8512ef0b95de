"""An empty or audio-less source: a warning that names the folder, no empty outputs,
exit 0 by default and 3 with --fail-on-empty."""

from __future__ import annotations

import json

from musicembed_core.testing import run_cli


def _run(tmp_path, source, *extra):
    return run_cli(
        "run", "--gin_file", "runs/quickstart.gin", "--no-progress", "--json", *extra,
        "--gin_param", f"run.source = '{source}'",
        "--gin_param", f"run.output_dir = '{tmp_path / 'out'}'",
        check=False, cwd=tmp_path,
    )


def test_audio_less_folder_warns_and_writes_no_vectors(tmp_path):
    src = tmp_path / "lib"
    (src / "covers").mkdir(parents=True)
    (src / "covers" / "front.jpg").write_bytes(b"\xff\xd8\xff")
    (src / "notes.txt").write_text("no music here")
    proc = _run(tmp_path, src)
    assert proc.returncode == 0, proc.stderr
    assert "warning" in proc.stderr and "no audio files found" in proc.stderr
    assert str(src) in proc.stderr.replace("\n", "")
    summary = json.loads(proc.stdout)
    assert summary["files_total"] == 0 and summary["warnings"]
    out = tmp_path / "out"
    assert (out / "summary.json").is_file()
    assert not list(out.glob("*.h5")), "an empty run must not leave empty vector files"


def test_fail_on_empty_exits_3(tmp_path):
    src = tmp_path / "empty"
    src.mkdir()
    proc = _run(tmp_path, src, "--fail-on-empty")
    assert proc.returncode == 3, proc.stderr
    assert "no audio files found" in proc.stderr
