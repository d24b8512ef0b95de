"""The real ``musicembed`` command line with encoders.music2vec and the shipped gin files."""

from __future__ import annotations

import json

import numpy as np
import pytest
from music2vec_tiny import REPO_ID

from musicembed_core.testing import run_cli

LAYERS, DIM = 3, 32


def run_gin(tmp_path, source, out) -> str:
    """A run over `source` with the shipped encoder, enricher and exporter files."""
    gin = tmp_path / "music2vec_run.gin"
    gin.write_text(
        "# music2vec over a folder, mean+IQR+delta, HDF5 (test run).\n"
        "include 'encoders/music2vec.gin'\n"
        "include 'enrichers/mean_iqr_delta.gin'\n"
        "include 'exporters/hdf5.gin'\n"
        f"run.source = '{source}'\n"
        f"run.output_dir = '{out}'\n"
        "run.embeddings = [@music2vec/embedding()]\n"
        "run.exporters = [@exporters.hdf5()]\n"
        "music2vec/embedding.encoder = %MUSIC2VEC\n"
        "music2vec/embedding.enrichers = %MEAN_IQR_DELTA\n"
    )
    return str(gin)


@pytest.mark.slow
def test_run_embeds_generated_clips_into_hdf5(tiny, tmp_path):
    from musicembed_core.builtins.hdf5 import read_hdf5

    lib = tmp_path / "audio"
    run_cli("examples", str(lib), "--seconds", "2.5")
    files = sorted(p.relative_to(lib).as_posix() for p in lib.rglob("*") if p.is_file())
    out = tmp_path / "out"
    env = {"HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(tiny.cache)}
    proc = run_cli(
        "run", "--gin_file", run_gin(tmp_path, lib, out), "--no-progress", "--json",
        "--gin_param", "encoders.music2vec.window_seconds = 1.0",  # several chunks per clip
        env=env,
    )
    summary = json.loads(proc.stdout)
    assert summary["files_ok"] == len(files) and summary["files_failed"] == 0
    data = read_hdf5(out / "music2vec.h5")
    assert sorted(data["ids"]) == files
    assert data["vectors"].shape == (len(files), LAYERS * DIM * 3)
    assert np.allclose(np.linalg.norm(data["vectors"], axis=1), 1.0, atol=1e-5)
    enc = data["space"]["encoder"]
    assert enc["name"] == "music2vec" and enc["model"] == REPO_ID and enc["weights"] == tiny.sha_main
    assert (enc["num_layers"], enc["dim"], enc["frame_rate"], enc["window_seconds"]) == (LAYERS, DIM, 50.0, 1.0)
    # Clips differ, so their vectors do.
    assert len({v.tobytes() for v in data["vectors"]}) == len(files)


def test_missing_model_offline_exits_2_naming_the_repo(tmp_path):
    from musicembed_core.examples import synth_clip, write_audio

    lib = tmp_path / "audio"
    write_audio(lib / "a.wav", synth_clip(1.0, 16000, seed=0), 16000)  # an empty source exits early
    env = {"HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(tmp_path / "empty-cache")}
    proc = run_cli("run", "--gin_file", run_gin(tmp_path, lib, tmp_path / "out"), "--no-progress",
                   env=env, check=False)
    assert proc.returncode == 2, proc.stderr
    assert REPO_ID in proc.stderr and "HF_HUB_OFFLINE" in proc.stderr
    assert "local folder" in proc.stderr and "Traceback" not in proc.stderr

